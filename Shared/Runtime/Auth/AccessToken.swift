import Crypto
import Foundation
import SmartSchoolModel
import Synchronization

/// The claims of a SmartSchool access token, a compact JWS (JWT) signed with Ed25519
/// (`alg: EdDSA`). Header: `{"alg":"EdDSA","typ":"JWT","kid":…}`.
public struct AccessTokenClaims: Codable, Hashable, Sendable {
  /// One role binding as a claim.
  public struct Binding: Codable, Hashable, Sendable {
    /// Role name (``Role`` raw value).
    public var r: String
    /// Org id the role is held at.
    public var o: String
    /// Org path of that org.
    public var p: String
    /// Ids of the teaching points the org manages as their central school (一体化管理), which
    /// the binding reaches too. They lie beside the org, in its county, so an id is enough: the
    /// path is the org's parent path and the id. Absent when the org manages none.
    public var m: [String]?

    /// A binding claim; `m` lists the teaching points the org manages, if any.
    public init(r: String, o: String, p: String, m: [String]? = nil) {
      self.r = r
      self.o = o
      self.p = p
      self.m = m
    }
  }

  /// Issuer.
  public var iss: String
  /// Subject: the user id.
  public var sub: String
  /// Username.
  public var usr: String
  /// User kind.
  public var knd: String
  /// Session id; revoking the session refuses the token everywhere (see ``Principal/sessionID``).
  public var sid: String
  /// Issued at (seconds since 1970).
  public var iat: Int64
  /// Expiry (seconds since 1970).
  public var exp: Int64
  /// Role bindings.
  public var rol: [Binding]
  /// Audience: the services (``smartSchoolServices``) the token may be used at. Absent in
  /// first-party tokens (gRPC Login, service accounts), which every service accepts.
  public var aud: [String]?
  /// The OAuth scopes granted, space separated; absent in first-party tokens.
  public var scope: String?
  /// The OpenID Connect client the token was issued to (authorized party); absent in
  /// first-party tokens.
  public var azp: String?

  /// Claims for a token; `aud`, `scope` and `azp` are set for tokens issued to an OpenID
  /// Connect client.
  public init(
    iss: String, sub: String, usr: String, knd: String, sid: String, iat: Int64, exp: Int64,
    rol: [Binding], aud: [String]? = nil, scope: String? = nil, azp: String? = nil
  ) {
    self.iss = iss
    self.sub = sub
    self.usr = usr
    self.knd = knd
    self.sid = sid
    self.iat = iat
    self.exp = exp
    self.rol = rol
    self.aud = aud
    self.scope = scope
    self.azp = azp
  }

  /// The principal these claims describe; bindings with an unknown role or path are dropped.
  public var principal: Principal {
    Principal(
      userID: sub, username: usr, kind: knd,
      bindings: rol.compactMap { b in
        guard let role = Role(rawValue: b.r), let path = OrgPath(b.p) else { return nil }
        let managed = (b.m ?? []).compactMap { id -> OrgPath? in
          guard !id.isEmpty, !id.contains("/") else { return nil }
          return path.parent?.appending(id)
        }
        return RoleGrant(role: role, orgID: b.o, orgPath: path, managedPaths: managed)
      },
      sessionID: sid,
      issuedAt: Date(timeIntervalSince1970: TimeInterval(iat)),
      expiresAt: Date(timeIntervalSince1970: TimeInterval(exp)),
      audience: aud, scope: scope, clientID: azp)
  }
}

/// The issuer name identity writes into every token.
public let smartSchoolTokenIssuer = "smartschool-identity"

/// The services a token's audience (`aud`) may name: each service's ``ServiceDefinition/name``.
public let smartSchoolServices = ["identity", "catalogue", "assessment", "supervision"]

/// Base64url without padding (RFC 7515 §2).
public enum Base64URL {
  /// Encodes bytes.
  public static func encode<D: DataProtocol>(_ data: D) -> String {
    Data(data).base64EncodedString()
      .replacingOccurrences(of: "+", with: "-")
      .replacingOccurrences(of: "/", with: "_")
      .replacingOccurrences(of: "=", with: "")
  }

