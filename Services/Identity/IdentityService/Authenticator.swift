import Crypto
import Foundation
import ServiceRuntime
import SmartSchoolModel
import Synchronization

/// Identity's settings beyond the host's.
public struct IdentitySettings: Sendable {
  /// Lifetime of access tokens.
  public var accessTokenTTL: TimeInterval = 15 * 60
  /// Lifetime of a refresh token (and of its session).
  public var refreshTokenTTL: TimeInterval = 30 * 24 * 3600
  /// scrypt cost for new password hashes.
  public var scrypt: ScryptParameters = .standard
  /// Password hashes computed at once; more get RESOURCE_EXHAUSTED.
  public var maxConcurrentHashes: Int = max(2, ProcessInfo.processInfo.activeProcessorCount)
  /// Failed logins in a row that lock an account.
  public var lockoutThreshold: Int = 5
  /// How long a lockout lasts.
  public var lockoutDuration: TimeInterval = 15 * 60
  /// Login attempts a minute for one username (from any address) before any hashing;
  /// more get RESOURCE_EXHAUSTED. 0 turns this off.
  public var loginAttemptsPerAccount: Int = 10
  /// Login attempts a minute from one client address; 0 turns this off.
  public var loginAttemptsPerAddress: Int = 300
  /// Wrong device user codes (RFC 8628) a minute from one client address before its next
  /// code is refused unread; 0 turns this off.
  public var deviceCodeGuessesPerAddress: Int = 20
  /// Password hashes one client address may have computed at once (nil: half of
  /// ``maxConcurrentHashes``, at least 1), so one address never takes every slot; 0 = off.
  public var loginHashesPerAddress: Int?
  /// Proxies whose `x-forwarded-for` header names the client address (addresses or CIDR
  /// ranges); the header of any other peer is ignored.
  public var trustedProxies: [IPRange] = []
  /// What a new password must be (its minimum length is `--min-password-length`).
  public var passwordPolicy = PasswordPolicy()
  /// Accounts (a user and their role bindings) kept in memory for WhoAmI and Introspect; a
  /// write to users, bindings or orgs makes the kept ones be read again. 0 turns this off.
  public var accountCacheEntries: Int = 8192
  /// How long an activation code stays valid.
  public var activationCodeTTL: TimeInterval = 14 * 24 * 3600
  /// Password of the `admin` account created on first start with an empty store.
  public var adminPassword: String?
  /// Called with the current signing key's creation time when the keys load and after each
  /// rotation; the executable exports it as a metric so an alert can fire on the key's age.
  public var onSigningKeyChange: (@Sendable (Date) -> Void)?
  /// The HTTP port (OpenID Connect); off unless its port is set.
  public var http = IdentityHTTPSettings()
  /// Two-factor login (TOTP): who must use it, how long a login challenge lives.
  public var twoFactor = TwoFactorSettings()
  /// Rows of a user import written in one transaction. A batch costs the database a fixed
  /// part (its reads of the orgs and users it names, the statements, the commit) whatever its
  /// size: on PostgreSQL 4,000 rows a batch imported about a tenth faster than 2,000 (0.56 of
  /// `COPY` against 0.51, medians of nine runs). Tests set it lower, to cross batch boundaries
  /// with fewer rows.
  public var userImportBatchRows: Int = 4000

  public init() {}
}

/// Identity's signing keys: the current key signs, every published key verifies. Old keys stay
/// published until the tokens they signed have expired.
final class KeyRing: Sendable {
  private struct State {
    var signer: TokenSigner
    var published: [PublishedKey]
    var stored: [StoredKey]
    var currentCreatedAt: Date
    /// Bumped by every install, so that a reload whose read began before a rotation (or
    /// another reload) was installed does not put its older keys back.
    var generation = 0
  }
  private let state: Mutex<State>
  private let store: any SigningKeyStore
  private let accessTokenTTL: TimeInterval
  private let onChange: (@Sendable (Date) -> Void)?

  private init(
    store: any SigningKeyStore, keys: [StoredKey], accessTokenTTL: TimeInterval,
    onChange: (@Sendable (Date) -> Void)?
  ) throws {
    self.store = store
    self.accessTokenTTL = accessTokenTTL
    self.onChange = onChange
    let state = try KeyRing.state(from: keys)
    self.state = Mutex(state)
    onChange?(state.currentCreatedAt)
  }

  /// Loads the keys, creating the first one on an empty store; `onChange` hears the current
  /// key's creation time now and after each rotation. The first key is made under a lock
  /// across replicas, so replicas starting at once on an empty database make one.
  static func load(
    store: any SigningKeyStore, storage: any ServiceStorage, accessTokenTTL: TimeInterval,
    onChange: (@Sendable (Date) -> Void)? = nil
  ) async throws -> KeyRing {
    var keys = try await store.signingKeys()
    if !keys.contains(where: \.current) {
      keys = try await storage.exclusively("identity.signing-keys") {
        if try await store.signingKeys().contains(where: \.current) == false {
          try await store.addSigningKey(newKey(), retireOthersAt: nil)
        }
        return try await store.signingKeys()
      }
    }
    return try KeyRing(
      store: store, keys: keys, accessTokenTTL: accessTokenTTL, onChange: onChange)
  }

