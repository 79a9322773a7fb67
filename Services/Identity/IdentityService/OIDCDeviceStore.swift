import Foundation
import GRDB
import PostgresNIO
import ServiceRuntime

/// Where a device authorization (RFC 8628) stands.
enum DeviceStatus: String, Sendable {
  /// Waiting for the user at the verification page.
  case pending
  case approved
  case denied
  /// Approved, and its tokens went to the device's one successful poll.
  case used
}

/// A device authorization as stored: the device code and user code only as hashes
/// (``Secrets/digest(_:)``), so that a copy of the table gives no one a code to poll with.
struct DeviceAuthorization: Sendable, Equatable {
  var deviceHash: String
  var userCodeHash: String
  var clientID: String
  var scope: String
  /// The least number of seconds between two polls; slow_down adds 5.
  var interval: Int
  var expiresAt: Date
  var lastPoll: Date?
  var status: DeviceStatus
  /// The user who approved or denied it, in the identity session of their sign-in.
  var userID: String?
  var sessionID: String?
  var authTime: Date?
}

/// What one poll of the token endpoint finds.
enum DevicePoll: Sendable, Equatable {
  /// No such device code, or one issued to another client.
  case unknown
  case expired
  case pending
  /// Polled before the interval passed: the interval has grown by 5 seconds.
  case slowDown
  case denied
  /// Its tokens were already issued.
  case used
  /// Approved: this poll, and no other, gets the tokens.
  case approved(DeviceAuthorization)

  /// The outcome of a poll of `record` by `clientID` at `now`, and the record as it must be
  /// stored afterwards (`nil`: unchanged). The one rule of both stores, which call it under a
  /// row lock (PostgreSQL) or in their single writer (SQLite).
  static func of(_ record: DeviceAuthorization?, clientID: String, now: Date) -> (
    DevicePoll, DeviceAuthorization?
  ) {
    guard var record, record.clientID == clientID else { return (.unknown, nil) }
    guard record.expiresAt > now else { return (.expired, nil) }
    switch record.status {
    case .used: return (.used, nil)
    case .denied: return (.denied, nil)
    case .approved:
      record.status = .used
      record.lastPoll = now
      return (.approved(record), record)
    case .pending:
      let early = record.lastPoll.map { now.timeIntervalSince($0) < Double(record.interval) }
      record.lastPoll = now
      if early == true {
        record.interval += 5
        return (.slowDown, record)
      }
      return (.pending, record)
    }
  }
}

/// What the device authorization grant needs from storage, on both stores: any replica
/// answers a poll or an approval for a device another replica started.
protocol OIDCDeviceStore: Sendable {
  /// Stores a new authorization; false when its user code is taken (the caller draws another).
  func addDeviceAuthorization(_ device: DeviceAuthorization) async throws -> Bool
  func deviceAuthorization(userCodeHash: String) async throws -> DeviceAuthorization?
  /// Approves or denies a pending authorization that has not expired, for `userID` in
  /// `sessionID`; false when it is not pending (decided already, used, expired or unknown).
  func decideDeviceAuthorization(
    userCodeHash: String, approve: Bool, userID: String, sessionID: String, authTime: Date,
    now: Date
  ) async throws -> Bool
  /// One poll by `clientID` (``DevicePoll/of(_:clientID:now:)``), atomically.
  func pollDeviceAuthorization(deviceHash: String, clientID: String, now: Date) async throws
    -> DevicePoll
}

/// Authorizations expired this long ago are deleted as new ones come.
private let deviceRetention: TimeInterval = 3600

extension SQLiteOIDCStore: OIDCDeviceStore {
  private static func device(_ row: Row) -> DeviceAuthorization {
    let lastPoll: Double? = row["last_poll"]
    let authTime: Double? = row["auth_time"]
    return DeviceAuthorization(
      deviceHash: row["device_hash"], userCodeHash: row["user_code_hash"],
      clientID: row["client_id"], scope: row["scope"], interval: row["interval_seconds"],
      expiresAt: Date(timeIntervalSince1970: row["expires_at"]),
      lastPoll: lastPoll.map(Date.init(timeIntervalSince1970:)),
      status: DeviceStatus(rawValue: row["status"]) ?? .denied, userID: row["user_id"],
      sessionID: row["session_id"], authTime: authTime.map(Date.init(timeIntervalSince1970:)))
  }

