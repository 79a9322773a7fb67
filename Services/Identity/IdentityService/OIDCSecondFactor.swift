import Foundation
import GRPCCore
import HTTPTypes
import Hummingbird
import ServiceRuntime
import SmartSchoolModel

/// Two-factor sign-in on the web (TOTP): after the right password of an account that has or
/// must enrol TOTP, a second page asks for the authenticator's code (or a recovery code). The
/// step is gRPC LoginSecondFactor's own (``IdentityAPI/completeSecondFactor``): the same
/// challenge, codes, lockout and rate limits. The form carries the challenge, the
/// authorization request and the CSRF token; no SSO cookie exists until the step succeeds.
extension OIDCProvider {
  /// The form field of the challenge and of the code.
  static let challengeField = "challenge"
  static let codeField = "code"

  func registerSecondFactor(_ router: Router<OIDCRequestContext>) {
    router.post("/second-factor") { request, context in
      guard let form = try await formBody(request) else {
        return page(.badRequest, OIDCPages.error("请求格式无效。", "The request is malformed."))
      }
      return try await secondStep(form, request, context)
    }
  }

  /// The second page for the challenge `challengeID`: a code field, and for an enrolment the
  /// new secret to add to an authenticator app. `nil` when the challenge is gone.
  func secondFactorPage(
    _ checked: AuthorizationRequest, _ request: Request, challengeID: String,
    message: (zh: String, en: String)?, status: HTTPResponse.Status
  ) async throws -> Response {
    let twoFactor = try api.twoFactor
    guard challengeID.utf8.count <= 128,
      let challenge = try await twoFactor.challenge(idHash: Secrets.digest(challengeID)),
      !challenge.completed, challenge.expiresAt > Date(),
      let user = try await api.store.user(id: challenge.userID)
    else { return challengeGone(checked, request) }
    var enrolment: Smartschool_Identity_V1_TotpEnrolment?
    if challenge.kind == .totpEnrolment, let state = try await twoFactor.totp(userID: user.id),
      !state.active
    {
      enrolment = TOTP.enrolment(secret: state.secret, username: user.username)
    }
    let csrf = csrfToken(request)
    return settingCSRF(
      page(
        status,
        OIDCPages.secondFactor(
          clientName: checked.client.name,
          hidden: checked.hidden + [(Self.challengeField, challengeID)], csrf: csrf,
          enrolment: enrolment, message: message)), csrf)
  }

  private func challengeGone(_ checked: AuthorizationRequest, _ request: Request) -> Response {
    loginPage(
      checked, request, username: "",
      message: (
        "验证已超时或已完成，请重新登录。",
        "This verification has expired or was already completed: sign in again."
      ), status: .unauthorized)
  }

  private func secondStep(_ form: FormFields, _ request: Request, _ context: OIDCRequestContext)
    async throws -> Response
  {
    let checked: AuthorizationRequest
    if form["user_code"] != nil {
      // Signing in to approve a device.
      switch try await deviceSignInRequest(form["user_code"] ?? "", request, context) {
      case .found(let found, _): checked = found
      case .refused(let response): return response
      }
    } else {
      switch try await authorizationRequest(form) {
      case .success(let request): checked = request
      case .failure(let failure): return refusal(failure)
      }
    }
    let challengeID = form[Self.challengeField] ?? ""
    guard csrfMatches(form, request) else {
      return try await secondFactorPage(
        checked, request, challengeID: challengeID,
        message: (
          "页面已过期或来源不明，请重新输入验证码。",
          "This form has expired or did not come from this page; enter the code again."
        ), status: .forbidden)
    }
    let client = clientAddress(request, context)
    let done: Smartschool_Identity_V1_LoginSecondFactorResponse
    do {
      done = try await api.completeSecondFactor(
        challengeID: challengeID, code: form[Self.codeField] ?? "", client: client)
    } catch let error as ServiceError {
      return try await secondStepRefused(error, checked, request, challengeID: challengeID)
    }
    let (sso, cookie) = try await openSSO(done.tokens)
    var response: Response
    if done.recoveryCodes.isEmpty {
      response = try await signedIn(checked, sso)
    } else {
      // A new enrolment: the recovery codes are shown once, then the user goes on to the app
      // (the SSO cookie signs them in there without another password).
      response = page(
        .ok,
        OIDCPages.recoveryCodes(
          done.recoveryCodes,
          continueTo: (checked.deviceUserCode == nil ? "authorize?" : "device?")
            + FormFields.encode(checked.hidden)))
    }
    response.setCookie(cookie)
    return response
  }

