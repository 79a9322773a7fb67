import Crypto
import Foundation
import GRPCCore
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceRuntime
import SmartSchoolModel

/// The request context of identity's HTTP server: Hummingbird's, plus the client's address
/// (which the login rate limits go by, as gRPC Login's do).
struct OIDCRequestContext: RequestContext {
  var coreContext: CoreRequestContextStorage
  let remoteAddress: SocketAddress?

  init(source: ApplicationRequestContextSource) {
    coreContext = .init(source: source)
    remoteAddress = source.channel.remoteAddress
  }

  /// The address as a gRPC peer text (`ipv4:1.2.3.4:5678`), which ``ClientAddress`` reads.
  var peer: String {
    guard let remoteAddress, let ip = remoteAddress.ipAddress else { return "unknown" }
    switch remoteAddress {
    case .v6: return "ipv6:[\(ip)]:\(remoteAddress.port ?? 0)"
    default: return "ipv4:\(ip):\(remoteAddress.port ?? 0)"
    }
  }
}

/// Identity's OpenID Connect provider (authorization code flow): discovery, the authorization
/// endpoint with its sign-in page, the token endpoint and userinfo. The password check is
/// gRPC `Login` itself (same lockout, rate limits and audit); a successful sign-in opens an
/// identity session, and the browser's SSO cookie lives exactly as long as that session.
struct OIDCProvider: Sendable {
  let api: IdentityAPI
  let clients: any OIDCStore
  let keys: OIDCKeys
  let server: IdentityHTTPServer
  let settings: IdentityHTTPSettings
  let tls: Bool

  static let ssoCookie = "smartschool_sso"
  static let csrfCookie = "smartschool_csrf"
  /// The parameters of an authorization request that the sign-in form carries through.
  static let requestFields = [
    "response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge",
    "code_challenge_method", "max_age",
  ]

  func register(_ router: Router<OIDCRequestContext>) {
    router.get("/.well-known/openid-configuration") { _, _ in
      try jsonResponse(discovery(), cache: "public, max-age=300")
    }
    router.get("/authorize") { request, context in
      try await authorize(FormFields(Substring(request.uri.query ?? "")), request, context)
    }
    router.post("/authorize") { request, context in
      guard let form = try await formBody(request) else {
        return page(.badRequest, OIDCPages.error("请求格式无效。", "The request is malformed."))
      }
      return try await authorize(form, request, context, posted: true)
    }
    router.post("/token") { request, _ in try await token(request) }
    registerTokenEndpoints(router)
    registerLogout(router)
    registerSecondFactor(router)
    registerDevice(router)
    router.get("/userinfo") { request, _ in try await userinfo(request) }
    router.post("/userinfo") { request, _ in try await userinfo(request) }
  }

  var issuer: String { server.issuer ?? "" }

  // MARK: Discovery

  /// Lists only what this provider does.
  func discovery() throws -> Data {
    let document: [String: Any] = [
      "issuer": issuer,
      "authorization_endpoint": issuer + "/authorize",
      "token_endpoint": issuer + "/token",
      "userinfo_endpoint": issuer + "/userinfo",
      "end_session_endpoint": issuer + "/logout",
      "device_authorization_endpoint": issuer + "/device_authorization",
      "jwks_uri": issuer + "/.well-known/jwks.json",
      "response_types_supported": ["code"],
      "response_modes_supported": ["query"],
      "grant_types_supported": [
        "authorization_code", "refresh_token", "client_credentials", Self.deviceGrantType,
      ],
      "revocation_endpoint": issuer + "/revoke",
      "revocation_endpoint_auth_methods_supported": [
        "client_secret_basic", "client_secret_post", "none",
      ],
      "introspection_endpoint": issuer + "/introspect",
      "introspection_endpoint_auth_methods_supported": [
        "client_secret_basic", "client_secret_post",
      ],
      "subject_types_supported": ["public"],
      "id_token_signing_alg_values_supported": ["RS256"],
      "scopes_supported": OIDCClientRules.standardScopes + OIDCClientRules.services,
      "claims_supported": [
        "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "name",
        "preferred_username",
      ],
      "token_endpoint_auth_methods_supported": [
        "client_secret_basic", "client_secret_post", "none",
      ],
      "code_challenge_methods_supported": ["S256"],
      "prompt_values_supported": ["none", "login", "consent"],
      "authorization_response_iss_parameter_supported": true,
      "ui_locales_supported": ["zh-CN", "en"],
    ]
    return try JSONSerialization.data(
      withJSONObject: document, options: [.sortedKeys, .withoutEscapingSlashes])
  }

