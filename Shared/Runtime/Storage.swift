import Crypto
import Foundation
import GRDB
import GRDBSQLite
import SmartSchoolModel
import SwiftProtobuf
import Synchronization

/// A service's SQLite store: one GRDB `DatabasePool` in WAL mode at
/// `<data dir>/<name>.sqlite`, migrated on open, with the change feed every service keeps.
///
/// Each store file is opened once per process; the pool serialises writers and runs scans,
/// while bounded reads (``read(_:)``) run on a few read-only connections of their own. WAL lets
/// every reader run alongside the writer.
public final class Store: ServiceStorage {
  /// The pool; services run their SQL through ``read(_:)`` and ``write(_:)``.
  public let pool: DatabasePool
  /// Path of the database file.
  public let path: String
  /// The read-only connections ``read(_:)`` runs on.
  private let readers: ReadConnections
  /// Writes waiting for the next group transaction (see ``write(_:)``).
  private let writes = WriteQueue()
  /// Copies the write-ahead log into the database file off the writer's thread.
  private let checkpointer: WALCheckpointer

  /// How much of the database file each connection reads through a memory map (SQLite's
  /// `mmap_size`) instead of `pread` into its own page cache.
  static let mmapBytes = 1 << 30

  /// Opens (creating if needed) `<directory>/<name>.sqlite` and runs the Runtime's own
  /// migrations followed by the service's.
  ///
  /// Throws ``StoreOpenError/newerSchema(_:)`` when the file was written by a newer release
  /// (it has migrations this binary does not know): the service must refuse to start rather
  /// than run on a schema it does not understand.
  public init(
    directory: String, name: String, migrations: (inout DatabaseMigrator) -> Void
  ) throws {
    try FileManager.default.createDirectory(
      atPath: directory, withIntermediateDirectories: true)
    self.path = (directory as NSString).appendingPathComponent("\(name).sqlite")
    var config = Configuration()
    config.busyMode = .timeout(5)
    config.prepareDatabase { db in
      try db.execute(sql: "PRAGMA synchronous = NORMAL")
      try db.execute(sql: "PRAGMA mmap_size = \(Store.mmapBytes)")
    }
    self.pool = try DatabasePool(path: path, configuration: config)
    var readerConfig = Configuration()
    readerConfig.readonly = true
    readerConfig.busyMode = config.busyMode
    readerConfig.prepareDatabase { db in
      try db.execute(sql: "PRAGMA mmap_size = \(Store.mmapBytes)")
    }
    readerConfig.label = "\(name).inline-reader"
    self.readers = ReadConnections(
      path: path, configuration: readerConfig,
      limit: ProcessInfo.processInfo.activeProcessorCount + 2)
    var checkpointConfig = Configuration()
    checkpointConfig.busyMode = .immediateError
    checkpointConfig.prepareDatabase { db in
      try db.execute(sql: "PRAGMA synchronous = NORMAL")
    }
    checkpointConfig.label = "\(name).checkpointer"
    self.checkpointer = try WALCheckpointer(path: path, configuration: checkpointConfig)
    pool.writeWithoutTransaction { db in checkpointer.install(on: db) }

    var migrator = DatabaseMigrator()
    Store.registerRuntimeMigrations(&migrator)
    Store.registerDirectoryMigrations(&migrator)
    Store.registerChangeBlockMigrations(&migrator)
    migrations(&migrator)
    let known = Set(migrator.migrations)
    let applied = try pool.read { db in try migrator.appliedIdentifiers(db) }
    let unknown = applied.subtracting(known)
    if !unknown.isEmpty {
      throw StoreOpenError.newerSchema(
        "store \(path) was written by a newer release (unknown migrations: "
          + unknown.sorted().joined(separator: ", ")
          + "); refusing to start. Run the newer release or restore a backup.")
    }
    try migrator.migrate(pool)
  }

  /// Runs a read transaction on the calling thread, mapping database errors to
  /// ``ServiceError``. For bounded reads (indexed lookups, one page of a list): most RPCs.
  ///
  /// Running inline saves the two thread hand-offs of GRDB's asynchronous read (to a reader
  /// queue and back), about three context switches and a quarter of a simple RPC's CPU. WAL
  /// readers never wait for the writer, so the cooperative thread is held only while SQLite
  /// reads. Reads that visit many rows use ``scan(_:)`` instead.
  public func read<T: Sendable>(_ body: @Sendable @escaping (Database) throws -> T) async throws
    -> T
  {
    try Task.checkCancellation()
    do {
      return try readInline(body)
    } catch let error as DatabaseError {
      throw Store.map(error)
    }
  }

  /// Runs a read transaction on one of GRDB's reader threads, mapping database errors to
  /// ``ServiceError``. For reads that visit many rows (aggregates, statistics, search): they
  /// run off Swift's cooperative pool, so other calls keep being served meanwhile, and are
  /// interrupted when the calling task is cancelled.
  public func scan<T: Sendable>(_ body: @Sendable @escaping (Database) throws -> T) async throws
    -> T
  {
    do {
      return try await pool.read(body)
    } catch let error as DatabaseError {
      throw Store.map(error)
    }
  }

  /// A read transaction on an idle connection of ``readers``, or through GRDB's pool (the
  /// synchronous overload) when all of them are busy.
  private func readInline<T>(_ body: (Database) throws -> T) throws -> T {
    guard let reader = try readers.checkOut() else { return try pool.read(body) }
    defer { readers.checkIn(reader) }
    // The transaction through cached statements: GRDB's own (`read`) compiles BEGIN and
    // COMMIT afresh on every read, a fifth of a simple read's cost.
    return try reader.inDatabase { db in
      try db.cachedStatement(sql: "BEGIN DEFERRED TRANSACTION").execute()
      do {
        let value = try body(db)
        try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
        return value
      } catch {
        if db.isInsideTransaction { try? db.cachedStatement(sql: "ROLLBACK TRANSACTION").execute() }
        throw error
      }
    }
  }

