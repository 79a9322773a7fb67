import Foundation
import Logging
import PostgresNIO
import SmartSchoolModel
import SwiftProtobuf
import Synchronization

/// One ordered, never-edited step of a PostgreSQL schema: statements run in one transaction.
public struct PostgresMigration: Sendable {
  /// Unique, stable name, e.g. "identity.1.schema".
  public var id: String
  /// The statements, in order (one statement each: the extended protocol runs one at a time).
  public var statements: [String]

  /// A migration named `id` running `statements`.
  public init(_ id: String, _ statements: [String]) {
    self.id = id
    self.statements = statements
  }
}

/// A prepared statement whose rows come back as they are, for ``PostgresStore/query(prepared:)``
/// and ``PostgresTransaction/query(prepared:)``.
public protocol PostgresRowStatement: PostgresPreparedStatement where Row == PostgresRow {}

extension PostgresRowStatement {
  /// The row itself.
  public func decodeRow(_ row: PostgresRow) -> PostgresRow { row }
}

/// A service's PostgreSQL store: a pool of connections to the database `--database-url`
/// names, migrated on open, with the change feed and table versions of ``ServiceStorage``.
/// Any number of replicas may share one database.
///
/// **The change feed is commit-ordered.** An identity or serial column is not: a transaction
/// that took sequence 1 may commit after one that took 2, and a follower already past 2 never
/// sees 1. Here a write transaction buffers its feed events and, as its last statement before
/// COMMIT, takes their sequences from one counter row (`runtime_counters`) and inserts them.
/// The counter row's lock is held from that statement to COMMIT, so sequences are handed out
/// in commit order: a follower that has read sequence n has seen every event below n. The
/// cost is that feed-writing transactions commit one at a time (the lock is held for one
/// statement and the commit, not the whole transaction); pgbench on a 2-core machine gives
/// about 530 such commits/s against 2,800 without the shared row. Bulk imports buffer their
/// events and take all their sequences in one statement; from 256 events they then go in
/// packed, 256 a row (``ChangeBlock``), numbered as they would have been one a row.
///
/// **Table versions** (``watch(_:)``): a statement trigger on each watched table appends the
/// table to a transaction-local setting and sends `NOTIFY runtime_tables, '<table>'`. The
/// writing process reads the setting before COMMIT and moves its own versions as soon as the
/// commit returns (so a caller never reads its own write from an old cache entry); every
/// replica LISTENs and moves its versions when the notification arrives, within
/// milliseconds of the commit. A lost listening connection moves every version (anything may
/// have changed meanwhile) and is reopened.
public final class PostgresStore: ServiceStorage {
  /// The pool.
  public let client: PostgresClient
  /// Where the store is.
  public let settings: DatabaseSettings
  let logger: Logger
  /// How long a call waits for a pooled connection before it fails UNAVAILABLE (see
  /// ``PostgresLease``).
  public let leaseTimeout: Duration
  private let runner: Task<Void, Never>
  private let listener = Mutex<Task<Void, Never>?>(nil)
  private let versions = Mutex<[(tables: Set<String>, version: TableVersion)]>([])

  /// PostgreSQL.
  public var backend: StorageBackend { .postgresql }
  /// The URL without its password.
  public var location: String { settings.redacted }

  /// Connects to `settings`' database (waiting up to `connectTimeout` for the server to
  /// answer) and applies the Runtime's migrations followed by `migrations`, under an advisory
  /// lock so that replicas starting at once migrate once and all start.
  ///
  /// Throws ``StoreOpenError/newerSchema(_:)`` when the database carries migrations this
  /// binary does not know, and ``ServiceError/unavailable(_:)`` when the server cannot be
  /// reached. `leaseTimeout`, when given, replaces `settings.leaseTimeout`.
  public init(
    settings: DatabaseSettings, migrations: [PostgresMigration], logger: Logger,
    connectTimeout: Duration = .seconds(20), leaseTimeout: Duration? = nil
  ) async throws {
    self.settings = settings
    self.leaseTimeout = leaseTimeout ?? settings.leaseTimeout
    self.logger = logger
    var config = PostgresClient.Configuration(
      host: settings.host, port: settings.port, username: settings.username,
      password: settings.password, database: settings.database, tls: .disable)
    switch settings.tls {
    case .disable: config.tls = .disable
    case .prefer:
      var tls = TLSConfiguration.makeClientConfiguration()
      tls.certificateVerification = .none
      config.tls = .prefer(tls)
    case .require:
      var tls = TLSConfiguration.makeClientConfiguration()
      tls.certificateVerification = .none
      config.tls = .require(tls)
    case .verifyFull:
      config.tls = .require(TLSConfiguration.makeClientConfiguration())
    }
    config.options.maximumConnections = max(2, settings.poolSize)
    config.options.minimumConnections = 0
    config.options.connectTimeout = .seconds(5)
    var background = logger
    background.logLevel = .critical
    let client = PostgresClient(configuration: config, backgroundLogger: background)
    self.client = client
    self.runner = Task { await client.run() }
    let deadline = ContinuousClock.now + connectTimeout
    while true {
      // Each attempt is bounded by what is left of the deadline: a lease request to a pool
      // that cannot connect is only failed by its circuit breaker, about a minute later.
      let left = deadline - ContinuousClock.now
      guard let reason = await PostgresStore.probe(client, logger: logger, limit: left) else {
        break
      }
      if ContinuousClock.now >= deadline {
        runner.cancel()
        throw ServiceError.unavailable(
          "cannot reach PostgreSQL at \(settings.redacted) within "
            + "\(connectTimeout.components.seconds) s: \(reason)")
      }
      try await Task.sleep(for: .milliseconds(250))
    }
    do {
      try await migrate(PostgresStore.runtimeMigrations + migrations)
    } catch {
      await close()
      throw error
    }
  }

  /// Runs `SELECT 1` on `client`: nil when it answers, else why not (its error, or no answer
  /// within `limit`; the query is then cancelled and left behind).
  private static func probe(_ client: PostgresClient, logger: Logger, limit: Duration) async
    -> String?
  {
    let once = FirstClaim()
    return await withCheckedContinuation { (answer: CheckedContinuation<String?, Never>) in
      let query = Task {
        do {
          _ = try await client.query("SELECT 1", logger: logger).collect()
          if once.claim() { answer.resume(returning: nil) }
        } catch {
          if once.claim() { answer.resume(returning: describe(error)) }
        }
      }
      Task {
        try? await Task.sleep(for: max(limit, .milliseconds(1)))
        if once.claim() {
          query.cancel()
          answer.resume(returning: "no connection (is the server up, at that address and port?)")
        }
      }
    }
  }

  // MARK: Transactions

