// province-bench: a province slice on PostgreSQL, through the release-built executables.
//
// One province of 16 cities, 105 counties and 16,000 schools (two classes and one smart
// classroom each) with 1,000,000 students and 80,000 teachers; a provincial unified exam of
// every student × 20 items; a term of smart-classroom lessons for every school (18 weeks × 5
// days × 13 periods, ~18.7 million). Identity, assessment and supervision run first as one
// replica each, then as three replicas each behind nginx (`grpc_pass`, round robin), each time
// on fresh databases of one throwaway PostgreSQL 15 cluster (Tests/postgres-cluster.sh). Prints
// per run: users imported per second, the directory's catch-up, exam scores imported per
// second, statistics with item analysis for the province, a city, a county and a school, lessons
// imported per second, the provincial and a county's compliance report, the database sizes and
// each service's peak RSS; and, measured in the same run, PostgreSQL's own `COPY` of the exam's
// score rows into an equivalent table, the baseline the import rate is set against.
//
//   swift build -c release --product province-bench --product identity-service \
//     --product assessment-service --product supervision-service
//   .build/release/province-bench [--scale 1.0] [--replicas 1,3] [--streams 4] \
//     [--bin .build/release]
//
// `--scale 0.1` runs a tenth of the schools and students (the org tree's 16 cities and 105
// counties stay). Run from the repository root; needs postgresql-15 (installed by
// Tests/postgres-cluster.sh when missing) and nginx. Not part of CI: the full scale takes about
// an hour on a 2-core machine.
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SmartSchoolModel

struct BenchError: Error, CustomStringConvertible {
  let description: String
  init(_ d: String) { description = d }
}

// MARK: Options

var options: [String: String] = [:]
var argIndex = 1
while argIndex + 1 < CommandLine.arguments.count {
  options[CommandLine.arguments[argIndex]] = CommandLine.arguments[argIndex + 1]
  argIndex += 2
}
let scale = Double(options["--scale"] ?? "") ?? 1.0
let replicaCounts = (options["--replicas"] ?? "1,3").split(separator: ",").compactMap { Int($0) }
let streams = max(1, Int(options["--streams"] ?? "") ?? 4)
let binDirectory = options["--bin"] ?? ".build/release"
guard scale > 0, scale <= 1, !replicaCounts.isEmpty, replicaCounts.allSatisfy({ $0 >= 1 })
else {
  FileHandle.standardError.write(Data("province-bench: bad --scale or --replicas\n".utf8))
  exit(2)
}
let adminPassword = "Province-admin-1"
let scratch = NSTemporaryDirectory() + "province-bench-" + UUID().uuidString
try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)

func line(_ text: String) { FileHandle.standardOutput.write(Data((text + "\n").utf8)) }

/// Progress on stderr with the time, so a failed run says which step it was in.
func phase(_ text: String) {
  FileHandle.standardError.write(Data("[\(Date())] province-bench: \(text)\n".utf8))
}

// MARK: The province

/// The slice's shape: codes are positional, so every run builds the same province.
struct Province {
  static let cities = 16
  static let counties = 105
  let schools: Int
  let studentsPerSchool: Int
  let teachersPerSchool: Int
  static let items = 20
  static let weeks = 18
  static let periods = 13

  init(scale: Double) {
    schools = max(Self.counties, Int((16_000 * scale).rounded()))
    studentsPerSchool = 62  // 31 a class: 16,000 × 62 ≈ 1,000,000 at full scale
    teachersPerSchool = 5
  }

  var students: Int { schools * studentsPerSchool }
  var teachers: Int { schools * teachersPerSchool }
  func county(of school: Int) -> Int { school % Self.counties }
  func city(ofCounty county: Int) -> Int { county % Self.cities }
  func schoolCode(_ s: Int) -> String { "S\(s)" }
  func classCode(_ s: Int, _ c: Int) -> String { "S\(s)-C\(c)" }
  /// The schools of streams' share `part` of `of`: whole schools, so a stream's rows for one
  /// student stay together.
  func schools(part: Int, of parts: Int) -> StrideTo<Int> { stride(from: part, to: schools, by: parts) }

