import Foundation
import GRPCCore
import IdentityService
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

@Suite("Identity authentication over gRPC")
struct AuthAPITests {
  @Test func unknownUserAndWrongPasswordLookTheSame() async throws {
    try await withTree { identity, admin, _ in
      _ = try await newUser(identity, admin: admin, externalID: "T1", username: "teacher1",
                            kind: .teacher, org: "S-A1")
      let unknown = await rpcError { _ = try await login(identity, "nobody", "Secret-pass-1") }
      let wrong = await rpcError { _ = try await login(identity, "teacher1", "Wrong-pass-1") }
      #expect(unknown?.code == .unauthenticated)
      #expect(wrong?.code == .unauthenticated)
      #expect(unknown?.message == wrong?.message)
      #expect(await statusCode {
        _ = try await identity.login(.with { $0.username = "teacher1" })
      } == .invalidArgument)
      // Without a token nothing but the open methods answers.
      #expect(await statusCode { _ = try await identity.whoAmI(.init()) } == .unauthenticated)
      #expect(await statusCode {
        _ = try await identity.whoAmI(.init(), metadata: ["authorization": "Bearer x.y.z"])
      } == .unauthenticated)
      // The check runs before validation: an invalid request without a token is UNAUTHENTICATED.
      #expect(await statusCode {
        _ = try await identity.listUsers(.with { $0.pageSize = -1 })
      } == .unauthenticated)
      let failures = try await identity.listAuditEvents(
        .with { $0.action = "login.failure" }, metadata: bearer(admin))
      #expect(failures.events.count == 2)
    }
  }

  @Test func repeatedFailuresLockTheAccountEvenInParallel() async throws {
    var settings = IdentitySettings.forTests()
    settings.lockoutThreshold = 5
    settings.maxConcurrentHashes = 16
    try await withTree(settings: settings) { identity, admin, _ in
      _ = try await newUser(identity, admin: admin, externalID: "T1", username: "teacher1",
                            kind: .teacher, org: "S-A1")
      let codes = await withTaskGroup(of: RPCError.Code?.self) { group in
        for _ in 0..<8 {
          group.addTask { await statusCode { _ = try await login(identity, "teacher1", "Wrong-pass-1") } }
        }
        var all: [RPCError.Code?] = []
        for await c in group { all.append(c) }
        return all
      }
      #expect(codes.allSatisfy { $0 == .unauthenticated })
      // Locked now: even the right password fails.
      #expect(await statusCode { _ = try await login(identity, "teacher1", "Secret-pass-1") }
        == .unauthenticated)
      let user = try await identity.getUser(.with { $0.username = "teacher1" }, metadata: bearer(admin))
      #expect(user.hasLockedUntil)
      let lockouts = try await identity.listAuditEvents(
        .with { $0.action = "login.lockout" }, metadata: bearer(admin))
      #expect(lockouts.events.count == 1)
      let failures = try await identity.listAuditEvents(
        .with {
          $0.action = "login.failure"
          $0.actorID = user.id
        }, metadata: bearer(admin))
      // Only the threshold's worth of guesses was checked, "(1)" … "(5)" each once; the others
      // (and the right password after them) were refused unchecked.
      let counts = failures.events.compactMap { e -> Int? in
        guard let open = e.detail.firstIndex(of: "("), let close = e.detail.firstIndex(of: ")") else { return nil }
        return Int(e.detail[e.detail.index(after: open)..<close])
      }
      #expect(counts.sorted() == Array(1...5))
      #expect(failures.events.count == 9)
    }
  }

  @Test func refreshRotatesAndReuseRevokesTheFamily() async throws {
    try await withTree { identity, admin, _ in
      _ = try await newUser(identity, admin: admin, externalID: "T1", username: "teacher1",
                            kind: .teacher, org: "S-A1")
      let first = try await identity.login(.with {
        $0.username = "teacher1"
        $0.password = "Secret-pass-1"
      })
      #expect(!first.refreshToken.isEmpty)
      let second = try await identity.refresh(.with { $0.refreshToken = first.refreshToken })
      #expect(second.refreshToken != first.refreshToken)
      #expect(second.sessionID == first.sessionID)
      // Reusing the rotated token revokes the whole family, including the fresh token.
      #expect(await statusCode {
        _ = try await identity.refresh(.with { $0.refreshToken = first.refreshToken })
      } == .unauthenticated)
      #expect(await statusCode {
        _ = try await identity.refresh(.with { $0.refreshToken = second.refreshToken })
      } == .unauthenticated)
      let introspected = try await identity.introspect(
        .with { $0.token = second.accessToken }, metadata: bearer(admin))
      #expect(!introspected.active)
      #expect(await statusCode {
        _ = try await identity.refresh(.with { $0.refreshToken = "garbage" })
      } == .unauthenticated)
    }
  }

  @Test func logoutAndIntrospection() async throws {
    try await withTree { identity, admin, tree in
      let user = try await newUser(identity, admin: admin, externalID: "T1", username: "teacher1",
                                   kind: .teacher, org: "S-A1")
      _ = try await grant(identity, token: admin, user: user.id, role: .teacher, org: "S-A1")
      let teacher = try await identity.login(.with {
        $0.username = "teacher1"
        $0.password = "Secret-pass-1"
      })
      let active = try await identity.introspect(
        .with { $0.token = teacher.accessToken }, metadata: bearer(admin))
      #expect(active.active)
      #expect(active.username == "teacher1")
      #expect(active.kind == .teacher)
      #expect(active.bindings.map(\.role) == [.teacher])
      #expect(active.issuer == smartSchoolTokenIssuer)
      #expect(!active.keyID.isEmpty)
      _ = try await identity.logout(.init(), metadata: bearer(teacher.accessToken))
      let after = try await identity.introspect(
        .with { $0.token = teacher.accessToken }, metadata: bearer(admin))
      #expect(!after.active)
      #expect(await statusCode {
        _ = try await identity.refresh(.with { $0.refreshToken = teacher.refreshToken })
      } == .unauthenticated)
      let tampered = try await identity.introspect(
        .with { $0.token = teacher.accessToken.dropLast(2) + "AA" }, metadata: bearer(admin))
      #expect(!tampered.active)
      _ = tree
    }
  }

  @Test func keyRotationKeepsOldTokensValid() async throws {
    try await withTree { identity, admin, _ in
      let before = try await identity.listSigningKeys(.init())
      #expect(before.keys.count == 1)
      #expect(before.keys.first?.current == true)
      #expect(before.keys.first?.publicKey.count == 32)
      let rotated = try await identity.rotateSigningKey(.init(), metadata: bearer(admin))
      #expect(rotated.current)
      let after = try await identity.listSigningKeys(.init())
      #expect(after.keys.count == 2)
      let old = after.keys.first { $0.keyID == before.keys.first?.keyID }
      #expect(old?.current == false)
      #expect(old?.hasRetireTime == true)
      // The old admin token (signed by the old key) still works; new tokens use the new key.
      _ = try await identity.whoAmI(.init(), metadata: bearer(admin))
      let fresh = try await login(identity, "admin", testAdminPassword)
      let header = String(fresh.split(separator: ".")[0])
      let json = String(decoding: Base64URL.decode(header)!, as: UTF8.self)
      #expect(json.contains(rotated.keyID))
      _ = try await identity.whoAmI(.init(), metadata: bearer(fresh))
      let teacherToken: String = try await {
        _ = try await newUser(identity, admin: admin, externalID: "T1", username: "teacher1",
                              kind: .teacher, org: "S-A1")
        return try await login(identity, "teacher1", "Secret-pass-1")
      }()
      #expect(await statusCode {
        _ = try await identity.rotateSigningKey(.init(), metadata: bearer(teacherToken))
      } == .permissionDenied)
    }
  }

  @Test func serviceAccountsExchangeCredentials() async throws {
    try await withTree { identity, admin, _ in
      let created = try await identity.createServiceAccount(
        .with {
          $0.name = "datacenter"
          $0.orgCode = "P34"
          $0.roles = [.dataExchange]
        }, metadata: bearer(admin))
      #expect(created.clientSecret.count >= 32)
      #expect(created.user.kind == .serviceAccount)
      let token = try await identity.exchangeClientCredentials(.with {
        $0.clientID = created.clientID
        $0.clientSecret = created.clientSecret
      })
      #expect(token.refreshToken.isEmpty)
      let feed = try await identity.listChanges(.with { $0.pageSize = 1000 }, metadata: bearer(token.accessToken))
      #expect(feed.changes.contains { $0.naturalKey == "S-B1" })
      #expect(await statusCode {
        _ = try await identity.exchangeClientCredentials(.with {
          $0.clientID = created.clientID
          $0.clientSecret = "wrong"
        })
      } == .unauthenticated)
      // A service account cannot log in with a password.
      #expect(await statusCode { _ = try await login(identity, "datacenter", created.clientSecret) }
        == .unauthenticated)
      #expect(await statusCode {
        _ = try await identity.createServiceAccount(
          .with {
            $0.name = "broken"
            $0.orgCode = "S-A1"
            $0.roles = [.dataExchange]
          }, metadata: bearer(admin))
      } == .invalidArgument)
    }
  }

  @Test func aLoginFloodIsShedWhileOtherCallsAreServed() async throws {
    var settings = IdentitySettings.forTests()
    settings.scrypt = ScryptParameters(logN: 14, r: 8, p: 1)
    settings.maxConcurrentHashes = 1
    try await withTree(settings: settings) { identity, admin, _ in
      let codes = await withTaskGroup(of: RPCError.Code?.self) { group in
        for _ in 0..<12 {
          group.addTask { await statusCode { _ = try await login(identity, "admin", testAdminPassword) } }
        }
        // Other RPCs keep answering during the flood.
        group.addTask { await statusCode { _ = try await identity.whoAmI(.init(), metadata: bearer(admin)) } }
        var all: [RPCError.Code?] = []
        for await c in group { all.append(c) }
        return all
      }
      #expect(codes.contains(.resourceExhausted))
      #expect(codes.contains(nil))
      #expect(codes.allSatisfy { $0 == nil || $0 == .resourceExhausted })
    }
  }

  @Test func passwordHashesAreUpgradedAtLogin() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    try await withIdentity(directory: dir) { port, _ in
      try await withClient(port: port) { client in
        let identity = IdentityClient(wrapping: client)
        _ = try await login(identity, "admin", testAdminPassword)
      }
    }
    var stronger = IdentitySettings.forTests()
    stronger.scrypt = ScryptParameters(logN: 11, r: 8, p: 1)
    try await withIdentity(settings: stronger, directory: dir) { port, _ in
      try await withClient(port: port) { client in
        let identity = IdentityClient(wrapping: client)
        let admin = try await login(identity, "admin", testAdminPassword)
        let again = try await login(identity, "admin", testAdminPassword)
        let events = try await identity.listAuditEvents(
          .with { $0.action = "login.success" }, metadata: bearer(again))
        #expect(events.events.map(\.detail) == ["", "password rehashed", ""])
        _ = admin
      }
    }
  }
}