  /// Runs `body` in a write transaction, mapping database errors to ``ServiceError``.
  ///
  /// Writes that arrive while another is running share the next transaction (group commit):
  /// SQLite has one writer, and a commit writes every page its transaction dirtied to the WAL,
  /// so eight small writes committed together write the pages they share (the rightmost leaf
  /// of each table and index, the change feed's) once instead of eight times. Each write of a
  /// group runs in a savepoint of its own: one that throws is rolled back alone and gets its
  /// error, the others commit; every caller is answered after the commit, so what a caller
  /// sees afterwards is durable exactly as before. A write that runs alone has no savepoint.
  public func write<T: Sendable>(_ body: @Sendable @escaping (Database) throws -> T) async throws
    -> T
  {
    try Task.checkCancellation()
    let result = WriteSlot<T>()
    return try await withCheckedThrowingContinuation { continuation in
      let job = GroupedWrite(
        run: { db, alone in
          do {
            if alone {
              let value = try body(db)
              result.value.withLock { $0 = value }
            } else {
              try db.inSavepoint {
                let value = try body(db)
                result.value.withLock { $0 = value }
                return .commit
              }
            }
            return nil
          } catch {
            return error
          }
        },
        finish: { error in
          if let error {
            continuation.resume(throwing: Store.mapAny(error))
          } else if let value = result.value.withLock({ $0 }) {
            continuation.resume(returning: value)
          } else {
            continuation.resume(throwing: ServiceError.internalError("a write lost its result"))
          }
        })
      if writes.enqueue(job) {
        pool.asyncWriteWithoutTransaction { db in self.drainWrites(db) }
      }
    }
  }

  /// Runs the queued writes on the writer connection `db`, a group per transaction, until the
  /// queue is empty. Exactly one drain runs at a time (the write that found the queue idle
  /// starts it). The loop stays on the writer's thread from one group to the next: going back
  /// to the task pool between groups left the writer idle until a busy pool ran the drain
  /// again, and BEGIN and COMMIT are cached statements (GRDB's transaction compiles both each
  /// time).
  private func drainWrites(_ db: Database) {
    while let jobs = writes.next() {
      do {
        let errors = try Self.runGroup(jobs, db)
        for (job, error) in zip(jobs, errors) { job.finish(error) }
      } catch {
        for job in jobs { job.finish(error) }
      }
    }
  }

  /// Runs `jobs` in one transaction; returns each job's error (nil: committed). Throws, having
  /// rolled everything back, when the transaction fails or its only job does.
  private static func runGroup(_ jobs: [GroupedWrite], _ db: Database) throws -> [(any Error)?] {
    try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
    do {
      var errors: [(any Error)?] = []
      errors.reserveCapacity(jobs.count)
      for job in jobs {
        let error = job.run(db, jobs.count == 1)
        // A full disk or an I/O error can make SQLite roll the whole transaction back: the
        // writes before this one are gone too, and the rest must not run outside it.
        if let error, !db.isInsideTransaction { throw error }
        errors.append(error)
      }
      if jobs.count == 1, let error = errors[0] { throw error }
      try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
      return errors
    } catch {
      if db.isInsideTransaction { try? db.cachedStatement(sql: "ROLLBACK TRANSACTION").execute() }
      throw error
    }
  }

  /// ``map(_:)`` for any error: database errors mapped, others (the service's own) unchanged.
  static func mapAny(_ error: any Error) -> any Error {
    if let error = error as? DatabaseError { return map(error) }
    return error
  }

  /// Maps SQLite failures the caller did not cause to clear statuses: a full disk is
  /// RESOURCE_EXHAUSTED, a locked database UNAVAILABLE, a broken constraint ALREADY_EXISTS or
  /// FAILED_PRECONDITION.
  public static func map(_ error: DatabaseError) -> ServiceError {
    switch error.resultCode {
    case .SQLITE_FULL: return .resourceExhausted("the store is full (disk space)")
    case .SQLITE_BUSY, .SQLITE_LOCKED:
      return .unavailable("the store is locked by another process; retry shortly")
    case .SQLITE_READONLY, .SQLITE_IOERR, .SQLITE_CANTOPEN:
      return .unavailable("the store cannot be written right now: \(error.resultCode)")
    case .SQLITE_CONSTRAINT:
      if error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE
        || error.extendedResultCode == .SQLITE_CONSTRAINT_PRIMARYKEY
      {
        return .alreadyExists("an entity with the same key already exists")
      }
      return .failedPrecondition("the change conflicts with existing data")
    default:
      return .internalError("store error \(error.resultCode)")
    }
  }

  /// Copies the live database to `destination` with SQLite's online backup API: a
  /// consistent snapshot even while writers run.
  public func backup(to destination: String) throws {
    let target = try DatabaseQueue(path: destination)
    try pool.backup(to: target)
  }

  static func registerRuntimeMigrations(_ migrator: inout DatabaseMigrator) {
    migrator.registerMigration("runtime.1.changes") { db in
      try db.execute(
        sql: """
          CREATE TABLE runtime_changes (
            sequence INTEGER PRIMARY KEY AUTOINCREMENT,
            entity TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            natural_key TEXT NOT NULL,
            op INTEGER NOT NULL,
            time REAL NOT NULL,
            org_path TEXT NOT NULL,
            payload_type TEXT,
            payload BLOB
          )
          """)
    }
  }
}

extension Store {
  /// The column that marks a feed row holding a block of events (ChangeBlocks.swift).
  static func registerChangeBlockMigrations(_ migrator: inout DatabaseMigrator) {
    migrator.registerMigration("runtime.5.change-blocks") { db in
      try db.execute(sql: "ALTER TABLE runtime_changes ADD COLUMN first_sequence INTEGER")
    }
  }

  /// SQLite.
  public var backend: StorageBackend { .sqlite }

