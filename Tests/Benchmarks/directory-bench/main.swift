// directory-bench: the org directory (issue 21 point 4) following a province-sized feed on each
// store (SQLite, and PostgreSQL when a server is given): the time to apply the feed, the
// start-up time and memory of a second directory on the same store (it must not load the
// users), and lookup latencies.
//
//   swift build -c release --product directory-bench && .build/release/directory-bench \
//     [--database-url postgres://user@host:port/db] [--users 1000000]
//
// The PostgreSQL server also comes from SMARTSCHOOL_BENCH_DATABASE_URL; the bench makes a fresh
// database on it (its role needs CREATEDB) and drops it at the end.
//
// The feed comes from a fake identity (a change source that makes each page on demand, so
// the feed itself takes no memory): 1 province, 20 counties, 50 schools each, 25 classes a
// school, then the users (one in 20 a teacher, one in 20 a parent linked to the next user, the
// rest students in classes). Each phase runs in a child process of its own, so each peak RSS
// (VmHWM) is that phase's alone: "idle" opens the store only, "apply" follows the whole feed,
// "start" starts a second directory on the same store and measures lookups.
import Dispatch
import Foundation
import Glibc
import Logging
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf
import Synchronization

struct BenchError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

// MARK: The fake feed

/// The province the feed describes, event by event: sequence n is a pure function of n.
struct Province: Sendable {
  static let counties = 20
  static let schoolsPerCounty = 50
  static let classesPerSchool = 25
  static var schools: Int { counties * schoolsPerCounty }
  static var classes: Int { schools * classesPerSchool }
  /// Province, counties, schools, classes.
  static var orgs: Int { 1 + counties + schools + classes }

  let users: Int
  var parents: Int { users / 20 }
  /// Orgs, users, then one guardian link per parent.
  var events: Int { Province.orgs + users + parents }

  /// A 20-hex-digit id, as EntityID makes them, spread like random ones.
  static func id(_ kind: UInt64, _ n: Int) -> String {
    let mixed = UInt64(n) &* 0x9E37_79B9_7F4A_7C15 ^ (kind << 56)
    return String(format: "%016llx%04llx", mixed, kind)
  }

  static func orgID(_ index: Int) -> String { id(1, index) }
  static func userID(_ index: Int) -> String { id(2, index) }
  static func externalID(_ index: Int) -> String { id(3, index) + id(4, index).prefix(12) }

  /// Org index i: 0 the province, then counties, schools, classes.
  static func org(_ i: Int) -> Smartschool_Identity_V1_Org {
    var org = Smartschool_Identity_V1_Org()
    org.id = orgID(i)
    org.active = true
    let province = "/" + orgID(0) + "/"
    if i == 0 {
      org.kind = .province
      org.code = "P"
      org.name = "省"
      org.path = province
      return org
    }
    let county = 1
    let school = county + counties
    let klass = school + schools
    switch i {
    case county..<school:
      org.kind = .county
      org.code = "K\(i - county)"
      org.name = "县\(i - county)"
      org.parentID = orgID(0)
      org.path = province + org.id + "/"
    case school..<klass:
      let parent = county + (i - school) / schoolsPerCounty
      org.kind = .school
      org.code = "S\(i - school)"
      org.name = "学校\(i - school)"
      org.parentID = orgID(parent)
      org.path = Province.org(parent).path + org.id + "/"
      org.schoolKind = .urban
    default:
      let parent = school + (i - klass) / classesPerSchool
      org.kind = .class
      org.code = "C\(i - klass)"
      org.name = "\((i - klass) % 6 + 1)年级\((i - klass) % 4 + 1)班"
      org.parentID = orgID(parent)
      org.path = Province.org(parent).path + org.id + "/"
      org.grade = Int32((i - klass) % 6 + 1)
      org.schoolYear = "2026-2027"
    }
    return org
  }

  /// The org index of a class or school for user u.
  static func homeOrg(ofUser u: Int, kind: Smartschool_Identity_V1_UserKind) -> Int {
    let firstSchool = 1 + counties
    let firstClass = firstSchool + schools
    return kind == .student ? firstClass + u % classes : firstSchool + u % schools
  }

  static func kind(ofUser u: Int) -> Smartschool_Identity_V1_UserKind {
    switch u % 20 {
    case 0: .teacher
    case 1: .parent
    default: .student
    }
  }

