import Crypto
import Foundation
import GRPCCore
@testable import IdentityService
import ServiceRuntime
import SmartSchoolModel
import Synchronization
import Testing
import TestSupport

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// Keeps redirects as answers: the tests read each Location themselves.
final class NoRedirects: NSObject, URLSessionTaskDelegate, Sendable {
  func urlSession(
    _ session: URLSession, task: URLSessionTask,
    willPerformHTTPRedirection response: HTTPURLResponse, newRequest request: URLRequest,
    completionHandler: @escaping @Sendable (URLRequest?) -> Void
  ) {
    completionHandler(nil)
  }
}

/// An HTTP answer: status, body text, headers (lower-case names) and raw Set-Cookie lines.
struct HTTPReply {
  var status: Int
  var body: String
  var headers: [String: String]
  var location: URLComponents? { headers["location"].flatMap { URLComponents(string: $0) } }

  func query(_ name: String) -> String? {
    location?.queryItems?.first { $0.name == name }?.value
  }

  var json: [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:]
  }
}

/// A browser of sorts: keeps cookies by name, follows no redirect.
final class TestBrowser: Sendable {
  let cookies = Mutex<[String: String]>([:])
  /// Every Set-Cookie header seen, as sent.
  let setCookies = Mutex<[String]>([])
  private let session: URLSession

  init() {
    let configuration = URLSessionConfiguration.ephemeral
    configuration.httpShouldSetCookies = false
    configuration.httpCookieStorage = nil
    session = URLSession(configuration: configuration, delegate: NoRedirects(), delegateQueue: nil)
  }

  func get(_ url: URL, headers: [String: String] = [:]) async throws -> HTTPReply {
    var request = URLRequest(url: url)
    for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
    return try await send(request)
  }

  func post(_ url: URL, form: [(String, String)], headers: [String: String] = [:]) async throws
    -> HTTPReply
  {
    var request = URLRequest(url: url)
    request.httpMethod = "POST"
    request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
    for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
    request.httpBody = Data(FormFields.encode(form).utf8)
    return try await send(request)
  }

  private func send(_ request: URLRequest) async throws -> HTTPReply {
    var request = request
    request.timeoutInterval = 60  // the whole identity bundle on PostgreSQL loads a 2-core machine
    let jar = cookies.withLock { $0 }
    if !jar.isEmpty {
      request.setValue(
        jar.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: "; "),
        forHTTPHeaderField: "Cookie")
    }
    let (data, response) = try await session.data(for: request)
    let http = try #require(response as? HTTPURLResponse)
    var headers: [String: String] = [:]
    for (key, value) in http.allHeaderFields {
      headers[String(describing: key).lowercased()] = String(describing: value)
    }
    if let raw = headers["set-cookie"] {
      setCookies.withLock { $0.append(raw) }
      for cookie in HTTPCookie.cookies(
        withResponseHeaderFields: ["Set-Cookie": raw], for: request.url!)
      {
        cookies.withLock { $0[cookie.name] = cookie.value }
      }
    }
    return HTTPReply(
      status: http.statusCode, body: String(decoding: data, as: UTF8.self), headers: headers)
  }
}

/// The value of the hidden form field `name` on a page.
func hiddenField(_ name: String, in html: String) -> String? {
  guard let start = html.range(of: "name=\"\(name)\" value=\"") else { return nil }
  let rest = html[start.upperBound...]
  return rest.firstIndex(of: "\"").map { String(rest[..<$0]) }
}

/// The claims of a compact JWS (unverified).
func jwtClaims(_ jws: String) -> [String: Any] {
  let parts = jws.split(separator: ".")
  guard parts.count == 3, let data = Base64URL.decode(parts[1]),
    let claims = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
  else { return [:] }
  return claims
}

/// A PKCE pair: a verifier and its S256 challenge.
func pkce() -> (verifier: String, challenge: String) {
  let verifier = Secrets.random(bytes: 48)
  return (verifier, Base64URL.encode(Data(SHA256.hash(data: Data(verifier.utf8)))))
}