  /// The database file's path.
  public var location: String { path }

  /// Checkpoints of the write-ahead log so far: run beside the writes (``WALCheckpointer``),
  /// and run by the writer itself because the log reached ``WALCheckpointer/inlinePages``.
  public var walCheckpoints: (background: Int, byWriter: Int) {
    let counts = checkpointer.counts
    return (counts.background, counts.inline)
  }

  /// Size of the database file and its WAL, in bytes.
  public func sizeInBytes() async -> Int64 {
    let fm = FileManager.default
    return [path, path + "-wal"].reduce(Int64(0)) { sum, p in
      let size = (try? fm.attributesOfItem(atPath: p)[.size] as? NSNumber)?.int64Value ?? 0
      return sum + size
    }
  }

  /// The newest change-feed sequence.
  public func changeFeedHead() async throws -> Int64 {
    try await read { db in try ChangeFeed.head(db) }
  }

  /// See ``ServiceStorage/listChanges(after:limit:scopes:unscoped:)``.
  public func listChanges(after: Int64, limit: Int, scopes: [OrgPath]?, unscoped: [String])
    async throws -> (changes: [Smartschool_Common_V1_Change], hasMore: Bool)
  {
    try await read { db in
      try ChangeFeed.list(db, after: after, limit: limit, scopes: scopes, unscoped: unscoped)
    }
  }

  /// See ``ServiceStorage/loadDirectory()``.
  public func loadDirectory() async throws -> (rows: [DirectoryRow], cursor: Int64) {
    try await read { db in
      let rows = try Row.fetchAll(
        db.cachedStatement(sql: "SELECT entity, id, payload FROM runtime_directory")
      ).map { row in
        DirectoryRow(entity: row["entity"], id: row["id"], payload: row["payload"])
      }
      let cursor =
        try Int64.fetchOne(
          db.cachedStatement(sql: "SELECT sequence FROM runtime_directory_cursor WHERE id = 1"))
        ?? 0
      return (rows, cursor)
    }
  }

  /// See ``ServiceStorage/saveDirectory(upserts:deletions:cursor:)``.
  public func saveDirectory(
    upserts: [DirectoryRow], deletions: [(entity: String, id: String)], cursor: Int64?
  ) async throws {
    let deletions = deletions.map { [$0.entity, $0.id] }
    try await write { db in
      for row in upserts {
        try db.cachedStatement(
          sql: "INSERT OR REPLACE INTO runtime_directory (entity, id, payload) VALUES (?, ?, ?)"
        ).execute(arguments: [row.entity, row.id, row.payload])
      }
      for key in deletions {
        try db.cachedStatement(sql: "DELETE FROM runtime_directory WHERE entity = ? AND id = ?")
          .execute(arguments: [key[0], key[1]])
      }
      if let cursor {
        try db.execute(
          sql: """
            INSERT INTO runtime_directory_cursor (id, sequence) VALUES (1, ?)
            ON CONFLICT (id) DO UPDATE SET sequence = max(sequence, excluded.sequence)
            """, arguments: [cursor])
      }
    }
  }

  /// See ``ServiceStorage/loadDirectoryTree(revokedAfter:)``.
  public func loadDirectoryTree(revokedAfter: Date) async throws -> DirectoryTree {
    try await scan { db in
      let orgs = try Data.fetchAll(db, sql: "SELECT payload FROM runtime_directory_orgs")
      var sessions: [String: Date] = [:]
      let rows = try Row.fetchCursor(
        db, sql: "SELECT id, revoked_at FROM runtime_directory_sessions WHERE revoked_at > ?",
        arguments: [revokedAfter.timeIntervalSince1970])
      while let row = try rows.next() {
        sessions[row["id"]] = Date(timeIntervalSince1970: row["revoked_at"])
      }
      let cursor =
        try Int64.fetchOne(db, sql: "SELECT sequence FROM runtime_directory_cursor WHERE id = 1")
        ?? 0
      return DirectoryTree(orgs: orgs, sessions: sessions, cursor: cursor)
    }
  }

  /// See ``ServiceStorage/applyDirectory(through:_:)``. The one writer connection is the lock.
  public func applyDirectory(
    through: Int64?, _ batch: @escaping @Sendable (_ cursor: Int64) throws -> DirectoryBatch
  ) async throws -> Bool {
    try await write { db in
      let cursor =
        try Int64.fetchOne(
          db.cachedStatement(sql: "SELECT sequence FROM runtime_directory_cursor WHERE id = 1"))
        ?? 0
      if let through, cursor >= through { return false }
      let b = try batch(cursor)
      let org = try db.cachedStatement(
        sql: "INSERT OR REPLACE INTO runtime_directory_orgs (id, path, payload) VALUES (?, ?, ?)")
      for o in b.orgs { try org.execute(arguments: [o.id, o.path, o.payload]) }
      let user = try db.cachedStatement(
        sql: """
          INSERT OR REPLACE INTO runtime_directory_users
            (id, external_id, display_name, kind, org_id, birth_year, active)
          VALUES (?, ?, ?, ?, ?, ?, ?)
          """)
      for u in b.users {
        try user.execute(arguments: [
          u.id, u.externalID, u.displayName, u.kind.rawValue, u.orgID, u.birthYear, u.active,
        ])
      }
      let add = try db.cachedStatement(
        sql: "INSERT OR IGNORE INTO runtime_directory_links (parent_id, student_id) VALUES (?, ?)")
      for l in b.linksAdded { try add.execute(arguments: [l.parentID, l.studentID]) }
      let remove = try db.cachedStatement(
        sql: "DELETE FROM runtime_directory_links WHERE parent_id = ? AND student_id = ?")
      for l in b.linksRemoved { try remove.execute(arguments: [l.parentID, l.studentID]) }
      let session = try db.cachedStatement(
        sql: "INSERT OR REPLACE INTO runtime_directory_sessions (id, revoked_at) VALUES (?, ?)")
      for (id, time) in b.sessions {
        try session.execute(arguments: [id, time.timeIntervalSince1970])
      }
      if let through {
        try db.cachedStatement(
          sql: """
            INSERT INTO runtime_directory_cursor (id, sequence) VALUES (1, ?)
            ON CONFLICT (id) DO UPDATE SET sequence = max(sequence, excluded.sequence)
            """
        ).execute(arguments: [through])
      }
      return true
    }
  }

