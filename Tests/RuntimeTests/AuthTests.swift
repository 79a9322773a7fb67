import Crypto
import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import Synchronization
import Testing

@Suite("Access tokens")
struct AccessTokenTests {
  let key = Curve25519.Signing.PrivateKey()

  func claims(exp: Int64 = Int64(Date().timeIntervalSince1970) + 600) -> AccessTokenClaims {
    AccessTokenClaims(
      iss: smartSchoolTokenIssuer, sub: "u1", usr: "teacher1", knd: "teacher", sid: "s1",
      iat: Int64(Date().timeIntervalSince1970), exp: exp,
      rol: [.init(r: "teacher", o: "school", p: "/p/c/k/school/")])
  }

  func verifier(_ keys: [PublishedKey]) -> TokenVerifier {
    TokenVerifier(keySource: { keys })
  }

  @Test func validTokensVerify() async throws {
    let token = try TokenSigner(keyID: "k1", key: key).sign(claims())
    let v = verifier([PublishedKey(keyID: "k1", publicKey: key.publicKey, retireTime: nil)])
    let p = try await v.verify(token)
    #expect(p.userID == "u1")
    #expect(
      p.bindings == [
        RoleGrant(role: .teacher, orgID: "school", orgPath: OrgPath("/p/c/k/school/")!)
      ])
  }

  @Test func bearerTokensAreFoundWhateverTheCaseAndSpacing() {
    func token(_ header: String) -> String? {
      var metadata = Metadata()
      metadata.addString(header, forKey: "authorization")
      return Authenticator.bearerToken(in: metadata)
    }
    #expect(token("Bearer abc.def.ghi") == "abc.def.ghi")
    #expect(token("  bearer   abc.def.ghi \t") == "abc.def.ghi")
    #expect(token("BEARER 令牌") == "令牌")
    #expect(token("Basic YTpi") == nil)
    #expect(token("Bearer ") == nil)
    #expect(token("Bearerabc") == nil)
    #expect(token("") == nil)
    #expect(Authenticator.bearerToken(in: [:]) == nil)
  }

  @Test func tamperedExpiredAndForeignTokensFail() async throws {
    let signer = TokenSigner(keyID: "k1", key: key)
    let v = verifier([PublishedKey(keyID: "k1", publicKey: key.publicKey, retireTime: nil)])
    let good = try signer.sign(claims())
    let parts = good.split(separator: ".").map(String.init)
    // The good token verifies (and is now remembered as verified)…
    #expect(try await v.verify(good).userID == claims().sub)
    // …which must not help a forgery: swap in a payload claiming another user, keeping the
    // signature.
    var forged = claims()
    forged.sub = "admin"
    let forgedPayload = Base64URL.encode(try JSONEncoder().encode(forged))
    await #expect(throws: ServiceError.self) {
      _ = try await v.verify(parts[0] + "." + forgedPayload + "." + parts[2])
    }
    // A remembered token still expires: the same bytes, verified again after their expiry.
    let clock = Mutex(Date())
    let timed = TokenVerifier(
      keySource: { [PublishedKey(keyID: "k1", publicKey: key.publicKey, retireTime: nil)] },
      now: { clock.withLock { $0 } })
    #expect(try await timed.verify(good).userID == claims().sub)
    clock.withLock { $0 = $0.addingTimeInterval(7200) }
    await #expect(throws: ServiceError.unauthenticated("access token expired")) {
      _ = try await timed.verify(good)
    }
    let expired = try signer.sign(claims(exp: Int64(Date().timeIntervalSince1970) - 3600))
    await #expect(throws: ServiceError.unauthenticated("access token expired")) {
      _ = try await v.verify(expired)
    }
    let otherKey = TokenSigner(keyID: "k1", key: Curve25519.Signing.PrivateKey())
    await #expect(throws: ServiceError.self) { _ = try await v.verify(try otherKey.sign(claims())) }
    await #expect(throws: ServiceError.self) { _ = try await v.verify("not-a-token") }
    await #expect(throws: ServiceError.self) { _ = try await v.verify("") }
    // Not three dot-separated parts: refused before any key is looked up.
    for shape in [
      parts[0] + "." + parts[1], parts[0] + "." + parts[1] + "." + parts[2] + "." + parts[2],
      ".", parts[0] + "." + parts[1] + ".x." + parts[2], "...",
    ] {
      await #expect(throws: ServiceError.unauthenticated("malformed access token")) {
        _ = try await v.verify(shape)
      }
    }
    // Three parts, but empty ones: refused too.
    for shape in [parts[0] + ".." + parts[2], ".."] {
      await #expect(throws: ServiceError.self) { _ = try await v.verify(shape) }
    }
    // An oversized token is refused before it is hashed for the cache or parsed.
    let huge = parts[0] + "." + String(repeating: "A", count: 20_000) + "." + parts[2]
    await #expect(throws: ServiceError.unauthenticated("access token too long")) {
      _ = try await v.verify(huge)
    }
  }

  @Test func unknownKeyIdsTriggerOneRefetch() async throws {
    let fetches = Mutex(0)
    let newKey = Curve25519.Signing.PrivateKey()
    let v = TokenVerifier(
      keySource: {
        fetches.withLock { $0 += 1 }
        return [
          PublishedKey(keyID: "k1", publicKey: key.publicKey, retireTime: nil),
          PublishedKey(keyID: "k2", publicKey: newKey.publicKey, retireTime: nil),
        ]
      }, refetchInterval: .seconds(60))
    // Nothing cached yet: the unknown key id fetches once.
    let token = try TokenSigner(keyID: "k2", key: newKey).sign(claims())
    _ = try await v.verify(token)
    _ = try await v.verify(token)
    #expect(fetches.withLock { $0 } == 1)
    // A forged key id is looked up once (after waiting for the next fetch slot), then not
    // again within the refetch interval: it cannot make the verifier hammer identity.
    let bogus = try TokenSigner(keyID: "k9", key: newKey).sign(claims())
    for _ in 0..<5 {
      await #expect(throws: ServiceError.self) { _ = try await v.verify(bogus) }
    }
    #expect(fetches.withLock { $0 } == 2)
  }

  @Test func aFailedKeyFetchIsUnavailableNotUnauthenticated() async throws {
    // Identity unreachable for the first fetch, back for the next: the token was valid all
    // along, so the first call is told to retry (UNAVAILABLE), and the retry verifies it.
    let fetches = Mutex(0)
    let v = TokenVerifier(
      keySource: {
        let n = fetches.withLock { $0 += 1; return $0 }
        guard n > 1 else { throw RPCError(code: .deadlineExceeded, message: "too slow") }
        return [PublishedKey(keyID: "k1", publicKey: key.publicKey, retireTime: nil)]
      }, refetchInterval: .seconds(60))
    let token = try TokenSigner(keyID: "k1", key: key).sign(claims())
    let unavailable = ServiceError.unavailable(
      "identity's signing keys could not be fetched; retry shortly")
    await #expect(throws: unavailable) { _ = try await v.verify(token) }
    // A failed fetch does not mark the key id as missing for the refetch interval.
    #expect(try await v.verify(token).username == "teacher1")
    #expect(fetches.withLock { $0 } == 2)
  }

  @Test func retiredKeysStopVerifying() async throws {
    let token = try TokenSigner(keyID: "k1", key: key).sign(claims())
    let v = verifier([
      PublishedKey(
        keyID: "k1", publicKey: key.publicKey, retireTime: Date().addingTimeInterval(-3600))
    ])
    await #expect(throws: ServiceError.unauthenticated("access token signed by a retired key")) {
      _ = try await v.verify(token)
    }
  }
}

