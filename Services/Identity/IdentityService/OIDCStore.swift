import Foundation
import GRDB
import PostgresNIO
import ServiceRuntime

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
}

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
      ])
  ]
}
