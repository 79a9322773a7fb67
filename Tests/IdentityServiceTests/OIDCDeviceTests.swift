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

/// Starts a device authorization for `client` (a public client when `secret` is nil).
func startDevice(
  _ http: URL, client: String, secret: String? = nil, scope: String = "openid profile"
) async throws -> HTTPReply {
  var form = [("client_id", client), ("scope", scope)]
  if let secret { form.append(("client_secret", secret)) }
  return try await TestBrowser().post(
    http.appendingPathComponent("device_authorization"), form: form)
}

/// One poll of the token endpoint for `deviceCode`.
func pollDevice(_ http: URL, client: String, deviceCode: String) async throws -> HTTPReply {
  try await TestBrowser().post(
    http.appendingPathComponent("token"),
    form: [
      ("grant_type", OIDCProvider.deviceGrantType), ("device_code", deviceCode),
      ("client_id", client),
    ])
}

/// Posts the form of the device page `page` (its hidden fields) with `extra`.
func postDevicePage(
  _ browser: TestBrowser, _ http: URL, page: HTTPReply, _ extra: [(String, String)],
  csrf: String? = nil
) async throws -> HTTPReply {
  var form: [(String, String)] = []
  if let code = hiddenField("user_code", in: page.body) { form.append(("user_code", code)) }
  if let token = csrf ?? hiddenField("csrf", in: page.body) { form.append(("csrf", token)) }
  return try await browser.post(http.appendingPathComponent("device"), form: form + extra)
}

/// An identity with a public terminal client, for `body`.
func withTerminal(
  deviceTTL: TimeInterval = 600, interval: Int = 1,
  configure: (inout IdentitySettings) -> Void = { _ in },
  _ body: (
    _ identity: IdentityClient, _ admin: String, _ http: URL, _ terminal: String,
    _ web: (id: String, secret: String), _ alice: User, _ issuer: String
  ) async throws -> Void
) async throws {
  var settings = IdentitySettings.forTests()
  settings.http.deviceInterval = interval
  settings.http.deviceCodeTTL = deviceTTL
  configure(&settings)
  try await withProvider(settings: settings) { identity, admin, http, web, alice, server in
    let terminal = try await identity.createOIDCClient(
      oidcClient("智慧教室终端 Classroom terminal", redirect: [appRedirect], isPublic: true),
      metadata: bearer(admin))
    try await body(
      identity, admin, http, terminal.client.clientID, web, alice, server.issuer ?? "")
  }
}

@Suite("OpenID Connect: the device authorization grant (classroom terminals)")
struct OIDCDeviceTests {
  @Test func pollingTooFastAddsFiveSecondsToTheIntervalEachTime() {
    let start = Date(timeIntervalSince1970: 1_000_000)
    var record = DeviceAuthorization(
      deviceHash: "d", userCodeHash: "u", clientID: "oc-t", scope: "openid", interval: 5,
      expiresAt: start.addingTimeInterval(600), lastPoll: nil, status: .pending, userID: nil,
      sessionID: nil, authTime: nil)
    func poll(_ at: TimeInterval, client: String = "oc-t") -> DevicePoll {
      let (outcome, changed) = DevicePoll.of(record, clientID: client, now: start + at)
      if let changed { record = changed }
      return outcome
    }
    #expect(poll(0) == .pending)
    #expect(poll(5) == .pending)  // exactly the interval: not too fast
    #expect(poll(6) == .slowDown)
    #expect(record.interval == 10)
    #expect(poll(15) == .slowDown)  // 9 s < 10 s
    #expect(record.interval == 15)
    #expect(poll(30) == .pending)
    #expect(poll(31, client: "oc-other") == .unknown)
    #expect(record.lastPoll == start + 30)
    record.status = .approved
    record.userID = "u-1"
    guard case .approved(let approved) = poll(31) else {
      Issue.record("an approved record is handed out")
      return
    }
    #expect(approved.status == .used)
    #expect(poll(32) == .used)
    #expect(poll(700) == .expired)
    record.status = .denied
    #expect(poll(33) == .denied)
  }

