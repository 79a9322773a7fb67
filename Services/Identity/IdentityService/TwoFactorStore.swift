import Foundation
import GRDB
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel

/// A user's TOTP secret. The secret is kept as identity keeps its other secrets that must be
/// read back (the token-signing keys): raw bytes in the store's own table, never in a message
/// or on the change feed.
struct TOTPState: Sendable {
  var secret: Data
  /// Active (confirmed with a code); a pending enrolment is not.
  var active: Bool
  /// The last time step accepted; a code of this step or an earlier one is refused.
  var lastStep: Int64?
}

/// A login waiting for its second step.
struct LoginChallenge: Sendable {
  var userID: String
  var kind: Smartschool_Identity_V1_SecondFactorKind
  var expiresAt: Date
  var completed: Bool
}

/// What proved the second step, used up in the same transaction as the challenge.
enum SecondFactorProof: Sendable {
  /// A TOTP code of this step (it becomes the last accepted step).
  case step(Int64)
  /// A recovery code (its digest), used up.
  case recoveryCode(digest: String)
  /// The first code of a pending secret: the secret (as verified) becomes active, with these
  /// recovery-code digests.
  case enrolment(secret: Data, step: Int64, recoveryDigests: [String])
}

enum ChallengeOutcome: Sendable, Equatable {
  case completed
  /// Unknown, expired or already completed.
  case challengeGone
  /// The step was already used, the recovery code is used or unknown, or the pending secret
  /// changed meanwhile.
  case proofRefused
}

/// What two-factor login needs from storage, on both stores. Confirmations and removals are
/// on the change feed as entity "user_totp" (no secret in it); challenges are kept in the
/// store, so that any replica completes a login another one started.
protocol TwoFactorStore: Sendable {
  func totp(userID: String) async throws -> TOTPState?
  /// Stores a new pending secret (replacing a pending one); false when TOTP is active.
  func beginTOTP(userID: String, secret: Data) async throws -> Bool
  /// Makes the pending secret `secret` active with `step` accepted and the recovery codes;
  /// false when there is no such pending secret.
  func confirmTOTP(user: User, secret: Data, step: Int64, recoveryDigests: [String])
    async throws -> Bool
  /// Deletes the user's TOTP and recovery codes; false when there was none.
  func removeTOTP(user: User) async throws -> Bool
  /// Records `step` as accepted when it is later than the last accepted one; false otherwise.
  func useStep(userID: String, step: Int64) async throws -> Bool
  /// Uses up an unused recovery code; false when none matches.
  func useRecoveryCode(userID: String, digest: String) async throws -> Bool
  func unusedRecoveryCodes(userID: String) async throws -> Int
  func createChallenge(idHash: String, userID: String,
                       kind: Smartschool_Identity_V1_SecondFactorKind, expires: Date) async throws
  func challenge(idHash: String) async throws -> LoginChallenge?
  /// Completes a live challenge and uses up `proof`, both or neither.
  func completeChallenge(idHash: String, user: User, proof: SecondFactorProof) async throws
    -> ChallengeOutcome
}

/// Raised inside a write transaction to undo it.
private struct Undo: Error {}

/// The org path of a user's feed events (the root's for users without a home org).
private func feedPath(_ user: User) -> String { user.orgPath.isEmpty ? "/" : user.orgPath }

/// The SQLite implementation of ``TwoFactorStore``, on identity's store file.
final class SQLiteTwoFactorStore: TwoFactorStore {
  let store: Store

  init(store: Store) { self.store = store }

  func totp(userID: String) async throws -> TOTPState? {
    try await store.read { db in
      try Row.fetchOne(
        db, sql: "SELECT secret, confirmed_at, last_step FROM user_totp WHERE user_id = ?",
        arguments: [userID]
      ).map { row in
        TOTPState(
          secret: row["secret"], active: (row["confirmed_at"] as Double?) != nil,
          lastStep: row["last_step"])
      }
    }
  }

  func beginTOTP(userID: String, secret: Data) async throws -> Bool {
    try await store.write { db in
      try db.execute(
        sql: """
          INSERT INTO user_totp (user_id, secret, created_at) VALUES (?, ?, ?)
          ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret,
            created_at = excluded.created_at, last_step = NULL
          WHERE user_totp.confirmed_at IS NULL
          """, arguments: [userID, secret, Date().timeIntervalSince1970])
      return db.changesCount == 1
    }
  }

