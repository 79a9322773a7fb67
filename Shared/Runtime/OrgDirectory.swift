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

  /// Reads identity's change feed with the service-account token, on another replica when the
  /// one asked has gone away (a read, safe to repeat).
  public func listChanges(after: Int64, pageSize: Int) async throws
    -> Smartschool_Common_V1_ListChangesResponse
  {
    let metadata = try await authorizedMetadata()
    return try await onAnyReplica {
      try await identity.listChanges(
        .with {
          $0.afterSequence = after
          $0.pageSize = Int32(pageSize)
        }, metadata: metadata, options: IdentityLink.callOptions(seconds: 10))
    }
  }
}

/// A local copy of identity's org tree (and, optionally, its users and guardian links), kept
/// current from identity's change feed with a service-account token.
///
/// The copy is persisted in the service's own store, so a service restarted while identity
/// is down still resolves class → school → county paths from the last known tree. Run it as a
/// lifecycle service (it polls the feed), or call ``sync()`` yourself.
///
/// **Province scale.** Orgs are held in memory (a province has tens of thousands of schools
/// and classes; directory-bench measures the cost); users and guardian links (millions) stay
/// in the store's indexed tables and are read on demand through a bounded cache, so a replica
/// starts by loading the tree alone.
///
/// **Replicas.** Each replica follows the feed itself from its own position (its tree in
/// memory sees every change in order, and every replica's verifier hears of revoked
/// sessions). The store applies a page and moves the shared cursor in one transaction that
/// holds the cursor row, writing only the changes past the cursor: a page another replica has
/// applied is skipped and the cursor never moves back. The user cache is keyed to the users'
/// table version, which moves on any replica's write, and a replica that sees the shared
/// cursor move syncs at once rather than at its next poll.
public final class OrgDirectory: Service, Sendable {
  private struct State {
    var byID: [String: Smartschool_Identity_V1_Org] = [:]
    var idByCode: [String: String] = [:]
    var children: [String: Set<String>] = [:]
    var cursor: Int64 = 0
    var lastSync: Date? = nil
  }

  /// What the user cache holds.
  private enum CacheKey: Hashable, Sendable {
    case id(String)
    case externalID(String)
    case children(String)
  }

  private enum Cached: Sendable {
    case user(DirectoryUser)
    case children(Set<String>)
  }

  /// One feed event, decoded once.
  private enum Event: Sendable {
    case org(Smartschool_Identity_V1_Org)
    case user(DirectoryUser)
    case link(DirectoryLink, added: Bool)
    case session(String, Date)
  }

  private let source: any IdentityChangeSource
  private let store: (any ServiceStorage)?
  private let trackUsers: Bool
  private let pollInterval: Duration
  private let state = Mutex(State())
  private let cache: StoreCache<CacheKey, Cached>?
  private let feedVersion: TableVersion?

  /// The tables holding users and guardian links (the user cache's version watches them).
  static let userTables: Set<String> = ["runtime_directory_users", "runtime_directory_links"]