  // MARK: Authorization

  /// A checked authorization request.
  struct AuthorizationRequest {
    var client: OIDCClient
    var redirectURI: String
    var scope: [String]
    var state: String?
    var nonce: String?
    var codeChallenge: String?
    var prompt: Set<String>
    var maxAge: Int?
    /// The fields the sign-in form carries through.
    var hidden: [(String, String)]
    /// Set when the sign-in is for approving a device (its user code): it returns to the
    /// device page, not to the client (OIDCDevice.swift).
    var deviceUserCode: String? = nil
  }

  /// Why an authorization request cannot go on: shown on a page (nothing trustworthy to
  /// redirect to) or sent back to the client's redirect URI (RFC 6749 §4.1.2.1).
  enum AuthorizationFailure: Error {
    case page(zh: String, en: String)
    case redirect(uri: String, error: String, description: String, state: String?)
  }

  func authorizationRequest(_ form: FormFields) async throws -> Result<
    AuthorizationRequest, AuthorizationFailure
  > {
    guard let clientID = form["client_id"], !form.malformed.contains("client_id") else {
      return .failure(.page(zh: "请求缺少有效的应用编号（client_id）。", en: "The request names no valid client_id."))
    }
    guard clientID.count <= 64, let stored = try await clients.client(id: clientID),
      !stored.client.disabled
    else {
      return .failure(.page(zh: "该应用未注册或已停用。", en: "This app is not registered, or has been disabled."))
    }
    let client = stored.client
    guard let redirectURI = form["redirect_uri"], !form.malformed.contains("redirect_uri"),
      client.redirectUris.contains(redirectURI)
    else {
      return .failure(
        .page(
          zh: "回调地址（redirect_uri）与该应用登记的不一致。",
          en: "The redirect_uri does not match any registered for this app."))
    }
    let state = form["state"]
    func fail(_ error: String, _ description: String) -> Result<
      AuthorizationRequest, AuthorizationFailure
    > {
      .failure(.redirect(uri: redirectURI, error: error, description: description, state: state))
    }
    if let repeated = form.malformed.sorted().first {
      return fail("invalid_request", "parameter '\(repeated)' is repeated or badly encoded")
    }
    guard form["response_type"] == "code" else {
      return fail("unsupported_response_type", "only response_type=code is supported")
    }
    let scope = (form["scope"] ?? "").split(separator: " ").map(String.init)
    guard scope.contains("openid") else { return fail("invalid_scope", "scope must include openid") }
    if let extra = scope.first(where: { !client.scopes.contains($0) }) {
      return fail("invalid_scope", "scope '\(extra)' is not allowed for this client")
    }
    for (name, value) in [("state", state), ("nonce", form["nonce"])] {
      if let value, value.utf8.count > 512 {
        return fail("invalid_request", "\(name) must have at most 512 characters")
      }
    }
    let challenge = form["code_challenge"]
    if let challenge {
      guard form["code_challenge_method"] == "S256" else {
        return fail("invalid_request", "code_challenge_method must be S256")
      }
      guard challenge.utf8.count == 43, Base64URL.decode(challenge)?.count == 32 else {
        return fail("invalid_request", "code_challenge must be a base64url SHA-256 (43 characters)")
      }
    } else if client.publicClient {
      return fail("invalid_request", "PKCE (code_challenge with S256) is required for this client")
    }
    let prompt = Set((form["prompt"] ?? "").split(separator: " ").map(String.init))
    // Every client is registered by an admin of the users' orgs (first party): there is no
    // consent page, and prompt=consent goes on as if consent were given.
    if let unknown = prompt.first(where: { !["none", "login", "consent"].contains($0) }) {
      return fail(
        "invalid_request", "prompt '\(unknown)' is not supported (none, login, consent)")
    }
    if prompt.contains("none") && prompt.count > 1 {
      return fail("invalid_request", "prompt=none cannot be combined with other values")
    }
    var maxAge: Int?
    if let text = form["max_age"] {
      guard let value = Int(text), value >= 0 else {
        return fail("invalid_request", "max_age must be a non-negative integer")
      }
      maxAge = value
    }
    return .success(
      AuthorizationRequest(
        client: client, redirectURI: redirectURI, scope: scope, state: state, nonce: form["nonce"],
        codeChallenge: challenge, prompt: prompt, maxAge: maxAge,
        hidden: Self.requestFields.compactMap { name in form[name].map { (name, $0) } }))
  }

