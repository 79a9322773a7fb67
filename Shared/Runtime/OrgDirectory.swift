import Foundation
import GRDB
import GRPCCore
import ServiceLifecycle
import SmartSchoolModel
import Synchronization

/// Where an ``OrgDirectory`` reads identity's change feed from.
public protocol IdentityChangeSource: Sendable {
  /// One page of identity's change feed after `after`.
  func listChanges(after: Int64, pageSize: Int) async throws
    -> Smartschool_Common_V1_ListChangesResponse

  /// Told of sessions identity has revoked (session id → when), so their tokens are refused.
  func sessionsRevoked(_ sessions: [String: Date])
}

extension IdentityChangeSource {
  /// Ignores revocations (a source that verifies no tokens).
  public func sessionsRevoked(_ sessions: [String: Date]) {}
}

extension IdentityLink: IdentityChangeSource {
  /// Refuses the revoked sessions' tokens in this link's ``IdentityLink/verifier``.
  public func sessionsRevoked(_ sessions: [String: Date]) {
    verifier.revokeSessions(sessions)
  }

  /// Reads identity's change feed with the service-account token.
  public func listChanges(after: Int64, pageSize: Int) async throws
    -> Smartschool_Common_V1_ListChangesResponse
  {
    try await identity.listChanges(
      .with {
        $0.afterSequence = after
        $0.pageSize = Int32(pageSize)
      }, metadata: try await authorizedMetadata(), options: IdentityLink.callOptions(seconds: 10))
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
}

/// A local copy of identity's org tree (and, optionally, its users and guardian links), kept
/// current from identity's change feed with a service-account token.
///
/// The copy is persisted in the service's own store, so a service restarted while identity
/// is down still resolves class → school → county paths from the last known tree. Run it as a
/// lifecycle service (it polls the feed), or call ``sync()`` yourself.
public final class OrgDirectory: Service, Sendable {
  private struct State {
    var byID: [String: Smartschool_Identity_V1_Org] = [:]
    var idByCode: [String: String] = [:]
    var children: [String: Set<String>] = [:]
    var users: [String: DirectoryUser] = [:]
    var userIDByExternal: [String: String] = [:]
    var childrenOfParent: [String: Set<String>] = [:]
    var cursor: Int64 = 0
    var lastSync: Date? = nil
  }

  private let source: any IdentityChangeSource
  private let store: (any ServiceStorage)?
  private let trackUsers: Bool
  private let pollInterval: Duration
  private let state = Mutex(State())

  /// A directory fed by `source`, persisted in `store` (tables `runtime_directory*`), polling
  /// every `pollInterval` when run as a service. With `trackUsers`, users and guardian links
  /// are kept too.
  public init(
    source: any IdentityChangeSource, store: (any ServiceStorage)?, trackUsers: Bool = false,
    pollInterval: Duration = .seconds(2)
  ) async throws {
    self.source = source
    self.store = store
    self.trackUsers = trackUsers
    self.pollInterval = pollInterval
    if let store {
      let rows = try await store.loadDirectory()
      var revoked: [String: Date] = [:]
      state.withLock { s in
        for row in rows.rows {
          if row.entity == OrgDirectory.sessionEntity {
            revoked[row.id] = OrgDirectory.revocationTime(row.payload)
            continue
          }
          OrgDirectory.apply(
            &s, entity: row.entity, op: .upsert, id: row.id, payload: row.payload,
            trackUsers: trackUsers)
        }
        s.cursor = rows.cursor
      }
      // Revocations older than any token's lifetime are forgotten.
      let horizon = Date().addingTimeInterval(-TokenVerifier.revocationMemory)
      let stale = revoked.filter { $0.value <= horizon }.map(\.key)
      if !stale.isEmpty {
        try await store.saveDirectory(
          upserts: [], deletions: stale.map { (OrgDirectory.sessionEntity, $0) }, cursor: nil)
      }
      source.sessionsRevoked(revoked.filter { $0.value > horizon })
    }
  }

  /// The feed entity identity records a session revocation as (op delete, id = session id).
  static let sessionEntity = "session"

  private static func revocationTime(_ payload: Data) -> Date {
    Date(timeIntervalSince1970: Double(String(decoding: payload, as: UTF8.self)) ?? 0)
  }

  /// The feed position the copy is current to.
  public var cursor: Int64 { state.withLock { $0.cursor } }

  /// When the last successful sync finished.
  public var lastSync: Date? { state.withLock { $0.lastSync } }

  /// Pulls every change after the cursor and applies it. Throws when identity is
  /// unreachable; the copy stays as it was.
  public func sync() async throws {
    while true {
      let after = cursor
      let page = try await source.listChanges(after: after, pageSize: 1000)
      let relevant = page.changes.filter {
        $0.entity == "org" || $0.entity == OrgDirectory.sessionEntity
          || (trackUsers && ($0.entity == "user" || $0.entity == "guardian_link"))
      }
      var revoked: [String: Date] = [:]
      for c in relevant where c.entity == OrgDirectory.sessionEntity {
        revoked[c.id] = c.time.date
      }
      if let store {
        var upserts: [DirectoryRow] = []
        var deletions: [(entity: String, id: String)] = []
        for c in relevant {
          if c.entity == OrgDirectory.sessionEntity {
            let time = Data(String(c.time.date.timeIntervalSince1970).utf8)
            upserts.append(DirectoryRow(entity: c.entity, id: c.id, payload: time))
          } else if c.op == .delete && c.entity == "guardian_link" {
            deletions.append((c.entity, c.id))
          } else {
            upserts.append(DirectoryRow(entity: c.entity, id: c.id, payload: c.payload.value))
          }
        }
        try await store.saveDirectory(
          upserts: upserts, deletions: deletions, cursor: page.lastSequence)
      }
      state.withLock { s in
        for c in relevant {
          OrgDirectory.apply(
            &s, entity: c.entity, op: c.op, id: c.id, payload: c.payload.value,
            trackUsers: trackUsers)
        }
        s.cursor = max(s.cursor, page.lastSequence)
        if !page.moreAvailable { s.lastSync = Date() }
      }
      source.sessionsRevoked(revoked)
      if !page.moreAvailable || page.changes.isEmpty { return }
    }
  }