  /// A directory fed by `source`, persisted in `store` (tables `runtime_directory_*`),
  /// polling every `pollInterval` when run as a service. With `trackUsers`, users and guardian
  /// links are kept too (in `store`, which is then required), read through a cache of at most
  /// `userCacheCapacity` entries.
  public init(
    source: any IdentityChangeSource, store: (any ServiceStorage)?, trackUsers: Bool = false,
    pollInterval: Duration = .seconds(2), userCacheCapacity: Int = 50_000
  ) async throws {
    self.source = source
    self.store = store
    self.trackUsers = trackUsers
    self.pollInterval = pollInterval
    guard let store else {
      if trackUsers {
        throw ServiceError.failedPrecondition("a directory that keeps users needs a store")
      }
      self.cache = nil
      self.feedVersion = nil
      return
    }
    self.cache =
      trackUsers
      ? StoreCache(
        version: try await store.watch(OrgDirectory.userTables), capacity: userCacheCapacity)
      : nil
    self.feedVersion = try await store.watch(["runtime_directory_cursor"])
    try await store.exclusively("runtime.directory.upgrade") {
      try await OrgDirectory.upgrade(store)
    }
    // Revocations older than any token's lifetime are forgotten.
    let horizon = Date().addingTimeInterval(-TokenVerifier.revocationMemory)
    let tree = try await store.loadDirectoryTree(revokedAfter: horizon)
    state.withLock { s in
      for bytes in tree.orgs {
        if let org = try? Smartschool_Identity_V1_Org(serializedBytes: bytes) {
          OrgDirectory.apply(&s, org)
        }
      }
      s.cursor = tree.cursor
    }
    try await store.forgetDirectorySessions(revokedBefore: horizon)
    source.sessionsRevoked(tree.sessions)
  }

  /// The feed entity identity records a session revocation as (op delete, id = session id).
  static let sessionEntity = "session"

  private static func revocationTime(_ payload: Data) -> Date {
    Date(timeIntervalSince1970: Double(String(decoding: payload, as: UTF8.self)) ?? 0)
  }

  /// Moves rows of the pre-province form (every entity in `runtime_directory`, loaded whole)
  /// to the indexed tables, 5,000 at a time, each step in its own transaction and idempotent.
  /// Runs once: the moved rows are deleted.
  private static func upgrade(_ store: any ServiceStorage) async throws {
    let legacy = try await store.loadDirectory().rows
    for start in stride(from: 0, to: legacy.count, by: 5000) {
      let chunk = Array(legacy[start..<min(start + 5000, legacy.count)])
      var batch = DirectoryBatch()
      for row in chunk {
        switch row.entity {
        case "org":
          if let org = try? Smartschool_Identity_V1_Org(serializedBytes: row.payload) {
            batch.orgs.append(DirectoryOrgRow(id: org.id, path: org.path, payload: row.payload))
          }
        case "user":
          if let user = OrgDirectory.user(row.payload) { batch.users.append(user) }
        case "guardian_link":
          if let link = OrgDirectory.link(row.id) { batch.linksAdded.append(link) }
        case sessionEntity:
          batch.sessions[row.id] = revocationTime(row.payload)
        default:
          break
        }
      }
      let converted = batch
      _ = try await store.applyDirectory(through: nil) { _ in converted }
      try await store.saveDirectory(
        upserts: [], deletions: chunk.map { ($0.entity, $0.id) }, cursor: nil)
    }
  }

  /// The feed position the copy is current to.
  public var cursor: Int64 { state.withLock { $0.cursor } }

  /// When the last successful sync finished.
  public var lastSync: Date? { state.withLock { $0.lastSync } }

  /// Users and children lists held in the cache now (at most its capacity).
  public var cachedUserCount: Int { cache?.count ?? 0 }

  /// Pulls every change after the cursor and applies it. Throws when identity is
  /// unreachable; the copy stays as it was.
  public func sync() async throws {
    while true {
      let after = cursor
      let page = try await source.listChanges(after: after, pageSize: 1000)
      let events = page.changes.compactMap { c -> (Int64, Event)? in
        OrgDirectory.event(c, trackUsers: trackUsers).map { (c.sequence, $0) }
      }
      if let store, page.lastSequence > after {
        // Only the events past the shared cursor: another replica may have applied some.
        _ = try await store.applyDirectory(through: page.lastSequence) { cursor in
          OrgDirectory.batch(events.filter { $0.0 > cursor }.map(\.1))
        }
      }
      var revoked: [String: Date] = [:]
      state.withLock { s in
        for (_, event) in events {
          switch event {
          case .org(let org): OrgDirectory.apply(&s, org)
          case .session(let id, let time): revoked[id] = time
          case .user, .link: break
          }
        }
        s.cursor = max(s.cursor, page.lastSequence)
        if !page.moreAvailable { s.lastSync = Date() }
      }
      source.sessionsRevoked(revoked)
      if !page.moreAvailable || page.changes.isEmpty { return }
    }
  }

