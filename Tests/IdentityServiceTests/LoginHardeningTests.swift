import Foundation
import GRPCCore
import IdentityService
import ServiceRuntime
import SmartSchoolModel
import Synchronization
import Testing
import TestSupport

/// Lockout under parallel guesses, per-account and per-address login limits, the password
/// policy, the forced change of an admin-set password, and UnlockAccount.
@Suite("Identity login hardening over gRPC")
struct LoginHardeningTests {
  /// Runs `count` calls of `body` at once and returns their status codes.
  private func parallel(
    _ count: Int, _ body: @escaping @Sendable (Int) async throws -> Void
  ) async -> [RPCError.Code?] {
    await withTaskGroup(of: RPCError.Code?.self) { group in
      for i in 0..<count { group.addTask { await statusCode { try await body(i) } } }
      var all: [RPCError.Code?] = []
      for await c in group { all.append(c) }
      return all
    }
  }

  private func events(
    _ identity: IdentityClient, _ admin: String, action: String, actor: String = ""
  ) async throws -> [Smartschool_Identity_V1_AuditEvent] {
    try await identity.listAuditEvents(
      .with {
        $0.action = action
        $0.actorID = actor
        $0.pageSize = 1000
      }, metadata: bearer(admin)
    ).events
  }

  private func login(
    _ identity: IdentityClient, _ username: String, _ password: String,
    from address: String
  ) async throws {
    _ = try await identity.login(
      .with {
        $0.username = username
        $0.password = password
      }, metadata: ["x-forwarded-for": .string(address)])
  }

