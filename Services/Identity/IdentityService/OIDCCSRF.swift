import Foundation
import Hummingbird
import ServiceRuntime

/// CSRF protection of identity's forms (sign-in, second factor, logout, device approval) by a
/// double-submit cookie: each form carries the cookie's value, and another site can neither
/// read the cookie nor set it (HttpOnly, SameSite=Strict).
extension OIDCProvider {
  /// The CSRF token of the request's cookie, or a new one when it has none (or a malformed one).
  func csrfToken(_ request: Request) -> String {
    let existing = request.cookies[Self.csrfCookie]?.value
    return existing.flatMap { Base64URL.decode($0)?.count == 32 ? $0 : nil } ?? Secrets.random()
  }

  /// `response` with the CSRF cookie set to `token` (for the whole site, so every form of
  /// identity's shares one).
  func settingCSRF(_ response: Response, _ token: String) -> Response {
    var response = response
    response.setCookie(
      Cookie(
        name: Self.csrfCookie, value: token, path: "/", secure: tls, httpOnly: true,
        sameSite: .strict))
    return response
  }

  /// Whether the form's `csrf` field is the cookie's value.
  func csrfMatches(_ form: FormFields, _ request: Request) -> Bool {
    guard let csrf = form["csrf"], let cookie = request.cookies[Self.csrfCookie]?.value else {
      return false
    }
    return Self.same(csrf, cookie)
  }
}
