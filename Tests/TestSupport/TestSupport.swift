import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import IdentityService
import Logging
import ServiceRuntime
import SmartSchoolModel

/// A temporary directory removed when the test ends.
public struct TemporaryDirectory: Sendable {
  /// Its path.
  public let path: String

  /// Creates a fresh directory under the system temp dir.
  public init() throws {
    path = NSTemporaryDirectory() + "smartschool-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }

  /// Removes it.
  public func remove() {
    try? FileManager.default.removeItem(atPath: path)
  }
}

/// The store tests run on: SQLite under a temporary directory, or, when
/// `SMARTSCHOOL_TEST_DATABASE_URL` names a PostgreSQL server (`postgres://postgres@host:port/
/// postgres`), a database of that server made for the test. Tests/run-all.sh runs the ported
/// suites once each way.
public enum TestStore {
  /// The PostgreSQL server of this run, or nil for SQLite.
  public static let postgresServer: DatabaseSettings? = {
    guard let url = ProcessInfo.processInfo.environment["SMARTSCHOOL_TEST_DATABASE_URL"],
      !url.isEmpty
    else { return nil }
    do {
      var settings = try DatabaseSettings(url: url, poolSize: 4)
      // Every suite runs its tests at once against one server on two cores: a connection can
      // be held for seconds there, and a test waiting past the production limit (10 s) for
      // one failed UNAVAILABLE. The tests of the limit itself set their own.
      settings.leaseTimeout = .seconds(60)
      return settings
    } catch {
      fatalError("SMARTSCHOOL_TEST_DATABASE_URL: \(error)")
    }
  }()

  /// The backend of this run.
  public static var backend: StorageBackend { postgresServer == nil ? .sqlite : .postgresql }

  /// A loopback configuration for `service` whose store is `directory` (SQLite) or the
  /// database named after `directory` (PostgreSQL, created on first use): the same directory
  /// gives the same store, so a test can restart a service on its data.
  public static func config(service: String, directory: TemporaryDirectory) async throws
    -> HostConfig
  {
    var config = HostConfig.ephemeral(service: service, dataDirectory: directory.path)
    config.database = try await database(named: service + "_" + directory.path)
    return config
  }

  /// A store with only the Runtime's own tables (change feed, org directory) named `name`:
  /// SQLite under `directory`, or this run's PostgreSQL database named after both. Opening it
  /// again with the same arguments reopens the same data.
  public static func open(name: String, directory: TemporaryDirectory) async throws
    -> any ServiceStorage
  {
    guard let database = try await database(named: name + "_" + directory.path) else {
      return try Store(directory: directory.path, name: name, migrations: { _ in })
    }
    var quiet = Logger(label: name)
    quiet.logLevel = .critical
    return try await PostgresStore(settings: database, migrations: [], logger: quiet)
  }

  /// A PostgreSQL store on the database for `key` with `migrations` applied and a logger that
  /// logs only critical messages (for a service store made in the test), or nil on SQLite.
  public static func postgres(named key: String, migrations: [PostgresMigration]) async throws
    -> (store: PostgresStore, logger: Logger)?
  {
    guard let database = try await database(named: key) else { return nil }
    var quiet = Logger(label: key)
    quiet.logLevel = .critical
    return (
      try await PostgresStore(settings: database, migrations: migrations, logger: quiet), quiet
    )
  }