  private func confirm(
    _ db: Database, user: User, secret: Data, step: Int64, recoveryDigests: [String]
  ) throws -> Bool {
    let now = Date().timeIntervalSince1970
    try db.execute(
      sql: """
        UPDATE user_totp SET confirmed_at = ?, last_step = ?
        WHERE user_id = ? AND secret = ? AND confirmed_at IS NULL
        """, arguments: [now, step, user.id, secret])
    guard db.changesCount == 1 else { return false }
    try db.execute(sql: "DELETE FROM user_totp_recovery WHERE user_id = ?", arguments: [user.id])
    for digest in recoveryDigests {
      try db.execute(
        sql: "INSERT INTO user_totp_recovery (user_id, code_hash) VALUES (?, ?)",
        arguments: [user.id, digest])
    }
    try ChangeFeed.record(
      db, entity: "user_totp", id: user.id, naturalKey: user.externalID, op: .upsert,
      orgPath: feedPath(user))
    return true
  }

  func confirmTOTP(user: User, secret: Data, step: Int64, recoveryDigests: [String])
    async throws -> Bool
  {
    try await store.write { db in
      try self.confirm(db, user: user, secret: secret, step: step, recoveryDigests: recoveryDigests)
    }
  }

  func removeTOTP(user: User) async throws -> Bool {
    try await store.write { db in
      try db.execute(sql: "DELETE FROM user_totp_recovery WHERE user_id = ?", arguments: [user.id])
      try db.execute(sql: "DELETE FROM user_totp WHERE user_id = ?", arguments: [user.id])
      guard db.changesCount == 1 else { return false }
      try ChangeFeed.record(
        db, entity: "user_totp", id: user.id, naturalKey: user.externalID, op: .delete,
        orgPath: feedPath(user))
      return true
    }
  }

  private func useStep(_ db: Database, userID: String, step: Int64) throws -> Bool {
    try db.execute(
      sql: """
        UPDATE user_totp SET last_step = ?
        WHERE user_id = ? AND confirmed_at IS NOT NULL AND (last_step IS NULL OR last_step < ?)
        """, arguments: [step, userID, step])
    return db.changesCount == 1
  }

  func useStep(userID: String, step: Int64) async throws -> Bool {
    try await store.write { db in try self.useStep(db, userID: userID, step: step) }
  }

  private func useRecoveryCode(_ db: Database, userID: String, digest: String) throws -> Bool {
    try db.execute(
      sql: """
        UPDATE user_totp_recovery SET used_at = ?
        WHERE user_id = ? AND code_hash = ? AND used_at IS NULL
        """, arguments: [Date().timeIntervalSince1970, userID, digest])
    return db.changesCount == 1
  }

  func useRecoveryCode(userID: String, digest: String) async throws -> Bool {
    try await store.write { db in try self.useRecoveryCode(db, userID: userID, digest: digest) }
  }

  func unusedRecoveryCodes(userID: String) async throws -> Int {
    try await store.read { db in
      try Int.fetchOne(
        db, sql: "SELECT count(*) FROM user_totp_recovery WHERE user_id = ? AND used_at IS NULL",
        arguments: [userID]) ?? 0
    }
  }

  func createChallenge(
    idHash: String, userID: String, kind: Smartschool_Identity_V1_SecondFactorKind,
    expires: Date
  ) async throws {
    try await store.write { db in
      let now = Date().timeIntervalSince1970
      // Challenges are worth nothing once expired; an hour later they go.
      try db.execute(
        sql: "DELETE FROM login_challenges WHERE expires_at < ?", arguments: [now - 3600])
      try db.execute(
        sql: """
          INSERT INTO login_challenges (id_hash, user_id, kind, created_at, expires_at)
          VALUES (?, ?, ?, ?, ?)
          """,
        arguments: [idHash, userID, kind.rawValue, now, expires.timeIntervalSince1970])
    }
  }

  func challenge(idHash: String) async throws -> LoginChallenge? {
    try await store.read { db in
      try Row.fetchOne(
        db,
        sql: """
          SELECT user_id, kind, expires_at, completed_at FROM login_challenges WHERE id_hash = ?
          """, arguments: [idHash]
      ).map { row in
        LoginChallenge(
          userID: row["user_id"], kind: .init(rawValue: row["kind"]) ?? .unspecified,
          expiresAt: Date(timeIntervalSince1970: row["expires_at"]),
          completed: (row["completed_at"] as Double?) != nil)
      }
    }
  }