  /// Runs `body` in a read-only REPEATABLE READ transaction: every statement sees one
  /// snapshot (PostgreSQL's default, READ COMMITTED, takes a new one per statement).
  public func read<T>(_ body: (PostgresTransaction) async throws -> T) async throws -> T {
    try await run(
      begin: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", retries: 0, readOnly: true, body)
  }

  /// Runs `body` in a READ COMMITTED write transaction, then records its feed events and
  /// commits. A serialisation failure (40001) or deadlock (40P01) reruns `body` from the
  /// start, up to 4 times with a short random pause; then the call fails ABORTED. `body`
  /// must therefore have no effects outside the transaction.
  public func write<T>(_ body: (PostgresTransaction) async throws -> T) async throws -> T {
    try await run(begin: "BEGIN", retries: 4, readOnly: false, body)
  }

  /// One statement in its own transaction; returns every row.
  public func query(_ query: PostgresQuery) async throws -> [PostgresRandomAccessRow] {
    do {
      return try await leased { connection in
        let guarded = GuardedConnection(connection, logger: logger)
        defer { guarded.stop() }
        return try await guarded.rows(query).map { $0.makeRandomAccess() }
      }
    } catch {
      throw PostgresStore.map(error)
    }
  }

  /// One prepared statement in its own transaction; returns every row. The server parses and
  /// plans `statement` once per pooled connection, not on every call: for short statements
  /// that hot calls repeat, where parsing and planning cost more than running them. Give
  /// each statement type an explicit `name`, unique in the service and under 64 bytes: the
  /// default (the type's reflected name) is long, and PostgreSQL cuts names to 63 bytes, so
  /// two statements could end up under one name.
  public func query(prepared statement: some PostgresRowStatement) async throws
    -> [PostgresRandomAccessRow]
  {
    do {
      return try await leased { connection in
        let guarded = GuardedConnection(connection, logger: logger)
        defer { guarded.stop() }
        return try await guarded.rows(prepared: statement).map { $0.makeRandomAccess() }
      }
    } catch {
      throw PostgresStore.map(error)
    }
  }

  /// Runs `body` on a pooled connection, waiting at most ``leaseTimeout`` for one.
  private func leased<T>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
    let lease = try await PostgresLease.take(from: client, within: leaseTimeout)
    defer { lease.release() }
    return try await body(lease.connection)
  }

  /// `readOnly`: the transaction cannot write, so there are no changed tables to ask the
  /// server for (a round trip saved on every read).
  private func run<T>(
    begin: String, retries: Int, readOnly: Bool, _ body: (PostgresTransaction) async throws -> T
  ) async throws -> T {
    var attempt = 0
    while true {
      try Task.checkCancellation()
      do {
        let (value, changed) = try await leased { connection in
          let tx = PostgresTransaction(connection: connection, logger: logger)
          defer { tx.guarded.stop() }
          do {
            try await tx.execute(PostgresQuery(unsafeSQL: begin))
            let value = try await body(tx)
            // Read with the feed's insert when there is one.
            var changed = try await tx.flushChanges()
            if changed == nil { changed = readOnly ? [] : try await tx.changedTables() }
            try await tx.execute("COMMIT")
            return (value, changed ?? [])
          } catch {
            await rollback(connection, after: error)
            throw error
          }
        }
        if !changed.isEmpty { advance(changed) }
        return value
      } catch let error as PSQLError {
        let state = error.serverInfo?[.sqlState]
        if (state == "40001" || state == "40P01") && attempt < retries {
          attempt += 1
          try await Task.sleep(for: .milliseconds(Int.random(in: 2...(10 * attempt))))
          continue
        }
        throw PostgresStore.map(error)
      }
    }
  }

  /// Ends a failed transaction. A connection the server dropped is closed instead (a
  /// ROLLBACK sent on it may never be answered, holding the pool's lease forever), and so is
  /// one whose ROLLBACK takes more than two seconds: the pool then opens a fresh one.
  private func rollback(_ connection: PostgresConnection, after error: any Error) async {
    if connection.isClosed || PostgresStore.connectionLost(error) {
      try? await connection.close()
      return
    }
    let logger = self.logger
    await withTaskGroup(of: Void.self) { group in
      group.addTask {
        _ = try? await connection.query("ROLLBACK", logger: logger).collect()
      }
      group.addTask {
        try? await Task.sleep(for: .seconds(2))
        if !Task.isCancelled { try? await connection.close() }
      }
      await group.next()
      group.cancelAll()
    }
  }

  /// Whether `error` means the connection is gone (dropped, or the server is shutting down).
  static func connectionLost(_ error: any Error) -> Bool {
    guard let error = error as? PSQLError else { return false }
    if let state = error.serverInfo?[.sqlState] {
      return state.hasPrefix("57P") || state.hasPrefix("08")
    }
    switch error.code {
    case .connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown:
      return true
    default:
      return false
    }
  }

  // MARK: Errors

  /// Maps a PostgreSQL failure to a status through ``ServiceError/store(sqlState:message:)``;
  /// a lost or refused connection is UNAVAILABLE. Other errors pass through.
  public static func map(_ error: any Error) -> any Error {
    guard let error = error as? PSQLError else { return error }
    if let state = error.serverInfo?[.sqlState] {
      return ServiceError.store(sqlState: state, message: error.serverInfo?[.message] ?? "")
    }
    switch error.code {
    case .connectionError, .serverClosedConnection, .clientClosedConnection, .poolClosed,
      .uncleanShutdown, .sslUnsupported, .failedToAddSSLHandler:
      return ServiceError.unavailable("the database connection was lost; retry shortly")
    case .queryCancelled:
      return ServiceError.unavailable("the database statement was cancelled")
    default:
      return ServiceError.internalError("database error \(error.code)")
    }
  }

  /// A short description of a connection failure, for start-up errors.
  static func describe(_ error: any Error) -> String {
    if let error = error as? PSQLError {
      if let message = error.serverInfo?[.message] { return message }
      if let underlying = error.underlying { return "\(error.code): \(underlying)" }
      return "\(error.code)"
    }
    return "\(error)"
  }

  // MARK: Migrations

  /// Key of the advisory lock migrations and the Runtime's one-time set-ups run under.
  static let migrationLock: Int64 = 0x5353_4d49_4752  // "SSMIGR"

  private func migrate(_ migrations: [PostgresMigration]) async throws {
    try await client.withConnection { connection in
      _ = try await connection.query("SELECT pg_advisory_lock(\(PostgresStore.migrationLock))",
                                 logger: logger).collect()
      do {
        try await applyMigrations(migrations, on: connection)
        _ = try? await connection.query(
          "SELECT pg_advisory_unlock(\(PostgresStore.migrationLock))", logger: logger
        ).collect()
      } catch {
        _ = try? await connection.query(
          "SELECT pg_advisory_unlock(\(PostgresStore.migrationLock))", logger: logger
        ).collect()
        throw error
      }
    }
  }

