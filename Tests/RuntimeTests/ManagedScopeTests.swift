import Crypto
import Foundation
import ServiceRuntime
import SmartSchoolModel
import Testing

/// 一体化管理 in the token: a binding at a central school names the teaching points it
/// manages, and every service's principal reaches them.
@Suite("Managed teaching points in tokens")
struct ManagedScopeTests {
  let key = Curve25519.Signing.PrivateKey()

  func principal(_ bindings: [AccessTokenClaims.Binding]) async throws -> Principal {
    let now = Int64(Date().timeIntervalSince1970)
    let claims = AccessTokenClaims(
      iss: smartSchoolTokenIssuer, sub: "u1", usr: "head", knd: "staff", sid: "s1", iat: now,
      exp: now + 600, rol: bindings)
    let token = try TokenSigner(keyID: "k1", key: key).sign(claims)
    let verifier = TokenVerifier(keySource: { [key] in
      [PublishedKey(keyID: "k1", publicKey: key.publicKey, retireTime: nil)]
    })
    return try await verifier.verify(token)
  }

  @Test func aBindingAtACentralSchoolReachesItsTeachingPointsAndNothingElse() async throws {
    let p = try await principal([
      .init(r: "school_admin", o: "s1", p: "/p/c/k/s1/", m: ["tp1", "tp2"]),
      .init(r: "teacher", o: "s9", p: "/p/c/k/s9/"),
    ])
    #expect(p.bindings[0].managedPaths == [OrgPath("/p/c/k/tp1/")!, OrgPath("/p/c/k/tp2/")!])
    #expect(p.allows(.usersWrite, at: OrgPath("/p/c/k/tp1/")!))
    #expect(p.allows(.usersWrite, at: OrgPath("/p/c/k/tp2/class1/")!))
    #expect(p.allows(.supervisionRead, atPath: "/p/c/k/tp2/"))
    #expect(p.mayGrant(.teacher, at: OrgPath("/p/c/k/tp1/")!))
    #expect(p.holds(.schoolAdmin, covering: OrgPath("/p/c/k/tp1/")!))
    #expect(!p.allows(.usersWrite, at: OrgPath("/p/c/k/tp3/")!))
    #expect(!p.allows(.usersWrite, at: OrgPath("/p/c/k/")!))
    // The teacher binding at s9 manages nothing: its role does not reach the teaching points.
    #expect(!p.holds(.teacher, covering: OrgPath("/p/c/k/tp1/")!))
    #expect(p.scopes(for: .usersWrite) == ["/p/c/k/s1/", "/p/c/k/tp1/", "/p/c/k/tp2/"].map {
      OrgPath($0)!
    })
    #expect(Set(p.scopes(for: .orgsRead)) == Set(
      ["/p/c/k/s1/", "/p/c/k/tp1/", "/p/c/k/tp2/", "/p/c/k/s9/"].map { OrgPath($0)! }))
  }

  @Test func tokensWithoutManagedPointsAreUnchangedAndBadIdsReachNothing() async throws {
    // A binding that manages nothing encodes as before (no "m" key), so older tokens and
    // verifiers agree.
    let plain = try JSONEncoder().encode(AccessTokenClaims.Binding(r: "teacher", o: "s", p: "/p/"))
    #expect(!String(decoding: plain, as: UTF8.self).contains("\"m\""))
    let p = try await principal([
      .init(r: "school_admin", o: "s1", p: "/p/c/k/s1/", m: ["", "a/b", "tp1"])
    ])
    #expect(p.bindings[0].managedPaths == [OrgPath("/p/c/k/tp1/")!])
    #expect(!p.allows(.usersRead, at: OrgPath("/p/c/k/")!))
  }
}