  func addDeviceAuthorization(_ device: DeviceAuthorization) async throws -> Bool {
    try await store.write { db in
      try db.execute(
        sql: "DELETE FROM oidc_device_codes WHERE expires_at < ?",
        arguments: [Date().timeIntervalSince1970 - deviceRetention])
      try db.execute(
        sql: """
          INSERT INTO oidc_device_codes (device_hash, user_code_hash, client_id, scope,
            interval_seconds, expires_at, status, created_at)
          VALUES (?, ?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT (user_code_hash) DO NOTHING
          """,
        arguments: [
          device.deviceHash, device.userCodeHash, device.clientID, device.scope, device.interval,
          device.expiresAt.timeIntervalSince1970, Date().timeIntervalSince1970,
        ])
      return db.changesCount > 0
    }
  }

  func deviceAuthorization(userCodeHash: String) async throws -> DeviceAuthorization? {
    try await store.read { db in
      try Row.fetchOne(
        db, sql: "SELECT * FROM oidc_device_codes WHERE user_code_hash = ?",
        arguments: [userCodeHash]
      ).map(Self.device)
    }
  }

  func decideDeviceAuthorization(
    userCodeHash: String, approve: Bool, userID: String, sessionID: String, authTime: Date,
    now: Date
  ) async throws -> Bool {
    try await store.write { db in
      try db.execute(
        sql: """
          UPDATE oidc_device_codes SET status = ?, user_id = ?, session_id = ?, auth_time = ?
          WHERE user_code_hash = ? AND status = 'pending' AND expires_at > ?
          """,
        arguments: [
          approve ? "approved" : "denied", userID, sessionID, authTime.timeIntervalSince1970,
          userCodeHash, now.timeIntervalSince1970,
        ])
      return db.changesCount > 0
    }
  }

  func pollDeviceAuthorization(deviceHash: String, clientID: String, now: Date) async throws
    -> DevicePoll
  {
    try await store.write { db in
      let record = try Row.fetchOne(
        db, sql: "SELECT * FROM oidc_device_codes WHERE device_hash = ?", arguments: [deviceHash]
      ).map(Self.device)
      let (outcome, changed) = DevicePoll.of(record, clientID: clientID, now: now)
      if let changed {
        try db.execute(
          sql: """
            UPDATE oidc_device_codes SET status = ?, interval_seconds = ?, last_poll = ?
            WHERE device_hash = ?
            """,
          arguments: [
            changed.status.rawValue, changed.interval, changed.lastPoll?.timeIntervalSince1970,
            deviceHash,
          ])
      }
      return outcome
    }
  }
}

extension PostgresOIDCStore: OIDCDeviceStore {
  private static let deviceColumns = """
    device_hash, user_code_hash, client_id, scope, interval_seconds, expires_at, last_poll,
    status, user_id, session_id, auth_time
    """

  private static func device(_ row: PostgresRandomAccessRow) throws -> DeviceAuthorization {
    DeviceAuthorization(
      deviceHash: try row["device_hash"].decode(String.self),
      userCodeHash: try row["user_code_hash"].decode(String.self),
      clientID: try row["client_id"].decode(String.self),
      scope: try row["scope"].decode(String.self),
      interval: try row["interval_seconds"].decode(Int.self),
      expiresAt: Date(timeIntervalSince1970: try row["expires_at"].decode(Double.self)),
      lastPoll: try row["last_poll"].decode(Double?.self).map(Date.init(timeIntervalSince1970:)),
      status: DeviceStatus(rawValue: try row["status"].decode(String.self)) ?? .denied,
      userID: try row["user_id"].decode(String?.self),
      sessionID: try row["session_id"].decode(String?.self),
      authTime: try row["auth_time"].decode(Double?.self).map(Date.init(timeIntervalSince1970:)))
  }