  private func applyMigrations(
    _ migrations: [PostgresMigration], on connection: PostgresConnection
  ) async throws {
    _ = try await connection.query(
      """
      CREATE TABLE IF NOT EXISTS runtime_migrations (
        id text PRIMARY KEY, applied_at double precision NOT NULL)
      """, logger: logger
    ).collect()
    var applied = Set<String>()
    for try await id in try await connection.query(
      "SELECT id FROM runtime_migrations", logger: logger
    ).decode(String.self) {
      applied.insert(id)
    }
    let unknown = applied.subtracting(migrations.map(\.id))
    if !unknown.isEmpty {
      throw StoreOpenError.newerSchema(
        "database \(settings.redacted) was written by a newer release (unknown migrations: "
          + unknown.sorted().joined(separator: ", ")
          + "); refusing to start. Run the newer release or restore a backup.")
    }
    for migration in migrations where !applied.contains(migration.id) {
      _ = try await connection.query("BEGIN", logger: logger).collect()
      do {
        for statement in migration.statements {
          _ = try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
            .collect()
        }
        let now = Date().timeIntervalSince1970
        _ = try await connection.query(
          "INSERT INTO runtime_migrations (id, applied_at) VALUES (\(migration.id), \(now))",
          logger: logger
        ).collect()
        _ = try await connection.query("COMMIT", logger: logger).collect()
        logger.info("migrated", metadata: ["migration": "\(migration.id)"])
      } catch {
        _ = try? await connection.query("ROLLBACK", logger: logger).collect()
        throw PostgresStore.map(error)
      }
    }
  }

  /// The Runtime's own tables: the change feed, its counter, the org directory and the
  /// table-change notification function.
  static let runtimeMigrations: [PostgresMigration] = [
    PostgresMigration(
      "runtime.1.changes",
      [
        """
        CREATE TABLE runtime_changes (
          sequence bigint PRIMARY KEY,
          entity text NOT NULL,
          entity_id text NOT NULL,
          natural_key text NOT NULL,
          op integer NOT NULL,
          time double precision NOT NULL,
          org_path text COLLATE "C" NOT NULL,
          payload_type text,
          payload bytea)
        """,
        "CREATE TABLE runtime_counters (name text PRIMARY KEY, value bigint NOT NULL)",
        "INSERT INTO runtime_counters (name, value) VALUES ('changes', 0)",
      ]),
    PostgresMigration(
      "runtime.2.directory",
      [
        """
        CREATE TABLE runtime_directory (
          entity text NOT NULL, id text NOT NULL, payload bytea NOT NULL,
          PRIMARY KEY (entity, id))
        """,
        """
        CREATE TABLE runtime_directory_cursor (
          id integer PRIMARY KEY CHECK (id = 1), sequence bigint NOT NULL)
        """,
      ]),
    PostgresMigration(
      "runtime.3.table-notify",
      [
        """
        CREATE FUNCTION runtime_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM set_config('runtime.changed',
            coalesce(current_setting('runtime.changed', true), '') || ',' || TG_TABLE_NAME, true);
          PERFORM pg_notify('runtime_tables', TG_TABLE_NAME);
          RETURN NULL;
        END $$
        """
      ]),
    PostgresMigration(
      "runtime.4.directory-users",
      [
        """
        CREATE TABLE runtime_directory_orgs (
          id text PRIMARY KEY, path text COLLATE "C" NOT NULL, payload bytea NOT NULL)
        """,
        "CREATE INDEX runtime_directory_orgs_path ON runtime_directory_orgs (path)",
        """
        CREATE TABLE runtime_directory_users (
          id text PRIMARY KEY, external_id text NOT NULL, display_name text NOT NULL,
          kind integer NOT NULL, org_id text NOT NULL, birth_year integer NOT NULL,
          active boolean NOT NULL)
        """,
        """
        CREATE INDEX runtime_directory_users_external ON runtime_directory_users (external_id)
        """,
        "CREATE INDEX runtime_directory_users_org ON runtime_directory_users (org_id, kind)",
        """
        CREATE TABLE runtime_directory_links (
          parent_id text NOT NULL, student_id text NOT NULL, PRIMARY KEY (parent_id, student_id))
        """,
        """
        CREATE TABLE runtime_directory_sessions (
          id text PRIMARY KEY, revoked_at double precision NOT NULL)
        """,
      ]),
    // A feed row may hold a block of events (ChangeBlocks.swift); its payload is stored out of
    // line uncompressed: compressing a bulk import's blocks cost the server more than the
    // rows they replace.
    PostgresMigration(
      "runtime.5.change-blocks",
      [
        "ALTER TABLE runtime_changes ADD COLUMN first_sequence bigint",
        "ALTER TABLE runtime_changes ALTER COLUMN payload SET STORAGE EXTERNAL",
      ]),
  ]

  // MARK: ServiceStorage

  /// `pg_database_size` of the store's database.
  public func sizeInBytes() async -> Int64 {
    guard let rows = try? await query("SELECT pg_database_size(current_database())"),
      let first = rows.first, let size = try? first[0].decode(Int64.self)
    else { return 0 }
    return size
  }

  /// The newest feed sequence.
  public func changeFeedHead() async throws -> Int64 {
    let rows = try await query("SELECT value FROM runtime_counters WHERE name = 'changes'")
    return try rows.first?[0].decode(Int64.self) ?? 0
  }

  /// See ``ServiceStorage/listChanges(after:limit:scopes:unscoped:)``.
  public func listChanges(after: Int64, limit: Int, scopes: [OrgPath]?, unscoped: [String] = [])
    async throws -> (changes: [Smartschool_Common_V1_Change], hasMore: Bool)
  {
    guard let filter = FeedFilter(scopes: scopes, unscoped: unscoped) else { return ([], false) }
    var sql = """
      SELECT sequence, first_sequence, entity, entity_id, natural_key, op, time, org_path,
        payload_type, CASE WHEN first_sequence IS NULL THEN payload END AS payload
      FROM runtime_changes WHERE sequence > $1
      """
    // The parameters after the first (the cursor), each once.
    var values: [String] = []
    if let scopes = filter.scopes {
      // An event's own row as before; a block's row when it may hold an admitted event: one
      // of the kinds, or its events' common path under a scope or a scope under it.
      var single: [String] = []
      var block: [String] = []
      for e in filter.unscoped.sorted() {
        values.append(e)
        single.append("entity = $\(values.count + 1)")
        values.append("," + e + ",")
        block.append("strpos(entity, $\(values.count + 1)) > 0")
      }
      for s in scopes {
        values.append(s)
        single.append("starts_with(org_path, $\(values.count + 1))")
        block.append("starts_with(org_path, $\(values.count + 1))")
        block.append("starts_with($\(values.count + 1), org_path)")
      }
      sql += " AND ((first_sequence IS NULL AND (" + single.joined(separator: " OR ")
        + ")) OR (first_sequence IS NOT NULL AND (" + block.joined(separator: " OR ") + ")))"
    }
    sql += " ORDER BY sequence LIMIT $\(values.count + 2)"
    var listing = FeedListing(after: after, limit: limit, filter: filter)
    var cursor = after
    // Rows until the page has one event more than it holds, or the feed ends: a block's row
    // may give fewer events than one (or none the caller may see).
    while true {
      var binds = PostgresBindings()
      binds.append(cursor)
      for v in values { binds.append(v) }
      binds.append(limit + 1)
      let rows = try await query(PostgresQuery(unsafeSQL: sql, binds: binds))
      var bodies: [Int64: ByteBuffer] = [:]
      for (i, row) in rows.enumerated() {
        if let first = try row["first_sequence"].decode(Int64?.self) {
          let last = try row["sequence"].decode(Int64.self)
          if bodies[last] == nil {
            // This block's body and those of the next blocks the page may reach, in one read.
            var through = last
            var blocks = 0
            for r in rows[i...] where try r["first_sequence"].decode(Int64?.self) != nil {
              through = try r["sequence"].decode(Int64.self)
              blocks += 1
              if blocks == listing.blocksWanted { break }
            }
            for b in try await query(
              """
              SELECT sequence, payload FROM runtime_changes
              WHERE sequence BETWEEN \(last) AND \(through) AND first_sequence IS NOT NULL
              """)
            {
              bodies[try b[0].decode(Int64.self)] = try b[1].decode(ByteBuffer.self)
            }
          }
          try listing.addBlock(
            (bodies[last] ?? ByteBuffer()).readableBytesView, first: first, last: last)
        } else {
          listing.add(try Self.change(row))
        }
        if listing.full { break }
      }
      guard !listing.full, rows.count == limit + 1, let last = rows.last else { break }
      cursor = try last["sequence"].decode(Int64.self)
    }
    return listing.result
  }

