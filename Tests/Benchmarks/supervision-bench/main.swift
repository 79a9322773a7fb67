// supervision-bench: a county term (62 schools, 200 smart classrooms, 20 teaching weeks,
// ~25,000 lessons) and then a city of 10 such counties, served by a real in-process
// supervision server on loopback, on SQLite and, given a server, on PostgreSQL in the same run:
//
//   supervision-bench [--database-url postgres://user@host:port/db] [--only sqlite|postgresql]
//                     [--lesson-batch N]
//
// The PostgreSQL server also comes from SMARTSCHOOL_BENCH_DATABASE_URL; the bench makes a
// fresh database on it per run (its role needs CREATEDB) and drops it at the end. Needs
// `sqlite3` and `psql`. Prints the streamed lesson import rate against the database's own bulk
// loader fed the same rows (`sqlite3 .import`, `psql \copy` = COPY) into an equivalent table
// (the mean of one load before the import and one after), the compliance report latency
// (with per-school rows) and the weekly notice latency, and for the city the monthly notice,
// the yearly ranking and early warning over all its schools (target < 300 ms each), the
// reports against a trivial unary RPC (GetTerm) measured in the same run. The import lines
// also give the CPU time it took per lesson: this process (client and server) and, when the
// PostgreSQL server runs on this machine, its backends (read from /proc), to tell which side
// bounds the rate on a loaded machine. Then the whole change feed is read from the start
// through ListChanges, as the data centre's follower does (events/s).
import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import SwiftProtobuf

struct Feed: IdentityChangeSource {
  let changes: [Smartschool_Common_V1_Change]
  func listChanges(after: Int64, pageSize: Int) async throws
    -> Smartschool_Common_V1_ListChangesResponse
  {
    let rest = changes.filter { $0.sequence > after }
    let page = Array(rest.prefix(pageSize))
    return .with {
      $0.changes = page
      $0.lastSequence = page.last?.sequence ?? after
      $0.moreAvailable = rest.count > page.count
    }
  }
}

struct World {
  var changes: [Smartschool_Common_V1_Change] = []
  var counties: [String] = []
  var schoolsByCounty: [String: [String]] = [:]
  var paths: [String: String] = [:]

  mutating func org(
    _ code: String, _ kind: Smartschool_Common_V1_OrgKind, parent: String?,
    schoolKind: Smartschool_Common_V1_SchoolKind = .unspecified
  ) {
    let path = (parent.map { paths[$0]! } ?? "/") + code + "/"
    paths[code] = path
    let org = Smartschool_Identity_V1_Org.with {
      $0.id = code
      $0.code = code
      $0.name = code
      $0.kind = kind
      $0.parentID = parent ?? ""
      $0.path = path
      $0.schoolKind = schoolKind
      $0.active = true
    }
    append("org", code, path: path, org)
  }

  /// An upsert of `payload` on the feed.
  mutating func append(
    _ entity: String, _ key: String, path: String, _ payload: any SwiftProtobuf.Message
  ) {
    var c = Smartschool_Common_V1_Change()
    c.sequence = Int64(changes.count + 1)
    c.entity = entity
    c.id = key
    c.naturalKey = key
    c.op = .upsert
    c.orgPath = path
    c.payload = try! Google_Protobuf_Any(message: payload)
    changes.append(c)
  }

  /// A province, a city and `counties` counties of 62 schools (28 teaching points, 19 rural,
  /// 15 urban).
  init(counties n: Int) {
    org("P", .province, parent: nil)
    org("C", .city, parent: "P")
    for k in 0..<n {
      let county = "K\(k)"
      counties.append(county)
      org(county, .county, parent: "C")
      for s in 0..<62 {
        let kind: Smartschool_Common_V1_SchoolKind =
          s < 28 ? .teachingPoint : s < 47 ? .rural : .urban
        let code = "\(county)-S\(s)"
        org(code, .school, parent: county, schoolKind: kind)
        schoolsByCounty[county, default: []].append(code)
      }
      // The teachers the lessons name: lessons by teachers identity does not know count in
      // no report, so without them the reports would read nothing.
      for t in 0..<400 { teacher("\(county)-T\(t)", at: "\(county)-S\(t % 62)") }
    }
  }

  mutating func teacher(_ externalID: String, at school: String) {
    let user = Smartschool_Identity_V1_User.with {
      $0.id = externalID
      $0.externalID = externalID
      $0.username = externalID.lowercased()
      $0.displayName = externalID
      $0.kind = .teacher
      $0.orgID = school
      $0.orgCode = school
      $0.orgPath = paths[school]!
      $0.birthYear = 1980
      $0.status = .active
    }
    append("user", externalID, path: paths[school]!, user)
  }
}