  /// Decodes text (padding optional); `nil` when it is not base64url.
  public static func decode<S: StringProtocol>(_ text: S) -> Data? {
    // Straight over the UTF-8 bytes: this runs on every verified token.
    var out = [UInt8]()
    out.reserveCapacity(text.utf8.count * 3 / 4)
    var buffer: UInt32 = 0
    var bits = 0
    for c in text.utf8 {
      let v: UInt8
      switch c {
      case 0x41...0x5A: v = c - 0x41
      case 0x61...0x7A: v = c - 0x61 + 26
      case 0x30...0x39: v = c - 0x30 + 52
      case 0x2D, 0x2B: v = 62
      case 0x5F, 0x2F: v = 63
      case 0x3D: continue
      default: return nil
      }
      buffer = (buffer << 6) | UInt32(v)
      bits += 6
      if bits >= 8 {
        bits -= 8
        out.append(UInt8((buffer >> UInt32(bits)) & 0xFF))
      }
    }
    if bits >= 6 { return nil }
    return Data(out)
  }
}

/// Signs access tokens with an Ed25519 private key (identity only).
public struct TokenSigner: Sendable {
  /// The key id written into the header.
  public let keyID: String
  private let key: Curve25519.Signing.PrivateKey
  private let encodedHeader: String

  /// A signer for the key `key` published as `keyID`.
  public init(keyID: String, key: Curve25519.Signing.PrivateKey) {
    self.keyID = keyID
    self.key = key
    let header = #"{"alg":"EdDSA","typ":"JWT","kid":"\#(keyID)"}"#
    self.encodedHeader = Base64URL.encode(Data(header.utf8))
  }

  /// The compact JWS of the claims.
  public func sign(_ claims: AccessTokenClaims) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    let payload = Base64URL.encode(try encoder.encode(claims))
    let signingInput = encodedHeader + "." + payload
    let signature = try key.signature(for: Data(signingInput.utf8))
    return signingInput + "." + Base64URL.encode(signature)
  }
}

/// A public key identity publishes, as verifiers hold it.
public struct PublishedKey: Sendable {
  /// The key id (`kid`).
  public var keyID: String
  /// The Ed25519 public key.
  public var publicKey: Curve25519.Signing.PublicKey
  /// After this moment no token signed by the key is accepted; `nil` while current.
  public var retireTime: Date?

  /// A key published as `keyID`.
  public init(keyID: String, publicKey: Curve25519.Signing.PublicKey, retireTime: Date?) {
    self.keyID = keyID
    self.publicKey = publicKey
    self.retireTime = retireTime
  }
}

/// Verifies access tokens locally with the keys identity publishes.
///
/// Keys are fetched through `keySource` (over gRPC from identity, or from identity's own
/// store), cached, and refetched when a token names an unknown key id, so a freshly rotated
/// key works at once (a key id that a fetch did not find is not fetched for again within
/// `refetchInterval`, and fetches are capped at four a second, so a flood of forged key ids
/// cannot hammer identity). While identity is unreachable the cached keys keep working.
public final class TokenVerifier: Sendable {
  /// Fetches the currently published keys.
  public typealias KeySource = @Sendable () async throws -> [PublishedKey]

  /// A token whose signature checked out: its claims and the key id it was signed with.
  private struct Verified {
    var claims: AccessTokenClaims
    var principal: Principal
    var keyID: String
  }

  private struct State {
    var keys: [String: PublishedKey] = [:]
    var lastFetch: ContinuousClock.Instant? = nil
    /// Key ids that a fetch did not find, and when: not refetched for them until the
    /// refetch interval has passed.
    var missingKeys: [String: ContinuousClock.Instant] = [:]
    /// Header segment → key id, so that the common header is parsed once.
    var headerCache: [Substring: String] = [:]
    /// Whole token text already verified → its claims. A token is reused for many calls
    /// within its lifetime; the same bytes under the same key id need neither the signature
    /// check (the largest per-call cost of a busy service) nor the JSON decoding again. Expiry,
    /// key retirement and revocation are still checked on every call.
    var verified: [String: Verified] = [:]
    /// Sessions identity has revoked (logout, refresh-token reuse, deactivated account), and
    /// when: their tokens are refused although signed and unexpired.
    var revokedSessions: [String: Date] = [:]
  }

  /// How long a revoked session is remembered: longer than any access token lives (identity
  /// refuses an access-token lifetime above this), so a revoked session's tokens expire before
  /// it is forgotten.
  public static let revocationMemory: TimeInterval = 24 * 3600

  private static let verifiedCacheLimit = 10_000

  private let keySource: KeySource
  private let state = Mutex(State())
  private let refetchInterval: Duration
  private let leeway: TimeInterval
  private let now: @Sendable () -> Date

