import Foundation
import GRDB
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel

/// An RSA key that signs ID tokens (RS256). Each belongs to one of identity's Ed25519
/// signing keys (`pairedKeyID`): it is current while that key is current and retires with it,
/// so RotateSigningKey rotates both and a replica adopting a rotated key adopts both.
/// The private key is stored as identity's signing keys are (DER in the store's own table).
struct StoredRSAKey: Sendable, Equatable {
  var id: String
  var pairedKeyID: String
  var privateKey: Data
  var createdAt: Date
}

/// What the OpenID Connect provider needs from storage.
protocol OIDCStore: Sendable {
  /// Every RSA key, oldest first.
  func rsaKeys() async throws -> [StoredRSAKey]
  /// Stores `key` unless its paired key already has one (another replica made it first);
  /// either way returns the key now stored for that pair.
  func addRSAKey(_ key: StoredRSAKey) async throws -> StoredRSAKey

  /// Stores a new client (on the change feed); `secretHash` is `nil` for a public client.
  /// Returns it as stored (with its org's path).
  func insertClient(_ client: OIDCClient, secretHash: String?) async throws -> OIDCClient
  /// A client and its secret's hash (`nil` for a public client), or `nil`.
  func client(id: String) async throws -> StoredOIDCClient?
  /// Replaces the registrable fields of an enabled client (on the change feed); `nil` when
  /// the client is unknown or disabled.
  func updateClient(_ client: OIDCClient) async throws -> OIDCClient?
  /// Disables a client (on the change feed, unless it was disabled already); `nil` when
  /// unknown.
  func disableClient(id: String) async throws -> OIDCClient?
  /// Replaces an enabled confidential client's secret hash; `nil` when the client is unknown,
  /// public or disabled.
  func setClientSecret(id: String, hash: String) async throws -> OIDCClient?
  /// Clients by id after `after`, at most `limit`, whose org lies under one of `scopes`.
  func clients(after: String?, limit: Int, scopes: [OrgPath], includeDisabled: Bool)
    async throws -> [OIDCClient]

  /// Stores a new SSO session.
  func addSSOSession(_ session: SSOSession) async throws
  /// The SSO session of a cookie's hash, or `nil`. Whether it is still valid is the identity
  /// session's to say.
  func ssoSession(hash: String) async throws -> SSOSession?
  /// Stores a new authorization code.
  func addCode(_ code: AuthorizationCode) async throws
  /// Marks the code used and returns it, once: `nil` for an unknown code and for any later
  /// redemption (concurrent ones included), whatever else is wrong with it.
  func redeemCode(hash: String) async throws -> AuthorizationCode?
}

/// A browser's sign-in at identity (the SSO session behind the cookie): it lives as long as
/// the identity session its login opened, so a logout, a password change or a deactivation
/// that ends that session ends it too, on every replica.
struct SSOSession: Sendable, Equatable {
  /// ``Secrets/digest(_:)`` of the cookie's value.
  var hash: String
  var sessionID: String
  var userID: String
  /// When the user entered their password (the ID token's auth_time).
  var authTime: Date
}

/// An authorization code as stored (under the hash of the code itself), bound to its client,
/// redirect URI and PKCE challenge.
struct AuthorizationCode: Sendable, Equatable {
  var hash: String
  var clientID: String
  var userID: String
  var sessionID: String
  var redirectURI: String
  var scope: String
  var nonce: String?
  /// The S256 code challenge, when the request had one.
  var codeChallenge: String?
  var authTime: Date
  var expiresAt: Date
}

/// A client as stored: the client and its secret's hash (`nil` for a public client).
struct StoredOIDCClient: Sendable {
  var client: OIDCClient
  var secretHash: String?
}

extension OIDCClient {
  /// Whether one of `scopes` covers the client's org.
  func isUnder(_ scopes: [OrgPath]) -> Bool {
    scopes.contains { $0.covers(orgPath) }
  }
}

