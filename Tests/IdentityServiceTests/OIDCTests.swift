import Crypto
import CryptoExtras
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
@testable import IdentityService
import Logging
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// An identity service with its HTTP port on (port 0) and a gRPC client, for `body`.
func withOpenIDIdentity(
  directory: TemporaryDirectory? = nil, issuer: String? = nil,
  settings base: IdentitySettings = .forTests(),
  _ body: (_ identity: IdentityClient, _ http: URL, _ server: IdentityHTTPServer) async throws
    -> Void
) async throws {
  let dir = try directory ?? TemporaryDirectory()
  defer { if directory == nil { dir.remove() } }
  let config = try await TestStore.config(service: "identity", directory: dir)
  var settings = base
  settings.http.port = 0
  settings.http.issuerURL = issuer ?? base.http.issuerURL
  var logger = Logger(label: "identity")
  logger.logLevel = .critical
  let definition = try await buildIdentityService(
    config: config, settings: settings, logger: logger)
  try await withHost(definition, config: config) { port, _ in
    let server = try #require(definition.identityHTTPServer)
    let httpPort = try await server.boundPort()
    try await withClient(port: port) { client in
      try await body(
        IdentityClient(wrapping: client), URL(string: "http://127.0.0.1:\(httpPort)")!, server)
    }
  }
}

/// A plain HTTP GET: status, body and headers.
func httpGet(_ url: URL) async throws -> (status: Int, body: Data, headers: [String: String]) {
  let (data, response) = try await URLSession.shared.data(from: url)
  let http = try #require(response as? HTTPURLResponse)
  var headers: [String: String] = [:]
  for (key, value) in http.allHeaderFields {
    headers[String(describing: key).lowercased()] = String(describing: value)
  }
  return (http.statusCode, data, headers)
}

/// The keys of a JWKS document.
func jwksKeys(_ data: Data) throws -> [[String: String]] {
  let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
  return try #require(object["keys"] as? [[String: String]])
}

/// Whether `jws` (compact RS256) verifies with the JWK among `keys` that its header names.
func verifiesRS256(_ jws: String, with keys: [[String: String]]) throws -> Bool {
  let parts = jws.split(separator: ".", omittingEmptySubsequences: false)
  guard parts.count == 3, let headerData = Base64URL.decode(parts[0]),
    let header = try JSONSerialization.jsonObject(with: headerData) as? [String: Any],
    header["alg"] as? String == "RS256", let kid = header["kid"] as? String,
    let jwk = keys.first(where: { $0["kid"] == kid }), let n = jwk["n"].flatMap(Base64URL.decode),
    let e = jwk["e"].flatMap(Base64URL.decode), let signature = Base64URL.decode(parts[2])
  else { return false }
  let key = try _RSA.Signing.PublicKey(n: n, e: e)
  return key.isValidSignature(
    _RSA.Signing.RSASignature(rawRepresentation: signature),
    for: SHA256.hash(data: Data("\(parts[0]).\(parts[1])".utf8)), padding: .insecurePKCS1v1_5)
}

@Suite("Identity as an OpenID Connect provider")
struct OIDCTests {
  @Test func theHTTPPortIsOffUnlessConfiguredAndListensOnAFreePortWhenZero() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let config = try await TestStore.config(service: "identity", directory: dir)
    var logger = Logger(label: "identity")
    logger.logLevel = .critical
    let plain = try await buildIdentityService(
      config: config, settings: .forTests(), logger: logger)
    #expect(plain.identityHTTPServer == nil)
    if let store = plain.store, store.backend == .postgresql { await store.close() }

