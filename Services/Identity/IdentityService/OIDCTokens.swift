import Foundation
import HTTPTypes
import Hummingbird
import ServiceRuntime
import SmartSchoolModel

/// The claims that make an access token a client's: its audience, scopes and client id
/// (``AccessTokenClaims/aud``, ``AccessTokenClaims/scope``, ``AccessTokenClaims/azp``).
struct ClientTokenClaims: Sendable, Equatable {
  var clientID: String
  var scope: String
  var audience: [String]

  /// The claims of a token for `client` with `scope`, narrowed from `granted` on a refresh.
  /// Its audience is the services the scope names (each service is a scope), else those the
  /// granted scope names, else every service the client may call; never a service the client
  /// may not call, and a narrowed scope never widens it. The roles are the user's own
  /// bindings: a client never gets more, and the audience keeps it to its services.
  init(client: OIDCClient, scope: [String], granted: [String] = []) {
    let isService = { OIDCClientRules.services.contains($0) }
    let named = scope.filter(isService)
    let asked = named.isEmpty ? granted.filter(isService) : named
    clientID = client.clientID
    self.scope = scope.joined(separator: " ")
    audience = OIDCClientRules.services.filter {
      client.services.contains($0) && (asked.isEmpty || asked.contains($0))
    }
  }
}

/// The token endpoint's grants beside the code exchange (refresh_token, client_credentials),
/// revocation (RFC 7009) and introspection (RFC 7662).
///
/// Every access token the provider issues is an identity access token (Ed25519, verified by
/// each service with identity's published keys) carrying the client's audience and scopes: one
/// token that works at /userinfo and at the services the client may call, and nowhere else.
extension OIDCProvider {
  /// The grants beside identity's sessions.
  var grants: any OIDCGrantStore {
    get throws { try api.grants }
  }

  /// The revocation and introspection endpoints.
  func registerTokenEndpoints(_ router: Router<OIDCRequestContext>) {
    router.post("/revoke") { request, _ in try await revoke(request) }
    router.post("/introspect") { request, _ in try await introspect(request) }
  }

  // MARK: Client authentication

  /// A client's request: its form and the authenticated client, or the answer refusing it.
  enum ClientRequest {
    case client(FormFields, StoredOIDCClient)
    case refused(Response)
  }