  /// The page after a refused second step: the code page again with why, or the sign-in page
  /// when the challenge is gone or the account is locked.
  private func secondStepRefused(
    _ error: ServiceError, _ checked: AuthorizationRequest, _ request: Request,
    challengeID: String
  ) async throws -> Response {
    let again = { (status: HTTPResponse.Status, zh: String, en: String) in
      try await secondFactorPage(
        checked, request, challengeID: challengeID, message: (zh, en), status: status)
    }
    switch error {
    case .invalidArgument:
      return try await again(
        .badRequest, "请输入 6 位验证码或恢复码。", "Enter the 6-digit code or a recovery code.")
    case .resourceExhausted:
      return try await again(
        .tooManyRequests, "尝试过于频繁，请稍候一分钟再试。",
        "Too many attempts: wait a minute and try again.")
    case .unauthenticated(let reason) where reason != IdentityAPI.badChallenge:
      // A wrong code, or the account is locked (by this guess or before it).
      let challenge = try await api.twoFactor.challenge(idHash: Secrets.digest(challengeID))
      if let challenge, let user = try await api.store.user(id: challenge.userID),
        user.hasLockedUntil, user.lockedUntil.date > Date()
      {
        let (status, message) = try await loginMessage(error, username: user.username)
        return loginPage(checked, request, username: "", message: message, status: status)
      }
      return try await again(
        .unauthorized, "验证码错误或已使用过。", "The code is wrong or was already used.")
    case .unauthenticated:
      return challengeGone(checked, request)
    default:
      throw error
    }
  }
}

extension OIDCPages {
  /// The second sign-in page: the code of an authenticator app (or a recovery code); for an
  /// enrolment, first the new secret to add to the app.
  static func secondFactor(
    clientName: String, hidden: [(String, String)], csrf: String,
    enrolment: Smartschool_Identity_V1_TotpEnrolment?, message: (zh: String, en: String)?
  ) -> String {
    let fields = (hidden + [("csrf", csrf)]).map {
      "<input type=\"hidden\" name=\"\(escapeHTML($0.0))\" value=\"\(escapeHTML($0.1))\">"
    }.joined(separator: "\n")
    let notice = message.map { alert($0.zh, $0.en) } ?? ""
    var grouped = ""
    for (i, c) in (enrolment?.secret ?? "").enumerated() {
      if i > 0 && i % 4 == 0 { grouped += " " }
      grouped.append(c)
    }
    let setup = enrolment.map {
      """
      <p>您的账号需要两步验证。请在验证器应用中添加以下密钥，然后输入应用显示的 6 位数字。<br>
      <span lang="en">Your account needs two-step verification. Add this key to an authenticator
      app, then enter the 6-digit code it shows.</span></p>
      <p><code id="totp-secret">\(escapeHTML(grouped))</code></p>
      <p><a href="\(escapeHTML($0.otpauthUri))">在本机验证器应用中打开
      <span lang="en">Open in an authenticator app on this device</span></a></p>
      """
    } ?? """
      <p>请输入验证器应用显示的 6 位数字，或一个恢复码。<br>
      <span lang="en">Enter the 6-digit code your authenticator app shows, or a recovery
      code.</span></p>
      """
    return page(
      title: "两步验证 Two-step verification",
      body: """
        <h1>两步验证<br><span lang="en">Two-step verification</span></h1>
        <p class="app">登录到 <strong>\(escapeHTML(clientName))</strong><br>
        <span lang="en">to continue to \(escapeHTML(clientName))</span></p>
        \(notice)
        \(setup)
        <form method="post" action="second-factor">
        \(fields)
        <label for="code">验证码 <span lang="en">Code</span></label>
        <input id="code" name="code" required autocomplete="one-time-code" inputmode="numeric"
          autocapitalize="none" spellcheck="false" maxlength="32">
        <button type="submit">验证 <span lang="en">Verify</span></button>
        </form>
        """)
  }

  /// The recovery codes of a new enrolment, shown once, and the way on to the app.
  static func recoveryCodes(_ codes: [String], continueTo link: String) -> String {
    let items = codes.map { "<li><code>\(escapeHTML($0))</code></li>" }.joined(separator: "\n")
    return page(
      title: "恢复码 Recovery codes",
      body: """
        <h1>两步验证已启用<br><span lang="en">Two-step verification is on</span></h1>
        <p>请妥善保存以下恢复码：手机丢失时，每个恢复码可代替验证码使用一次。它们只显示这一次。<br>
        <span lang="en">Keep these recovery codes safe: if you lose your phone, each one can
        replace a code once. They are shown only this once.</span></p>
        <ul id="recovery-codes">
        \(items)
        </ul>
        <p><a id="continue" href="\(escapeHTML(link))">继续 <span lang="en">Continue</span></a></p>
        """)
  }
}