  func completeChallenge(idHash: String, user: User, proof: SecondFactorProof) async throws
    -> ChallengeOutcome
  {
    do {
      return try await store.write { db in
        let now = Date().timeIntervalSince1970
        try db.execute(
          sql: """
            UPDATE login_challenges SET completed_at = ?
            WHERE id_hash = ? AND user_id = ? AND completed_at IS NULL AND expires_at > ?
            """, arguments: [now, idHash, user.id, now])
        guard db.changesCount == 1 else { return .challengeGone }
        let used: Bool
        switch proof {
        case .step(let step): used = try self.useStep(db, userID: user.id, step: step)
        case .recoveryCode(let digest):
          used = try self.useRecoveryCode(db, userID: user.id, digest: digest)
        case .enrolment(let secret, let step, let digests):
          used = try self.confirm(
            db, user: user, secret: secret, step: step, recoveryDigests: digests)
        }
        // The challenge stays open when the proof is refused.
        guard used else { throw Undo() }
        return .completed
      }
    } catch is Undo {
      return .proofRefused
    }
  }
}

/// The PostgreSQL implementation of ``TwoFactorStore``, on identity's database.
final class PostgresTwoFactorStore: TwoFactorStore {
  let store: PostgresStore

  init(store: PostgresStore) { self.store = store }

  func totp(userID: String) async throws -> TOTPState? {
    let rows = try await store.query(
      "SELECT secret, confirmed_at, last_step FROM user_totp WHERE user_id = \(userID)")
    return try rows.first.map { row in
      TOTPState(
        secret: try row["secret"].decode(Data.self),
        active: try row["confirmed_at"].decode(Double?.self) != nil,
        lastStep: try row["last_step"].decode(Int64?.self))
    }
  }

  func beginTOTP(userID: String, secret: Data) async throws -> Bool {
    try await store.write { tx in
      try await tx.one(
        """
        INSERT INTO user_totp (user_id, secret, created_at)
        VALUES (\(userID), \(secret), \(Date().timeIntervalSince1970))
        ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret,
          created_at = excluded.created_at, last_step = NULL
        WHERE user_totp.confirmed_at IS NULL
        RETURNING user_id
        """) != nil
    }
  }

  private func confirm(
    _ tx: PostgresTransaction, user: User, secret: Data, step: Int64, recoveryDigests: [String]
  ) async throws -> Bool {
    let now = Date().timeIntervalSince1970
    guard
      try await tx.one(
        """
        UPDATE user_totp SET confirmed_at = \(now), last_step = \(step)
        WHERE user_id = \(user.id) AND secret = \(secret) AND confirmed_at IS NULL
        RETURNING user_id
        """) != nil
    else { return false }
    try await tx.execute("DELETE FROM user_totp_recovery WHERE user_id = \(user.id)")
    try await tx.execute(
      """
      INSERT INTO user_totp_recovery (user_id, code_hash)
      SELECT \(user.id), h FROM unnest(\(recoveryDigests)::text[]) AS h
      """)
    try tx.recordChange(
      entity: "user_totp", id: user.id, naturalKey: user.externalID, op: .upsert,
      orgPath: feedPath(user))
    return true
  }

  func confirmTOTP(user: User, secret: Data, step: Int64, recoveryDigests: [String])
    async throws -> Bool
  {
    try await store.write { tx in
      try await self.confirm(
        tx, user: user, secret: secret, step: step, recoveryDigests: recoveryDigests)
    }
  }

  func removeTOTP(user: User) async throws -> Bool {
    try await store.write { tx in
      try await tx.execute("DELETE FROM user_totp_recovery WHERE user_id = \(user.id)")
      guard
        try await tx.one("DELETE FROM user_totp WHERE user_id = \(user.id) RETURNING user_id")
          != nil
      else { return false }
      try tx.recordChange(
        entity: "user_totp", id: user.id, naturalKey: user.externalID, op: .delete,
        orgPath: feedPath(user))
      return true
    }
  }

  private func useStep(_ tx: PostgresTransaction, userID: String, step: Int64) async throws
    -> Bool
  {
    try await tx.one(
      """
      UPDATE user_totp SET last_step = \(step)
      WHERE user_id = \(userID) AND confirmed_at IS NOT NULL
        AND (last_step IS NULL OR last_step < \(step))
      RETURNING user_id
      """) != nil
  }

  func useStep(userID: String, step: Int64) async throws -> Bool {
    try await store.write { tx in try await self.useStep(tx, userID: userID, step: step) }
  }

  private func useRecoveryCode(_ tx: PostgresTransaction, userID: String, digest: String)
    async throws -> Bool
  {
    try await tx.one(
      """
      UPDATE user_totp_recovery SET used_at = \(Date().timeIntervalSince1970)
      WHERE user_id = \(userID) AND code_hash = \(digest) AND used_at IS NULL
      RETURNING user_id
      """) != nil
  }

  func useRecoveryCode(userID: String, digest: String) async throws -> Bool {
    try await store.write { tx in
      try await self.useRecoveryCode(tx, userID: userID, digest: digest)
    }
  }

