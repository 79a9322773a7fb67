// suite-bench: the four release-built executables on loopback under h2load, against a bare
// grpc-swift echo server built in the same package and driven the same way. Prints one table:
// each service's authenticated unary read in req/s and as a ratio to the echo server, p50/p99
// latency at 1,000 and 3,000 req/s offered and at saturation with 16 and 64 streams, idle and
// peak RSS, the time from start to grpc.health.v1 SERVING, and the streamed import rates of
// scores (assessment) and lessons (supervision) against the sqlite3 CLI's `.import` of the same
// rows.
//
//   swift build -c release --static-swift-stdlib --scratch-path .build-release --product P
//     for P = suite-bench and each <service>-service (the Swift runtime linked in, as
//     deploy/build-release.sh builds what ships; see the README's loop)
//   .build-release/release/suite-bench [--bin .build-release/release] [--requests 20000]
//     [--rounds 3] [--import-rows 200000]
//
// Needs h2load (Debian's nghttp2-client) and sqlite3. Not part of CI.
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SmartSchoolModel

// MARK: The echo server (the transport ceiling)

struct RawCoder: MessageSerializer, MessageDeserializer {
  func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
  func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> [UInt8] {
    bytes.withUnsafeBytes { Array($0) }
  }
}

/// `bench.Echo/Echo`: answers each message with itself; no auth, no interceptors, no codegen.
struct EchoService: RegistrableRPCService {
  func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
    router.registerHandler(
      forMethod: MethodDescriptor(fullyQualifiedService: "bench.Echo", method: "Echo"),
      deserializer: RawCoder(), serializer: RawCoder()
    ) { request, _ in
      StreamingServerResponse { writer in
        for try await message in request.messages { try await writer.write(message) }
        return [:]
      }
    }
  }
}

func runEchoServer() async throws {
  let transport = HTTP2ServerTransport.Posix(
    address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext)
  let server = GRPCServer(transport: transport, services: [EchoService()])
  try await withThrowingDiscardingTaskGroup { group in
    group.addTask { try await server.serve() }
    let port = try await transport.listeningAddress.ipv4!.port
    FileHandle.standardOutput.write(
      Data("{\"msg\":\"listening\",\"grpc_port\":\(port),\"metrics_port\":0}\n".utf8))
  }
}

if CommandLine.arguments.dropFirst().first == "echo" {
  try await runEchoServer()
  exit(0)
}

// MARK: Options

var options: [String: String] = [:]
var argIndex = 1
while argIndex + 1 < CommandLine.arguments.count {
  options[CommandLine.arguments[argIndex]] = CommandLine.arguments[argIndex + 1]
  argIndex += 2
}
let binDirectory = options["--bin"] ?? ".build-release/release"
let requests = Int(options["--requests"] ?? "") ?? 20_000
let rounds = max(1, Int(options["--rounds"] ?? "") ?? 3)
let importRows = Int(options["--import-rows"] ?? "") ?? 200_000
let adminPassword = "Bench-admin-1"
/// The teachers (T0…) the imported lessons name, all at school S.
let lessonTeachers = 40
let scratch = NSTemporaryDirectory() + "suite-bench-" + UUID().uuidString
try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: scratch) }

func line(_ text: String) { FileHandle.standardOutput.write(Data((text + "\n").utf8)) }

// MARK: Processes

final class Spawned: @unchecked Sendable {
  let name: String
  let process = Process()
  let started = Date()
  /// Where the process's standard output and error go.
  let logPath: String
  private(set) var grpcPort = 0
  private(set) var metricsPort = 0

  init(name: String, executable: String, arguments: [String], environment: [String: String] = [:])
    throws
  {
    self.name = name
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    // Services log a JSON line per RPC on stderr. They go to a file, as under systemd or a
    // container runtime: read through a pipe by this process, the lines cost the load's two
    // cores a share that the echo server (which logs nothing) does not pay.
    logPath = scratch + "/\(name).log"
    _ = FileManager.default.createFile(atPath: logPath, contents: nil)
    let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
    process.standardError = log
    process.standardOutput = log
    try process.run()
  }