  private static let userColumns =
    "id, external_id, display_name, kind, org_id, birth_year, active"

  private static func user(_ row: Row) -> DirectoryUser {
    DirectoryUser(
      id: row["id"], externalID: row["external_id"], displayName: row["display_name"],
      kind: Smartschool_Identity_V1_UserKind(rawValue: row["kind"]) ?? .unspecified,
      orgID: row["org_id"], birthYear: row["birth_year"], active: row["active"])
  }

  /// See ``ServiceStorage/directoryUser(id:)``.
  public func directoryUser(id: String) async throws -> DirectoryUser? {
    try await read { db in
      try Row.fetchOne(
        db.cachedStatement(
          sql: "SELECT \(Store.userColumns) FROM runtime_directory_users WHERE id = ?"),
        arguments: [id]
      ).map(Store.user)
    }
  }

  /// See ``ServiceStorage/directoryUser(externalID:)``.
  public func directoryUser(externalID: String) async throws -> DirectoryUser? {
    try await read { db in try Store.directoryUser(db, externalID: externalID) }
  }

  /// See ``ServiceStorage/directoryUsers(externalIDs:)``: one lookup of the index per id, in
  /// one read transaction.
  public func directoryUsers(externalIDs: [String]) async throws -> [String: DirectoryUser] {
    try await read { db in
      var out: [String: DirectoryUser] = [:]
      for id in externalIDs {
        if let user = try Store.directoryUser(db, externalID: id) { out[id] = user }
      }
      return out
    }
  }

  private static func directoryUser(_ db: Database, externalID: String) throws
    -> DirectoryUser?
  {
    try Row.fetchOne(
      db.cachedStatement(
        sql: """
          SELECT \(Store.userColumns) FROM runtime_directory_users WHERE external_id = ?
          ORDER BY active DESC LIMIT 1
          """),
      arguments: [externalID]
    ).map(Store.user)
  }

  /// See ``ServiceStorage/directoryUsers(under:kind:)``.
  public func directoryUsers(under path: OrgPath, kind: Smartschool_Identity_V1_UserKind)
    async throws -> [DirectoryUser]
  {
    let range = path.prefixRange
    return try await scan { db in
      try Row.fetchAll(
        db.cachedStatement(
          sql: """
            SELECT u.id, u.external_id, u.display_name, u.kind, u.org_id, u.birth_year, u.active
            FROM runtime_directory_orgs o
            JOIN runtime_directory_users u ON u.org_id = o.id AND u.kind = ?
            WHERE o.path >= ? AND o.path < ? AND u.active
            ORDER BY u.external_id
            """),
        arguments: [kind.rawValue, range.lower, range.upper]
      ).map(Store.user)
    }
  }

  /// See ``ServiceStorage/directoryChildren(ofParent:)``.
  public func directoryChildren(ofParent parentID: String) async throws -> Set<String> {
    try await read { db in
      Set(
        try String.fetchAll(
          db.cachedStatement(
            sql: "SELECT student_id FROM runtime_directory_links WHERE parent_id = ?"),
          arguments: [parentID]))
    }
  }

  /// See ``ServiceStorage/forgetDirectorySessions(revokedBefore:)``.
  public func forgetDirectorySessions(revokedBefore date: Date) async throws {
    try await write { db in
      try db.execute(
        sql: "DELETE FROM runtime_directory_sessions WHERE revoked_at <= ?",
        arguments: [date.timeIntervalSince1970])
    }
  }

  /// Runs `body`: one process owns a SQLite store, so there is nobody to exclude.
  public func exclusively<T: Sendable>(_ name: String, _ body: @Sendable () async throws -> T)
    async throws -> T
  {
    try await body()
  }

  /// Whether a read succeeds.
  public func ping() async -> Bool {
    (try? await read { db in try Int.fetchOne(db, sql: "SELECT 1") }) != nil
  }

  /// Closes the pool's connections.
  public func close() async {
    try? pool.close()
  }
}

/// Why a store could not be opened.
public enum StoreOpenError: Error, CustomStringConvertible {
  /// The file carries migrations this binary does not know.
  case newerSchema(String)
  /// ``Store/watch(_:)`` was asked for tables whose changes it cannot see.
  case unwatchable(String)

  public var description: String {
    switch self {
    case .newerSchema(let m), .unwatchable(let m): m
    }
  }
}

/// A SQLite statement over many rows at once: `head VALUES (?, …), (?, …) … tail`, up to 64
/// rows a statement. A bulk write's rows go through it instead of one statement a row:
/// binding, stepping and resetting a statement cost more than the row it writes. The values
/// are bound with SQLite's C API (``SQLiteRowBinder``): GRDB's `StatementArguments` turn each
/// value into a `DatabaseValue` through generic code first, which took as long as SQLite's
/// own work on the rows. The statements still run through GRDB, so its transaction observers
/// (``TableVersion``) see them.
public struct MultiRowStatement: Sendable {
  /// Rows a full statement carries.
  public let rowsPerStatement: Int
  /// The SQL of a statement of `n` rows, at index `n`.
  private let sql: [String]
  private let columns: Int

