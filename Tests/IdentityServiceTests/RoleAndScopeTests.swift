import Foundation
import GRPCCore
import IdentityService
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

@Suite("Identity roles and scope over gRPC")
struct RoleAndScopeTests {
  @Test func countyAdminSeesOnlyTheirCounty() async throws {
    try await withTree { identity, admin, tree in
      let official = try await newUser(identity, admin: admin, externalID: "O-A", username: "official.a",
                                       kind: .staff, org: "K340121")
      _ = try await grant(identity, token: admin, user: official.id, role: .countyAdmin, org: "K340121")
      _ = try await newUser(identity, admin: admin, externalID: "TA", username: "teacher.a",
                            kind: .teacher, org: "S-A1")
      let tb = try await newUser(identity, admin: admin, externalID: "TB", username: "teacher.b",
                                 kind: .teacher, org: "S-B1")
      let token = try await login(identity, "official.a", "Secret-pass-1")
      let users = try await identity.listUsers(.init(), metadata: bearer(token))
      #expect(Set(users.users.map(\.username)) == ["official.a", "teacher.a"])
      #expect(await statusCode {
        _ = try await identity.listUsers(.with { $0.orgCode = "K340122" }, metadata: bearer(token))
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await identity.getUser(.with { $0.id = tb.id }, metadata: bearer(token))
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await identity.getOrg(.with { $0.code = "S-B1" }, metadata: bearer(token))
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await identity.listOrgs(.with { $0.parentCode = "K340122" }, metadata: bearer(token))
      } == .permissionDenied)
      // Its own county's schools, and the ancestors on its path.
      let schools = try await identity.listOrgs(.with { $0.parentCode = "K340121" }, metadata: bearer(token))
      #expect(schools.orgs.map(\.code) == ["S-A1", "S-A2"])
      _ = try await identity.getOrg(.with { $0.code = "C3401" }, metadata: bearer(token))
      let roots = try await identity.listOrgs(.init(), metadata: bearer(token))
      #expect(roots.orgs.map(\.code) == ["K340121"])
      // Writes outside the county are refused too.
      #expect(await statusCode {
        _ = try await identity.createOrg(
          .with { $0.org = org("S-B9", "x", .school, parent: "K340122", schoolKind: .rural) },
          metadata: bearer(token))
      } == .permissionDenied)
      _ = try await identity.createOrg(
        .with { $0.org = org("S-A9", "新校", .school, parent: "K340121", schoolKind: .rural) },
        metadata: bearer(token))
      // Import rows outside scope are rejected one by one.
      let summary = try await identity.importUsers(
        metadata: bearer(token),
        requestProducer: { w in
          for (ext, org) in [("X1", "S-A1"), ("X2", "S-B1")] {
            try await w.write(.with {
              $0.user = .with {
                $0.externalID = ext
                $0.username = ext.lowercased() + ".teacher"
                $0.displayName = ext
                $0.kind = .teacher
                $0.orgCode = org
              }
            })
          }
        })
      #expect(summary.accepted == 1, "\(summary.errors)")
      #expect(summary.errors.map(\.index) == [1])
      _ = tree
    }
  }

  @Test func grantsStayWithinTheGrantersScopeAndRole() async throws {
    try await withTree { identity, admin, _ in
      let official = try await newUser(identity, admin: admin, externalID: "O-A", username: "official.a",
                                       kind: .staff, org: "K340121")
      _ = try await grant(identity, token: admin, user: official.id, role: .countyAdmin, org: "K340121")
      let teacher = try await newUser(identity, admin: admin, externalID: "TA", username: "teacher.a",
                                      kind: .teacher, org: "S-A1")
      let teacherB = try await newUser(identity, admin: admin, externalID: "TB", username: "teacher.b",
                                       kind: .teacher, org: "S-B1")
      let countyToken = try await login(identity, "official.a", "Secret-pass-1")
      let binding = try await grant(identity, token: countyToken, user: teacher.id, role: .teacher, org: "S-A1")
      #expect(binding.orgPath.hasSuffix("/"))
      // Not above its own rank, not outside its county.
      #expect(await statusCode {
        _ = try await grant(identity, token: countyToken, user: teacher.id, role: .provinceAdmin, org: "P34")
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await grant(identity, token: countyToken, user: teacherB.id, role: .teacher, org: "S-B1")
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await grant(identity, token: countyToken, user: teacher.id, role: .systemAdmin, org: "")
      } == .permissionDenied)
      // A role must fit the org's kind.
      #expect(await statusCode {
        _ = try await grant(identity, token: countyToken, user: teacher.id, role: .countyAdmin, org: "S-A1")
      } == .invalidArgument)
      #expect(await statusCode {
        _ = try await grant(identity, token: countyToken, user: teacher.id, role: .teacher, org: "S-A1")
      } == .alreadyExists)
      // A teacher cannot grant roles.
      let teacherToken = try await login(identity, "teacher.a", "Secret-pass-1")
      #expect(await statusCode {
        _ = try await grant(identity, token: teacherToken, user: teacher.id, role: .schoolAdmin, org: "S-A1")
      } == .permissionDenied)
      // The token carries the binding with its org path.
      let me = try await identity.whoAmI(.init(), metadata: bearer(teacherToken))
      #expect(me.bindings.map(\.role) == [.teacher])
      let listed = try await identity.listRoleBindings(
        .with { $0.userID = teacher.id }, metadata: bearer(countyToken))
      #expect(listed.bindings.map(\.id) == [binding.id])
      #expect(await statusCode {
        _ = try await identity.revokeRole(.with { $0.bindingID = binding.id }, metadata: bearer(teacherToken))
      } == .permissionDenied)
      _ = try await identity.revokeRole(.with { $0.bindingID = binding.id }, metadata: bearer(countyToken))
      #expect(await statusCode {
        _ = try await identity.revokeRole(.with { $0.bindingID = binding.id }, metadata: bearer(countyToken))
      } == .notFound)
      let afterRevoke = try await identity.listRoleBindings(
        .with { $0.userID = teacher.id }, metadata: bearer(countyToken))
      #expect(afterRevoke.bindings.isEmpty)
    }
  }

  /// WhoAmI's account is kept in memory between calls. Every write that changes it (a grant, a
  /// profile edit, a move of the user's school, a revoke, a lockout) shows in the very next call,
  /// and so does a lockout's end, which no write marks.
  @Test func whoAmIShowsEveryChangeToTheAccountAtOnce() async throws {
    var settings = IdentitySettings.forTests()
    settings.lockoutThreshold = 2
    settings.lockoutDuration = 10
    try await withTree(settings: settings) { identity, admin, tree in
      let teacher = try await newUser(
        identity, admin: admin, externalID: "TA", username: "teacher.a",
        kind: .teacher, org: "S-A1")
      let token = try await login(identity, "teacher.a", "Secret-pass-1")
      func me() async throws -> Smartschool_Identity_V1_WhoAmIResponse {
        try await identity.whoAmI(.init(), metadata: bearer(token))
      }
      #expect(try await me().bindings.isEmpty)
      #expect(try await me().user.displayName == "teacher.a")
      let binding = try await grant(
        identity, token: admin, user: teacher.id, role: .teacher, org: "S-A1")
      #expect(try await me().bindings.map(\.id) == [binding.id])
      _ = try await identity.updateUser(
        .with {
          $0.user = .with {
            $0.id = teacher.id
            $0.displayName = "王老师"
          }
          $0.updateMask = .with { $0.paths = ["display_name"] }
        }, metadata: bearer(admin))
      #expect(try await me().user.displayName == "王老师")
      // The school moves to county B: the user's and the binding's org paths follow.
      _ = try await identity.updateOrg(
        .with {
          $0.org = .with {
            $0.code = "S-A1"
            $0.parentCode = "K340122"
          }
          $0.updateMask = .with { $0.paths = ["parent_code"] }
        }, metadata: bearer(admin))
      let moved = try await me()
      #expect(moved.user.orgPath.hasPrefix(tree.countyB.path))
      #expect(moved.bindings.map(\.orgPath) == [moved.user.orgPath])
      _ = try await identity.revokeRole(
        .with { $0.bindingID = binding.id }, metadata: bearer(admin))
      #expect(try await me().bindings.isEmpty)
      // Two wrong passwords lock the account for ten seconds (room for a loaded machine); the
      // token in hand still works.
      for _ in 0..<2 {
        _ = await statusCode { _ = try await login(identity, "teacher.a", "wrong-pass-1") }
      }
      let locked = try await me().user
      #expect(locked.hasLockedUntil)
      try await Task.sleep(for: .seconds(10.2))
      #expect(try await me().user.hasLockedUntil == false)
    }
  }

  @Test func auditAndChangeFeedAreScoped() async throws {
    try await withTree { identity, admin, _ in
      let official = try await newUser(identity, admin: admin, externalID: "O-A", username: "official.a",
                                       kind: .staff, org: "K340121")
      _ = try await grant(identity, token: admin, user: official.id, role: .countyAdmin, org: "K340121")
      _ = try await newUser(identity, admin: admin, externalID: "TB", username: "teacher.b",
                            kind: .teacher, org: "S-B1")
      let countyToken = try await login(identity, "official.a", "Secret-pass-1")
      let grants = try await identity.listAuditEvents(
        .with { $0.action = "role.grant" }, metadata: bearer(admin))
      #expect(grants.events.count == 1)
      #expect(grants.events.first?.detail.contains("county_admin") == true)
      let logins = try await identity.listAuditEvents(
        .with { $0.action = "login.success" }, metadata: bearer(countyToken))
      // The first login replaced the admin-set password, the second is the county admin's.
      #expect(logins.events.map(\.actorID) == [official.id, official.id])
      // Feed: the county admin sees only its county's entities.
      var seq: Int64 = 0
      var keys: [String] = []
      while true {
        let page = try await identity.listChanges(
          .with {
            $0.afterSequence = seq
            $0.pageSize = 4
          }, metadata: bearer(countyToken))
        keys += page.changes.map(\.naturalKey)
        seq = page.lastSequence
        if !page.moreAvailable { break }
      }
      #expect(keys.contains("S-A1"))
      #expect(keys.contains("O-A"))
      #expect(!keys.contains("S-B1"))
      #expect(!keys.contains("TB"))
      let all = try await identity.listChanges(.with { $0.pageSize = 1000 }, metadata: bearer(admin))
      let schoolB = all.changes.first { $0.naturalKey == "S-B1" }
      let payload = try Smartschool_Identity_V1_Org(serializedBytes: schoolB!.payload.value)
      #expect(payload.code == "S-B1")
      #expect(all.changes.map(\.sequence) == all.changes.map(\.sequence).sorted())
    }
  }
}
