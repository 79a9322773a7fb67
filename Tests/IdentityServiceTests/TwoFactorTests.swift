import Crypto
import Foundation
import GRPCCore
import IdentityService
import ServiceRuntime
import SmartSchoolModel
import Synchronization
import Testing
import TestSupport

/// An RFC 6238 implementation of the test's own (HMAC-SHA1 over the big-endian step counter,
/// RFC 4226 dynamic truncation), checked against the RFC's published vectors, so that the
/// codes the service accepts are the ones every authenticator app computes.
enum ReferenceTOTP {
  static func code(secret: [UInt8], step: Int64, digits: Int = 6) -> String {
    var message = [UInt8](repeating: 0, count: 8)
    for i in 0..<8 { message[7 - i] = UInt8((UInt64(step) >> (8 * UInt64(i))) & 0xFF) }
    let mac = Array(HMAC<Insecure.SHA1>.authenticationCode(
      for: message, using: SymmetricKey(data: secret)))
    let offset = Int(mac[19] & 0x0F)
    let number = (Int(mac[offset]) & 0x7F) << 24 | Int(mac[offset + 1]) << 16
      | Int(mac[offset + 2]) << 8 | Int(mac[offset + 3])
    var modulus = 1
    for _ in 0..<digits { modulus *= 10 }
    let text = String(number % modulus)
    return String(repeating: "0", count: digits - text.count) + text
  }

  static func step(_ date: Date = Date()) -> Int64 { Int64(date.timeIntervalSince1970) / 30 }

  /// RFC 4648 base32 without padding.
  static func decodeBase32(_ text: String) -> [UInt8]? {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    var bits = 0
    var value = 0
    var out: [UInt8] = []
    for ch in text {
      guard let index = alphabet.firstIndex(of: ch) else { return nil }
      value = (value << 5) | index
      bits += 5
      if bits >= 8 {
        out.append(UInt8((value >> (bits - 8)) & 0xFF))
        bits -= 8
      }
    }
    return out
  }
}

@Suite("Identity two-factor login (TOTP) over gRPC")
struct TwoFactorTests {
  @Test func theReferenceImplementationMatchesRFC6238() {
    // RFC 6238 Appendix B, SHA1, 8 digits, secret "12345678901234567890".
    let secret = Array("12345678901234567890".utf8)
    let vectors: [(Int64, String)] = [
      (59, "94287082"), (1_111_111_109, "07081804"), (1_111_111_111, "14050471"),
      (1_234_567_890, "89005924"), (2_000_000_000, "69279037"), (20_000_000_000, "65353130"),
    ]
    for (time, expected) in vectors {
      #expect(ReferenceTOTP.code(secret: secret, step: time / 30, digits: 8) == expected)
    }
    #expect(ReferenceTOTP.decodeBase32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ") == secret)
  }

  private struct Enrolled {
    var secret: [UInt8]
    var recoveryCodes: [String]
    /// The step whose code confirmed the enrolment (never accepted again).
    var confirmedStep: Int64
  }

