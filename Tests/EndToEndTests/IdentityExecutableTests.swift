#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif
import Foundation
import GRDB
import GRPCCore
import GRPCNIOTransportHTTP2
import SmartSchoolModel
import TestSupport
import Testing

// End-to-end: the built `identity-service` executable as an operator runs it — a separate
// process on loopback with a temp data dir and port 0, talked to over the network only.

/// Where the built executables live: `<package root>/.build/debug/`.
private enum Built {
  static let packageRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
  static let identity = packageRoot.appendingPathComponent(".build/debug/identity-service").path
  static let identityExists = FileManager.default.isExecutableFile(atPath: identity)
  static let missing: Comment =
    "\(identity) is missing: run 'swift build --product identity-service' first"
}

private let adminPassword = "E2E-admin-pass-7"
private let identityServiceName = "smartschool.identity.v1.IdentityService"

@Suite("identity-service executable", .serialized)
struct IdentityExecutableTests {
  @Test(
    "serves health, login and metrics; SIGTERM exits 0",
    .enabled(if: Built.identityExists, Built.missing))
  func servesAndStopsCleanly() async throws {
    let dir = try E2EDirectory()
    defer { dir.remove() }
    let service = try ServiceProcess.start(dataDir: dir.data, logName: "run.log")
    defer { service.kill() }
    let ports = try await service.listening()

    try await withLoopbackClient(port: ports.grpc) { client in
      let health = Grpc_Health_V1_Health.Client(wrapping: client)
      #expect(try await health.check(.init()).status == .serving)
      let named = try await health.check(.with { $0.service = identityServiceName })
      #expect(named.status == .serving)
      await #expect(throws: RPCError.self) {
        _ = try await health.check(.with { $0.service = "no.such.Service" })
      }

      let identity = Smartschool_Identity_V1_IdentityService.Client(wrapping: client)
      let tokens = try await identity.login(.with {
        $0.username = "admin"
        $0.password = adminPassword
      })
      #expect(!tokens.accessToken.isEmpty)
      #expect(!tokens.refreshToken.isEmpty)
      let me = try await identity.whoAmI(.init(), metadata: bearer(tokens.accessToken))
      #expect(me.user.username == "admin")
    }

    let metrics = try await httpGet(port: ports.metrics, path: "/metrics")
    let loginLine = metrics.split(separator: "\n").first {
      $0.hasPrefix("smartschool_rpc_requests_total{")
        && $0.contains("method=\"\(identityServiceName)/Login\"") && $0.contains("code=\"ok\"")
    }
    #expect(loginLine != nil, "no Login counter in /metrics:\n\(metrics)")
    #expect(loginLine.map { $0.hasSuffix(" 1") } == true)

    let exit = try await service.terminate()
    #expect(exit.reason == .exit && exit.status == 0, "log:\n\(service.log())")
    #expect(service.log().contains("\"msg\":\"draining\""))
  }

  @Test(
    "a restart keeps the store; a store from a newer release is refused",
    .enabled(if: Built.identityExists, Built.missing))
  func restartKeepsDataAndRefusesNewerSchema() async throws {
    let dir = try E2EDirectory()
    defer { dir.remove() }

    // First start: bootstraps admin and creates an org.
    let first = try ServiceProcess.start(dataDir: dir.data, logName: "first.log")
    defer { first.kill() }
    let firstPorts = try await first.listening()
    try await withLoopbackClient(port: firstPorts.grpc) { client in
      let identity = Smartschool_Identity_V1_IdentityService.Client(wrapping: client)
      let token = try await identity.login(.with {
        $0.username = "admin"
        $0.password = adminPassword
      }).accessToken
      _ = try await identity.createOrg(
        .with {
          $0.org.code = "E2E-PROVINCE"
          $0.org.name = "E2E Province"
          $0.org.kind = .province
        }, metadata: bearer(token))
    }
    #expect(first.log().contains("created bootstrap system admin"))
    let firstExit = try await first.terminate()
    #expect(firstExit.reason == .exit && firstExit.status == 0, "log:\n\(first.log())")

    // Second start on the same store, with a different bootstrap password in the
    // environment: the stored admin (and its password) and the org are still there, once.
    let second = try ServiceProcess.start(
      dataDir: dir.data, logName: "second.log", adminPassword: "Other-pass-99")
    defer { second.kill() }
    let secondPorts = try await second.listening()
    try await withLoopbackClient(port: secondPorts.grpc) { client in
      let identity = Smartschool_Identity_V1_IdentityService.Client(wrapping: client)
      let token = try await identity.login(.with {
        $0.username = "admin"
        $0.password = adminPassword
      }).accessToken
      let admins = try await identity.listUsers(
        .with {
          $0.namePrefix = "admin"
          $0.pageSize = 100
        }, metadata: bearer(token))
      #expect(admins.users.filter { $0.username == "admin" }.count == 1)
      let org = try await identity.getOrg(
        .with { $0.code = "E2E-PROVINCE" }, metadata: bearer(token))
      #expect(org.name == "E2E Province")
      let roots = try await identity.listOrgs(.with { $0.pageSize = 100 }, metadata: bearer(token))
      #expect(roots.orgs.filter { $0.code == "E2E-PROVINCE" }.count == 1)
    }
    #expect(!second.log().contains("created bootstrap system admin"))
    let secondExit = try await second.terminate()
    #expect(secondExit.reason == .exit && secondExit.status == 0, "log:\n\(second.log())")

    // A migration this binary does not know means a newer release wrote the store.
    let store = try #require(
      try FileManager.default.contentsOfDirectory(atPath: dir.data)
        .first { $0.hasSuffix(".sqlite") },
      "no .sqlite file in \(dir.data)")
    let queue = try DatabaseQueue(path: (dir.data as NSString).appendingPathComponent(store))
    try await queue.write { db in
      try db.execute(
        sql: "INSERT INTO grdb_migrations (identifier) VALUES (?)",
        arguments: ["9999-from-a-newer-release"])
    }
    try queue.close()

    let third = try ServiceProcess.start(dataDir: dir.data, logName: "third.log")
    defer { third.kill() }
    let thirdExit = try await third.exit(within: .seconds(60))
    #expect(thirdExit.reason == .exit && thirdExit.status != 0, "log:\n\(third.log())")
    #expect(third.log().contains("newer release"), "log:\n\(third.log())")
    #expect(third.log().contains("9999-from-a-newer-release"))
    #expect(!third.log().contains("\"msg\":\"listening\""))
  }
}

