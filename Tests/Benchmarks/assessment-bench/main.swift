// assessment-bench: one county exam (13,047 students × 20 items = 260,940 item scores) imported
// over one stream into the real assessment-service executable, spawned as its own process and
// following an in-process identity. Prints scores/s against the sqlite3 CLI's `.import` of the
// same rows from CSV (same run), the service's peak RSS, and statistics and report latency.
//
//   swift build -c release --product assessment-service
//   swift build -c release --product assessment-bench
//   .build/release/assessment-bench [students] [scratch directory]
//
// The service binary is looked up next to this program (or in $ASSESSMENT_SERVICE_BIN).
import Dispatch
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import IdentityService
import ServiceRuntime
import SmartSchoolModel
import TestSupport

#if canImport(Glibc)
  import Glibc
#endif

typealias Client = Smartschool_Assessment_V1_AssessmentService.Client<HTTP2ClientTransport.Posix>
typealias IdentityClient = Smartschool_Identity_V1_IdentityService.Client<
  HTTP2ClientTransport.Posix
>

/// The run's parameters (static: nonisolated, shared by every task).
enum Bench {
  static let arguments = CommandLine.arguments
  static let studentCount = arguments.count > 1 ? Int(arguments[1]) ?? 13_047 : 13_047
  static let scratch =
    (arguments.count > 2 ? arguments[2] : NSTemporaryDirectory())
    + "/assessment-bench-" + UUID().uuidString
  static let itemCount = 20
  static let schoolCount = 30
  static let classSize = 45
  /// Items 1–12 are objective (3 points), 13–20 subjective (8 points): full marks 100.
  static let itemMax: [Double] = (1...itemCount).map { $0 <= 12 ? 3 : 8 }
  static let students: [Student] = (0..<studentCount).map { i in
    let school = i % schoolCount
    let within = i / schoolCount
    return Student(
      externalID: String(format: "S%06d", i), classCode: "K1-S\(school)-C\(within / classSize)",
      schoolCode: "K1-S\(school)")
  }
  static let serviceBinary =
    ProcessInfo.processInfo.environment["ASSESSMENT_SERVICE_BIN"]
    ?? URL(fileURLWithPath: arguments[0]).deletingLastPathComponent()
    .appendingPathComponent("assessment-service").path
}

struct Student: Sendable {
  var externalID: String
  var classCode: String
  var schoolCode: String
}

func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
func ms(since t0: UInt64) -> Double { Double(now() - t0) / 1e6 }

func line(_ text: String) {
  FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

func percentile(_ samples: [Double], _ p: Double) -> Double {
  let sorted = samples.sorted()
  guard !sorted.isEmpty else { return 0 }
  return sorted[min(sorted.count - 1, max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1))]
}

/// A loopback port free right now.
func freePort() -> Int {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  defer { close(fd) }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  address.sin_port = 0
  var length = socklen_t(MemoryLayout<sockaddr_in>.size)
  withUnsafeMutablePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      _ = bind(fd, $0, length)
      _ = getsockname(fd, $0, &length)
    }
  }
  return Int(UInt16(bigEndian: address.sin_port))
}

/// A field of /proc/PID/status in kB (VmHWM, VmRSS).
func statusKB(_ pid: Int32, _ field: String) -> Int {
  guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else {
    return 0
  }
  for l in text.split(separator: "\n") where l.hasPrefix(field + ":") {
    return Int(l.split(separator: " ").dropFirst().first { !$0.isEmpty }.map(String.init) ?? "")
      ?? 0
  }
  return 0
}

/// A deterministic score: the student's ability against the item's difficulty.
func score(student i: Int, item j: Int) -> Double {
  let ability = Double((i * 7919) % 1000) / 1000
  let difficulty = Double((j * 37) % 10) / 12
  let noise = Double((i * 31 + j * 17) % 100) / 400
  let fraction = min(1, max(0, ability * 0.9 + 0.35 - difficulty * 0.5 + noise - 0.1))
  return (fraction * Bench.itemMax[j]).rounded()
}

// MARK: the run