  /// Waits for the "listening" line (services log it on stderr; the echo server prints it on
  /// stdout) and reads the ports from it.
  func waitListening() async throws {
    for _ in 0..<600 {
      let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
      for line in text.split(separator: "\n") where line.contains("\"listening\"") {
        guard
          let json = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
          let grpc = (json["grpc_port"] as? Int) ?? Int("\(json["grpc_port"] ?? "")")
        else { continue }
        grpcPort = grpc
        metricsPort = (json["metrics_port"] as? Int) ?? Int("\(json["metrics_port"] ?? "")") ?? 0
        return
      }
      guard process.isRunning else { throw BenchError("\(name) exited before listening") }
      try await Task.sleep(for: .milliseconds(10))
    }
    throw BenchError("\(name) did not listen within 6 s")
  }

  /// Resident set size now and at its peak, in MiB (from /proc).
  func rss() -> (now: Double, peak: Double) {
    let status =
      (try? String(
        contentsOfFile: "/proc/\(process.processIdentifier)/status",
        encoding: .utf8)) ?? ""
    func field(_ name: String) -> Double {
      guard let l = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") })
      else { return 0 }
      return Double(l.split(separator: " ").dropFirst().first ?? "0").map { $0 / 1024 } ?? 0
    }
    return (field("VmRSS"), field("VmHWM"))
  }

  /// Proportional set size (shared library pages divided among the processes mapping them)
  /// and anonymous memory now, in MiB (from /proc smaps_rollup).
  func pss() -> (pss: Double, anonymous: Double) {
    let rollup =
      (try? String(
        contentsOfFile: "/proc/\(process.processIdentifier)/smaps_rollup",
        encoding: .utf8)) ?? ""
    func field(_ name: String) -> Double {
      guard let l = rollup.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") })
      else { return 0 }
      return Double(l.split(separator: " ").dropFirst().first ?? "0").map { $0 / 1024 } ?? 0
    }
    return (field("Pss"), field("Anonymous"))
  }

  func stop() {
    process.terminate()
    process.waitUntilExit()
  }
}

struct BenchError: Error, CustomStringConvertible {
  let description: String
  init(_ d: String) { description = d }
}

/// Polls grpc.health.v1 until SERVING; returns seconds since the process started.
func timeToServing(_ s: Spawned) async throws -> Double {
  try await withGRPCClient(
    transport: .http2NIOPosix(
      target: .ipv4(address: "127.0.0.1", port: s.grpcPort), transportSecurity: .plaintext)
  ) { client in
    let health = Grpc_Health_V1_Health.Client(wrapping: client)
    for _ in 0..<2000 {
      if let r = try? await health.check(.init()), r.status == .serving {
        return Date().timeIntervalSince(s.started)
      }
      try await Task.sleep(for: .milliseconds(2))
    }
    throw BenchError("\(s.name) never became SERVING")
  }
}

// MARK: Load (h2load)

struct LoadResult {
  var rps: Double
  var p50: Double
  var p99: Double
  var failed: Int
  /// Calls the service itself counted as grpc-status OK (h2load sees only HTTP 200).
  var grpcOK: Int? = nil
}

/// The service's own count of OK calls of `method` (its Prometheus endpoint, via curl).
func okCount(metricsPort: Int, method: String) -> Int {
  let p = Process()
  p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
  p.arguments = ["-s", "http://127.0.0.1:\(metricsPort)/metrics"]
  let out = Pipe()
  p.standardOutput = out
  guard (try? p.run()) != nil else { return 0 }
  let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
  p.waitUntilExit()
  return text.split(separator: "\n").filter {
    $0.hasPrefix("smartschool_rpc_requests_total{") && $0.contains("method=\"\(method)\"")
      && $0.contains("code=\"ok\"")
  }.compactMap { Double($0.split(separator: " ").last ?? "") }.map { Int($0) }.reduce(0, +)
}

/// h2load against a service, with the service's own OK count checked.
@MainActor
func serviceLoad(
  _ name: String, _ path: String, requests: Int, clients: Int, streams: Int, rate: Int? = nil
) throws -> LoadResult {
  let s = spawned[name]!
  let method = String(path.dropFirst())
  let before = okCount(metricsPort: s.metricsPort, method: method)
  var r = try h2load(
    port: s.grpcPort, path: path, token: token, requests: requests, clients: clients,
    streams: streams, rate: rate)
  // The server counts a call just after its response is sent.
  Thread.sleep(forTimeInterval: 0.3)
  r.grpcOK = okCount(metricsPort: s.metricsPort, method: method) - before
  return r
}