  /// Province, cities, counties, schools, classes: parents first.
  func orgs() -> [Smartschool_Identity_V1_Org] {
    var out: [Smartschool_Identity_V1_Org] = [
      .with { $0.code = "P"; $0.name = "示范省"; $0.kind = .province }
    ]
    for c in 0..<Self.cities {
      out.append(.with { $0.code = "C\(c)"; $0.name = "市\(c)"; $0.kind = .city; $0.parentCode = "P" })
    }
    for k in 0..<Self.counties {
      out.append(.with {
        $0.code = "K\(k)"; $0.name = "县\(k)"; $0.kind = .county
        $0.parentCode = "C\(city(ofCounty: k))"
      })
    }
    for s in 0..<schools {
      out.append(.with {
        $0.code = schoolCode(s); $0.name = "学校\(s)"; $0.kind = .school
        $0.parentCode = "K\(county(of: s))"
        $0.schoolKind = [.teachingPoint, .rural, .urban][s % 3]
        $0.stages = [.junior]
      })
      for c in 0..<2 {
        out.append(.with {
          $0.code = classCode(s, c); $0.name = "八年级\(c + 1)班"; $0.kind = .class
          $0.parentCode = schoolCode(s); $0.grade = 8; $0.schoolYear = "2025-2026"
        })
      }
    }
    return out
  }

  func users(school s: Int) -> [Smartschool_Identity_V1_User] {
    var out: [Smartschool_Identity_V1_User] = []
    for n in 0..<studentsPerSchool {
      out.append(.with {
        $0.externalID = "S\(s)-ST\(n)"; $0.username = "s\(s)st\(n)"; $0.displayName = "学生"
        $0.kind = .student; $0.orgCode = classCode(s, n % 2)
      })
    }
    for n in 0..<teachersPerSchool {
      out.append(.with {
        $0.externalID = "S\(s)-T\(n)"; $0.username = "s\(s)t\(n)"; $0.displayName = "教师"
        $0.kind = .teacher; $0.orgCode = schoolCode(s)
      })
    }
    return out
  }

  func score(school s: Int, student n: Int, item i: Int) -> Double {
    Double((s * 7 + n * 13 + i * 5) % 6)
  }

  func scores(school s: Int) -> [Smartschool_Assessment_V1_ScoreRow] {
    var out: [Smartschool_Assessment_V1_ScoreRow] = []
    out.reserveCapacity(studentsPerSchool * Self.items)
    for n in 0..<studentsPerSchool {
      for i in 1...Self.items {
        out.append(.with {
          $0.examCode = "PX"; $0.studentExternalID = "S\(s)-ST\(n)"
          $0.classCode = classCode(s, n % 2); $0.schoolCode = schoolCode(s)
          $0.itemNumber = Int32(i); $0.score = score(school: s, student: n, item: i)
        })
      }
    }
    return out
  }

  static let termStart = DateComponents(year: 2025, month: 9, day: 1)

  func lessons(school s: Int) -> [Smartschool_Supervision_V1_Lesson] {
    var out: [Smartschool_Supervision_V1_Lesson] = []
    out.reserveCapacity(Self.weeks * 5 * Self.periods)
    let calendar = Calendar(identifier: .gregorian)
    let start = calendar.date(from: Self.termStart)!
    let formatter = DateFormatter()
    formatter.dateFormat = "yyyy-MM-dd"
    formatter.timeZone = TimeZone(identifier: "UTC")
    var utc = calendar
    utc.timeZone = TimeZone(identifier: "UTC")!
    for w in 0..<Self.weeks {
      for d in 0..<5 {
        let date = formatter.string(
          from: utc.date(byAdding: .day, value: w * 7 + d, to: start)!)
        for p in 1...Self.periods {
          out.append(.with {
            $0.classroomCode = "R\(s)"; $0.teacherExternalID = "S\(s)-T\(p % teachersPerSchool)"
            $0.subject = Smartschool_Common_V1_Subject(rawValue: (p + d) % 9 + 1)!
            $0.date = date; $0.period = Int32(p); $0.durationMinutes = 40; $0.source = .platform
          })
        }
      }
    }
    return out
  }
}

// MARK: Processes

final class Spawned: @unchecked Sendable {
  let name: String
  let process = Process()
  let logPath: String
  private(set) var port = 0