// MARK: - Helpers (kept here: the executable is driven only through its process and ports)

private struct E2EError: Error, CustomStringConvertible {
  let description: String
}

/// A temporary directory removed by `remove()`.
private struct E2EDirectory {
  let path: String

  init() throws {
    path = NSTemporaryDirectory() + "smartschool-e2e-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }

  /// The service's `--data-dir` inside it (created by the service).
  var data: String { path + "/data" }

  func remove() {
    try? FileManager.default.removeItem(atPath: path)
  }
}

/// One run of the identity-service executable; its stderr (JSON log lines) goes to a file.
private struct ServiceProcess {
  let process: ChildProcess
  let logPath: String

  /// Starts the executable on 127.0.0.1 with ports 0 and a cheap scrypt cost.
  static func start(
    dataDir: String, logName: String, adminPassword: String = adminPassword
  ) throws -> ServiceProcess {
    // The log sits beside the data dir, both inside the test's temp directory.
    let logPath = (dataDir as NSString).deletingLastPathComponent + "/" + logName
    // Only this test's settings: no SMARTSCHOOL_* leaking in from the caller's environment.
    var environment = ProcessInfo.processInfo.environment.filter {
      !$0.key.hasPrefix("SMARTSCHOOL_")
    }
    environment["SMARTSCHOOL_ADMIN_PASSWORD"] = adminPassword
    let process = try ChildProcess(
      executable: Built.identity,
      arguments: [
        "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--data-dir", dataDir,
        "--scrypt-log-n", "10", "--log-level", "info",
      ],
      environment: environment, standardError: logPath)
    return ServiceProcess(process: process, logPath: logPath)
  }

  /// Everything the process has logged so far.
  func log() -> String {
    (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
  }

  /// Waits (bounded) for the `{"msg":"listening",…}` line and returns the bound ports.
  func listening(within limit: Duration = .seconds(60)) async throws -> (grpc: Int, metrics: Int) {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
      for line in log().split(separator: "\n") {
        guard
          let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)),
          let fields = object as? [String: Any], fields["msg"] as? String == "listening"
        else { continue }
        guard let grpc = Self.port(fields["grpc_port"]),
          let metrics = Self.port(fields["metrics_port"])
        else { throw E2EError(description: "listening line without ports: \(line)") }
        return (grpc, metrics)
      }
      guard process.isRunning else {
        throw E2EError(description: "identity-service exited (\(process.terminationStatus)) "
          + "before listening:\n\(log())")
      }
      try await Task.sleep(for: .milliseconds(50))
    }
    throw E2EError(description: "no 'listening' log line within \(limit):\n\(log())")
  }

  private static func port(_ value: Any?) -> Int? {
    if let text = value as? String { return Int(text) }
    return (value as? NSNumber)?.intValue
  }

  /// Sends SIGTERM and waits up to 20 s for the exit.
  func terminate() async throws -> (reason: Process.TerminationReason, status: Int32) {
    process.send(SIGTERM)
    return try await exit(within: .seconds(20))
  }

  /// Waits (bounded) for the process to exit by itself; SIGKILLs it and throws on timeout.
  func exit(within limit: Duration) async throws -> (
    reason: Process.TerminationReason, status: Int32
  ) {
    let deadline = ContinuousClock.now + limit
    while process.isRunning && ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(50))
    }
    guard !process.isRunning else {
      kill()
      throw E2EError(description: "identity-service still running after \(limit):\n\(log())")
    }
    return (process.exitedNormally ? .exit : .uncaughtSignal, process.terminationStatus)
  }

  /// Last-resort cleanup: SIGKILL if still running (a no-op after a clean exit).
  func kill() {
    process.send(SIGKILL)
    process.waitUntilExit()
  }
}

/// A plaintext gRPC client to 127.0.0.1:`port` for the duration of `body`.
private func withLoopbackClient<T: Sendable>(
  port: Int, _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
) async throws -> T {
  try await withGRPCClient(
    transport: .http2NIOPosix(
      target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
  ) { client in
    try await body(client)
  }
}

private func bearer(_ token: String) -> Metadata {
  ["authorization": "Bearer \(token)"]
}

/// GET http://127.0.0.1:`port``path` with a 10 s timeout; the body as text.
private func httpGet(port: Int, path: String) async throws -> String {
  let url = try #require(URL(string: "http://127.0.0.1:\(port)\(path)"))
  var request = URLRequest(url: url)
  request.timeoutInterval = 10
  let data: Data = try await withCheckedThrowingContinuation { continuation in
    let task = URLSession.shared.dataTask(with: request) { data, response, error in
      if let error {
        continuation.resume(throwing: error)
      } else if let http = response as? HTTPURLResponse, http.statusCode != 200 {
        continuation.resume(throwing: E2EError(description: "GET \(path): HTTP \(http.statusCode)"))
      } else {
        continuation.resume(returning: data ?? Data())
      }
    }
    task.resume()
  }
  return String(decoding: data, as: UTF8.self)
}
