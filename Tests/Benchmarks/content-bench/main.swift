// content-bench: streams one large file (500 MB by default) into the catalogue and back out
// through the real gRPC API on loopback (UploadContent, DownloadContent), on the file store
// (SQLite mode) and, with --database-url, on PostgreSQL; prints throughput, the peak resident
// memory of the server (a child process: VmHWM, reset before each phase; the client's beside
// it) and baselines measured in the same run: `cat file > /dev/null`, and on PostgreSQL psql's
// `\lo_import` / `\lo_export` of the same file.
//
//   swift build -c release --product content-bench
//   .build/release/content-bench [--megabytes 500] [--database-url postgres://user@host/db]
//     [--scratch /tmp]
//
// With --database-url, the bench makes a database of its own on that server (its role needs
// CREATEDB) and drops it at the end. Needs `psql` for the PostgreSQL baseline.
import CatalogueService
import Crypto
import Dispatch
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf

typealias Client = Smartschool_Catalogue_V1_CatalogueService.Client<HTTP2ClientTransport.Posix>

struct BenchError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

struct Options {
  var megabytes = 500
  var server: DatabaseSettings?
  var scratch = NSTemporaryDirectory()

  static func parse(_ arguments: [String]) throws -> Options {
    var options = Options()
    var rest = arguments[...]
    while let flag = rest.popFirst() {
      guard let value = rest.popFirst() else { throw BenchError("\(flag) needs a value") }
      switch flag {
      case "--megabytes":
        guard let n = Int(value), n > 0 else { throw BenchError("\(flag): a positive integer") }
        options.megabytes = n
      case "--database-url":
        do {
          options.server = try DatabaseSettings(url: value, poolSize: 8)
        } catch let error as DatabaseSettings.Invalid {
          throw BenchError("--database-url: \(error.message)")
        }
      case "--scratch": options.scratch = value
      default: throw BenchError("unknown flag \(flag)")
      }
    }
    return options
  }
}

// MARK: Measuring

func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// A field of /proc/<pid>/status in MB (VmHWM: peak resident set; VmRSS: current).
func status(_ field: String, of pid: Int32? = nil) -> Double {
  let file = "/proc/" + (pid.map(String.init) ?? "self") + "/status"
  guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
    return 0
  }
  for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
    let kilobytes = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
    return kilobytes / 1024
  }
  return 0
}

/// Resets VmHWM to the current resident set (Linux: writing 5 to clear_refs).
func resetPeak(of pid: Int32? = nil) {
  let file = "/proc/" + (pid.map(String.init) ?? "self") + "/clear_refs"
  try? "5".write(toFile: file, atomically: false, encoding: .utf8)
}

extension Data {
  /// Lower-case hex.
  var hexString: String { map { String(format: "%02x", $0) }.joined() }

  /// The bytes of lower-case or upper-case hex text.
  init?(hexString text: String) {
    var bytes: [UInt8] = []
    var high: UInt8? = nil
    for c in text.utf8 {
      guard let v = c.hexDigitValue else { return nil }
      if let h = high {
        bytes.append(h << 4 | v)
        high = nil
      } else {
        high = v
      }
    }
    guard high == nil else { return nil }
    self.init(bytes)
  }
}

extension UInt8 {
  var hexDigitValue: UInt8? {
    switch self {
    case 0x30...0x39: self - 0x30
    case 0x61...0x66: self - 0x61 + 10
    case 0x41...0x46: self - 0x41 + 10
    default: nil
    }
  }
}

func figure(_ name: String, _ value: Double, _ unit: String, _ note: String = "") {
  print(
    name.padding(toLength: 40, withPad: " ", startingAt: 0)
      + String(format: "%9.1f %@   %@", value, unit, note))
}

/// Runs `tool` (on PATH) to completion; its wall-clock seconds and standard output. A
/// non-zero exit fails.
func run(_ tool: String, _ arguments: [String], environment: [String: String] = [:]) throws
  -> (seconds: Double, output: String)
{
  let process = Process()
  process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
  process.arguments = [tool] + arguments
  process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
  let output = Pipe()
  process.standardOutput = output
  let errors = Pipe()
  process.standardError = errors
  let t0 = now()
  try process.run()
  let printed = output.fileHandleForReading.readDataToEndOfFile()
  let complaint = errors.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  let seconds = Double(now() - t0) / 1e9
  guard process.terminationStatus == 0 else {
    throw BenchError(
      "\(tool) exited \(process.terminationStatus): "
        + String(decoding: complaint, as: UTF8.self))
  }
  return (seconds, String(decoding: printed, as: UTF8.self))
}