  /// `head` is the statement before `VALUES` (`INSERT INTO t (a, b)`), `tail` what follows
  /// the rows (`ON CONFLICT … DO …`, `RETURNING …`).
  public init(_ head: String, columns: Int, _ tail: String = "", rowsPerStatement: Int = 64) {
    let row = "(" + Array(repeating: "?", count: columns).joined(separator: ", ") + ")"
    self.rowsPerStatement = rowsPerStatement
    self.columns = columns
    sql = (0...rowsPerStatement).map { n in
      head + " VALUES " + Array(repeating: row, count: n).joined(separator: ", ") + " " + tail
    }
  }

  /// Runs the statement over rows `0..<count` in order: `bind(i, &binder)` binds row `i`'s
  /// values (one per column, in order), and `returned`, if given, gets each row the
  /// statements return.
  public func run(
    _ db: Database, count: Int,
    bind: (Int, inout SQLiteRowBinder) throws -> Void,
    returned: ((Row) throws -> Void)? = nil
  ) throws {
    var start = 0
    while start < count {
      let end = min(start + rowsPerStatement, count)
      let statement = try db.cachedStatement(sql: sql[end - start])
      // Resets the statement, clears its bindings and marks its (empty) arguments as bound,
      // so that GRDB runs it with the values bound below.
      statement.setUncheckedArguments(StatementArguments())
      var binder = SQLiteRowBinder(statement.sqliteStatement)
      for i in start..<end { try bind(i, &binder) }
      guard binder.failure == SQLITE_OK, binder.index == Int32((end - start) * columns) else {
        throw ServiceError.internalError(
          "a multi-row statement was bound \(binder.index) values (code \(binder.failure))")
      }
      if let returned {
        let rows = try Row.fetchCursor(statement)
        while let row = try rows.next() { try returned(row) }
      } else {
        try statement.execute()
      }
      start = end
    }
  }
}

/// Binds values to the next parameters of a statement of a ``MultiRowStatement``, in order,
/// with SQLite's C API (text and blobs copied by SQLite).
public struct SQLiteRowBinder {
  private let statement: OpaquePointer
  /// The parameters bound so far.
  public private(set) var index: Int32 = 0
  /// The first failed bind's result code (`SQLITE_OK` while none failed).
  public private(set) var failure: Int32 = SQLITE_OK

  /// SQLite's `SQLITE_TRANSIENT`: the value is copied before the call returns.
  private static let transient = unsafeBitCast(
    OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

  init(_ statement: OpaquePointer) { self.statement = statement }

  private mutating func done(_ code: Int32) {
    if code != SQLITE_OK && failure == SQLITE_OK { failure = code }
  }

  /// Binds an integer.
  public mutating func bind(_ value: Int) {
    index += 1
    done(sqlite3_bind_int64(statement, index, Int64(value)))
  }

  /// Binds an integer.
  public mutating func bind(_ value: Int64) {
    index += 1
    done(sqlite3_bind_int64(statement, index, value))
  }

  /// Binds a real.
  public mutating func bind(_ value: Double) {
    index += 1
    done(sqlite3_bind_double(statement, index, value))
  }

  /// Binds a text (UTF-8).
  public mutating func bind(_ value: String) {
    index += 1
    // "" needs a pointer of its own: NULL would bind NULL.
    if value.isEmpty { return done(sqlite3_bind_text(statement, index, "", 0, Self.transient)) }
    var text = value
    let code = text.withUTF8 { bytes in
      bytes.withMemoryRebound(to: CChar.self) { chars in
        sqlite3_bind_text(statement, index, chars.baseAddress, Int32(chars.count), Self.transient)
      }
    }
    done(code)
  }

  /// Binds a text, or NULL.
  public mutating func bind(_ value: String?) {
    if let value { bind(value) } else { bindNull() }
  }

  /// Binds a blob, or NULL.
  public mutating func bind(_ value: Data?) {
    guard let value else { return bindNull() }
    index += 1
    if value.isEmpty {
      done(sqlite3_bind_zeroblob(statement, index, 0))
      return
    }
    let code = value.withUnsafeBytes { bytes in
      sqlite3_bind_blob(statement, index, bytes.baseAddress, Int32(bytes.count), Self.transient)
    }
    done(code)
  }

  /// Binds NULL.
  public mutating func bindNull() {
    index += 1
    done(sqlite3_bind_null(statement, index))
  }
}

/// One change-feed event as a store writes it: the entity's kind, id and natural key, the
/// operation, when, where in the org tree, and for an upsert the entity as it now is
/// (serialized, with its type URL).
public struct ChangeEvent: Sendable {
  /// The entity kind, for example "lesson".
  public var entity: String
  /// The entity's id.
  public var id: String
  /// The entity's natural key.
  public var naturalKey: String
  /// The operation's raw value (``Smartschool_Common_V1_ChangeOp``).
  public var op: Int
  /// Seconds since 1970.
  public var time: Double
  /// The entity's org path (the feed's scope filter).
  public var orgPath: String
  /// The payload's type URL, nil without a payload.
  public var payloadType: String?
  /// The serialized payload, nil without one.
  public var payload: Data?

  /// Serializes `payload` (nil for a delete, which carries its natural key only).
  public init(
    entity: String, id: String, naturalKey: String, op: Smartschool_Common_V1_ChangeOp,
    orgPath: String, payload: (any SwiftProtobuf.Message)? = nil, time: Date = Date()
  ) throws {
    self.entity = entity
    self.id = id
    self.naturalKey = naturalKey
    self.op = op.rawValue
    self.time = time.timeIntervalSince1970
    self.orgPath = orgPath
    if let payload {
      payloadType = "type.googleapis.com/" + type(of: payload).protoMessageName
      self.payload = try payload.serializedData()
    }
  }
}

/// The change feed every service keeps: a monotonic sequence of upsert/delete events written
/// in the same transaction as the change itself, so the feed never misses or invents one.
public enum ChangeFeed {
  /// Records an event inside the current write transaction. For an upsert, `payload` is the
  /// entity as it now is; a delete carries its natural key.
  public static func record(
    _ db: Database, entity: String, id: String, naturalKey: String,
    op: Smartschool_Common_V1_ChangeOp, orgPath: String,
    payload: (any SwiftProtobuf.Message)? = nil, time: Date = Date()
  ) throws {
    try record(
      db,
      events: [
        ChangeEvent(
          entity: entity, id: id, naturalKey: naturalKey, op: op, orgPath: orgPath,
          payload: payload, time: time)
      ])
  }