  static func user(_ u: Int) -> Smartschool_Identity_V1_User {
    var user = Smartschool_Identity_V1_User()
    user.id = userID(u)
    user.externalID = externalID(u)
    user.username = "u\(u)"
    user.displayName = "用户\(u)"
    user.kind = kind(ofUser: u)
    let home = Province.org(homeOrg(ofUser: u, kind: user.kind))
    user.orgID = home.id
    user.orgCode = home.code
    user.orgPath = home.path
    user.birthYear = user.kind == .teacher ? Int32(1965 + u % 35) : 0
    user.status = .active
    return user
  }

  /// The feed event with sequence `n` (1-based).
  func change(_ n: Int) throws -> Smartschool_Common_V1_Change {
    var c = Smartschool_Common_V1_Change()
    c.sequence = Int64(n)
    c.op = .upsert
    c.time = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: 1_780_000_000))
    let i = n - 1
    if i < Province.orgs {
      let org = Province.org(i)
      c.entity = "org"
      c.id = org.id
      c.naturalKey = org.code
      c.orgPath = org.path
      c.payload.typeURL = "type.googleapis.com/smartschool.identity.v1.Org"
      c.payload.value = try org.serializedData()
    } else if i < Province.orgs + users {
      let user = Province.user(i - Province.orgs)
      c.entity = "user"
      c.id = user.id
      c.naturalKey = user.externalID
      c.orgPath = user.orgPath
      c.payload.typeURL = "type.googleapis.com/smartschool.identity.v1.User"
      c.payload.value = try user.serializedData()
    } else {
      // Parent 20k+1 is linked to user 20k+2 (a student).
      let parent = (i - Province.orgs - users) * 20 + 1
      c.entity = "guardian_link"
      c.id = Province.userID(parent) + ":" + Province.userID(parent + 1)
      c.orgPath = "/"
    }
    return c
  }
}

/// Identity's feed for the bench: pages made on demand; the time spent making them is kept
/// apart (it is the source's cost, not the directory's).
final class FakeIdentity: IdentityChangeSource {
  let province: Province
  private let sourceNanos = Mutex<UInt64>(0)

  init(_ province: Province) { self.province = province }

  var sourceSeconds: Double { Double(sourceNanos.withLock { $0 }) / 1e9 }

  func listChanges(after: Int64, pageSize: Int) async throws
    -> Smartschool_Common_V1_ListChangesResponse
  {
    let start = now()
    defer { sourceNanos.withLock { $0 += now() - start } }
    let first = Int(after) + 1
    let last = min(province.events, Int(after) + pageSize)
    var page = Smartschool_Common_V1_ListChangesResponse()
    if first <= last {
      page.changes = try (first...last).map { try province.change($0) }
    }
    page.lastSequence = Int64(max(last, Int(after)))
    page.moreAvailable = last < province.events
    return page
  }
}

// MARK: Phases (each in a child process)

struct Options: Sendable {
  var server: DatabaseSettings?
  var serverURL: String?
  var users = 1_000_000
  /// Child only: the phase, the SQLite directory or PostgreSQL database.
  var phase: String?
  var sqliteDirectory: String?
  var databaseName: String?

  static func parse(_ arguments: [String]) throws -> Options {
    var options = Options()
    var url = ProcessInfo.processInfo.environment["SMARTSCHOOL_BENCH_DATABASE_URL"]
    var rest = arguments[...]
    while let flag = rest.popFirst() {
      guard let value = rest.popFirst() else { throw BenchError("\(flag) needs a value") }
      switch flag {
      case "--database-url": url = value
      case "--users":
        guard let n = Int(value), n >= 100, n <= 20_000_000 else {
          throw BenchError("--users: 100 to 20,000,000")
        }
        options.users = n
      case "--phase": options.phase = value
      case "--sqlite-directory": options.sqliteDirectory = value
      case "--database-name": options.databaseName = value
      default: throw BenchError("unknown flag \(flag)")
      }
    }
    if let url, !url.isEmpty {
      do {
        options.server = try DatabaseSettings(url: url, poolSize: 8)
        options.serverURL = url
      } catch let error as DatabaseSettings.Invalid {
        throw BenchError("--database-url: \(error.message)")
      }
    }
    return options
  }
}