@Suite("Principal scope")
struct PrincipalTests {
  func principal(_ grants: [(Role, String)]) -> Principal {
    Principal(
      userID: "u", username: "u", kind: "staff",
      bindings: grants.map { RoleGrant(role: $0.0, orgID: "x", orgPath: OrgPath($0.1)!) },
      sessionID: "", issuedAt: Date(), expiresAt: Date())
  }

  @Test func permissionsHoldOnlyUnderTheBindingsOrg() {
    let p = principal([(.countyAdmin, "/p/c/a/")])
    #expect(p.allows(.usersWrite, at: OrgPath("/p/c/a/s1/")!))
    #expect(!p.allows(.usersWrite, at: OrgPath("/p/c/b/s1/")!))
    #expect(!p.allows(.usersWrite, at: OrgPath("/p/c/")!))
    #expect(!p.allows(.keysRotate, at: OrgPath("/p/c/a/")!))
    #expect(p.mayGrant(.teacher, at: OrgPath("/p/c/a/s1/")!))
    #expect(!p.mayGrant(.cityAdmin, at: OrgPath("/p/c/a/")!))
    #expect(!p.mayGrant(.teacher, at: OrgPath("/p/c/b/s1/")!))
  }

  @Test func teachersAndStudentsHoldLittle() {
    let t = principal([(.teacher, "/p/c/a/s1/")])
    #expect(t.allows(.usersRead, at: OrgPath("/p/c/a/s1/cl/")!))
    #expect(!t.allows(.usersWrite, at: OrgPath("/p/c/a/s1/")!))
    #expect(!t.mayGrant(.student, at: OrgPath("/p/c/a/s1/")!))
    let s = principal([(.student, "/p/c/a/s1/cl/")])
    #expect(!s.allows(.usersRead, at: OrgPath("/p/c/a/s1/cl/")!))
  }

  @Test func scopesAreMinimal() {
    let p = principal([
      (.countyAdmin, "/p/c/a/"), (.schoolAdmin, "/p/c/a/s1/"), (.countyAdmin, "/p/c/b/"),
    ])
    #expect(p.scopes(for: .usersWrite).map(\.description) == ["/p/c/a/", "/p/c/b/"])
    #expect(p.scopes(for: .keysRotate).isEmpty)
    // Two roles at one org give one scope; listed in order whatever the bindings' order.
    let q = principal([(.countyAdmin, "/p/c/b/"), (.schoolAdmin, "/p/c/b/"), (.teacher, "/p/c/a/")])
    #expect(q.scopes(for: .usersWrite).map(\.description) == ["/p/c/b/"])
    #expect(q.scopes(for: .usersRead).map(\.description) == ["/p/c/a/", "/p/c/b/"])
  }
}