/// `psql -c command` on `server`'s database (unaligned, tuples only); its seconds and output.
func psql(_ server: DatabaseSettings, _ command: String) throws
  -> (seconds: Double, output: String)
{
  var environment = ["PGSSLMODE": server.tls.rawValue]
  environment["PGPASSWORD"] = server.password
  return try run(
    "psql",
    [
      "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", server.host, "-p",
      String(server.port), "-U", server.username, "-d", server.database, "-c", command,
    ], environment: environment)
}

// MARK: The file

/// Writes `megabytes` MB of incompressible bytes (a xorshift stream) to `path`; their SHA-256.
func makeFile(_ path: String, megabytes: Int) throws -> String {
  guard FileManager.default.createFile(atPath: path, contents: nil),
    let handle = FileHandle(forWritingAtPath: path) else {
    throw BenchError("cannot write \(path)")
  }
  defer { try? handle.close() }
  var hasher = SHA256()
  var state: UInt64 = 0x9E37_79B9_7F4A_7C15
  var block = [UInt64](repeating: 0, count: (1 << 20) / 8)
  for _ in 0..<megabytes {
    for i in block.indices {
      state ^= state << 13
      state ^= state >> 7
      state ^= state << 17
      block[i] = state
    }
    let data = block.withUnsafeBytes { Data($0) }
    hasher.update(data: data)
    try handle.write(contentsOf: data)
  }
  return hasher.finalize().map { String(format: "%02x", $0) }.joined()
}

// MARK: A fake identity: one province and one school, locally signed tokens

struct FixedFeed: IdentityChangeSource {
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

func org(_ code: String, _ kind: Smartschool_Common_V1_OrgKind, parent: String?, sequence: Int64)
  -> Smartschool_Common_V1_Change
{
  let path = (parent.map { "/id\($0)/" } ?? "/") + "id" + code + "/"
  let org = Smartschool_Identity_V1_Org.with {
    $0.id = "id" + code
    $0.code = code
    $0.name = code
    $0.kind = kind
    $0.parentID = parent.map { "id" + $0 } ?? ""
    $0.parentCode = parent ?? ""
    $0.path = path
    $0.schoolKind = kind == .school ? .urban : .unspecified
    $0.active = true
  }
  return .with {
    $0.sequence = sequence
    $0.entity = "org"
    $0.id = "id" + code
    $0.naturalKey = code
    $0.op = .upsert
    $0.orgPath = path
    $0.payload = try! Google_Protobuf_Any(message: org)
  }
}

let signingKey = Curve25519.Signing.PrivateKey()
let signer = TokenSigner(keyID: "bench", key: signingKey)
func teacherToken() -> Metadata {
  let t = Int64(Date().timeIntervalSince1970)
  let claims = AccessTokenClaims(
    iss: smartSchoolTokenIssuer, sub: "teacher", usr: "teacher", knd: "teacher", sid: "s",
    iat: t, exp: t + 7200, rol: [.init(r: "teacher", o: "idS", p: "/idP/idS/")])
  return ["authorization": "Bearer \(try! signer.sign(claims))"]
}

// MARK: The run

/// The catalogue server of one measurement, a child process (`content-bench --serve …`) so
/// that its memory is measured apart from the client's.
struct Server {
  let process: Process
  let input: Pipe
  let port: Int

  /// Starts `content-bench --serve` on `dataDirectory` (and `database`) and reads its port.
  static func start(dataDirectory: String, database: DatabaseSettings?, maxUpload: Int64)
    throws -> Server
  {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
    var arguments = [
      "--serve", "--public-key", signingKey.publicKey.rawRepresentation.hexString,
      "--data-dir", dataDirectory, "--max-upload", String(maxUpload),
    ]
    if let database {
      arguments += [
        "--database-url",
        "postgres://\(database.username)@\(database.host):\(database.port)/\(database.database)"
          + "?sslmode=\(database.tls.rawValue)",
      ]
      process.environment = ProcessInfo.processInfo.environment.merging(
        ["CONTENT_BENCH_DATABASE_PASSWORD": database.password ?? ""]) { $1 }
    }
    process.arguments = arguments
    let input = Pipe()
    let output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    try process.run()
    var line = Data()
    while true {
      let byte = output.fileHandleForReading.readData(ofLength: 1)
      guard let first = byte.first else { throw BenchError("the server exited at start") }
      if first == 0x0A { break }
      line.append(byte)
    }
    guard let port = Int(String(decoding: line, as: UTF8.self).dropFirst(5)) else {
      throw BenchError("the server printed \(String(decoding: line, as: UTF8.self))")
    }
    return Server(process: process, input: input, port: port)
  }