/// `VmHWM` (peak) and `VmRSS` (now) of this process, in MiB.
func memory() -> (peak: Double, now: Double) {
  let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
  func field(_ name: String) -> Double {
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }),
      let kb = Double(line.split(separator: " ", omittingEmptySubsequences: true)[1])
    else { return 0 }
    return kb / 1024
  }
  return (field("VmHWM"), field("VmRSS"))
}

/// glibc's `malloc_trim(0)` (not in Swift's Glibc module): returns free heap to the system.
func trimHeap() {
  guard let symbol = dlsym(nil, "malloc_trim") else { return }
  _ = unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)(0)
}

func openStore(_ options: Options) async throws -> any ServiceStorage {
  if let name = options.databaseName, let server = options.server {
    var quiet = Logger(label: "directory-bench")
    quiet.logLevel = .critical
    return try await PostgresStore(
      settings: server.with(database: name), migrations: [], logger: quiet)
  }
  guard let dir = options.sqliteDirectory else { throw BenchError("no store given") }
  return try Store(directory: dir, name: "directory", migrations: { _ in })
}

/// Prints `key=value` lines for the parent.
func report(_ values: [(String, Double)]) {
  for (key, value) in values { print("\(key)=\(value)") }
}

func idlePhase(_ options: Options) async throws {
  let store = try await openStore(options)
  _ = try await store.changeFeedHead()
  let m = memory()
  report([("peak_mib", m.peak), ("rss_mib", m.now)])
  await store.close()
}

func applyPhase(_ options: Options) async throws {
  let province = Province(users: options.users)
  let source = FakeIdentity(province)
  let store = try await openStore(options)
  let directory = try await OrgDirectory(source: source, store: store, trackUsers: true)
  let start = now()
  try await directory.sync()
  let seconds = Double(now() - start) / 1e9
  guard directory.cursor == Int64(province.events) else {
    throw BenchError("applied to \(directory.cursor), expected \(province.events)")
  }
  let m = memory()
  report([
    ("apply_s", seconds), ("source_s", source.sourceSeconds), ("events", Double(province.events)),
    ("peak_mib", m.peak), ("rss_mib", m.now),
  ])
  await store.close()
}

/// Latencies of `n` calls of `body`, in microseconds: (p50, p99, mean).
func latency(_ n: Int, _ body: (Int) async throws -> Void) async throws
  -> (p50: Double, p99: Double, mean: Double)
{
  var samples: [Double] = []
  samples.reserveCapacity(n)
  for i in 0..<n {
    let start = now()
    try await body(i)
    samples.append(Double(now() - start) / 1e3)
  }
  samples.sort()
  return (
    samples[n / 2], samples[min(n - 1, n * 99 / 100)], samples.reduce(0, +) / Double(n)
  )
}

