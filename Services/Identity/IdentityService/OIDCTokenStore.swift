import Foundation
import GRDB
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel

/// What an OpenID Connect client was granted: one per code exchange (a user's grant) and one
/// per client_credentials exchange (the client's own). Each grant has a session id of its own,
/// which its access tokens carry as `sid`: revoking the grant revokes that session, so every
/// service refuses its tokens, while the user's browser sign-in and other apps go on.
///
/// A user's grant is an identity session (``IdentityStore`` `createSession`): its refresh
/// tokens rotate exactly as gRPC Refresh's, and a logout, a password change or a
/// deactivation ends it as it ends every session of the user. A client's own grant has no user,
/// hence no identity session: its revocation is recorded here and put on the change feed.
struct OIDCGrant: Sendable, Equatable {
  var sessionID: String
  var clientID: String
  /// The user who signed in; `nil` for a client_credentials grant.
  var userID: String?
  /// The scopes granted, space separated (a refresh may narrow what a token carries, never
  /// what the grant holds).
  var scope: String
  /// The browser sign-in (SSO session) the grant came from, while the grant lives no longer
  /// than it; `nil` for an offline grant (`offline_access`) and for client credentials.
  var parentSessionID: String?
  var createdAt: Date
  var expiresAt: Date
  /// When a client_credentials grant was revoked (a user's grant is revoked as its session).
  var revokedAt: Date?
}

/// What the token, revocation and introspection endpoints need from storage beside
/// identity's sessions.
protocol OIDCGrantStore: Sendable {
  /// Stores a new grant; grants expired for a day are removed meanwhile.
  func addGrant(_ grant: OIDCGrant) async throws
  /// The grant of a session id, or `nil`.
  func grant(sessionID: String) async throws -> OIDCGrant?
  /// Revokes a client_credentials grant and puts the revocation on the change feed as a
  /// session revocation (which every service follows); when it was revoked, or `nil` when it
  /// is unknown, a user's grant, or revoked already.
  func revokeClientGrant(sessionID: String) async throws -> Date?
  /// The sessions of the live grants made in the browser sign-in `parent` (offline grants
  /// have none).
  func grantSessions(madeIn parent: String) async throws -> [String]
  /// The grants of a client that still stand: unexpired, not revoked (a user's grant: its
  /// session live).
  func liveGrants(clientID: String) async throws -> [OIDCGrant]
}

/// How long an expired grant is kept: longer than any access token lives.
private let grantMemory = TokenVerifier.revocationMemory

extension SQLiteOIDCStore: OIDCGrantStore {
  func addGrant(_ grant: OIDCGrant) async throws {
    try await store.write { db in
      try db.execute(
        sql: "DELETE FROM oidc_grants WHERE expires_at < ?",
        arguments: [Date().timeIntervalSince1970 - grantMemory])
      try db.execute(
        sql: """
          INSERT INTO oidc_grants (session_id, client_id, user_id, scope, parent_session_id,
            created_at, expires_at)
          VALUES (?, ?, ?, ?, ?, ?, ?)
          """,
        arguments: [
          grant.sessionID, grant.clientID, grant.userID, grant.scope, grant.parentSessionID,
          grant.createdAt.timeIntervalSince1970, grant.expiresAt.timeIntervalSince1970,
        ])
    }
  }

  private static func grant(_ row: Row) -> OIDCGrant {
    let revoked: Double? = row["revoked_at"]
    return OIDCGrant(
      sessionID: row["session_id"], clientID: row["client_id"], userID: row["user_id"],
      scope: row["scope"], parentSessionID: row["parent_session_id"],
      createdAt: Date(timeIntervalSince1970: row["created_at"]),
      expiresAt: Date(timeIntervalSince1970: row["expires_at"]),
      revokedAt: revoked.map { Date(timeIntervalSince1970: $0) })
  }

  func grant(sessionID: String) async throws -> OIDCGrant? {
    try await store.read { db in
      try Row.fetchOne(
        db, sql: "SELECT * FROM oidc_grants WHERE session_id = ?", arguments: [sessionID]
      ).map(Self.grant)
    }
  }

  func liveGrants(clientID: String) async throws -> [OIDCGrant] {
    try await store.read { db in
      try Row.fetchAll(
        db,
        sql: """
          SELECT g.* FROM oidc_grants g LEFT JOIN sessions s ON s.id = g.session_id
          WHERE g.client_id = ? AND g.expires_at > ? AND g.revoked_at IS NULL
            AND (g.user_id IS NULL OR s.revoked_at IS NULL)
          """, arguments: [clientID, Date().timeIntervalSince1970]
      ).map(Self.grant)
    }
  }

  func revokeClientGrant(sessionID: String) async throws -> Date? {
    try await store.write { db in
      let now = Date()
      try db.execute(
        sql: """
          UPDATE oidc_grants SET revoked_at = ?
          WHERE session_id = ? AND user_id IS NULL AND revoked_at IS NULL
          """, arguments: [now.timeIntervalSince1970, sessionID])
      guard db.changesCount == 1 else { return nil }
      try ChangeFeed.record(
        db, entity: "session", id: sessionID, naturalKey: sessionID, op: .delete, orgPath: "")
      return now
    }
  }

  func grantSessions(madeIn parent: String) async throws -> [String] {
    try await store.read { db in
      try String.fetchAll(
        db,
        sql: """
          SELECT g.session_id FROM oidc_grants g JOIN sessions s ON s.id = g.session_id
          WHERE g.parent_session_id = ? AND s.revoked_at IS NULL
          """, arguments: [parent])
    }
  }
}