  /// The feed's multi-row INSERT.
  private static let insert = MultiRowStatement(
    "INSERT INTO runtime_changes "
      + "(entity, entity_id, natural_key, op, time, org_path, payload_type, payload)",
    columns: 8)

  /// Records `events` in order inside the current write transaction: packed in blocks from
  /// ``ChangeBlock/threshold`` of them (see ChangeBlocks.swift).
  public static func record(_ db: Database, events: [ChangeEvent]) throws {
    if events.count >= ChangeBlock.threshold {
      try record(db, blocks: ChangeBlock.pack(events))
      return
    }
    try insert.run(db, count: events.count) { i, row in
      let e = events[i]
      row.bind(e.entity)
      row.bind(e.id)
      row.bind(e.naturalKey)
      row.bind(e.op)
      row.bind(e.time)
      row.bind(e.orgPath)
      row.bind(e.payloadType)
      row.bind(e.payload)
    }
  }

  /// Records blocks of events in order inside the current write transaction, numbered on from
  /// the newest event (SQLite has one writer: nothing else takes a number meanwhile).
  static func record(_ db: Database, blocks: [ChangeBlock.Packed]) throws {
    // AUTOINCREMENT's high-water mark, should it ever pass the newest row.
    let mark = try Int64.fetchOne(
      db.cachedStatement(sql: "SELECT seq FROM sqlite_sequence WHERE name = 'runtime_changes'"))
    var next = max(try head(db), mark ?? 0) + 1
    let statement = try db.cachedStatement(
      sql: """
        INSERT INTO runtime_changes (sequence, first_sequence, entity, entity_id, natural_key,
          op, time, org_path, payload_type, payload)
        VALUES (?, ?, ?, '', '', 0, ?, ?, NULL, ?)
        """)
    for b in blocks {
      let last = next + Int64(b.count) - 1
      try statement.execute(arguments: [last, next, b.entities, b.time, b.scope, b.body])
      next = last + 1
    }
  }

  /// The events after `after`, at most `limit`, limited to entities under one of `scopes`
  /// (`nil` means no limit, an empty list means nothing). Events of the entity kinds in
  /// `unscoped` are listed whatever the scope (for example identity's session revocations,
  /// which every verifying service needs). Returns the events and whether more follow.
  public static func list(
    _ db: Database, after: Int64, limit: Int, scopes: [OrgPath]?, unscoped: [String] = []
  ) throws -> (changes: [Smartschool_Common_V1_Change], hasMore: Bool) {
    guard let filter = FeedFilter(scopes: scopes, unscoped: unscoped) else { return ([], false) }
    var sql = """
      SELECT sequence, first_sequence, entity, entity_id, natural_key, op, time, org_path,
        payload_type, CASE WHEN first_sequence IS NULL THEN payload END AS payload
      FROM runtime_changes WHERE sequence > ?
      """
    var args: [any DatabaseValueConvertible] = []
    if let scopes = filter.scopes {
      // An event's own row as before; a block's row when it may hold an admitted event: one
      // of the kinds, or its events' common path under a scope or a scope under it.
      let unscoped = filter.unscoped.sorted()
      let byEntity = unscoped.map { _ in "entity = ?" }
      let byScope = scopes.map { _ in "substr(org_path, 1, ?) = ?" }
      let blockByEntity = unscoped.map { _ in "instr(entity, ?) > 0" }
      let blockByScope = scopes.map { _ in "substr(?, 1, length(org_path)) = org_path" }
      sql += " AND ((first_sequence IS NULL AND ("
        + (byEntity + byScope).joined(separator: " OR ") + ")) OR (first_sequence IS NOT NULL AND ("
        + (blockByEntity + byScope + blockByScope).joined(separator: " OR ") + ")))"
      for e in unscoped { args.append(e) }
      for s in scopes {
        args.append(s.unicodeScalars.count)
        args.append(s)
      }
      for e in unscoped { args.append("," + e + ",") }
      for s in scopes {
        args.append(s.unicodeScalars.count)
        args.append(s)
      }
      for s in scopes { args.append(s) }
    }
    sql += " ORDER BY sequence LIMIT ?"
    // Cached: the feed is polled all the time, and the SQL varies only with the number of the
    // caller's scopes (one statement per count, a handful at most).
    let statement = try db.cachedStatement(sql: sql)
    var listing = FeedListing(after: after, limit: limit, filter: filter)
    var cursor = after
    // Rows until the page has one event more than it holds, or the feed ends: a block's row
    // may give fewer events than one (or none the caller may see).
    while true {
      var arguments: [any DatabaseValueConvertible] = [cursor]
      arguments += args
      arguments.append(limit + 1)
      let rows = try Row.fetchAll(statement, arguments: StatementArguments(arguments))
      var bodies: [Int64: Data] = [:]
      for (i, row) in rows.enumerated() {
        if let first: Int64 = row["first_sequence"] {
          let last: Int64 = row["sequence"]
          if bodies[last] == nil {
            // This block's body and those of the next blocks the page may reach, in one read.
            let ahead = rows[i...].lazy.filter { $0["first_sequence"] != nil }
              .prefix(listing.blocksWanted).map { $0["sequence"] as Int64 }
            let bodyRows = try Row.fetchAll(
              db.cachedStatement(
                sql: """
                  SELECT sequence, payload FROM runtime_changes
                  WHERE sequence BETWEEN ? AND ? AND first_sequence IS NOT NULL
                  """),
              arguments: [last, ahead.last ?? last])
            for b in bodyRows { bodies[b["sequence"]] = b["payload"] }
          }
          try listing.addBlock(bodies[last] ?? Data(), first: first, last: last)
        } else {
          listing.add(change(row))
        }
        if listing.full { break }
      }
      guard !listing.full, rows.count == limit + 1, let last = rows.last else { break }
      cursor = last["sequence"]
    }
    return listing.result
  }

