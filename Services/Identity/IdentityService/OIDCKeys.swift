import Crypto
import CryptoExtras
import Foundation
import ServiceRuntime
import Synchronization

/// The RS256 keys of ID tokens, following identity's Ed25519 signing keys (``KeyRing``): the
/// RSA key paired with the current signing key signs, and the RSA keys of every published
/// signing key (the current one and retired ones whose tokens may still live) are in the
/// JWKS. The pair of a new signing key is made on first use, by whichever replica needs it
/// first; the store keeps one per signing key.
final class OIDCKeys: Sendable {
  /// A usable RSA key.
  struct Key: Sendable {
    var id: String
    var privateKey: _RSA.Signing.PrivateKey
  }

  private let store: any OIDCStore
  private let keys: KeyRing
  private let shared: Bool
  /// Keys by their paired signing key's id.
  private let known = Mutex<[String: Key]>([:])

  init(store: any OIDCStore, keys: KeyRing, shared: Bool) {
    self.store = store
    self.keys = keys
    self.shared = shared
  }

  /// The key that signs ID tokens now, made if the current signing key has none yet. With
  /// several replicas, a rotation made by another one is adopted first.
  func current() async throws -> Key {
    if shared { try await keys.reload() }
    let paired = keys.signer.keyID
    if let key = known.withLock({ $0[paired] }) { return key }
    try await load()
    if let key = known.withLock({ $0[paired] }) { return key }
    // Key generation is slow (tens of milliseconds): outside any transaction.
    let made = try _RSA.Signing.PrivateKey(keySize: .bits2048)
    let stored = try await store.addRSAKey(
      StoredRSAKey(
        id: "r" + EntityID.make().prefix(12), pairedKeyID: paired,
        privateKey: made.derRepresentation, createdAt: Date()))
    let key = try Self.key(stored)
    known.withLock { $0[paired] = key }
    return key
  }

  /// The keys to publish: those of the published signing keys, current first.
  func published() async throws -> [Key] {
    let current = try await current()
    let pairs = keys.publishedMessages.map(\.keyID)
    if pairs.contains(where: { id in known.withLock { $0[id] } == nil }) { try await load() }
    let others = known.withLock { known in
      pairs.compactMap { known[$0] }.filter { $0.id != current.id }
    }
    return [current] + others
  }

  /// The JSON Web Key Set of ``published()`` (RFC 7517), as served at /.well-known/jwks.json.
  func jwks() async throws -> Data {
    var entries: [[String: String]] = []
    for key in try await published() {
      let primitives = try key.privateKey.publicKey.getKeyPrimitives()
      entries.append([
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": key.id,
        "n": Base64URL.encode(primitives.modulus), "e": Base64URL.encode(primitives.publicExponent),
      ])
    }
    return try JSONSerialization.data(
      withJSONObject: ["keys": entries], options: [.sortedKeys, .withoutEscapingSlashes])
  }

  /// A compact JWS (RS256) of `payload` (the claims as JSON) under the current key; `type`
  /// is its `typ` header ("at+jwt" for access tokens, RFC 9068).
  func sign(payload: Data, type: String = "JWT") async throws -> String {
    let key = try await current()
    let header = try JSONSerialization.data(
      withJSONObject: ["alg": "RS256", "typ": type, "kid": key.id], options: [.sortedKeys])
    let input = Base64URL.encode(header) + "." + Base64URL.encode(payload)
    let signature = try key.privateKey.signature(
      for: SHA256.hash(data: Data(input.utf8)), padding: .insecurePKCS1v1_5)
    return input + "." + Base64URL.encode(signature.rawRepresentation)
  }

  /// The claims of a compact JWS that one of the published keys signed with RS256, when its
  /// `typ` is `type`; `nil` for anything else. Expiry and issuer are the caller's to check.
  func verify(_ jws: String, type: String) async throws -> [String: Any]? {
    let parts = jws.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count == 3, jws.utf8.count <= 16_384,
      let headerData = Base64URL.decode(parts[0]),
      let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any],
      header["alg"] as? String == "RS256", header["typ"] as? String == type,
      let kid = header["kid"] as? String, let signature = Base64URL.decode(parts[2]),
      let payload = Base64URL.decode(parts[1])
    else { return nil }
    guard let key = try await published().first(where: { $0.id == kid }) else { return nil }
    let input = Data(jws.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
    guard
      key.privateKey.publicKey.isValidSignature(
        _RSA.Signing.RSASignature(rawRepresentation: signature), for: SHA256.hash(data: input),
        padding: .insecurePKCS1v1_5)
    else { return nil }
    return try? JSONSerialization.jsonObject(with: payload) as? [String: Any]
  }

  private func load() async throws {
    let stored = try await store.rsaKeys()
    let loaded = try stored.map { ($0.pairedKeyID, try Self.key($0)) }
    known.withLock { known in
      for (paired, key) in loaded where known[paired] == nil { known[paired] = key }
    }
  }

  private static func key(_ stored: StoredRSAKey) throws -> Key {
    Key(id: stored.id, privateKey: try _RSA.Signing.PrivateKey(derRepresentation: stored.privateKey))
  }
}
