import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

@Suite("Identity users and guardians over gRPC")
struct UserAPITests {
  @Test func createGetUpdateDeactivate() async throws {
    try await withTree { identity, admin, tree in
      let t = try await newUser(
        identity, admin: admin, externalID: "T001", username: "zhang.wei", kind: .teacher,
        org: "S-A1", birthYear: 1985)
      #expect(t.status == .active)
      #expect(t.orgPath == tree.schoolA1.path)
      #expect(await statusCode {
        _ = try await newUser(identity, admin: admin, externalID: "T001", username: "other",
                              kind: .teacher, org: "S-A1")
      } == .alreadyExists)
      #expect(await statusCode {
        _ = try await newUser(identity, admin: admin, externalID: "T002", username: "ZHANG.WEI",
                              kind: .teacher, org: "S-A1")
      } == .alreadyExists)
      // A student's home must be a class.
      let wrongHome = await rpcError {
        _ = try await newUser(identity, admin: admin, externalID: "S1", username: "stu1",
                              kind: .student, org: "S-A1")
      }
      #expect(fieldViolations(wrongHome) == ["user.org_code"])
      let got = try await identity.getUser(.with { $0.externalID = "T001" }, metadata: bearer(admin))
      #expect(got.id == t.id)
      let updated = try await identity.updateUser(
        .with {
          $0.user = .with {
            $0.id = t.id
            $0.displayName = "张伟"
            $0.orgCode = "S-B1"
          }
          $0.updateMask = .with { $0.paths = ["display_name", "org_code"] }
        }, metadata: bearer(admin))
      #expect(updated.displayName == "张伟")
      #expect(updated.orgCode == "S-B1")
      #expect(updated.birthYear == 1985)
      _ = try await login(identity, "zhang.wei", "Secret-pass-1")
      let off = try await identity.deactivateUser(.with { $0.id = t.id }, metadata: bearer(admin))
      #expect(off.status == .deactivated)
      #expect(await statusCode { _ = try await login(identity, "zhang.wei", "Secret-pass-1") }
        == .unauthenticated)
    }
  }

  @Test func listBySubtreeKindPrefixAndPages() async throws {
    try await withTree { identity, admin, tree in
      for i in 0..<7 {
        _ = try await newUser(identity, admin: admin, externalID: "TA\(i)", username: "ta\(i)",
                              kind: .teacher, org: "S-A1")
      }
      _ = try await newUser(identity, admin: admin, externalID: "TB0", username: "tb0",
                            kind: .teacher, org: "S-B1")
      _ = try await newUser(identity, admin: admin, externalID: "SA0", username: "sa0",
                            kind: .student, org: "CL-A1-3-1")
      let inA = try await identity.listUsers(
        .with {
          $0.orgCode = "K340121"
          $0.kind = .teacher
          $0.pageSize = 100
        }, metadata: bearer(admin))
      #expect(inA.users.map(\.username) == (0..<7).map { "ta\($0)" })
      let prefix = try await identity.listUsers(
        .with {
          $0.orgID = tree.province.id
          $0.namePrefix = "tb"
        }, metadata: bearer(admin))
      #expect(prefix.users.map(\.username) == ["tb0"])
      var names: [String] = []
      var token = ""
      repeat {
        let page = try await identity.listUsers(
          .with {
            $0.orgCode = "K340121"
            $0.pageSize = 3
            $0.pageToken = token
          }, metadata: bearer(admin))
        names += page.users.map(\.username)
        token = page.nextPageToken
      } while !token.isEmpty
      #expect(names == ["sa0"] + (0..<7).map { "ta\($0)" })
    }
  }

  @Test func importActivateAndChangePassword() async throws {
    try await withTree { identity, admin, _ in
      func row(_ ext: String, _ name: String, _ kind: Smartschool_Identity_V1_UserKind, _ org: String)
        -> Smartschool_Identity_V1_ImportUsersRequest
      {
        .with {
          $0.user = .with {
            $0.externalID = ext
            $0.username = name
            $0.displayName = "学生\(ext)"
            $0.kind = kind
            $0.orgCode = org
          }
        }
      }
      let rows = [
        row("ST1", "st1", .student, "CL-A1-3-1"),
        row("ST2", "st2", .student, "CL-A1-3-1"),
        row("PA1", "pa1", .parent, "S-A1"),
        row("ST3", "st3", .student, "NO-SUCH-ORG"),
        row("bad id", "st4", .student, "CL-A1-3-1"),
        row("ST5", "st1", .student, "CL-A1-3-1"),
      ]
      let summary = try await identity.importUsers(
        metadata: bearer(admin), requestProducer: { w in for r in rows { try await w.write(r) } })
      #expect(summary.received == 6)
      #expect(summary.accepted == 3)
      #expect(summary.created == 3)
      #expect(summary.errors.map(\.index) == [3, 4, 5])
      #expect(summary.errors.map(\.field) == ["user.org_code", "user.external_id", "user.username"])
      // Idempotent: the same rows again change nothing.
      let again = try await identity.importUsers(
        metadata: bearer(admin), requestProducer: { w in for r in rows.prefix(3) { try await w.write(r) } })
      #expect(again.created == 0 && again.updated == 3)
      let st1 = try await identity.getUser(.with { $0.externalID = "ST1" }, metadata: bearer(admin))
      #expect(st1.status == .pendingActivation)
      // No password yet: login fails like any bad login.
      #expect(await statusCode { _ = try await login(identity, "st1", "Whatever-1") } == .unauthenticated)
      let code = try await identity.issueActivationCode(
        .with { $0.userID = st1.id }, metadata: bearer(admin)).activationCode
      #expect(await statusCode {
        _ = try await identity.activateAccount(.with {
          $0.username = "st1"
          $0.activationCode = "WRONGCODE1"
          $0.newPassword = "Fresh-pass-1"
        })
      } == .unauthenticated)
      _ = try await identity.activateAccount(.with {
        $0.username = "st1"
        $0.activationCode = code
        $0.newPassword = "Fresh-pass-1"
      })
      // Single use.
      #expect(await statusCode {
        _ = try await identity.activateAccount(.with {
          $0.username = "st1"
          $0.activationCode = code
          $0.newPassword = "Other-pass-2"
        })
      } == .unauthenticated)
      let token = try await login(identity, "st1", "Fresh-pass-1")
      #expect(await statusCode {
        _ = try await identity.changePassword(.with {
          $0.currentPassword = "Wrong-pass-1"
          $0.newPassword = "Newer-pass-3"
        }, metadata: bearer(token))
      } == .unauthenticated)
      _ = try await identity.changePassword(.with {
        $0.currentPassword = "Fresh-pass-1"
        $0.newPassword = "Newer-pass-3"
      }, metadata: bearer(token))
      _ = try await login(identity, "st1", "Newer-pass-3")
    }
  }

  @Test func guardiansLinkListImportAndParentReads() async throws {
    try await withTree { identity, admin, _ in
      let parent = try await newUser(identity, admin: admin, externalID: "P1", username: "parent1",
                                     kind: .parent, org: "S-A1")
      let kid = try await newUser(identity, admin: admin, externalID: "K1", username: "kid1",
                                  kind: .student, org: "CL-A1-3-1")
      let other = try await newUser(identity, admin: admin, externalID: "K2", username: "kid2",
                                    kind: .student, org: "CL-A1-3-1")
      #expect(await statusCode {
        _ = try await identity.linkGuardian(.with {
          $0.parentID = kid.id
          $0.studentID = other.id
        }, metadata: bearer(admin))
      } == .invalidArgument)
      _ = try await identity.linkGuardian(.with {
        $0.parentID = parent.id
        $0.studentID = kid.id
      }, metadata: bearer(admin))
      let parentToken = try await login(identity, "parent1", "Secret-pass-1")
      let mine = try await identity.listChildren(.init(), metadata: bearer(parentToken))
      #expect(mine.children.map(\.externalID) == ["K1"])
      // A parent reads their own child, not another student.
      _ = try await identity.getUser(.with { $0.id = kid.id }, metadata: bearer(parentToken))
      #expect(await statusCode {
        _ = try await identity.getUser(.with { $0.id = other.id }, metadata: bearer(parentToken))
      } == .permissionDenied)
      let guardians = try await identity.listGuardians(
        .with { $0.studentID = kid.id }, metadata: bearer(admin))
      #expect(guardians.guardians.map(\.externalID) == ["P1"])
      let summary = try await identity.importGuardians(
        metadata: bearer(admin),
        requestProducer: { w in
          try await w.write(.with {
            $0.parentExternalID = "P1"
            $0.studentExternalID = "K2"
          })
          try await w.write(.with {
            $0.parentExternalID = "P1"
            $0.studentExternalID = "K1"
          })
          try await w.write(.with {
            $0.parentExternalID = "K1"
            $0.studentExternalID = "K2"
          })
        })
      #expect(summary.created == 1 && summary.updated == 1 && summary.rejected == 1)
      #expect(summary.errors.first?.field == "parent_external_id")
      _ = try await identity.unlinkGuardian(.with {
        $0.parentID = parent.id
        $0.studentID = kid.id
      }, metadata: bearer(admin))
      #expect(await statusCode {
        _ = try await identity.unlinkGuardian(.with {
          $0.parentID = parent.id
          $0.studentID = kid.id
        }, metadata: bearer(admin))
      } == .notFound)
      let after = try await identity.listChildren(.init(), metadata: bearer(parentToken))
      #expect(after.children.map(\.externalID) == ["K2"])
    }
  }
}
