import CatalogueService
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
@testable import IdentityService
import Logging
import ServiceRuntime
import SmartSchoolModel
import Synchronization
import Testing
import TestSupport

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

typealias CatalogueClient = Smartschool_Catalogue_V1_CatalogueService.Client<
  HTTP2ClientTransport.Posix
>

/// An identity with its HTTP port, the test tree and `alice` (a teacher at S-A1, password
/// "Secret-pass-1"), for the token endpoint's tests.
struct TokenWorld: Sendable {
  let identity: IdentityClient
  let admin: String
  let http: URL
  let grpcPort: Int
  let alice: User
  /// Signs claims with identity's current key (to make an expired token without waiting).
  let sign: @Sendable (AccessTokenClaims) throws -> String
  /// The sessions identity's store reports revoked since a moment (what replicas and a
  /// restart read).
  let revokedSessions: @Sendable (Date) async throws -> [String: Date]

  /// Registers a client; `(id, secret)` (the secret `nil` for a public client).
  func client(
    _ name: String, scopes: [String], services: [String], isPublic: Bool = false
  ) async throws -> (id: String, secret: String?) {
    let created = try await identity.createOIDCClient(
      oidcClient(name, redirect: [appRedirect], scopes: scopes, services: services,
                 isPublic: isPublic),
      metadata: bearer(admin))
    return (created.client.clientID, isPublic ? nil : created.clientSecret)
  }