let appRedirect = "http://127.0.0.1:9/callback"

/// An identity with its HTTP port, a tree, a user `alice` (password "Secret-pass-1") and a
/// confidential client; `body` gets the pieces.
func withProvider(
  settings: IdentitySettings = .forTests(),
  _ body: (
    _ identity: IdentityClient, _ admin: String, _ http: URL, _ client: (id: String, secret: String),
    _ alice: User, _ server: IdentityHTTPServer
  ) async throws -> Void
) async throws {
  try await withOpenIDIdentity(settings: settings) { identity, http, server in
    let admin = try await login(identity, "admin", testAdminPassword)
    _ = try await buildTree(identity, admin: admin)
    let alice = try await newUser(
      identity, admin: admin, externalID: "t-alice", username: "alice", kind: .teacher,
      org: "S-A1")
    let created = try await identity.createOIDCClient(
      oidcClient("教师云 Teacher cloud", redirect: [appRedirect]), metadata: bearer(admin))
    try await body(
      identity, admin, http, (created.client.clientID, created.clientSecret), alice, server)
  }
}

/// The authorization URL of `client` with PKCE and a nonce.
func authorizeURL(
  _ http: URL, client: String, redirect: String = appRedirect, challenge: String?,
  extra: [(String, String)] = []
) -> URL {
  var pairs = [
    ("response_type", "code"), ("client_id", client), ("redirect_uri", redirect),
    ("scope", "openid profile"), ("state", "st-123"), ("nonce", "n-456"),
  ]
  if let challenge { pairs += [("code_challenge", challenge), ("code_challenge_method", "S256")] }
  return URL(string: http.absoluteString + "/authorize?" + FormFields.encode(pairs + extra))!
}

/// Signs in on the page at `url` as `username`; the answer to the POST.
func signIn(
  _ browser: TestBrowser, _ url: URL, username: String = "alice",
  password: String = "Secret-pass-1"
) async throws -> HTTPReply {
  let page = try await browser.get(url)
  #expect(page.status == 200, "\(page.body)")
  var form: [(String, String)] = []
  for name in OIDCProvider.requestFields + ["csrf"] {
    if let value = hiddenField(name, in: page.body) {
      form.append((name, value.replacingOccurrences(of: "&amp;", with: "&")))
    }
  }
  form += [("username", username), ("password", password)]
  return try await browser.post(
    URL(string: url.absoluteString.components(separatedBy: "?")[0])!, form: form)
}

/// Redeems `code` at the token endpoint with HTTP Basic client authentication.
func redeem(
  _ browser: TestBrowser, _ http: URL, code: String, client: (id: String, secret: String),
  verifier: String?, redirect: String = appRedirect
) async throws -> HTTPReply {
  var form = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect)]
  if let verifier { form.append(("code_verifier", verifier)) }
  let basic = Data(
    "\(FormFields.encode(client.id)):\(FormFields.encode(client.secret))".utf8
  ).base64EncodedString()
  return try await browser.post(
    http.appendingPathComponent("token"), form: form, headers: ["Authorization": "Basic \(basic)"])
}

@Suite("OpenID Connect: the authorization code flow")
struct OIDCFlowTests {
  @Test func discoveryListsWhatTheProviderDoes() async throws {
    try await withProvider { _, _, http, _, _, server in
      let reply = try await TestBrowser().get(
        http.appendingPathComponent(".well-known/openid-configuration"))
      #expect(reply.status == 200)
      let doc = reply.json
      let issuer = try #require(server.issuer)
      #expect(doc["issuer"] as? String == issuer)
      #expect(doc["authorization_endpoint"] as? String == issuer + "/authorize")
      #expect(doc["token_endpoint"] as? String == issuer + "/token")
      #expect(doc["userinfo_endpoint"] as? String == issuer + "/userinfo")
      #expect(doc["jwks_uri"] as? String == issuer + "/.well-known/jwks.json")
      #expect(doc["id_token_signing_alg_values_supported"] as? [String] == ["RS256"])
      #expect(doc["code_challenge_methods_supported"] as? [String] == ["S256"])
      let grants = doc["grant_types_supported"] as? [String] ?? []
      for grant in ["authorization_code", "refresh_token", "client_credentials"] {
        #expect(grants.contains(grant), "\(grant)")
      }
      #expect(doc["revocation_endpoint"] as? String == issuer + "/revoke")
      #expect(doc["introspection_endpoint"] as? String == issuer + "/introspect")
      #expect(doc["end_session_endpoint"] as? String == issuer + "/logout")
      #expect(doc["device_authorization_endpoint"] as? String == issuer + "/device_authorization")
    }
  }

