import GRDB
import Synchronization

/// A counter that moves each time a committed transaction has changed one of a set of tables.
///
/// Made by ``ServiceStorage/watch(_:)``. On SQLite it is registered on the store's one writer
/// connection, so it sees every write the process commits (a SQLite store is written by its
/// service alone). On PostgreSQL it also moves when another replica's write to a watched
/// table is notified (see ``PostgresStore``). A value read from those tables while the counter
/// read `v` is current for as long as the counter still reads `v`.
public final class TableVersion: Sendable {
  private let value = Atomic<UInt64>(0)

  init() {}

  /// The number of committed transactions so far that changed a watched table.
  public var current: UInt64 { value.load(ordering: .acquiring) }

  func advance() { value.add(1, ordering: .releasing) }
}

/// The GRDB transaction observer behind a ``TableVersion``: it notes the first change to a
/// watched table in a transaction and moves the version when that transaction commits.
///
/// GRDB calls it on the writer connection, one transaction at a time, before the write returns
/// to its caller: a caller that has finished a write never finds the old version.
private final class TableChangeObserver: TransactionObserver, Sendable {
  let tables: Set<String>
  let version: TableVersion
  private let changed = Atomic<Bool>(false)

  init(tables: Set<String>, version: TableVersion) {
    self.tables = tables
    self.version = version
  }

  func observes(eventsOfKind eventKind: DatabaseEventKind) -> Bool {
    tables.contains(eventKind.tableName)
  }

  func databaseDidChange() {
    changed.store(true, ordering: .relaxed)
    stopObservingDatabaseChangesUntilNextTransaction()
  }

  func databaseDidChange(with event: DatabaseEvent) {
    changed.store(true, ordering: .relaxed)
    // One change is enough: an import of many rows costs one callback, not one per row.
    stopObservingDatabaseChangesUntilNextTransaction()
  }

  func databaseDidCommit(_ db: Database) {
    if changed.exchange(false, ordering: .relaxed) { version.advance() }
  }

  func databaseDidRollback(_ db: Database) {
    changed.store(false, ordering: .relaxed)
  }
}

extension Store {
  /// A ``TableVersion`` that moves whenever a committed write has changed one of `tables`
  /// (names as in the schema). Watch every table a cached value is read from, joins included.
  ///
  /// Throws ``StoreOpenError/unwatchable(_:)`` for a table that does not exist, is virtual
  /// (full-text search) or is declared `WITHOUT ROWID`: GRDB learns of changed rows from
  /// SQLite's update hook, which such tables do not fire, so a cache over them would never see
  /// its values change.
  public func watch(_ tables: Set<String>) throws -> TableVersion {
    let unwatchable = try pool.read { db in
      try tables.filter { table in
        let plain = try Bool.fetchOne(
          db,
          sql: """
            SELECT type = 'table' AND wr = 0 FROM pragma_table_list
            WHERE schema = 'main' AND name = ?
            """, arguments: [table])
        return plain != true
      }
    }
    guard unwatchable.isEmpty else {
      throw StoreOpenError.unwatchable(
        "cannot watch \(unwatchable.sorted().joined(separator: ", ")) in \(path): no such table,"
          + " a virtual table or WITHOUT ROWID (changes to it are not reported)")
    }
    let version = TableVersion()
    pool.add(
      transactionObserver: TableChangeObserver(tables: tables, version: version),
      extent: .databaseLifetime)
    return version
  }
}

/// Values read from a store, each served from memory until a write changes a table it was read
/// from (its ``TableVersion`` moves).
///
/// For small, hot reads that every call repeats and writes rarely change, such as the caller's
/// own account. A value is kept only if the version did not move while it was read, so a write
/// that commits during the read cannot leave an old value behind. At most `capacity` values are
/// held; when full, one arbitrary entry makes room. A capacity of 0 turns the cache off.
public final class StoreCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
  private struct Entry {
    var version: UInt64
    var value: Value
  }
  private let version: TableVersion
  private let capacity: Int
  private let entries = Mutex<[Key: Entry]>([:])

  /// A cache whose values stay current until `version` moves, holding at most `capacity`.
  public init(version: TableVersion, capacity: Int) {
    self.version = version
    self.capacity = max(0, capacity)
  }

  /// The value for `key`: from memory when it was read at the current version, else from
  /// `read`, whose result is kept (`nil`, for a key that does not exist, is not).
  public func value(for key: Key, read: () async throws -> Value?) async throws -> Value? {
    guard capacity > 0 else { return try await read() }
    let readAt = version.current
    if let hit = entries.withLock({ $0[key] }), hit.version == readAt { return hit.value }
    guard let value = try await read() else { return nil }
    entries.withLock { entries in
      guard version.current == readAt else { return }
      if entries.count >= capacity, entries[key] == nil {
        entries.remove(at: entries.startIndex)
      }
      entries[key] = Entry(version: readAt, value: value)
    }
    return value
  }

  /// The values for `keys` (those that exist): each from memory when it was read at the
  /// current version, the rest from one call of `read` with the keys missing, whose results
  /// are kept as ``value(for:read:)`` keeps one. For a bulk path (an import naming thousands
  /// of keys) that would otherwise read them one round trip at a time.
  public func values(
    for keys: some Sequence<Key>, read: ([Key]) async throws -> [Key: Value]
  ) async throws -> [Key: Value] {
    let wanted = Set(keys)
    guard capacity > 0 else { return try await read(Array(wanted)) }
    let readAt = version.current
    var found: [Key: Value] = [:]
    var missing: [Key] = []
    entries.withLock { entries in
      for key in wanted {
        if let hit = entries[key], hit.version == readAt {
          found[key] = hit.value
        } else {
          missing.append(key)
        }
      }
    }
    guard !missing.isEmpty else { return found }
    let read = try await read(missing)
    entries.withLock { entries in
      guard version.current == readAt else { return }
      for (key, value) in read {
        if entries.count >= capacity, entries[key] == nil {
          entries.remove(at: entries.startIndex)
        }
        entries[key] = Entry(version: readAt, value: value)
      }
    }
    found.merge(read) { _, new in new }
    return found
  }

  /// The number of values held (current or not), for tests and metrics.
  public var count: Int { entries.withLock { $0.count } }
}