  /// The event of its own feed row.
  private static func change(_ row: Row) -> Smartschool_Common_V1_Change {
    var c = Smartschool_Common_V1_Change()
    c.sequence = row["sequence"]
    c.entity = row["entity"]
    c.id = row["entity_id"]
    c.naturalKey = row["natural_key"]
    c.op = Smartschool_Common_V1_ChangeOp(rawValue: row["op"]) ?? .unspecified
    c.time = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: row["time"]))
    c.orgPath = row["org_path"]
    if let type: String = row["payload_type"], let bytes: Data = row["payload"] {
      c.payload = Google_Protobuf_Any()
      c.payload.typeURL = type
      c.payload.value = bytes
    }
    return c
  }

  /// The sequence of the newest event (0 for an empty feed).
  public static func head(_ db: Database) throws -> Int64 {
    try Int64.fetchOne(
      db.cachedStatement(sql: "SELECT COALESCE(MAX(sequence), 0) FROM runtime_changes")) ?? 0
  }
}

/// Random identifiers for entities: 20 lower-case hex characters (80 bits).
public enum EntityID {
  private static let digits = Array("0123456789abcdef".utf8)

  /// Random bytes from BoringSSL's generator (seeded by the system's), drawn 4 KiB at a time:
  /// an id takes ten. Two system random numbers an id (two getrandom calls) were a quarter of
  /// a bulk user import's planning.
  private static let pool = Mutex(Pool())

  private struct Pool {
    var bytes: [UInt8] = []
    var next = 0
  }

  /// A new random id.
  public static func make() -> String {
    let (high, low): (UInt64, UInt16) = pool.withLock { pool in
      if pool.next + 10 > pool.bytes.count {
        pool.bytes = SymmetricKey(size: SymmetricKeySize(bitCount: 4096 * 8)).withUnsafeBytes {
          Array($0)
        }
        pool.next = 0
      }
      defer { pool.next += 10 }
      var high: UInt64 = 0
      for i in 0..<8 { high = high << 8 | UInt64(pool.bytes[pool.next + i]) }
      return (high, UInt16(pool.bytes[pool.next + 8]) << 8 | UInt16(pool.bytes[pool.next + 9]))
    }
    return String(unsafeUninitializedCapacity: 20) { buffer in
      for i in 0..<16 { buffer[i] = digits[Int(truncatingIfNeeded: high >> (60 - 4 * i)) & 15] }
      for i in 0..<4 { buffer[16 + i] = digits[Int(truncatingIfNeeded: low >> (12 - 4 * i)) & 15] }
      return 20
    }
  }
}

/// The read-only connections behind ``Store/read(_:)``: opened on first need, at most `limit`,
/// each used by one read at a time.
///
/// GRDB's pool hands out its readers under a read-write lock built on a concurrent dispatch
/// queue, with two barrier syncs per read. When both cooperative threads read at once these
/// collide, and a colliding barrier sync parks the thread on a futex and wakes it again: a
/// third of a simple read RPC's CPU under load. Here a connection is taken and returned under
/// a mutex held only for a pop or a push, and the read itself runs on the connection's own
/// uncontended queue.
///
/// The schema is fixed once the store is open (migrations run first), so these connections
/// need not watch for schema changes as GRDB's pool readers do.
final class ReadConnections: Sendable {
  private let path: String
  private let configuration: Configuration
  private let limit: Int
  private struct State {
    var idle: [DatabaseQueue] = []
    var opened = 0
  }
  private let state = Mutex(State())

  /// Connections to `path` opened with `configuration` (read-only), at most `limit` of them.
  init(path: String, configuration: Configuration, limit: Int) {
    self.path = path
    self.configuration = configuration
    self.limit = limit
  }

  /// An idle connection, a newly opened one, or nil when `limit` are in use.
  func checkOut() throws -> DatabaseQueue? {
    enum Take {
      case idle(DatabaseQueue)
      case open
      case none
    }
    let take = state.withLock { s -> Take in
      if let reader = s.idle.popLast() { return .idle(reader) }
      guard s.opened < limit else { return .none }
      s.opened += 1
      return .open
    }
    switch take {
    case .idle(let reader): return reader
    case .none: return nil
    case .open:
      do {
        return try DatabaseQueue(path: path, configuration: configuration)
      } catch {
        state.withLock { $0.opened -= 1 }
        throw error
      }
    }
  }

  /// Returns a connection taken with ``checkOut()``.
  func checkIn(_ reader: DatabaseQueue) {
    state.withLock { $0.idle.append(reader) }
  }
}

/// Checkpoints a store's write-ahead log on a connection and thread of its own, so that no
/// write waits for one.
///
/// SQLite's own checkpoint runs in the commit that takes the log past 1,000 pages: that commit's
/// thread, the one writer, copies the pages into the database file and waits for two `fsync`s
/// (20-75 ms each, measured on this project's machines during a bulk import), and every write
/// queued behind it waits too. Here the writer's commit hook only asks for a checkpoint each
/// 1,000 pages the log grows; a passive one (never blocking the writer or a reader) copies what
/// it can and syncs on another thread, alongside the writes: a county's score import over one
/// stream went from 0.60-0.68 of `sqlite3 .import` to 0.71-1.03 (assessment-bench, A/B).
/// The log starts over once a checkpoint has copied all of it and a write begins; under
/// sustained writes that rarely happens, so at ``inlinePages`` the committing writer runs one
/// itself, as SQLite would (it copies only what the background ones have not). Durability is
/// SQLite's with `synchronous = NORMAL` either way: a commit is in the log, the log is synced
/// before any of it is copied.
final class WALCheckpointer: Sendable {
  /// Pages added to the log that ask for a background checkpoint (SQLite's default period).
  static let requestPages: Int32 = 1_000
  /// Pages in the log at which the committing writer checkpoints itself (64 MB at SQLite's
  /// default 4 KB page): a bound on the log when background checkpoints cannot empty it.
  static let inlinePages: Int32 = 16_000