  @Test func aUserSignsInOnThePageAndTheAppGetsVerifiedTokens() async throws {
    try await withProvider { _, _, http, client, alice, server in
      let browser = TestBrowser()
      let (verifier, challenge) = pkce()
      let url = authorizeURL(http, client: client.id, challenge: challenge)
      let page = try await browser.get(url)
      #expect(page.status == 200)
      #expect(page.headers["content-type"]?.hasPrefix("text/html") == true)
      #expect(page.body.contains("教师云 Teacher cloud"))
      #expect(page.body.contains("用户名") && page.body.contains("Username"))
      #expect(!page.body.contains("<script"))
      #expect(page.headers["content-security-policy"]?.contains("default-src 'none'") == true)
      let csrf = try #require(hiddenField("csrf", in: page.body))
      #expect(browser.cookies.withLock { $0[OIDCProvider.csrfCookie] } == csrf)

      let wrong = try await signIn(browser, url, password: "Wrong-pass-1")
      #expect(wrong.status == 401)
      #expect(wrong.body.contains("用户名或密码错误"))
      #expect(wrong.body.contains("Wrong username or password"))

      let signedIn = try await signIn(browser, url)
      #expect(signedIn.status == 303)
      let location = try #require(signedIn.location)
      #expect(location.string?.hasPrefix(appRedirect + "?") == true)
      #expect(signedIn.query("state") == "st-123")
      #expect(signedIn.query("iss") == server.issuer)
      let code = try #require(signedIn.query("code"))
      let ssoLine = try #require(
        browser.setCookies.withLock { $0 }.first { $0.contains(OIDCProvider.ssoCookie + "=") })
      #expect(ssoLine.contains("HttpOnly"))
      #expect(ssoLine.contains("SameSite=Lax"))
      #expect(!ssoLine.contains("Secure"))  // plain HTTP here; Secure under TLS

      let app = TestBrowser()
      let tokens = try await redeem(app, http, code: code, client: client, verifier: verifier)
      #expect(tokens.status == 200, "\(tokens.body)")
      #expect(tokens.headers["cache-control"] == "no-store")
      let body = tokens.json
      #expect(body["token_type"] as? String == "Bearer")
      let idToken = try #require(body["id_token"] as? String)
      let jwks = try jwksKeys(
        try await httpGet(http.appendingPathComponent(".well-known/jwks.json")).body)
      #expect(try verifiesRS256(idToken, with: jwks))
      let claims = jwtClaims(idToken)
      #expect(claims["iss"] as? String == server.issuer)
      #expect(claims["sub"] as? String == alice.id)
      #expect(claims["aud"] as? String == client.id)
      #expect(claims["nonce"] as? String == "n-456")
      #expect(claims["preferred_username"] as? String == "alice")
      let now = Date().timeIntervalSince1970
      let authTime = try #require((claims["auth_time"] as? NSNumber)?.doubleValue)
      #expect(abs(authTime - now) < 60)
      #expect(((claims["exp"] as? NSNumber)?.doubleValue ?? 0) > now)

      let access = try #require(body["access_token"] as? String)
      let info = try await app.get(
        http.appendingPathComponent("userinfo"), headers: ["Authorization": "Bearer \(access)"])
      #expect(info.status == 200)
      #expect(info.json["sub"] as? String == alice.id)
      #expect(info.json["preferred_username"] as? String == "alice")
      let anonymous = try await app.get(http.appendingPathComponent("userinfo"))
      #expect(anonymous.status == 401)
      #expect(anonymous.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
      // The ID token is not an access token.
      let wrongType = try await app.get(
        http.appendingPathComponent("userinfo"), headers: ["Authorization": "Bearer \(idToken)"])
      #expect(wrongType.status == 401)

      // A code is good once.
      let replay = try await redeem(app, http, code: code, client: client, verifier: verifier)
      #expect(replay.status == 400)
      #expect(replay.json["error"] as? String == "invalid_grant")
    }
  }

  @Test func theSSOCookieSignsInAgainWithoutAPasswordUntilTheSessionEnds() async throws {
    try await withProvider { identity, admin, http, client, alice, _ in
      let browser = TestBrowser()
      let first = pkce()
      let signedIn = try await signIn(
        browser, authorizeURL(http, client: client.id, challenge: first.challenge))
      #expect(signedIn.status == 303)
      // A second app (another client) while the cookie lives: straight back with a code.
      let other = try await identity.createOIDCClient(
        oidcClient("家长云 Parent cloud", redirect: ["https://parent.example.cn/cb"], isPublic: true),
        metadata: bearer(admin))
      let second = pkce()
      let again = try await browser.get(
        authorizeURL(
          http, client: other.client.clientID, redirect: "https://parent.example.cn/cb",
          challenge: second.challenge))
      #expect(again.status == 302)
      let code = try #require(again.query("code"))
      // A public client redeems with its verifier and no secret.
      let tokens = try await TestBrowser().post(
        http.appendingPathComponent("token"),
        form: [
          ("grant_type", "authorization_code"), ("code", code),
          ("redirect_uri", "https://parent.example.cn/cb"), ("client_id", other.client.clientID),
          ("code_verifier", second.verifier),
        ])
      #expect(tokens.status == 200, "\(tokens.body)")
      #expect(jwtClaims(tokens.json["id_token"] as? String ?? "")["sub"] as? String == alice.id)
      // prompt=login asks again; max_age=0 too; prompt=none without a cookie says so.
      for extra in [[("prompt", "login")], [("max_age", "0")]] {
        let asked = try await browser.get(
          authorizeURL(http, client: client.id, challenge: first.challenge, extra: extra))
        #expect(asked.status == 200, "\(extra)")
        #expect(asked.body.contains("password"))
      }
      let silent = try await TestBrowser().get(
        authorizeURL(http, client: client.id, challenge: nil, extra: [("prompt", "none")]))
      #expect(silent.status == 302)
      #expect(silent.query("error") == "login_required")
      #expect(silent.query("state") == "st-123")
      let silentWithCookie = try await browser.get(
        authorizeURL(http, client: client.id, challenge: nil, extra: [("prompt", "none")]))
      #expect(silentWithCookie.query("code") != nil)

      // Ending the user's sessions (here a deactivation) ends the SSO session and the tokens.
      let access = try #require(tokens.json["access_token"] as? String)
      _ = try await identity.deactivateUser(.with { $0.id = alice.id }, metadata: bearer(admin))
      let afterwards = try await browser.get(
        authorizeURL(http, client: client.id, challenge: first.challenge))
      #expect(afterwards.status == 200)
      #expect(afterwards.body.contains("password"))
      let info = try await TestBrowser().get(
        http.appendingPathComponent("userinfo"), headers: ["Authorization": "Bearer \(access)"])
      #expect(info.status == 401)
    }
  }

  // Disabled: this test hangs (no request timed out; not yet found where). Until fixed, the
  // refused cases it covers are checked only in part by the other tests (replayed code).
  @Test func behindAProxyThatTerminatesTLSTheCookiesAreSecure() async throws {
    // The port speaks plain HTTP to the proxy; browsers reach the https issuer URL.
    var settings = IdentitySettings.forTests()
    settings.http.issuerURL = "https://sso.example.edu.cn"
    try await withProvider(settings: settings) { _, _, http, client, _, server in
      #expect(server.issuer == "https://sso.example.edu.cn")
      let browser = TestBrowser()
      let (_, challenge) = pkce()
      let signedIn = try await signIn(
        browser, authorizeURL(http, client: client.id, challenge: challenge))
      #expect(signedIn.status == 303, "\(signedIn.body)")
      let lines = browser.setCookies.withLock { $0 }
      for name in [OIDCProvider.csrfCookie, OIDCProvider.ssoCookie] {
        let line = try #require(lines.first { $0.contains(name + "=") }, "\(lines)")
        #expect(line.contains("Secure"), "\(line)")
        #expect(line.contains("HttpOnly"))
      }
    }
  }

  @Test func badRequestsAreRefusedAndABadRedirectURIIsNeverFollowed() async throws {
    var settings = IdentitySettings.forTests()
    // Short enough to wait out, long enough that a code got under load (the PostgreSQL pass,
    // every suite at once: a sign-in and its redemption took over a second) is still valid.
    settings.http.codeTTL = 5
    try await withProvider(settings: settings) { identity, admin, http, client, _, _ in
      let browser = TestBrowser()
      // Unknown client, wrong redirect URI: a page, no redirect.
      for url in [
        authorizeURL(http, client: "oc-nope", challenge: nil),
        authorizeURL(http, client: client.id, redirect: "http://127.0.0.1:9/evil", challenge: nil),
        authorizeURL(http, client: client.id, redirect: appRedirect + "/", challenge: nil),
      ] {
        let reply = try await browser.get(url)
        #expect(reply.status == 400)
        #expect(reply.headers["location"] == nil)
        #expect(reply.body.contains("Cannot sign in"))
      }
      // Errors the client may hear go back to it.
      let badScope = try await browser.get(
        authorizeURL(http, client: client.id, challenge: nil, extra: [("scope", "openid admin")])
          .replacingQuery("scope=openid%20profile&", with: ""))
      #expect(badScope.query("error") == "invalid_scope")
      let plain = try await browser.get(
        authorizeURL(
          http, client: client.id, challenge: nil,
          extra: [("code_challenge", pkce().challenge), ("code_challenge_method", "plain")]))
      #expect(plain.query("error") == "invalid_request")
      let mobile = try await identity.createOIDCClient(
        oidcClient("App", redirect: [appRedirect], isPublic: true), metadata: bearer(admin))
      let noPKCE = try await browser.get(
        authorizeURL(http, client: mobile.client.clientID, challenge: nil))
      #expect(noPKCE.query("error") == "invalid_request")
      #expect(noPKCE.query("error_description")?.contains("PKCE") == true)

      // The form without its CSRF token: refused, nobody signed in.
      let page = try await browser.get(authorizeURL(http, client: client.id, challenge: nil))
      #expect(page.status == 200)
      var form: [(String, String)] = []
      for name in OIDCProvider.requestFields {
        if let value = hiddenField(name, in: page.body) { form.append((name, value)) }
      }
      form += [("username", "alice"), ("password", "Secret-pass-1")]
      let forged = try await browser.post(http.appendingPathComponent("authorize"), form: form)
      #expect(forged.status == 403)
      #expect(forged.headers["location"] == nil)
      let otherCSRF = try await browser.post(
        http.appendingPathComponent("authorize"), form: form + [("csrf", Secrets.random())])
      #expect(otherCSRF.status == 403)

      // Wrong verifier, wrong redirect URI at the token endpoint, wrong secret, expired code.
      let (verifier, challenge) = pkce()
      func freshCode() async throws -> String {
        let browser = TestBrowser()
        let reply = try await signIn(
          browser, authorizeURL(http, client: client.id, challenge: challenge))
        return try #require(reply.query("code"))
      }
      let badVerifier = try await redeem(
        browser, http, code: try await freshCode(), client: client, verifier: pkce().verifier)
      #expect(badVerifier.json["error"] as? String == "invalid_grant")
      let noVerifier = try await redeem(
        browser, http, code: try await freshCode(), client: client, verifier: nil)
      #expect(noVerifier.json["error"] as? String == "invalid_grant")
      let badRedirect = try await redeem(
        browser, http, code: try await freshCode(), client: client, verifier: verifier,
        redirect: "http://127.0.0.1:9/other")
      #expect(badRedirect.json["error"] as? String == "invalid_grant")
      // Sent in the form, not with HTTP Basic: FoundationNetworking's URLSession never completes
      // a request answered 401 with a Basic challenge when it has no credential to offer
      // (swift-corelibs-foundation #5456), which hung this test.
      let badSecret = try await browser.post(
        http.appendingPathComponent("token"),
        form: [
          ("grant_type", "authorization_code"), ("code", try await freshCode()),
          ("redirect_uri", appRedirect), ("client_id", client.id),
          ("client_secret", "ocs_wrong"), ("code_verifier", verifier),
        ])
      #expect(badSecret.status == 401)
      #expect(badSecret.json["error"] as? String == "invalid_client")
      let expiring = try await freshCode()
      try await Task.sleep(for: .milliseconds(5500))
      let expired = try await redeem(
        browser, http, code: expiring, client: client, verifier: verifier)
      #expect(expired.json["error"] as? String == "invalid_grant")
      // client_secret_post works as Basic does.
      let posted = try await browser.post(
        http.appendingPathComponent("token"),
        form: [
          ("grant_type", "authorization_code"), ("code", try await freshCode()),
          ("redirect_uri", appRedirect), ("client_id", client.id),
          ("client_secret", client.secret), ("code_verifier", verifier),
        ])
      #expect(posted.status == 200, "\(posted.body)")
      // A disabled client signs nobody in.
      _ = try await identity.disableOIDCClient(.with { $0.clientID = client.id }, metadata: bearer(admin))
      let disabled = try await browser.get(authorizeURL(http, client: client.id, challenge: nil))
      #expect(disabled.status == 400)
    }
  }

  @Test func lockedAndDisabledAccountsAreToldSoOnThePage() async throws {
    var settings = IdentitySettings.forTests()
    settings.lockoutThreshold = 2
    try await withProvider(settings: settings) { identity, admin, http, client, _, _ in
      let browser = TestBrowser()
      let url = authorizeURL(http, client: client.id, challenge: nil)
      let wrong = try await signIn(browser, url, password: "Wrong-pass-1")
      #expect(wrong.status == 401)
      // The guess that reaches the threshold locks the account, and the page says so.
      let last = try await signIn(browser, url, password: "Wrong-pass-1")
      #expect(last.status == 403)
      #expect(last.body.contains("锁定"))
      // The same lockout as gRPC Login: the right password is refused now, on both.
      let locked = try await signIn(browser, url)
      #expect(locked.status == 403)
      #expect(locked.body.contains("锁定"))
      #expect(locked.body.contains("locked"))
      #expect(await statusCode { _ = try await login(identity, "alice", "Secret-pass-1") }
        == .unauthenticated)

      let bob = try await newUser(
        identity, admin: admin, externalID: "t-bob", username: "bob", kind: .teacher, org: "S-A1")
      _ = try await identity.deactivateUser(.with { $0.id = bob.id }, metadata: bearer(admin))
      let disabled = try await signIn(browser, url, username: "bob")
      #expect(disabled.status == 403)
      #expect(disabled.body.contains("已停用"))
      #expect(disabled.body.contains("disabled"))
    }
  }
}

extension URL {
  /// This URL with `text` removed from its query.
  func replacingQuery(_ text: String, with replacement: String) -> URL {
    URL(string: absoluteString.replacingOccurrences(of: text, with: replacement))!
  }
}