  /// The event of its own feed row.
  private static func change(_ row: PostgresRandomAccessRow) throws
    -> Smartschool_Common_V1_Change
  {
    var c = Smartschool_Common_V1_Change()
    c.sequence = try row["sequence"].decode(Int64.self)
    c.entity = try row["entity"].decode(String.self)
    c.id = try row["entity_id"].decode(String.self)
    c.naturalKey = try row["natural_key"].decode(String.self)
    c.op = Smartschool_Common_V1_ChangeOp(rawValue: try row["op"].decode(Int.self)) ?? .unspecified
    c.time = Google_Protobuf_Timestamp(
      date: Date(timeIntervalSince1970: try row["time"].decode(Double.self)))
    c.orgPath = try row["org_path"].decode(String.self)
    if let type = try row["payload_type"].decode(String?.self),
      let bytes = try row["payload"].decode(Data?.self)
    {
      c.payload = Google_Protobuf_Any()
      c.payload.typeURL = type
      c.payload.value = bytes
    }
    return c
  }

  /// See ``ServiceStorage/watch(_:)``: installs the notifying trigger on each table (once,
  /// under the migration lock) and starts listening.
  public func watch(_ tables: Set<String>) async throws -> TableVersion {
    try await client.withConnection { connection in
      _ = try await connection.query(
        "SELECT pg_advisory_lock(\(PostgresStore.migrationLock))", logger: logger
      ).collect()
      do {
        for table in tables.sorted() {
          let exists = try await connection.query(
            "SELECT to_regclass(\(table)::text) IS NOT NULL", logger: logger
          ).collect().first?.makeRandomAccess()[0].decode(Bool.self) ?? false
          guard exists else {
            throw StoreOpenError.unwatchable(
              "cannot watch \(table) in \(settings.redacted): no such table")
          }
          let trigger = "runtime_notify_\(table)"
          let present = try await connection.query(
            "SELECT count(*) FROM pg_trigger WHERE tgname = \(trigger)", logger: logger
          ).collect().first?.makeRandomAccess()[0].decode(Int64.self) ?? 0
          if present == 0 {
            _ = try await connection.query(
              PostgresQuery(
                unsafeSQL: """
                  CREATE TRIGGER \(trigger) AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
                  ON \(table) FOR EACH STATEMENT EXECUTE FUNCTION runtime_notify_change()
                  """), logger: logger
            ).collect()
          }
        }
        _ = try await connection.query(
          "SELECT pg_advisory_unlock(\(PostgresStore.migrationLock))", logger: logger
        ).collect()
      } catch {
        _ = try? await connection.query(
          "SELECT pg_advisory_unlock(\(PostgresStore.migrationLock))", logger: logger
        ).collect()
        throw PostgresStore.map(error)
      }
    }
    let version = TableVersion()
    versions.withLock { $0.append((tables, version)) }
    startListening()
    return version
  }

  /// Moves the versions watching any of `tables`.
  private func advance(_ tables: Set<String>) {
    for entry in versions.withLock({ $0 }) where !entry.tables.isDisjoint(with: tables) {
      entry.version.advance()
    }
  }

  /// Moves every version.
  private func advanceAll() {
    for entry in versions.withLock({ $0 }) { entry.version.advance() }
  }

  private func startListening() {
    listener.withLock { task in
      guard task == nil else { return }
      task = Task { [weak self] in
        while !Task.isCancelled {
          guard let self else { return }
          do {
            try await self.client.withConnection { connection in
              try await connection.listen(on: "runtime_tables") { notifications in
                // Anything may have changed while nobody listened.
                self.advanceAll()
                for try await notification in notifications {
                  self.advance([notification.payload])
                }
              }
            }
          } catch {
            if Task.isCancelled { return }
            self.logger.warning(
              "table-change listener lost; reconnecting",
              metadata: ["error": "\(PostgresStore.describe(error))"])
          }
          self.advanceAll()
          try? await Task.sleep(for: .milliseconds(500))
        }
      }
    }
  }

  /// See ``ServiceStorage/loadDirectory()``.
  public func loadDirectory() async throws -> (rows: [DirectoryRow], cursor: Int64) {
    try await read { tx in
      let rows = try await tx.query("SELECT entity, id, payload FROM runtime_directory").map {
        row in
        DirectoryRow(
          entity: try row["entity"].decode(String.self), id: try row["id"].decode(String.self),
          payload: try row["payload"].decode(Data.self))
      }
      let cursor = try await tx.query(
        "SELECT sequence FROM runtime_directory_cursor WHERE id = 1"
      ).first?[0].decode(Int64.self)
      return (rows, cursor ?? 0)
    }
  }

  /// See ``ServiceStorage/saveDirectory(upserts:deletions:cursor:)``.
  public func saveDirectory(
    upserts: [DirectoryRow], deletions: [(entity: String, id: String)], cursor: Int64?
  ) async throws {
    try await write { tx in
      for row in upserts {
        try await tx.execute(
          """
          INSERT INTO runtime_directory (entity, id, payload)
          VALUES (\(row.entity), \(row.id), \(row.payload))
          ON CONFLICT (entity, id) DO UPDATE SET payload = excluded.payload
          """)
      }
      for key in deletions {
        try await tx.execute(
          "DELETE FROM runtime_directory WHERE entity = \(key.entity) AND id = \(key.id)")
      }
      if let cursor {
        try await tx.execute(
          """
          INSERT INTO runtime_directory_cursor (id, sequence) VALUES (1, \(cursor))
          ON CONFLICT (id) DO UPDATE
          SET sequence = greatest(runtime_directory_cursor.sequence, excluded.sequence)
          """)
      }
    }
  }