/// The change-feed event of a client's registration or change; the payload never carries
/// the secret (the store keeps only its hash).
private func feedArguments(_ client: OIDCClient) -> (
  entity: String, id: String, naturalKey: String, orgPath: String
) {
  ("oidc_client", client.clientID, client.clientID, client.orgPath)
}

/// Clients are few (one per app), so a page is filtered by scope as it is read.
private let clientPageBatch = 200

/// The SQLite implementation of ``OIDCStore``, on identity's store file.
final class SQLiteOIDCStore: OIDCStore {
  let store: Store

  init(store: Store) { self.store = store }

  func rsaKeys() async throws -> [StoredRSAKey] {
    try await store.read { db in
      try Row.fetchAll(db, sql: "SELECT * FROM oidc_rsa_keys ORDER BY created_at").map(
        Self.rsaKey)
    }
  }

  func addRSAKey(_ key: StoredRSAKey) async throws -> StoredRSAKey {
    try await store.write { db in
      try db.execute(
        sql: """
          INSERT INTO oidc_rsa_keys (id, paired_key_id, private_key, created_at)
          VALUES (?, ?, ?, ?) ON CONFLICT (paired_key_id) DO NOTHING
          """,
        arguments: [key.id, key.pairedKeyID, key.privateKey, key.createdAt.timeIntervalSince1970])
      guard
        let row = try Row.fetchOne(
          db, sql: "SELECT * FROM oidc_rsa_keys WHERE paired_key_id = ?",
          arguments: [key.pairedKeyID])
      else { throw ServiceError.internalError("RSA key of \(key.pairedKeyID) is missing") }
      return Self.rsaKey(row)
    }
  }

  private static let clientSelect = """
    SELECT c.*, COALESCE(o.path, '/') AS org_path FROM oidc_clients c
    LEFT JOIN orgs o ON o.id = c.org_id
    """

  private static func list(_ text: String) -> [String] {
    text.isEmpty ? [] : text.split(separator: "\n").map(String.init)
  }

  private static func text(_ list: [String]) -> String { list.joined(separator: "\n") }

  private static func stored(_ row: Row) -> StoredOIDCClient {
    let disabled: Double? = row["disabled_at"]
    let client = OIDCClient.with {
      $0.clientID = row["client_id"]
      $0.name = row["name"]
      $0.publicClient = row["public_client"] as Int == 1
      $0.redirectUris = list(row["redirect_uris"])
      $0.postLogoutRedirectUris = list(row["post_logout_uris"])
      $0.scopes = list(row["scopes"])
      $0.services = list(row["services"])
      $0.orgID = row["org_id"] ?? ""
      $0.orgPath = row["org_path"]
      $0.disabled = disabled != nil
      $0.createTime = .init(date: Date(timeIntervalSince1970: row["created_at"]))
      $0.updateTime = .init(date: Date(timeIntervalSince1970: row["updated_at"]))
    }
    return StoredOIDCClient(client: client, secretHash: row["secret_hash"])
  }

  private func fetch(_ db: Database, _ id: String) throws -> StoredOIDCClient? {
    try Row.fetchOne(db, sql: Self.clientSelect + " WHERE c.client_id = ?", arguments: [id])
      .map(Self.stored)
  }

  /// Reads back the changed client and puts it on the change feed.
  private func changed(_ db: Database, _ id: String) throws -> OIDCClient? {
    guard let client = try fetch(db, id)?.client else { return nil }
    let feed = feedArguments(client)
    try ChangeFeed.record(
      db, entity: feed.entity, id: feed.id, naturalKey: feed.naturalKey, op: .upsert,
      orgPath: feed.orgPath, payload: client)
    return client
  }

  func insertClient(_ client: OIDCClient, secretHash: String?) async throws -> OIDCClient {
    try await store.write { db in
      let now = Date().timeIntervalSince1970
      try db.execute(
        sql: """
          INSERT INTO oidc_clients (client_id, name, public_client, secret_hash, redirect_uris,
            post_logout_uris, scopes, services, org_id, created_at, updated_at)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
          """,
        arguments: [
          client.clientID, client.name, client.publicClient ? 1 : 0, secretHash,
          Self.text(client.redirectUris), Self.text(client.postLogoutRedirectUris),
          Self.text(client.scopes), Self.text(client.services),
          client.orgID.isEmpty ? nil : client.orgID, now, now,
        ])
      guard let stored = try self.changed(db, client.clientID) else {
        throw ServiceError.internalError("client \(client.clientID) is missing")
      }
      return stored
    }
  }