  private let connection: DatabaseQueue
  private let queue: DispatchQueue
  private struct State {
    /// The log's size (pages) at which the next commit asks for a checkpoint.
    var nextRequest = WALCheckpointer.requestPages
    /// A background checkpoint is queued and has not started.
    var queued = false
    /// Checkpoints run by the background connection and by the writer.
    var background = 0
    var inline = 0
    /// This checkpointer's number in ``WALCheckpointer/registry``.
    var key = 0
  }
  private let state = Mutex(State())

  /// A checkpointer of the database at `path` (a connection of its own, opened here).
  init(path: String, configuration: Configuration) throws {
    self.connection = try DatabaseQueue(path: path, configuration: configuration)
    self.queue = DispatchQueue(label: configuration.label ?? "checkpointer")
  }

  /// Checkpoints run so far: by the background connection, and by the writer itself.
  var counts: (background: Int, inline: Int) {
    state.withLock { ($0.background, $0.inline) }
  }

  /// Makes the writer connection `db` report its commits here instead of checkpointing.
  ///
  /// The hook finds this checkpointer by a number in ``registry`` rather than by a pointer:
  /// the connection may outlive it (whoever holds the pool), and then the hook does what
  /// SQLite's own would.
  func install(on db: Database) {
    let key = Self.registry.withLock { r -> Int in
      r.next += 1
      r.live[r.next] = WeakCheckpointer(target: self)
      return r.next
    }
    state.withLock { $0.key = key }
    sqlite3_wal_hook(db.sqliteConnection, walCommitted, UnsafeMutableRawPointer(bitPattern: key))
  }

  deinit {
    let key = state.withLock { $0.key }
    Self.registry.withLock { _ = $0.live.removeValue(forKey: key) }
  }

  struct WeakCheckpointer {
    weak var target: WALCheckpointer?
  }
  /// The checkpointers installed in this process, by the number their hook was given.
  static let registry = Mutex<(next: Int, live: [Int: WeakCheckpointer])>((0, [:]))

  /// Called on the writer's thread after each commit, with the pages now in the log.
  fileprivate func committed(pages: Int32, writer: OpaquePointer?, schema: UnsafePointer<CChar>?) {
    if pages >= Self.inlinePages {
      let code = sqlite3_wal_checkpoint_v2(writer, schema, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
      state.withLock {
        $0.inline += code == SQLITE_OK ? 1 : 0
        $0.nextRequest = Self.requestPages
      }
      return
    }
    let request = state.withLock { s -> Bool in
      // A smaller log than asked about: it started over.
      if pages + Self.requestPages < s.nextRequest { s.nextRequest = Self.requestPages }
      guard pages >= s.nextRequest else { return false }
      s.nextRequest = pages + Self.requestPages
      guard !s.queued else { return false }
      s.queued = true
      return true
    }
    if request { queue.async { self.checkpoint() } }
  }

  /// One passive checkpoint on the background connection.
  private func checkpoint() {
    state.withLock { $0.queued = false }
    let done = (try? connection.writeWithoutTransaction { db in
      try db.checkpoint(.passive)
      return true
    }) ?? false
    if done { state.withLock { $0.background += 1 } }
  }
}

/// The writer's commit hook (`sqlite3_wal_hook`): hands the log's size to its checkpointer.
private func walCommitted(
  _ context: UnsafeMutableRawPointer?, _ db: OpaquePointer?, _ schema: UnsafePointer<CChar>?,
  _ pages: Int32
) -> Int32 {
  let key = Int(bitPattern: context)
  if let checkpointer = WALCheckpointer.registry.withLock({ $0.live[key]?.target }) {
    checkpointer.committed(pages: pages, writer: db, schema: schema)
  } else if pages >= WALCheckpointer.requestPages {
    sqlite3_wal_checkpoint_v2(db, schema, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
  }
  return SQLITE_OK
}

/// One caller's write waiting in a ``WriteQueue``.
struct GroupedWrite: Sendable {
  /// Runs the caller's body on the writer connection inside the group's transaction (in a
  /// savepoint unless the group has this write alone, the Bool), keeping its value; returns
  /// the body's error, if any.
  let run: @Sendable (Database, Bool) -> (any Error)?
  /// Answers the caller after the transaction ended: with its value, or with `error`.
  let finish: @Sendable ((any Error)?) -> Void
}

/// Where a grouped write's body leaves its value until the transaction commits.
final class WriteSlot<T: Sendable>: Sendable {
  let value = Mutex<T?>(nil)
}

/// The writes waiting for the next transaction of a ``Store`` (group commit).
final class WriteQueue: Sendable {
  /// The most writes in one transaction: a bound on how long the first waits for the last.
  static let groupLimit = 64

  private let state = Mutex<(jobs: [GroupedWrite], draining: Bool)>(([], false))

  /// Queues `job`; true when no drain is running, so the caller must start one.
  func enqueue(_ job: GroupedWrite) -> Bool {
    state.withLock { state in
      state.jobs.append(job)
      if state.draining { return false }
      state.draining = true
      return true
    }
  }

  /// The next group (oldest first), or nil when the queue is empty, which ends the drain.
  func next() -> [GroupedWrite]? {
    state.withLock { state in
      if state.jobs.isEmpty {
        state.draining = false
        return nil
      }
      let count = min(state.jobs.count, Self.groupLimit)
      let group = Array(state.jobs.prefix(count))
      state.jobs.removeFirst(count)
      return group
    }
  }
}