  /// Reads the form of a request to the token, revocation or introspection endpoint and
  /// authenticates its client: HTTP Basic or the form, never both (RFC 6749 §2.3); a public
  /// client names itself by `client_id`.
  func clientRequest(_ request: Request) async throws -> ClientRequest {
    guard let form = try await formBody(request) else {
      return .refused(
        tokenError("invalid_request", "send application/x-www-form-urlencoded parameters"))
    }
    if let repeated = form.malformed.sorted().first {
      return .refused(
        tokenError("invalid_request", "parameter '\(repeated)' is repeated or badly encoded"))
    }
    var clientID = form["client_id"]
    var secret = form["client_secret"]
    let basic = request.headers[.authorization].flatMap { header -> (String, String)? in
      guard header.lowercased().hasPrefix("basic "),
        let data = Data(
          base64Encoded: String(header.dropFirst(6)).trimmingSpaces()),
        let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":"),
        let id = FormFields.decode(text[..<colon]),
        let password = FormFields.decode(text[text.index(after: colon)...])
      else { return nil }
      return (id, password)
    }
    func refuse(_ description: String) -> ClientRequest {
      .refused(tokenError("invalid_client", description, basic: basic != nil))
    }
    if request.headers[.authorization] != nil {
      guard let basic, secret == nil, clientID == nil || clientID == basic.0 else {
        return refuse("use one client authentication method")
      }
      (clientID, secret) = (basic.0, basic.1)
    }
    guard let clientID, clientID.count <= 64, let stored = try await clients.client(id: clientID),
      !stored.client.disabled
    else { return refuse("unknown or disabled client") }
    if let hash = stored.secretHash {
      guard let secret, secret.utf8.count <= 256, Self.same(Secrets.digest(secret), hash) else {
        return refuse("wrong client secret")
      }
    } else if secret != nil {
      return refuse("a public client has no secret")
    }
    return .client(form, stored)
  }

  // MARK: Grants

  /// The tokens of an authorization code: a new grant (an identity session of the user's, tied
  /// to the browser sign-in unless `offline_access` was granted, which also brings a refresh
  /// token), its access token and the ID token.
  func codeTokens(_ code: AuthorizationCode, user: User, client: OIDCClient) async throws
    -> Response
  {
    let scope = code.scope.split(separator: " ").map(String.init)
    let offline = scope.contains("offline_access")
    let refresh = offline ? Secrets.random() : nil
    let now = Date()
    let ends = now.addingTimeInterval(api.settings.refreshTokenTTL)
    let session: String
    do {
      session = try await api.store.createSession(
        userID: user.id, refreshHash: refresh.map(Secrets.digest), refreshExpires: ends)
    } catch ServiceError.unauthenticated {
      return tokenError("invalid_grant", "the account is not active")
    }
    try await grants.addGrant(
      OIDCGrant(
        sessionID: session, clientID: client.clientID, userID: user.id, scope: code.scope,
        parentSessionID: offline ? nil : code.sessionID, createdAt: now, expiresAt: ends))
    let tokens = try await api.tokenResponse(
      user: user, sessionID: session, refreshToken: refresh,
      refreshExpires: refresh.map { _ in ends },
      sessionEnds: ends, client: ClientTokenClaims(client: client, scope: scope))
    let issued = Int64(now.timeIntervalSince1970)
    let expires = Int64(tokens.accessTokenExpireTime.date.timeIntervalSince1970)
    // The ID token names the browser sign-in (sid), which logout ends.
    var id: [String: Any] = [
      "iss": issuer, "sub": user.id, "aud": client.clientID, "azp": client.clientID,
      "iat": issued, "exp": expires, "auth_time": Int64(code.authTime.timeIntervalSince1970),
      "sid": code.sessionID,
    ]
    if let nonce = code.nonce { id["nonce"] = nonce }
    if scope.contains("profile") {
      id["name"] = user.displayName
      id["preferred_username"] = user.username
    }
    var body: [String: Any] = [
      "access_token": tokens.accessToken, "token_type": "Bearer", "expires_in": expires - issued,
      "id_token": try await keys.sign(payload: try Self.json(id)), "scope": code.scope,
    ]
    if let refresh { body["refresh_token"] = refresh }
    await api.audit(
      "oidc.token", actor: user.id, target: client.clientID, orgID: user.orgID,
      orgPath: user.orgPath, detail: "scope \(code.scope)")
    return tokenResponse(body)
  }

  /// grant_type=refresh_token: gRPC Refresh's rotation and reuse detection, for the client the
  /// grant was made to; the scope may be narrowed for the new access token, never widened.
  func refreshGrant(_ form: FormFields, client: OIDCClient) async throws -> Response {
    guard let token = form["refresh_token"], token.utf8.count <= 256 else {
      return tokenError("invalid_request", "refresh_token is required (at most 256 characters)")
    }
    let hash = Secrets.digest(token)
    // Checked before the token is rotated: another client's token changes nothing.
    guard let record = try await api.store.refreshRecord(hash: hash),
      let grant = try await grants.grant(sessionID: record.sessionID),
      grant.clientID == client.clientID, grant.userID == record.userID
    else {
      return tokenError(
        "invalid_grant", "the refresh token is invalid, expired, revoked or not this client's")
    }
    let granted = grant.scope.split(separator: " ").map(String.init)
    var scope = granted
    if let asked = form["scope"] {
      let narrowed = asked.split(separator: " ").map(String.init)
      if let wider = narrowed.first(where: { !granted.contains($0) }) {
        return tokenError(
          "invalid_scope",
          "scope '\(wider)' was not granted: a refresh may narrow the granted scope "
            + "(\(grant.scope)), never widen it")
      }
      scope = granted.filter(narrowed.contains)
    }
    let rotated: (user: User, token: String)
    do {
      rotated = try await api.rotateRefresh(record, hash: hash)
    } catch let error as ServiceError {
      return tokenError("invalid_grant", error.message)
    }
    let tokens = try await api.tokenResponse(
      user: rotated.user, sessionID: record.sessionID, refreshToken: rotated.token,
      refreshExpires: record.sessionExpiresAt,
      client: ClientTokenClaims(client: client, scope: scope, granted: granted))
    let expires = Int64(tokens.accessTokenExpireTime.date.timeIntervalSince1970)
    return tokenResponse([
      "access_token": tokens.accessToken, "token_type": "Bearer",
      "expires_in": max(0, expires - Int64(Date().timeIntervalSince1970)),
      "refresh_token": rotated.token, "scope": scope.joined(separator: " "),
    ])
  }

  /// grant_type=client_credentials: a confidential client's own token. It names the client as
  /// its subject, holds no role (a client acting with roles is a service account's job) and
  /// carries only the client's services and the service scopes asked for.
  func clientCredentialsGrant(_ form: FormFields, client stored: StoredOIDCClient) async throws
    -> Response
  {
    let client = stored.client
    guard stored.secretHash != nil else {
      return tokenError(
        "unauthorized_client", "client_credentials needs a confidential client (with a secret)")
    }
    let scope = (form["scope"] ?? "").split(separator: " ").map(String.init)
    if let bad = scope.first(where: {
      !OIDCClientRules.services.contains($0) || !client.scopes.contains($0)
    }) {
      return tokenError(
        "invalid_scope",
        "scope '\(bad)' is not one of this client's service scopes (user scopes need a user)")
    }
    let now = Date()
    let expires = now.addingTimeInterval(api.settings.accessTokenTTL)
    let session = "cc-" + EntityID.make()
    try await grants.addGrant(
      OIDCGrant(
        sessionID: session, clientID: client.clientID, userID: nil,
        scope: scope.joined(separator: " "), parentSessionID: nil, createdAt: now,
        expiresAt: expires))
    let claims = ClientTokenClaims(client: client, scope: scope)
    let token = try api.keys.signer.sign(
      AccessTokenClaims(
        iss: smartSchoolTokenIssuer, sub: client.clientID, usr: client.clientID, knd: "client",
        sid: session, iat: Int64(now.timeIntervalSince1970),
        exp: Int64(expires.timeIntervalSince1970), rol: [], aud: claims.audience,
        scope: claims.scope, azp: client.clientID))
    await api.audit(
      "oidc.client_credentials", actor: client.clientID, target: client.clientID,
      orgID: client.orgID, orgPath: client.orgPath, detail: "audience \(claims.audience)")
    var body: [String: Any] = [
      "access_token": token, "token_type": "Bearer",
      "expires_in": Int64(api.settings.accessTokenTTL),
    ]
    if !claims.scope.isEmpty { body["scope"] = claims.scope }
    return tokenResponse(body)
  }

  /// A successful token answer (never cached).
  private func tokenResponse(_ body: [String: Any]) -> Response {
    var response = jsonResponse((try? Self.json(body)) ?? Data())
    response.headers[HTTPField.Name("Pragma")!] = "no-cache"
    return response
  }

  // MARK: Grant state

  /// Whether a grant still stands: not revoked or expired, its user's session live and, for a
  /// grant tied to a browser sign-in, that sign-in too. A grant found to have outlived its
  /// sign-in (the user logged out) is revoked on the spot, so every service refuses its tokens.
  func grantActive(_ grant: OIDCGrant) async throws -> Bool {
    guard grant.revokedAt == nil, grant.expiresAt > Date() else { return false }
    guard let user = grant.userID else { return true }
    guard try await api.store.sessionActive(id: grant.sessionID),
      let account = try await api.store.user(id: user), account.status == .active
    else { return false }
    if let parent = grant.parentSessionID, !(try await api.store.sessionActive(id: parent)) {
      try await endGrant(grant, reason: "sign-in ended")
      return false
    }
    return true
  }

  func endGrant(_ grant: OIDCGrant, reason: String) async throws {
    try await api.endGrant(grant, reason: reason)
  }

  /// The grant of an access token or refresh token, with what the token says: `nil` when the
  /// text is neither (expired and forged access tokens included).
  private func tokenGrant(_ token: String) async throws -> (
    grant: OIDCGrant?, access: Principal?, refresh: RefreshRecord?
  )? {
    if token.utf8.count <= 256,
      let record = try await api.store.refreshRecord(hash: Secrets.digest(token))
    {
      return (try await grants.grant(sessionID: record.sessionID), nil, record)
    }
    guard let principal = try? await api.verifier.verify(token) else { return nil }
    let grant =
      principal.sessionID.isEmpty ? nil : try await grants.grant(sessionID: principal.sessionID)
    return (grant, principal, nil)
  }

  // MARK: Revocation (RFC 7009)

  private func revoke(_ request: Request) async throws -> Response {
    let form: FormFields
    let client: StoredOIDCClient
    switch try await clientRequest(request) {
    case .client(let fields, let found): (form, client) = (fields, found)
    case .refused(let response): return response
    }
    guard let token = form["token"] else {
      return tokenError("invalid_request", "token is required")
    }
    // Unknown, expired and other clients' tokens get the same answer: nothing to revoke here.
    if let found = try await tokenGrant(token), let grant = found.grant,
      grant.clientID == client.client.clientID
    {
      try await endGrant(grant, reason: "revoked by the client")
    }
    return jsonResponse(Data("{}".utf8))
  }

  // MARK: Introspection (RFC 7662)

  private func introspect(_ request: Request) async throws -> Response {
    let form: FormFields
    let stored: StoredOIDCClient
    switch try await clientRequest(request) {
    case .client(let fields, let found): (form, stored) = (fields, found)
    case .refused(let response): return response
    }
    guard stored.secretHash != nil else {
      return tokenError("unauthorized_client", "introspection needs a confidential client")
    }
    guard let token = form["token"] else {
      return tokenError("invalid_request", "token is required")
    }
    let inactive = jsonResponse(Data(#"{"active":false}"#.utf8))
    let client = stored.client
    guard let found = try await tokenGrant(token) else { return inactive }
    if let record = found.refresh {
      // A refresh token is the business of the client it was issued to alone.
      guard let grant = found.grant, grant.clientID == client.clientID, record.usedAt == nil,
        record.expiresAt > Date(), !record.sessionRevoked, try await grantActive(grant),
        let user = try await api.store.user(id: record.userID)
      else { return inactive }
      return jsonResponse(
        try Self.json([
          "active": true, "token_type": "refresh_token", "sub": user.id,
          "username": user.username, "client_id": grant.clientID, "scope": grant.scope,
          "iat": Int64(grant.createdAt.timeIntervalSince1970),
          "exp": Int64(record.sessionExpiresAt.timeIntervalSince1970),
          "iss": smartSchoolTokenIssuer,
        ]))
    }
    guard let principal = found.access else { return inactive }
    // The token must be for this client, or for a service this client may call.
    let audience = principal.audience ?? smartSchoolServices
    guard principal.clientID == client.clientID
      || audience.contains(where: client.services.contains)
    else { return inactive }
    if let grant = found.grant {
      guard try await grantActive(grant) else { return inactive }
    } else {
      // A first-party token: its session (if it has one) and its user.
      if !principal.sessionID.isEmpty {
        guard try await api.store.sessionActive(id: principal.sessionID) else { return inactive }
      }
      guard let user = try await api.store.user(id: principal.userID), user.status == .active
      else { return inactive }
    }
    var body: [String: Any] = [
      "active": true, "token_type": "Bearer", "sub": principal.userID,
      "username": principal.username, "iat": Int64(principal.issuedAt.timeIntervalSince1970),
      "exp": Int64(principal.expiresAt.timeIntervalSince1970), "iss": smartSchoolTokenIssuer,
    ]
    if let id = principal.clientID { body["client_id"] = id }
    if let scope = principal.scope { body["scope"] = scope }
    if let aud = principal.audience { body["aud"] = aud }
    return jsonResponse(try Self.json(body))
  }
}

extension IdentityAPI {
  /// The OpenID Connect grants beside the sessions.
  var grants: any OIDCGrantStore {
    get throws {
      guard let grants = try oidcStore(store) as? any OIDCGrantStore else {
        throw ServiceError.internalError("identity's OIDC store keeps no grants")
      }
      return grants
    }
  }

  /// Revokes a grant: its session, on the change feed, so every service refuses its tokens.
  func endGrant(_ grant: OIDCGrant, reason: String) async throws {
    if grant.userID == nil {
      guard let time = try await grants.revokeClientGrant(sessionID: grant.sessionID) else {
        return
      }
      verifier.revokeSessions([grant.sessionID: time])
    } else {
      try await store.revokeSession(id: grant.sessionID, reason: reason)
      verifier.revokeSessions([grant.sessionID: Date()])
    }
    await audit("oidc.revoke", actor: grant.clientID, target: grant.sessionID, detail: reason)
  }

  /// Ends the OpenID Connect grants made in the browser sign-in `session` (all but offline
  /// ones), as its logout ends it: their tokens are refused everywhere from now on.
  func endGrants(madeIn session: String) async throws {
    for child in try await grants.grantSessions(madeIn: session) {
      try await store.revokeSession(id: child, reason: "sign-in ended")
      verifier.revokeSessions([child: Date()])
    }
  }

  /// Ends every live grant of a client (it has been disabled): its tokens are refused
  /// everywhere from now on; returns how many ended.
  func endGrants(ofClient clientID: String) async throws -> Int {
    let live = try await grants.liveGrants(clientID: clientID)
    for grant in live { try await endGrant(grant, reason: "client disabled") }
    return live.count
  }
}