  /// Alice signs in (in `browser`, on the page unless its SSO cookie signs her in) for
  /// `client` with `scope`; the code and PKCE verifier.
  func code(client: String, scope: String, browser: TestBrowser = TestBrowser()) async throws
    -> (code: String, verifier: String)
  {
    let (verifier, challenge) = pkce()
    let pairs = [
      ("response_type", "code"), ("client_id", client), ("redirect_uri", appRedirect),
      ("scope", scope), ("state", "st"), ("nonce", "nn"), ("code_challenge", challenge),
      ("code_challenge_method", "S256"),
    ]
    let url = URL(string: http.absoluteString + "/authorize?" + FormFields.encode(pairs))!
    if browser.cookies.withLock({ $0[OIDCProvider.ssoCookie] }) != nil {
      let reply = try await browser.get(url)
      #expect(reply.status == 302, "\(reply.body)")
      return (try #require(reply.query("code")), verifier)
    }
    let reply = try await signIn(browser, url)
    #expect(reply.status == 303, "\(reply.body)")
    return (try #require(reply.query("code")), verifier)
  }

  /// POSTs `form` to `endpoint` with client_secret_post (a 401 with a Basic challenge would
  /// hang FoundationNetworking's URLSession).
  func post(
    _ endpoint: String, _ form: [(String, String)], client: (id: String, secret: String?)?
  ) async throws -> HTTPReply {
    var fields = form
    if let client {
      fields.append(("client_id", client.id))
      if let secret = client.secret { fields.append(("client_secret", secret)) }
    }
    return try await TestBrowser().post(http.appendingPathComponent(endpoint), form: fields)
  }

  /// Signs alice in for `client` with `scope` and redeems the code: the token answer.
  func tokens(
    client: (id: String, secret: String?), scope: String, browser: TestBrowser = TestBrowser()
  ) async throws -> HTTPReply {
    let (code, verifier) = try await self.code(client: client.id, scope: scope, browser: browser)
    let reply = try await post(
      "token",
      [
        ("grant_type", "authorization_code"), ("code", code), ("redirect_uri", appRedirect),
        ("code_verifier", verifier),
      ], client: client)
    #expect(reply.status == 200, "\(reply.body)")
    return reply
  }

  func refresh(
    _ token: String, client: (id: String, secret: String?), scope: String? = nil
  ) async throws -> HTTPReply {
    try await post(
      "token",
      [("grant_type", "refresh_token"), ("refresh_token", token)]
        + (scope.map { [("scope", $0)] } ?? []), client: client)
  }

  /// The gRPC status of WhoAmI with `token` at identity (nil when it succeeds).
  func whoAmI(_ token: String) async -> RPCError.Code? {
    await statusCode { _ = try await identity.whoAmI(.init(), metadata: bearer(token)) }
  }
}

func withTokenWorld(
  settings base: IdentitySettings = .forTests(), _ body: (TokenWorld) async throws -> Void
) async throws {
  let dir = try TemporaryDirectory()
  defer { dir.remove() }
  let config = try await TestStore.config(service: "identity", directory: dir)
  var settings = base
  settings.http.port = 0
  var logger = Logger(label: "identity")
  logger.logLevel = .critical
  let definition = try await buildIdentityService(
    config: config, settings: settings, logger: logger)
  let api = try #require(definition.services.first as? IdentityAPI)
  let (keys, store) = (api.keys, api.store)
  try await withHost(definition, config: config) { port, _ in
    let server = try #require(definition.identityHTTPServer)
    let http = URL(string: "http://127.0.0.1:\(try await server.boundPort())")!
    try await withClient(port: port) { client in
      let identity = IdentityClient(wrapping: client)
      let admin = try await login(identity, "admin", testAdminPassword)
      _ = try await buildTree(identity, admin: admin)
      let alice = try await newUser(
        identity, admin: admin, externalID: "t-alice", username: "alice", kind: .teacher,
        org: "S-A1")
      _ = try await grant(identity, token: admin, user: alice.id, role: .teacher, org: "S-A1")
      try await body(
        TokenWorld(
          identity: identity, admin: admin, http: http, grpcPort: port, alice: alice,
          sign: { try keys.signer.sign($0) },
          revokedSessions: { try await store.revokedSessions(since: $0) }))
    }
  }
}

/// A real catalogue server following `world`'s identity (through a data-exchange service
/// account), for `body`; its org directory is synced once before and on `sync`.
func withCatalogue(
  _ world: TokenWorld,
  _ body: (_ catalogue: CatalogueClient, _ sync: @Sendable () async throws -> Void) async throws
    -> Void
) async throws {
  let account = try await world.identity.createServiceAccount(
    .with {
      $0.name = "catalogue-sync"
      $0.orgCode = "P34"
      $0.roles = [.dataExchange]
    }, metadata: bearer(world.admin))
  let link = try IdentityLink(
    address: PeerAddress(host: "127.0.0.1", port: world.grpcPort),
    credentials: (account.clientID, account.clientSecret))
  defer { link.close() }
  let dir = try TemporaryDirectory()
  defer { dir.remove() }
  let config = try await TestStore.config(service: "catalogue", directory: dir)
  var settings = CatalogueSettings()
  settings.directoryPollInterval = .seconds(3600)
  var logger = Logger(label: "catalogue")
  logger.logLevel = .critical
  let definition = try await buildCatalogueService(
    config: config, settings: settings, verifier: link.makeVerifier(), identity: link,
    logger: logger)
  let directory = try #require(definition.background.first { $0 is OrgDirectory } as? OrgDirectory)
  try await directory.sync()
  try await withHost(definition, config: config) { port, _ in
    try await withClient(port: port) { client in
      try await body(CatalogueClient(wrapping: client)) { try await directory.sync() }
    }
  }
}

// One test at a time: each starts identity (and one a catalogue) on its own database, and the
// whole bundle runs in parallel on a small machine.
@Suite(
  "OpenID Connect: refresh, client credentials, revocation, introspection, audience",
  .serialized)
struct OIDCTokenTests {
  @Test func aRefreshTokenRotatesNarrowsAndItsReuseRevokesTheFamily() async throws {
    try await withTokenWorld { w in
      let app = try await w.client(
        "教师云", scopes: ["openid", "profile", "offline_access", "identity", "catalogue"],
        services: ["identity", "catalogue"])
      // Without offline_access: no refresh token.
      let online = try await w.tokens(client: app, scope: "openid profile")
      #expect(online.json["refresh_token"] == nil)
      #expect(online.json["access_token"] is String)

      let granted = "openid profile offline_access identity catalogue"
      let first = try await w.tokens(client: app, scope: granted)
      let r1 = try #require(first.json["refresh_token"] as? String)
      let a1 = try #require(first.json["access_token"] as? String)
      let claims = jwtClaims(a1)
      #expect(claims["aud"] as? [String] == ["identity", "catalogue"])
      #expect(claims["azp"] as? String == app.id)
      #expect(claims["scope"] as? String == granted)
      #expect(claims["sub"] as? String == w.alice.id)
      #expect(await w.whoAmI(a1) == nil)

      // Narrowed: the new token names identity alone; the grant keeps what it had.
      let second = try await w.refresh(r1, client: app, scope: "openid identity")
      #expect(second.status == 200, "\(second.body)")
      #expect(second.json["scope"] as? String == "openid identity")
      let r2 = try #require(second.json["refresh_token"] as? String)
      #expect(r2 != r1)
      let a2 = try #require(second.json["access_token"] as? String)
      #expect(jwtClaims(a2)["aud"] as? [String] == ["identity"])
      // Widened: refused, and the token is not spent.
      let wider = try await w.refresh(r2, client: app, scope: "openid email")
      #expect(wider.status == 400)
      #expect(wider.json["error"] as? String == "invalid_scope")
      let third = try await w.refresh(r2, client: app)
      #expect(third.status == 200, "\(third.body)")
      #expect(third.json["scope"] as? String == granted)
      let r3 = try #require(third.json["refresh_token"] as? String)
      let a3 = try #require(third.json["access_token"] as? String)
      #expect(await w.whoAmI(a3) == nil)

      // The rotated r1 comes back: the whole family ends, r3 and its access tokens too.
      let reuse = try await w.refresh(r1, client: app)
      #expect(reuse.status == 400)
      #expect(reuse.json["error"] as? String == "invalid_grant")
      #expect((reuse.json["error_description"] as? String)?.contains("revoked") == true)
      let after = try await w.refresh(r3, client: app)
      #expect(after.json["error"] as? String == "invalid_grant")
      #expect(await w.whoAmI(a3) == .unauthenticated)
      // Another sign-in's grant is untouched.
      #expect(await w.whoAmI(try #require(online.json["access_token"] as? String)) == nil)

      // A grant for identity alone, refreshed with a scope naming no service: still identity
      // alone (narrowing never widens the audience).
      let narrow = try await w.tokens(client: app, scope: "openid offline_access identity")
      let narrowRefresh = try #require(narrow.json["refresh_token"] as? String)
      #expect(jwtClaims(narrow.json["access_token"] as? String ?? "")["aud"] as? [String]
        == ["identity"])
      let renewed = try await w.refresh(narrowRefresh, client: app, scope: "openid")
      #expect(renewed.status == 200, "\(renewed.body)")
      #expect(jwtClaims(renewed.json["access_token"] as? String ?? "")["aud"] as? [String]
        == ["identity"])
    }
  }

