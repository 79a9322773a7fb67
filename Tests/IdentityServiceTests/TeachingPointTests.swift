import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import IdentityService
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

/// 一体化管理: a role held at a central school reaches the teaching points it manages, and a
/// teaching point's managing school stays in the teaching point's county.
@Suite("Identity teaching points under their central school")
struct TeachingPointTests {
  /// A teaching point of county A (K340121) whose managing school is `managing`.
  func teachingPoint(_ code: String, managing: String, parent: String = "K340121") -> Org {
    var o = org(code, "教学点" + code, .school, parent: parent, schoolKind: .teachingPoint)
    o.managingSchoolCode = managing
    return o
  }

  func create(_ identity: IdentityClient, _ o: Org, _ token: String) async throws -> Org {
    try await identity.createOrg(.with { $0.org = o }, metadata: bearer(token))
  }

  /// A staff member holding `role` at `orgCode`, logged in.
  func holder(
    _ identity: IdentityClient, admin: String, _ name: String, role: Smartschool_Identity_V1_Role,
    at orgCode: String
  ) async throws -> String {
    let user = try await newUser(
      identity, admin: admin, externalID: "X-" + name, username: name, kind: .staff, org: orgCode)
    _ = try await grant(identity, token: admin, user: user.id, role: role, org: orgCode)
    return try await login(identity, name, "Secret-pass-1")
  }

