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

/// A user as the directory knows it (from identity's feed).
public struct DirectoryUser: Sendable, Hashable {
  /// Identity's user id.
  public var id: String
  /// The natural key.
  public var externalID: String
  /// Display name.
  public var displayName: String
  /// Kind.
  public var kind: Smartschool_Identity_V1_UserKind
  /// Home org id.
  public var orgID: String
  /// Birth year (teachers), 0 when unknown.
  public var birthYear: Int
  /// False once deactivated.
  public var active: Bool

  /// A user with these fields.
  public init(
    id: String, externalID: String, displayName: String, kind: Smartschool_Identity_V1_UserKind,
    orgID: String, birthYear: Int, active: Bool
  ) {
    self.id = id
    self.externalID = externalID
    self.displayName = displayName
    self.kind = kind
    self.orgID = orgID
    self.birthYear = birthYear
    self.active = active
  }
}

/// An org as the directory persists it: the path (indexed, for users under a path) and the
/// whole org's protobuf bytes.
public struct DirectoryOrgRow: Sendable, Hashable {
  /// Identity's org id.
  public var id: String
  /// The org's path, "/<root id>/…/<id>/".
  public var path: String
  /// The `Smartschool_Identity_V1_Org` bytes.
  public var payload: Data

  /// An org row.
  public init(id: String, path: String, payload: Data) {
    self.id = id
    self.path = path
    self.payload = payload
  }
}

/// A guardian link: a parent and one of their children.
public struct DirectoryLink: Sendable, Hashable {
  /// The parent's user id.
  public var parentID: String
  /// The student's user id.
  public var studentID: String

  /// The link from `parentID` to `studentID`.
  public init(parentID: String, studentID: String) {
    self.parentID = parentID
    self.studentID = studentID
  }
}

/// Changes to the directory's persisted copy, written in one transaction (see
/// ``ServiceStorage/applyDirectory(through:_:)``). Each entity appears at most once: the last
/// state a page gave it.
public struct DirectoryBatch: Sendable {
  /// Orgs to insert or replace.
  public var orgs: [DirectoryOrgRow] = []
  /// Users to insert or replace.
  public var users: [DirectoryUser] = []
  /// Guardian links to add.
  public var linksAdded: [DirectoryLink] = []
  /// Guardian links to remove.
  public var linksRemoved: [DirectoryLink] = []
  /// Revoked sessions (session id → when).
  public var sessions: [String: Date] = [:]

  /// An empty batch.
  public init() {}

  /// Whether the batch changes nothing.
  public var isEmpty: Bool {
    orgs.isEmpty && users.isEmpty && linksAdded.isEmpty && linksRemoved.isEmpty
      && sessions.isEmpty
  }
}

/// What a directory replica loads to start: the tree, recent revocations and the cursor.
public struct DirectoryTree: Sendable {
  /// Every org's protobuf bytes.
  public var orgs: [Data]
  /// Sessions revoked recently (session id → when).
  public var sessions: [String: Date]
  /// The feed position the persisted copy is current to.
  public var cursor: Int64

  /// A snapshot of these parts.
  public init(orgs: [Data], sessions: [String: Date], cursor: Int64) {
    self.orgs = orgs
    self.sessions = sessions
    self.cursor = cursor
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
  /// Every org-directory row in the pre-province form (one `runtime_directory` table) and the
  /// directory's feed cursor; ``OrgDirectory`` moves such rows to the indexed tables once.
  func loadDirectory() async throws -> (rows: [DirectoryRow], cursor: Int64)
  /// In one transaction: stores `upserts`, removes `deletions` (entity, id) of the
  /// pre-province form and moves the directory's cursor to `cursor` (never backwards, so
  /// replicas sharing one database cannot rewind it).
  func saveDirectory(upserts: [DirectoryRow], deletions: [(entity: String, id: String)], cursor: Int64?)
    async throws
  /// The org directory's persisted orgs (protobuf bytes), the sessions revoked after
  /// `revokedAfter` and the directory's feed cursor, read in one snapshot: what a replica holds
  /// in memory to start (users stay in the store, see ``OrgDirectory``).
  func loadDirectoryTree(revokedAfter: Date) async throws -> DirectoryTree
  /// In one transaction that holds the directory's cursor row: reads the cursor `c`; when
  /// `through` is set and `c >= through` (another replica has applied these changes), does
  /// nothing and returns false; otherwise writes `batch(c)` (the changes after `c`) and moves
  /// the cursor to `through`, never backwards, and returns true. With `through` nil the batch
  /// is written and the cursor left alone (the one-time upgrade of the old persisted form).
  func applyDirectory(
    through: Int64?, _ batch: @escaping @Sendable (_ cursor: Int64) throws -> DirectoryBatch
  ) async throws -> Bool
  /// The directory's user with identity id `id`.
  func directoryUser(id: String) async throws -> DirectoryUser?
  /// The directory's user with external id `externalID`.
  func directoryUser(externalID: String) async throws -> DirectoryUser?
  /// The directory's users with the given external ids, by external id (those it has): for
  /// each, the user ``directoryUser(externalID:)`` gives, all in one read.
  func directoryUsers(externalIDs: [String]) async throws -> [String: DirectoryUser]
  /// The directory's active users of `kind` whose home org's path lies under `path`, by
  /// external id.
  func directoryUsers(under path: OrgPath, kind: Smartschool_Identity_V1_UserKind)
    async throws -> [DirectoryUser]
  /// The student ids guardian-linked to `parentID` in the directory.
  func directoryChildren(ofParent parentID: String) async throws -> Set<String>
  /// Forgets persisted session revocations made at or before `date`.
  func forgetDirectorySessions(revokedBefore date: Date) async throws
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