extension PostgresOIDCStore: OIDCGrantStore {
  func addGrant(_ grant: OIDCGrant) async throws {
    try await store.write { tx in
      try await tx.execute(
        "DELETE FROM oidc_grants WHERE expires_at < \(Date().timeIntervalSince1970 - grantMemory)")
      try await tx.execute(
        """
        INSERT INTO oidc_grants (session_id, client_id, user_id, scope, parent_session_id,
          created_at, expires_at)
        VALUES (\(grant.sessionID), \(grant.clientID), \(grant.userID), \(grant.scope),
          \(grant.parentSessionID), \(grant.createdAt.timeIntervalSince1970),
          \(grant.expiresAt.timeIntervalSince1970))
        """)
    }
  }

  private static func grant(_ row: PostgresRandomAccessRow) throws -> OIDCGrant {
    OIDCGrant(
      sessionID: try row["session_id"].decode(String.self),
      clientID: try row["client_id"].decode(String.self),
      userID: try row["user_id"].decode(String?.self),
      scope: try row["scope"].decode(String.self),
      parentSessionID: try row["parent_session_id"].decode(String?.self),
      createdAt: Date(timeIntervalSince1970: try row["created_at"].decode(Double.self)),
      expiresAt: Date(timeIntervalSince1970: try row["expires_at"].decode(Double.self)),
      revokedAt: try row["revoked_at"].decode(Double?.self).map {
        Date(timeIntervalSince1970: $0)
      })
  }

  private static let grantColumns = """
    g.session_id, g.client_id, g.user_id, g.scope, g.parent_session_id, g.created_at,
      g.expires_at, g.revoked_at
    """

  func grant(sessionID: String) async throws -> OIDCGrant? {
    try await store.read { tx in
      try await tx.one(
        """
        SELECT \(unescaped: Self.grantColumns) FROM oidc_grants g
        WHERE g.session_id = \(sessionID)
        """
      ).map(Self.grant)
    }
  }

  func liveGrants(clientID: String) async throws -> [OIDCGrant] {
    try await store.read { tx in
      try await tx.query(
        """
        SELECT \(unescaped: Self.grantColumns)
        FROM oidc_grants g LEFT JOIN sessions s ON s.id = g.session_id
        WHERE g.client_id = \(clientID) AND g.expires_at > \(Date().timeIntervalSince1970)
          AND g.revoked_at IS NULL AND (g.user_id IS NULL OR s.revoked_at IS NULL)
        """
      ).map(Self.grant)
    }
  }

  func revokeClientGrant(sessionID: String) async throws -> Date? {
    try await store.write { tx in
      let now = Date()
      // One conditional UPDATE: of two replicas revoking at once, one records the revocation.
      guard
        try await tx.one(
          """
          UPDATE oidc_grants SET revoked_at = \(now.timeIntervalSince1970)
          WHERE session_id = \(sessionID) AND user_id IS NULL AND revoked_at IS NULL
          RETURNING session_id
          """) != nil
      else { return nil }
      try tx.recordChange(
        entity: "session", id: sessionID, naturalKey: sessionID, op: .delete, orgPath: "")
      return now
    }
  }

  func grantSessions(madeIn parent: String) async throws -> [String] {
    try await store.read { tx in
      try await tx.query(
        """
        SELECT g.session_id FROM oidc_grants g JOIN sessions s ON s.id = g.session_id
        WHERE g.parent_session_id = \(parent) AND s.revoked_at IS NULL
        """
      ).map { try $0["session_id"].decode(String.self) }
    }
  }
}

/// The grants table, appended to identity's migrations.
enum OIDCGrantMigrations {
  static func register(_ migrator: inout DatabaseMigrator) {
    migrator.registerMigration("identity.oidc_grants") { db in
      try db.execute(
        sql: """
          CREATE TABLE oidc_grants (
            session_id TEXT PRIMARY KEY,
            client_id TEXT NOT NULL REFERENCES oidc_clients(client_id),
            user_id TEXT REFERENCES users(id),
            scope TEXT NOT NULL,
            parent_session_id TEXT,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            revoked_at REAL
          );
          CREATE INDEX oidc_grants_expiry ON oidc_grants(expires_at);
          CREATE INDEX oidc_grants_parent ON oidc_grants(parent_session_id);
          """)
    }
    // Every replica asks for the grants revoked in the last seconds, every second.
    migrator.registerMigration("identity.oidc_grants_revoked") { db in
      try db.execute(
        sql: """
          CREATE INDEX oidc_grants_revoked ON oidc_grants(revoked_at) WHERE revoked_at IS NOT NULL
          """)
    }
  }

  static let postgres: [PostgresMigration] = [
    PostgresMigration(
      "identity.oidc_grants",
      [
        """
        CREATE TABLE oidc_grants (
          session_id text COLLATE "C" PRIMARY KEY,
          client_id text COLLATE "C" NOT NULL REFERENCES oidc_clients(client_id),
          user_id text COLLATE "C" REFERENCES users(id),
          scope text NOT NULL,
          parent_session_id text COLLATE "C",
          created_at double precision NOT NULL,
          expires_at double precision NOT NULL,
          revoked_at double precision)
        """,
        "CREATE INDEX oidc_grants_expiry ON oidc_grants(expires_at)",
        "CREATE INDEX oidc_grants_parent ON oidc_grants(parent_session_id)",
      ]),
    PostgresMigration(
      "identity.oidc_grants_revoked",
      ["CREATE INDEX oidc_grants_revoked ON oidc_grants(revoked_at) WHERE revoked_at IS NOT NULL"]),
  ]
}