  func addDeviceAuthorization(_ device: DeviceAuthorization) async throws -> Bool {
    try await store.write { tx in
      try await tx.execute(
        """
        DELETE FROM oidc_device_codes
        WHERE expires_at < \(Date().timeIntervalSince1970 - deviceRetention)
        """)
      return try await tx.one(
        """
        INSERT INTO oidc_device_codes (device_hash, user_code_hash, client_id, scope,
          interval_seconds, expires_at, status, created_at)
        VALUES (\(device.deviceHash), \(device.userCodeHash), \(device.clientID),
          \(device.scope), \(device.interval), \(device.expiresAt.timeIntervalSince1970),
          'pending', \(Date().timeIntervalSince1970))
        ON CONFLICT (user_code_hash) DO NOTHING RETURNING device_hash
        """) != nil
    }
  }

  func deviceAuthorization(userCodeHash: String) async throws -> DeviceAuthorization? {
    try await store.read { tx in
      try await tx.one(
        """
        SELECT \(unescaped: Self.deviceColumns) FROM oidc_device_codes
        WHERE user_code_hash = \(userCodeHash)
        """
      ).map(Self.device)
    }
  }

  func decideDeviceAuthorization(
    userCodeHash: String, approve: Bool, userID: String, sessionID: String, authTime: Date,
    now: Date
  ) async throws -> Bool {
    try await store.write { tx in
      try await tx.one(
        """
        UPDATE oidc_device_codes SET status = \(approve ? "approved" : "denied"),
          user_id = \(userID), session_id = \(sessionID),
          auth_time = \(authTime.timeIntervalSince1970)
        WHERE user_code_hash = \(userCodeHash) AND status = 'pending'
          AND expires_at > \(now.timeIntervalSince1970)
        RETURNING device_hash
        """) != nil
    }
  }

  func pollDeviceAuthorization(deviceHash: String, clientID: String, now: Date) async throws
    -> DevicePoll
  {
    // The row lock makes concurrent polls (on any replica) take turns: one sees `approved`.
    try await store.write { tx in
      let record = try await tx.one(
        """
        SELECT \(unescaped: Self.deviceColumns) FROM oidc_device_codes
        WHERE device_hash = \(deviceHash) FOR UPDATE
        """
      ).map(Self.device)
      let (outcome, changed) = DevicePoll.of(record, clientID: clientID, now: now)
      if let changed {
        try await tx.execute(
          """
          UPDATE oidc_device_codes SET status = \(changed.status.rawValue),
            interval_seconds = \(changed.interval),
            last_poll = \(changed.lastPoll?.timeIntervalSince1970)
          WHERE device_hash = \(deviceHash)
          """)
      }
      return outcome
    }
  }
}

/// The device authorization table, appended to identity's migrations.
enum OIDCDeviceMigrations {
  static func register(_ migrator: inout DatabaseMigrator) {
    migrator.registerMigration("identity.oidc_device_codes") { db in
      try db.execute(
        sql: """
          CREATE TABLE oidc_device_codes (
            device_hash TEXT PRIMARY KEY,
            user_code_hash TEXT NOT NULL UNIQUE,
            client_id TEXT NOT NULL REFERENCES oidc_clients(client_id),
            scope TEXT NOT NULL,
            interval_seconds INTEGER NOT NULL,
            expires_at REAL NOT NULL,
            last_poll REAL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
            user_id TEXT,
            session_id TEXT,
            auth_time REAL,
            created_at REAL NOT NULL
          );
          CREATE INDEX oidc_device_codes_expiry ON oidc_device_codes(expires_at);
          """)
    }
  }

  static let postgres: [PostgresMigration] = [
    PostgresMigration(
      "identity.oidc_device_codes",
      [
        """
        CREATE TABLE oidc_device_codes (
          device_hash text COLLATE "C" PRIMARY KEY,
          user_code_hash text COLLATE "C" NOT NULL UNIQUE,
          client_id text COLLATE "C" NOT NULL REFERENCES oidc_clients(client_id),
          scope text NOT NULL,
          interval_seconds bigint NOT NULL,
          expires_at double precision NOT NULL,
          last_poll double precision,
          status text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
          user_id text COLLATE "C",
          session_id text COLLATE "C",
          auth_time double precision,
          created_at double precision NOT NULL)
        """,
        "CREATE INDEX oidc_device_codes_expiry ON oidc_device_codes(expires_at)",
      ]),
  ]
}
