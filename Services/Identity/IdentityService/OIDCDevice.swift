import Foundation
import HTTPTypes
import Hummingbird
import ServiceRuntime
import SmartSchoolModel

/// The device authorization grant (RFC 8628), for classroom terminals and TV apps (一码通):
/// the terminal asks at `/device_authorization` and shows the user code and the
/// `verification_uri_complete` as a QR code; a teacher opens it on a phone, signs in there (or
/// is signed in already), sees which app asks and approves or denies; the terminal's polling
/// at `/token` then receives tokens, once.
///
/// Every enabled client may use the grant: a terminal cannot keep a secret, so a public client
/// names itself by `client_id`, and a confidential one authenticates as at the token endpoint.
/// What protects the user is the approval page, which names the app, and the user's explicit
/// approval (a CSRF-protected form). Codes are stored hashed, in the store, so any replica
/// answers a poll.
extension OIDCProvider {
  static let deviceGrantType = "urn:ietf:params:oauth:grant-type:device_code"
  /// RFC 8628 §6.1: consonants only, so that no code spells a word and none has look-alikes
  /// (0/O, 1/I); 20⁸ codes.
  static let userCodeAlphabet = Array("BCDFGHJKLMNPQRSTVWXZ")

  var devices: any OIDCDeviceStore {
    get throws {
      guard let devices = clients as? any OIDCDeviceStore else {
        throw ServiceError.internalError("identity's OIDC store keeps no device codes")
      }
      return devices
    }
  }

  func registerDevice(_ router: Router<OIDCRequestContext>) {
    router.post("/device_authorization") { request, context in
      try await startDevice(request, context)
    }
    router.get("/device") { request, context in
      try await devicePage(FormFields(Substring(request.uri.query ?? "")), request, context)
    }
    router.post("/device") { request, context in
      guard let form = try await formBody(request) else {
        return page(.badRequest, OIDCPages.error("请求格式无效。", "The request is malformed."))
      }
      return try await deviceDecision(form, request, context)
    }
  }

  /// A new user code (8 letters of the alphabet).
  static func newUserCode() -> String {
    var rng = SystemRandomNumberGenerator()
    return String((0..<8).map { _ in userCodeAlphabet.randomElement(using: &rng)! })
  }

  /// A user code as typed (any case, with or without the dash and spaces), or `nil` when it
  /// cannot be one.
  static func normalizeUserCode(_ text: String) -> String? {
    guard text.count <= 32 else { return nil }
    let code = text.uppercased().filter { $0 != "-" && $0 != " " }
    return code.count == 8 && code.allSatisfy(userCodeAlphabet.contains) ? code : nil
  }

  /// `XXXX-XXXX`.
  static func formatUserCode(_ code: String) -> String {
    String(code.prefix(4)) + "-" + String(code.dropFirst(4))
  }

  // MARK: The device's side

  private func startDevice(_ request: Request, _ context: OIDCRequestContext) async throws
    -> Response
  {
    let form: FormFields
    let client: OIDCClient
    switch try await clientRequest(request) {
    case .client(let fields, let stored): (form, client) = (fields, stored.client)
    case .refused(let response): return response
    }
    // Each authorization is a row kept for its lifetime: one address may start as many a
    // minute as it may try logins (the same per-address limit), no more.
    do {
      try api.throttle.admit(address: clientAddress(request, context))
    } catch {
      var response = tokenError("slow_down", error.message)
      response.status = .tooManyRequests
      response.headers[.retryAfter] = "60"
      return response
    }
    let scope = (form["scope"] ?? "openid").split(separator: " ").map(String.init)
    guard scope.contains("openid") else {
      return tokenError("invalid_scope", "scope must include openid")
    }
    if let extra = scope.first(where: { !client.scopes.contains($0) }) {
      return tokenError("invalid_scope", "scope '\(extra)' is not allowed for this client")
    }
    let deviceCode = Secrets.random()
    let store = try devices
    var userCode: String?
    // A drawn code that is taken (1 in 20⁸ per live code) is drawn again.
    for _ in 0..<5 where userCode == nil {
      let candidate = Self.newUserCode()
      let added = try await store.addDeviceAuthorization(
        DeviceAuthorization(
          deviceHash: Secrets.digest(deviceCode), userCodeHash: Secrets.digest(candidate),
          clientID: client.clientID, scope: scope.joined(separator: " "),
          interval: settings.deviceInterval,
          expiresAt: Date().addingTimeInterval(settings.deviceCodeTTL), lastPoll: nil,
          status: .pending, userID: nil, sessionID: nil, authTime: nil))
      if added { userCode = candidate }
    }
    guard let userCode else { throw ServiceError.unavailable("no free user code: try again") }
    let shown = Self.formatUserCode(userCode)
    return jsonResponse(
      try Self.json([
        "device_code": deviceCode, "user_code": shown,
        "verification_uri": issuer + "/device",
        "verification_uri_complete": issuer + "/device?"
          + FormFields.encode([("user_code", shown)]),
        "expires_in": Int(settings.deviceCodeTTL), "interval": settings.deviceInterval,
      ]))
  }