  /// A verifier reading keys from `keySource`.
  ///
  /// - Parameters:
  ///   - refetchInterval: how long a key id that a fetch did not find is not fetched for
  ///     again (fetches for unknown key ids are also capped at four a second overall).
  ///   - leeway: clock skew tolerated on expiry, in seconds.
  ///   - now: the clock (tests substitute their own).
  public init(
    keySource: @escaping KeySource, refetchInterval: Duration = .seconds(5),
    leeway: TimeInterval = 30, now: @escaping @Sendable () -> Date = { Date() }
  ) {
    self.keySource = keySource
    self.refetchInterval = refetchInterval
    self.leeway = leeway
    self.now = now
  }

  /// Fetches the keys now (e.g. at start-up); failures are left for the next attempt.
  public func refresh() async throws {
    let keys = try await keySource()
    state.withLock {
      $0.keys = Dictionary(keys.map { ($0.keyID, $0) }, uniquingKeysWith: { _, b in b })
      $0.lastFetch = .now
    }
  }

  /// The number of keys cached.
  public var cachedKeyCount: Int { state.withLock { $0.keys.count } }

  /// Refuses from now on every token of these sessions (session id → when it was revoked).
  /// Entries older than ``revocationMemory`` are dropped, since their tokens have expired.
  public func revokeSessions(_ sessions: [String: Date]) {
    guard !sessions.isEmpty else { return }
    let horizon = now().addingTimeInterval(-TokenVerifier.revocationMemory)
    state.withLock { s in
      for (id, time) in sessions where time > horizon { s.revokedSessions[id] = time }
      if s.revokedSessions.count > 4096 {
        s.revokedSessions = s.revokedSessions.filter { $0.value > horizon }
      }
    }
  }

  /// The number of revoked sessions remembered.
  public var revokedSessionCount: Int { state.withLock { $0.revokedSessions.count } }

  /// Verifies `token` and returns its principal, or throws UNAUTHENTICATED saying why
  /// (UNAVAILABLE when it names a key not cached and identity's keys could not be fetched).
  public func verify(_ token: String) async throws(ServiceError) -> Principal {
    if let principal = try verifiedBefore(token) { return principal }
    let parsed = try parse(token)
    var key = state.withLock { $0.keys[parsed.keyID] }
    if key == nil {
      key = try await refetch(for: parsed.keyID)
    }
    guard let key else { throw .unauthenticated("access token signed by an unknown key") }
    return try check(parsed, with: key)
  }

  /// Verifies synchronously with the cached keys only (no fetch); for hot paths and
  /// benchmarks. UNAUTHENTICATED for an unknown key id.
  public func verifyCached(_ token: String) throws(ServiceError) -> Principal {
    if let principal = try verifiedBefore(token) { return principal }
    let parsed = try parse(token)
    guard let key = state.withLock({ $0.keys[parsed.keyID] }) else {
      throw .unauthenticated("access token signed by an unknown key")
    }
    return try check(parsed, with: key)
  }

  private struct Parsed {
    var keyID: String
    var signingInput: Substring
    var payload: Substring
    var signature: Substring
  }

  /// Splits a token already length-checked by ``verifiedBefore(_:)``.
  private func parse(_ token: String) throws(ServiceError) -> Parsed {
    // Scanned as bytes: Character search and Foundation's substring search cost a busy
    // service a visible share of its CPU.
    let dot = UInt8(ascii: ".")
    let bytes = token.utf8
    guard let firstDot = bytes.firstIndex(of: dot), let lastDot = bytes.lastIndex(of: dot),
      firstDot != lastDot,
      !bytes[bytes.index(after: firstDot)..<lastDot].contains(dot)
    else { throw .unauthenticated("malformed access token") }
    let header = token[..<firstDot]
    let payload = token[token.index(after: firstDot)..<lastDot]
    let signature = token[token.index(after: lastDot)...]
    let keyID: String
    if let cached = state.withLock({ $0.headerCache[header] }) {
      keyID = cached
    } else {
      struct Header: Decodable {
        var alg: String
        var kid: String
      }
      guard let data = Base64URL.decode(header),
        let h = try? JSONDecoder().decode(Header.self, from: data), h.alg == "EdDSA"
      else { throw .unauthenticated("malformed access token header") }
      keyID = h.kid
      state.withLock {
        if $0.headerCache.count < 64 { $0.headerCache[header] = h.kid }
      }
    }
    return Parsed(
      keyID: keyID, signingInput: token[..<lastDot], payload: payload, signature: signature)
  }

