import Foundation
import SmartSchoolModel

/// Which database a service's store runs on.
public enum StorageBackend: String, Sendable, CaseIterable {
  /// One SQLite file under `--data-dir`, owned by one process: the embedded default.
  case sqlite
  /// A PostgreSQL database named by `--database-url`, shared by any number of replicas.
  case postgresql
}

/// One row of the org directory's persisted copy (see ``OrgDirectory``).
public struct DirectoryRow: Sendable, Hashable {
  /// Feed entity kind: "org", "user", "guardian_link" or "session".
  public var entity: String
  /// Entity id.
  public var id: String
  /// The entity's protobuf bytes (for a session, its revocation time as text).
  public var payload: Data

  /// A row of `entity` `id` holding `payload`.
  public init(entity: String, id: String, payload: Data) {
    self.entity = entity
    self.id = id
    self.payload = payload
  }
}

/// What the Runtime needs of a service's store, whichever database holds it: the change
/// feed's head, size for metrics, table versions for caches and the org directory's
/// persistence. Code that both backends share uses this protocol only, never a GRDB or
/// PostgresNIO type; each service's own SQL sits behind that service's store protocol, with
/// one implementation per backend.
public protocol ServiceStorage: AnyObject, Sendable {
  /// The database behind this store.
  var backend: StorageBackend { get }
  /// Where the store lives, for logs: a file path or a URL without its password.
  var location: String { get }
  /// Bytes the store takes on disk (the file and its WAL; the PostgreSQL database's size).
  func sizeInBytes() async -> Int64
  /// The sequence of the newest change-feed event (0 for an empty feed).
  func changeFeedHead() async throws -> Int64
  /// The change-feed events after `after`, at most `limit`, limited to entities under one of
  /// `scopes` (`nil`: no limit; empty: nothing); events of the `unscoped` entity kinds are
  /// listed whatever the scope. Returns the events and whether more follow.
  func listChanges(after: Int64, limit: Int, scopes: [OrgPath]?, unscoped: [String])
    async throws -> (changes: [Smartschool_Common_V1_Change], hasMore: Bool)
  /// A ``TableVersion`` that moves whenever a committed write, by this process or (on
  /// PostgreSQL) by any other replica, has changed one of `tables`.
  func watch(_ tables: Set<String>) async throws -> TableVersion
  /// Every persisted org-directory row and the directory's feed cursor.
  func loadDirectory() async throws -> (rows: [DirectoryRow], cursor: Int64)
  /// In one transaction: stores `upserts`, removes `deletions` (entity, id) and moves the
  /// directory's cursor to `cursor` (never backwards, so replicas sharing one database cannot
  /// rewind it).
  func saveDirectory(upserts: [DirectoryRow], deletions: [(entity: String, id: String)], cursor: Int64?)
    async throws
  /// Runs `body` while holding the lock `name` across every process on this store: replicas
  /// starting at once on an empty database take turns at one-time work (the first signing
  /// key, the bootstrap admin), so it is done once. On SQLite, where one process owns the
  /// store, it just runs `body`.
  func exclusively<T: Sendable>(_ name: String, _ body: @Sendable () async throws -> T)
    async throws -> T
  /// Whether the database answers now (health).
  func ping() async -> Bool
  /// Releases connections; the store is unusable afterwards.
  func close() async
}