  /// The answer refusing an authorization request: a page, or the error sent back to the
  /// client's redirect URI.
  func refusal(_ failure: AuthorizationFailure) -> Response {
    switch failure {
    case .page(let zh, let en): return page(.badRequest, OIDCPages.error(zh, en))
    case .redirect(let uri, let error, let description, let state):
      return redirect(
        uri, [("error", error), ("error_description", description)]
          + (state.map { [("state", $0)] } ?? []) + [("iss", issuer)])
    }
  }

  private func authorize(
    _ form: FormFields, _ request: Request, _ context: OIDCRequestContext, posted: Bool = false
  ) async throws -> Response {
    let checked: AuthorizationRequest
    switch try await authorizationRequest(form) {
    case .success(let request): checked = request
    case .failure(let failure): return refusal(failure)
    }
    if posted { return try await signIn(form, checked, request, context) }
    let fresh = checked.prompt.contains("login")
    if !fresh, let sso = try await ssoSession(request),
      checked.maxAge.map({ Date().timeIntervalSince(sso.authTime) <= Double($0) }) ?? true
    {
      return try await issueCode(checked, sso)
    }
    if checked.prompt.contains("none") {
      return redirect(
        checked.redirectURI,
        [("error", "login_required"), ("error_description", "the user must sign in")]
          + (checked.state.map { [("state", $0)] } ?? []) + [("iss", issuer)])
    }
    return loginPage(checked, request, username: "", message: nil, status: .ok)
  }

  /// The sign-in form, with the CSRF cookie (double submit: the form carries the cookie's
  /// value; another site can neither read the cookie nor set it).
  func loginPage(
    _ checked: AuthorizationRequest, _ request: Request, username: String,
    message: (zh: String, en: String)?, status: HTTPResponse.Status
  ) -> Response {
    let csrf = csrfToken(request)
    return settingCSRF(
      page(
        status,
        OIDCPages.login(
          clientName: checked.client.name,
          action: checked.deviceUserCode == nil ? "authorize" : "device", hidden: checked.hidden,
          csrf: csrf, username: username, message: message)), csrf)
  }