  /// The principal of a token whose signature was checked before, after the checks that
  /// change with time (expiry, key retirement, revocation); nil when the token is not in the
  /// cache or its key is no longer known. One lock for the whole lookup: this runs on every
  /// authenticated call, from every thread.
  private func verifiedBefore(_ token: String) throws(ServiceError) -> Principal? {
    guard token.utf8.count <= 16384 else { throw .unauthenticated("access token too long") }
    let hit = state.withLock { s -> (Verified, PublishedKey, revoked: Bool)? in
      guard let verified = s.verified[token], let key = s.keys[verified.keyID] else { return nil }
      let session = verified.principal.sessionID
      return (verified, key, !session.isEmpty && s.revokedSessions[session] != nil)
    }
    guard let (verified, key, revoked) = hit else { return nil }
    try checkCurrent(verified.claims, key: key, revoked: revoked)
    return verified.principal
  }

  private func check(_ parsed: Parsed, with key: PublishedKey) throws(ServiceError) -> Principal {
    guard let signature = Base64URL.decode(parsed.signature), signature.count == 64,
      key.publicKey.isValidSignature(signature, for: Data(parsed.signingInput.utf8))
    else { throw .unauthenticated("access token signature is invalid") }
    guard let payload = Base64URL.decode(parsed.payload),
      let claims = try? JSONDecoder().decode(AccessTokenClaims.self, from: payload)
    else { throw .unauthenticated("malformed access token claims") }
    let principal = claims.principal
    // Cached by the whole token (header, payload, signature) once its signature checked out;
    // a key id always names the same key.
    let revoked = state.withLock { s -> Bool in
      if s.verified.count >= TokenVerifier.verifiedCacheLimit { s.verified.removeAll() }
      s.verified[parsed.signingInput.base] = Verified(
        claims: claims, principal: principal, keyID: parsed.keyID)
      return !principal.sessionID.isEmpty && s.revokedSessions[principal.sessionID] != nil
    }
    try checkCurrent(claims, key: key, revoked: revoked)
    return principal
  }

  /// The checks a verified signature does not settle once and for all.
  private func checkCurrent(_ claims: AccessTokenClaims, key: PublishedKey, revoked: Bool)
    throws(ServiceError)
  {
    let now = self.now()
    guard claims.iss == smartSchoolTokenIssuer else {
      throw .unauthenticated("access token from an unknown issuer")
    }
    guard TimeInterval(claims.exp) + leeway > now.timeIntervalSince1970 else {
      throw .unauthenticated("access token expired")
    }
    if let retire = key.retireTime, now > retire.addingTimeInterval(leeway) {
      throw .unauthenticated("access token signed by a retired key")
    }
    if revoked {
      throw .unauthenticated("the session of this access token has been revoked; log in again")
    }
  }

  /// The key `keyID` after fetching the published keys, or nil when identity does not
  /// publish it. UNAVAILABLE when the fetch itself failed (identity unreachable or too slow):
  /// the token may well be valid, so the caller is told to retry, not that it is not signed in.
  private func refetch(for keyID: String) async throws(ServiceError) -> PublishedKey? {
    // A new key id (after a rotation) is fetched at once, but at most once per interval per
    // key id and a few times a second overall, so forged key ids cannot hammer identity. A
    // call that arrives just after another fetch waits for the next slot instead of failing.
    for attempt in 0..<2 {
      let decision = state.withLock { s -> (due: Bool, wait: Duration?, known: PublishedKey?) in
        if let known = s.keys[keyID] { return (false, nil, known) }
        let now = ContinuousClock.now
        if let missed = s.missingKeys[keyID], missed.duration(to: now) < refetchInterval {
          return (false, nil, nil)
        }
        if let last = s.lastFetch, last.duration(to: now) < .milliseconds(250) {
          return (false, .milliseconds(250) - last.duration(to: now), nil)
        }
        s.lastFetch = now
        return (true, nil, nil)
      }
      if let known = decision.known { return known }
      if let wait = decision.wait, attempt == 0 {
        try? await Task.sleep(for: wait)
        continue
      }
      guard decision.due else { return nil }
      let keys: [PublishedKey]
      do {
        keys = try await keySource()
      } catch {
        throw .unavailable("identity's signing keys could not be fetched; retry shortly")
      }
      return state.withLock {
        for k in keys { $0.keys[k.keyID] = k }
        if $0.keys[keyID] == nil {
          if $0.missingKeys.count > 1000 { $0.missingKeys.removeAll() }
          $0.missingKeys[keyID] = .now
        }
        return $0.keys[keyID]
      }
    }
    return nil
  }

}