    var served: URL?
    try await withOpenIDIdentity { _, http, server in
      #expect(http.port != 0)
      #expect(server.issuer == "http://127.0.0.1:\(http.port!)")
      let missing = try await httpGet(http.appendingPathComponent("no-such-endpoint"))
      #expect(missing.status == 404)
      served = http
    }
    // Stopped with the host: nothing listens there any more.
    let url = try #require(served)
    await #expect(throws: (any Error).self) { _ = try await httpGet(url) }
  }

  @Test func aConfiguredIssuerIsUsedAsIsAndABadOneIsRefused() async throws {
    try await withOpenIDIdentity(issuer: "https://sso.example.edu.cn/identity") {
      identity, _, server in
      #expect(server.issuer == "https://sso.example.edu.cn/identity")
      // gRPC is served beside it as before.
      let keys = try await identity.listSigningKeys(.init()).keys
      #expect(keys.count == 1)
    }
    for bad in ["ftp://x.example", "https://x.example/", "https://x.example/?a=1", "not a url"] {
      let dir = try TemporaryDirectory()
      defer { dir.remove() }
      let config = try await TestStore.config(service: "identity", directory: dir)
      var settings = IdentitySettings.forTests()
      settings.http.port = 0
      settings.http.issuerURL = bad
      var logger = Logger(label: "identity")
      logger.logLevel = .critical
      await #expect(throws: ServiceError.self, "issuer \(bad)") {
        _ = try await buildIdentityService(config: config, settings: settings, logger: logger)
      }
    }
  }

  @Test func theJWKSPublishesAnRS256KeyThatVerifiesTheProvidersSignature() async throws {
    try await withOpenIDIdentity { _, http, server in
      let response = try await httpGet(http.appendingPathComponent(".well-known/jwks.json"))
      #expect(response.status == 200)
      #expect(response.headers["content-type"] == "application/json")
      let keys = try jwksKeys(response.body)
      #expect(keys.count == 1)
      let key = try #require(keys.first)
      #expect(key["kty"] == "RSA")
      #expect(key["alg"] == "RS256")
      #expect(key["use"] == "sig")
      let modulus = try #require(key["n"].flatMap(Base64URL.decode))
      #expect(modulus.count * 8 >= 2048)
      let signed = try await server.keys.sign(payload: Data(#"{"sub":"u1"}"#.utf8))
      #expect(try verifiesRS256(signed, with: keys))
      // A changed payload no longer verifies.
      let parts = signed.split(separator: ".")
      let forged = "\(parts[0]).\(Base64URL.encode(Data(#"{"sub":"u2"}"#.utf8))).\(parts[2])"
      #expect(try verifiesRS256(forged, with: keys) == false)
    }
  }

  @Test func rotatingTheSigningKeyRotatesTheRSAKeyAndKeepsTheOldOnePublished() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    var before: [[String: String]] = []
    var signedBefore = ""
    try await withOpenIDIdentity(directory: dir) { identity, http, server in
      let jwks = http.appendingPathComponent(".well-known/jwks.json")
      before = try jwksKeys(try await httpGet(jwks).body)
      signedBefore = try await server.keys.sign(payload: Data("{}".utf8))
      let admin = try await login(identity, "admin", testAdminPassword)
      _ = try await identity.rotateSigningKey(.init(), metadata: bearer(admin))
      let after = try jwksKeys(try await httpGet(jwks).body)
      #expect(after.count == 2)
      #expect(after.first?["kid"] != before.first?["kid"])
      #expect(after.contains { $0["kid"] == before.first?["kid"] })
      // Tokens signed before the rotation still verify; new ones use the new key.
      #expect(try verifiesRS256(signedBefore, with: after))
      let signedAfter = try await server.keys.sign(payload: Data("{}".utf8))
      #expect(try verifiesRS256(signedAfter, with: after))
      #expect(try verifiesRS256(signedAfter, with: before) == false)
    }
    // A restart on the same store publishes the same keys (they are stored, not made anew).
    try await withOpenIDIdentity(directory: dir) { _, http, _ in
      let again = try jwksKeys(
        try await httpGet(http.appendingPathComponent(".well-known/jwks.json")).body)
      #expect(Set(again.compactMap { $0["kid"] }).contains(before.first?["kid"] ?? "-"))
      #expect(try verifiesRS256(signedBefore, with: again))
    }
  }
}

/// Two identity replicas on one PostgreSQL database with their HTTP ports on.
@Suite(
  "OpenID Connect keys across identity replicas",
  .enabled(if: TestStore.postgresServer != nil))
struct OIDCReplicaTests {
  @Test func aRotationOnOneReplicaIsPublishedAndUsedByTheOther() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    try await withOpenIDIdentity(directory: dir) { a, httpA, _ in
      try await withOpenIDIdentity(directory: dir) { _, httpB, serverB in
        let path = ".well-known/jwks.json"
        let beforeA = try jwksKeys(try await httpGet(httpA.appendingPathComponent(path)).body)
        let beforeB = try jwksKeys(try await httpGet(httpB.appendingPathComponent(path)).body)
        // One RSA key for the pair, whichever replica asked first.
        #expect(beforeA == beforeB)
        let admin = try await login(a, "admin", testAdminPassword)
        _ = try await a.rotateSigningKey(.init(), metadata: bearer(admin))
        let afterB = try jwksKeys(try await httpGet(httpB.appendingPathComponent(path)).body)
        #expect(afterB.count == 2)
        #expect(afterB.first?["kid"] != beforeA.first?["kid"])
        let signedByB = try await serverB.keys.sign(payload: Data("{}".utf8))
        let afterA = try jwksKeys(try await httpGet(httpA.appendingPathComponent(path)).body)
        #expect(afterA == afterB)
        #expect(try verifiesRS256(signedByB, with: afterA))
      }
    }
  }
}