func startPhase(_ options: Options) async throws {
  let province = Province(users: options.users)
  let store = try await openStore(options)
  let source = FakeIdentity(province)  // at its head: the store is current
  _ = try await store.changeFeedHead()
  // Free heap returned to the system before each reading, so the difference is what the
  // directory keeps, not the allocator's slack from loading.
  trimHeap()
  let beforeStart = memory()
  let start = now()
  let directory = try await OrgDirectory(source: source, store: store, trackUsers: true)
  let startSeconds = Double(now() - start) / 1e9
  trimHeap()
  let afterStart = memory()
  guard directory.cursor == Int64(province.events) else {
    throw BenchError("second directory at \(directory.cursor), expected \(province.events)")
  }
  var values: [(String, Double)] = [
    ("start_s", startSeconds), ("start_rss_mib", afterStart.now),
    ("tree_mib", afterStart.now - beforeStart.now),
    ("orgs", Double(Province.orgs)),
  ]
  var generator = SystemRandomNumberGenerator()
  let n = 5000
  let randomUsers = (0..<n).map { _ in Int.random(in: 0..<province.users, using: &generator) }
  func check(_ user: DirectoryUser?, _ u: Int) throws {
    guard user?.externalID == Province.externalID(u) else {
      throw BenchError("user \(u) not found")
    }
  }
  let byID = try await latency(n) { i in
    try check(try await directory.user(id: Province.userID(randomUsers[i])), randomUsers[i])
  }
  let byExternal = try await latency(n) { i in
    let u = (randomUsers[i] + 7) % province.users
    try check(try await directory.user(externalID: Province.externalID(u)), u)
  }
  // The same 500 users over and over: served from the cache.
  let cached = try await latency(n) { i in
    let u = randomUsers[i % 500]
    try check(try await directory.user(id: Province.userID(u)), u)
  }
  let children = try await latency(n) { i in
    let parent = (randomUsers[i] % province.parents) * 20 + 1
    let ids = try await directory.children(ofParent: Province.userID(parent))
    guard ids == [Province.userID(parent + 1)] else { throw BenchError("parent \(parent)") }
  }
  let schools = 500
  var teachers = 0
  let underSchool = try await latency(schools) { i in
    let school = Province.org(1 + Province.counties + i % Province.schools)
    teachers += try await directory.users(under: OrgPath(school.path)!, kind: .teacher).count
  }
  guard teachers > 0 else { throw BenchError("no teachers under the schools") }
  let county = OrgPath(Province.org(1).path)!
  var countyTeachers = 0
  let underCounty = try await latency(20) { _ in
    countyTeachers = try await directory.users(under: county, kind: .teacher).count
  }
  let orgByCode = try await latency(n) { i in
    guard directory.org(code: "C\(randomUsers[i] % Province.classes)") != nil else {
      throw BenchError("no class")
    }
  }
  let m = memory()
  for (name, l) in [
    ("by_id", byID), ("by_external", byExternal), ("cached", cached), ("children", children),
    ("school_teachers", underSchool), ("county_teachers", underCounty), ("org_code", orgByCode),
  ] {
    values += [("\(name)_p50_us", l.p50), ("\(name)_p99_us", l.p99)]
  }
  values += [
    ("county_teachers", Double(countyTeachers)),
    ("cache_entries", Double(directory.cachedUserCount)),
    ("peak_mib", m.peak), ("rss_mib", m.now),
  ]
  report(values)
  await store.close()
}

// MARK: The parent

/// Runs this program with `arguments` and returns the `key=value` lines it printed.
func child(_ arguments: [String]) throws -> [String: Double] {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
  process.arguments = arguments
  let output = Pipe()
  process.standardOutput = output
  try process.run()
  let text = output.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  guard process.terminationStatus == 0 else {
    throw BenchError("phase \(arguments.first ?? "") exited \(process.terminationStatus)")
  }
  var values: [String: Double] = [:]
  for line in String(decoding: text, as: UTF8.self).split(separator: "\n") {
    let parts = line.split(separator: "=", maxSplits: 1)
    if parts.count == 2, let v = Double(parts[1]) { values[String(parts[0])] = v }
  }
  return values
}

func psqlDrop(_ options: Options, _ name: String) {
  guard let server = options.server else { return }
  let process = Process()
  process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
  process.arguments = [
    "psql", "-X", "-q", "-h", server.host, "-p", String(server.port), "-U", server.username,
    "-d", server.database, "-c", "DROP DATABASE IF EXISTS \(name) WITH (FORCE)",
  ]
  var environment = ProcessInfo.processInfo.environment
  environment["PGPASSWORD"] = server.password
  process.environment = environment
  try? process.run()
  process.waitUntilExit()
}