  /// See ``ServiceStorage/loadDirectoryTree(revokedAfter:)``.
  public func loadDirectoryTree(revokedAfter: Date) async throws -> DirectoryTree {
    try await read { tx in
      let orgs = try await tx.query("SELECT payload FROM runtime_directory_orgs").map {
        try $0[0].decode(Data.self)
      }
      var sessions: [String: Date] = [:]
      for row in try await tx.query(
        """
        SELECT id, revoked_at FROM runtime_directory_sessions
        WHERE revoked_at > \(revokedAfter.timeIntervalSince1970)
        """)
      {
        sessions[try row[0].decode(String.self)] = Date(
          timeIntervalSince1970: try row[1].decode(Double.self))
      }
      let cursor = try await tx.one("SELECT sequence FROM runtime_directory_cursor WHERE id = 1")
      return DirectoryTree(
        orgs: orgs, sessions: sessions, cursor: try cursor?[0].decode(Int64.self) ?? 0)
    }
  }

  /// See ``ServiceStorage/applyDirectory(through:_:)``: the cursor row, locked `FOR UPDATE`,
  /// is the lock replicas take turns at; each batch is one statement per table (arrays
  /// through `unnest`), however many rows it holds.
  public func applyDirectory(
    through: Int64?, _ batch: @escaping @Sendable (_ cursor: Int64) throws -> DirectoryBatch
  ) async throws -> Bool {
    try await write { tx in
      try await tx.execute(
        """
        INSERT INTO runtime_directory_cursor (id, sequence) VALUES (1, 0)
        ON CONFLICT (id) DO NOTHING
        """)
      let row = try await tx.one(
        "SELECT sequence FROM runtime_directory_cursor WHERE id = 1 FOR UPDATE")
      let cursor = try row?[0].decode(Int64.self) ?? 0
      if let through, cursor >= through { return false }
      let b = try batch(cursor)
      if !b.orgs.isEmpty {
        try await tx.execute(
          """
          INSERT INTO runtime_directory_orgs (id, path, payload)
          SELECT * FROM unnest(\(b.orgs.map(\.id))::text[], \(b.orgs.map(\.path))::text[],
            \(b.orgs.map { ByteBuffer(bytes: $0.payload) })::bytea[])
          ON CONFLICT (id) DO UPDATE SET path = excluded.path, payload = excluded.payload
          """)
      }
      if !b.users.isEmpty {
        try await tx.execute(
          """
          INSERT INTO runtime_directory_users
            (id, external_id, display_name, kind, org_id, birth_year, active)
          SELECT * FROM unnest(\(b.users.map(\.id))::text[],
            \(b.users.map(\.externalID))::text[], \(b.users.map(\.displayName))::text[],
            \(b.users.map { Int32($0.kind.rawValue) })::int4[],
            \(b.users.map(\.orgID))::text[], \(b.users.map { Int32($0.birthYear) })::int4[],
            \(b.users.map(\.active))::bool[])
          ON CONFLICT (id) DO UPDATE SET external_id = excluded.external_id,
            display_name = excluded.display_name, kind = excluded.kind,
            org_id = excluded.org_id, birth_year = excluded.birth_year, active = excluded.active
          """)
      }
      if !b.linksAdded.isEmpty {
        try await tx.execute(
          """
          INSERT INTO runtime_directory_links (parent_id, student_id)
          SELECT * FROM unnest(\(b.linksAdded.map(\.parentID))::text[],
            \(b.linksAdded.map(\.studentID))::text[])
          ON CONFLICT DO NOTHING
          """)
      }
      if !b.linksRemoved.isEmpty {
        try await tx.execute(
          """
          DELETE FROM runtime_directory_links l
          USING unnest(\(b.linksRemoved.map(\.parentID))::text[],
            \(b.linksRemoved.map(\.studentID))::text[]) AS r(parent_id, student_id)
          WHERE l.parent_id = r.parent_id AND l.student_id = r.student_id
          """)
      }
      if !b.sessions.isEmpty {
        let sessions = Array(b.sessions)
        try await tx.execute(
          """
          INSERT INTO runtime_directory_sessions (id, revoked_at)
          SELECT * FROM unnest(\(sessions.map(\.key))::text[],
            \(sessions.map(\.value.timeIntervalSince1970))::float8[])
          ON CONFLICT (id) DO UPDATE SET revoked_at = excluded.revoked_at
          """)
      }
      if let through {
        try await tx.execute(
          """
          UPDATE runtime_directory_cursor SET sequence = greatest(sequence, \(through))
          WHERE id = 1
          """)
      }
      return true
    }
  }

  private static let userColumns =
    "id, external_id, display_name, kind, org_id, birth_year, active"

  private static func user(_ row: PostgresRandomAccessRow) throws -> DirectoryUser {
    DirectoryUser(
      id: try row["id"].decode(String.self), externalID: try row["external_id"].decode(String.self),
      displayName: try row["display_name"].decode(String.self),
      kind: Smartschool_Identity_V1_UserKind(rawValue: Int(try row["kind"].decode(Int32.self)))
        ?? .unspecified,
      orgID: try row["org_id"].decode(String.self),
      birthYear: Int(try row["birth_year"].decode(Int32.self)),
      active: try row["active"].decode(Bool.self))
  }

  /// See ``ServiceStorage/directoryUser(id:)``.
  public func directoryUser(id: String) async throws -> DirectoryUser? {
    try await query(
      "SELECT \(unescaped: PostgresStore.userColumns) FROM runtime_directory_users WHERE id = \(id)"
    ).first.map(PostgresStore.user)
  }

  /// See ``ServiceStorage/directoryUser(externalID:)``.
  public func directoryUser(externalID: String) async throws -> DirectoryUser? {
    try await query(
      """
      SELECT \(unescaped: PostgresStore.userColumns) FROM runtime_directory_users
      WHERE external_id = \(externalID) ORDER BY active DESC LIMIT 1
      """
    ).first.map(PostgresStore.user)
  }

  /// See ``ServiceStorage/directoryUsers(externalIDs:)``: one statement for all the ids.
  public func directoryUsers(externalIDs: [String]) async throws -> [String: DirectoryUser] {
    guard !externalIDs.isEmpty else { return [:] }
    // DISTINCT ON keeps each id's first row in the order, as the single lookup's LIMIT 1.
    let users = try await query(
      """
      SELECT DISTINCT ON (external_id) \(unescaped: PostgresStore.userColumns)
      FROM runtime_directory_users WHERE external_id = ANY(\(externalIDs)::text[])
      ORDER BY external_id, active DESC
      """
    ).map(PostgresStore.user)
    return Dictionary(users.map { ($0.externalID, $0) }, uniquingKeysWith: { a, _ in a })
  }

  /// See ``ServiceStorage/directoryUsers(under:kind:)``.
  public func directoryUsers(under path: OrgPath, kind: Smartschool_Identity_V1_UserKind)
    async throws -> [DirectoryUser]
  {
    let range = path.prefixRange
    return try await query(
      """
      SELECT u.id, u.external_id, u.display_name, u.kind, u.org_id, u.birth_year, u.active
      FROM runtime_directory_orgs o
      JOIN runtime_directory_users u ON u.org_id = o.id AND u.kind = \(Int32(kind.rawValue))
      WHERE o.path >= \(range.lower) AND o.path < \(range.upper) AND u.active
      ORDER BY u.external_id
      """
    ).map(PostgresStore.user)
  }