  /// Enrols the token's user: begin, check the URI, confirm with the current code.
  private func enrol(_ identity: IdentityClient, _ token: String, username: String)
    async throws -> Enrolled
  {
    let enrolment = try await identity.beginTotpEnrolment(.init(), metadata: bearer(token))
    let uri = try #require(URLComponents(string: enrolment.otpauthUri))
    #expect(uri.scheme == "otpauth" && uri.host == "totp")
    #expect(uri.path == "/SmartSchool:\(username)")
    let query = Dictionary(
      uniqueKeysWithValues: (uri.queryItems ?? []).map { ($0.name, $0.value ?? "") })
    #expect(query["secret"] == enrolment.secret)
    #expect(query["issuer"] == "SmartSchool" && query["algorithm"] == "SHA1")
    #expect(query["digits"] == "6" && query["period"] == "30")
    let secret = try #require(ReferenceTOTP.decodeBase32(enrolment.secret))
    #expect(secret.count == 20)
    // A wrong code does not activate it.
    let step = ReferenceTOTP.step()
    let wrong = ReferenceTOTP.code(secret: secret, step: step + 7)
    #expect(await statusCode {
      _ = try await identity.confirmTotpEnrolment(
        .with { $0.code = wrong }, metadata: bearer(token))
    } == .invalidArgument)
    let confirmed = try await identity.confirmTotpEnrolment(
      .with { $0.code = ReferenceTOTP.code(secret: secret, step: step) }, metadata: bearer(token))
    #expect(confirmed.recoveryCodes.count == 10 && Set(confirmed.recoveryCodes).count == 10)
    // Active now: beginning again is refused.
    #expect(await statusCode {
      _ = try await identity.beginTotpEnrolment(.init(), metadata: bearer(token))
    } == .failedPrecondition)
    return Enrolled(secret: secret, recoveryCodes: confirmed.recoveryCodes, confirmedStep: step)
  }

  /// Login's first step for a client that knows the second one.
  private func challenge(_ identity: IdentityClient, _ username: String,
                         password: String = "Secret-pass-1") async throws
    -> Smartschool_Identity_V1_SecondFactorChallenge
  {
    let response = try await identity.login(
      .with {
        $0.username = username
        $0.password = password
        $0.acceptsSecondFactor = true
      })
    #expect(response.accessToken.isEmpty && response.refreshToken.isEmpty)
    #expect(response.hasSecondFactor)
    return response.secondFactor
  }

  private func second(_ identity: IdentityClient, _ challenge: String, _ code: String)
    async throws -> Smartschool_Identity_V1_LoginSecondFactorResponse
  {
    try await identity.loginSecondFactor(
      .with {
        $0.challengeID = challenge
        $0.code = code
      })
  }

  private func events(_ identity: IdentityClient, _ admin: String, action: String)
    async throws -> [Smartschool_Identity_V1_AuditEvent]
  {
    try await identity.listAuditEvents(
      .with {
        $0.action = action
        $0.pageSize = 1000
      }, metadata: bearer(admin)
    ).events
  }

  @Test func enrolThenLoginTakesTwoStepsAndACodeIsNeverAcceptedTwice() async throws {
    try await withTree { identity, admin, _ in
      _ = try await newUser(
        identity, admin: admin, externalID: "T1", username: "teacher1", kind: .teacher,
        org: "S-A1")
      let token = try await login(identity, "teacher1", "Secret-pass-1")
      let enrolled = try await enrol(identity, token, username: "teacher1")
      // A client that does not know the second step gets a clear status, not a token.
      let refused = await rpcError { _ = try await login(identity, "teacher1", "Secret-pass-1") }
      #expect(refused?.code == .failedPrecondition)
      #expect(refused?.message.contains("second factor") == true)
      // A wrong password is refused as before, without a challenge.
      #expect(await statusCode {
        _ = try await challenge(identity, "teacher1", password: "Wrong-pass-9")
      } == .unauthenticated)

      let first = try await challenge(identity, "teacher1")
      #expect(first.kind == .totp && !first.hasEnrolment)
      // The step that confirmed the enrolment is used: its code is refused.
      let confirmedCode = ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.confirmedStep)
      #expect(await statusCode {
        _ = try await second(identity, first.challengeID, confirmedCode)
      } == .unauthenticated)
      // The next step's code (one step of clock skew) completes the login.
      let next = ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.confirmedStep + 1)
      let done = try await second(identity, first.challengeID, next)
      #expect(!done.tokens.accessToken.isEmpty && !done.tokens.refreshToken.isEmpty)
      let me = try await identity.whoAmI(.init(), metadata: bearer(done.tokens.accessToken))
      #expect(me.user.username == "teacher1")
      // The completed challenge is refused, even with a fresh code.
      #expect(await statusCode {
        _ = try await second(identity, first.challengeID, next)
      } == .unauthenticated)
      // The same code on a new challenge is refused: a code is never accepted twice.
      let again = try await challenge(identity, "teacher1")
      let replay = await rpcError { _ = try await second(identity, again.challengeID, next) }
      #expect(replay?.code == .unauthenticated)
      #expect(replay?.message.contains("already used") == true)
      let successes = try await events(identity, admin, action: "login.success")
      #expect(successes.contains { $0.detail == "second factor: totp" })
    }
  }

  @Test func wrongCodesCountTowardTheLoginLockout() async throws {
    var settings = IdentitySettings.forTests()
    settings.lockoutThreshold = 3
    try await withTree(settings: settings) { identity, admin, _ in
      let user = try await newUser(
        identity, admin: admin, externalID: "T1", username: "teacher1", kind: .teacher,
        org: "S-A1")
      let token = try await login(identity, "teacher1", "Secret-pass-1")
      let enrolled = try await enrol(identity, token, username: "teacher1")
      let wrong = ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.confirmedStep + 9)
      let right = ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.confirmedStep + 1)
      // The right password stays counted (1) until the second step succeeds; two wrong codes
      // (2, 3) lock the account.
      let c = try await challenge(identity, "teacher1")
      for _ in 0..<2 {
        #expect(await statusCode { _ = try await second(identity, c.challengeID, wrong) }
          == .unauthenticated)
      }
      // Locked: the right code and the right password are refused.
      #expect(await statusCode { _ = try await second(identity, c.challengeID, right) }
        == .unauthenticated)
      #expect(await statusCode { _ = try await challenge(identity, "teacher1") }
        == .unauthenticated)
      #expect(try await events(identity, admin, action: "login.lockout")
        .contains { $0.target == user.id })
      let failures = try await events(identity, admin, action: "login.failure")
        .filter { $0.target == user.id }.map(\.detail)
      #expect(failures.contains("wrong second factor (2)"))
      #expect(failures.contains("wrong second factor (3)"))
      #expect(failures.contains("account locked; second factor not checked"))
      // Unlocked by an admin, the same challenge completes with the right code.
      _ = try await identity.unlockAccount(.with { $0.userID = user.id }, metadata: bearer(admin))
      // The code of now, or of the step after enrolment: on a loaded run (114 s once) the
      // latter had left the accepted window of one step either side of now.
      let step = max(enrolled.confirmedStep + 1, ReferenceTOTP.step())
      let done = try await second(
        identity, c.challengeID, ReferenceTOTP.code(secret: enrolled.secret, step: step))
      #expect(!done.tokens.accessToken.isEmpty)
      // Success cleared the count and the lock.
      let unlocked = try await identity.getUser(
        .with { $0.id = user.id }, metadata: bearer(admin))
      #expect(!unlocked.hasLockedUntil)
    }
  }

  @Test func aRecoveryCodeWorksOnceAndDisablesTOTP() async throws {
    try await withTree { identity, admin, _ in
      _ = try await newUser(
        identity, admin: admin, externalID: "T1", username: "teacher1", kind: .teacher,
        org: "S-A1")
      let token = try await login(identity, "teacher1", "Secret-pass-1")
      let enrolled = try await enrol(identity, token, username: "teacher1")
      let code = enrolled.recoveryCodes[0]
      let first = try await challenge(identity, "teacher1")
      // Typed in lower case without its dash, as people do.
      let typed = code.lowercased().replacingOccurrences(of: "-", with: "")
      let done = try await second(identity, first.challengeID, typed)
      #expect(!done.tokens.accessToken.isEmpty)
      #expect(done.recoveryCodesRemaining == 9)
      let again = try await challenge(identity, "teacher1")
      #expect(await statusCode { _ = try await second(identity, again.challengeID, code) }
        == .unauthenticated)
      #expect(try await events(identity, admin, action: "login.success")
        .contains { $0.detail == "second factor: recovery code" })
      // Disabling needs a code: a wrong one is refused, an unused recovery code works.
      #expect(await statusCode {
        _ = try await identity.disableTotp(.with { $0.code = code }, metadata: bearer(token))
      } == .unauthenticated)
      _ = try await identity.disableTotp(
        .with { $0.code = enrolled.recoveryCodes[1] }, metadata: bearer(token))
      #expect(await statusCode {
        _ = try await identity.disableTotp(
          .with { $0.code = enrolled.recoveryCodes[2] }, metadata: bearer(token))
      } == .failedPrecondition)
      // The password alone logs in again.
      #expect(!(try await login(identity, "teacher1", "Secret-pass-1")).isEmpty)
      #expect(try await events(identity, admin, action: "user.totp_disable").count == 1)
    }
  }

  @Test func anExpiredChallengeIsRefused() async throws {
    var settings = IdentitySettings.forTests()
    // Long enough for the first answer to arrive while the challenge lives on a loaded machine.
    settings.twoFactor.challengeTTL = 20
    try await withTree(settings: settings) { identity, admin, _ in
      _ = try await newUser(
        identity, admin: admin, externalID: "T1", username: "teacher1", kind: .teacher,
        org: "S-A1")
      let token = try await login(identity, "teacher1", "Secret-pass-1")
      let enrolled = try await enrol(identity, token, username: "teacher1")
      let c = try await challenge(identity, "teacher1")
      #expect(c.expireTime.date.timeIntervalSinceNow <= 20.5)
      // Live at first: a wrong code is told it is wrong (and the challenge stays open)…
      let wrong = ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.confirmedStep + 9)
      let early = await rpcError { _ = try await second(identity, c.challengeID, wrong) }
      #expect(early?.code == .unauthenticated)
      #expect(early?.message.contains("code is wrong") == true)
      // …once expired, even the right code is refused for the challenge.
      let left = c.expireTime.date.timeIntervalSinceNow + 0.6
      if left > 0 { try await Task.sleep(for: .milliseconds(Int(left * 1000))) }
      let code = ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.confirmedStep + 1)
      let error = await rpcError { _ = try await second(identity, c.challengeID, code) }
      #expect(error?.code == .unauthenticated)
      #expect(error?.message.contains("expired") == true)
      #expect(await statusCode { _ = try await second(identity, "no-such-challenge", code) }
        == .unauthenticated)
    }
  }

  @Test func thePolicyMakesACoveredAdminEnrolAtLogin() async throws {
    var settings = IdentitySettings.forTests()
    settings.twoFactor.policy = try TOTPPolicy("county_admin,resource_reviewer@county")
    try await withTree(settings: settings) { identity, admin, _ in
      let official = try await newUser(
        identity, admin: admin, externalID: "A1", username: "official1", kind: .staff,
        org: "K340121")
      _ = try await grant(identity, token: admin, user: official.id, role: .countyAdmin,
                          org: "K340121")
      let reviewer = try await newUser(
        identity, admin: admin, externalID: "R1", username: "reviewer1", kind: .teacher,
        org: "S-A1")
      _ = try await grant(identity, token: admin, user: reviewer.id, role: .resourceReviewer,
                          org: "S-A1")
      // A reviewer at a school is below the policy's level: the password suffices.
      #expect(!(try await login(identity, "reviewer1", "Secret-pass-1")).isEmpty)
      // The county admin without TOTP: no token for a client that cannot enrol…
      #expect(await statusCode { _ = try await login(identity, "official1", "Secret-pass-1") }
        == .failedPrecondition)
      // …and an enrolment challenge for one that can.
      let c = try await challenge(identity, "official1")
      #expect(c.kind == .totpEnrolment)
      let secret = try #require(ReferenceTOTP.decodeBase32(c.enrolment.secret))
      #expect(c.enrolment.otpauthUri.hasPrefix("otpauth://totp/SmartSchool:official1?"))
      let step = ReferenceTOTP.step()
      let done = try await second(
        identity, c.challengeID, ReferenceTOTP.code(secret: secret, step: step))
      #expect(!done.tokens.accessToken.isEmpty)
      #expect(done.recoveryCodes.count == 10)
      // From now on an ordinary TOTP login; disabling is refused under the policy.
      let next = try await challenge(identity, "official1")
      #expect(next.kind == .totp)
      #expect(await statusCode {
        _ = try await identity.disableTotp(
          .with { $0.code = done.recoveryCodes[0] }, metadata: bearer(done.tokens.accessToken))
      } == .failedPrecondition)
      let enabled = try await events(identity, admin, action: "user.totp_enable")
      #expect(enabled.contains { $0.target == official.id && $0.detail == "at login" })
    }
  }

  @Test func anAdminResetIsScopedAuditedAndOnTheFeed() async throws {
    try await withTree { identity, admin, _ in
      let user = try await newUser(
        identity, admin: admin, externalID: "T1", username: "teacher1", kind: .teacher,
        org: "S-A1")
      let other = try await newUser(
        identity, admin: admin, externalID: "B1", username: "schooladminb", kind: .staff,
        org: "S-B1")
      _ = try await grant(identity, token: admin, user: other.id, role: .schoolAdmin, org: "S-B1")
      let token = try await login(identity, "teacher1", "Secret-pass-1")
      let enrolled = try await enrol(identity, token, username: "teacher1")
      let c = try await challenge(identity, "teacher1")
      let code = ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.confirmedStep + 1)
      let session = try await second(identity, c.challengeID, code).tokens.accessToken
      // Another school's admin may not reset it.
      let otherToken = try await login(identity, "schooladminb", "Secret-pass-1")
      #expect(await statusCode {
        _ = try await identity.resetUserTotp(
          .with { $0.username = "teacher1" }, metadata: bearer(otherToken))
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await identity.resetUserTotp(.init(), metadata: bearer(admin))
      } == .invalidArgument)
      let reset = try await identity.resetUserTotp(
        .with { $0.username = "teacher1" }, metadata: bearer(admin))
      #expect(reset.hadTotp)
      // The user's sessions ended; the password alone logs in again.
      #expect(await statusCode {
        _ = try await identity.whoAmI(.init(), metadata: bearer(session))
      } == .unauthenticated)
      #expect(!(try await login(identity, "teacher1", "Secret-pass-1")).isEmpty)
      let audited = try await events(identity, admin, action: "user.totp_reset")
      #expect(audited.count == 1 && audited[0].target == user.id)
      #expect(audited[0].actorID != user.id)
      let feed = try await identity.listChanges(
        .with { $0.pageSize = 1000 }, metadata: bearer(admin)
      ).changes.filter { $0.entity == "user_totp" && $0.id == user.id }
      #expect(feed.map(\.op) == [.upsert, .delete])
      #expect(feed.allSatisfy { $0.naturalKey == "T1" && $0.payload.value.isEmpty })
      // Nothing to reset now: still answered (and audited), had_totp false.
      #expect(!(try await identity.resetUserTotp(
        .with { $0.userID = user.id }, metadata: bearer(admin))).hadTotp)
    }
  }

  @Test func concurrentSecondStepsWithOneChallengeSucceedExactlyOnce() async throws {
    var settings = IdentitySettings.forTests()
    settings.lockoutThreshold = 1000
    try await withTree(settings: settings) { identity, admin, _ in
      _ = try await newUser(
        identity, admin: admin, externalID: "T1", username: "teacher1", kind: .teacher,
        org: "S-A1")
      let token = try await login(identity, "teacher1", "Secret-pass-1")
      let enrolled = try await enrol(identity, token, username: "teacher1")
      let c = try await challenge(identity, "teacher1")
      let code = ReferenceTOTP.code(secret: enrolled.secret, step: enrolled.confirmedStep + 1)
      let id = c.challengeID
      let codes = await withTaskGroup(of: RPCError.Code?.self) { group in
        for _ in 0..<24 {
          group.addTask {
            await statusCode {
              _ = try await identity.loginSecondFactor(
                .with {
                  $0.challengeID = id
                  $0.code = code
                })
            }
          }
        }
        var all: [RPCError.Code?] = []
        for await c in group { all.append(c) }
        return all
      }
      #expect(codes.filter { $0 == nil }.count == 1)
      #expect(codes.filter { $0 == .unauthenticated }.count == 23)
      #expect(try await events(identity, admin, action: "login.success")
        .filter { $0.detail == "second factor: totp" }.count == 1)
    }
  }
}