  func unusedRecoveryCodes(userID: String) async throws -> Int {
    let rows = try await store.query(
      """
      SELECT count(*)::bigint AS n FROM user_totp_recovery
      WHERE user_id = \(userID) AND used_at IS NULL
      """)
    return Int(try rows.first?["n"].decode(Int64.self) ?? 0)
  }

  func createChallenge(
    idHash: String, userID: String, kind: Smartschool_Identity_V1_SecondFactorKind,
    expires: Date
  ) async throws {
    try await store.write { tx in
      let now = Date().timeIntervalSince1970
      // Challenges are worth nothing once expired; an hour later they go.
      try await tx.execute("DELETE FROM login_challenges WHERE expires_at < \(now - 3600)")
      try await tx.execute(
        """
        INSERT INTO login_challenges (id_hash, user_id, kind, created_at, expires_at)
        VALUES (\(idHash), \(userID), \(kind.rawValue), \(now), \(expires.timeIntervalSince1970))
        """)
    }
  }

  func challenge(idHash: String) async throws -> LoginChallenge? {
    let rows = try await store.query(
      """
      SELECT user_id, kind, expires_at, completed_at FROM login_challenges
      WHERE id_hash = \(idHash)
      """)
    return try rows.first.map { row in
      LoginChallenge(
        userID: try row["user_id"].decode(String.self),
        kind: .init(rawValue: try row["kind"].decode(Int.self)) ?? .unspecified,
        expiresAt: Date(timeIntervalSince1970: try row["expires_at"].decode(Double.self)),
        completed: try row["completed_at"].decode(Double?.self) != nil)
    }
  }

  func completeChallenge(idHash: String, user: User, proof: SecondFactorProof) async throws
    -> ChallengeOutcome
  {
    do {
      return try await store.write { tx in
        let now = Date().timeIntervalSince1970
        // Concurrent completions queue on the row lock; the losers find it completed.
        guard
          try await tx.one(
            """
            UPDATE login_challenges SET completed_at = \(now)
            WHERE id_hash = \(idHash) AND user_id = \(user.id) AND completed_at IS NULL
              AND expires_at > \(now)
            RETURNING id_hash
            """) != nil
        else { return .challengeGone }
        let used: Bool
        switch proof {
        case .step(let step): used = try await self.useStep(tx, userID: user.id, step: step)
        case .recoveryCode(let digest):
          used = try await self.useRecoveryCode(tx, userID: user.id, digest: digest)
        case .enrolment(let secret, let step, let digests):
          used = try await self.confirm(
            tx, user: user, secret: secret, step: step, recoveryDigests: digests)
        }
        // The challenge stays open when the proof is refused.
        guard used else { throw Undo() }
        return .completed
      }
    } catch is Undo {
      return .proofRefused
    }
  }
}

/// The two-factor tables, appended to identity's migrations on both stores.
enum TwoFactorMigrations {
  static func register(_ migrator: inout DatabaseMigrator) {
    migrator.registerMigration("identity.two_factor") { db in
      try db.execute(
        sql: """
          CREATE TABLE user_totp (
            user_id TEXT PRIMARY KEY REFERENCES users(id),
            secret BLOB NOT NULL,
            confirmed_at REAL,
            last_step INTEGER,
            created_at REAL NOT NULL
          );
          CREATE TABLE user_totp_recovery (
            user_id TEXT NOT NULL REFERENCES users(id),
            code_hash TEXT NOT NULL,
            used_at REAL,
            PRIMARY KEY (user_id, code_hash)
          );
          CREATE TABLE login_challenges (
            id_hash TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id),
            kind INTEGER NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            completed_at REAL
          );
          CREATE INDEX login_challenges_expiry ON login_challenges(expires_at);
          """)
    }
  }

  static let postgres: [PostgresMigration] = [
    PostgresMigration(
      "identity.two_factor",
      [
        """
        CREATE TABLE user_totp (
          user_id text COLLATE "C" PRIMARY KEY REFERENCES users(id),
          secret bytea NOT NULL,
          confirmed_at double precision,
          last_step bigint,
          created_at double precision NOT NULL)
        """,
        """
        CREATE TABLE user_totp_recovery (
          user_id text COLLATE "C" NOT NULL REFERENCES users(id),
          code_hash text COLLATE "C" NOT NULL,
          used_at double precision,
          PRIMARY KEY (user_id, code_hash))
        """,
        """
        CREATE TABLE login_challenges (
          id_hash text COLLATE "C" PRIMARY KEY,
          user_id text COLLATE "C" NOT NULL REFERENCES users(id),
          kind integer NOT NULL,
          created_at double precision NOT NULL,
          expires_at double precision NOT NULL,
          completed_at double precision)
        """,
        "CREATE INDEX login_challenges_expiry ON login_challenges(expires_at)",
      ])
  ]
}