  /// See ``ServiceStorage/directoryChildren(ofParent:)``.
  public func directoryChildren(ofParent parentID: String) async throws -> Set<String> {
    Set(
      try await query(
        "SELECT student_id FROM runtime_directory_links WHERE parent_id = \(parentID)"
      ).map { try $0[0].decode(String.self) })
  }

  /// See ``ServiceStorage/forgetDirectorySessions(revokedBefore:)``.
  public func forgetDirectorySessions(revokedBefore date: Date) async throws {
    try await write { tx in
      try await tx.execute(
        """
        DELETE FROM runtime_directory_sessions WHERE revoked_at <= \(date.timeIntervalSince1970)
        """)
    }
  }

  /// Runs `body` holding the session advisory lock `name` on a connection of its own (so
  /// `body` itself needs a second one: the pool is at least two connections).
  public func exclusively<T: Sendable>(_ name: String, _ body: @Sendable () async throws -> T)
    async throws -> T
  {
    do {
      return try await client.withConnection { connection in
        _ = try await connection.query(
          "SELECT pg_advisory_lock(hashtext(\(name)))", logger: logger
        ).collect()
        do {
          let value = try await body()
          _ = try? await connection.query(
            "SELECT pg_advisory_unlock(hashtext(\(name)))", logger: logger
          ).collect()
          return value
        } catch {
          _ = try? await connection.query(
            "SELECT pg_advisory_unlock(hashtext(\(name)))", logger: logger
          ).collect()
          throw error
        }
      }
    } catch {
      throw PostgresStore.map(error)
    }
  }

  /// Whether `SELECT 1` answers.
  public func ping() async -> Bool {
    (try? await query("SELECT 1")) != nil
  }

  /// Stops listening and closes the pool.
  public func close() async {
    listener.withLock { $0?.cancel() }
    // Cancelling run() shuts the pool down.
    runner.cancel()
    _ = await runner.value
  }
}

/// A connection whose statements give up when it closes. postgres-nio 1.33.2 does not always
/// answer a statement that was in flight when the server dropped the connection (terminated
/// backend, restart): the caller would wait forever, holding the pool's lease, until every
/// lease was stuck. Here each statement runs in a task of its own and the caller waits on a
/// continuation that either the answer or a watcher resumes; the watcher checks the
/// connection every 100 ms while a statement is pending and fails it UNAVAILABLE once the
/// connection is closed. A statement left unanswered keeps only its small task.
final class GuardedConnection: Sendable {
  private struct Pending {
    var id: Int
    var continuation: CheckedContinuation<[PostgresRow], any Error>
  }
  private let connection: PostgresConnection
  private let logger: Logger
  private let state = Mutex<(next: Int, pending: Pending?)>((0, nil))
  private let watcher = Mutex<Task<Void, Never>?>(nil)

  init(_ connection: PostgresConnection, logger: Logger) {
    self.connection = connection
    self.logger = logger
  }

  /// Every row of `query`; UNAVAILABLE when the connection closes first.
  func rows(_ query: PostgresQuery) async throws -> [PostgresRow] {
    try await rows { connection, logger in
      try await connection.query(query, logger: logger).collect()
    }
  }

  /// Every row of `statement`, prepared on this connection the first time it runs there.
  func rows(prepared statement: some PostgresRowStatement) async throws -> [PostgresRow] {
    try await rows { connection, logger in
      var rows: [PostgresRow] = []
      for try await row in try await connection.execute(statement, logger: logger) {
        rows.append(row)
      }
      return rows
    }
  }

  private func rows(
    _ run: @escaping @Sendable (PostgresConnection, Logger) async throws -> [PostgresRow]
  ) async throws -> [PostgresRow] {
    if connection.isClosed { throw GuardedConnection.lost }
    startWatching()
    let (connection, logger) = (self.connection, self.logger)
    return try await withCheckedThrowingContinuation { continuation in
      let id = state.withLock { s -> Int in
        s.next += 1
        s.pending = Pending(id: s.next, continuation: continuation)
        return s.next
      }
      Task {
        do {
          let rows = try await run(connection, logger)
          self.finish(id, .success(rows))
        } catch {
          self.finish(id, .failure(error))
        }
      }
    }
  }

  /// Stops watching (the lease is over).
  func stop() {
    watcher.withLock { $0?.cancel() }
  }

  static let lost = ServiceError.unavailable("the database connection was lost; retry shortly")

  private func finish(_ id: Int, _ result: Result<[PostgresRow], any Error>) {
    let continuation = state.withLock { s -> CheckedContinuation<[PostgresRow], any Error>? in
      guard let pending = s.pending, pending.id == id else { return nil }
      s.pending = nil
      return pending.continuation
    }
    continuation?.resume(with: result)
  }

  private func startWatching() {
    watcher.withLock { task in
      guard task == nil else { return }
      task = Task { [weak self] in
        while !Task.isCancelled {
          try? await Task.sleep(for: .milliseconds(100))
          guard let self else { return }
          if self.connection.isClosed {
            let id = self.state.withLock { $0.pending?.id }
            if let id { self.finish(id, .failure(GuardedConnection.lost)) }
          }
        }
      }
    }
  }
}

/// One transaction of a ``PostgresStore``: statements run on its connection, in order.
public final class PostgresTransaction: @unchecked Sendable {
  /// The connection the transaction runs on; use it only inside the transaction's closure.
  public let connection: PostgresConnection
  let logger: Logger
  private var pending: [ChangeEvent] = []
  /// The first `packedCount` pending events, packed beforehand (``PostgresEncodedChanges``).
  private var packed: [ChangeBlock.Packed] = []
  private var packedCount = 0
  private var savepoints = 0

  /// The connection, watched: a statement in flight when it closes fails at once.
  let guarded: GuardedConnection

  init(connection: PostgresConnection, logger: Logger) {
    self.connection = connection
    self.logger = logger
    self.guarded = GuardedConnection(connection, logger: logger)
  }

  /// Runs `query` and returns every row (for bounded results: a page, one entity).
  public func query(_ query: PostgresQuery) async throws -> [PostgresRandomAccessRow] {
    try await guarded.rows(query).map { $0.makeRandomAccess() }
  }

  /// Runs `statement`, prepared on this connection the first time it runs there, and returns
  /// every row (see ``PostgresStore/query(prepared:)``).
  public func query(prepared statement: some PostgresRowStatement) async throws
    -> [PostgresRandomAccessRow]
  {
    try await guarded.rows(prepared: statement).map { $0.makeRandomAccess() }
  }

  /// The first row of `query`, if any.
  public func one(_ query: PostgresQuery) async throws -> PostgresRandomAccessRow? {
    try await self.query(query).first
  }

  /// Runs `query`, discarding any rows.
  public func execute(_ query: PostgresQuery) async throws {
    _ = try await guarded.rows(query)
  }