  @Test func aTerminalPollsWhileATeacherApprovesOnAPhoneAndGetsTokensOnce() async throws {
    // An interval no poll of the test can wait out, even on a loaded machine: the second poll
    // is surely too fast, and so is every poll before the approval.
    try await withTerminal(interval: 120) { identity, admin, http, terminal, _, alice, issuer in
      let doc = try await TestBrowser().get(
        http.appendingPathComponent(".well-known/openid-configuration")).json
      #expect(doc["device_authorization_endpoint"] as? String == issuer + "/device_authorization")
      #expect((doc["grant_types_supported"] as? [String])?.contains(OIDCProvider.deviceGrantType)
        == true)

      let started = try await startDevice(http, client: terminal)
      #expect(started.status == 200, "\(started.body)")
      #expect(started.headers["cache-control"] == "no-store")
      let answer = started.json
      let deviceCode = try #require(answer["device_code"] as? String)
      let userCode = try #require(answer["user_code"] as? String)
      #expect(
        userCode.range(
          of: "^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$",
          options: .regularExpression) != nil)
      #expect(answer["verification_uri"] as? String == issuer + "/device")
      let complete = try #require(answer["verification_uri_complete"] as? String)
      #expect(complete == issuer + "/device?user_code=" + userCode)
      #expect((answer["expires_in"] as? NSNumber)?.intValue == 600)
      #expect((answer["interval"] as? NSNumber)?.intValue == 120)

      // Polling: pending, then too fast.
      let pending = try await pollDevice(http, client: terminal, deviceCode: deviceCode)
      #expect(pending.status == 400)
      #expect(pending.json["error"] as? String == "authorization_pending")
      let fast = try await pollDevice(http, client: terminal, deviceCode: deviceCode)
      #expect(fast.json["error"] as? String == "slow_down")

      // The phone opens the QR code's URL: the sign-in page first, then the approval page.
      let phone = TestBrowser()
      let login = try await phone.get(URL(string: complete)!)
      #expect(login.status == 200)
      #expect(login.body.contains("智慧教室终端 Classroom terminal"))
      #expect(login.body.contains("name=\"password\""))
      let signedIn = try await postDevicePage(
        phone, http, page: login, [("username", "alice"), ("password", "Secret-pass-1")])
      #expect(signedIn.status == 303, "\(signedIn.body)")
      #expect(signedIn.headers["location"] == "device?user_code=" + userCode)
      let approval = try await phone.get(
        http.appendingPathComponent("device").appending(queryItems: [
          URLQueryItem(name: "user_code", value: userCode.lowercased().replacingOccurrences(
            of: "-", with: ""))
        ]))
      #expect(approval.status == 200)
      #expect(approval.body.contains("设备 <strong>智慧教室终端 Classroom terminal</strong> 请求登录"))
      #expect(approval.body.contains(userCode))
      #expect(approval.body.contains("name=\"decision\" value=\"approve\""))
      #expect(approval.body.contains("name=\"decision\" value=\"deny\""))
      #expect(!approval.body.contains("<script"))
      // A forged approval (no CSRF token of the page) decides nothing.
      let forged = try await postDevicePage(
        phone, http, page: approval, [("decision", "approve")], csrf: Secrets.random())
      #expect(forged.status == 403)
      let still = try await pollDevice(http, client: terminal, deviceCode: deviceCode)
      #expect(still.status == 400)
      #expect(still.json["error"] as? String == "slow_down")