  /// grant_type=urn:ietf:params:oauth:grant-type:device_code: the RFC's answers while the
  /// user has not decided, and the code flow's tokens (``codeTokens``) to exactly one poll
  /// after the approval.
  func deviceGrant(_ form: FormFields, client: OIDCClient) async throws -> Response {
    guard let deviceCode = form["device_code"], deviceCode.utf8.count <= 128 else {
      return tokenError("invalid_request", "device_code is required (at most 128 characters)")
    }
    let outcome = try await devices.pollDeviceAuthorization(
      deviceHash: Secrets.digest(deviceCode), clientID: client.clientID, now: Date())
    switch outcome {
    case .unknown:
      return tokenError("invalid_grant", "the device_code is unknown or not this client's")
    case .expired:
      return tokenError("expired_token", "the device_code has expired: start again")
    case .pending:
      return tokenError("authorization_pending", "the user has not approved the device yet")
    case .slowDown:
      return tokenError("slow_down", "polling too fast: wait 5 seconds more between polls")
    case .denied:
      return tokenError("access_denied", "the user denied the device")
    case .used:
      return tokenError("invalid_grant", "the device_code was already used")
    case .approved(let device):
      guard let userID = device.userID, let sessionID = device.sessionID,
        try await api.store.sessionActive(id: sessionID),
        let user = try await api.store.user(id: userID), user.status == .active
      else { return tokenError("invalid_grant", "the sign-in that approved the device has ended") }
      return try await codeTokens(
        AuthorizationCode(
          hash: device.deviceHash, clientID: client.clientID, userID: userID,
          sessionID: sessionID, redirectURI: "", scope: device.scope, nonce: nil,
          codeChallenge: nil, authTime: device.authTime ?? Date(), expiresAt: device.expiresAt),
        user: user, client: client)
    }
  }

  // MARK: The user's side

  /// A pending device authorization found by its user code, as the request its sign-in (if
  /// needed) carries through; or the page that says the code is no good.
  enum DeviceLookup {
    case found(AuthorizationRequest, DeviceAuthorization)
    case refused(Response)
  }

  func deviceSignInRequest(
    _ typed: String, _ request: Request, _ context: OIDCRequestContext
  ) async throws -> DeviceLookup {
    // RFC 8628 §5.1: user codes are short, so wrong ones are limited per address; once an
    // address is out of guesses its codes are not even looked up.
    let address = clientAddress(request, context)
    do {
      try api.throttle.admitGuess(from: address)
    } catch {
      return .refused(
        page(
          .tooManyRequests,
          OIDCPages.deviceEntry(
            message: (
              "验证码输入错误次数过多，请一分钟后再试。",
              "Too many wrong codes from your network: try again in a minute."
            ))))
    }
    guard let code = Self.normalizeUserCode(typed),
      let device = try await devices.deviceAuthorization(userCodeHash: Secrets.digest(code)),
      device.status == .pending, device.expiresAt > Date(),
      let stored = try await clients.client(id: device.clientID), !stored.client.disabled
    else {
      return .refused(
        page(
          .notFound,
          OIDCPages.deviceEntry(
            message: (
              "验证码无效、已过期或已使用，请在设备上重新获取。",
              "This code is not valid, has expired or was already used: get a new one on the "
                + "device."
            ))))
    }
    api.throttle.refundGuess(from: address)
    let shown = Self.formatUserCode(code)
    return .found(
      AuthorizationRequest(
        client: stored.client, redirectURI: "", scope: device.scope.split(separator: " ").map(
          String.init), state: nil, nonce: nil, codeChallenge: nil, prompt: [], maxAge: nil,
        hidden: [("user_code", shown)], deviceUserCode: shown), device)
  }

  private func devicePage(
    _ form: FormFields, _ request: Request, _ context: OIDCRequestContext
  ) async throws -> Response {
    guard let typed = form["user_code"] else {
      return page(.ok, OIDCPages.deviceEntry(message: nil))
    }
    switch try await deviceSignInRequest(typed, request, context) {
    case .refused(let response): return response
    case .found(let checked, _):
      guard let sso = try await ssoSession(request) else {
        return loginPage(checked, request, username: "", message: nil, status: .ok)
      }
      return try await approvalPage(checked, sso, request, message: nil, status: .ok)
    }
  }

  private func approvalPage(
    _ checked: AuthorizationRequest, _ sso: SSOSession, _ request: Request,
    message: (zh: String, en: String)?, status: HTTPResponse.Status
  ) async throws -> Response {
    let user = try await api.store.user(id: sso.userID)
    let csrf = csrfToken(request)
    return settingCSRF(
      page(
        status,
        OIDCPages.deviceApproval(
          clientName: checked.client.name, userCode: checked.deviceUserCode ?? "",
          user: user.map { "\($0.displayName)（\($0.username)）" } ?? sso.userID,
          scope: checked.scope, csrf: csrf, message: message)), csrf)
  }