  /// Runs `body` under a savepoint: when it throws, its statements are undone, the
  /// transaction stays usable and the error is rethrown. For imports that reject a row and go
  /// on (PostgreSQL refuses every later statement of a transaction once one has failed).
  public func savepoint<T>(_ body: () async throws -> T) async throws -> T {
    savepoints += 1
    let name = "sp\(savepoints)"
    try await execute(PostgresQuery(unsafeSQL: "SAVEPOINT \(name)"))
    let pendingBefore = pending.count
    do {
      let value = try await body()
      try await execute(PostgresQuery(unsafeSQL: "RELEASE SAVEPOINT \(name)"))
      return value
    } catch {
      try await execute(PostgresQuery(unsafeSQL: "ROLLBACK TO SAVEPOINT \(name)"))
      pending.removeSubrange(pendingBefore...)
      // Blocks reaching past the undone events go; their events left are packed at the end.
      while packedCount > pendingBefore, let last = packed.popLast() {
        packedCount -= last.count
      }
      throw PostgresStore.map(error)
    }
  }

  /// Holds a transaction-scoped advisory lock named by `key` until the transaction ends:
  /// replicas doing the same one-time work (the first signing key, the bootstrap admin) take
  /// turns.
  public func lock(_ key: String) async throws {
    try await execute("SELECT pg_advisory_xact_lock(hashtext(\(key)))")
  }

  /// Takes `count` consecutive numbers from the counter `name` (created at 0 on first use) and
  /// returns the first. The counter row stays locked until the transaction ends, so numbers
  /// are handed out in commit order: take them last, just before the transaction commits.
  public func takeSequence(_ name: String, count: Int = 1) async throws -> Int64 {
    let update: PostgresQuery =
      "UPDATE runtime_counters SET value = value + \(count) WHERE name = \(name) RETURNING value"
    if let row = try await one(update) { return try row[0].decode(Int64.self) - Int64(count) + 1 }
    try await execute(
      "INSERT INTO runtime_counters (name, value) VALUES (\(name), 0) ON CONFLICT DO NOTHING")
    guard let row = try await one(update) else {
      throw ServiceError.internalError("counter \(name) is missing")
    }
    return try row[0].decode(Int64.self) - Int64(count) + 1
  }

  /// Records a change-feed event; it is written, with its sequence, when the transaction
  /// commits (see ``PostgresStore``).
  public func recordChange(
    entity: String, id: String, naturalKey: String, op: Smartschool_Common_V1_ChangeOp,
    orgPath: String, payload: (any SwiftProtobuf.Message)? = nil, time: Date = Date()
  ) throws {
    pending.append(
      try ChangeEvent(
        entity: entity, id: id, naturalKey: naturalKey, op: op, orgPath: orgPath,
        payload: payload, time: time))
  }

  /// Records events made beforehand, as
  /// ``recordChange(entity:id:naturalKey:op:orgPath:payload:time:)`` does one: a bulk writer
  /// can make them (serializing each payload) on another task while its statements run,
  /// rather than between them.
  public func recordChanges(_ events: [ChangeEvent]) {
    pending.append(contentsOf: events)
  }

  /// Records events packed beforehand (``PostgresEncodedChanges``): a large batch's blocks are
  /// then only numbered and sent at the commit, not made between its statements.
  public func recordChanges(_ encoded: PostgresEncodedChanges) {
    if let blocks = encoded.blocks, packedCount == pending.count {
      packed += blocks
      packedCount += encoded.events.count
    }
    pending.append(contentsOf: encoded.events)
  }

  /// Writes the buffered feed events, numbered from the counter, and returns the watched tables
  /// this transaction changed (``changedTables()``); nil, having written and read nothing,
  /// when no event is buffered. Each column goes as one array parameter and the rows come out
  /// of `unnest`, so a batch of any size is one short statement (a VALUES list with nine
  /// parameters a row is several times slower to parse and bind for the same rows). The
  /// `unnest` calls sit in one select list, which runs them in step; `unnest` of the nine
  /// arrays in FROM stores each one's rows first, and its insert takes a quarter longer.
  ///
  /// The counter row stays locked from its update until the commit, and every writing
  /// transaction of the service queues there: the update, the first rows and the read of the
  /// changed tables are one statement, so the lock is held for that statement's end and the
  /// commit only. The feed table itself is never watched, so reading the changed tables
  /// alongside its insert misses nothing.
  func flushChanges() async throws -> Set<String>? {
    guard !pending.isEmpty else { return nil }
    if pending.count >= ChangeBlock.threshold { return try await insertBlocks() }
    let count = pending.count
    var first: Int64? = nil
    var changed: Set<String> = []
    // 20,000 rows a statement keeps one statement's arrays to a few megabytes.
    for chunk in stride(from: 0, to: count, by: 20_000) {
      let rows = pending[chunk..<min(chunk + 20_000, count)]
      if let first {
        try await execute(Self.insertChanges(rows, first: first + Int64(chunk)))
      } else if let row = try await query(prepared: NumberedChanges(rows, count: count)).first {
        first = try row[0].decode(Int64.self)
        changed = Self.tables(try row[1].decode(String?.self))
      } else {
        // No counter row, so nothing went in: takeSequence makes it at 0.
        let start = try await takeSequence("changes", count: count)
        first = start
        changed = try await changedTables()
        try await execute(Self.insertChanges(rows, first: start))
      }
    }
    pending.removeAll()
    return changed
  }

  /// ``flushChanges()`` for a bulk transaction: its events in blocks (ChangeBlocks.swift),
  /// packed but for those not packed beforehand before the counter is taken (its lock is not
  /// held while they are made); the counter moves with the changed tables read alongside, and
  /// the blocks go in numbered from it, as arrays, a few megabytes a statement.
  private func insertBlocks() async throws -> Set<String> {
    var blocks = packed
    if packedCount < pending.count { blocks += ChangeBlock.pack(pending[packedCount...]) }
    let first: Int64
    let changed: Set<String>
    if let row = try await query(prepared: TakeChanges(count: pending.count)).first {
      first = try row[0].decode(Int64.self)
      changed = Self.tables(try row[1].decode(String?.self))
    } else {
      // No counter row: takeSequence makes it at 0.
      first = try await takeSequence("changes", count: pending.count)
      changed = try await changedTables()
    }
    var next = first
    for chunk in stride(from: 0, to: blocks.count, by: 128) {
      let part = blocks[chunk..<min(chunk + 128, blocks.count)]
      var lasts: [Int64] = []
      var firsts: [Int64] = []
      for b in part {
        firsts.append(next)
        next += Int64(b.count)
        lasts.append(next - 1)
      }
      let entities = part.map(\.entities)
      let times = part.map(\.time)
      let scopes = part.map(\.scope)
      let bodies = part.map { ByteBuffer(bytes: $0.body) }
      try await execute(
        """
        INSERT INTO runtime_changes (sequence, first_sequence, entity, entity_id, natural_key, op,
          time, org_path, payload_type, payload)
        SELECT u.last, u.first, u.entities, '', '', 0, u.time, u.scope, NULL, u.body
        FROM unnest(\(lasts)::int8[], \(firsts)::int8[], \(entities)::text[],
          \(times)::float8[], \(scopes)::text[], \(bodies)::bytea[])
          AS u(last, first, entities, time, scope, body)
        """)
    }
    pending.removeAll()
    packed.removeAll()
    packedCount = 0
    return changed
  }