  func client(id: String) async throws -> StoredOIDCClient? {
    try await store.read { db in try self.fetch(db, id) }
  }

  func updateClient(_ client: OIDCClient) async throws -> OIDCClient? {
    try await store.write { db in
      try db.execute(
        sql: """
          UPDATE oidc_clients SET name = ?, redirect_uris = ?, post_logout_uris = ?, scopes = ?,
            services = ?, updated_at = ?
          WHERE client_id = ? AND disabled_at IS NULL
          """,
        arguments: [
          client.name, Self.text(client.redirectUris), Self.text(client.postLogoutRedirectUris),
          Self.text(client.scopes), Self.text(client.services), Date().timeIntervalSince1970,
          client.clientID,
        ])
      return db.changesCount == 0 ? nil : try self.changed(db, client.clientID)
    }
  }

  func disableClient(id: String) async throws -> OIDCClient? {
    try await store.write { db in
      let now = Date().timeIntervalSince1970
      try db.execute(
        sql: """
          UPDATE oidc_clients SET disabled_at = ?, updated_at = ?
          WHERE client_id = ? AND disabled_at IS NULL
          """, arguments: [now, now, id])
      return db.changesCount == 0 ? try self.fetch(db, id)?.client : try self.changed(db, id)
    }
  }

  func setClientSecret(id: String, hash: String) async throws -> OIDCClient? {
    try await store.write { db in
      try db.execute(
        sql: """
          UPDATE oidc_clients SET secret_hash = ?, updated_at = ?
          WHERE client_id = ? AND disabled_at IS NULL AND public_client = 0
          """, arguments: [hash, Date().timeIntervalSince1970, id])
      // A new secret changes nothing a feed reader sees: no event.
      return db.changesCount == 0 ? nil : try self.fetch(db, id)?.client
    }
  }

  func clients(after: String?, limit: Int, scopes: [OrgPath], includeDisabled: Bool)
    async throws -> [OIDCClient]
  {
    try await store.read { db in
      var found: [OIDCClient] = []
      var cursor = after ?? ""
      while found.count < limit {
        let rows = try Row.fetchAll(
          db,
          sql: Self.clientSelect + """
             WHERE c.client_id > ? AND (? OR c.disabled_at IS NULL)
            ORDER BY c.client_id LIMIT ?
            """, arguments: [cursor, includeDisabled, clientPageBatch])
        let batch = rows.map { Self.stored($0).client }
        found += batch.filter { $0.isUnder(scopes) }
        guard let last = batch.last, batch.count == clientPageBatch else { break }
        cursor = last.clientID
      }
      return Array(found.prefix(limit))
    }
  }

  func addSSOSession(_ session: SSOSession) async throws {
    try await store.write { db in
      try db.execute(
        sql: """
          INSERT INTO oidc_sso_sessions (hash, session_id, user_id, auth_time)
          VALUES (?, ?, ?, ?)
          """,
        arguments: [
          session.hash, session.sessionID, session.userID, session.authTime.timeIntervalSince1970,
        ])
    }
  }

  func ssoSession(hash: String) async throws -> SSOSession? {
    try await store.read { db in
      try Row.fetchOne(db, sql: "SELECT * FROM oidc_sso_sessions WHERE hash = ?", arguments: [hash])
        .map { row in
          SSOSession(
            hash: row["hash"], sessionID: row["session_id"], userID: row["user_id"],
            authTime: Date(timeIntervalSince1970: row["auth_time"]))
        }
    }
  }