  /// Polls the feed until graceful shutdown; failures are retried at the next tick. A replica
  /// that sees another move the shared cursor syncs within 100 ms instead of waiting.
  public func run() async throws {
    await cancelWhenGracefulShutdown {
      while !Task.isCancelled {
        try? await self.sync()
        let seen = self.feedVersion?.current
        let deadline = ContinuousClock.now + self.pollInterval
        while ContinuousClock.now < deadline, !Task.isCancelled {
          try? await Task.sleep(for: min(.milliseconds(100), self.pollInterval))
          if let version = self.feedVersion, version.current != seen { break }
        }
      }
    }
  }

  private static func user(_ payload: Data) -> DirectoryUser? {
    guard !payload.isEmpty, let u = try? Smartschool_Identity_V1_User(serializedBytes: payload)
    else { return nil }
    return DirectoryUser(
      id: u.id, externalID: u.externalID, displayName: u.displayName, kind: u.kind,
      orgID: u.orgID, birthYear: Int(u.birthYear), active: u.status != .deactivated)
  }

  /// A guardian link from its feed id, "<parent id>:<student id>".
  private static func link(_ id: String) -> DirectoryLink? {
    let parts = id.split(separator: ":").map(String.init)
    guard parts.count == 2 else { return nil }
    return DirectoryLink(parentID: parts[0], studentID: parts[1])
  }

  private static func event(_ c: Smartschool_Common_V1_Change, trackUsers: Bool) -> Event? {
    switch c.entity {
    case "org":
      // Orgs are never deleted in identity (only deactivated); the payload says which.
      guard c.op != .delete, !c.payload.value.isEmpty,
        let org = try? Smartschool_Identity_V1_Org(serializedBytes: c.payload.value)
      else { return nil }
      return .org(org)
    case sessionEntity:
      return .session(c.id, c.time.date)
    case "user" where trackUsers:
      // Users are deactivated, never deleted.
      guard c.op != .delete else { return nil }
      return user(c.payload.value).map { .user($0) }
    case "guardian_link" where trackUsers:
      return link(c.id).map { .link($0, added: c.op != .delete) }
    default:
      return nil
    }
  }

  /// The store's share of `events`, each entity once in its last state.
  private static func batch(_ events: [Event]) -> DirectoryBatch {
    var orgs: [String: DirectoryOrgRow] = [:]
    var users: [String: DirectoryUser] = [:]
    var links: [DirectoryLink: Bool] = [:]
    var batch = DirectoryBatch()
    for event in events {
      switch event {
      case .org(let org):
        if let bytes = try? org.serializedData() {
          orgs[org.id] = DirectoryOrgRow(id: org.id, path: org.path, payload: bytes)
        }
      case .user(let user): users[user.id] = user
      case .link(let link, let added): links[link] = added
      case .session(let id, let time): batch.sessions[id] = time
      }
    }
    batch.orgs = Array(orgs.values)
    batch.users = Array(users.values)
    batch.linksAdded = links.filter(\.value).map(\.key)
    batch.linksRemoved = links.filter { !$0.value }.map(\.key)
    return batch
  }