let termStart = CalendarDate("2020-09-07")!
let weeks = 20
let equippedMidTerm = CalendarDate("2020-10-12")!

/// The lessons of one county's 200 classrooms over 20 weeks: 4–9 a week (~24,800).
func lessons(county: String) -> [Smartschool_Supervision_V1_Lesson] {
  var out: [Smartschool_Supervision_V1_Lesson] = []
  out.reserveCapacity(26_000)
  for c in 0..<200 {
    for w in 0..<weeks {
      let n = 4 + (c * 7 + w * 3) % 5 + (w % 3 == 0 ? 1 : 0)
      for i in 0..<n {
        let date = termStart.adding(days: w * 7 + i % 5)
        // Every tenth classroom is equipped mid-term (2020-10-12): nothing before that.
        if c % 10 == 9 && date < equippedMidTerm { continue }
        out.append(
          .with {
            $0.classroomCode = "\(county)-R\(c)"
            $0.teacherExternalID = "\(county)-T\((c * 3 + i) % 400)"
            $0.subject = Smartschool_Common_V1_Subject(rawValue: (c + i * (1 + w % 3)) % 16 + 1)!
            $0.date = date.description
            $0.period = Int32(i / 5 + 1)
            $0.durationMinutes = 40
            $0.source = .platform
          })
      }
    }
  }
  return out
}

func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

func ms(_ d: Duration) -> Double {
  Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
}

func line(_ name: String, _ value: String, _ ratio: String) {
  writeLine("  \(name.padding(toLength: 46, withPad: " ", startingAt: 0)) \(value)   \(ratio)")
}

struct BenchError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// Runs `tool` (found on PATH) to completion; its wall-clock milliseconds and standard output.
/// A non-zero exit or anything on standard error fails the bench: a loader that loaded fewer
/// rows than asked would flatter the service.
func run(_ tool: String, _ arguments: [String], environment: [String: String] = [:]) throws
  -> (ms: Double, output: String)
{
  let process = Process()
  process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
  process.arguments = [tool] + arguments
  process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
  let output = Pipe()
  let errors = Pipe()
  process.standardOutput = output
  process.standardError = errors
  let start = ContinuousClock.now
  try process.run()
  let text = output.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  let elapsed = ms(ContinuousClock.now - start)
  let complaint = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
  guard process.terminationStatus == 0, complaint.isEmpty else {
    throw BenchError("\(tool) exited \(process.terminationStatus): \(complaint)")
  }
  let printed = String(decoding: text, as: UTF8.self)
  return (elapsed, printed.trimmingCharacters(in: .whitespacesAndNewlines))
}

/// `psql -c command` on `server`'s database, unaligned and tuples only.
func psql(_ server: DatabaseSettings, _ command: String) throws -> (ms: Double, output: String) {
  var environment = ["PGSSLMODE": server.tls.rawValue]
  environment["PGPASSWORD"] = server.password
  return try run(
    "psql",
    [
      "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", server.host, "-p",
      String(server.port), "-U", server.username, "-d", server.database, "-c", command,
    ], environment: environment)
}

/// Where a run's store lives.
enum BenchStore {
  case sqlite
  case postgresql(server: DatabaseSettings)

  var name: String {
    switch self {
    case .sqlite: "SQLite"
    case .postgresql: "PostgreSQL"
    }
  }
}

/// What one run measured, for the summary.
struct Figures {
  var store = ""
  var label = ""
  var lessons = 0
  var importRate = 0.0
  /// CPU microseconds per imported lesson: this process, and the database's backends (nil
  /// when they cannot be read).
  var processCPU = 0.0
  var databaseCPU: Double? = nil
  /// Re-sending the first county's lessons: one message a lesson, and batched.
  var resentSingleRate = 0.0
  var resentBatchedRate = 0.0
  /// The whole change feed read from the start through ListChanges, 1,000 events a page.
  var feedRate = 0.0
  var feedEvents = 0
  var loader = ""
  /// The mean of `loaderRates`, the loader's rate before and after the import.
  var loaderRate = 0.0
  var loaderRates = (before: 0.0, after: 0.0)
  var countyMs = 0.0
  var cityMs: Double? = nil
  var noticeMs = 0.0
  /// The city's monthly notice, yearly ranking and warnings (nil for a one-county run).
  var monthMs: Double? = nil
  var yearMs: Double? = nil
  var warningsMs: Double? = nil
}