  func addCode(_ code: AuthorizationCode) async throws {
    try await store.write { db in
      // Expired codes go as new ones come: the table holds only a minute or so of codes.
      try db.execute(
        sql: "DELETE FROM oidc_codes WHERE expires_at < ?",
        arguments: [Date().timeIntervalSince1970 - 3600])
      try db.execute(
        sql: """
          INSERT INTO oidc_codes (hash, client_id, user_id, session_id, redirect_uri, scope,
            nonce, code_challenge, auth_time, expires_at)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
          """,
        arguments: [
          code.hash, code.clientID, code.userID, code.sessionID, code.redirectURI, code.scope,
          code.nonce, code.codeChallenge, code.authTime.timeIntervalSince1970,
          code.expiresAt.timeIntervalSince1970,
        ])
    }
  }

  func redeemCode(hash: String) async throws -> AuthorizationCode? {
    try await store.write { db in
      try Row.fetchOne(
        db,
        sql: """
          UPDATE oidc_codes SET used_at = ? WHERE hash = ? AND used_at IS NULL RETURNING *
          """, arguments: [Date().timeIntervalSince1970, hash]
      ).map { row in
        AuthorizationCode(
          hash: row["hash"], clientID: row["client_id"], userID: row["user_id"],
          sessionID: row["session_id"], redirectURI: row["redirect_uri"], scope: row["scope"],
          nonce: row["nonce"], codeChallenge: row["code_challenge"],
          authTime: Date(timeIntervalSince1970: row["auth_time"]),
          expiresAt: Date(timeIntervalSince1970: row["expires_at"]))
      }
    }
  }

  private static func rsaKey(_ row: Row) -> StoredRSAKey {
    StoredRSAKey(
      id: row["id"], pairedKeyID: row["paired_key_id"], privateKey: row["private_key"],
      createdAt: Date(timeIntervalSince1970: row["created_at"]))
  }
}

/// The PostgreSQL implementation of ``OIDCStore``, on identity's database.
final class PostgresOIDCStore: OIDCStore {
  let store: PostgresStore

  init(store: PostgresStore) { self.store = store }

  func rsaKeys() async throws -> [StoredRSAKey] {
    try await store.read { tx in
      try await tx.query(
        """
        SELECT id, paired_key_id, private_key, created_at FROM oidc_rsa_keys
        ORDER BY created_at
        """
      ).map(Self.rsaKey)
    }
  }

  func addRSAKey(_ key: StoredRSAKey) async throws -> StoredRSAKey {
    try await store.write { tx in
      try await tx.execute(
        """
        INSERT INTO oidc_rsa_keys (id, paired_key_id, private_key, created_at)
        VALUES (\(key.id), \(key.pairedKeyID), \(key.privateKey),
          \(key.createdAt.timeIntervalSince1970))
        ON CONFLICT (paired_key_id) DO NOTHING
        """)
      guard
        let row = try await tx.one(
          """
          SELECT id, paired_key_id, private_key, created_at FROM oidc_rsa_keys
          WHERE paired_key_id = \(key.pairedKeyID)
          """)
      else { throw ServiceError.internalError("RSA key of \(key.pairedKeyID) is missing") }
      return try Self.rsaKey(row)
    }
  }

  private static let clientSelect = """
    SELECT c.client_id, c.name, c.public_client, c.secret_hash, c.redirect_uris,
      c.post_logout_uris, c.scopes, c.services, c.org_id, c.disabled_at, c.created_at,
      c.updated_at, COALESCE(o.path, '/') AS org_path
    FROM oidc_clients c LEFT JOIN orgs o ON o.id = c.org_id
    """