  /// The INSERT of `rows` into the feed, numbered from `first`.
  private static func insertChanges(_ rows: ArraySlice<ChangeEvent>, first: Int64)
    -> PostgresQuery
  {
    let columns = FeedColumns(rows)
    return """
      INSERT INTO runtime_changes
        (sequence, entity, entity_id, natural_key, op, time, org_path, payload_type, payload)
      SELECT \(first)::bigint + r.n, r.entity, r.id, r.key, r.op, r.time, r.path,
        NULLIF(r.type, ''), CASE WHEN r.type = '' THEN NULL ELSE r.payload END
      FROM (SELECT generate_series(0, \(Int64(rows.count - 1))) AS n,
        unnest(\(columns.entities)::text[]) AS entity, unnest(\(columns.ids)::text[]) AS id,
        unnest(\(columns.keys)::text[]) AS key, unnest(\(columns.ops)::integer[]) AS op,
        unnest(\(columns.times)::float8[]) AS time, unnest(\(columns.paths)::text[]) AS path,
        unnest(\(columns.types)::text[]) AS type,
        unnest(\(columns.payloads)::bytea[]) AS payload) r
      """
  }

  /// The watched tables this transaction changed (collected by their triggers).
  func changedTables() async throws -> Set<String> {
    guard let row = try await one("SELECT current_setting('runtime.changed', true)") else {
      return []
    }
    return Self.tables(try row[0].decode(String?.self))
  }

  /// The table names the triggers collected (a comma-separated list, or nothing).
  private static func tables(_ text: String?) -> Set<String> {
    guard let text else { return [] }
    return Set(text.split(separator: ",").map(String.init))
  }
}

extension PostgresStore {
  /// Creates the database `name` on `server` (connecting to `server`'s own database as its
  /// role) unless it exists. For tests and the local demo, which make throwaway databases;
  /// production databases are made by an administrator (see deploy/README.md).
  public static func createDatabaseIfMissing(on server: DatabaseSettings, name: String)
    async throws
  {
    guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
      throw ServiceError.invalid("database", "use letters, digits and '_' only")
    }
    var logger = Logger(label: "postgres-admin")
    logger.logLevel = .critical
    let connection = try await PostgresConnection.connect(
      configuration: PostgresConnection.Configuration(
        host: server.host, port: server.port, username: server.username,
        password: server.password, database: server.database, tls: .disable),
      id: 1, logger: logger)
    defer { Task { try? await connection.close() } }
    let exists = try await connection.query(
      "SELECT count(*) FROM pg_database WHERE datname = \(name)", logger: logger
    ).collect().first?.makeRandomAccess()[0].decode(Int64.self) ?? 0
    if exists == 0 {
      do {
        _ = try await connection.query(
          PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger
        ).collect()
      } catch let error as PSQLError where error.serverInfo?[.sqlState] == "42P04" {
        // Made meanwhile by another caller.
      }
    }
  }
}

/// Feed events as the column arrays their INSERT unnests. Arrays carry no NULLs: an event
/// without a payload has an empty type, and its payload (then empty too) is stored as NULL.
private struct FeedColumns {
  var entities: [String]
  var ids: [String]
  var keys: [String]
  var ops: [Int32]
  var times: [Double]
  var paths: [String]
  var types: [String]
  var payloads: [ByteBuffer]

  init(_ rows: ArraySlice<ChangeEvent>) {
    entities = rows.map(\.entity)
    ids = rows.map(\.id)
    keys = rows.map(\.naturalKey)
    ops = rows.map { Int32($0.op) }
    times = rows.map(\.time)
    paths = rows.map(\.orgPath)
    types = rows.map { $0.payloadType ?? "" }
    payloads = rows.map { ByteBuffer(bytes: $0.payload ?? Data()) }
  }
}

/// Feed events made and packed ahead of their transaction, for
/// ``PostgresTransaction/recordChanges(_:)-(PostgresEncodedChanges)``: a bulk writer packs a
/// batch's events while the batch before it is written, and its own transaction then only
/// numbers and sends them. Fewer events than a transaction packs are kept as they are (they go
/// in as rows of their own).
public struct PostgresEncodedChanges: Sendable {
  let events: [ChangeEvent]
  let blocks: [ChangeBlock.Packed]?

  /// Packs `events`, when there are enough of them to go in blocks.
  public init(_ events: [ChangeEvent]) {
    self.events = events
    blocks = events.count >= ChangeBlock.threshold ? ChangeBlock.pack(events) : nil
  }
}

/// Takes `count` numbers from the feed's counter, returning the first and the changed tables
/// (no row when the counter has no row). Prepared: every large feed batch runs it.
private struct TakeChanges: PostgresRowStatement {
  static let name = "runtime_take_changes"
  static let sql = """
    UPDATE runtime_counters SET value = value + $1 WHERE name = 'changes'
    RETURNING value - $1 + 1, current_setting('runtime.changed', true)
    """
  let count: Int

  func makeBindings() -> PostgresBindings {
    var bindings = PostgresBindings()
    bindings.append(Int64(count))
    return bindings
  }
}

/// Takes `count` numbers from the feed's counter and inserts `rows` numbered from the first,
/// returning it and the changed tables (no row when the counter has no row: nothing went in).
/// Prepared: every writing transaction of every service runs it.
private struct NumberedChanges: PostgresRowStatement {
  static let name = "runtime_numbered_changes"
  static let sql = """
    WITH c AS (
      UPDATE runtime_counters SET value = value + $1 WHERE name = 'changes'
      RETURNING value - $1 + 1 AS first),
    i AS (
      INSERT INTO runtime_changes
        (sequence, entity, entity_id, natural_key, op, time, org_path, payload_type, payload)
      SELECT c.first + r.n, r.entity, r.id, r.key, r.op, r.time, r.path,
        NULLIF(r.type, ''), CASE WHEN r.type = '' THEN NULL ELSE r.payload END
      FROM c, (SELECT generate_series(0, cardinality($2::text[]) - 1) AS n,
        unnest($2::text[]) AS entity,
        unnest($3::text[]) AS id, unnest($4::text[]) AS key, unnest($5::integer[]) AS op,
        unnest($6::float8[]) AS time, unnest($7::text[]) AS path, unnest($8::text[]) AS type,
        unnest($9::bytea[]) AS payload) r)
    SELECT first, current_setting('runtime.changed', true) FROM c
    """
  let columns: FeedColumns
  let count: Int64

  init(_ rows: ArraySlice<ChangeEvent>, count: Int) {
    columns = FeedColumns(rows)
    self.count = Int64(count)
  }

  func makeBindings() -> PostgresBindings {
    var bindings = PostgresBindings()
    bindings.append(count)
    bindings.append(columns.entities)
    bindings.append(columns.ids)
    bindings.append(columns.keys)
    bindings.append(columns.ops)
    bindings.append(columns.times)
    bindings.append(columns.paths)
    bindings.append(columns.types)
    bindings.append(columns.payloads)
    return bindings
  }
}
