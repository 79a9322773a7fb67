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

/// Posts `code` on the second-factor page `page` (its hidden fields as they are, unless
/// `csrf` replaces the token).
func submitCode(
  _ browser: TestBrowser, _ http: URL, page: HTTPReply, code: String, csrf: String? = nil
) async throws -> HTTPReply {
  var form: [(String, String)] = []
  for name in OIDCProvider.requestFields + [OIDCProvider.challengeField, "user_code"] {
    if let value = hiddenField(name, in: page.body) {
      form.append((name, value.replacingOccurrences(of: "&amp;", with: "&")))
    }
  }
  if let token = csrf ?? hiddenField("csrf", in: page.body) { form.append(("csrf", token)) }
  form.append((OIDCProvider.codeField, code))
  return try await browser.post(http.appendingPathComponent("second-factor"), form: form)
}

/// Enrols `username` in TOTP over gRPC: the secret and the step whose code confirmed it.
func enrolTOTP(_ identity: IdentityClient, username: String) async throws -> (
  secret: [UInt8], step: Int64, recovery: [String]
) {
  let token = try await login(identity, username, "Secret-pass-1")
  let enrolment = try await identity.beginTotpEnrolment(.init(), metadata: bearer(token))
  let secret = try #require(ReferenceTOTP.decodeBase32(enrolment.secret))
  let step = ReferenceTOTP.step()
  let confirmed = try await identity.confirmTotpEnrolment(
    .with { $0.code = ReferenceTOTP.code(secret: secret, step: step) }, metadata: bearer(token))
  return (secret, step, confirmed.recoveryCodes)
}