  private static func stored(_ row: PostgresRandomAccessRow) throws -> StoredOIDCClient {
    var client = OIDCClient()
    client.clientID = try row["client_id"].decode(String.self)
    client.name = try row["name"].decode(String.self)
    client.publicClient = try row["public_client"].decode(Bool.self)
    client.redirectUris = try row["redirect_uris"].decode([String].self)
    client.postLogoutRedirectUris = try row["post_logout_uris"].decode([String].self)
    client.scopes = try row["scopes"].decode([String].self)
    client.services = try row["services"].decode([String].self)
    client.orgID = try row["org_id"].decode(String?.self) ?? ""
    client.orgPath = try row["org_path"].decode(String.self)
    client.disabled = try row["disabled_at"].decode(Double?.self) != nil
    client.createTime = .init(
      date: Date(timeIntervalSince1970: try row["created_at"].decode(Double.self)))
    client.updateTime = .init(
      date: Date(timeIntervalSince1970: try row["updated_at"].decode(Double.self)))
    return StoredOIDCClient(client: client, secretHash: try row["secret_hash"].decode(String?.self))
  }

  private func fetch(_ tx: PostgresTransaction, _ id: String) async throws -> StoredOIDCClient? {
    try await tx.one("\(unescaped: Self.clientSelect) WHERE c.client_id = \(id)").map(Self.stored)
  }

  /// Reads back the changed client and puts it on the change feed.
  private func changed(_ tx: PostgresTransaction, _ id: String) async throws -> OIDCClient? {
    guard let client = try await fetch(tx, id)?.client else { return nil }
    let feed = feedArguments(client)
    try tx.recordChange(
      entity: feed.entity, id: feed.id, naturalKey: feed.naturalKey, op: .upsert,
      orgPath: feed.orgPath, payload: client)
    return client
  }

  func insertClient(_ client: OIDCClient, secretHash: String?) async throws -> OIDCClient {
    try await store.write { tx in
      let now = Date().timeIntervalSince1970
      let org: String? = client.orgID.isEmpty ? nil : client.orgID
      try await tx.execute(
        """
        INSERT INTO oidc_clients (client_id, name, public_client, secret_hash, redirect_uris,
          post_logout_uris, scopes, services, org_id, created_at, updated_at)
        VALUES (\(client.clientID), \(client.name), \(client.publicClient), \(secretHash),
          \(client.redirectUris), \(client.postLogoutRedirectUris), \(client.scopes),
          \(client.services), \(org), \(now), \(now))
        """)
      guard let stored = try await self.changed(tx, client.clientID) else {
        throw ServiceError.internalError("client \(client.clientID) is missing")
      }
      return stored
    }
  }

  func client(id: String) async throws -> StoredOIDCClient? {
    try await store.read { tx in try await self.fetch(tx, id) }
  }

  func updateClient(_ client: OIDCClient) async throws -> OIDCClient? {
    try await store.write { tx in
      let updated = try await tx.one(
        """
        UPDATE oidc_clients SET name = \(client.name), redirect_uris = \(client.redirectUris),
          post_logout_uris = \(client.postLogoutRedirectUris), scopes = \(client.scopes),
          services = \(client.services), updated_at = \(Date().timeIntervalSince1970)
        WHERE client_id = \(client.clientID) AND disabled_at IS NULL RETURNING client_id
        """)
      return updated == nil ? nil : try await self.changed(tx, client.clientID)
    }
  }

  func disableClient(id: String) async throws -> OIDCClient? {
    try await store.write { tx in
      let now = Date().timeIntervalSince1970
      let updated = try await tx.one(
        """
        UPDATE oidc_clients SET disabled_at = \(now), updated_at = \(now)
        WHERE client_id = \(id) AND disabled_at IS NULL RETURNING client_id
        """)
      return updated == nil
        ? try await self.fetch(tx, id)?.client : try await self.changed(tx, id)
    }
  }

  func setClientSecret(id: String, hash: String) async throws -> OIDCClient? {
    try await store.write { tx in
      let updated = try await tx.one(
        """
        UPDATE oidc_clients SET secret_hash = \(hash), updated_at = \(Date().timeIntervalSince1970)
        WHERE client_id = \(id) AND disabled_at IS NULL AND NOT public_client
        RETURNING client_id
        """)
      // A new secret changes nothing a feed reader sees: no event.
      return updated == nil ? nil : try await self.fetch(tx, id)?.client
    }
  }