  /// The POSTed forms of the device page: the sign-in, or the approval or denial.
  private func deviceDecision(
    _ form: FormFields, _ request: Request, _ context: OIDCRequestContext
  ) async throws -> Response {
    let checked: AuthorizationRequest
    let device: DeviceAuthorization
    switch try await deviceSignInRequest(form["user_code"] ?? "", request, context) {
    case .refused(let response): return response
    case .found(let found, let record): (checked, device) = (found, record)
    }
    if form["password"] != nil || form["username"] != nil {
      return try await signIn(form, checked, request, context)
    }
    guard let sso = try await ssoSession(request) else {
      return loginPage(
        checked, request, username: "",
        message: ("请先登录。", "Sign in first."), status: .unauthorized)
    }
    guard csrfMatches(form, request) else {
      return try await approvalPage(
        checked, sso, request,
        message: (
          "页面已过期或来源不明，请重新确认。",
          "This form has expired or did not come from this page; decide again."
        ), status: .forbidden)
    }
    guard let decision = form["decision"], decision == "approve" || decision == "deny" else {
      return try await approvalPage(
        checked, sso, request, message: ("请选择允许或拒绝。", "Choose approve or deny."),
        status: .badRequest)
    }
    let approve = decision == "approve"
    guard
      try await devices.decideDeviceAuthorization(
        userCodeHash: device.userCodeHash, approve: approve, userID: sso.userID,
        sessionID: sso.sessionID, authTime: sso.authTime, now: Date())
    else {
      return page(
        .conflict,
        OIDCPages.deviceEntry(
          message: ("该请求已处理或已过期。", "This request was already decided, or has expired.")))
    }
    let user = try await api.store.user(id: sso.userID)
    await api.audit(
      approve ? "oidc.device_approve" : "oidc.device_deny", actor: sso.userID,
      target: checked.client.clientID, orgID: user?.orgID ?? "", orgPath: user?.orgPath ?? "",
      detail: "scope \(device.scope)")
    return page(.ok, OIDCPages.deviceDone(clientName: checked.client.name, approved: approve))
  }
}

extension OIDCPages {
  /// The form to type a device's user code (GET, so no CSRF token is needed).
  static func deviceEntry(message: (zh: String, en: String)?) -> String {
    let notice = message.map { alert($0.zh, $0.en) } ?? ""
    return page(
      title: "设备登录 Device sign-in",
      body: """
        <h1>设备登录<br><span lang="en">Sign in a device</span></h1>
        \(notice)
        <form method="get" action="device">
        <label for="user_code">输入设备上显示的验证码 <span lang="en">Enter the code the device
        shows</span></label>
        <input id="user_code" name="user_code" required autocapitalize="characters"
          autocomplete="off" spellcheck="false" maxlength="32" placeholder="XXXX-XXXX">
        <button type="submit">继续 <span lang="en">Continue</span></button>
        </form>
        """)
  }

  /// "设备 <client> 请求登录": approve or deny, as the signed-in user.
  static func deviceApproval(
    clientName: String, userCode: String, user: String, scope: [String], csrf: String,
    message: (zh: String, en: String)?
  ) -> String {
    let notice = message.map { alert($0.zh, $0.en) } ?? ""
    return page(
      title: "设备请求登录 Device sign-in",
      body: """
        <h1>设备 <strong>\(escapeHTML(clientName))</strong> 请求登录<br>
        <span lang="en">The device \(escapeHTML(clientName)) asks to sign in</span></h1>
        \(notice)
        <p>验证码 <span lang="en">Code</span>:
        <strong id="user-code">\(escapeHTML(userCode))</strong></p>
        <p>请确认设备上显示的是同一个验证码。允许后，该设备将以 <strong>\(escapeHTML(user))</strong>
        的身份登录（权限：\(escapeHTML(scope.joined(separator: " "))))。<br>
        <span lang="en">Check that the device shows the same code. If you approve, it signs in as
        \(escapeHTML(user)) (scope: \(escapeHTML(scope.joined(separator: " ")))).</span></p>
        <form method="post" action="device">
        <input type="hidden" name="user_code" value="\(escapeHTML(userCode))">
        <input type="hidden" name="csrf" value="\(escapeHTML(csrf))">
        <button type="submit" name="decision" value="approve">允许
        <span lang="en">Approve</span></button>
        <button type="submit" name="decision" value="deny" class="secondary">拒绝
        <span lang="en">Deny</span></button>
        </form>
        """)
  }

  /// The end of a decision.
  static func deviceDone(clientName: String, approved: Bool) -> String {
    let name = escapeHTML(clientName)
    return page(
      title: approved ? "已允许 Approved" : "已拒绝 Denied",
      body: approved
        ? """
          <h1>已允许<br><span lang="en">Approved</span></h1>
          <p>设备 <strong>\(name)</strong> 即将登录，可以关闭此页面。<br>
          <span lang="en">The device \(name) is signing in; you may close this page.</span></p>
          """
        : """
          <h1>已拒绝<br><span lang="en">Denied</span></h1>
          <p>设备 <strong>\(name)</strong> 不会登录。<br>
          <span lang="en">The device \(name) will not be signed in.</span></p>
          """)
  }
}