  /// The database for `key` on this run's server (created on first use), or nil on SQLite.
  public static func database(named key: String) async throws -> DatabaseSettings? {
    guard let server = postgresServer else { return nil }
    let name = "t_" + sha256Hex(Data(key.utf8)).prefix(20)
    try await PostgresStore.createDatabaseIfMissing(on: server, name: name)
    return server.with(database: name)
  }
}

/// Lower-case hex SHA-256 of `data`, as UploadContent's header names content.
public func sha256Hex(_ data: Data) -> String {
  SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
}

/// The password of the bootstrap admin in test servers.
public let testAdminPassword = "Admin-pass-1"

/// Runs a service host in-process on 127.0.0.1 with ephemeral ports, for the duration of `body`.
public func withHost<T: Sendable>(
  _ definition: ServiceDefinition, config: HostConfig,
  _ body: (_ port: Int, _ host: ServiceHost) async throws -> T
) async throws -> T {
  var logger = Logger(label: definition.name)
  logger.logLevel = .critical
  let host = try ServiceHost(config: config, definition: definition, logger: logger)
  let task = Task { try await host.run(handleSignals: false) }
  do {
    let port = try await host.boundPort()
    let result = try await body(port, host)
    await host.shutdown()
    _ = await task.result
    await closeIfShared(definition.store)
    return result
  } catch {
    await host.shutdown()
    _ = await task.result
    await closeIfShared(definition.store)
    throw error
  }
}

/// Closes a PostgreSQL store's pool once its host has stopped (a test run makes hundreds);
/// SQLite stores stay open, as tests may read them after the host.
private func closeIfShared(_ store: (any ServiceStorage)?) async {
  if let store, store.backend == .postgresql { await store.close() }
}

/// Runs an in-process identity service (fresh store, cheap scrypt) for the duration of `body`.
public func withIdentity<T: Sendable>(
  settings: IdentitySettings = .forTests(), directory: TemporaryDirectory? = nil,
  _ body: (_ port: Int, _ host: ServiceHost) async throws -> T
) async throws -> T {
  let dir = try directory ?? TemporaryDirectory()
  defer { if directory == nil { dir.remove() } }
  let config = try await TestStore.config(service: "identity", directory: dir)
  var logger = Logger(label: "identity")
  logger.logLevel = .critical
  let definition = try await buildIdentityService(
    config: config, settings: settings, logger: logger)
  return try await withHost(definition, config: config, body)
}

extension IdentitySettings {
  /// Settings for tests: cheap scrypt (N = 16; with N = 1024 hashing in the debug build's
  /// unoptimised BoringSSL was a sixth of the whole suite's work, and the tests of hashing under
  /// load set their own), the test admin password, hash slots for tests that log in several
  /// times at once on a small machine, and no per-account or per-address login limits (every
  /// test client logs in from 127.0.0.1; the tests of those limits turn them on), and user
  /// imports in batches of 2,000 rows, so the import tests cross batches with fewer rows.
  public static func forTests() -> IdentitySettings {
    var s = IdentitySettings()
    s.scrypt = ScryptParameters(logN: 4, r: 8, p: 1)
    s.adminPassword = testAdminPassword
    s.maxConcurrentHashes = 16
    s.loginAttemptsPerAccount = 0
    s.loginAttemptsPerAddress = 0
    s.loginHashesPerAddress = 0
    s.userImportBatchRows = 2000
    return s
  }
}

/// Runs `body` with a plaintext client connected to 127.0.0.1:`port`.
public func withClient<T: Sendable>(
  port: Int, _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> T
) async throws -> T {
  try await withGRPCClient(
    transport: .http2NIOPosix(
      target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
  ) { client in
    try await body(client)
  }
}

/// Metadata carrying a bearer token.
public func bearer(_ token: String) -> Metadata {
  ["authorization": "Bearer \(token)"]
}

/// Logs in and returns the access token.
public func login(
  _ identity: Smartschool_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix>,
  _ username: String, _ password: String
) async throws -> String {
  try await identity.login(.with {
    $0.username = username
    $0.password = password
  }).accessToken
}

/// The initial password a test gives a user it creates for `password`: an admin-set password,
/// which the user replaces with `password` at first login (``firstLogin(_:_:_:)``).
public func initialPassword(for password: String) -> String {
  "Initial-" + password
}

/// The first login of a user created with ``initialPassword(for:)``: replaces it with
/// `password` (as Login's new_password) and returns the access token.
public func firstLogin(
  _ identity: Smartschool_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix>,
  _ username: String, _ password: String
) async throws -> String {
  try await identity.login(.with {
    $0.username = username
    $0.password = initialPassword(for: password)
    $0.newPassword = password
  }).accessToken
}

/// The gRPC status code of what `body` throws, or `nil` when it succeeds.
public func statusCode(_ body: () async throws -> Void) async -> RPCError.Code? {
  do {
    try await body()
    return nil
  } catch let error as RPCError {
    return error.code
  } catch {
    return .unknown
  }
}

/// The RPCError `body` throws, or `nil`.
public func rpcError(_ body: () async throws -> Void) async -> RPCError? {
  do {
    try await body()
    return nil
  } catch let error as RPCError {
    return error
  } catch {
    return RPCError(code: .unknown, message: "\(error)")
  }
}

/// Fuzz-test settings from the environment: SMARTSCHOOL_FUZZ_CASES scales a run up (or down)
/// from `defaultCases`, SMARTSCHOOL_FUZZ_SEED replays one.
public enum FuzzSettings {
  /// The number of cases to run.
  public static func cases(default defaultCases: Int) -> Int {
    ProcessInfo.processInfo.environment["SMARTSCHOOL_FUZZ_CASES"].flatMap(Int.init)
      ?? defaultCases
  }

  /// The seed to start from.
  public static var seed: UInt64 {
    ProcessInfo.processInfo.environment["SMARTSCHOOL_FUZZ_SEED"].flatMap(UInt64.init)
      ?? 20_261_123
  }
}