  @Test func aRefreshTokenWorksOnlyForItsClient() async throws {
    try await withTokenWorld { w in
      let app = try await w.client(
        "教师云", scopes: ["openid", "offline_access"], services: ["identity"])
      let other = try await w.client(
        "家长云", scopes: ["openid", "offline_access"], services: ["identity"])
      let mobile = try await w.client(
        "学生云", scopes: ["openid", "offline_access"], services: ["identity"], isPublic: true)
      let tokens = try await w.tokens(client: app, scope: "openid offline_access")
      let refresh = try #require(tokens.json["refresh_token"] as? String)
      for thief in [other, mobile] {
        let stolen = try await w.refresh(refresh, client: thief)
        #expect(stolen.status == 400)
        #expect(stolen.json["error"] as? String == "invalid_grant")
      }
      // The wrong secret is the client's failure, not the grant's.
      let wrongSecret = try await w.refresh(refresh, client: (app.id, "ocs_wrong"))
      #expect(wrongSecret.status == 401)
      #expect(wrongSecret.json["error"] as? String == "invalid_client")
      // A first-party refresh token (gRPC Login) is no client's.
      let grpc = try await w.identity.login(
        .with {
          $0.username = "alice"
          $0.password = "Secret-pass-1"
        })
      let firstParty = try await w.refresh(grpc.refreshToken, client: app)
      #expect(firstParty.json["error"] as? String == "invalid_grant")
      _ = try await w.identity.refresh(.with { $0.refreshToken = grpc.refreshToken })
      // Hostile input: missing, oversized, unknown.
      for bad in [[], [("refresh_token", String(repeating: "x", count: 300))]] {
        let reply = try await w.post(
          "token", [("grant_type", "refresh_token")] + bad, client: app)
        #expect(reply.json["error"] as? String == "invalid_request")
      }
      let unknown = try await w.refresh(Secrets.random(), client: app)
      #expect(unknown.json["error"] as? String == "invalid_grant")
      // None of it spent the owner's token.
      let own = try await w.refresh(refresh, client: app)
      #expect(own.status == 200, "\(own.body)")
    }
  }

