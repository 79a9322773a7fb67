import Foundation
import GRPCCore
import IdentityService
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

/// Sessions and the account lifecycle: a session's absolute end, deactivation (people and
/// service accounts), secret rotation, resets, password changes and reactivation.
@Suite("Identity sessions and account lifecycle over gRPC")
struct SessionLifecycleTests {
  private func password(
    _ identity: IdentityClient, _ username: String, _ password: String
  ) async throws -> Smartschool_Identity_V1_TokenResponse {
    try await identity.login(.with {
      $0.username = username
      $0.password = password
    })
  }

  private func exchange(
    _ identity: IdentityClient, _ clientID: String, _ secret: String
  ) async throws -> Smartschool_Identity_V1_TokenResponse {
    try await identity.exchangeClientCredentials(.with {
      $0.clientID = clientID
      $0.clientSecret = secret
    })
  }

  /// Test settings for many parallel logins to one account: enough hashes at once, and a
  /// lockout threshold above them (attempts in flight count towards it).
  private static var parallelLogins: IdentitySettings {
    var settings = IdentitySettings.forTests()
    settings.maxConcurrentHashes = 16
    settings.lockoutThreshold = 100
    return settings
  }

  /// `n` results of `body`, all asked at once.
  private func atOnce<T: Sendable>(_ n: Int, _ body: @escaping @Sendable () async throws -> T)
    async throws -> [T]
  {
    try await withThrowingTaskGroup(of: T.self) { group in
      for _ in 0..<n { group.addTask(operation: body) }
      var all: [T] = []
      for try await t in group { all.append(t) }
      return all
    }
  }

  /// A county admin of `county`, logged in.
  private func countyAdmin(
    _ identity: IdentityClient, admin: String, county: String, name: String
  ) async throws -> String {
    let official = try await newUser(
      identity, admin: admin, externalID: "O-" + name, username: name, kind: .staff, org: county)
    _ = try await grant(identity, token: admin, user: official.id, role: .countyAdmin, org: county)
    return try await login(identity, name, "Secret-pass-1")
  }