  /// The POSTed sign-in form: CSRF, then gRPC Login's own path.
  func signIn(
    _ form: FormFields, _ checked: AuthorizationRequest, _ request: Request,
    _ context: OIDCRequestContext
  ) async throws -> Response {
    let username = form["username"] ?? ""
    guard csrfMatches(form, request) else {
      return loginPage(
        checked, request, username: username,
        message: (
          "页面已过期或来源不明，请重新登录。",
          "This form has expired or did not come from this page; sign in again."
        ), status: .forbidden)
    }
    var metadata = Metadata()
    for value in request.headers[values: HTTPField.Name("X-Forwarded-For")!] {
      metadata.addString(value, forKey: "x-forwarded-for")
    }
    let tokens: Smartschool_Identity_V1_TokenResponse
    do {
      tokens = try await withServerContextRPCCancellationHandle { handle in
        try await api.login(
          request: ServerRequest(
            metadata: metadata,
            message: .with {
              $0.username = username
              $0.password = form["password"] ?? ""
              $0.acceptsSecondFactor = true
            }),
          context: ServerContext(
            descriptor: API.Method.Login.descriptor, remotePeer: context.peer, localPeer: "",
            cancellation: handle)
        ).message
      }
    } catch let error as ServiceError {
      let (status, message) = try await loginMessage(error, username: username)
      return loginPage(checked, request, username: username, message: message, status: status)
    }
    if tokens.hasSecondFactor {
      return try await secondFactorPage(
        checked, request, challengeID: tokens.secondFactor.challengeID, message: nil,
        status: .ok)
    }
    let (sso, cookie) = try await openSSO(tokens)
    var response = try await signedIn(checked, sso)
    response.setCookie(cookie)
    return response
  }

  /// Where a completed sign-in goes: back to the client with a code, or to the device page.
  func signedIn(_ checked: AuthorizationRequest, _ sso: SSOSession) async throws -> Response {
    guard let userCode = checked.deviceUserCode else {
      return try await issueCode(checked, sso, status: .seeOther)
    }
    return redirect("device", [("user_code", userCode)], status: .seeOther)
  }

  /// The SSO session of a completed sign-in (password, and the second step when one is
  /// needed), and its cookie: it lives as long as the sign-in's refresh token may.
  func openSSO(_ tokens: Smartschool_Identity_V1_TokenResponse) async throws -> (
    SSOSession, Cookie
  ) {
    let secret = Secrets.random()
    let sso = SSOSession(
      hash: Secrets.digest(secret), sessionID: tokens.sessionID, userID: tokens.userID,
      authTime: Date())
    try await clients.addSSOSession(sso)
    let lifetime = Int(tokens.refreshTokenExpireTime.date.timeIntervalSinceNow)
    return (
      sso,
      Cookie(
        name: Self.ssoCookie, value: secret, maxAge: max(lifetime, 0), path: "/", secure: tls,
        httpOnly: true, sameSite: .lax)
    )
  }

  /// What the page says about a refused sign-in. gRPC Login says the same to every failure
  /// (nothing about which usernames exist); a person at the page is told whether the account
  /// is locked (and for how long), disabled or not yet activated, as the issue asks.
  func loginMessage(_ error: ServiceError, username: String) async throws -> (
    HTTPResponse.Status, (zh: String, en: String)
  ) {
    switch error {
    case .invalidArgument:
      return (.badRequest, ("请输入用户名和密码。", "Enter your username and password."))
    case .resourceExhausted:
      return (
        .tooManyRequests,
        ("尝试过于频繁，请稍候一分钟再试。", "Too many attempts: wait a minute and try again.")
      )
    case .failedPrecondition:
      return (
        .forbidden,
        (
          "该账号的密码由管理员设置，请先在智慧校园应用中修改密码。",
          "An administrator set this password: change it in the SmartSchool app first."
        )
      )
    case .unauthenticated:
      let user = try await api.store.credentials(username: username)?.user
      if let user, user.kind != .serviceAccount {
        if user.status == .deactivated {
          return (
            .forbidden,
            ("该账号已停用，请联系管理员。", "This account is disabled: ask your administrator.")
          )
        }
        if user.status == .pendingActivation {
          return (
            .forbidden,
            (
              "该账号尚未激活，请使用管理员提供的激活码激活。",
              "This account is not activated yet: activate it with the code your administrator gave you."
            )
          )
        }
        if user.hasLockedUntil, user.lockedUntil.date > Date() {
          let minutes = max(1, Int((user.lockedUntil.date.timeIntervalSinceNow / 60).rounded(.up)))
          return (
            .forbidden,
            (
              "登录失败次数过多，账号已暂时锁定，请 \(minutes) 分钟后再试。",
              "Too many failed sign-ins: the account is locked for \(minutes) more minute(s)."
            )
          )
        }
      }
      return (.unauthorized, ("用户名或密码错误。", "Wrong username or password."))
    default:
      throw error
    }
  }