@Suite("OpenID Connect: two-factor sign-in on the web")
struct OIDCSecondFactorTests {
  @Test func anEnrolledUserGivesTheCodeOnASecondPage() async throws {
    try await withProvider { identity, admin, http, client, alice, _ in
      let enrolled = try await enrolTOTP(identity, username: "alice")
      let browser = TestBrowser()
      let (verifier, challenge) = pkce()
      let url = authorizeURL(http, client: client.id, challenge: challenge)
      let second = try await signIn(browser, url)
      #expect(second.status == 200)
      #expect(second.body.contains("两步验证") && second.body.contains("Two-step verification"))
      #expect(second.body.contains("name=\"code\""))
      #expect(!second.body.contains("<script"))
      #expect(hiddenField(OIDCProvider.challengeField, in: second.body) != nil)
      // No sign-in yet: no SSO cookie, and prompt=none still needs a login.
      #expect(browser.cookies.withLock { $0[OIDCProvider.ssoCookie] } == nil)

      // A wrong code, and a form without the page's CSRF token: the page again, no sign-in.
      let wrong = try await submitCode(
        browser, http, page: second,
        code: ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.step + 9))
      #expect(wrong.status == 401)
      #expect(wrong.body.contains("验证码错误") && wrong.body.contains("code is wrong"))
      let forged = try await submitCode(
        browser, http, page: second,
        code: ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.step + 1),
        csrf: Secrets.random())
      #expect(forged.status == 403)
      #expect(browser.cookies.withLock { $0[OIDCProvider.ssoCookie] } == nil)
      // The step that confirmed the enrolment is never accepted again.
      let used = try await submitCode(
        browser, http, page: second,
        code: ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.step))
      #expect(used.status == 401)

      let right = try await submitCode(
        browser, http, page: second,
        code: ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.step + 1))
      #expect(right.status == 303, "\(right.body)")
      #expect(right.query("state") == "st-123")
      let code = try #require(right.query("code"))
      #expect(browser.cookies.withLock { $0[OIDCProvider.ssoCookie] } != nil)
      let tokens = try await redeem(
        TestBrowser(), http, code: code, client: client, verifier: verifier)
      #expect(tokens.status == 200, "\(tokens.body)")
      #expect(jwtClaims(tokens.json["id_token"] as? String ?? "")["sub"] as? String == alice.id)
      // The challenge is spent: sending it again goes back to the password.
      let replay = try await submitCode(
        browser, http, page: second,
        code: ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.step + 2))
      #expect(replay.status == 401)
      #expect(replay.body.contains("name=\"password\""))

      // A recovery code works once, in another browser.
      let other = TestBrowser()
      let page = try await signIn(other, url)
      let recovered = try await submitCode(other, http, page: page, code: enrolled.recovery[0])
      #expect(recovered.status == 303)
      #expect(recovered.query("code") != nil)
      let third = TestBrowser()
      let again = try await submitCode(
        third, http, page: try await signIn(third, url), code: enrolled.recovery[0])
      #expect(again.status == 401)
      let successes = try await identity.listAuditEvents(
        .with { $0.action = "login.success" }, metadata: bearer(admin))
      #expect(successes.events.contains { $0.detail == "second factor: recovery code" })
    }
  }

  @Test func wrongCodesOnThePageLockTheAccountAsGRPCDoes() async throws {
    var settings = IdentitySettings.forTests()
    settings.lockoutThreshold = 3
    try await withProvider(settings: settings) { identity, _, http, client, _, _ in
      let enrolled = try await enrolTOTP(identity, username: "alice")
      let browser = TestBrowser()
      let second = try await signIn(
        browser, authorizeURL(http, client: client.id, challenge: nil))
      #expect(second.status == 200)
      let wrong = ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.step + 9)
      // The right password stays counted (1); a wrong code (2), then the threshold (3) locks.
      let first = try await submitCode(browser, http, page: second, code: wrong)
      #expect(first.status == 401)
      let last = try await submitCode(browser, http, page: second, code: wrong)
      #expect(last.status == 403)
      #expect(last.body.contains("锁定") && last.body.contains("locked"))
      // Locked: the right code is refused on the page, and the password over gRPC.
      let right = try await submitCode(
        browser, http, page: second,
        code: ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.step + 1))
      #expect(right.status == 403)
      #expect(right.headers["location"] == nil)
      #expect(await statusCode { _ = try await login(identity, "alice", "Secret-pass-1") }
        == .unauthenticated)
    }
  }

  @Test func thePolicyMakesAnOfficialEnrolOnTheWebAndKeepRecoveryCodes() async throws {
    var settings = IdentitySettings.forTests()
    settings.twoFactor.policy = try TOTPPolicy("county_admin")
    try await withProvider(settings: settings) { identity, admin, http, client, alice, _ in
      _ = try await grant(
        identity, token: admin, user: alice.id, role: .countyAdmin, org: "K340121")
      let browser = TestBrowser()
      let url = authorizeURL(http, client: client.id, challenge: nil)
      let second = try await signIn(browser, url)
      #expect(second.status == 200)
      let grouped = try #require(
        second.body.components(separatedBy: "<code id=\"totp-secret\">").dropFirst().first?
          .components(separatedBy: "</code>").first)
      let secret = try #require(
        ReferenceTOTP.decodeBase32(grouped.replacingOccurrences(of: " ", with: "")))
      #expect(secret.count == 20)
      #expect(second.body.contains("otpauth://totp/SmartSchool:alice?"))
      let done = try await submitCode(
        browser, http, page: second,
        code: ReferenceTOTP.code(secret: secret, step: ReferenceTOTP.step()))
      #expect(done.status == 200, "\(done.body)")
      #expect(done.body.contains("恢复码") && done.body.contains("recovery codes"))
      #expect(done.body.components(separatedBy: "<li><code>").count == 11)
      // Continue goes on to the app through the new SSO session, without a password.
      let link = try #require(
        done.body.components(separatedBy: "id=\"continue\" href=\"").dropFirst().first?
          .components(separatedBy: "\"").first)
      let onward = try await browser.get(
        URL(string: http.absoluteString + "/" + link.replacingOccurrences(of: "&amp;", with: "&"))!)
      #expect(onward.status == 302)
      #expect(onward.query("code") != nil)
      #expect(onward.query("state") == "st-123")
    }
  }
}