  @Test func aSessionEndsAtItsAbsoluteLifetimeForRefreshWhoAmIAndIntrospect() async throws {
    var settings = IdentitySettings.forTests()
    // Room before the end for a machine loaded by the whole suite on PostgreSQL (15 s was
    // once not enough for a login, a second's wait and two refreshes).
    settings.refreshTokenTTL = 40
    try await withIdentity(settings: settings) { port, _ in
      try await withClient(port: port) { client in
        let identity = IdentityClient(wrapping: client)
        let first = try await password(identity, "admin", testAdminPassword)
        let end = first.refreshTokenExpireTime.date
        // No access token outlives its session (the access-token lifetime is 15 minutes).
        #expect(first.accessTokenExpireTime.date <= end)
        // Refreshing a second later rotates the token but never moves the session's end.
        try await Task.sleep(for: .milliseconds(1200))
        let second = try await identity.refresh(.with { $0.refreshToken = first.refreshToken })
        let third = try await identity.refresh(.with { $0.refreshToken = second.refreshToken })
        #expect(second.refreshTokenExpireTime.seconds == first.refreshTokenExpireTime.seconds)
        #expect(third.refreshTokenExpireTime.seconds == first.refreshTokenExpireTime.seconds)
        #expect(third.accessTokenExpireTime.date <= end)
        _ = try await identity.whoAmI(.init(), metadata: bearer(third.accessToken))

        try await Task.sleep(for: .seconds(max(0, end.timeIntervalSinceNow) + 0.3))
        let refresh = await rpcError {
          _ = try await identity.refresh(.with { $0.refreshToken = third.refreshToken })
        }
        #expect(refresh?.code == .unauthenticated)
        #expect(await statusCode {
          _ = try await identity.whoAmI(.init(), metadata: bearer(third.accessToken))
        } == .unauthenticated)
        // A fresh session asks.
        let admin = try await login(identity, "admin", testAdminPassword)
        for token in [first.accessToken, third.accessToken] {
          let introspected = try await identity.introspect(
            .with { $0.token = token }, metadata: bearer(admin))
          #expect(!introspected.active)
        }
      }
    }
  }

  @Test func deactivatingAServiceAccountStopsEveryLiveTokenAtIdentity() async throws {
    try await withTree { identity, admin, _ in
      let account = try await identity.createServiceAccount(
        .with {
          $0.name = "datacenter"
          $0.orgCode = "P34"
          $0.roles = [.dataExchange]
        }, metadata: bearer(admin))
      // Many tokens at once, as a fleet of replicas would hold.
      let tokens = try await atOnce(20) {
        try await exchange(identity, account.clientID, account.clientSecret)
      }
      #expect(Set(tokens.map(\.sessionID)).count == 20)
      #expect(tokens.allSatisfy { !$0.sessionID.isEmpty && $0.refreshToken.isEmpty })
      for t in tokens {
        _ = try await identity.whoAmI(.init(), metadata: bearer(t.accessToken))
        _ = try await identity.listChanges(
          .with { $0.pageSize = 10 }, metadata: bearer(t.accessToken))
      }
      _ = try await identity.deactivateUser(
        .with { $0.id = account.user.id }, metadata: bearer(admin))
      for t in tokens {
        #expect(await statusCode {
          _ = try await identity.whoAmI(.init(), metadata: bearer(t.accessToken))
        } == .unauthenticated)
        #expect(await statusCode {
          _ = try await identity.listChanges(
            .with { $0.pageSize = 10 }, metadata: bearer(t.accessToken))
        } == .unauthenticated)
        #expect(!(try await identity.introspect(
          .with { $0.token = t.accessToken }, metadata: bearer(admin))).active)
      }
      #expect(await statusCode {
        _ = try await exchange(identity, account.clientID, account.clientSecret)
      } == .unauthenticated)

      // Reactivated, the account gets new tokens; the ended ones stay ended.
      let back = try await identity.reactivateUser(
        .with { $0.id = account.user.id }, metadata: bearer(admin))
      #expect(back.status == .active)
      let fresh = try await exchange(identity, account.clientID, account.clientSecret)
      _ = try await identity.listChanges(
        .with { $0.pageSize = 10 }, metadata: bearer(fresh.accessToken))
      #expect(await statusCode {
        _ = try await identity.whoAmI(.init(), metadata: bearer(tokens[0].accessToken))
      } == .unauthenticated)
    }
  }

  @Test func rotatingAServiceAccountSecretRefusesTheOldOne() async throws {
    try await withTree { identity, admin, _ in
      let account = try await identity.createServiceAccount(
        .with {
          $0.name = "county-inspection"
          $0.orgCode = "K340121"
          $0.roles = [.inspector]
        }, metadata: bearer(admin))
      let before = try await exchange(identity, account.clientID, account.clientSecret)

      let rotated = try await identity.rotateServiceAccountSecret(
        .with { $0.userID = account.user.id }, metadata: bearer(admin))
      #expect(rotated.clientID == account.clientID)
      #expect(rotated.clientSecret.hasPrefix("sas_"))
      #expect(rotated.clientSecret != account.clientSecret)
      #expect(rotated.revokedSessions == 0)
      #expect(await statusCode {
        _ = try await exchange(identity, account.clientID, account.clientSecret)
      } == .unauthenticated)
      let after = try await exchange(identity, account.clientID, rotated.clientSecret)
      // Without revoke_tokens the tokens already issued live on until they expire.
      _ = try await identity.whoAmI(.init(), metadata: bearer(before.accessToken))

      // A leaked secret: rotate by client id and end every live token too.
      let again = try await identity.rotateServiceAccountSecret(
        .with {
          $0.clientID = account.clientID
          $0.revokeTokens = true
        }, metadata: bearer(admin))
      #expect(again.revokedSessions == 2)
      for token in [before.accessToken, after.accessToken] {
        #expect(await statusCode {
          _ = try await identity.whoAmI(.init(), metadata: bearer(token))
        } == .unauthenticated)
      }
      #expect(await statusCode {
        _ = try await exchange(identity, account.clientID, rotated.clientSecret)
      } == .unauthenticated)
      _ = try await exchange(identity, account.clientID, again.clientSecret)
      let audit = try await identity.listAuditEvents(
        .with { $0.action = "service_account.rotate_secret" }, metadata: bearer(admin))
      #expect(audit.events.map(\.target) == [account.user.id, account.user.id])

      // Scope: a sibling county's admin is refused, and so is the own county's admin once
      // the account holds a role that admin could not grant (the secret would carry it).
      let east = try await countyAdmin(
        identity, admin: admin, county: "K340122", name: "east.admin")
      let west = try await countyAdmin(
        identity, admin: admin, county: "K340121", name: "west.admin")
      #expect(await statusCode {
        _ = try await identity.rotateServiceAccountSecret(
          .with { $0.userID = account.user.id }, metadata: bearer(east))
      } == .permissionDenied)
      _ = try await identity.rotateServiceAccountSecret(
        .with { $0.userID = account.user.id }, metadata: bearer(west))
      _ = try await grant(
        identity, token: admin, user: account.user.id, role: .dataExchange, org: "P34")
      #expect(await statusCode {
        _ = try await identity.rotateServiceAccountSecret(
          .with { $0.userID = account.user.id }, metadata: bearer(west))
      } == .permissionDenied)

      // Bad requests.
      let teacher = try await newUser(
        identity, admin: admin, externalID: "T1", username: "teacher1", kind: .teacher,
        org: "S-A1")
      #expect(await statusCode {
        _ = try await identity.rotateServiceAccountSecret(
          .with { $0.userID = teacher.id }, metadata: bearer(admin))
      } == .invalidArgument)
      #expect(await statusCode {
        _ = try await identity.rotateServiceAccountSecret(
          .with {
            $0.userID = account.user.id
            $0.clientID = account.clientID
          }, metadata: bearer(admin))
      } == .invalidArgument)
      #expect(await statusCode {
        _ = try await identity.rotateServiceAccountSecret(
          .with { $0.clientID = String(repeating: "x", count: 100_000) }, metadata: bearer(admin))
      } == .invalidArgument)
      #expect(await statusCode {
        _ = try await identity.rotateServiceAccountSecret(
          .with { $0.clientID = "sa-unknown" }, metadata: bearer(admin))
      } == .notFound)
    }
  }

  @Test func aResetDisablesTheOldPasswordAtOnceAndActivationEndsEverySession() async throws {
    try await withTree(settings: Self.parallelLogins) { identity, admin, _ in
      let user = try await newUser(identity, admin: admin, externalID: "T1", username: "teacher1",
                                   kind: .teacher, org: "S-A1")
      let sessions = try await atOnce(6) {
        try await password(identity, "teacher1", "Secret-pass-1")
      }
      let code = try await identity.issueActivationCode(
        .with { $0.userID = user.id }, metadata: bearer(admin)).activationCode
      // The old password stops working at once, before the code is used.
      #expect(await statusCode { _ = try await password(identity, "teacher1", "Secret-pass-1") }
        == .unauthenticated)
      _ = try await identity.whoAmI(.init(), metadata: bearer(sessions[0].accessToken))

      _ = try await identity.activateAccount(.with {
        $0.username = "teacher1"
        $0.activationCode = code
        $0.newPassword = "Quartz-Lantern-47"
      })
      for s in sessions {
        #expect(await statusCode {
          _ = try await identity.whoAmI(.init(), metadata: bearer(s.accessToken))
        } == .unauthenticated)
        #expect(await statusCode {
          _ = try await identity.refresh(.with { $0.refreshToken = s.refreshToken })
        } == .unauthenticated)
      }
      let fresh = try await password(identity, "teacher1", "Quartz-Lantern-47")
      _ = try await identity.whoAmI(.init(), metadata: bearer(fresh.accessToken))
    }
  }

  @Test func changingThePasswordEndsEveryOtherSessionAndKeepsTheCallers() async throws {
    try await withTree(settings: Self.parallelLogins) { identity, admin, _ in
      _ = try await newUser(identity, admin: admin, externalID: "T1", username: "teacher1",
                            kind: .teacher, org: "S-A1")
      let others = try await atOnce(10) {
        try await password(identity, "teacher1", "Secret-pass-1")
      }
      let mine = try await password(identity, "teacher1", "Secret-pass-1")
      let changed = try await identity.changePassword(.with {
        $0.currentPassword = "Secret-pass-1"
        $0.newPassword = "Quartz-Lantern-47"
      }, metadata: bearer(mine.accessToken))
      #expect(changed.keptSessionID == mine.sessionID)
      // The ten, and any the fixture left (newUser may log in once).
      #expect(changed.endedSessions >= Int32(others.count))
      for s in others {
        #expect(await statusCode {
          _ = try await identity.whoAmI(.init(), metadata: bearer(s.accessToken))
        } == .unauthenticated)
        #expect(await statusCode {
          _ = try await identity.refresh(.with { $0.refreshToken = s.refreshToken })
        } == .unauthenticated)
      }
      _ = try await identity.whoAmI(.init(), metadata: bearer(mine.accessToken))
      let renewed = try await identity.refresh(.with { $0.refreshToken = mine.refreshToken })
      #expect(renewed.sessionID == mine.sessionID)
      #expect(await statusCode { _ = try await password(identity, "teacher1", "Secret-pass-1") }
        == .unauthenticated)
    }
  }

  @Test func reactivateUserIsScopedAndAudited() async throws {
    try await withTree { identity, admin, _ in
      let teacher = try await newUser(
        identity, admin: admin, externalID: "T1", username: "teacher1", kind: .teacher,
        org: "S-A1")
      let west = try await countyAdmin(
        identity, admin: admin, county: "K340121", name: "west.admin")
      let east = try await countyAdmin(
        identity, admin: admin, county: "K340122", name: "east.admin")
      let old = try await password(identity, "teacher1", "Secret-pass-1")
      #expect(await statusCode {
        _ = try await identity.reactivateUser(.with { $0.id = teacher.id }, metadata: bearer(west))
      } == .failedPrecondition)
      _ = try await identity.deactivateUser(.with { $0.id = teacher.id }, metadata: bearer(west))
      #expect(await statusCode { _ = try await password(identity, "teacher1", "Secret-pass-1") }
        == .unauthenticated)
      // A sibling county's admin may not.
      #expect(await statusCode {
        _ = try await identity.reactivateUser(.with { $0.id = teacher.id }, metadata: bearer(east))
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await identity.reactivateUser(.with { $0.id = "nobody" }, metadata: bearer(west))
      } == .notFound)
      #expect(await statusCode {
        _ = try await identity.reactivateUser(.init(), metadata: bearer(west))
      } == .invalidArgument)
      let back = try await identity.reactivateUser(
        .with { $0.externalID = "T1" }, metadata: bearer(west))
      #expect(back.status == .active)
      _ = try await password(identity, "teacher1", "Secret-pass-1")
      // The session the deactivation ended stays ended.
      #expect(await statusCode {
        _ = try await identity.whoAmI(.init(), metadata: bearer(old.accessToken))
      } == .unauthenticated)
      let audit = try await identity.listAuditEvents(
        .with { $0.action = "user.reactivate" }, metadata: bearer(admin))
      #expect(audit.events.map(\.target) == [teacher.id])

      // An account that never had a password comes back pending activation.
      let imported = try await identity.createUser(
        .with {
          $0.user = .with {
            $0.externalID = "T2"
            $0.username = "teacher2"
            $0.displayName = "teacher2"
            $0.kind = .teacher
            $0.orgCode = "S-A1"
          }
        }, metadata: bearer(admin))
      _ = try await identity.deactivateUser(.with { $0.id = imported.id }, metadata: bearer(admin))
      let pending = try await identity.reactivateUser(
        .with { $0.id = imported.id }, metadata: bearer(admin))
      #expect(pending.status == .pendingActivation)
    }
  }
}
