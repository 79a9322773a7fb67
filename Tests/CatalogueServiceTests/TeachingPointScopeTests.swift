import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import TestSupport
import Testing

/// 一体化管理 at a service other than identity: a role held at a central school reaches what
/// its teaching points own, from the token alone.
@Suite("Catalogue scope of a central school over its teaching points")
struct TeachingPointScopeTests {
  @Test func aCentralSchoolsAdminSeesWhatItsTeachingPointOwns() async throws {
    try await withWorld { w in
      let admin = w.auth("admin")
      // TP-A1, a teaching point of county A managed by S-A1, with its own teacher.
      _ = try await w.identity.createOrg(
        .with {
          $0.org = .with {
            $0.code = "TP-A1"
            $0.name = "某村教学点"
            $0.kind = .school
            $0.parentCode = "K340121"
            $0.schoolKind = .teachingPoint
            $0.stages = [.junior]
            $0.managingSchoolCode = "S-A1"
          }
        }, metadata: admin)
      var tokens: [String: String] = [:]
      for (name, kind, org, role) in [
        ("tTP", Smartschool_Identity_V1_UserKind.teacher, "TP-A1",
         Smartschool_Identity_V1_Role.teacher),
        ("headA1", .staff, "S-A1", .schoolAdmin), ("headA2", .staff, "S-A2", .schoolAdmin),
      ] {
        let user = try await w.identity.createUser(
          .with {
            $0.user = .with {
              $0.externalID = "ext-" + name
              $0.username = name
              $0.displayName = name
              $0.kind = kind
              $0.orgCode = org
            }
            $0.initialPassword = initialPassword(for: testPassword)
          }, metadata: admin)
        _ = try await w.identity.grantRole(
          .with {
            $0.userID = user.id
            $0.role = role
            $0.orgCode = org
          }, metadata: admin)
        tokens[name] = try await firstLogin(w.identity, name, testPassword)
      }
      try await w.directory.sync()
      let world = World(
        identity: w.identity, replicas: w.replicas, directory: w.directory,
        dataDirectory: w.dataDirectory, tokens: w.tokens.merging(tokens) { $1 },
        userIDs: w.userIDs, launchReplica: w.launchReplica)

      // The teaching point's teacher writes a school-shared resource; the county publishes it.
      let draft = try await world.create("tTP", "教学点的有理数课件", grade: 7)
      #expect(draft.ownerOrgCode == "TP-A1")
      _ = try await world.publish(draft, author: "tTP", reviewer: "revA")

      // The central school's admin sees it, listed and by id, also from many calls at once.
      let central = world.auth("headA1")
      let listed = try await w.catalogue.listResources(
        .with { $0.pageSize = 1000 }, metadata: central)
      #expect(listed.resources.map(\.id).contains(draft.id))
      try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<30 {
          group.addTask {
            let r = try await w.catalogue.getResource(.with { $0.id = draft.id }, metadata: central)
            #expect(r.id == draft.id)
          }
        }
        try await group.waitForAll()
      }
      // The admin of an unrelated school of the same county does not.
      let other = world.auth("headA2")
      let otherList = try await w.catalogue.listResources(
        .with { $0.pageSize = 1000 }, metadata: other)
      #expect(!otherList.resources.map(\.id).contains(draft.id))
      await expectCode(.notFound) {
        try await w.catalogue.getResource(.with { $0.id = draft.id }, metadata: other)
      }
    }
  }
}