  init(name: String, arguments: [String], environment: [String: String] = [:]) throws {
    self.name = name
    process.executableURL = URL(fileURLWithPath: binDirectory + "/" + name.split(separator: "#")[0])
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    logPath = scratch + "/\(name.replacingOccurrences(of: "#", with: "-")).log"
    _ = FileManager.default.createFile(atPath: logPath, contents: nil)
    let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
    process.standardError = log
    process.standardOutput = log
    try process.run()
  }

  func waitListening() async throws {
    for _ in 0..<12_000 {
      let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
      for l in text.split(separator: "\n") where l.contains("\"listening\"") {
        if let json = try? JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any],
          let p = Int("\(json["grpc_port"] ?? "")")
        {
          port = p
          return
        }
      }
      guard process.isRunning else { throw BenchError("\(name) exited:\n\(text.suffix(2000))") }
      try await Task.sleep(for: .milliseconds(10))
    }
    throw BenchError("\(name) did not listen within 120 s")
  }

  /// Peak resident set size in MiB (VmHWM).
  var peakRSS: Double {
    let status =
      (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8))
      ?? ""
    guard let l = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else {
      return 0
    }
    return (Double(l.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
  }

  func stop() {
    if process.isRunning { process.terminate() }
    _ = reap(process)
  }
}

/// Waits for `p` to end and returns its exit status. Not `waitUntilExit` or `isRunning`: on
/// Linux they wait on the main run loop, which the async main never runs.
func reap(_ p: Process) -> Int32 {
  var status: Int32 = 0
  while true {
    let r = waitpid(p.processIdentifier, &status, 0)
    if r == p.processIdentifier { return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f) }
    if r == -1 && errno == EINTR { continue }
    // Reaped by Foundation's own monitor (ECHILD): its status arrives shortly.
    for _ in 0..<2000 where p.isRunning { usleep(5_000) }
    return p.isRunning ? 0 : p.terminationStatus
  }
}

@discardableResult
func run(_ executable: String, _ arguments: [String]) throws -> String {
  let p = Process()
  p.executableURL = URL(fileURLWithPath: executable)
  p.arguments = arguments
  let out = Pipe()
  p.standardOutput = out
  let err = Pipe()
  p.standardError = err
  try p.run()
  let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
  let problem = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
  let status = reap(p)
  guard status == 0 else {
    throw BenchError("\(executable) \(arguments.last ?? "") failed (\(status)): \(problem)")
  }
  return text.trimmingCharacters(in: .whitespacesAndNewlines)
}

