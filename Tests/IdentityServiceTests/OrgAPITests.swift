import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

@Suite("Identity orgs over gRPC")
struct OrgAPITests {
  @Test func createGetAndPaths() async throws {
    try await withTree { identity, admin, tree in
      #expect(tree.schoolA1.path == tree.countyA.path + tree.schoolA1.id + "/")
      #expect(tree.classA1.parentCode == "S-A1")
      let byCode = try await identity.getOrg(.with { $0.code = "S-A1" }, metadata: bearer(admin))
      #expect(byCode.id == tree.schoolA1.id)
      #expect(byCode.schoolKind == .urban)
      #expect(await statusCode {
        _ = try await identity.getOrg(.with { $0.code = "NOPE" }, metadata: bearer(admin))
      } == .notFound)
      // The same code twice.
      #expect(await statusCode {
        _ = try await identity.createOrg(
          .with { $0.org = org("S-A1", "重复", .school, parent: "K340121", schoolKind: .rural) },
          metadata: bearer(admin))
      } == .alreadyExists)
    }
  }

  @Test func badInputCarriesFieldViolations() async throws {
    try await withTree { identity, admin, _ in
      // A school directly under a city: wrong parent kind.
      let wrongParent = await rpcError {
        _ = try await identity.createOrg(
          .with { $0.org = org("S-X", "学校", .school, parent: "C3401", schoolKind: .rural) },
          metadata: bearer(admin))
      }
      #expect(wrongParent?.code == .invalidArgument)
      #expect(fieldViolations(wrongParent) == ["org.parent_code"])
      let bad = await rpcError {
        _ = try await identity.createOrg(
          .with { $0.org = org("bad code", "", .`class`, parent: "S-A1", grade: 0) },
          metadata: bearer(admin))
      }
      #expect(bad?.code == .invalidArgument)
      #expect(Set(fieldViolations(bad)) == ["org.code", "org.name", "org.grade", "org.school_year"])
      #expect(await statusCode {
        _ = try await identity.listOrgs(.with { $0.pageSize = 5000 }, metadata: bearer(admin))
      } == .invalidArgument)
    }
  }

  @Test func moveUpdatesTheSubtreeAndRefusesCycles() async throws {
    try await withTree { identity, admin, tree in
      let moved = try await identity.updateOrg(
        .with {
          $0.org = .with {
            $0.id = tree.schoolA1.id
            $0.parentCode = "K340122"
            $0.name = "长丰县第一小学（迁）"
          }
          $0.updateMask = .with { $0.paths = ["parent_code", "name"] }
        }, metadata: bearer(admin))
      #expect(moved.path == tree.countyB.path + tree.schoolA1.id + "/")
      #expect(moved.name == "长丰县第一小学（迁）")
      let cls = try await identity.getOrg(.with { $0.id = tree.classA1.id }, metadata: bearer(admin))
      #expect(cls.path == moved.path + tree.classA1.id + "/")
      // A county under one of its own descendants cannot happen by kind; a mask naming an
      // unknown field is refused.
      #expect(await statusCode {
        _ = try await identity.updateOrg(
          .with {
            $0.org = .with { $0.id = tree.countyA.id }
            $0.updateMask = .with { $0.paths = ["code"] }
          }, metadata: bearer(admin))
      } == .invalidArgument)
      #expect(await statusCode {
        _ = try await identity.updateOrg(
          .with {
            $0.org = .with {
              $0.id = tree.schoolA2.id
              $0.parentCode = "S-B1"
            }
            $0.updateMask = .with { $0.paths = ["parent_code"] }
          }, metadata: bearer(admin))
      } == .invalidArgument)
    }
  }

  @Test func deactivationNeedsNoActiveChildren() async throws {
    try await withTree { identity, admin, tree in
      #expect(await statusCode {
        _ = try await identity.deactivateOrg(.with { $0.id = tree.schoolA1.id }, metadata: bearer(admin))
      } == .failedPrecondition)
      let cls = try await identity.deactivateOrg(.with { $0.id = tree.classA1.id }, metadata: bearer(admin))
      #expect(!cls.active)
      let school = try await identity.deactivateOrg(
        .with { $0.id = tree.schoolA1.id }, metadata: bearer(admin))
      #expect(!school.active)
      let children = try await identity.listOrgs(
        .with { $0.parentCode = "K340121" }, metadata: bearer(admin))
      #expect(children.orgs.map(\.code) == ["S-A2"])
    }
  }

  @Test func listChildrenSubtreeKindAndPages() async throws {
    try await withTree { identity, admin, tree in
      let children = try await identity.listOrgs(
        .with { $0.parentCode = "C3401" }, metadata: bearer(admin))
      #expect(children.orgs.map(\.code) == ["K340121", "K340122"])
      let schools = try await identity.listOrgs(
        .with {
          $0.parentID = tree.province.id
          $0.subtree = true
          $0.kind = .school
        }, metadata: bearer(admin))
      #expect(schools.orgs.map(\.code) == ["S-A1", "S-A2", "S-B1"])
      var seen: [String] = []
      var token = ""
      repeat {
        let page = try await identity.listOrgs(
          .with {
            $0.parentID = tree.province.id
            $0.subtree = true
            $0.pageSize = 3
            $0.pageToken = token
          }, metadata: bearer(admin))
        #expect(page.orgs.count <= 3)
        seen += page.orgs.map(\.code)
        token = page.nextPageToken
      } while !token.isEmpty
      #expect(seen.count == 8)
      #expect(seen == seen.sorted())
      // A token is bound to its query.
      let first = try await identity.listOrgs(
        .with {
          $0.parentID = tree.province.id
          $0.subtree = true
          $0.pageSize = 2
        }, metadata: bearer(admin))
      #expect(await statusCode {
        _ = try await identity.listOrgs(
          .with {
            $0.parentID = tree.province.id
            $0.subtree = true
            $0.kind = .school
            $0.pageToken = first.nextPageToken
          }, metadata: bearer(admin))
      } == .invalidArgument)
      // Without a parent: the caller's roots.
      let roots = try await identity.listOrgs(.init(), metadata: bearer(admin))
      #expect(roots.orgs.map(\.code) == ["P34"])
    }
  }

  @Test func importIsIdempotentAndAcceptsParentsLater() async throws {
    try await withTree { identity, admin, _ in
      let rows: [Org] = [
        org("CL-N-1", "一年级1班", .`class`, parent: "S-N", grade: 1, year: "2020-2021"),
        org("S-N", "新建小学", .school, parent: "K-N", schoolKind: .rural),
        org("K-N", "新区", .county, parent: "C3401"),
        org("TP-1", "教学点", .school, parent: "K-N", schoolKind: .teachingPoint),
        org("bad code", "x", .county, parent: "C3401"),
        org("S-ORPHAN", "孤儿学校", .school, parent: "K-MISSING", schoolKind: .rural),
        org("S-WRONG", "错层学校", .school, parent: "C3401", schoolKind: .rural),
      ]
      var teachingPoint = rows[3]
      teachingPoint.managingSchoolCode = "S-N"
      let stream = rows.enumerated().map { $0.offset == 3 ? teachingPoint : $0.element }
      let summary = try await identity.importOrgs(
        metadata: bearer(admin),
        requestProducer: { writer in
          for o in stream { try await writer.write(.with { $0.org = o }) }
        })
      #expect(summary.received == 7)
      #expect(summary.accepted == 4)
      #expect(summary.created == 4)
      #expect(summary.errors.map(\.index) == [4, 5, 6])
      #expect(summary.errors.map(\.field) == ["org.code", "org.parent_code", "org.parent_code"])
      let tp = try await identity.getOrg(.with { $0.code = "TP-1" }, metadata: bearer(admin))
      #expect(tp.managingSchoolCode == "S-N")
      // Again: nothing new, the good rows count as updates.
      let again = try await identity.importOrgs(
        metadata: bearer(admin),
        requestProducer: { writer in
          for o in stream { try await writer.write(.with { $0.org = o }) }
        })
      #expect(again.created == 0)
      #expect(again.updated == 4)
      let all = try await identity.listOrgs(
        .with {
          $0.parentCode = "P34"
          $0.subtree = true
          $0.pageSize = 100
        }, metadata: bearer(admin))
      #expect(all.orgs.filter { $0.code == "S-N" }.count == 1)
    }
  }

  /// One stream mixing every kind of org row, as a county's yearly import does: a new county,
  /// its schools and their classes (each naming a parent planned rows before), a teaching
  /// point managed by a school of the same stream, an existing school moved into the new
  /// county mid-stream with a new class under it after the move, a class whose school comes
  /// later, a row refused. Every org ends under its parent's path, the moved school's old
  /// class moved with it, and each org's last feed event is the org as stored.
  @Test func aMixedOrgImportPlacesEveryOrgAndFeedsItAsStored() async throws {
    try await withTree { identity, admin, tree in
      var stream: [Org] = [
        org("K-X", "新区", .county, parent: "C3401"),
        org("CL-LATE", "一年级9班", .`class`, parent: "S-LATE", grade: 1, year: "2020-2021"),
      ]
      for s in 0..<4 {
        stream.append(org("S-X\(s)", "新区学校\(s)", .school, parent: "K-X", schoolKind: .rural))
        for c in 0..<3 {
          stream.append(
            org("CL-X\(s)-\(c)", "\(c + 1)年级", .`class`, parent: "S-X\(s)", grade: Int32(c + 1),
              year: "2020-2021"))
        }
      }
      // An existing school as it is, between new rows: counted, nothing written.
      var same = tree.schoolA2
      same.clearCreateTime()
      same.clearUpdateTime()
      (same.id, same.path, same.parentID) = ("", "", "")
      stream.insert(same, at: 6)
      var point = org("TP-X", "新区教学点", .school, parent: "K-X", schoolKind: .teachingPoint)
      point.managingSchoolCode = "S-X0"
      stream.append(point)
      var moved = tree.schoolA1
      moved.parentCode = "K-X"
      moved.clearCreateTime()
      moved.clearUpdateTime()
      moved.id = ""
      moved.path = ""
      moved.parentID = ""
      stream.append(moved)
      stream.append(
        org("CL-A1-NEW", "一年级2班", .`class`, parent: "S-A1", grade: 1, year: "2020-2021"))
      stream.append(org("S-WRONG", "错层学校", .school, parent: "C3401", schoolKind: .rural))
      stream.append(org("S-LATE", "后到学校", .school, parent: "K-X", schoolKind: .urban))
      let rows = stream
      let summary = try await identity.importOrgs(
        metadata: bearer(admin),
        requestProducer: { writer in
          for o in rows { try await writer.write(.with { $0.org = o }) }
        })
      #expect(summary.received == Int64(stream.count))
      #expect(summary.created == Int64(stream.count - 3))
      #expect(summary.updated == 2)
      #expect(summary.errors.map(\.key) == ["S-WRONG"])
      let all = try await identity.listOrgs(
        .with {
          $0.parentCode = "P34"
          $0.subtree = true
          $0.pageSize = 1000
        }, metadata: bearer(admin)
      ).orgs
      let byCode = Dictionary(uniqueKeysWithValues: all.map { ($0.code, $0) })
      for o in stream where o.code != "S-WRONG" {
        let stored = try #require(byCode[o.code], "\(o.code)")
        let parent = try #require(byCode[o.parentCode], "parent of \(o.code)")
        #expect(stored.parentID == parent.id, "\(o.code)")
        #expect(stored.path == parent.path + stored.id + "/", "\(o.code)")
      }
      let kx = try #require(byCode["K-X"])
      #expect(byCode["S-A1"]!.path.hasPrefix(kx.path))
      #expect(byCode["CL-A1-3-1"]!.path == byCode["S-A1"]!.path + tree.classA1.id + "/")
      #expect(byCode["CL-A1-NEW"]!.path.hasPrefix(byCode["S-A1"]!.path))
      #expect(byCode["TP-X"]!.managingSchoolCode == "S-X0")
      var last: [String: Org] = [:]
      var after: Int64 = 0
      while true {
        let page = try await identity.listChanges(
          .with {
            $0.afterSequence = after
            $0.pageSize = 1000
          }, metadata: bearer(admin))
        for c in page.changes where c.entity == "org" {
          last[c.naturalKey] = try Org(serializedBytes: c.payload.value)
        }
        after = max(after, page.lastSequence)
        if !page.moreAvailable { break }
      }
      for o in all { #expect(last[o.code] == o, "feed of \(o.code)") }
    }
  }
}