  @Test func parallelGuessesNeverExceedTheThreshold() async throws {
    var settings = IdentitySettings.forTests()
    settings.lockoutThreshold = 5
    settings.maxConcurrentHashes = 32
    try await withTree(settings: settings) { identity, admin, _ in
      let user = try await newUser(
        identity, admin: admin, externalID: "T1", username: "teacher1", kind: .teacher,
        org: "S-A1")
      // Sixteen at once: on PostgreSQL the test pool has four connections, and thirty
      // guesses queued on them could outwait the 10 s lease limit on a loaded CI machine.
      let codes = await parallel(16) { _ in
        _ = try await TestSupport.login(identity, "teacher1", "Wrong-pass-1")
      }
      #expect(codes.allSatisfy { $0 == .unauthenticated }, "\(codes)")
      // A refusal's audit event is written as the call ends: on a busy machine the last ones
      // may land well after the 16 answers (5 s was once not enough on PostgreSQL).
      var failures = try await events(identity, admin, action: "login.failure", actor: user.id)
      for _ in 0..<300 where failures.count < 16 {
        try await Task.sleep(for: .milliseconds(100))
        failures = try await events(identity, admin, action: "login.failure", actor: user.id)
      }
      let evaluated = failures.filter { $0.detail.hasPrefix("wrong password") }
      // Exactly the threshold was evaluated, numbered 1…5; every other guess was refused
      // unchecked because the account was locked.
      #expect(evaluated.count == 5)
      #expect(Set(evaluated.map(\.detail)) == Set((1...5).map { "wrong password (\($0))" }))
      #expect(failures.count - evaluated.count == 11)
      #expect(try await events(identity, admin, action: "login.lockout").count == 1)
      // The right password is refused while locked, and that leaves an audit event.
      let before = failures.count
      #expect(await statusCode {
        _ = try await TestSupport.login(identity, "teacher1", "Secret-pass-1")
      } == .unauthenticated)
      let after = try await events(identity, admin, action: "login.failure", actor: user.id)
      #expect(after.count == before + 1)
      #expect(after.last?.detail == "account locked; password not checked")
    }
  }

  @Test func aRightPasswordWithinTheThresholdClearsTheCount() async throws {
    var settings = IdentitySettings.forTests()
    settings.lockoutThreshold = 3
    try await withTree(settings: settings) { identity, admin, _ in
      _ = try await newUser(
        identity, admin: admin, externalID: "T1", username: "teacher1", kind: .teacher,
        org: "S-A1")
      for _ in 0..<2 {
        _ = await statusCode { _ = try await TestSupport.login(identity, "teacher1", "Wrong-1-x") }
      }
      // The third guess reserves the last attempt (and the lock); being right, it clears both.
      _ = try await TestSupport.login(identity, "teacher1", "Secret-pass-1")
      for _ in 0..<2 {
        _ = await statusCode { _ = try await TestSupport.login(identity, "teacher1", "Wrong-1-x") }
      }
      _ = try await TestSupport.login(identity, "teacher1", "Secret-pass-1")
      let user = try await identity.getUser(
        .with { $0.username = "teacher1" }, metadata: bearer(admin))
      #expect(!user.hasLockedUntil)
    }
  }

  @Test func aFloodFromOneAddressLeavesOtherUsersLoggingIn() async throws {
    var settings = IdentitySettings.forTests()
    // Slow enough hashes that a flood keeps every slot busy without its own limits.
    settings.scrypt = ScryptParameters(logN: 14, r: 8, p: 1)
    settings.maxConcurrentHashes = 2
    settings.lockoutThreshold = 10_000
    settings.loginAttemptsPerAccount = 10
    settings.loginAttemptsPerAddress = 300
    settings.loginHashesPerAddress = 1
    settings.trustedProxies = [IPRange("127.0.0.1")!]
    try await withTree(settings: settings) { identity, admin, _ in
      _ = try await newUser(
        identity, admin: admin, externalID: "T1", username: "teacher1", kind: .teacher,
        org: "S-A1")
      _ = try await newUser(
        identity, admin: admin, externalID: "T2", username: "teacher2", kind: .teacher,
        org: "S-A2")
      // Phase 1: one address against one account. Phase 2: another address against many
      // (unknown) usernames, each of which hashes a dummy.
      var floodCodes: [RPCError.Code?] = []
      for phase in 1...2 {
        let flooding = Task {
          let deadline = ContinuousClock.now + .seconds(1.5)
          let codes = Mutex<[RPCError.Code?]>([])
          _ = await parallel(12) { i in
            // At least three guesses each (36 in all, past the account's 10 a minute) even when
            // a loaded machine starts the workers after the deadline.
            var n = 0
            while n < 3 || ContinuousClock.now < deadline {
              n += 1
              let name = phase == 1 ? "teacher1" : "nobody-\(i)-\(n)"
              let code = await statusCode {
                try await login(identity, name, "Wrong-pass-\(n)", from: "203.0.113.\(phase)")
              }
              codes.withLock { $0.append(code) }
            }
          }
          return codes.withLock { $0 }
        }
        try await Task.sleep(for: .milliseconds(300))
        for _ in 0..<4 {
          // Another user, from another address behind the same trusted proxy.
          try await login(identity, "teacher2", "Secret-pass-1", from: "198.51.100.9")
          try await Task.sleep(for: .milliseconds(100))
        }
        floodCodes += await flooding.value
        if phase == 1 {
          // The account's own limit holds whatever address the next attempts come from: each
          // from a fresh address, at most the account's 10 a minute pass (on a slow machine the
          // flood may have spent fewer of them, and a token refills every six seconds).
          var messages: [String] = []
          for k in 1...15 {
            let error = await rpcError {
              try await login(identity, "teacher1", "Wrong-pass-x", from: "192.0.2.\(k)")
            }
            messages.append(error?.message ?? "")
            if messages.last!.contains("for this account") { break }
          }
          #expect(messages.contains { $0.contains("for this account") }, "\(messages)")
        }
      }
      // The flood was refused early with a clear status; only a few of its guesses were hashed.
      #expect(floodCodes.allSatisfy { $0 == .unauthenticated || $0 == .resourceExhausted })
      #expect(floodCodes.filter { $0 == .resourceExhausted }.count
        > floodCodes.filter { $0 == .unauthenticated }.count)
    }
  }

  @Test func aForwardedHeaderCountsOnlyFromATrustedProxy() async throws {
    var settings = IdentitySettings.forTests()
    settings.loginAttemptsPerAddress = 3
    try await withTree(settings: settings) { identity, admin, _ in
      // Not trusted: a client cannot dodge the address limit by writing its own header. Each
      // attempt names a fresh address; the connection's own address is what is counted, so
      // the limit is reached within a few attempts (a token refills every 20 s, so on a slow
      // machine one or two more may pass than the limit of 3, never eight).
      var messages: [String] = []
      for i in 0..<8 {
        let error = await rpcError {
          try await login(identity, "nobody", "Wrong-pass-1", from: "10.0.0.\(i)")
        }
        messages.append("\(error?.code.description ?? "ok"): \(error?.message ?? "")")
        if error?.code == .resourceExhausted { break }
      }
      #expect(messages.last?.contains("from your address") == true, "\(messages)")
    }
    settings.trustedProxies = try IPRange.list("127.0.0.0/8, ::1")
    try await withTree(settings: settings) { identity, admin, _ in
      for i in 0..<3 {
        _ = await statusCode { try await login(identity, "nobody", "Wrong-pass-1", from: "10.0.0.\(i)") }
      }
      // Behind a trusted proxy each forwarded address has its own limit.
      try await login(identity, "admin", testAdminPassword, from: "10.0.0.99")
    }
  }

  @Test func commonAndGuessablePasswordsAreRefused() async throws {
    var settings = IdentitySettings.forTests()
    settings.passwordPolicy.minLength = 12
    try await withTree(settings: settings) { identity, admin, _ in
      func create(_ password: String, username: String = "teacher9") async -> [String] {
        let error = await rpcError {
          _ = try await identity.createUser(
            .with {
              $0.user = .with {
                $0.externalID = "T9"
                $0.username = username
                $0.displayName = "老师"
                $0.kind = .teacher
                $0.orgCode = "S-A1"
              }
              $0.initialPassword = password
            }, metadata: bearer(admin))
        }
        return error?.code == .invalidArgument ? fieldViolations(error) : []
      }
      for bad in [
        "password1234", "aaaaaaaaaaa1", "P@ssw0rd2024", "dragon!!2024", "abcabcabcabc1",
        "x-teacher9-pass", "Short-pw-1",
      ] {
        #expect(await create(bad) == ["initial_password"], "\(bad)")
      }
      #expect(await create("Quiet-harbor-7").isEmpty)
    }
  }

  @Test func anAdminSetPasswordMustBeChangedAtFirstLogin() async throws {
    try await withTree { identity, admin, _ in
      _ = try await identity.createUser(
        .with {
          $0.user = .with {
            $0.externalID = "T1"
            $0.username = "teacher1"
            $0.displayName = "老师"
            $0.kind = .teacher
            $0.orgCode = "S-A1"
          }
          $0.initialPassword = "Given-by-admin-7"
        }, metadata: bearer(admin))
      func attempt(_ password: String, new: String = "") async -> RPCError? {
        await rpcError {
          _ = try await identity.login(.with {
            $0.username = "teacher1"
            $0.password = password
            $0.newPassword = new
          })
        }
      }
      // No token until the password is changed.
      #expect(await attempt("Given-by-admin-7")?.code == .failedPrecondition)
      // A wrong password says nothing about a change being due.
      #expect(await attempt("Wrong-pass-1", new: "Chosen-by-me-8")?.code == .unauthenticated)
      #expect(fieldViolations(await attempt("Given-by-admin-7", new: "password1"))
        == ["new_password"])
      #expect(fieldViolations(await attempt("Given-by-admin-7", new: "Given-by-admin-7"))
        == ["new_password"])
      #expect(await attempt("Given-by-admin-7", new: "Chosen-by-me-8") == nil)
      // The new password works on its own; the admin's is gone.
      #expect(await attempt("Chosen-by-me-8") == nil)
      #expect(await attempt("Given-by-admin-7")?.code == .unauthenticated)
      let changes = try await events(identity, admin, action: "user.password_change")
      #expect(changes.map(\.detail) == ["at first login"])
      // ChangePassword applies the same policy.
      let token = try await TestSupport.login(identity, "teacher1", "Chosen-by-me-8")
      let weak = await rpcError {
        _ = try await identity.changePassword(
          .with {
            $0.currentPassword = "Chosen-by-me-8"
            $0.newPassword = "aaaaaaa1"
          }, metadata: bearer(token))
      }
      #expect(fieldViolations(weak) == ["new_password"])
    }
  }

  @Test func unlockAccountIsScopedAndAudited() async throws {
    var settings = IdentitySettings.forTests()
    settings.lockoutThreshold = 2
    try await withTree(settings: settings) { identity, admin, _ in
      let teacher = try await newUser(
        identity, admin: admin, externalID: "T1", username: "teacher1", kind: .teacher,
        org: "S-A1")
      var tokens: [String: String] = [:]
      for (name, county) in [("officiala", "K340121"), ("officialb", "K340122")] {
        let official = try await newUser(
          identity, admin: admin, externalID: name, username: name, kind: .staff, org: county)
        _ = try await grant(identity, token: admin, user: official.id, role: .countyAdmin, org: county)
        tokens[name] = try await TestSupport.login(identity, name, "Secret-pass-1")
      }
      for _ in 0..<2 {
        _ = await statusCode { _ = try await TestSupport.login(identity, "teacher1", "Wrong-1-x") }
      }
      #expect(await statusCode {
        _ = try await TestSupport.login(identity, "teacher1", "Secret-pass-1")
      } == .unauthenticated)
      // The sibling county's admin may not unlock; bad requests are INVALID_ARGUMENT.
      #expect(await statusCode {
        _ = try await identity.unlockAccount(
          .with { $0.userID = teacher.id }, metadata: bearer(tokens["officialb"]!))
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await identity.unlockAccount(.init(), metadata: bearer(admin))
      } == .invalidArgument)
      #expect(await statusCode {
        _ = try await identity.unlockAccount(
          .with {
            $0.userID = teacher.id
            $0.username = "teacher1"
          }, metadata: bearer(admin))
      } == .invalidArgument)
      #expect(await statusCode {
        _ = try await identity.unlockAccount(.with { $0.username = "ghost" }, metadata: bearer(admin))
      } == .notFound)
      #expect(await statusCode {
        _ = try await TestSupport.login(identity, "teacher1", "Secret-pass-1")
      } == .unauthenticated)
      let unlocked = try await identity.unlockAccount(
        .with { $0.username = "teacher1" }, metadata: bearer(tokens["officiala"]!))
      #expect(!unlocked.hasLockedUntil)
      _ = try await TestSupport.login(identity, "teacher1", "Secret-pass-1")
      let audit = try await events(identity, admin, action: "user.unlock")
      #expect(audit.map(\.target) == [teacher.id])
      #expect(audit.first?.detail == "was locked")
    }
  }
}
