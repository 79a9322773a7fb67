import Foundation
import HTTPTypes
import Hummingbird
import ServiceRuntime

extension IdentityAPI {
  /// Ends one identity session for good, as gRPC Logout does: revoked in the store (on the
  /// change feed, so every service refuses its tokens), at once on this replica's verifier,
  /// and audited; the OpenID Connect grants made in it (all but offline ones) end with it.
  func endSession(id: String, userID: String, detail: String = "") async throws {
    try await store.revokeSession(id: id, reason: "logout")
    verifier.revokeSessions([id: Date()])
    await audit("logout", actor: userID, target: id, detail: detail)
    try await endGrants(madeIn: id)
  }
}

/// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) at `/logout`: ends the
/// browser's SSO session and the identity session behind it, so every app that signed in
/// through it must sign in again and the tokens issued in it stop working everywhere.
///
/// An app sends `id_token_hint` (an ID token identity issued to it, expired ones included):
/// then the logout happens at once. Without one, anyone could end the user's sign-in by
/// embedding a link, so the user confirms on a page (a CSRF-protected form). A
/// `post_logout_redirect_uri` must match one registered for the app byte for byte (the app is
/// the hint's audience or `client_id`); anything else is refused on a page and ends nothing.
extension OIDCProvider {
  func registerLogout(_ router: Router<OIDCRequestContext>) {
    router.get("/logout") { request, _ in
      try await logout(FormFields(Substring(request.uri.query ?? "")), request, posted: false)
    }
    router.post("/logout") { request, _ in
      guard let form = try await formBody(request) else {
        return page(.badRequest, OIDCPages.error("请求格式无效。", "The request is malformed."))
      }
      return try await logout(form, request, posted: true)
    }
  }

  /// The fields a confirmation form carries through.
  static let logoutFields = ["client_id", "post_logout_redirect_uri", "state", "ui_locales"]

  private func logoutRefused(_ zh: String, _ en: String) -> Response {
    page(.badRequest, OIDCPages.logoutError(zh, en))
  }

  private func logout(_ form: FormFields, _ request: Request, posted: Bool) async throws
    -> Response
  {
    if let repeated = form.malformed.sorted().first {
      return logoutRefused(
        "请求参数 \(repeated) 重复或编码有误。", "The parameter '\(repeated)' is repeated or badly encoded.")
    }
    // The hint: an ID token of ours, whatever its age.
    var hint: (userID: String, sessionID: String?, clientID: String)?
    if let token = form["id_token_hint"] {
      guard let claims = try await keys.verify(token, type: "JWT"),
        claims["iss"] as? String == issuer, let sub = claims["sub"] as? String,
        let aud = (claims["aud"] as? String) ?? (claims["aud"] as? [String])?.first
      else {
        return logoutRefused(
          "退出请求中的 id_token_hint 不是本站签发的 ID 令牌。",
          "The id_token_hint is not an ID token issued here.")
      }
      hint = (sub, claims["sid"] as? String, (claims["azp"] as? String) ?? aud)
    }
    var clientID = form["client_id"]
    if let hint {
      guard clientID == nil || clientID == hint.clientID else {
        return logoutRefused(
          "client_id 与 id_token_hint 的应用不一致。",
          "The client_id is not the app the id_token_hint was issued to.")
      }
      clientID = hint.clientID
    }
    let redirectURI = form["post_logout_redirect_uri"]
    if let redirectURI {
      guard let clientID, clientID.count <= 64, let stored = try await clients.client(id: clientID),
        !stored.client.disabled, stored.client.postLogoutRedirectUris.contains(redirectURI)
      else {
        return logoutRefused(
          "退出后的跳转地址（post_logout_redirect_uri）未在该应用登记。",
          "The post_logout_redirect_uri is not registered for this app.")
      }
    }
    let sso = try await ssoSession(request)
    // Without a hint, the user says so on the page (a form of this site, CSRF-checked).
    if hint == nil, sso != nil, !(posted && csrfMatches(form, request)) {
      let csrf = csrfToken(request)
      let hidden = Self.logoutFields.compactMap { name in form[name].map { (name, $0) } }
      return settingCSRF(
        page(posted ? .forbidden : .ok, OIDCPages.logoutConfirm(hidden: hidden, csrf: csrf)), csrf)
    }
    var ending: [(session: String, user: String)] = []
    if let hint, let sid = hint.sessionID { ending.append((sid, hint.userID)) }
    // The browser's own sign-in ends too when it is the hint's user's (or there is no hint);
    // another user's sign-in in this browser is not the app's to end.
    let endsCookie = sso.map { sso in hint.map { $0.userID == sso.userID } ?? true } ?? true
    if let sso, endsCookie, !ending.contains(where: { $0.session == sso.sessionID }) {
      ending.append((sso.sessionID, sso.userID))
    }
    for (session, user) in ending {
      guard try await api.store.sessionActive(id: session) else { continue }
      try await api.endSession(id: session, userID: user, detail: "OpenID Connect logout")
    }
    var response: Response
    if let redirectURI {
      response = redirect(
        redirectURI, form["state"].map { [("state", $0)] } ?? [],
        status: posted ? .seeOther : .found)
    } else {
      response = page(.ok, OIDCPages.signedOut())
    }
    if endsCookie, request.cookies[Self.ssoCookie] != nil {
      response.setCookie(
        Cookie(
          name: Self.ssoCookie, value: "", maxAge: 0, path: "/", secure: tls, httpOnly: true,
          sameSite: .lax))
    }
    return response
  }
}

extension OIDCPages {
  /// Asks the user to confirm a logout that no app's ID token vouches for.
  static func logoutConfirm(hidden: [(String, String)], csrf: String) -> String {
    let fields = (hidden + [("csrf", csrf)]).map {
      "<input type=\"hidden\" name=\"\(escapeHTML($0.0))\" value=\"\(escapeHTML($0.1))\">"
    }.joined(separator: "\n")
    return page(
      title: "退出登录 Sign out",
      body: """
        <h1>退出登录<br><span lang="en">Sign out</span></h1>
        <p>退出后，通过统一身份认证登录的所有应用都需要重新登录。<br>
        <span lang="en">Every app you signed in to here will ask you to sign in again.</span></p>
        <form method="post" action="logout">
        \(fields)
        <button type="submit" name="confirm" value="yes">退出登录
        <span lang="en">Sign out</span></button>
        </form>
        """)
  }

  /// The end of a logout that has nowhere to return to.
  static func signedOut() -> String {
    page(
      title: "已退出登录 Signed out",
      body: """
        <h1>已退出登录<br><span lang="en">Signed out</span></h1>
        <p>您已退出统一身份认证，可以关闭此页面。<br>
        <span lang="en">You have signed out of SmartSchool sign-in; you may close this page.
        </span></p>
        """)
  }

  /// A refused logout request.
  static func logoutError(_ zh: String, _ en: String) -> String {
    page(
      title: "无法退出 Cannot sign out",
      body: """
        <h1>无法退出<br><span lang="en">Cannot sign out</span></h1>
        \(alert(zh, en))
        """)
  }
}