func run() async throws {
  let scratch = Bench.scratch
  let studentCount = Bench.studentCount
  let itemCount = Bench.itemCount
  let schoolCount = Bench.schoolCount
  let students = Bench.students
  let itemMax = Bench.itemMax
  let serviceBinary = Bench.serviceBinary
  guard FileManager.default.isExecutableFile(atPath: serviceBinary) else {
    line("assessment-service not found at \(serviceBinary); build it in the same configuration")
    exit(1)
  }
  try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
  defer { try? FileManager.default.removeItem(atPath: scratch) }

  try await withIdentity { identityPort, _ in
    try await withClient(port: identityPort) { grpc in
      let identity = IdentityClient(wrapping: grpc)
      let admin = bearer(try await login(identity, "admin", testAdminPassword))
      func org(_ code: String, _ kind: Smartschool_Common_V1_OrgKind, _ parent: String)
        async throws
      {
        _ = try await identity.createOrg(
          .with {
            $0.org = .with {
              $0.code = code
              $0.name = code
              $0.kind = kind
              $0.parentCode = parent
              if kind == .school {
                $0.schoolKind = .urban
                $0.stages = [.junior]
              }
              if kind == .class {
                $0.grade = 9
                $0.schoolYear = "2025-2026"
              }
            }
          }, metadata: admin)
      }
      try await org("P", .province, "")
      try await org("C", .city, "P")
      try await org("K1", .county, "C")
      var classes = Set<String>()
      for s in 0..<schoolCount { try await org("K1-S\(s)", .school, "K1") }
      for st in students where classes.insert(st.classCode).inserted {
        try await org(st.classCode, .class, st.schoolCode)
      }
      let account = try await identity.createServiceAccount(
        .with {
          $0.name = "assessment-sync"
          $0.orgCode = "P"
          $0.roles = [.dataExchange]
        }, metadata: admin)

      let port = freePort()
      let process = Process()
      process.executableURL = URL(fileURLWithPath: serviceBinary)
      process.arguments = [
        "--port", "\(port)", "--metrics-port", "0", "--data-dir", scratch + "/service",
        "--identity-addr", "127.0.0.1:\(identityPort)", "--client-id", account.clientID,
        "--client-secret", account.clientSecret, "--log-level", "error",
      ]
      process.standardOutput = FileHandle.nullDevice
      process.standardError = FileHandle.nullDevice
      try process.run()
      let pid = process.processIdentifier
      defer { process.terminate() }

      try await withClient(port: port) { grpc in
        let client = Client(wrapping: grpc)
        line(
          "assessment-bench: \(studentCount) students × \(itemCount) items = "
            + "\(studentCount * itemCount) item scores, \(schoolCount) schools, "
            + "\(classes.count) classes, \(ProcessInfo.processInfo.activeProcessorCount) cores, "
            + "service pid \(pid)")
        // The service learns the tree from identity's feed: retry until it knows the county.
        let exam = Smartschool_Assessment_V1_Exam.with {
          $0.code = "K1-2026-MATH"
          $0.name = "九年级数学统考"
          $0.schoolYear = "2025-2026"
          $0.term = 2
          $0.subject = .mathematics
          $0.stage = .junior
          $0.grade = 9
          $0.orgCode = "K1"
          $0.items = (1...itemCount).map { n in
            .with {
              $0.number = Int32(n)
              $0.maxScore = itemMax[n - 1]
              $0.objective = n <= 12
              $0.knowledgePoints = ["KP-\(n % 6)", "KP-\(n % 4 + 10)"]
            }
          }
        }
        let waitStart = now()
        while true {
          do {
            _ = try await client.createExam(.with { $0.exam = exam }, metadata: admin)
            break
          } catch let error as RPCError where ms(since: waitStart) < 60_000 {
            if error.code != .notFound && error.code != .unavailable { throw error }
            try await Task.sleep(for: .milliseconds(200))
          }
        }
        let rssBefore = statusKB(pid, "VmRSS")

        // Import over one stream, sampling the service's RSS as it goes.
        let sampling = Task {
          var peak = 0
          while !Task.isCancelled {
            peak = max(peak, statusKB(pid, "VmRSS"))
            try? await Task.sleep(for: .milliseconds(20))
          }
          return peak
        }
        let t0 = now()
        let summary = try await client.importScores(
          metadata: admin,
          requestProducer: { writer in
            var chunk: [Smartschool_Assessment_V1_ScoreRow] = []
            chunk.reserveCapacity(1000)
            for (i, s) in students.enumerated() {
              for j in 0..<itemCount {
                chunk.append(
                  .with {
                    $0.examCode = exam.code
                    $0.studentExternalID = s.externalID
                    $0.classCode = s.classCode
                    $0.schoolCode = s.schoolCode
                    $0.itemNumber = Int32(j + 1)
                    $0.score = score(student: i, item: j)
                  })
              }
              if chunk.count >= 1000 {
                try await writer.write(contentsOf: chunk)
                chunk.removeAll(keepingCapacity: true)
              }
            }
            try await writer.write(contentsOf: chunk)
          })
        let importMs = ms(since: t0)
        sampling.cancel()
        let sampledPeak = await sampling.value
        let hwm = statusKB(pid, "VmHWM")
        guard summary.accepted == Int64(studentCount * itemCount), summary.rejected == 0 else {
          line("import went wrong: \(summary.accepted) accepted, \(summary.rejected) rejected")
          exit(1)
        }
        let rate = Double(studentCount * itemCount) / (importMs / 1000)

        // Baseline: the sqlite3 CLI loading the same rows from CSV into an equivalent table.
        let csv = scratch + "/scores.csv"
        var text = ""
        text.reserveCapacity(studentCount * itemCount * 40)
        for (i, s) in students.enumerated() {
          for j in 0..<itemCount {
            text +=
              "\(exam.code),\(s.externalID),\(s.classCode),\(s.schoolCode),\(j + 1),"
              + "\(score(student: i, item: j))\n"
          }
        }
        try text.write(toFile: csv, atomically: false, encoding: .utf8)
        let script = """
          PRAGMA journal_mode = WAL;
          PRAGMA synchronous = NORMAL;
          CREATE TABLE scores (exam_code TEXT NOT NULL, student TEXT NOT NULL,
            class_code TEXT NOT NULL, school_code TEXT NOT NULL, item INTEGER NOT NULL,
            score REAL NOT NULL CHECK (score >= 0), PRIMARY KEY (exam_code, student, item))
            WITHOUT ROWID;
          .import --csv \(csv) scores
          SELECT COUNT(*) FROM scores;
          """
        let sqlite = Process()
        sqlite.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        sqlite.arguments = [scratch + "/baseline.sqlite"]
        let input = Pipe()
        let output = Pipe()
        sqlite.standardInput = input
        sqlite.standardOutput = output
        let s0 = now()
        try sqlite.run()
        input.fileHandleForWriting.write(Data(script.utf8))
        try input.fileHandleForWriting.close()
        sqlite.waitUntilExit()
        let sqliteMs = ms(since: s0)
        let counted = String(
          decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let sqliteRate = Double(studentCount * itemCount) / (sqliteMs / 1000)

        line(
          String(
            format:
              "import (1 stream, %d rows)   %8.0f ms   %9.0f scores/s   target ≥ 100,000/s",
            studentCount * itemCount, importMs, rate))
        line(
          String(
            format:
              "sqlite3 .import CSV baseline  %8.0f ms   %9.0f rows/s     (rows: %@)",
            sqliteMs, sqliteRate, counted.split(separator: "\n").last.map(String.init) ?? "?"))
        line(
          String(
            format: "import rate / sqlite3 rate    %8.2f                      target ≥ 0.50",
            rate / sqliteRate))
        line(
          String(
            format:
              "service RSS: before %.1f MB, sampled peak %.1f MB, VmHWM %.1f MB   target < 150 MB",
            Double(rssBefore) / 1024, Double(sampledPeak) / 1024, Double(hwm) / 1024))

        // Statistics and item analysis at county scope.
        var statistics: [Double] = []
        var stats = Smartschool_Assessment_V1_ExamStatistics()
        for _ in 0..<10 {
          let t = now()
          stats = try await client.getExamStatistics(
            .with {
              $0.examCode = exam.code
              $0.scopeOrgCode = "K1"
            }, metadata: admin)
          statistics.append(ms(since: t))
        }
        line(
          String(
            format:
              "statistics + item analysis, county (N=%lld)  p50 %7.1f ms  max %7.1f ms  "
              + "target < 200 ms   (mean %.2f, α %.3f, %d schools ranked)",
            stats.scope.count, percentile(statistics, 0.5), statistics.max() ?? 0, stats.scope.mean,
            stats.cronbachAlpha.value, stats.children.count))

        var reports: [Double] = []
        for k in 0..<20 {
          let s = students[(k * 977) % students.count]
          let t = now()
          _ = try await client.getStudentReport(
            .with {
              $0.examCode = exam.code
              $0.studentExternalID = s.externalID
            }, metadata: admin)
          reports.append(ms(since: t))
        }
        line(
          String(
            format: "student report (20 students)  p50 %7.1f ms  p95 %7.1f ms",
            percentile(reports, 0.5), percentile(reports, 0.95)))
        line(
          String(
            format: "service VmHWM at the end: %.1f MB", Double(statusKB(pid, "VmHWM")) / 1024))
      }
    }
  }
}

try await run()