  func clients(after: String?, limit: Int, scopes: [OrgPath], includeDisabled: Bool)
    async throws -> [OIDCClient]
  {
    try await store.read { tx in
      var found: [OIDCClient] = []
      var cursor = after ?? ""
      while found.count < limit {
        let batch = try await tx.query(
          """
          \(unescaped: Self.clientSelect)
          WHERE c.client_id > \(cursor) AND (\(includeDisabled) OR c.disabled_at IS NULL)
          ORDER BY c.client_id LIMIT \(clientPageBatch)
          """
        ).map { try Self.stored($0).client }
        found += batch.filter { $0.isUnder(scopes) }
        guard let last = batch.last, batch.count == clientPageBatch else { break }
        cursor = last.clientID
      }
      return Array(found.prefix(limit))
    }
  }

  func addSSOSession(_ session: SSOSession) async throws {
    try await store.write { tx in
      try await tx.execute(
        """
        INSERT INTO oidc_sso_sessions (hash, session_id, user_id, auth_time)
        VALUES (\(session.hash), \(session.sessionID), \(session.userID),
          \(session.authTime.timeIntervalSince1970))
        """)
    }
  }

  func ssoSession(hash: String) async throws -> SSOSession? {
    try await store.read { tx in
      try await tx.one(
        "SELECT hash, session_id, user_id, auth_time FROM oidc_sso_sessions WHERE hash = \(hash)"
      ).map { row in
        SSOSession(
          hash: try row["hash"].decode(String.self),
          sessionID: try row["session_id"].decode(String.self),
          userID: try row["user_id"].decode(String.self),
          authTime: Date(timeIntervalSince1970: try row["auth_time"].decode(Double.self)))
      }
    }
  }

  func addCode(_ code: AuthorizationCode) async throws {
    try await store.write { tx in
      // Expired codes go as new ones come: the table holds only a minute or so of codes.
      try await tx.execute(
        "DELETE FROM oidc_codes WHERE expires_at < \(Date().timeIntervalSince1970 - 3600)")
      try await tx.execute(
        """
        INSERT INTO oidc_codes (hash, client_id, user_id, session_id, redirect_uri, scope,
          nonce, code_challenge, auth_time, expires_at)
        VALUES (\(code.hash), \(code.clientID), \(code.userID), \(code.sessionID),
          \(code.redirectURI), \(code.scope), \(code.nonce), \(code.codeChallenge),
          \(code.authTime.timeIntervalSince1970), \(code.expiresAt.timeIntervalSince1970))
        """)
    }
  }

  func redeemCode(hash: String) async throws -> AuthorizationCode? {
    // One conditional UPDATE: of two replicas redeeming the same code at once, one gets it.
    try await store.write { tx in
      try await tx.one(
        """
        UPDATE oidc_codes SET used_at = \(Date().timeIntervalSince1970)
        WHERE hash = \(hash) AND used_at IS NULL
        RETURNING hash, client_id, user_id, session_id, redirect_uri, scope, nonce,
          code_challenge, auth_time, expires_at
        """
      ).map { row in
        AuthorizationCode(
          hash: try row["hash"].decode(String.self),
          clientID: try row["client_id"].decode(String.self),
          userID: try row["user_id"].decode(String.self),
          sessionID: try row["session_id"].decode(String.self),
          redirectURI: try row["redirect_uri"].decode(String.self),
          scope: try row["scope"].decode(String.self),
          nonce: try row["nonce"].decode(String?.self),
          codeChallenge: try row["code_challenge"].decode(String?.self),
          authTime: Date(timeIntervalSince1970: try row["auth_time"].decode(Double.self)),
          expiresAt: Date(timeIntervalSince1970: try row["expires_at"].decode(Double.self)))
      }
    }
  }

  private static func rsaKey(_ row: PostgresRandomAccessRow) throws -> StoredRSAKey {
    StoredRSAKey(
      id: try row["id"].decode(String.self),
      pairedKeyID: try row["paired_key_id"].decode(String.self),
      privateKey: try row["private_key"].decode(Data.self),
      createdAt: Date(timeIntervalSince1970: try row["created_at"].decode(Double.self)))
  }
}