/// CPU seconds this process has used (user and system).
func processCPUSeconds() -> Double {
  var usage = rusage()
  getrusage(RUSAGE_SELF.rawValue, &usage)
  return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
    + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// CPU seconds used so far by each backend serving `database`, read from /proc; empty when
/// the server is not on this machine (or /proc is not readable).
func backendCPUSeconds(_ database: DatabaseSettings) -> [Int: Double] {
  guard
    let pids = try? psql(
      database,
      "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        + "AND pid <> pg_backend_pid()"
    ).output
  else { return [:] }
  let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
  var out: [Int: Double] = [:]
  for pid in pids.split(separator: "\n").compactMap({ Int($0) }) {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    else { continue }
    // Fields after the command name: state is field 3, utime 14 and stime 15.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12])
    else { continue }
    out[pid] = (user + system) / ticks
  }
  return out
}

/// The same rows the service imported, as a CSV of the lesson table's columns (classroom
/// numbers as the service handed them out: in registration order from 1).
func lessonCSV(_ world: World, to path: String) throws -> Int {
  var text = ""
  var count = 0
  for (k, county) in world.counties.enumerated() {
    let schools = world.schoolsByCounty[county]!
    for row in lessons(county: county) {
      let c = Int(row.classroomCode.split(separator: "R").last!)!
      let date = CalendarDate(row.date)!
      text +=
        "\(k * 200 + c + 1),\(date.dayNumber),\(row.period),\(date.monday.dayNumber),"
        + "\(world.paths[schools[c % schools.count]]!),\(row.teacherExternalID),"
        + "\(row.subject.rawValue),\(row.durationMinutes),1\n"
      count += 1
    }
  }
  try text.write(toFile: path, atomically: false, encoding: .utf8)
  return count
}

/// Loads the CSV at `csv` with the database's own bulk loader into a table shaped as the
/// service's lesson table (same key and indexes); rows per second. Each `round` loads a table
/// (or SQLite file) of its own.
func loaderRate(_ store: BenchStore, csv: String, rows: Int, directory: String, round: Int)
  throws -> (name: String, rate: Double)
{
  switch store {
  case .sqlite:
    let file = directory + "/loader\(round).sqlite"
    _ = try run(
      "sqlite3",
      [
        file,
        """
        CREATE TABLE sup_lessons (classroom INTEGER NOT NULL, day INTEGER NOT NULL,
          period INTEGER NOT NULL CHECK (period BETWEEN 1 AND 20), week INTEGER NOT NULL,
          org_path TEXT NOT NULL, teacher TEXT NOT NULL, subject INTEGER NOT NULL,
          minutes INTEGER NOT NULL CHECK (minutes BETWEEN 1 AND 240), source INTEGER NOT NULL,
          PRIMARY KEY (classroom, day, period)) WITHOUT ROWID;
        CREATE INDEX sup_lessons_scope_week ON sup_lessons(org_path, week, classroom, subject);
        CREATE INDEX sup_lessons_scope_day ON sup_lessons(org_path, day, teacher);
        PRAGMA journal_mode = WAL;
        """,
      ])
    let load = try run("sqlite3", [file, ".import --csv '\(csv)' sup_lessons"])
    let loaded = try run("sqlite3", [file, "SELECT count(*) FROM sup_lessons"]).output
    guard loaded == String(rows) else { throw BenchError("sqlite3 loaded \(loaded) of \(rows)") }
    return ("sqlite3 .import", Double(rows) / (load.ms / 1000))
  case .postgresql(let database):
    _ = try psql(
      database,
      """
      CREATE TABLE bench_copy_lessons\(round) (classroom bigint NOT NULL, day integer NOT NULL,
        period integer NOT NULL CHECK (period BETWEEN 1 AND 20), week integer NOT NULL,
        org_path text COLLATE "C" NOT NULL, teacher text COLLATE "C" NOT NULL,
        subject integer NOT NULL, minutes integer NOT NULL CHECK (minutes BETWEEN 1 AND 240),
        source integer NOT NULL, PRIMARY KEY (classroom, day, period));
      CREATE INDEX bench_copy_week\(round)
        ON bench_copy_lessons\(round)(org_path, week, classroom, subject);
      CREATE INDEX bench_copy_day\(round) ON bench_copy_lessons\(round)(org_path, day, teacher);
      """)
    let load = try psql(
      database, "\\copy bench_copy_lessons\(round) FROM '\(csv)' WITH (FORMAT csv)")
    let loaded = try psql(database, "SELECT count(*) FROM bench_copy_lessons\(round)").output
    guard loaded == String(rows) else { throw BenchError("COPY loaded \(loaded) of \(rows)") }
    return ("psql \\copy (COPY)", Double(rows) / (load.ms / 1000))
  }
}

func run(counties n: Int, label: String, on store: BenchStore) async throws -> Figures {
  let world = World(counties: n)
  let key = Curve25519.Signing.PrivateKey()
  let signer = TokenSigner(keyID: "b1", key: key)
  let pub = key.publicKey
  let verifier = TokenVerifier(keySource: {
    [PublishedKey(keyID: "b1", publicKey: pub, retireTime: nil)]
  })
  let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sup-bench-\(UUID())")
    .path
  try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  let keep = ProcessInfo.processInfo.environment["SMARTSCHOOL_BENCH_KEEP"] == "1"
  defer {
    // SMARTSCHOOL_BENCH_KEEP=1 keeps the stores (the SQLite folder, the PostgreSQL database),
    // for EXPLAIN afterwards.
    if keep {
      writeLine("kept: \(dir)")
    } else {
      try? FileManager.default.removeItem(atPath: dir)
    }
  }
  var config = HostConfig.ephemeral(service: "supervision", dataDirectory: dir)
  config.metricsPort = -1
  var database: DatabaseSettings? = nil
  if case .postgresql(let server) = store {
    let name = "supbench_" + UUID().uuidString.prefix(8).lowercased()
    try await PostgresStore.createDatabaseIfMissing(on: server, name: name)
    database = server.with(database: name)
    config.database = database
  }
  defer {
    if let database, keep {
      writeLine("kept: database \(database.database)")
    } else if let database {
      _ = try? psql(
        database.with(database: "postgres"),
        "DROP DATABASE IF EXISTS \(database.database) WITH (FORCE)")
    }
  }
  var settings = SupervisionSettings()
  settings.directoryPollInterval = .seconds(3600)
  if let lessonBatch { settings.lessonBatch = lessonBatch }
  var logger = Logger(label: "bench")
  logger.logLevel = .critical
  let definition = try await buildSupervisionService(
    config: config, settings: settings, verifier: verifier,
    identity: Feed(changes: world.changes), logger: logger)
  try await (definition.background.first as! OrgDirectory).sync()
  let host = try ServiceHost(config: config, definition: definition, logger: logger)
  let serving = Task { try await host.run(handleSignals: false) }
  let port = try await host.boundPort()
  let now = Int64(Date().timeIntervalSince1970)
  let token = try signer.sign(
    AccessTokenClaims(
      iss: smartSchoolTokenIssuer, sub: "bench", usr: "bench", knd: "staff", sid: "s",
      iat: now, exp: now + 3600, rol: [.init(r: "system_admin", o: "", p: "/")]))
  let auth: Metadata = ["authorization": "Bearer \(token)"]
  let clock = ContinuousClock()
  var figures = Figures(store: store.name, label: label)

  writeLine(
    "\(label) on \(store.name): \(n) count\(n == 1 ? "y" : "ies"), \(n * 62) schools, "
      + "\(n * 200) classrooms, \(weeks) weeks, \(settings.lessonBatch) lessons a transaction"
  )
  try await withGRPCClient(
    transport: .http2NIOPosix(
      target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
  ) { grpc in
    let client = Smartschool_Supervision_V1_SupervisionService.Client(wrapping: grpc)
    _ = try await client.createTerm(
      .with {
        $0.term = .with {
          $0.code = "2020-2021-1"
          $0.name = "bench"
          $0.startDate = termStart.description
          $0.endDate = termStart.adding(days: weeks * 7 - 1).description
        }
      }, metadata: auth)
    for county in world.counties {
      let schools = world.schoolsByCounty[county]!
      for c in 0..<200 {
        _ = try await client.createClassroom(
          .with {
            $0.classroom = .with {
              $0.code = "\(county)-R\(c)"
              $0.schoolCode = schools[c % schools.count]
              $0.equippedDate = c % 10 == 9 ? equippedMidTerm.description : "2020-08-01"
            }
          }, metadata: auth)
      }
    }

    // Baseline: a trivial unary RPC.
    var unary: [Double] = []
    for _ in 0..<200 {
      let t = try await clock.measure {
        _ = try await client.getTerm(.with { $0.code = "2020-2021-1" }, metadata: auth)
      }
      unary.append(ms(t))
    }
    let unaryMs = median(unary)

    // Import, county by county, each county in one client stream: the batched form
    // (ImportLessonBatches, 1,000 lessons a message), or one message a lesson (ImportLessons,
    // written 1,000 at a time).
    func send(_ rows: [Smartschool_Supervision_V1_Lesson], batched: Bool) async throws
      -> Smartschool_Common_V1_ImportSummary
    {
      if batched {
        return try await client.importLessonBatches(metadata: auth) { writer in
          for chunk in stride(from: 0, to: rows.count, by: 1000) {
            try await writer.write(
              .with { $0.lessons = Array(rows[chunk..<min(chunk + 1000, rows.count)]) })
          }
        }
      }
      return try await client.importLessons(metadata: auth) { writer in
        for chunk in stride(from: 0, to: rows.count, by: 1000) {
          try await writer.write(contentsOf: rows[chunk..<min(chunk + 1000, rows.count)])
        }
      }
    }
    // Baseline: the database's own bulk loader fed the same rows, once before the import and
    // once after. This machine's speed drifts within a run; the import is set against the
    // mean of the two.
    let csv = dir + "/lessons.csv"
    let csvRows = try lessonCSV(world, to: csv)
    var loaderStore = store
    if let database { loaderStore = .postgresql(server: database) }
    let loadedBefore = try loaderRate(
      loaderStore, csv: csv, rows: csvRows, directory: dir, round: 0)
    var total = 0
    var importTime = Duration.zero
    let cpuBefore = processCPUSeconds()
    let backendsBefore = database.map(backendCPUSeconds) ?? [:]
    for county in world.counties {
      let rows = lessons(county: county)
      total += rows.count
      var summary = Smartschool_Common_V1_ImportSummary()
      importTime += try await clock.measure { summary = try await send(rows, batched: true) }
      precondition(summary.rejected == 0, "bench rows rejected: \(summary.errors.prefix(3))")
      precondition(summary.created == Int64(rows.count), "bench rows not all created")
    }
    figures.lessons = total
    figures.importRate = Double(total) / (ms(importTime) / 1000)
    figures.processCPU = (processCPUSeconds() - cpuBefore) * 1e6 / Double(total)
    if let database {
      let after = backendCPUSeconds(database)
      if !after.isEmpty {
        let used = after.reduce(0.0) { $0 + $1.value - (backendsBefore[$1.key] ?? 0) }
        figures.databaseCPU = used * 1e6 / Double(total)
      }
    }
    // Both forms again on the first county's rows (all stored already: replaced unchanged).
    let again = lessons(county: world.counties[0])
    var resent = (single: Duration.zero, batched: Duration.zero)
    resent.single = try await clock.measure { _ = try await send(again, batched: false) }
    resent.batched = try await clock.measure { _ = try await send(again, batched: true) }
    figures.resentSingleRate = Double(again.count) / (ms(resent.single) / 1000)
    figures.resentBatchedRate = Double(again.count) / (ms(resent.batched) / 1000)

    // The data centre's follower: the whole feed (the imports' lessons, blocks of 256 a row
    // where a batch wrote many) read from the start, 1,000 events a page.
    var followed = 0
    let feedTime = try await clock.measure {
      var after: Int64 = 0
      while true {
        let page = try await client.listChanges(
          .with {
            $0.afterSequence = after
            $0.pageSize = 1000
          }, metadata: auth)
        followed += page.changes.count
        after = page.lastSequence
        if !page.moreAvailable { break }
      }
    }
    figures.feedRate = Double(followed) / (ms(feedTime) / 1000)
    figures.feedEvents = followed

    precondition(csvRows == total)
    let loadedAfter = try loaderRate(
      loaderStore, csv: csv, rows: total, directory: dir, round: 1)
    figures.loader = loadedBefore.name
    figures.loaderRates = (loadedBefore.rate, loadedAfter.rate)
    figures.loaderRate = (loadedBefore.rate + loadedAfter.rate) / 2

    // Compliance for one county (per-school rows) and for the whole scope.
    var countyMs: [Double] = []
    var rows = 0
    for _ in 0..<15 {
      let t = try await clock.measure {
        let r = try await client.getComplianceReport(
          .with {
            $0.orgCode = world.counties[0]
            $0.termCode = "2020-2021-1"
          }, metadata: auth)
        rows = r.children.count
      }
      countyMs.append(ms(t))
    }
    figures.countyMs = median(countyMs)
    var cityMs: [Double] = []
    var cityFigures = ""
    if n > 1 {
      for _ in 0..<5 {
        let t = try await clock.measure {
          let r = try await client.getComplianceReport(
            .with {
              $0.orgCode = "C"
              $0.termCode = "2020-2021-1"
            }, metadata: auth)
          cityFigures =
            "\(r.children.count) county rows, 学科达标率 \(r.scope.subjectRateText), "
            + "课时达标率 \(r.scope.lessonRateText)"
        }
        cityMs.append(ms(t))
      }
      figures.cityMs = median(cityMs)
    }
    var noticeMs: [Double] = []
    for i in 0..<15 {
      let t = try await clock.measure {
        _ = try await client.getWeeklyNotice(
          .with {
            $0.orgCode = world.counties[0]
            $0.week = termStart.adding(days: 7 * (1 + i % (weeks - 1))).description
          }, metadata: auth)
      }
      noticeMs.append(ms(t))
    }
    figures.noticeMs = median(noticeMs)
    // The reporting rhythm and early warning over the whole city (620 schools).
    var cityReports: [(name: String, ms: Double, figures: String)] = []
    if n > 1 {
      func time(_ body: () async throws -> String) async throws -> (Double, String) {
        var samples: [Double] = []
        var printed = ""
        for _ in 0..<5 {
          let t = try await clock.measure { printed = try await body() }
          samples.append(ms(t))
        }
        return (median(samples), printed)
      }
      for (period, name) in [(Smartschool_Supervision_V1_RankingPeriod.month, "monthly notice"),
        (.year, "yearly ranking")]
      {
        let (t, text) = try await time {
          let r = try await client.getRanking(
            .with {
              $0.orgCode = "C"
              $0.period = period
              $0.date = "2020-10-15"
            }, metadata: auth)
          precondition(r.schools.count == n * 62 && !r.weeks.isEmpty, "empty \(name)")
          return "\(r.weeks.count) weeks, \(r.schools.count) schools ranked, "
            + "\(r.schoolsBelowStandard.count) below standard, "
            + "课时达标率 \(r.scope.lessonRateText)"
        }
        cityReports.append(("\(name), whole city (median)", t, text))
        if period == .month { figures.monthMs = t } else { figures.yearMs = t }
      }
      let (t, text) = try await time {
        let r = try await client.listWarnings(
          .with {
            $0.orgCode = "C"
            $0.termCode = "2020-2021-1"
            $0.asOf = termStart.adding(days: weeks * 7).description
          }, metadata: auth)
        return "\(r.warnings.count) warnings (\(r.active) standing, \(r.cleared) cleared)"
      }
      cityReports.append(("warnings, whole city (median)", t, text))
      figures.warningsMs = t
    }
    let county = try await client.getComplianceReport(
      .with {
        $0.orgCode = world.counties[0]
        $0.termCode = "2020-2021-1"
      }, metadata: auth)

    // Issue 27's targets on SQLite; PostgreSQL's are within 2x of SQLite's (the summary
    // compares the two stores side by side).
    let target: (ms: Double, importShare: Double) =
      database == nil ? (100, 0.4) : (150, 0.2)
    line("baseline: unary GetTerm (median)", String(format: "%.3f ms", unaryMs), "1.00x")
    line(
      "baseline: \(figures.loader) of the same rows",
      String(format: "%.0f lessons/s", figures.loaderRate),
      String(
        format: "1.00x (mean of %.0f before and %.0f after the import)",
        figures.loaderRates.before, figures.loaderRates.after))
    line(
      "lesson import, batched (\(total) lessons)",
      String(format: "%.0f lessons/s", figures.importRate),
      String(format: "%.2fx of the loader", figures.importRate / figures.loaderRate)
        + (target.importShare > 0
          ? "; target ≥ \(target.importShare): "
            + (figures.importRate / figures.loaderRate >= target.importShare ? "met" : "MISSED")
          : ""))
    line(
      "  CPU per lesson: this process / database",
      String(format: "%.1f µs", figures.processCPU)
        + (figures.databaseCPU.map { String(format: " / %.1f µs", $0) } ?? " / -"), "")
    line(
      "re-send of 1 county (\(again.count)), one message a lesson",
      String(format: "%.0f lessons/s", figures.resentSingleRate),
      String(format: "%.2fx of the loader", figures.resentSingleRate / figures.loaderRate))
    line(
      "re-send of 1 county (\(again.count)), batched",
      String(format: "%.0f lessons/s", figures.resentBatchedRate),
      String(format: "%.2fx of the loader", figures.resentBatchedRate / figures.loaderRate))
    line(
      "change feed read from the start (\(figures.feedEvents) events)",
      String(format: "%.0f events/s", figures.feedRate), "1,000 a page")
    line(
      "compliance, 1 county, \(rows) school rows (median)",
      String(format: "%.2f ms", figures.countyMs),
      String(format: "%.1fx unary; ", figures.countyMs / unaryMs)
        + "target < \(Int(target.ms)) ms: \(figures.countyMs < target.ms ? "met" : "MISSED")")
    if n > 1 {
      let cityTarget = database == nil ? 60.0 : 120.0
      line(
        "compliance, whole city (median)", String(format: "%.2f ms", median(cityMs)),
        String(format: "%.1fx unary; ", median(cityMs) / unaryMs)
          + "target < \(Int(cityTarget)) ms: \(median(cityMs) < cityTarget ? "met" : "MISSED")")
      writeLine("    \(cityFigures)")
    }
    for r in cityReports {
      line(
        r.name, String(format: "%.2f ms", r.ms),
        String(format: "%.1fx unary; ", r.ms / unaryMs)
          + "target < 300 ms: \(r.ms < 300 ? "met" : "MISSED")")
      writeLine("    \(r.figures)")
    }
    line(
      "weekly notice, 1 county (median)", String(format: "%.2f ms", figures.noticeMs),
      String(format: "%.1fx unary", figures.noticeMs / unaryMs))
    writeLine(
      "    county figures: \(county.scope.classroomWeeks) classroom-weeks, "
        + "\(county.scope.lessonCount) lessons, 学科达标率 \(county.scope.subjectRateText), "
        + "课时达标率 \(county.scope.lessonRateText), compliant \(county.scope.compliantShareText)"
    )
  }
  await host.shutdown()
  _ = try? await serving.value
  if let storage = definition.store, storage.backend == .postgresql { await storage.close() }
  return figures
}

/// The PostgreSQL server (if any), which stores to run (`--only` picks one) and the lessons
/// per import transaction (`--lesson-batch`; nil: the service's default).
func parseArguments(_ arguments: [String]) throws -> (
  server: DatabaseSettings?, sqlite: Bool, postgresql: Bool, lessonBatch: Int?
) {
  let usage =
    "usage: supervision-bench [--database-url postgres://user@host:port/db] "
    + "[--only sqlite|postgresql] [--lesson-batch N]"
  var url = ProcessInfo.processInfo.environment["SMARTSCHOOL_BENCH_DATABASE_URL"]
  var only: String? = nil
  var lessonBatch: Int? = nil
  var rest = arguments[...]
  while let flag = rest.popFirst() {
    switch (flag, rest.popFirst()) {
    case ("--database-url", let value?): url = value
    case ("--only", let value?) where value == "sqlite" || value == "postgresql": only = value
    case ("--lesson-batch", let value?) where (Int(value) ?? 0) > 0: lessonBatch = Int(value)
    default: throw BenchError(usage)
    }
  }
  var server: DatabaseSettings? = nil
  if let url, !url.isEmpty {
    do {
      server = try DatabaseSettings(url: url, poolSize: 8)
    } catch let error as DatabaseSettings.Invalid {
      throw BenchError("--database-url: \(error.message)")
    }
  }
  if only == "postgresql" && server == nil {
    throw BenchError("--only postgresql needs --database-url")
  }
  return (server, only != "postgresql", only != "sqlite" && server != nil, lessonBatch)
}

let server: DatabaseSettings?
nonisolated(unsafe) var lessonBatch: Int? = nil
var stores: [BenchStore] = []
do {
  let parsed = try parseArguments(Array(CommandLine.arguments.dropFirst()))
  server = parsed.server
  lessonBatch = parsed.lessonBatch
  if parsed.sqlite { stores.append(.sqlite) }
  if parsed.postgresql, let server { stores.append(.postgresql(server: server)) }
} catch {
  FileHandle.standardError.write(Data("supervision-bench: \(error)\n".utf8))
  exit(64)
}
var results: [Figures] = []
for store in stores {
  results.append(try await run(counties: 1, label: "county term", on: store))
  results.append(try await run(counties: 10, label: "city of 10 counties", on: store))
}
writeLine("\n== summary (\(ProcessInfo.processInfo.activeProcessorCount) cores)")
writeLine(
  "store       run                  lessons  import/s   loader/s  ratio  county ms  city ms"
    + "  notice ms  month/year/warnings ms  re-send 1-row/batched  CPU µs/lesson proc/db"
    + "  loader"
)
for f in results {
  writeLine(
    f.store.padding(toLength: 11, withPad: " ", startingAt: 0) + " "
      + f.label.padding(toLength: 20, withPad: " ", startingAt: 0)
      + String(
        format: " %7ld %9.0f %10.0f %6.2f %10.2f ", f.lessons, f.importRate, f.loaderRate,
        f.importRate / f.loaderRate, f.countyMs)
      + (f.cityMs.map { String(format: "%.2f", $0) } ?? "-").padding(
        toLength: 8, withPad: " ", startingAt: 0)
      + String(format: " %10.2f  ", f.noticeMs)
      + [f.monthMs, f.yearMs, f.warningsMs].map { $0.map { String(format: "%.1f", $0) } ?? "-" }
      .joined(separator: "/").padding(toLength: 22, withPad: " ", startingAt: 0)
      + String(format: " %9.0f/%-9.0f  ", f.resentSingleRate, f.resentBatchedRate)
      + (String(format: "%.1f/", f.processCPU)
        + (f.databaseCPU.map { String(format: "%.1f", $0) } ?? "-")).padding(
          toLength: 22, withPad: " ", startingAt: 0)
      + f.loader)
}
// Issue 27's targets (and issue 26's for the reporting rhythm and warnings), both stores side
// by side: a figure on PostgreSQL meets its target within 2x of SQLite's, and also absolutely
// where the target holds on both stores (`both`: issue 26's < 300 ms).
func targetRow(
  _ name: String, _ target: String, _ sqlite: Double?, _ postgres: Double?, ratio: Bool = false,
  both: Bool = false, met: (Double) -> Bool
) {
  func cell(_ v: Double?, _ ok: Bool) -> String {
    guard let v else { return "-".padding(toLength: 20, withPad: " ", startingAt: 0) }
    return (String(format: ratio ? "%.2f" : "%.1f ms", v) + (ok ? " met" : " MISSED"))
      .padding(toLength: 20, withPad: " ", startingAt: 0)
  }
  let pgOK: Bool =
    postgres.map { pg in
      guard let sqlite else { return met(pg) }
      return (ratio ? pg >= sqlite / 2 : pg <= sqlite * 2) && (!both || met(pg))
    } ?? false
  writeLine(
    name.padding(toLength: 34, withPad: " ", startingAt: 0)
      + target.padding(toLength: 12, withPad: " ", startingAt: 0)
      + cell(sqlite, sqlite.map(met) ?? false) + cell(postgres, pgOK))
}
if let city = results.first(where: { $0.store == "SQLite" && $0.cityMs != nil })
  ?? results.first(where: { $0.cityMs != nil })
{
  let sqlite = results.first { $0.store == "SQLite" && $0.cityMs != nil }
  let postgres = results.first { $0.store == "PostgreSQL" && $0.cityMs != nil }
  writeLine(
    "\n== targets, \(city.label) (PostgreSQL: within 2x of SQLite's figure)\n"
      + "figure".padding(toLength: 34, withPad: " ", startingAt: 0)
      + "target      SQLite              PostgreSQL")
  targetRow("compliance, whole city", "< 60 ms", sqlite?.cityMs, postgres?.cityMs) { $0 < 60 }
  targetRow(
    "lesson import / bulk loader", ">= 0.4", sqlite.map { $0.importRate / $0.loaderRate },
    postgres.map { $0.importRate / $0.loaderRate }, ratio: true
  ) { $0 >= 0.4 }
  targetRow(
    "monthly notice, whole city", "< 300 ms", sqlite?.monthMs, postgres?.monthMs, both: true
  ) { $0 < 300 }
  targetRow(
    "yearly ranking, whole city", "< 300 ms", sqlite?.yearMs, postgres?.yearMs, both: true
  ) { $0 < 300 }
  targetRow(
    "warnings, whole city", "< 300 ms", sqlite?.warningsMs, postgres?.warningsMs, both: true
  ) { $0 < 300 }
}
if server == nil && stores.contains(where: { $0.name == "SQLite" }) {
  writeLine("PostgreSQL: skipped (no --database-url or SMARTSCHOOL_BENCH_DATABASE_URL)")
}
