import Crypto
import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import Testing

@Suite("Access tokens: audience, scope and client")
struct AudienceTests {
  let key = Curve25519.Signing.PrivateKey()

  func claims(aud: [String]? = nil, scope: String? = nil, azp: String? = nil)
    -> AccessTokenClaims
  {
    let now = Int64(Date().timeIntervalSince1970)
    return AccessTokenClaims(
      iss: smartSchoolTokenIssuer, sub: "u1", usr: "teacher1", knd: "teacher", sid: "s1",
      iat: now, exp: now + 600, rol: [.init(r: "teacher", o: "school", p: "/p/c/k/school/")],
      aud: aud, scope: scope, azp: azp)
  }

  func payload(_ token: String) throws -> [String: Any] {
    let data = try #require(Base64URL.decode(token.split(separator: ".")[1]))
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
  }

  func authenticator(for service: String) -> Authenticator {
    let key = self.key
    return Authenticator(
      verifier: TokenVerifier(keySource: {
        [PublishedKey(keyID: "k1", publicKey: key.publicKey, retireTime: nil)]
      }),
      openMethods: ["smartschool.identity.v1.IdentityService/Login"], audience: service)
  }

  static let method = MethodDescriptor(
    fullyQualifiedService: "smartschool.catalogue.v1.CatalogueService", method: "ListResources")

  @Test func firstPartyTokensKeepTheirFormAndClientTokensCarryTheirClaims() async throws {
    let signer = TokenSigner(keyID: "k1", key: key)
    let firstParty = try signer.sign(claims())
    // No new key in a first-party token: what older verifiers read is unchanged.
    #expect(Set(try payload(firstParty).keys) == ["iss", "sub", "usr", "knd", "sid", "iat",
                                                  "exp", "rol"])
    let client = try signer.sign(
      claims(aud: ["catalogue", "assessment"], scope: "openid catalogue", azp: "oc-1"))
    let fields = try payload(client)
    #expect(fields["aud"] as? [String] == ["catalogue", "assessment"])
    #expect(fields["scope"] as? String == "openid catalogue")
    #expect(fields["azp"] as? String == "oc-1")

    let verifier = TokenVerifier(keySource: { [key] in
      [PublishedKey(keyID: "k1", publicKey: key.publicKey, retireTime: nil)]
    })
    let p = try await verifier.verify(client)
    #expect(p.audience == ["catalogue", "assessment"])
    #expect(p.scope == "openid catalogue")
    #expect(p.clientID == "oc-1")
    #expect(p.mayBeUsed(at: "catalogue") && !p.mayBeUsed(at: "identity"))
    let old = try await verifier.verify(firstParty)
    #expect(old.audience == nil && old.clientID == nil && old.scope == nil)
    #expect(smartSchoolServices.allSatisfy(old.mayBeUsed(at:)))
  }

  @Test func aServiceRefusesATokenWhoseAudienceExcludesIt() async throws {
    let signer = TokenSigner(keyID: "k1", key: key)
    let catalogue = authenticator(for: "catalogue")
    func call(_ token: String) async throws -> Principal? {
      try await catalogue.principal(
        for: Self.method, metadata: ["authorization": "Bearer \(token)"])
    }
    #expect(try await call(try signer.sign(claims()))?.userID == "u1")
    #expect(try await call(try signer.sign(claims(aud: ["identity", "catalogue"])))?.userID == "u1")
    for aud in [["identity"], [], ["catalogues"]] {
      let token = try signer.sign(claims(aud: aud, azp: "oc-1"))
      do {
        _ = try await call(token)
        Issue.record("a token for \(aud) was accepted at catalogue")
      } catch let error as ServiceError {
        #expect(error.message.contains("not for catalogue"), "\(error)")
        #expect(error == .unauthenticated(error.message))
      }
    }
    // An open method needs no token, whatever the audience rule.
    #expect(
      try await catalogue.principal(
        for: MethodDescriptor(
          fullyQualifiedService: "smartschool.identity.v1.IdentityService", method: "Login"),
        metadata: [:]) == nil)
  }
}