func bench(_ storeName: String, _ options: Options, store: [String]) throws -> [String: Double] {
  print("\n== \(storeName): \(options.users) users followed")
  let common = ["--users", String(options.users)] + store
  let idle = try child(["--phase", "idle"] + common)
  let apply = try child(["--phase", "apply"] + common)
  let start = try child(["--phase", "start"] + common)
  func line(_ name: String, _ text: String) {
    print(name.padding(toLength: 40, withPad: " ", startingAt: 0) + text)
  }
  let events = apply["events"] ?? 0
  let applySeconds = apply["apply_s"] ?? 0
  let sourceSeconds = apply["source_s"] ?? 0
  line(
    "apply the feed",
    String(
      format: "%.1f s for %.0f events (%.0f events/s; %.1f s of it making the fake pages)",
      applySeconds, events, events / applySeconds, sourceSeconds))
  line(
    "  directory's share",
    String(
      format: "%.1f s (%.0f events/s)", applySeconds - sourceSeconds,
      events / (applySeconds - sourceSeconds)))
  line("peak RSS: store open, no directory", String(format: "%.0f MiB", idle["peak_mib"] ?? 0))
  line("peak RSS: applying the feed", String(format: "%.0f MiB", apply["peak_mib"] ?? 0))
  line("second directory start-up", String(format: "%.3f s", start["start_s"] ?? 0))
  line(
    "  RSS after start-up / peak",
    String(
      format: "%.0f MiB / %.0f MiB (%.0f orgs in memory, users in the store)",
      start["start_rss_mib"] ?? 0, start["peak_mib"] ?? 0, start["orgs"] ?? 0))
  let orgBytes = (start["tree_mib"] ?? 0) * 1_048_576 / (start["orgs"] ?? 1)
  line(
    "  RSS taken by the start-up",
    String(
      format: "%.1f MiB ≈ %.0f bytes per org (RSS before and after the directory starts)",
      start["tree_mib"] ?? 0, orgBytes))
  for (name, key) in [
    ("user(id:) cold, µs p50/p99", "by_id"), ("user(externalID:) cold", "by_external"),
    ("user(id:) cached", "cached"), ("children(ofParent:)", "children"),
    ("users(under: school, .teacher)", "school_teachers"),
    ("users(under: county, .teacher)", "county_teachers"), ("org(code:) (memory)", "org_code"),
  ] {
    line(
      name,
      String(format: "%10.1f / %10.1f", start["\(key)_p50_us"] ?? 0, start["\(key)_p99_us"] ?? 0))
  }
  line(
    "  cache entries after lookups",
    String(format: "%.0f (bound 50,000)", start["cache_entries"] ?? 0))
  var figures = start
  figures["apply_s"] = applySeconds
  figures["apply_peak_mib"] = apply["peak_mib"] ?? 0
  figures["idle_peak_mib"] = idle["peak_mib"] ?? 0
  return figures
}

func parseOptions() -> Options {
  do {
    return try Options.parse(Array(CommandLine.arguments.dropFirst()))
  } catch {
    FileHandle.standardError.write(Data("directory-bench: \(error)\n".utf8))
    exit(64)
  }
}

let options = parseOptions()
if let phase = options.phase {
  do {
    switch phase {
    case "idle": try await idlePhase(options)
    case "apply": try await applyPhase(options)
    case "start": try await startPhase(options)
    default: throw BenchError("unknown phase \(phase)")
    }
  } catch {
    FileHandle.standardError.write(Data("directory-bench \(phase): \(error)\n".utf8))
    exit(1)
  }
  exit(0)
}

print("directory-bench (\(ProcessInfo.processInfo.activeProcessorCount) cores)")
var results: [(String, [String: Double])] = []
let dir = NSTemporaryDirectory() + "directory-bench-" + UUID().uuidString
try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: dir) }
results.append(("SQLite", try bench("SQLite", options, store: ["--sqlite-directory", dir])))
if let server = options.server, let url = options.serverURL {
  let name = "directory_bench_" + UUID().uuidString.replacingOccurrences(of: "-", with: "")
    .lowercased().prefix(12)
  try await PostgresStore.createDatabaseIfMissing(on: server, name: name)
  print("\ndatabase \(name) on \(server.host):\(server.port) (dropped at the end)")
  do {
    results.append(
      ("PostgreSQL",
       try bench(
        "PostgreSQL", options, store: ["--database-url", url, "--database-name", name])))
  } catch {
    psqlDrop(options, name)
    throw error
  }
  psqlDrop(options, name)
}
print("\n== summary (\(options.users) users)")
print("store        apply s   apply peak MiB   2nd start s   2nd peak MiB   by-id p50 µs")
for (store, f) in results {
  print(
    store.padding(toLength: 10, withPad: " ", startingAt: 0)
      + String(
        format: " %9.1f %16.0f %13.3f %14.0f %14.1f", f["apply_s"] ?? 0, f["apply_peak_mib"] ?? 0,
        f["start_s"] ?? 0, f["peak_mib"] ?? 0, f["by_id_p50_us"] ?? 0))
}
if options.server == nil {
  print("PostgreSQL: skipped (no --database-url or SMARTSCHOOL_BENCH_DATABASE_URL)")
}