      let approved = try await postDevicePage(
        phone, http, page: approval, [("decision", "approve")])
      #expect(approved.status == 200)
      #expect(approved.body.contains("已允许") && approved.body.contains("Approved"))
      // Another client cannot poll for it; the terminal gets its tokens once.
      let web = try await pollDevice(http, client: "oc-nope", deviceCode: deviceCode)
      #expect(web.status == 401)
      let tokens = try await pollDevice(http, client: terminal, deviceCode: deviceCode)
      #expect(tokens.status == 200, "\(tokens.body)")
      let claims = jwtClaims(tokens.json["id_token"] as? String ?? "")
      #expect(claims["sub"] as? String == alice.id)
      #expect(claims["aud"] as? String == terminal)
      #expect(claims["preferred_username"] as? String == "alice")
      let access = try #require(tokens.json["access_token"] as? String)
      let info = try await TestBrowser().get(
        http.appendingPathComponent("userinfo"), headers: ["Authorization": "Bearer \(access)"])
      #expect(info.status == 200)
      #expect(info.json["sub"] as? String == alice.id)
      let again = try await pollDevice(http, client: terminal, deviceCode: deviceCode)
      #expect(again.status == 400)
      #expect(again.json["error"] as? String == "invalid_grant")
      // The used code's page says it is no good.
      let reused = try await phone.get(URL(string: complete)!)
      #expect(reused.status == 404)
      let audit = try await identity.listAuditEvents(
        .with { $0.action = "oidc.device_approve" }, metadata: bearer(admin))
      #expect(audit.events.contains { $0.actorID == alice.id && $0.target == terminal })
    }
  }

  @Test func deniedUnknownAndRefusedRequestsGetTheRFCsErrors() async throws {
    try await withTerminal { identity, admin, http, terminal, web, _, _ in
      // Bad starts: an unknown client, a wrong secret, a scope the client may not ask for.
      let unknown = try await startDevice(http, client: "oc-nope")
      #expect(unknown.status == 401)
      #expect(unknown.json["error"] as? String == "invalid_client")
      let wrongSecret = try await startDevice(http, client: web.id, secret: "ocs_wrong")
      #expect(wrongSecret.json["error"] as? String == "invalid_client")
      let badScope = try await startDevice(http, client: terminal, scope: "openid catalogue")
      #expect(badScope.json["error"] as? String == "invalid_scope")
      let noOpenID = try await startDevice(http, client: terminal, scope: "profile")
      #expect(noOpenID.json["error"] as? String == "invalid_scope")
      // A confidential client authenticates; its device code is not the terminal's to poll.
      let confidential = try await startDevice(http, client: web.id, secret: web.secret)
      #expect(confidential.status == 200, "\(confidential.body)")
      let otherCode = try #require(confidential.json["device_code"] as? String)
      let notYours = try await pollDevice(http, client: terminal, deviceCode: otherCode)
      #expect(notYours.json["error"] as? String == "invalid_grant")
      let made = try await pollDevice(http, client: terminal, deviceCode: Secrets.random())
      #expect(made.json["error"] as? String == "invalid_grant")
      // A code that is no code, on the page.
      for typed in ["AAAA-AAAA", "BCDF", "<script>"] {
        let page = try await TestBrowser().get(
          http.appendingPathComponent("device").appending(queryItems: [
            URLQueryItem(name: "user_code", value: typed)
          ]))
        #expect(page.status == 404, "\(typed)")
        #expect(!page.body.contains("<script>"))
      }
      let entry = try await TestBrowser().get(http.appendingPathComponent("device"))
      #expect(entry.status == 200)
      #expect(entry.body.contains("name=\"user_code\""))

      // The teacher, already signed in through an app, denies.
      let phone = TestBrowser()
      _ = try await signInAndRedeem(phone, http, client: web)
      let started = try await startDevice(http, client: terminal)
      let deviceCode = try #require(started.json["device_code"] as? String)
      let complete = try #require(started.json["verification_uri_complete"] as? String)
      let approval = try await phone.get(URL(string: complete)!)
      #expect(approval.status == 200)
      #expect(approval.body.contains("请求登录"))
      let noChoice = try await postDevicePage(phone, http, page: approval, [("decision", "maybe")])
      #expect(noChoice.status == 400)
      let denied = try await postDevicePage(phone, http, page: approval, [("decision", "deny")])
      #expect(denied.status == 200)
      #expect(denied.body.contains("已拒绝"))
      let refused = try await pollDevice(http, client: terminal, deviceCode: deviceCode)
      #expect(refused.json["error"] as? String == "access_denied")
      // Decided once: approving afterwards changes nothing.
      let late = try await postDevicePage(phone, http, page: approval, [("decision", "approve")])
      #expect(late.status == 404)
      let still = try await pollDevice(http, client: terminal, deviceCode: deviceCode)
      #expect(still.json["error"] as? String == "access_denied")
      _ = identity
      _ = admin
    }
  }

  @Test func aTeacherWithTOTPGivesTheCodeBeforeApproving() async throws {
    try await withTerminal { identity, _, http, terminal, _, alice, _ in
      let enrolled = try await enrolTOTP(identity, username: "alice")
      let started = try await startDevice(http, client: terminal)
      let deviceCode = try #require(started.json["device_code"] as? String)
      let userCode = try #require(started.json["user_code"] as? String)
      let phone = TestBrowser()
      let login = try await phone.get(
        URL(string: try #require(started.json["verification_uri_complete"] as? String))!)
      let second = try await postDevicePage(
        phone, http, page: login, [("username", "alice"), ("password", "Secret-pass-1")])
      #expect(second.status == 200)
      #expect(second.body.contains("两步验证"))
      #expect(hiddenField("user_code", in: second.body) == userCode)
      let done = try await submitCode(
        phone, http, page: second,
        code: ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.step + 1))
      #expect(done.status == 303, "\(done.body)")
      #expect(done.headers["location"] == "device?user_code=" + userCode)
      let approval = try await phone.get(
        http.appendingPathComponent("device").appending(queryItems: [
          URLQueryItem(name: "user_code", value: userCode)
        ]))
      #expect(approval.body.contains("请求登录"))
      let approved = try await postDevicePage(
        phone, http, page: approval, [("decision", "approve")])
      #expect(approved.status == 200)
      let tokens = try await pollDevice(http, client: terminal, deviceCode: deviceCode)
      #expect(tokens.status == 200, "\(tokens.body)")
      #expect(jwtClaims(tokens.json["id_token"] as? String ?? "")["sub"] as? String == alice.id)
    }
  }

  @Test func anExpiredDeviceCodeIsRefusedOnThePageAndAtTheTokenEndpoint() async throws {
    try await withTerminal(deviceTTL: 3) { _, _, http, terminal, web, _, _ in
      let phone = TestBrowser()
      _ = try await signInAndRedeem(phone, http, client: web)
      let start = Date()
      let started = try await startDevice(http, client: terminal)
      // The code expires at most 3 s after this (the server made it before answering).
      let answered = Date()
      #expect((started.json["expires_in"] as? NSNumber)?.intValue == 3)
      let deviceCode = try #require(started.json["device_code"] as? String)
      let complete = try #require(started.json["verification_uri_complete"] as? String)
      let approval = try await phone.get(URL(string: complete)!)
      // (A loaded machine may take the whole lifetime to get here.)
      if Date().timeIntervalSince(start) < 2.5 { #expect(approval.status == 200) }
      let left = answered.addingTimeInterval(3.5).timeIntervalSinceNow
      if left > 0 { try await Task.sleep(for: .milliseconds(Int(left * 1000))) }
      let late = try await postDevicePage(phone, http, page: approval, [("decision", "approve")])
      #expect(late.status == 404)
      let expired = try await pollDevice(http, client: terminal, deviceCode: deviceCode)
      #expect(expired.status == 400)
      #expect(expired.json["error"] as? String == "expired_token")
    }
  }

  @Test func wrongUserCodesAndDeviceStartsAreLimitedPerAddress() async throws {
    try await withTerminal(configure: {
      $0.deviceCodeGuessesPerAddress = 5
      $0.loginAttemptsPerAddress = 6
      $0.trustedProxies = [IPRange("127.0.0.1")!]
    }) { _, _, http, terminal, web, _, _ in
      let guesser = ["X-Forwarded-For": "203.0.113.7"]
      let school = ["X-Forwarded-For": "198.51.100.20"]
      let started = try await startDevice(http, client: terminal)
      let complete = try #require(started.json["verification_uri_complete"] as? String)
      // 40 wrong codes at once from one address, eight times its allowance: each is taken
      // before the lookup, so at most the allowance (and a refill every 12 s, on a slow
      // machine) are looked up.
      let guessing = ContinuousClock.now
      func refills(every seconds: Double, since start: ContinuousClock.Instant) -> Int {
        let elapsed = start.duration(to: .now)
        return Int((Double(elapsed.components.seconds)
          + Double(elapsed.components.attoseconds) / 1e18) / seconds)
      }
      let seen = try await withThrowingTaskGroup(of: Int.self) { group in
        for i in 0..<40 {
          group.addTask {
            let wrong = String(OIDCProvider.userCodeAlphabet.shuffled().prefix(8))
            return try await TestBrowser().get(
              http.appendingPathComponent("device").appending(queryItems: [
                URLQueryItem(name: "user_code", value: i == 0 ? "BCDF-GHJK" : wrong)
              ]), headers: guesser
            ).status
          }
        }
        var all: [Int] = []
        for try await status in group { all.append(status) }
        return all
      }
      #expect(seen.count == 40)
      #expect(seen.allSatisfy { $0 == 404 || $0 == 429 }, "\(seen)")
      let lookedUp = seen.filter { $0 == 404 }.count
      #expect(
        lookedUp >= 5 && lookedUp <= 6 + refills(every: 12, since: guessing), "\(seen)")
      // Out of guesses, even the right code is not looked up from that address ...
      let refused = try await TestBrowser().get(URL(string: complete)!, headers: guesser)
      if refills(every: 12, since: guessing) == 0 {
        #expect(refused.status == 429)
        #expect(refused.body.contains("验证码输入错误次数过多"))
      }
      // ... while a teacher at a school elsewhere opens it, again and again (a right code
      // costs nothing), and approves.
      let phone = TestBrowser()
      _ = try await signInAndRedeem(phone, http, client: web)
      for _ in 0..<8 {
        #expect(try await phone.get(URL(string: complete)!, headers: school).status == 200)
      }
      // Starting authorizations shares the address's login limit (6 a minute): a terminal
      // flooding the endpoint is told to slow down, with Retry-After.
      var answers: [Int] = []
      let starting = ContinuousClock.now
      for _ in 0..<10 {
        let reply = try await TestBrowser().post(
          http.appendingPathComponent("device_authorization"),
          form: [("client_id", terminal), ("scope", "openid")], headers: guesser)
        answers.append(reply.status)
        if reply.status == 429 {
          #expect(reply.json["error"] as? String == "slow_down")
          #expect(reply.headers["retry-after"] == "60")
        }
      }
      // Six a minute: one more per 10 s the loop took (a slow machine), never all ten.
      #expect(answers.prefix(5).allSatisfy { $0 == 200 }, "\(answers)")
      #expect(
        answers.filter { $0 == 200 }.count <= 6 + refills(every: 10, since: starting)
          && answers.contains(429), "\(answers)")
    }
  }

  @Test func tenPollsAtOnceAfterTheApprovalGetTokensExactlyOnce() async throws {
    try await withTerminal { _, _, http, terminal, web, _, _ in
      let phone = TestBrowser()
      _ = try await signInAndRedeem(phone, http, client: web)
      let started = try await startDevice(http, client: terminal)
      let deviceCode = try #require(started.json["device_code"] as? String)
      let approval = try await phone.get(
        URL(string: try #require(started.json["verification_uri_complete"] as? String))!)
      let approved = try await postDevicePage(
        phone, http, page: approval, [("decision", "approve")])
      #expect(approved.status == 200)
      let answers = try await withThrowingTaskGroup(of: HTTPReply.self) { group in
        for _ in 0..<10 {
          group.addTask { try await pollDevice(http, client: terminal, deviceCode: deviceCode) }
        }
        var all: [HTTPReply] = []
        for try await answer in group { all.append(answer) }
        return all
      }
      #expect(answers.filter { $0.status == 200 }.count == 1)
      #expect(answers.filter { $0.json["error"] as? String == "invalid_grant" }.count == 9)
    }
  }
}