  /// Polls the feed until graceful shutdown; failures are retried at the next tick.
  public func run() async throws {
    await cancelWhenGracefulShutdown {
      while !Task.isCancelled {
        try? await self.sync()
        try? await Task.sleep(for: self.pollInterval)
      }
    }
  }

  private static func apply(
    _ s: inout State, entity: String, op: Smartschool_Common_V1_ChangeOp, id: String,
    payload: Data, trackUsers: Bool
  ) {
    switch entity {
    case "org":
      // Orgs are never deleted in identity (only deactivated); the payload says which.
      guard op != .delete, !payload.isEmpty,
        let org = try? Smartschool_Identity_V1_Org(serializedBytes: payload)
      else { return }
      if let old = s.byID[org.id] {
        s.children[old.parentID]?.remove(org.id)
        if old.code != org.code { s.idByCode.removeValue(forKey: old.code) }
      }
      s.byID[org.id] = org
      s.idByCode[org.code] = org.id
      s.children[org.parentID, default: []].insert(org.id)
    case "user" where trackUsers:
      guard op != .delete, !payload.isEmpty,
        let u = try? Smartschool_Identity_V1_User(serializedBytes: payload)
      else { return }
      s.users[u.id] = DirectoryUser(
        id: u.id, externalID: u.externalID, displayName: u.displayName, kind: u.kind,
        orgID: u.orgID, birthYear: Int(u.birthYear), active: u.status != .deactivated)
      s.userIDByExternal[u.externalID] = u.id
    case "guardian_link" where trackUsers:
      // id is "<parent id>:<student id>".
      let parts = id.split(separator: ":").map(String.init)
      guard parts.count == 2 else { return }
      if op == .delete {
        s.childrenOfParent[parts[0]]?.remove(parts[1])
      } else {
        s.childrenOfParent[parts[0], default: []].insert(parts[1])
      }
    default:
      break
    }
  }

  /// The org with this id.
  public func org(id: String) -> Smartschool_Identity_V1_Org? {
    state.withLock { $0.byID[id] }
  }

  /// The org with this code.
  public func org(code: String) -> Smartschool_Identity_V1_Org? {
    state.withLock { s in s.idByCode[code].flatMap { s.byID[$0] } }
  }

  /// The direct children of an org (active ones unless `includeInactive`), by code.
  public func children(of id: String, includeInactive: Bool = false)
    -> [Smartschool_Identity_V1_Org]
  {
    state.withLock { s in
      (s.children[id] ?? []).compactMap { s.byID[$0] }
        .filter { includeInactive || $0.active }
        .sorted { $0.code < $1.code }
    }
  }

  /// Every org under `path` (inclusive), optionally of one kind, by code.
  public func orgs(under path: OrgPath, kind: Smartschool_Common_V1_OrgKind? = nil)
    -> [Smartschool_Identity_V1_Org]
  {
    state.withLock { s in
      s.byID.values.filter { o in
        path.covers(o.path) && (kind == nil || o.kind == kind!) && o.active
      }.sorted { $0.code < $1.code }
    }
  }

  /// The ancestor of `id` (or the org itself) of the given kind.
  public func ancestor(of id: String, kind: Smartschool_Common_V1_OrgKind)
    -> Smartschool_Identity_V1_Org?
  {
    state.withLock { s in
      var current = s.byID[id]
      while let o = current {
        if o.kind == kind { return o }
        current = o.parentID.isEmpty ? nil : s.byID[o.parentID]
      }
      return nil
    }
  }

  /// A user by identity id (with `trackUsers`).
  public func user(id: String) -> DirectoryUser? { state.withLock { $0.users[id] } }

  /// A user by external id (with `trackUsers`).
  public func user(externalID: String) -> DirectoryUser? {
    state.withLock { s in s.userIDByExternal[externalID].flatMap { s.users[$0] } }
  }

  /// Users of a kind whose home org lies under `path` (with `trackUsers`).
  public func users(under path: OrgPath, kind: Smartschool_Identity_V1_UserKind)
    -> [DirectoryUser]
  {
    state.withLock { s in
      s.users.values.filter { u in
        u.kind == kind && u.active && (s.byID[u.orgID].map { path.covers($0.path) } ?? false)
      }.sorted { $0.externalID < $1.externalID }
    }
  }

  /// The student ids linked to a parent (with `trackUsers`).
  public func children(ofParent parentID: String) -> Set<String> {
    state.withLock { $0.childrenOfParent[parentID] ?? [] }
  }
}

extension Store {
  static func registerDirectoryMigrations(_ migrator: inout DatabaseMigrator) {
    migrator.registerMigration("runtime.2.directory") { db in
      try db.execute(
        sql: """
          CREATE TABLE runtime_directory (
            entity TEXT NOT NULL,
            id TEXT NOT NULL,
            payload BLOB NOT NULL,
            PRIMARY KEY (entity, id)
          );
          CREATE TABLE runtime_directory_cursor (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            sequence INTEGER NOT NULL
          );
          """)
    }
  }
}