  @Test func aCentralSchoolsAdminReachesItsTeachingPointsOrgAndUsers() async throws {
    try await withTree { identity, admin, _ in
      // S-A2 (岗集镇中心校) manages TP-A; S-A1 is an unrelated school of the same county.
      _ = try await create(identity, teachingPoint("TP-A", managing: "S-A2"), admin)
      _ = try await create(
        identity, org("CL-TP-1", "一年级", .class, parent: "TP-A", grade: 1, year: "2025-2026"),
        admin)
      let teacher = try await newUser(
        identity, admin: admin, externalID: "T-TP", username: "teacher.tp", kind: .teacher,
        org: "TP-A")
      let central = try await holder(
        identity, admin: admin, "head.a2", role: .schoolAdmin, at: "S-A2")
      let other = try await holder(
        identity, admin: admin, "head.a1", role: .schoolAdmin, at: "S-A1")
      let auth = bearer(central)

      // Reads and updates the teaching point's org…
      _ = try await identity.getOrg(.with { $0.code = "TP-A" }, metadata: auth)
      _ = try await identity.getOrg(.with { $0.code = "CL-TP-1" }, metadata: auth)
      let renamed = try await identity.updateOrg(
        .with {
          $0.org = .with {
            $0.code = "TP-A"
            $0.name = "岗集镇某村教学点"
          }
          $0.updateMask = .with { $0.paths = ["name"] }
        }, metadata: auth)
      #expect(renamed.name == "岗集镇某村教学点")
      let roots = try await identity.listOrgs(.init(), metadata: auth)
      #expect(roots.orgs.map(\.code) == ["S-A2", "TP-A"])
      let classes = try await identity.listOrgs(.with { $0.parentCode = "TP-A" }, metadata: auth)
      #expect(classes.orgs.map(\.code) == ["CL-TP-1"])

      // …and its users, and may add staff there.
      _ = try await identity.getUser(.with { $0.id = teacher.id }, metadata: auth)
      let listed = try await identity.listUsers(.with { $0.orgCode = "TP-A" }, metadata: auth)
      #expect(listed.users.map(\.username) == ["teacher.tp"])
      let everyone = try await identity.listUsers(.init(), metadata: auth)
      #expect(Set(everyone.users.map(\.username)) == ["head.a2", "teacher.tp"])
      let updated = try await identity.updateUser(
        .with {
          $0.user = .with {
            $0.id = teacher.id
            $0.displayName = "教学点老师"
          }
          $0.updateMask = .with { $0.paths = ["display_name"] }
        }, metadata: auth)
      #expect(updated.displayName == "教学点老师")
      _ = try await identity.grantRole(
        .with {
          $0.userID = teacher.id
          $0.role = .teacher
          $0.orgCode = "TP-A"
        }, metadata: auth)

      // Many calls at once all see the same scope.
      try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<40 {
          group.addTask {
            _ = try await identity.getUser(.with { $0.id = teacher.id }, metadata: auth)
          }
        }
        try await group.waitForAll()
      }

      // The admin of an unrelated school of the same county is still refused.
      let refused = bearer(other)
      #expect(await statusCode {
        _ = try await identity.getOrg(.with { $0.code = "TP-A" }, metadata: refused)
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await identity.getUser(.with { $0.id = teacher.id }, metadata: refused)
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await identity.listUsers(.with { $0.orgCode = "TP-A" }, metadata: refused)
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await identity.updateOrg(
          .with {
            $0.org = .with {
              $0.code = "TP-A"
              $0.name = "x"
            }
            $0.updateMask = .with { $0.paths = ["name"] }
          }, metadata: refused)
      } == .permissionDenied)
      let otherUsers = try await identity.listUsers(.init(), metadata: refused)
      #expect(!otherUsers.users.contains { $0.username == "teacher.tp" })

      // A new managing school shows at the next token: S-A1's admin gains the teaching point,
      // S-A2's admin loses it.
      _ = try await identity.updateOrg(
        .with {
          $0.org = .with {
            $0.code = "TP-A"
            $0.managingSchoolCode = "S-A1"
          }
          $0.updateMask = .with { $0.paths = ["managing_school_code"] }
        }, metadata: bearer(admin))
      let nowCentral = bearer(try await login(identity, "head.a1", "Secret-pass-1"))
      let formerCentral = bearer(try await login(identity, "head.a2", "Secret-pass-1"))
      _ = try await identity.getUser(.with { $0.id = teacher.id }, metadata: nowCentral)
      #expect(await statusCode {
        _ = try await identity.getUser(.with { $0.id = teacher.id }, metadata: formerCentral)
      } == .permissionDenied)
    }
  }

  @Test func aManagingSchoolOfAnotherCountyIsRefusedOnEveryWritePath() async throws {
    try await withTree { identity, admin, _ in
      let countyAdmin = try await holder(
        identity, admin: admin, "official.a", role: .countyAdmin, at: "K340121")
      // S-B1 is a school of county B (K340122).
      let created = await rpcError {
        _ = try await self.create(identity, teachingPoint("TP-X", managing: "S-B1"), countyAdmin)
      }
      #expect(created?.code == .invalidArgument)
      #expect(fieldViolations(created) == ["org.managing_school_code"])
      #expect(await statusCode {
        _ = try await identity.getOrg(.with { $0.code = "TP-X" }, metadata: bearer(admin))
      } == .notFound)

      let point = try await create(identity, teachingPoint("TP-A", managing: "S-A2"), countyAdmin)
      let update = await updateOrgError(
        identity, code: "TP-A", managingSchoolCode: "S-B1", path: "managing_school_code",
        token: countyAdmin)
      #expect(update?.code == .invalidArgument)
      #expect(fieldViolations(update) == ["org.managing_school_code"])

      let summary = try await identity.importOrgs(
        metadata: bearer(countyAdmin),
        requestProducer: { w in
          try await w.write(.with { $0.org = teachingPoint("TP-A", managing: "S-B1") })
          try await w.write(.with { $0.org = teachingPoint("TP-Y", managing: "S-B1") })
          try await w.write(.with { $0.org = teachingPoint("TP-Z", managing: "S-A1") })
        })
      #expect(summary.accepted == 1, "\(summary.errors)")
      #expect(summary.errors.map(\.index) == [0, 1])
      #expect(summary.errors.allSatisfy { $0.field == "org.managing_school_code" })
      let after = try await identity.getOrg(.with { $0.code = "TP-A" }, metadata: bearer(admin))
      #expect(after.managingSchoolCode == "S-A2")
      #expect(after.updateTime == point.updateTime)

      // Moving either side to another county (as the system admin, who may write both) would
      // part them too.
      let moveSchool = await updateOrgError(
        identity, code: "S-A2", parentCode: "K340122", path: "parent_code", token: admin)
      #expect(fieldViolations(moveSchool) == ["org.parent_code"])
      let movePoint = await updateOrgError(
        identity, code: "TP-A", parentCode: "K340122", path: "parent_code", token: admin)
      #expect(fieldViolations(movePoint) == ["org.parent_code"], "\(String(describing: movePoint))")
      // Moving the teaching point with a managing school of the new county is fine.
      let moved = try await identity.updateOrg(
        .with {
          $0.org = .with {
            $0.code = "TP-A"
            $0.parentCode = "K340122"
            $0.managingSchoolCode = "S-B1"
          }
          $0.updateMask = .with { $0.paths = ["parent_code", "managing_school_code"] }
        }, metadata: bearer(admin))
      #expect(moved.managingSchoolCode == "S-B1")
    }
  }

  @Test func concurrentMovesAndAssignmentsNeverPartATeachingPointFromItsCounty() async throws {
    try await withTree { identity, admin, _ in
      let auth = bearer(admin)
      let points = (1...12).map { "TP-\($0)" }
      for code in points {
        _ = try await create(identity, teachingPoint(code, managing: ""), admin)
      }
      // Twelve teaching points of county A get S-A2 as managing school while S-A2 moves to
      // county B: whatever the order, no teaching point may end up managed across counties.
      await withTaskGroup(of: Void.self) { group in
        for code in points {
          group.addTask {
            _ = try? await identity.updateOrg(
              .with {
                $0.org = .with {
                  $0.code = code
                  $0.managingSchoolCode = "S-A2"
                }
                $0.updateMask = .with { $0.paths = ["managing_school_code"] }
              }, metadata: auth)
          }
        }
        group.addTask {
          _ = try? await identity.updateOrg(
            .with {
              $0.org = .with {
                $0.code = "S-A2"
                $0.parentCode = "K340122"
              }
              $0.updateMask = .with { $0.paths = ["parent_code"] }
            }, metadata: auth)
        }
      }
      let school = try await identity.getOrg(.with { $0.code = "S-A2" }, metadata: auth)
      var managed = 0
      for code in points {
        let point = try await identity.getOrg(.with { $0.code = code }, metadata: auth)
        if point.managingSchoolCode == "S-A2" {
          managed += 1
          #expect(point.parentID == school.parentID)
        }
      }
      // Either the move won (and nothing after it could pick S-A2) or some assignments did.
      #expect(managed == 0 || school.parentCode == "K340121")
    }
  }

  @Test func aCentralSchoolManagesAtMostTheLimitAndItsTokenReachesThemAll() async throws {
    try await withTree { identity, admin, _ in
      let limit = 100
      // Far past the limit in one stream: the rows beyond it are refused one by one.
      let summary = try await identity.importOrgs(
        metadata: bearer(admin),
        requestProducer: { w in
          for i in 0..<(limit + 50) {
            try await w.write(.with { $0.org = teachingPoint("TP-\(i)", managing: "S-A2") })
          }
        })
      #expect(summary.accepted == Int64(limit), "\(summary.errors.prefix(3))")
      #expect(summary.errors.count == 50)
      #expect(Set(summary.errors.map(\.field)) == ["org.managing_school_code"])
      let beyond = await rpcError {
        _ = try await self.create(identity, teachingPoint("TP-more", managing: "S-A2"), admin)
      }
      #expect(fieldViolations(beyond) == ["org.managing_school_code"])

      // A role at the school reaches all of them, with a token a verifier accepts.
      let central = try await holder(
        identity, admin: admin, "head.a2", role: .teacher, at: "S-A2")
      #expect(central.utf8.count < 8192)
      let auth = bearer(central)
      let roots = try await identity.listOrgs(.with { $0.pageSize = 1000 }, metadata: auth)
      #expect(roots.orgs.count == limit + 1)
      _ = try await identity.getOrg(.with { $0.code = "TP-\(limit - 1)" }, metadata: auth)
    }
  }
}

/// UpdateOrg of one field, its error or nil. A function rather than an `rpcError` closure: the
/// debug build was seen running another closure of the same test in place of one of these.
private func updateOrgError(
  _ identity: Smartschool_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix>,
  code: String, managingSchoolCode: String? = nil, parentCode: String? = nil, path: String,
  token: String
) async -> RPCError? {
  var org = Smartschool_Identity_V1_Org()
  org.code = code
  if let managingSchoolCode { org.managingSchoolCode = managingSchoolCode }
  if let parentCode { org.parentCode = parentCode }
  do {
    _ = try await identity.updateOrg(
      .with {
        $0.org = org
        $0.updateMask = .with { $0.paths = [path] }
      }, metadata: bearer(token))
    return nil
  } catch let error as RPCError {
    return error
  } catch {
    return RPCError(code: .unknown, message: "\(error)")
  }
}