  /// Closes the server's standard input (it exits) and waits.
  func stop() {
    try? input.fileHandleForWriting.close()
    process.waitUntilExit()
  }
}

/// `content-bench --serve --public-key HEX --data-dir DIR --max-upload N [--database-url URL]`:
/// a catalogue accepting tokens of that key for one school, on an ephemeral port printed as
/// `port N`; it stops when its standard input closes.
func serve(_ arguments: [String]) async throws {
  var values: [String: String] = [:]
  var rest = arguments[...]
  while let flag = rest.popFirst() {
    guard let value = rest.popFirst() else { throw BenchError("\(flag) needs a value") }
    values[flag] = value
  }
  guard let key = values["--public-key"].flatMap(Data.init(hexString:)),
    let dataDirectory = values["--data-dir"],
    let maxUpload = values["--max-upload"].flatMap(Int64.init)
  else { throw BenchError("--serve needs --public-key, --data-dir and --max-upload") }
  let publicKey = try Curve25519.Signing.PublicKey(rawRepresentation: key)
  var config = HostConfig.ephemeral(service: "catalogue", dataDirectory: dataDirectory)
  config.metricsPort = -1
  if let url = values["--database-url"] {
    let password = ProcessInfo.processInfo.environment["CONTENT_BENCH_DATABASE_PASSWORD"]
    config.database = try DatabaseSettings(
      url: url, password: password?.isEmpty == false ? password : nil, poolSize: 8)
  }
  var settings = CatalogueSettings()
  settings.maxUploadBytes = maxUpload
  settings.directoryPollInterval = .seconds(3600)
  var logger = Logger(label: "content-bench")
  logger.logLevel = .critical
  let verifier = TokenVerifier(keySource: {
    [PublishedKey(keyID: "bench", publicKey: publicKey, retireTime: nil)]
  })
  let feed = FixedFeed(changes: [
    org("P", .province, parent: nil, sequence: 1), org("S", .school, parent: "P", sequence: 2),
  ])
  let definition = try await buildCatalogueService(
    config: config, settings: settings, verifier: verifier, identity: feed, logger: logger)
  try await (definition.background.first as! OrgDirectory).sync()
  let host = try ServiceHost(config: config, definition: definition, logger: logger)
  let serving = Task { try await host.run(handleSignals: false) }
  let port = try await host.boundPort()
  FileHandle.standardOutput.write(Data("port \(port)\n".utf8))
  _ = FileHandle.standardInput.readDataToEndOfFile()
  serving.cancel()
  _ = await serving.result
  await definition.store?.close()
}

/// Uploads `path` and downloads it back through a catalogue server on `dataDirectory` (and
/// `database`); prints the figures.
func measure(
  _ store: String, dataDirectory: String, database: DatabaseSettings?, path: String,
  sha256: String, size: Int64
) async throws {
  let server = try Server.start(
    dataDirectory: dataDirectory, database: database, maxUpload: size + 1)
  defer { server.stop() }
  let pid = server.process.processIdentifier
  try await withGRPCClient(
    transport: .http2NIOPosix(
      target: .ipv4(address: "127.0.0.1", port: server.port), transportSecurity: .plaintext)
  ) { grpc in
    let client = Client(wrapping: grpc)
    let auth = teacherToken()
    let resource = try await client.createResource(
      .with {
        $0.resource = .with {
          $0.title = "大文件"
          $0.type = .microLesson
          $0.stage = .junior
          $0.subject = .mathematics
        }
      }, metadata: auth)
    let megabytes = Double(size) / 1_048_576
    print("\n== \(store)")
    let before = status("VmRSS", of: pid)
    figure("server RSS before", before, "MB", "(started, one resource created)")
    resetPeak(of: pid)
    resetPeak()
    let t0 = now()
    let stored = try await client.uploadContent(metadata: auth) { writer in
      try await writer.write(
        .with {
          $0.resourceID = resource.id
          $0.header = .with {
            $0.sha256 = sha256
            $0.sizeBytes = size
            $0.mimeType = "video/mp4"
            $0.fileName = "bench.mp4"
          }
        })
      guard let handle = FileHandle(forReadingAtPath: path) else {
        throw BenchError("cannot read \(path)")
      }
      defer { try? handle.close() }
      while let data = try handle.read(upToCount: 256 * 1024), !data.isEmpty {
        try await writer.write(
          .with {
            $0.resourceID = resource.id
            $0.data = data
          })
      }
    }
    let up = Double(now() - t0) / 1e9
    let upPeak = status("VmHWM", of: pid)
    let upClient = status("VmHWM")
    guard stored.content.sha256 == sha256 else { throw BenchError("upload stored another hash") }
    figure("upload throughput", megabytes / up, "MB/s", String(format: "(%.1f s)", up))
    figure(
      "  server peak RSS while uploading", upPeak, "MB",
      String(format: "(client process: %.1f MB)", upClient))

    resetPeak(of: pid)
    resetPeak()
    let t1 = now()
    let (count, digest) = try await client.downloadContent(
      .with { $0.resourceID = resource.id }, metadata: auth
    ) { response in
      var hasher = SHA256()
      var count: Int64 = 0
      for try await message in response.messages {
        hasher.update(data: message.data)
        count += Int64(message.data.count)
      }
      return (count, hasher.finalize().map { String(format: "%02x", $0) }.joined())
    }
    let down = Double(now() - t1) / 1e9
    let downPeak = status("VmHWM", of: pid)
    let downClient = status("VmHWM")
    guard count == size, digest == sha256 else {
      throw BenchError("download returned \(count) bytes with SHA-256 \(digest)")
    }
    figure("download throughput", megabytes / down, "MB/s", String(format: "(%.1f s)", down))
    figure(
      "  server peak RSS while downloading", downPeak, "MB",
      String(format: "(client process: %.1f MB; bytes and hash checked)", downClient))
  }
}

func main() async throws {
  let options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
  let scratch = options.scratch + "/content-bench-" + UUID().uuidString
  try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
  defer { try? FileManager.default.removeItem(atPath: scratch) }
  let path = scratch + "/content.bin"
  let size = Int64(options.megabytes) << 20
  print(
    "content-bench: \(options.megabytes) MB through UploadContent and DownloadContent on "
      + "loopback, \(ProcessInfo.processInfo.activeProcessorCount) cores")
  let sha256 = try makeFile(path, megabytes: options.megabytes)
  let mb = Double(options.megabytes)
  let cat = try run("sh", ["-c", "cat '\(path)' > /dev/null"]).seconds
  figure("baseline: cat file > /dev/null", mb / cat, "MB/s", String(format: "(%.2f s)", cat))
  figure("baseline: client RSS at start", status("VmRSS"), "MB")

  try await measure(
    "file store (SQLite mode, data-dir/blobs)", dataDirectory: scratch + "/sqlite",
    database: nil, path: path, sha256: sha256, size: size)

  guard let server = options.server else { return }
  let name = "content_bench_"
    + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(12)
  try await PostgresStore.createDatabaseIfMissing(on: server, name: name)
  let database = server.with(database: name)
  defer { _ = try? psql(server, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)") }
  print("\ndatabase \(name) on \(server.host):\(server.port) (dropped at the end)")
  let imported = try psql(database, "\\lo_import '\(path)'").seconds
  figure(
    "baseline: psql \\lo_import", mb / imported, "MB/s", String(format: "(%.1f s)", imported))
  let oid = try psql(database, "SELECT oid FROM pg_largeobject_metadata").output
    .trimmingCharacters(in: .whitespacesAndNewlines)
  let exported = try psql(database, "\\lo_export \(oid) '/dev/null'").seconds
  figure(
    "baseline: psql \\lo_export", mb / exported, "MB/s", String(format: "(%.1f s)", exported))
  _ = try psql(database, "SELECT lo_unlink(\(oid))")
  try await measure(
    "PostgreSQL (content_chunks, 1 MiB chunks)", dataDirectory: scratch + "/postgres",
    database: database, path: path, sha256: sha256, size: size)
}

do {
  if CommandLine.arguments.dropFirst().first == "--serve" {
    try await serve(Array(CommandLine.arguments.dropFirst(2)))
  } else {
    try await main()
  }
} catch {
  FileHandle.standardError.write(Data("content-bench: \(error)\n".utf8))
  exit(1)
}
