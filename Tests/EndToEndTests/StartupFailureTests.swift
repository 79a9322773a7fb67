import Foundation
import TestSupport
import Testing

// End-to-end: each built service executable refuses a bad start the same way — one critical
// log line on standard error naming the reason, nothing else, and a non-zero exit status.

private enum Executables {
  static let services = ["identity", "catalogue", "assessment", "supervision"]
  static let binDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent(".build/debug").path
  static func path(_ service: String) -> String { "\(binDirectory)/\(service)-service" }
  static let allBuilt = services.allSatisfy {
    FileManager.default.isExecutableFile(atPath: path($0))
  }
  static let missing: Comment = "the service executables are missing: run 'swift build' first"
}

/// How one run of an executable ended.
private struct Outcome {
  var status: Int32
  var stdout: String
  var stderr: String

  /// The lines on standard error.
  var errorLines: [Substring] { stderr.split(separator: "\n", omittingEmptySubsequences: true) }

  /// The one error line as a JSON object (the services log JSON when stderr is not a terminal).
  func onlyErrorLine() throws -> [String: String] {
    guard errorLines.count == 1,
      let object = try JSONSerialization.jsonObject(with: Data(errorLines[0].utf8))
        as? [String: String]
    else {
      throw StartupTestError(description: "not one JSON line on stderr:\n\(stderr)")
    }
    return object
  }
}

private struct StartupTestError: Error, CustomStringConvertible {
  let description: String
}

/// Runs `<service>-service` with `arguments` on loopback in `directory`; a run that outlives
/// 60 s (a service that started instead of refusing) is killed and reported.
private func run(_ service: String, _ arguments: [String], in directory: String) async throws
  -> Outcome
{
  let out = directory + "/\(service).out"
  let err = directory + "/\(service).err"
  let process = try ChildProcess(
    executable: Executables.path(service),
    arguments: ["--host", "127.0.0.1", "--port", "0", "--metrics-port=-1"] + arguments,
    environment: ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SMARTSCHOOL_") },
    directory: directory, standardOutput: out, standardError: err)
  let deadline = ContinuousClock.now + .seconds(60)
  while process.isRunning && ContinuousClock.now < deadline {
    try await Task.sleep(for: .milliseconds(20))
  }
  if process.isRunning {
    process.send(SIGKILL)
    process.waitUntilExit()
    throw StartupTestError(
      description: "\(service)-service \(arguments) still running after 60 s:\n"
        + ((try? String(contentsOfFile: err, encoding: .utf8)) ?? ""))
  }
  return Outcome(
    status: process.terminationStatus,
    stdout: try String(contentsOfFile: out, encoding: .utf8),
    stderr: try String(contentsOfFile: err, encoding: .utf8))
}

@Suite(
  "service executables: one start-up failure path",
  .enabled(if: Executables.allBuilt, Executables.missing))
final class StartupFailureTests {
  /// Each test's working directory (a fresh suite instance per test and argument).
  let scratch: TemporaryDirectory

  init() throws { scratch = try TemporaryDirectory() }
  deinit { scratch.remove() }

  @Test("a flag that does not parse: exit 64 and one line", arguments: Executables.services)
  func badFlag(service: String) async throws {
    let dir = scratch.path
    let outcome = try await run(service, ["--drain-seconds", "soon"], in: dir)
    #expect(outcome.status == 64, "\(outcome.stderr)")
    let line = try outcome.onlyErrorLine()
    #expect(line["level"] == "critical")
    #expect(line["service"] == service)
    #expect(
      line["msg"]
        == "cannot start: The value 'soon' is invalid for '--drain-seconds <drain-seconds>' "
        + "(see \(service)-service --help)")
    #expect(outcome.stdout.isEmpty)
  }

  @Test(
    "a flag that parses but does not validate: exit 64 and one line",
    arguments: Executables.services)
  func invalidFlag(service: String) async throws {
    let dir = scratch.path
    let outcome = try await run(
      service, ["--data-dir", dir + "/data", "--tls-cert", dir + "/cert.pem"], in: dir)
    #expect(outcome.status == 64, "\(outcome.stderr)")
    #expect(
      try outcome.onlyErrorLine()["msg"]
        == "cannot start: --tls-cert and --tls-key go together (see \(service)-service --help)")
  }

  @Test(
    "a store that cannot be opened: exit 1 and one line naming why",
    arguments: Executables.services)
  func unopenableStore(service: String) async throws {
    let dir = scratch.path

    // The data directory would sit under a regular file.
    let file = dir + "/a-file"
    #expect(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
    let underFile = try await run(service, ["--data-dir", file + "/data"], in: dir)
    #expect(underFile.status == 1, "\(underFile.stderr)")
    #expect(
      try underFile.onlyErrorLine()["msg"] == "cannot start: \(file)/data: Not a directory")

    // The store file is not a database.
    let data = dir + "/data"
    try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
    #expect(
      FileManager.default.createFile(
        atPath: "\(data)/\(service).sqlite",
        contents: Data(String(repeating: "not a database ", count: 100).utf8)))
    let garbage = try await run(service, ["--data-dir", data], in: dir)
    #expect(garbage.status == 1, "\(garbage.stderr)")
    let message = try garbage.onlyErrorLine()["msg"] ?? ""
    #expect(
      message.hasPrefix("cannot start: SQLite error 26: file is not a database"), "\(message)")
  }

  @Test(
    "a database that does not answer: exit 1 within the connect timeout, one line, no SQLite",
    arguments: Executables.services)
  func databaseUnreachable(service: String) async throws {
    let dir = scratch.path
    // Port 1 on loopback: nothing listens, so every connection attempt is refused at once and
    // the pool keeps retrying; the start-up gives up at its 20 s connect timeout, not later.
    let started = ContinuousClock.now
    var arguments = [
      "--data-dir", dir + "/data", "--database-url", "postgres://\(service)@127.0.0.1:1/x",
    ]
    if service != "identity" {
      arguments += ["--identity-addr", "127.0.0.1:1", "--client-id", "c", "--client-secret", "s"]
    }
    let outcome = try await run(service, arguments, in: dir)
    let took = ContinuousClock.now - started
    #expect(outcome.status == 1, "\(outcome.stderr)")
    #expect(
      try outcome.onlyErrorLine()["msg"]
        == "cannot start: cannot reach PostgreSQL at postgres://\(service)@127.0.0.1:1/x"
        + "?sslmode=prefer within 20 s: no connection (is the server up, at that address and "
        + "port?)")
    #expect(took < .seconds(40), "gave up after \(took)")
    #expect(!FileManager.default.fileExists(atPath: dir + "/data/\(service).sqlite"))
  }

  @Test("--help still prints to stdout and exits 0", arguments: Executables.services)
  func help(service: String) async throws {
    let dir = scratch.path
    let outcome = try await run(service, ["--help"], in: dir)
    #expect(outcome.status == 0)
    #expect(outcome.stderr.isEmpty)
    #expect(outcome.stdout.contains("USAGE: \(service)-service"))
    #expect(outcome.stdout.contains("--identity-addr") == (service != "identity"))
  }
}