  /// The SSO session of the request's cookie, while its identity session lives and its user
  /// is active.
  func ssoSession(_ request: Request) async throws -> SSOSession? {
    guard let secret = request.cookies[Self.ssoCookie]?.value, secret.utf8.count <= 128,
      let sso = try await clients.ssoSession(hash: Secrets.digest(secret)),
      try await api.store.sessionActive(id: sso.sessionID),
      let user = try await api.store.user(id: sso.userID), user.status == .active
    else { return nil }
    return sso
  }

  func issueCode(
    _ checked: AuthorizationRequest, _ sso: SSOSession, status: HTTPResponse.Status = .found
  ) async throws -> Response {
    let code = Secrets.random()
    try await clients.addCode(
      AuthorizationCode(
        hash: Secrets.digest(code), clientID: checked.client.clientID, userID: sso.userID,
        sessionID: sso.sessionID, redirectURI: checked.redirectURI,
        scope: checked.scope.joined(separator: " "), nonce: checked.nonce,
        codeChallenge: checked.codeChallenge, authTime: sso.authTime,
        expiresAt: Date().addingTimeInterval(settings.codeTTL)))
    return redirect(
      checked.redirectURI,
      [("code", code)] + (checked.state.map { [("state", $0)] } ?? []) + [("iss", issuer)],
      status: status)
  }

  // MARK: Token

  private func token(_ request: Request) async throws -> Response {
    let form: FormFields
    let stored: StoredOIDCClient
    switch try await clientRequest(request) {
    case .client(let fields, let client): (form, stored) = (fields, client)
    case .refused(let response): return response
    }
    let clientID = stored.client.clientID
    guard let grant = form["grant_type"] else {
      return tokenError("invalid_request", "grant_type is missing")
    }
    switch grant {
    case "authorization_code": break
    case "refresh_token": return try await refreshGrant(form, client: stored.client)
    case "client_credentials": return try await clientCredentialsGrant(form, client: stored)
    case Self.deviceGrantType: return try await deviceGrant(form, client: stored.client)
    default:
      return tokenError(
        "unsupported_grant_type",
        "grant_type must be authorization_code, refresh_token, client_credentials or "
          + Self.deviceGrantType)
    }
    guard let codeText = form["code"], codeText.utf8.count <= 128,
      let redirectURI = form["redirect_uri"]
    else { return tokenError("invalid_request", "code and redirect_uri are required") }
    let invalid = "the code is invalid, expired, already used or not issued to this client"
    // Redeemed before anything else is checked: a code is good for one try only.
    guard let code = try await clients.redeemCode(hash: Secrets.digest(codeText)) else {
      return tokenError("invalid_grant", invalid)
    }
    guard code.clientID == clientID, code.expiresAt > Date(), code.redirectURI == redirectURI
    else { return tokenError("invalid_grant", invalid) }
    let verifier = form["code_verifier"]
    if let challenge = code.codeChallenge {
      guard let verifier, (43...128).contains(verifier.utf8.count),
        Base64URL.encode(Data(SHA256.hash(data: Data(verifier.utf8)))) == challenge
      else { return tokenError("invalid_grant", "the code_verifier does not match") }
    } else if verifier != nil {
      return tokenError("invalid_grant", "the authorization request had no code_challenge")
    }
    guard try await api.store.sessionActive(id: code.sessionID),
      let user = try await api.store.user(id: code.userID), user.status == .active
    else { return tokenError("invalid_grant", "the sign-in has ended") }
    return try await codeTokens(code, user: user, client: stored.client)
  }