/// The OpenID Connect tables, appended to identity's migrations.
enum OIDCMigrations {
  static func register(_ migrator: inout DatabaseMigrator) {
    migrator.registerMigration("identity.oidc_rsa_keys") { db in
      try db.execute(
        sql: """
          CREATE TABLE oidc_rsa_keys (
            id TEXT PRIMARY KEY,
            paired_key_id TEXT NOT NULL UNIQUE REFERENCES signing_keys(id),
            private_key BLOB NOT NULL,
            created_at REAL NOT NULL
          )
          """)
    }
    // Lists are newline-separated (URIs, scopes and service names hold no whitespace).
    migrator.registerMigration("identity.oidc_clients") { db in
      try db.execute(
        sql: """
          CREATE TABLE oidc_clients (
            client_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            public_client INTEGER NOT NULL,
            secret_hash TEXT,
            redirect_uris TEXT NOT NULL,
            post_logout_uris TEXT NOT NULL,
            scopes TEXT NOT NULL,
            services TEXT NOT NULL,
            org_id TEXT REFERENCES orgs(id),
            disabled_at REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            CHECK ((public_client = 1) = (secret_hash IS NULL))
          )
          """)
    }
    migrator.registerMigration("identity.oidc_sessions_and_codes") { db in
      try db.execute(
        sql: """
          CREATE TABLE oidc_sso_sessions (
            hash TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            auth_time REAL NOT NULL
          );
          CREATE TABLE oidc_codes (
            hash TEXT PRIMARY KEY,
            client_id TEXT NOT NULL REFERENCES oidc_clients(client_id),
            user_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            redirect_uri TEXT NOT NULL,
            scope TEXT NOT NULL,
            nonce TEXT,
            code_challenge TEXT,
            auth_time REAL NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL
          );
          CREATE INDEX oidc_codes_expiry ON oidc_codes(expires_at);
          """)
    }
  }

  static let postgres: [PostgresMigration] = [
    PostgresMigration(
      "identity.oidc_rsa_keys",
      [
        """
        CREATE TABLE oidc_rsa_keys (
          id text COLLATE "C" PRIMARY KEY,
          paired_key_id text NOT NULL UNIQUE REFERENCES signing_keys(id),
          private_key bytea NOT NULL,
          created_at double precision NOT NULL)
        """
      ]),
    PostgresMigration(
      "identity.oidc_clients",
      [
        """
        CREATE TABLE oidc_clients (
          client_id text COLLATE "C" PRIMARY KEY,
          name text NOT NULL,
          public_client boolean NOT NULL,
          secret_hash text,
          redirect_uris text[] NOT NULL,
          post_logout_uris text[] NOT NULL,
          scopes text[] NOT NULL,
          services text[] NOT NULL,
          org_id text COLLATE "C" REFERENCES orgs(id),
          disabled_at double precision,
          created_at double precision NOT NULL,
          updated_at double precision NOT NULL,
          CHECK (public_client = (secret_hash IS NULL)))
        """
      ]),
    PostgresMigration(
      "identity.oidc_sessions_and_codes",
      [
        """
        CREATE TABLE oidc_sso_sessions (
          hash text COLLATE "C" PRIMARY KEY,
          session_id text COLLATE "C" NOT NULL,
          user_id text COLLATE "C" NOT NULL,
          auth_time double precision NOT NULL)
        """,
        """
        CREATE TABLE oidc_codes (
          hash text COLLATE "C" PRIMARY KEY,
          client_id text COLLATE "C" NOT NULL REFERENCES oidc_clients(client_id),
          user_id text COLLATE "C" NOT NULL,
          session_id text COLLATE "C" NOT NULL,
          redirect_uri text NOT NULL,
          scope text NOT NULL,
          nonce text,
          code_challenge text,
          auth_time double precision NOT NULL,
          expires_at double precision NOT NULL,
          used_at double precision)
        """,
        "CREATE INDEX oidc_codes_expiry ON oidc_codes(expires_at)",
      ]),
  ]
}