/// Runs h2load against one method and reads req/s and per-request latencies (its log file).
func h2load(
  port: Int, path: String, token: String?, requests: Int, clients: Int, streams: Int,
  rate: Int? = nil
) throws -> LoadResult {
  let body = scratch + "/empty.grpc"
  _ = FileManager.default.createFile(atPath: body, contents: Data([0, 0, 0, 0, 0]))
  let log = scratch + "/h2load-\(UUID().uuidString).log"
  var args = [
    "-n", "\(requests)", "-c", "\(clients)", "-m", "\(streams)", "-d", body,
    "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", log,
  ]
  if let token { args += ["-H", "authorization: Bearer \(token)"] }
  if let rate { args += ["--rps", "\(max(1, rate / clients))"] }
  args.append("http://127.0.0.1:\(port)\(path)")
  let p = Process()
  p.executableURL = URL(fileURLWithPath: "/usr/bin/h2load")
  p.arguments = args
  let out = Pipe()
  p.standardOutput = out
  p.standardError = Pipe()
  try p.run()
  let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
  p.waitUntilExit()
  guard let finished = text.split(separator: "\n").first(where: { $0.hasPrefix("finished in") })
  else { throw BenchError("h2load failed:\n\(text)") }
  // "finished in 1.23s, 16260.16 req/s, 1.2MB/s"
  let rps = Double(finished.split(separator: ",")[1].split(separator: " ")[0]) ?? 0
  var failed = 0
  if let req = text.split(separator: "\n").first(where: { $0.hasPrefix("requests:") }) {
    // "requests: N total, N started, N done, N succeeded, F failed, E errored, T timeout"
    let parts = req.split(separator: ",")
    failed = parts.dropFirst(4).compactMap { Int($0.split(separator: " ").first ?? "") }
      .reduce(0, +)
  }
  // Log lines: start time (µs since epoch), HTTP status, elapsed µs.
  let latencies =
    (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n")
    .compactMap { Double($0.split(separator: "\t").last ?? "") }.sorted() ?? []
  func pct(_ q: Double) -> Double {
    latencies.isEmpty
      ? 0
      : latencies[min(latencies.count - 1, Int(q * Double(latencies.count)))]
        / 1000
  }
  return LoadResult(rps: rps, p50: pct(0.5), p99: pct(0.99), failed: failed)
}

// MARK: Imports

let importClasses = 10
let importItems = 40
let importRooms = 200

/// Runs the sqlite3 CLI's `.import` of `csv` into a table made by `create`; milliseconds.
func sqliteImport(_ csv: String, table: String, create: String) throws -> Double {
  let script = """
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    \(create)
    .import --csv \(csv) \(table)
    SELECT COUNT(*) FROM \(table);
    """
  let sqlite = Process()
  sqlite.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
  sqlite.arguments = [scratch + "/baseline-\(table).sqlite"]
  let input = Pipe()
  sqlite.standardInput = input
  sqlite.standardOutput = Pipe()
  let start = Date()
  try sqlite.run()
  input.fileHandleForWriting.write(Data(script.utf8))
  try input.fileHandleForWriting.close()
  sqlite.waitUntilExit()
  guard sqlite.terminationStatus == 0 else { throw BenchError("sqlite3 .import failed") }
  return Date().timeIntervalSince(start) * 1000
}

/// Retries `body` while the service's directory has not yet learnt the org tree.
func whenSynced<T: Sendable>(_ body: () async throws -> T) async throws -> T {
  let start = Date()
  while true {
    do {
      return try await body()
    } catch let error as RPCError
      where (error.code == .notFound || error.code == .failedPrecondition)
      && Date().timeIntervalSince(start) < 60
    {
      try await Task.sleep(for: .milliseconds(200))
    }
  }
}

/// Streams `importRows` item scores into assessment over one stream; rows/s, and the
/// sqlite3 CLI's rows/s for the same rows.
func scoreImport(port: Int) async throws -> (service: Double, sqlite: Double) {
  let students = max(1, importRows / importItems)
  let rows = students * importItems
  @Sendable func score(_ s: Int, _ i: Int) -> Double { Double((s * 7 + i * 13) % 11) / 2 }
  let auth: Metadata = ["authorization": "Bearer \(token)"]
  let took = try await withGRPCClient(
    transport: .http2NIOPosix(
      target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
  ) { client in
    let api = Smartschool_Assessment_V1_AssessmentService.Client(wrapping: client)
    _ = try await whenSynced {
      try await api.createExam(
        .with {
          $0.exam = .with {
            $0.code = "BENCH-E1"
            $0.name = "期末数学"
            $0.schoolYear = "2025-2026"
            $0.term = 1
            $0.subject = .mathematics
            $0.stage = .junior
            $0.grade = 7
            $0.orgCode = "S"
            $0.items = (1...importItems).map { n in
              .with {
                $0.number = Int32(n)
                $0.maxScore = 5
                $0.objective = n <= 20
                $0.knowledgePoints = ["KP\(n % 8)"]
              }
            }
          }
        }, metadata: auth)
    }
    let start = Date()
    let summary = try await api.importScores(metadata: auth) { writer in
      var chunk: [Smartschool_Assessment_V1_ScoreRow] = []
      for s in 0..<students {
        for i in 1...importItems {
          chunk.append(
            .with {
              $0.examCode = "BENCH-E1"
              $0.studentExternalID = "ST\(s)"
              $0.classCode = "S-C\(s % importClasses + 1)"
              $0.schoolCode = "S"
              $0.itemNumber = Int32(i)
              $0.score = score(s, i)
            })
        }
        if chunk.count >= 1000 {
          try await writer.write(contentsOf: chunk)
          chunk.removeAll(keepingCapacity: true)
        }
      }
      try await writer.write(contentsOf: chunk)
    }
    guard summary.accepted == Int64(rows) else {
      throw BenchError("score import: \(summary.accepted) of \(rows) accepted")
    }
    return Date().timeIntervalSince(start)
  }
  var csv = ""
  for s in 0..<students {
    for i in 1...importItems {
      csv += "BENCH-E1,ST\(s),S-C\(s % importClasses + 1),S,\(i),\(score(s, i))\n"
    }
  }
  try csv.write(toFile: scratch + "/scores.csv", atomically: false, encoding: .utf8)
  let sqliteMs = try sqliteImport(
    scratch + "/scores.csv", table: "scores",
    create: """
      CREATE TABLE scores (exam_code TEXT NOT NULL, student TEXT NOT NULL,
        class_code TEXT NOT NULL, school_code TEXT NOT NULL, item INTEGER NOT NULL,
        score REAL NOT NULL, PRIMARY KEY (exam_code, student, item)) WITHOUT ROWID;
      """)
  return (Double(rows) / took, Double(rows) / (sqliteMs / 1000))
}

/// Streams about `importRows` lessons into supervision over one stream; rows/s, and the
/// sqlite3 CLI's rows/s for the same rows.
func lessonImport(port: Int) async throws -> (service: Double, sqlite: Double) {
  var schoolDays: [String] = []
  var day = CalendarDate("2025-09-01")!
  while schoolDays.count < max(1, importRows / (importRooms * 8)) {
    if day.isoWeekday <= 5 { schoolDays.append(day.description) }
    day = day.adding(days: 1)
  }
  let days = schoolDays
  let rows = importRooms * days.count * 8
  let auth: Metadata = ["authorization": "Bearer \(token)"]
  let took = try await withGRPCClient(
    transport: .http2NIOPosix(
      target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
  ) { client in
    let api = Smartschool_Supervision_V1_SupervisionService.Client(wrapping: client)
    _ = try await api.createTerm(
      .with {
        $0.term = .with {
          $0.code = "BENCH-T"
          $0.name = "学年"
          $0.startDate = days.first!
          $0.endDate = days.last!
        }
      }, metadata: auth)
    for room in 0..<importRooms {
      _ = try await whenSynced {
        try await api.createClassroom(
          .with {
            $0.classroom = .with {
              $0.code = "R\(room)"
              $0.name = "智慧教室\(room)"
              $0.schoolCode = "S"
              $0.equippedDate = "2025-08-25"
            }
          }, metadata: auth)
      }
    }
    // Supervision's directory learns the teachers from identity's change feed.
    let synced = Date()
    while try await api.getTeacherTargets(
      .with {
        $0.orgCode = "S"
        $0.termCode = "BENCH-T"
      }, metadata: auth
    ).teacherCount < Int64(lessonTeachers) {
      guard Date().timeIntervalSince(synced) < 60 else {
        throw BenchError("supervision's directory did not learn the lessons' teachers")
      }
      try await Task.sleep(for: .milliseconds(200))
    }
    let start = Date()
    let summary = try await api.importLessons(metadata: auth) { writer in
      var chunk: [Smartschool_Supervision_V1_Lesson] = []
      for room in 0..<importRooms {
        for date in days {
          for period in 1...8 {
            chunk.append(
              .with {
                $0.classroomCode = "R\(room)"
                $0.teacherExternalID = "T\(room % lessonTeachers)"
                $0.subject = .mathematics
                $0.date = date
                $0.period = Int32(period)
                $0.durationMinutes = 40
                $0.source = .platform
              })
          }
        }
        if chunk.count >= 1000 {
          try await writer.write(contentsOf: chunk)
          chunk.removeAll(keepingCapacity: true)
        }
      }
      try await writer.write(contentsOf: chunk)
    }
    guard summary.accepted == Int64(rows), summary.held == 0 else {
      throw BenchError(
        "lesson import: \(summary.accepted) of \(rows) accepted, \(summary.held) held")
    }
    return Date().timeIntervalSince(start)
  }
  var csv = ""
  for room in 0..<importRooms {
    for date in days {
      for period in 1...8 {
        csv += "R\(room),T\(room % lessonTeachers),mathematics,\(date),\(period),40\n"
      }
    }
  }
  try csv.write(toFile: scratch + "/lessons.csv", atomically: false, encoding: .utf8)
  let sqliteMs = try sqliteImport(
    scratch + "/lessons.csv", table: "lessons",
    create: """
      CREATE TABLE lessons (classroom_code TEXT NOT NULL, teacher TEXT NOT NULL,
        subject TEXT NOT NULL, date TEXT NOT NULL, period INTEGER NOT NULL,
        minutes INTEGER NOT NULL, PRIMARY KEY (classroom_code, date, period)) WITHOUT ROWID;
      """)
  return (Double(rows) / took, Double(rows) / (sqliteMs / 1000))
}

// MARK: Run

let services: [(name: String, path: String)] = [
  ("identity", "/smartschool.identity.v1.IdentityService/WhoAmI"),
  ("catalogue", "/smartschool.catalogue.v1.CatalogueService/ListCurriculum"),
  ("assessment", "/smartschool.assessment.v1.AssessmentService/ListExams"),
  ("supervision", "/smartschool.supervision.v1.SupervisionService/ListTerms"),
]

line("suite-bench: release executables from \(binDirectory), h2load, \(requests) calls per row")
let echo = try Spawned(
  name: "echo", executable: CommandLine.arguments[0], arguments: ["echo"])
try await echo.waitListening()

let identity = try Spawned(
  name: "identity", executable: binDirectory + "/identity-service",
  arguments: [
    "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--data-dir",
    scratch + "/identity",
  ], environment: ["SMARTSCHOOL_ADMIN_PASSWORD": adminPassword])
try await identity.waitListening()
var ready: [String: Double] = ["identity": try await timeToServing(identity)]

// A service account for the others' org-tree sync, and the admin token for the load.
let (token, clientID, clientSecret) = try await withGRPCClient(
  transport: .http2NIOPosix(
    target: .ipv4(address: "127.0.0.1", port: identity.grpcPort), transportSecurity: .plaintext)
) { client in
  let api = Smartschool_Identity_V1_IdentityService.Client(wrapping: client)
  let token = try await api.login(
    .with {
      $0.username = "admin"
      $0.password = adminPassword
    }
  ).accessToken
  let auth: Metadata = ["authorization": "Bearer \(token)"]
  _ = try await api.createOrg(
    .with {
      $0.org = .with {
        $0.code = "P"
        $0.name = "省"
        $0.kind = .province
      }
    },
    metadata: auth)
  // A school with classes, for the import rows.
  let tree: [(String, String, Smartschool_Common_V1_OrgKind, String)] =
    [("C", "市", .city, "P"), ("K", "县", .county, "C"), ("S", "中学", .school, "K")]
    + (1...importClasses).map { ("S-C\($0)", "七年级\($0)班", .class, "S") }
  for (code, name, kind, parent) in tree {
    _ = try await api.createOrg(
      .with {
        $0.org = .with {
          $0.code = code
          $0.name = name
          $0.kind = kind
          $0.parentCode = parent
          if kind == .school {
            $0.schoolKind = .urban
            $0.stages = [.junior]
          }
          if kind == .class {
            $0.grade = 7
            $0.schoolYear = "2025-2026"
          }
        }
      }, metadata: auth)
  }
  // The teachers the lessons name: supervision holds lessons by teachers identity does not
  // know out of every report, so without them the lesson import would measure held rows.
  let teachers = try await api.importUsers(metadata: auth) { writer in
    try await writer.write(
      .with {
        $0.users = (0..<lessonTeachers).map { t in
          .with {
            $0.externalID = "T\(t)"
            $0.username = "teacher\(t)"
            $0.displayName = "教师\(t)"
            $0.kind = .teacher
            $0.orgCode = "S"
          }
        }
      })
  }
  guard teachers.accepted == Int64(lessonTeachers) else {
    throw BenchError("teachers: \(teachers.accepted) of \(lessonTeachers) accepted")
  }
  let account = try await api.createServiceAccount(
    .with {
      $0.name = "bench-sync"
      $0.orgCode = "P"
      $0.roles = [.dataExchange]
    }, metadata: auth)
  return (token, account.clientID, account.clientSecret)
}

var spawned: [String: Spawned] = ["identity": identity]
for (name, _) in services where name != "identity" {
  let s = try Spawned(
    name: name, executable: binDirectory + "/\(name)-service",
    arguments: [
      "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--data-dir",
      scratch + "/" + name, "--identity-addr", "127.0.0.1:\(identity.grpcPort)",
      "--client-id", clientID, "--client-secret", clientSecret,
    ])
  try await s.waitListening()
  ready[name] = try await timeToServing(s)
  spawned[name] = s
}
// WhoAmI with identity's account cache off, reading SQLite on every call: a second identity on
// the same store, reported beside the first.
let uncachedIdentity = try Spawned(
  name: "identity-uncached", executable: binDirectory + "/identity-service",
  arguments: [
    "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--data-dir",
    scratch + "/identity", "--account-cache-entries", "0",
  ])
try await uncachedIdentity.waitListening()
spawned[uncachedIdentity.name] = uncachedIdentity
try await Task.sleep(for: .seconds(2))
var idle: [String: Double] = [:]
var idleShares: [String: (pss: Double, anonymous: Double)] = [:]
for (name, s) in spawned {
  idle[name] = s.rss().now
  idleShares[name] = s.pss()
}

func row(_ label: String, _ r: LoadResult, ceiling: Double?) -> String {
  row(label, r, ratio: ceiling.map { r.rps / $0 })
}

func row(_ label: String, _ r: LoadResult, ratio: Double?) -> String {
  let ratio = ratio.map { String(format: "%5.2f", $0) } ?? "  -  "
  return label.padding(toLength: 34, withPad: " ", startingAt: 0)
    + String(
      format: "%9.0f req/s  ratio %@  p50 %7.2f ms  p99 %7.2f ms  failed %d%@", r.rps, ratio,
      r.p50, r.p99, r.failed, r.grpcOK.map { "  grpc OK \($0)" } ?? "")
}

line("")
line(
  "transport ceiling and authenticated unary reads (ratio = req/s ÷ echo's; target ≥ 0.70)")
line(
  "each row: \(rounds) rounds of an echo run then a service run, \(requests) calls each, the"
    + " same request bytes (token too); medians, ratio range in brackets")
func median(_ xs: [Double]) -> Double {
  let s = xs.sorted()
  return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
/// One row from several runs: median req/s and latencies, failures and OK counts summed.
func combined(_ runs: [LoadResult]) -> LoadResult {
  LoadResult(
    rps: median(runs.map(\.rps)), p50: median(runs.map(\.p50)), p99: median(runs.map(\.p99)),
    failed: runs.map(\.failed).reduce(0, +),
    grpcOK: runs.allSatisfy { $0.grpcOK != nil } ? runs.compactMap(\.grpcOK).reduce(0, +) : nil)
}
for streams in [16, 64] {
  let clients = streams == 16 ? 1 : 4
  // Echo runs right before each service run, so a slow or fast spell of this shared machine
  // moves both sides of a ratio; the row reports the median of the paired ratios.
  var echoRuns: [LoadResult] = []
  var rows: [(name: String, runs: [LoadResult], ratios: [Double])] = []
  for (name, path) in services + [(uncachedIdentity.name, services[0].path)] {
    var runs: [LoadResult] = []
    var ratios: [Double] = []
    for _ in 0..<rounds {
      let e = try h2load(
        port: echo.grpcPort, path: "/bench.Echo/Echo", token: token, requests: requests,
        clients: clients, streams: streams / clients)
      let r = try serviceLoad(
        name, path, requests: requests, clients: clients, streams: streams / clients)
      echoRuns.append(e)
      runs.append(r)
      ratios.append(r.rps / e.rps)
    }
    rows.append((name, runs, ratios))
  }
  line(row("echo, \(streams) streams", combined(echoRuns), ceiling: nil))
  for (name, runs, ratios) in rows {
    line(
      row("\(name), \(streams) streams", combined(runs), ratio: median(ratios))
        + String(format: "  [%.2f–%.2f]", ratios.min()!, ratios.max()!))
  }
}
line("")
line("latency at a fixed offered rate (16 streams)")
for rate in [1000, 3000] {
  let calls = rate * 5
  let e = try h2load(
    port: echo.grpcPort, path: "/bench.Echo/Echo", token: token, requests: calls, clients: 4,
    streams: 4, rate: rate)
  line(row("echo @ \(rate)/s", e, ceiling: nil))
  for (name, path) in services {
    let r = try serviceLoad(name, path, requests: calls, clients: 4, streams: 4, rate: rate)
    line(row("\(name) @ \(rate)/s", r, ceiling: e.rps))
  }
}
// Peaks under the read load, before the imports below raise them.
let loadPeak = spawned.mapValues { $0.rss().peak }
line("")
line("streamed imports, one stream each (ratio = rows/s ÷ sqlite3 CLI .import of the same rows)")
for (label, run) in [
  ("scores → assessment", { try await scoreImport(port: spawned["assessment"]!.grpcPort) }),
  ("lessons → supervision", { try await lessonImport(port: spawned["supervision"]!.grpcPort) }),
] as [(String, () async throws -> (service: Double, sqlite: Double))] {
  let r = try await run()
  line(
    label.padding(toLength: 34, withPad: " ", startingAt: 0)
      + String(
        format: "%9.0f rows/s  sqlite3 .import %9.0f rows/s  ratio %5.2f", r.service, r.sqlite,
        r.service / r.sqlite))
}
line("")
line("memory and start-up (targets: idle < 40 MB (38.1 MiB), ready < 1 s)")
for (name, _) in services {
  let s = spawned[name]!
  line(
    name.padding(toLength: 14, withPad: " ", startingAt: 0)
      + String(
        format:
          "idle RSS %6.1f MiB  peak RSS %6.1f MiB (reads), %6.1f MiB (imports too)"
          + "   start → SERVING %6.3f s", idle[name]!, loadPeak[name]!, s.rss().peak,
        ready[name]!))
  line(
    String(repeating: " ", count: 14)
      + String(
        format: "idle PSS %6.1f MiB  of which anonymous %5.1f MiB (the rest: mapped code, shared)",
        idleShares[name]!.pss, idleShares[name]!.anonymous))
}
for s in spawned.values { s.stop() }
echo.stop()