  private static func apply(_ s: inout State, _ org: Smartschool_Identity_V1_Org) {
    if let old = s.byID[org.id] {
      s.children[old.parentID]?.remove(org.id)
      if old.code != org.code { s.idByCode.removeValue(forKey: old.code) }
    }
    s.byID[org.id] = org
    s.idByCode[org.code] = org.id
    s.children[org.parentID, default: []].insert(org.id)
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

  /// A user by identity id (with `trackUsers`; otherwise nil).
  public func user(id: String) async throws -> DirectoryUser? {
    try await cachedUser(.id(id)) { try await $0.directoryUser(id: id) }
  }

  /// A user by external id (with `trackUsers`; otherwise nil).
  public func user(externalID: String) async throws -> DirectoryUser? {
    try await cachedUser(.externalID(externalID)) {
      try await $0.directoryUser(externalID: externalID)
    }
  }

  /// The users with the given external ids, by external id (those the directory has; with
  /// `trackUsers`, otherwise none): each as ``user(externalID:)`` gives it, the ones not
  /// cached read in one go.
  public func users(externalIDs: some Sequence<String>) async throws -> [String: DirectoryUser]
  {
    guard let cache, let store else { return [:] }
    let found = try await cache.values(for: externalIDs.map { CacheKey.externalID($0) }) {
      keys in
      let ids = keys.compactMap { key -> String? in
        if case .externalID(let id) = key { return id }
        return nil
      }
      var out: [CacheKey: Cached] = [:]
      for (id, user) in try await store.directoryUsers(externalIDs: ids) {
        out[.externalID(id)] = .user(user)
      }
      return out
    }
    var out: [String: DirectoryUser] = [:]
    for case (.externalID(let id), .user(let user)) in found { out[id] = user }
    return out
  }

  private func cachedUser(
    _ key: CacheKey, _ read: (any ServiceStorage) async throws -> DirectoryUser?
  ) async throws -> DirectoryUser? {
    guard let cache, let store else { return nil }
    let found = try await cache.value(for: key) { try await read(store).map { .user($0) } }
    guard case .user(let user)? = found else { return nil }
    return user
  }

  /// Active users of a kind whose home org lies under `path`, by external id (with
  /// `trackUsers`; otherwise none). Read from the store each time (not cached).
  public func users(under path: OrgPath, kind: Smartschool_Identity_V1_UserKind) async throws
    -> [DirectoryUser]
  {
    guard trackUsers, let store else { return [] }
    return try await store.directoryUsers(under: path, kind: kind)
  }

  /// The student ids linked to a parent (with `trackUsers`; otherwise none).
  public func children(ofParent parentID: String) async throws -> Set<String> {
    guard let cache, let store else { return [] }
    guard case .children(let ids)? = try await cache.value(for: .children(parentID), read: {
      .children(try await store.directoryChildren(ofParent: parentID))
    }) else { return [] }
    return ids
  }
}

extension OrgPath {
  /// The bounds of every path this one covers, as text: `[self, upper)` in binary (C)
  /// order. Paths end in "/", so the covered ones sort below the same text ending in "0".
  var prefixRange: (lower: String, upper: String) {
    let text = description
    return (text, String(text.dropLast()) + "0")
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
    migrator.registerMigration("runtime.4.directory-users") { db in
      try db.execute(
        sql: """
          CREATE TABLE runtime_directory_orgs (
            id TEXT PRIMARY KEY, path TEXT NOT NULL, payload BLOB NOT NULL);
          CREATE INDEX runtime_directory_orgs_path ON runtime_directory_orgs (path);
          CREATE TABLE runtime_directory_users (
            id TEXT PRIMARY KEY, external_id TEXT NOT NULL, display_name TEXT NOT NULL,
            kind INTEGER NOT NULL, org_id TEXT NOT NULL, birth_year INTEGER NOT NULL,
            active INTEGER NOT NULL);
          CREATE INDEX runtime_directory_users_external ON runtime_directory_users (external_id);
          CREATE INDEX runtime_directory_users_org ON runtime_directory_users (org_id, kind);
          CREATE TABLE runtime_directory_links (
            parent_id TEXT NOT NULL, student_id TEXT NOT NULL,
            PRIMARY KEY (parent_id, student_id));
          CREATE TABLE runtime_directory_sessions (
            id TEXT PRIMARY KEY, revoked_at REAL NOT NULL);
          """)
    }
  }
}