  @Test func clientCredentialsAreForConfidentialClientsAndCarryNoRoles() async throws {
    try await withTokenWorld { w in
      let machine = try await w.client(
        "数据中心", scopes: ["openid", "catalogue", "assessment"],
        services: ["catalogue", "assessment"])
      let all = try await w.post(
        "token", [("grant_type", "client_credentials")], client: machine)
      #expect(all.status == 200, "\(all.body)")
      #expect(all.json["refresh_token"] == nil)
      let token = try #require(all.json["access_token"] as? String)
      let claims = jwtClaims(token)
      #expect(claims["sub"] as? String == machine.id)
      #expect(claims["azp"] as? String == machine.id)
      #expect(claims["knd"] as? String == "client")
      #expect((claims["rol"] as? [Any])?.isEmpty == true)
      #expect(claims["aud"] as? [String] == ["catalogue", "assessment"])
      let narrowed = try await w.post(
        "token", [("grant_type", "client_credentials"), ("scope", "assessment")], client: machine)
      #expect(jwtClaims(narrowed.json["access_token"] as? String ?? "")["aud"] as? [String]
        == ["assessment"])
      #expect(narrowed.json["scope"] as? String == "assessment")
      // Not for identity (outside its audience), and user scopes need a user.
      #expect(await w.whoAmI(token) == .unauthenticated)
      for scope in ["openid", "identity", "catalogue supervision"] {
        let refused = try await w.post(
          "token", [("grant_type", "client_credentials"), ("scope", scope)], client: machine)
        #expect(refused.status == 400, "\(scope)")
        #expect(refused.json["error"] as? String == "invalid_scope", "\(scope)")
      }
      let mobile = try await w.client(
        "学生云", scopes: ["openid", "catalogue"], services: ["catalogue"], isPublic: true)
      let publicClient = try await w.post(
        "token", [("grant_type", "client_credentials")], client: mobile)
      #expect(publicClient.status == 400)
      #expect(publicClient.json["error"] as? String == "unauthorized_client")
      let unknownGrant = try await w.post("token", [("grant_type", "password")], client: machine)
      #expect(unknownGrant.json["error"] as? String == "unsupported_grant_type")
    }
  }

  @Test func aRevokedClientCredentialsTokenIsRefusedAndRememberedAsRevoked() async throws {
    try await withTokenWorld { w in
      let machine = try await w.client(
        "数据中心", scopes: ["openid", "identity"], services: ["identity"])
      let before = Date().addingTimeInterval(-1)
      let reply = try await w.post("token", [("grant_type", "client_credentials")], client: machine)
      let token = try #require(reply.json["access_token"] as? String)
      let session = try #require(jwtClaims(token)["sid"] as? String)
      // Authenticated at identity (a client is no account there: NOT_FOUND, not UNAUTHENTICATED).
      #expect(await w.whoAmI(token) == .notFound)
      #expect(try await w.revokedSessions(before)[session] == nil)
      #expect(try await w.post("revoke", [("token", token)], client: machine).status == 200)
      #expect(await w.whoAmI(token) == .unauthenticated)
      let introspected = try await w.post("introspect", [("token", token)], client: machine)
      #expect(introspected.json["active"] as? Bool == false)
      // What other replicas and a restarted identity read.
      #expect(try await w.revokedSessions(before)[session] != nil)
    }
  }

  @Test func revocationEndsTheGrantEverywhereAndNothingElse() async throws {
    try await withTokenWorld { w in
      let app = try await w.client(
        "教师云", scopes: ["openid", "offline_access"], services: ["identity"])
      let other = try await w.client("家长云", scopes: ["openid"], services: ["identity"])
      let first = try await w.tokens(client: app, scope: "openid offline_access")
      let refresh = try #require(first.json["refresh_token"] as? String)
      let access = try #require(first.json["access_token"] as? String)
      let kept = try #require(
        try await w.tokens(client: app, scope: "openid").json["access_token"] as? String)
      #expect(await w.whoAmI(access) == nil)

      // Unknown tokens and other clients' tokens: 200, nothing happens.
      for (token, client) in [(Secrets.random(), app), ("a.b.c", app), (refresh, other)] {
        let reply = try await w.post("revoke", [("token", token)], client: client)
        #expect(reply.status == 200, "\(reply.body)")
      }
      #expect(await w.whoAmI(access) == nil)
      // Without client authentication, or without a token: refused.
      #expect(try await w.post("revoke", [("token", refresh)], client: nil).status == 401)
      #expect(try await w.post("revoke", [], client: app).status == 400)

      let revoked = try await w.post(
        "revoke", [("token", refresh), ("token_type_hint", "refresh_token")], client: app)
      #expect(revoked.status == 200)
      #expect(await w.whoAmI(access) == .unauthenticated)
      #expect(try await w.refresh(refresh, client: app).json["error"] as? String == "invalid_grant")
      let info = try await TestBrowser().get(
        w.http.appendingPathComponent("userinfo"), headers: ["Authorization": "Bearer \(access)"])
      #expect(info.status == 401)
      // The other grant (and the browser sign-in behind it) goes on; then its access token
      // is revoked by itself.
      #expect(await w.whoAmI(kept) == nil)
      #expect(try await w.post("revoke", [("token", kept)], client: app).status == 200)
      #expect(await w.whoAmI(kept) == .unauthenticated)
    }
  }

  @Test func loggingOutEndsTheSignInsGrantsButNotOfflineOnes() async throws {
    try await withTokenWorld { w in
      let app = try await w.client(
        "教师云", scopes: ["openid", "offline_access"], services: ["identity"])
      let browser = TestBrowser()
      let offline = try await w.tokens(
        client: app, scope: "openid offline_access", browser: browser)
      let online = try await w.tokens(client: app, scope: "openid", browser: browser)
      let onlineAccess = try #require(online.json["access_token"] as? String)
      let offlineAccess = try #require(offline.json["access_token"] as? String)
      #expect(await w.whoAmI(onlineAccess) == nil)
      let hint = try #require(online.json["id_token"] as? String)
      let out = try await browser.get(
        URL(string: w.http.absoluteString + "/logout?"
          + FormFields.encode([("id_token_hint", hint)]))!)
      #expect(out.status < 400, "\(out.body)")
      #expect(await w.whoAmI(onlineAccess) == .unauthenticated)
      let info = try await TestBrowser().get(
        w.http.appendingPathComponent("userinfo"),
        headers: ["Authorization": "Bearer \(onlineAccess)"])
      #expect(info.status == 401)
      // The offline grant outlives the sign-in.
      #expect(await w.whoAmI(offlineAccess) == nil)
      let refresh = try #require(offline.json["refresh_token"] as? String)
      #expect(try await w.refresh(refresh, client: app).status == 200)
    }
  }

  @Test func disablingAClientEndsItsGrants() async throws {
    try await withTokenWorld { w in
      let app = try await w.client(
        "教师云", scopes: ["openid", "offline_access", "identity"], services: ["identity"])
      let other = try await w.client("家长云", scopes: ["openid"], services: ["identity"])
      let user = try await w.tokens(client: app, scope: "openid offline_access")
      let access = try #require(user.json["access_token"] as? String)
      let refresh = try #require(user.json["refresh_token"] as? String)
      let machine = try #require(
        try await w.post("token", [("grant_type", "client_credentials")], client: app)
          .json["access_token"] as? String)
      let kept = try #require(
        try await w.tokens(client: other, scope: "openid").json["access_token"] as? String)
      #expect(await w.whoAmI(access) == nil)
      #expect(await w.whoAmI(machine) == .notFound)
      _ = try await w.identity.disableOIDCClient(
        .with { $0.clientID = app.id }, metadata: bearer(w.admin))
      #expect(await w.whoAmI(access) == .unauthenticated)
      #expect(await w.whoAmI(machine) == .unauthenticated)
      #expect(
        try await w.refresh(refresh, client: app).json["error"] as? String == "invalid_client")
      #expect(await w.whoAmI(kept) == nil)
    }
  }

  @Test func introspectionAnswersForActiveExpiredRevokedAndOtherAudienceTokens() async throws {
    try await withTokenWorld { w in
      let app = try await w.client(
        "教师云", scopes: ["openid", "offline_access", "catalogue"], services: ["catalogue"])
      let resource = try await w.client("资源平台", scopes: ["openid"], services: ["catalogue"])
      let elsewhere = try await w.client("督导", scopes: ["openid"], services: ["supervision"])
      let mobile = try await w.client(
        "学生云", scopes: ["openid"], services: ["catalogue"], isPublic: true)
      let tokens = try await w.tokens(client: app, scope: "openid offline_access catalogue")
      let access = try #require(tokens.json["access_token"] as? String)
      let refresh = try #require(tokens.json["refresh_token"] as? String)

      for caller in [app, resource] {
        let active = try await w.post("introspect", [("token", access)], client: caller)
        #expect(active.status == 200)
        let body = active.json
        #expect(body["active"] as? Bool == true)
        #expect(body["sub"] as? String == w.alice.id)
        #expect(body["username"] as? String == "alice")
        #expect(body["client_id"] as? String == app.id)
        #expect(body["scope"] as? String == "openid offline_access catalogue")
        #expect(body["aud"] as? [String] == ["catalogue"])
        #expect(body["token_type"] as? String == "Bearer")
        #expect(body["iss"] as? String == smartSchoolTokenIssuer)
        #expect(((body["exp"] as? NSNumber)?.int64Value ?? 0) > ((body["iat"] as? NSNumber)?
          .int64Value ?? .max))
      }
      // Another audience: inactive for a client of other services.
      let foreign = try await w.post("introspect", [("token", access)], client: elsewhere)
      #expect(foreign.json["active"] as? Bool == false)
      #expect(foreign.json.count == 1)
      // The refresh token is its own client's business.
      let ownRefresh = try await w.post("introspect", [("token", refresh)], client: app)
      #expect(ownRefresh.json["active"] as? Bool == true)
      #expect(ownRefresh.json["token_type"] as? String == "refresh_token")
      let theirs = try await w.post("introspect", [("token", refresh)], client: resource)
      #expect(theirs.json["active"] as? Bool == false)
      // A public client may not introspect; nobody may anonymously.
      let publicCaller = try await w.post("introspect", [("token", access)], client: mobile)
      #expect(publicCaller.json["error"] as? String == "unauthorized_client")
      #expect(try await w.post("introspect", [("token", access)], client: nil).status == 401)
      #expect(
        try await w.post("introspect", [("token", "junk")], client: app).json["active"] as? Bool
          == false)

      // Expired: the same claims, signed by the same key, an hour old.
      let payload = try #require(Base64URL.decode(access.split(separator: ".")[1]))
      var old = try JSONDecoder().decode(AccessTokenClaims.self, from: payload)
      old.iat -= 3600
      old.exp = old.iat + 900
      let stale = try w.sign(old)
      let expired = try await w.post("introspect", [("token", stale)], client: app)
      #expect(expired.json["active"] as? Bool == false)
      old.exp = Int64(Date().timeIntervalSince1970) + 600
      let resigned = try await w.post("introspect", [("token", try w.sign(old))], client: app)
      #expect(resigned.json["active"] as? Bool == true)
      // Revoked: a fresh access token from the refresh, then the grant revoked.
      let renewed = try await w.refresh(refresh, client: app)
      let fresh = try #require(renewed.json["access_token"] as? String)
      let next = try #require(renewed.json["refresh_token"] as? String)
      #expect(
        try await w.post("introspect", [("token", fresh)], client: app).json["active"] as? Bool
          == true)
      _ = try await w.post("revoke", [("token", next)], client: app)
      #expect(
        try await w.post("introspect", [("token", fresh)], client: app).json["active"] as? Bool
          == false)
      #expect(
        try await w.post("introspect", [("token", next)], client: app).json["active"] as? Bool
          == false)
    }
  }

  @Test func aCatalogueServerRefusesATokenWhoseAudienceExcludesIt() async throws {
    try await withTokenWorld { w in
      let identityOnly = try await w.client(
        "教师云", scopes: ["openid", "profile"], services: ["identity"])
      let catalogueApp = try await w.client(
        "资源云", scopes: ["openid", "catalogue"], services: ["catalogue"])
      let forIdentity = try #require(
        try await w.tokens(client: identityOnly, scope: "openid profile").json["access_token"]
          as? String)
      let forCatalogue = try #require(
        try await w.tokens(client: catalogueApp, scope: "openid catalogue").json["access_token"]
          as? String)
      let firstParty = try await login(w.identity, "alice", "Secret-pass-1")
      #expect(jwtClaims(firstParty)["aud"] == nil)
      try await withCatalogue(w) { catalogue, sync in
        func list(_ token: String) async -> RPCError? {
          await rpcError {
            _ = try await catalogue.listResources(.init(), metadata: bearer(token))
          }
        }
        let refused = await list(forIdentity)
        #expect(refused?.code == .unauthenticated)
        #expect(refused?.message.contains("audience") == true)
        #expect(await list(forCatalogue) == nil)
        #expect(await list(firstParty) == nil)
        // The first-party token works at identity too; the catalogue token does not.
        #expect(await w.whoAmI(firstParty) == nil)
        #expect(await w.whoAmI(forIdentity) == nil)
        #expect(await w.whoAmI(forCatalogue) == .unauthenticated)
        // Revoking the grant reaches the catalogue through identity's change feed.
        _ = try await w.post("revoke", [("token", forCatalogue)], client: catalogueApp)
        try await sync()
        #expect(await list(forCatalogue)?.code == .unauthenticated)
        #expect(await list(firstParty) == nil)
      }
    }
  }

  @Test func twentyConcurrentRefreshesOfOneTokenGiveExactlyOneSuccess() async throws {
    try await withTokenWorld { w in
      let app = try await w.client(
        "教师云", scopes: ["openid", "offline_access"], services: ["identity"])
      let tokens = try await w.tokens(client: app, scope: "openid offline_access")
      let refresh = try #require(tokens.json["refresh_token"] as? String)
      let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
        for _ in 0..<20 {
          group.addTask { try await w.refresh(refresh, client: app).status }
        }
        var all: [Int] = []
        for try await status in group { all.append(status) }
        return all
      }
      #expect(statuses.filter { $0 == 200 }.count == 1, "\(statuses)")
      #expect(statuses.filter { $0 == 400 }.count == 19, "\(statuses)")
    }
  }
}