let psqlPath = "/usr/lib/postgresql/15/bin/psql"
func psql(_ url: String, _ sql: String) throws -> String {
  try run(psqlPath, ["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
}

func database(_ server: String, _ name: String) -> String {
  var parts = URLComponents(string: server)!
  parts.path = "/" + name
  return parts.string!
}

/// nginx with one h2c listener per service and its replicas as the upstream.
final class Balancer {
  let process = Process()
  var ports: [String: Int] = [:]

  /// `keeping`: listening ports to reuse (a restarted balancer keeps the addresses it gave).
  init(upstreams: [String: [Int]], keeping: [String: Int] = [:]) throws {
    var blocks = ""
    for (name, replicaPorts) in upstreams.sorted(by: { $0.key < $1.key }) {
      let port = try keeping[name] ?? Int(run("/usr/bin/python3", [
        "-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])",
      ]))!
      ports[name] = port
      let servers = replicaPorts.map { "    server 127.0.0.1:\($0);" }.joined(separator: "\n")
      blocks += """

          upstream \(name) {
        \(servers)
            keepalive 32;
          }
          server {
            listen 127.0.0.1:\(port) http2;
            location / {
              grpc_pass grpc://\(name);
              grpc_read_timeout 3600s;
              grpc_send_timeout 3600s;
            }
          }
        """
    }
    let config = """
      worker_processes 2;
      error_log \(scratch)/nginx-error.log warn;
      pid \(scratch)/nginx.pid;
      events { worker_connections 4096; }
      http {
        access_log off;
        client_body_temp_path \(scratch)/nginx-body;
        client_max_body_size 0;
        http2_max_concurrent_streams 1024;
        # nginx closes a client connection (GOAWAY) after 1,000 requests by default; grpc-swift
        # fails the calls it had just routed to that closing connection with UNAVAILABLE.
        keepalive_requests 100000000;
      \(blocks)
      }
      """
    try config.write(toFile: scratch + "/nginx.conf", atomically: true, encoding: .utf8)
    process.executableURL = URL(fileURLWithPath: "/usr/sbin/nginx")
    process.arguments = ["-p", scratch, "-c", scratch + "/nginx.conf", "-g", "daemon off;"]
    try process.run()
    Thread.sleep(forTimeInterval: 0.5)
    guard process.isRunning else { throw BenchError("nginx did not start") }
  }

  func stop() {
    process.interrupt()
    _ = reap(process)
  }
}

// MARK: Calls

@Sendable func client(_ port: Int) throws -> GRPCClient<HTTP2ClientTransport.Posix> {
  GRPCClient(
    transport: try .http2NIOPosix(
      target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext))
}

/// Median wall time of `rounds` calls, in ms.
func median(_ rounds: Int = 3, _ body: () async throws -> Void) async throws -> Double {
  var times: [Double] = []
  for _ in 0..<rounds {
    let t = ContinuousClock.now
    try await body()
    let d = ContinuousClock.now - t
    times.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
  }
  return times.sorted()[times.count / 2]
}

func seconds(since start: ContinuousClock.Instant) -> Double {
  let d = ContinuousClock.now - start
  return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

/// Runs `parts` bulk streams at once, each over its share of the schools, sending messages of
/// `rows` built by `make`; returns rows accepted.
func parallelImport(
  parts: Int, _ send: @escaping @Sendable (Int) async throws -> Int64
) async throws -> Int64 {
  try await withThrowingTaskGroup(of: Int64.self) { group in
    for part in 0..<parts { group.addTask { try await send(part) } }
    var total: Int64 = 0
    for try await n in group { total += n }
    return total
  }
}

// MARK: One run

struct Figures {
  var replicas = 0
  var users = 0.0, directory = 0.0, scores = 0.0, lessons = 0.0
  var stats: [(String, Double)] = []
  var complianceProvince = 0.0, complianceCounty = 0.0
  var databaseMB: [(String, Double)] = []
  var peakRSS: [(String, Double)] = []
}

func runProvince(replicas: Int, server: String, province: Province) async throws -> Figures {
  var figures = Figures()
  figures.replicas = replicas
  let names = ["identity", "assessment", "supervision"]
  var urls: [String: String] = [:]
  for name in names {
    let db = "prov_\(name)_\(replicas)"
    _ = try psql(server, "DROP DATABASE IF EXISTS \(db) WITH (FORCE)")
    _ = try psql(server, "CREATE DATABASE \(db)")
    urls[name] = database(server, db)
  }
  var spawned: [String: [Spawned]] = [:]
  var balancer: Balancer?
  defer {
    for list in spawned.values { for s in list { s.stop() } }
    balancer?.stop()
  }
  func common(_ name: String, _ i: Int) -> [String] {
    ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
     "--data-dir", scratch + "/\(name)-\(replicas)-\(i)", "--database-url", urls[name]!,
     "--database-pool-size", "20"]
  }
  // Identity first: the others need its address and a service account.
  var identities: [Spawned] = []
  for i in 0..<replicas {
    let s = try Spawned(
      name: "identity-service#\(i)",
      // The bench logs in once; at full scale its imports outlast the default 15-minute token.
      arguments: common("identity", i) + ["--scrypt-log-n", "10", "--access-token-ttl", "21600"],
      environment: ["SMARTSCHOOL_ADMIN_PASSWORD": adminPassword])
    try await s.waitListening()
    identities.append(s)
  }
  spawned["identity"] = identities
  // A balancer over identity now; the others' upstreams once they listen (nginx restarted).
  func address(_ name: String) -> Int {
    if let b = balancer, let p = b.ports[name] { return p }
    return spawned[name]![0].port
  }
  if replicas > 1 { balancer = try Balancer(upstreams: ["identity": identities.map(\.port)]) }
  let identityClient = try client(address("identity"))
  let identityRunner = Task { try await identityClient.runConnections() }
  defer {
    identityClient.beginGracefulShutdown()
    identityRunner.cancel()
  }
  let identity = Smartschool_Identity_V1_IdentityService.Client(wrapping: identityClient)
  let token = try await identity.login(.with {
    $0.username = "admin"; $0.password = adminPassword
  }).accessToken
  let auth: Metadata = ["authorization": "Bearer \(token)"]
  let orgs = province.orgs()
  let orgSummary = try await identity.importOrgs(metadata: auth) { w in
    for o in orgs { try await w.write(.with { $0.org = o }) }
  }
  guard orgSummary.accepted == orgs.count else { throw BenchError("orgs: \(orgSummary)") }
  let account = try await identity.createServiceAccount(.with {
    $0.name = "province-sync"; $0.orgCode = "P"; $0.roles = [.dataExchange]
  }, metadata: auth)
  for name in ["assessment", "supervision"] {
    var list: [Spawned] = []
    for i in 0..<replicas {
      let s = try Spawned(
        name: "\(name)-service#\(i)",
        arguments: common(name, i) + [
          "--identity-addr", "127.0.0.1:\(address("identity"))",
          "--client-id", account.clientID, "--client-secret", account.clientSecret,
        ])
      try await s.waitListening()
      list.append(s)
    }
    spawned[name] = list
  }
  if replicas > 1 {
    let kept = balancer?.ports ?? [:]
    balancer?.stop()
    balancer = try Balancer(upstreams: spawned.mapValues { $0.map(\.port) }, keeping: kept)
  }
  let identityPort = address("identity")
  let assessmentPort = address("assessment")
  let supervisionPort = address("supervision")
  phase("\(replicas) replica(s): users")
  var start = ContinuousClock.now
  let users = try await parallelImport(parts: streams) { part in
    let c = try client(identityPort)
    let runner = Task { try await c.runConnections() }
    defer { c.beginGracefulShutdown(); runner.cancel() }
    let identity = Smartschool_Identity_V1_IdentityService.Client(wrapping: c)
    let summary = try await identity.importUsers(metadata: auth) { w in
      var batch: [Smartschool_Identity_V1_User] = []
      for s in province.schools(part: part, of: streams) {
        batch += province.users(school: s)
        if batch.count >= 1000 {
          try await w.write(.with { $0.users = batch })
          batch.removeAll(keepingCapacity: true)
        }
      }
      if !batch.isEmpty { try await w.write(.with { $0.users = batch }) }
    }
    return summary.accepted
  }
  let userSeconds = seconds(since: start)
  guard users == province.students + province.teachers else {
    throw BenchError("users accepted \(users) of \(province.students + province.teachers)")
  }
  figures.users = Double(users) / userSeconds
  phase("\(replicas) replica(s): directories catch up")
  // The directories (assessment's and supervision's copies of the tree and users) catch up.
  start = ContinuousClock.now
  for name in ["assessment", "supervision"] {
    while true {
      let n = Int(try psql(urls[name]!, "SELECT count(*) FROM runtime_directory_users")) ?? 0
      if n >= Int(users) { break }
      try await Task.sleep(for: .milliseconds(500))
      if seconds(since: start) > 3600 { throw BenchError("\(name)'s directory stalled at \(n)") }
    }
  }
  figures.directory = seconds(since: start)
  phase("\(replicas) replica(s): exam scores")
  let assessmentClient = try client(assessmentPort)
  let assessmentRunner = Task { try await assessmentClient.runConnections() }
  defer { assessmentClient.beginGracefulShutdown(); assessmentRunner.cancel() }
  let assessment = Smartschool_Assessment_V1_AssessmentService.Client(wrapping: assessmentClient)
  _ = try await assessment.createExam(.with {
    $0.exam = .with {
      $0.code = "PX"; $0.name = "全省统考数学"; $0.schoolYear = "2025-2026"; $0.term = 1
      $0.subject = .mathematics; $0.stage = .junior; $0.grade = 8; $0.orgCode = "P"
      $0.items = (1...Province.items).map { n in
        .with { $0.number = Int32(n); $0.maxScore = 5; $0.objective = n <= 12; $0.knowledgePoints = ["KP\(n % 7)"] }
      }
    }
  }, metadata: auth)
  start = ContinuousClock.now
  let scores = try await parallelImport(parts: streams) { part in
    let c = try client(assessmentPort)
    let runner = Task { try await c.runConnections() }
    defer { c.beginGracefulShutdown(); runner.cancel() }
    let api = Smartschool_Assessment_V1_AssessmentService.Client(wrapping: c)
    let summary = try await api.importScoreBatches(metadata: auth) { w in
      for s in province.schools(part: part, of: streams) {
        let rows = province.scores(school: s)
        for k in stride(from: 0, to: rows.count, by: 1240) {
          try await w.write(.with { $0.rows = Array(rows[k..<min(rows.count, k + 1240)]) })
        }
      }
    }
    guard summary.rejected == 0 else { throw BenchError("scores rejected: \(summary.errors.prefix(3))") }
    return summary.accepted
  }
  figures.scores = Double(scores) / seconds(since: start)
  for (label, scope) in [("province", ""), ("city", "C0"), ("county", "K0"), ("school", "S0")] {
    let ms = try await median {
      _ = try await assessment.getExamStatistics(.with {
        $0.examCode = "PX"; $0.scopeOrgCode = scope
      }, metadata: auth)
    }
    figures.stats.append((label, ms))
  }
  phase("\(replicas) replica(s): lessons")
  let supervisionClient = try client(supervisionPort)
  let supervisionRunner = Task { try await supervisionClient.runConnections() }
  defer { supervisionClient.beginGracefulShutdown(); supervisionRunner.cancel() }
  let supervision = Smartschool_Supervision_V1_SupervisionService.Client(
    wrapping: supervisionClient)
  _ = try await supervision.createTerm(.with {
    $0.term = .with {
      $0.code = "2025-2026-1"; $0.name = "2025-2026学年第一学期"; $0.startDate = "2025-09-01"
      $0.endDate = "2026-01-16"
    }
  }, metadata: auth)
  try await withThrowingTaskGroup(of: Void.self) { group in
    for part in 0..<8 {
      group.addTask {
        for s in stride(from: part, to: province.schools, by: 8) {
          _ = try await supervision.createClassroom(.with {
            $0.classroom = .with {
              $0.code = "R\(s)"; $0.name = "智慧教室"; $0.schoolCode = province.schoolCode(s)
              $0.equippedDate = "2025-08-25"
            }
          }, metadata: auth)
        }
      }
    }
    try await group.waitForAll()
  }
  start = ContinuousClock.now
  let lessons = try await parallelImport(parts: streams) { part in
    let c = try client(supervisionPort)
    let runner = Task { try await c.runConnections() }
    defer { c.beginGracefulShutdown(); runner.cancel() }
    let api = Smartschool_Supervision_V1_SupervisionService.Client(wrapping: c)
    let summary = try await api.importLessonBatches(metadata: auth) { w in
      for s in province.schools(part: part, of: streams) {
        try await w.write(.with { $0.lessons = province.lessons(school: s) })
      }
    }
    guard summary.rejected == 0 else { throw BenchError("lessons rejected: \(summary.errors.prefix(3))") }
    // Lessons by teachers identity does not know are held out of every report.
    guard summary.held == 0 else { throw BenchError("lessons held: \(summary.held)") }
    return summary.accepted
  }
  figures.lessons = Double(lessons) / seconds(since: start)
  phase("\(replicas) replica(s): compliance")
  var counted: Int64 = 0
  figures.complianceProvince = try await median {
    counted = try await supervision.getComplianceReport(.with {
      $0.orgCode = "P"; $0.termCode = "2025-2026-1"
    }, metadata: auth).scope.lessonCount
  }
  // Every imported lesson lies in the term's teaching weeks: the report counts them all.
  guard counted == lessons else {
    throw BenchError("compliance counted \(counted) of \(lessons) lessons")
  }
  figures.complianceCounty = try await median {
    _ = try await supervision.getComplianceReport(.with {
      $0.orgCode = "K0"; $0.termCode = "2025-2026-1"
    }, metadata: auth)
  }
  for name in names {
    let bytes = Double(try psql(urls[name]!, "SELECT pg_database_size(current_database())")) ?? 0
    figures.databaseMB.append((name, bytes / 1_048_576))
    figures.peakRSS.append((name, spawned[name]!.map(\.peakRSS).max() ?? 0))
  }
  return figures
}

/// PostgreSQL's own COPY of the exam's rows (text, from a file) into an equivalent table.
func copyBaseline(server: String, province: Province) throws -> Double {
  let path = scratch + "/scores.tsv"
  _ = FileManager.default.createFile(atPath: path, contents: nil)
  let file = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
  for s in 0..<province.schools {
    var text = ""
    for n in 0..<province.studentsPerSchool {
      for i in 1...Province.items {
        text += "PX\tS\(s)-ST\(n)\t\(province.classCode(s, n % 2))\tS\(s)\t\(i)\t"
          + "\(province.score(school: s, student: n, item: i))\n"
      }
    }
    file.write(Data(text.utf8))
  }
  try file.close()
  let db = "prov_copy"
  _ = try psql(server, "DROP DATABASE IF EXISTS \(db) WITH (FORCE)")
  _ = try psql(server, "CREATE DATABASE \(db)")
  let url = database(server, db)
  _ = try psql(url, """
    CREATE TABLE scores (exam text, student text, class text, school text, item integer,
      score double precision, PRIMARY KEY (exam, student, item))
    """)
  let start = ContinuousClock.now
  _ = try psql(url, "\\copy scores FROM '\(path)'")
  let rate = Double(province.students * Province.items) / seconds(since: start)
  _ = try psql(server, "DROP DATABASE \(db) WITH (FORCE)")
  try? FileManager.default.removeItem(atPath: path)
  return rate
}

// MARK: Main

let province = Province(scale: scale)
let clusterDirectory = scratch + "/pg"
let server = try run("/bin/bash", ["Tests/postgres-cluster.sh", "start", clusterDirectory])
defer {
  _ = try? run("/bin/bash", ["Tests/postgres-cluster.sh", "stop", clusterDirectory])
  try? FileManager.default.removeItem(atPath: scratch)
}
line(
  "province-bench: \(Province.cities) cities, \(Province.counties) counties, "
    + "\(province.schools) schools, \(province.students) students, \(province.teachers) "
    + "teachers; exam \(province.students) × \(Province.items) items; lessons "
    + "\(province.schools * Province.weeks * 5 * Province.periods); \(streams) streams per import")
let copyRate = try copyBaseline(server: server, province: province)
line(String(format: "baseline: PostgreSQL COPY of the exam's rows: %.0f rows/s", copyRate))
var all: [Figures] = []
for replicas in replicaCounts {
  let f: Figures
  do {
    f = try await runProvince(replicas: replicas, server: server, province: province)
  } catch {
    // What failed, with the end of every log (services, nginx), before the scratch goes.
    line("province-bench: \(replicas) replica(s) failed: \(error)")
    for name in (try? FileManager.default.contentsOfDirectory(atPath: scratch)) ?? []
    where name.hasSuffix(".log") {
      let text = (try? String(contentsOfFile: scratch + "/" + name, encoding: .utf8)) ?? ""
      line("--- \(name) (last lines)")
      line(text.split(separator: "\n").suffix(8).joined(separator: "\n"))
    }
    _ = try? run("/bin/bash", ["Tests/postgres-cluster.sh", "stop", clusterDirectory])
    try? FileManager.default.removeItem(atPath: scratch)
    exit(1)
  }
  all.append(f)
  line("")
  line("\(replicas) replica(s) of each service\(replicas > 1 ? " behind nginx" : ""):")
  line(String(format: "  users imported            %10.0f /s", f.users))
  line(String(format: "  directories caught up in  %10.1f s", f.directory))
  line(String(format: "  exam scores imported      %10.0f rows/s (%.2f of COPY)", f.scores, f.scores / copyRate))
  for (label, ms) in f.stats {
    line("  statistics + items, " + label.padding(toLength: 9, withPad: " ", startingAt: 0)
      + String(format: "%7.0f ms", ms))
  }
  line(String(format: "  lessons imported          %10.0f rows/s", f.lessons))
  line(String(format: "  compliance, province      %10.0f ms", f.complianceProvince))
  line(String(format: "  compliance, county        %10.0f ms", f.complianceCounty))
  for (name, mb) in f.databaseMB {
    line("  database " + name.padding(toLength: 13, withPad: " ", startingAt: 0)
      + String(format: "%10.0f MiB", mb))
  }
  for (name, mb) in f.peakRSS {
    line("  peak RSS " + name.padding(toLength: 13, withPad: " ", startingAt: 0)
      + String(format: "%10.0f MiB (largest replica)", mb))
  }
}
if all.count > 1 {
  let a = all[0], b = all[all.count - 1]
  line("")
  line(String(format: "scaling %d → %d replicas: users ×%.2f, scores ×%.2f, lessons ×%.2f",
              a.replicas, b.replicas, b.users / a.users, b.scores / a.scores,
              b.lessons / a.lessons))
}