  private static func newKey() -> StoredKey {
    let key = Curve25519.Signing.PrivateKey()
    return StoredKey(
      id: "k" + EntityID.make().prefix(12), privateKey: key.rawRepresentation,
      publicKey: key.publicKey.rawRepresentation, createdAt: Date(), retireAt: nil, current: true)
  }

  private static func state(from keys: [StoredKey]) throws -> State {
    guard let current = keys.last(where: \.current) else {
      throw ServiceError.internalError("no current signing key")
    }
    let signer = TokenSigner(
      keyID: current.id, key: try Curve25519.Signing.PrivateKey(rawRepresentation: current.privateKey))
    let now = Date()
    let published = try keys.filter { $0.retireAt.map { $0 > now } ?? true }.map {
      PublishedKey(
        keyID: $0.id, publicKey: try Curve25519.Signing.PublicKey(rawRepresentation: $0.publicKey),
        retireTime: $0.retireAt)
    }
    return State(
      signer: signer, published: published, stored: keys, currentCreatedAt: current.createdAt)
  }

  var signer: TokenSigner { state.withLock { $0.signer } }

  /// Rereads the keys from the store and adopts them when another replica has rotated:
  /// returns whether anything changed.
  @discardableResult
  func reload() async throws -> Bool {
    let seen = state.withLock { $0.generation }
    let keys = try await store.signingKeys()
    let fingerprint = { (keys: [StoredKey]) in
      keys.map { "\($0.id)/\($0.current)/\($0.retireAt?.timeIntervalSince1970 ?? 0)" }
    }
    var newState = try KeyRing.state(from: keys)
    let changed = state.withLock { s -> Bool in
      // Keys installed while these were read may be newer (this replica rotated): keep them;
      // the next reload reads again.
      guard s.generation == seen, fingerprint(s.stored) != fingerprint(keys) else {
        return false
      }
      newState.generation = seen + 1
      s = newState
      return true
    }
    if changed { onChange?(newState.currentCreatedAt) }
    return changed
  }

  /// The keys to publish now: the current one and retired ones whose tokens may still live.
  var publishedKeys: [PublishedKey] {
    let now = Date()
    return state.withLock { $0.published.filter { $0.retireTime.map { $0 > now } ?? true } }
  }

  /// The published keys as messages.
  var publishedMessages: [Smartschool_Identity_V1_SigningKey] {
    let now = Date()
    let current = signer.keyID
    return state.withLock { s in
      s.stored.filter { $0.retireAt.map { $0 > now } ?? true }.map {
        Self.message($0, current: $0.id == current)
      }
    }
  }

  private static func message(_ k: StoredKey, current: Bool)
    -> Smartschool_Identity_V1_SigningKey
  {
    .with {
      $0.keyID = k.id
      $0.algorithm = "EdDSA"
      $0.publicKey = k.publicKey
      $0.createTime = .init(date: k.createdAt)
      if let r = k.retireAt { $0.retireTime = .init(date: r) }
      $0.current = current
    }
  }

  /// Makes a new current key; the old one retires once its last token has expired.
  func rotate() async throws -> Smartschool_Identity_V1_SigningKey {
    let key = KeyRing.newKey()
    // Old tokens live at most one access-token lifetime (plus verifier leeway).
    try await store.addSigningKey(key, retireOthersAt: Date().addingTimeInterval(accessTokenTTL + 60))
    let keys = try await store.signingKeys()
    var newState = try KeyRing.state(from: keys)
    state.withLock { s in
      newState.generation = s.generation + 1
      s = newState
    }
    onChange?(newState.currentCreatedAt)
    // Not read back from the ring: a rotation at the same moment may already have replaced it.
    return Self.message(key, current: true)
  }
}

/// Random secrets and their storage hashes.
enum Secrets {
  /// `bytes` random bytes as base64url text.
  static func random(bytes: Int = 32) -> String {
    var rng = SystemRandomNumberGenerator()
    return Base64URL.encode((0..<bytes).map { _ in UInt8.random(in: 0...255, using: &rng) })
  }

  /// A new service-account client secret. A fixed prefix: secret scanners recognise it, and it
  /// never starts with '-', which command-line parsers would take for a flag.
  static func clientSecret() -> String { "sas_" + random() }

  /// A one-time activation code a person can type: 10 characters without look-alikes.
  static func activationCode() -> String {
    let alphabet = Array("ABCDEFGHJKMNPQRSTUVWXYZ23456789")
    var rng = SystemRandomNumberGenerator()
    return String((0..<10).map { _ in alphabet.randomElement(using: &rng)! })
  }

  /// SHA-256 hex of a high-entropy secret (refresh tokens, client secrets, activation codes).
  /// A slow hash is not needed: these secrets are random, not chosen by people.
  static func digest(_ secret: String) -> String {
    SHA256.hash(data: Data(secret.utf8)).map { String(format: "%02x", $0) }.joined()
  }
}
