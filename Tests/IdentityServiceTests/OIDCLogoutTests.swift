import Foundation
import GRPCCore
@testable import IdentityService
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

let appLogout = "http://127.0.0.1:9/signed-out"

/// Signs `browser` in to `client` (a confidential one) and redeems the code: the token answer.
func signInAndRedeem(
  _ browser: TestBrowser, _ http: URL, client: (id: String, secret: String),
  extra: [(String, String)] = []
) async throws -> [String: Any] {
  let (verifier, challenge) = pkce()
  let url = authorizeURL(http, client: client.id, challenge: challenge, extra: extra)
  let page = try await browser.get(url)
  var reply = page
  if page.status == 200 { reply = try await signIn(browser, url) }
  let code = try #require(reply.query("code"), "\(reply.status) \(reply.body)")
  let tokens = try await redeem(TestBrowser(), http, code: code, client: client, verifier: verifier)
  #expect(tokens.status == 200, "\(tokens.body)")
  return tokens.json
}

/// The URL of `/logout` with `pairs`.
func logoutURL(_ http: URL, _ pairs: [(String, String)]) -> URL {
  URL(string: http.absoluteString + "/logout?" + FormFields.encode(pairs))!
}

@Suite("OpenID Connect: RP-initiated logout, prompt and max_age")
struct OIDCLogoutTests {
  @Test func logoutFromOneAppEndsSSOAndTheSessionForEveryApp() async throws {
    try await withProvider { identity, admin, http, client, _, server in
      // Its tokens may call identity over gRPC: the logout must end them there too.
      var request = oidcClient("学生云 Student cloud", redirect: [appRedirect], services: ["identity"])
      request.client.postLogoutRedirectUris = [appLogout]
      let app = try await identity.createOIDCClient(request, metadata: bearer(admin))
      let appClient = (app.client.clientID, app.clientSecret)
      let doc = try await TestBrowser().get(
        http.appendingPathComponent(".well-known/openid-configuration")).json
      #expect(doc["end_session_endpoint"] as? String == (server.issuer ?? "") + "/logout")

      let browser = TestBrowser()
      let tokens = try await signInAndRedeem(browser, http, client: appClient)
      let idToken = try #require(tokens["id_token"] as? String)
      let access = try #require(tokens["access_token"] as? String)
      // The second app signs in from the SSO cookie, without a password.
      let second = try await browser.get(authorizeURL(http, client: client.id, challenge: nil))
      #expect(second.status == 302)
      #expect(second.query("code") != nil)

      // A post-logout URI the app did not register: refused on a page, nothing ended.
      for wrong in [appLogout + "/", "http://127.0.0.1:9/evil", appRedirect] {
        let refused = try await browser.get(
          logoutURL(http, [("id_token_hint", idToken), ("post_logout_redirect_uri", wrong)]))
        #expect(refused.status == 400, "\(wrong)")
        #expect(refused.headers["location"] == nil)
        #expect(refused.body.contains("post_logout_redirect_uri"))
      }
      // The other app's registered URI is not this app's.
      let otherApps = try await browser.get(
        logoutURL(
          http,
          [("id_token_hint", idToken), ("client_id", client.id),
           ("post_logout_redirect_uri", appLogout)]))
      #expect(otherApps.status == 400)
      // A forged hint (not signed by identity) is refused too.
      let parts = idToken.split(separator: ".")
      let forged = parts[0] + "." + Base64URL.encode(Data("{\"sub\":\"x\"}".utf8)) + "." + parts[2]
      let forgedReply = try await browser.get(logoutURL(http, [("id_token_hint", String(forged))]))
      #expect(forgedReply.status == 400)
      let stillIn = try await browser.get(authorizeURL(http, client: client.id, challenge: nil))
      #expect(stillIn.status == 302)
      let info = try await TestBrowser().get(
        http.appendingPathComponent("userinfo"), headers: ["Authorization": "Bearer \(access)"])
      #expect(info.status == 200)
      let me = try await identity.whoAmI(.init(), metadata: bearer(access))
      #expect(me.user.username == "alice")

      // The app logs out with its ID token: straight back to its page, with its state.
      let out = try await browser.get(
        logoutURL(
          http,
          [("id_token_hint", idToken), ("post_logout_redirect_uri", appLogout),
           ("state", "bye-1")]))
      #expect(out.status == 302)
      #expect(out.location?.string?.hasPrefix(appLogout + "?") == true)
      #expect(out.query("state") == "bye-1")
      let cleared = try #require(
        browser.setCookies.withLock { $0 }.last { $0.contains(OIDCProvider.ssoCookie + "=") })
      #expect(cleared.contains("Max-Age=0"))
      #expect(browser.cookies.withLock { $0[OIDCProvider.ssoCookie] } == "")

      // Both apps ask for the password again, and the tokens of the session are refused.
      for id in [appClient.0, client.id] {
        let again = try await browser.get(authorizeURL(http, client: id, challenge: nil))
        #expect(again.status == 200, "\(id)")
        #expect(again.body.contains("password"))
      }
      let after = try await TestBrowser().get(
        http.appendingPathComponent("userinfo"), headers: ["Authorization": "Bearer \(access)"])
      #expect(after.status == 401)
      #expect(await statusCode { _ = try await identity.whoAmI(.init(), metadata: bearer(access)) }
        == .unauthenticated)
      // A second logout with the same hint (the session has ended) still lands on the page.
      let repeated = try await TestBrowser().get(logoutURL(http, [("id_token_hint", idToken)]))
      #expect(repeated.status == 200)
      #expect(repeated.body.contains("已退出登录"))
    }
  }

  @Test func logoutWithoutAHintIsConfirmedOnACSRFProtectedPage() async throws {
    try await withProvider { identity, admin, http, client, _, _ in
      let browser = TestBrowser()
      let tokens = try await signInAndRedeem(browser, http, client: client)
      let access = try #require(tokens["access_token"] as? String)
      let page = try await browser.get(logoutURL(http, [("state", "s-9")]))
      #expect(page.status == 200)
      #expect(page.body.contains("退出登录") && page.body.contains("Sign out"))
      #expect(!page.body.contains("<script"))
      let csrf = try #require(hiddenField("csrf", in: page.body))
      // A cross-site POST (no CSRF token, or another one) ends nothing.
      for form in [[("state", "s-9")], [("state", "s-9"), ("csrf", Secrets.random())]] {
        let forged = try await browser.post(http.appendingPathComponent("logout"), form: form)
        #expect(forged.status == 403)
        let stillIn = try await browser.get(authorizeURL(http, client: client.id, challenge: nil))
        #expect(stillIn.status == 302)
      }
      let confirmed = try await browser.post(
        http.appendingPathComponent("logout"), form: [("state", "s-9"), ("csrf", csrf)])
      #expect(confirmed.status == 200)
      #expect(confirmed.body.contains("已退出登录"))
      #expect(confirmed.body.contains("Signed out"))
      let again = try await browser.get(authorizeURL(http, client: client.id, challenge: nil))
      #expect(again.status == 200)
      let info = try await TestBrowser().get(
        http.appendingPathComponent("userinfo"), headers: ["Authorization": "Bearer \(access)"])
      #expect(info.status == 401)
      // gRPC sees the session's end in the audit log as a logout.
      let events = try await identity.listAuditEvents(
        .with { $0.action = "logout" }, metadata: bearer(admin))
      #expect(events.events.contains { $0.detail == "OpenID Connect logout" })
    }
  }

  @Test func promptAndMaxAgeDecideWhenThePasswordIsAskedAgain() async throws {
    try await withProvider { _, _, http, client, _, _ in
      // prompt=none without a sign-in: login_required back at the app, with its state.
      let silent = try await TestBrowser().get(
        authorizeURL(http, client: client.id, challenge: nil, extra: [("prompt", "none")]))
      #expect(silent.status == 302)
      #expect(silent.query("error") == "login_required")
      #expect(silent.query("state") == "st-123")

      let browser = TestBrowser()
      let first = try await signInAndRedeem(browser, http, client: client)
      let firstAuth = try #require(
        (jwtClaims(first["id_token"] as? String ?? "")["auth_time"] as? NSNumber)?.intValue)
      // prompt=consent asks nothing of a first-party app's user: straight back with a code.
      let consent = try await browser.get(
        authorizeURL(http, client: client.id, challenge: nil, extra: [("prompt", "consent")]))
      #expect(consent.status == 302)
      #expect(consent.query("code") != nil)
      let unknown = try await browser.get(
        authorizeURL(http, client: client.id, challenge: nil, extra: [("prompt", "sideways")]))
      #expect(unknown.query("error") == "invalid_request")
      try await Task.sleep(for: .milliseconds(2100))
      // Within max_age the cookie is enough; past it, the password is asked, and prompt=none
      // cannot ask it.
      let recent = try await browser.get(
        authorizeURL(http, client: client.id, challenge: nil, extra: [("max_age", "600")]))
      #expect(recent.status == 302)
      let tooOld = try await browser.get(
        authorizeURL(
          http, client: client.id, challenge: nil, extra: [("max_age", "1"), ("prompt", "none")]))
      #expect(tooOld.query("error") == "login_required")
      let refreshed = try await signInAndRedeem(
        browser, http, client: client, extra: [("max_age", "1")])
      let claims = jwtClaims(refreshed["id_token"] as? String ?? "")
      let newAuth = try #require((claims["auth_time"] as? NSNumber)?.intValue)
      #expect(newAuth >= firstAuth + 2)
      // prompt=login asks even right after a sign-in.
      let forced = try await browser.get(
        authorizeURL(http, client: client.id, challenge: nil, extra: [("prompt", "login")]))
      #expect(forced.status == 200)
      #expect(forced.body.contains("password"))
      let bad = try await browser.get(
        authorizeURL(http, client: client.id, challenge: nil, extra: [("max_age", "-1")]))
      #expect(bad.query("error") == "invalid_request")
    }
  }
}