  /// The address a request came from, resolved as gRPC `Login` resolves it (the header
  /// `X-Forwarded-For` counts only from a trusted proxy).
  func clientAddress(_ request: Request, _ context: OIDCRequestContext) -> String {
    ClientAddress.resolve(
      peer: context.peer,
      forwardedFor: request.headers[values: HTTPField.Name("X-Forwarded-For")!],
      trusted: api.settings.trustedProxies)
  }

  func tokenError(_ error: String, _ description: String, basic: Bool = false)
    -> Response
  {
    let body = (try? Self.json(["error": error, "error_description": description])) ?? Data()
    var response = jsonResponse(body, status: error == "invalid_client" ? .unauthorized : .badRequest)
    if error == "invalid_client" {
      response.headers[.wwwAuthenticate] =
        basic ? "Basic realm=\"identity\"" : "Bearer realm=\"identity\""
    }
    return response
  }

  // MARK: Userinfo

  private func userinfo(_ request: Request) async throws -> Response {
    guard let header = request.headers[.authorization], header.lowercased().hasPrefix("bearer ")
    else { return bearerError(nil) }
    let token = String(header.dropFirst(7)).trimmingSpaces()
    // A client's access token (identity's own, Ed25519) granted openid, while its grant stands.
    guard let principal = try? await api.verifier.verify(token), principal.clientID != nil,
      let scope = principal.scope, scope.split(separator: " ").contains("openid"),
      let grant = try await grants.grant(sessionID: principal.sessionID),
      grant.userID == principal.userID, try await grantActive(grant),
      let user = try await api.store.user(id: principal.userID)
    else { return bearerError("invalid_token") }
    var body: [String: Any] = ["sub": user.id]
    let scopes = scope.split(separator: " ")
    if scopes.contains("profile") {
      body["name"] = user.displayName
      body["preferred_username"] = user.username
    }
    return jsonResponse(try Self.json(body))
  }

  private func bearerError(_ error: String?) -> Response {
    var response = jsonResponse(
      (try? Self.json(["error": error ?? "invalid_request"])) ?? Data(), status: .unauthorized)
    response.headers[.wwwAuthenticate] =
      error.map { "Bearer realm=\"identity\", error=\"\($0)\"" } ?? "Bearer realm=\"identity\""
    return response
  }

  // MARK: Helpers

  static func json(_ object: [String: Any]) throws -> Data {
    try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
  }

  /// Compares secrets in time independent of where they differ.
  static func same(_ a: String, _ b: String) -> Bool {
    let (x, y) = (Array(a.utf8), Array(b.utf8))
    guard x.count == y.count else { return false }
    return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
  }

  /// A form body (at most 16 KiB), or `nil` when it is not one.
  func formBody(_ request: Request) async throws -> FormFields? {
    guard
      request.headers[.contentType]?.lowercased().hasPrefix("application/x-www-form-urlencoded")
        == true
    else { return nil }
    let buffer = try await request.body.collect(upTo: 16 * 1024)
    return FormFields(Substring(String(buffer: buffer)))
  }

  func page(_ status: HTTPResponse.Status, _ html: String) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "text/html; charset=utf-8"
    headers[.cacheControl] = "no-store"
    headers[.contentSecurityPolicy] =
      "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
    headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
    return Response(
      status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
  }

  func redirect(
    _ uri: String, _ parameters: [(String, String)], status: HTTPResponse.Status = .found
  ) -> Response {
    let separator = uri.contains("?") ? "&" : "?"
    var headers = HTTPFields()
    headers[.location] = uri + separator + FormFields.encode(parameters)
    headers[.cacheControl] = "no-store"
    headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
    return Response(status: status, headers: headers)
  }
}
