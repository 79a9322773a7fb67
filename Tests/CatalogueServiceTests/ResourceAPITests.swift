import Foundation
import GRPCCore
import SmartSchoolModel
import SwiftProtobuf
import TestSupport
import Testing

@Suite("Resources through a real server")
struct ResourceAPITests {
  @Test func createGetUpdateAndSoftDelete() async throws {
    try await withWorld { w in
      try await w.importCurriculum()
      let created = try await w.create(
        "tA1", "  有理数的概念  ", type: .microLesson, chapter: "M7-1-1",
        keywords: ["有理数", "有理数", "负数"], points: ["KP-RATIONAL"], externalID: "EXT-1")
      // Stage, grade, subject and edition come from the section; defaults are applied.
      #expect(created.title == "有理数的概念")
      #expect(created.stage == .junior && created.grade == 7 && created.subject == .mathematics)
      #expect(created.editionCode == "PEP-MATH-J" && created.chapterCode == "M7-1-1")
      #expect(created.keywords == ["有理数", "负数"])
      #expect(created.status == .draft && created.sharingScope == .school)
      #expect(created.licence == "all-rights-reserved")
      #expect(created.authorID == w.userIDs["tA1"] && created.authorName == "tA1")
      #expect(created.ownerOrgCode == "S-A1" && created.ownerOrgPath.hasSuffix("/"))
      #expect(created.hasCreateTime && !created.hasContent)

      let got = try await w.catalogue.getResource(
        .with { $0.id = created.id }, metadata: w.auth("tA1"))
      #expect(got == created)
      let byKey = try await w.catalogue.getResource(
        .with { $0.externalID = "EXT-1" }, metadata: w.auth("tA1"))
      #expect(byKey.id == created.id)

      // Update with a mask changes only the named fields.
      let updated = try await w.catalogue.updateResource(
        .with {
          $0.resource = .with {
            $0.id = created.id
            $0.title = "有理数（第一课时）"
            $0.description_p = "not in the mask"
            $0.sharingScope = .county
          }
          $0.updateMask = .init(protoPaths: ["title", "sharing_scope"])
        }, metadata: w.auth("tA1"))
      #expect(updated.title == "有理数（第一课时）" && updated.description_p.isEmpty)
      #expect(updated.sharingScope == .county && updated.chapterCode == "M7-1-1")
      // A new chapter brings its own grade.
      let moved = try await w.catalogue.updateResource(
        .with {
          $0.resource = .with {
            $0.id = created.id
            $0.chapterCode = "M9-22"
          }
          $0.updateMask = .init(protoPaths: ["chapter_code"])
        }, metadata: w.auth("tA1"))
      #expect(moved.grade == 9 && moved.chapterCode == "M9-22")
      await expectCode(.invalidArgument) {
        try await w.catalogue.updateResource(
          .with {
            $0.resource = .with { $0.id = created.id }
            $0.updateMask = .init(protoPaths: ["status"])
          }, metadata: w.auth("tA1"))
      }
      // Another teacher of the same school cannot see the draft, let alone edit it.
      await expectCode(.notFound) {
        try await w.catalogue.updateResource(
          .with {
            $0.resource = .with {
              $0.id = created.id
              $0.title = "x"
            }
            $0.updateMask = .init(protoPaths: ["title"])
          }, metadata: w.auth("tA1b"))
      }

      // Soft delete: gone from reads and lists; the feed carries a delete with the key.
      _ = try await w.catalogue.deleteResource(
        .with { $0.id = created.id }, metadata: w.auth("tA1"))
      await expectCode(.notFound) {
        try await w.catalogue.getResource(.with { $0.id = created.id }, metadata: w.auth("tA1"))
      }
      #expect(try await w.listIDs("tA1").isEmpty)
      #expect(try await w.searchTitles("tA1", "有理数").isEmpty)
      let feed = try await w.catalogue.listChanges(
        .with { $0.pageSize = 1000 }, metadata: w.auth("exchange"))
      let events = feed.changes.filter { $0.entity == "resource" }
      #expect(events.map(\.op) == [.upsert, .upsert, .upsert, .delete])
      #expect(events.last?.naturalKey == "EXT-1" && events.last?.id == created.id)
      let payload = try Smartschool_Catalogue_V1_Resource(unpackingAny: events[1].payload)
      #expect(payload.title == "有理数（第一课时）")
      await expectCode(.notFound) {
        try await w.catalogue.deleteResource(.with { $0.id = created.id }, metadata: w.auth("tA1"))
      }
    }
  }

  @Test func badInputGetsFieldViolationsAndClearStatuses() async throws {
    try await withWorld { w in
      try await w.importCurriculum()
      let fields = await fieldViolations {
        _ = try await w.catalogue.createResource(
          .with {
            $0.resource = .with {
              $0.title = " "
              $0.keywords = [String(repeating: "长", count: 40)]
              $0.grade = 13
              $0.externalID = "bad id!"
            }
          }, metadata: w.auth("tA1"))
      }
      #expect(
        Set(fields).isSuperset(of: [
          "resource.title", "resource.type", "resource.stage", "resource.subject",
          "resource.grade", "resource.keywords[0]", "resource.external_id",
        ]))
      // Unknown chapter and knowledge point; a grade that contradicts the chapter.
      #expect(
        await fieldViolations {
          _ = try await w.create("tA1", "x", chapter: "NO-SUCH")
        } == ["resource.chapter_code"])
      #expect(
        await fieldViolations {
          _ = try await w.create("tA1", "x", chapter: "PEP-MATH-7A")
        } == ["resource.chapter_code"])
      #expect(
        await fieldViolations {
          _ = try await w.create("tA1", "x", points: ["KP-RATIONAL", "KP-NOPE"])
        } == ["resource.knowledge_point_codes[1]"])
      #expect(
        await fieldViolations {
          _ = try await w.catalogue.createResource(
            .with {
              $0.resource = .with {
                $0.title = "x"
                $0.type = .courseware
                $0.chapterCode = "M7-2"
                $0.grade = 8
              }
            }, metadata: w.auth("tA1"))
        } == ["resource.grade"])
      // Owners: out of scope, unknown, a class.
      await expectCode(.permissionDenied) { try await w.create("tA1", "x", owner: "S-B1") }
      await expectCode(.notFound) { try await w.create("tA1", "x", owner: "S-NOPE") }
      await expectCode(.invalidArgument) { try await w.create("tA1", "x", owner: "CL-A1") }
      // Students and reviewers may not create.
      await expectCode(.permissionDenied) { try await w.create("sA1", "x", owner: "S-A1") }
      await expectCode(.invalidArgument) { try await w.create("revA", "x") }
      // A taken external id.
      _ = try await w.create("tA1", "x", externalID: "K-1")
      await expectCode(.alreadyExists) { try await w.create("tA2", "y", externalID: "K-1") }
      // No token at all.
      await expectCode(.unauthenticated) {
        try await w.catalogue.getResource(.with { $0.id = "x" })
      }
      await expectCode(.invalidArgument) {
        try await w.catalogue.getResource(.init(), metadata: w.auth("tA1"))
      }
    }
  }

  @Test func aSchoolsDraftIsInvisibleToAnotherSchool() async throws {
    try await withWorld { w in
      let draft = try await w.create("tA1", "七年级数学 草稿", scope: .province)
      for user in ["tA2", "tB1", "revA", "adminA", "sA1", "tA1b"] {
        await expectCode(.notFound) {
          try await w.catalogue.getResource(.with { $0.id = draft.id }, metadata: w.auth(user))
        }
        #expect(try await w.listIDs(user).isEmpty, "\(user)")
        #expect(try await w.searchTitles(user, "草稿").isEmpty, "\(user)")
      }
      #expect(try await w.listIDs("tA1") == [draft.id])
      #expect(try await w.searchTitles("tA1", "草稿") == ["七年级数学 草稿"])
      // Submitted: the county's reviewers see it, the next county's do not.
      try await w.submit(draft.id, by: "tA1")
      #expect(try await w.listIDs("revA") == [draft.id])
      #expect(try await w.listIDs("revB").isEmpty)
      #expect(try await w.listIDs("tA2").isEmpty)
    }
  }

  @Test func sharingScopeDecidesWhoSeesAPublishedResource() async throws {
    try await withWorld { w in
      let school = try await w.published("tA1", "本校共享", reviewer: "revA", scope: .school)
      let county = try await w.published("tA1", "本县共享", reviewer: "revA", scope: .county)
      let city = try await w.published("tA1", "本市共享", reviewer: "revP", scope: .city)
      func titles(_ user: String) async throws -> Set<String> {
        let ids = try await w.listIDs(user)
        return Set([school, county, city].filter { ids.contains($0.id) }.map(\.title))
      }
      // Same school (teacher, and a student of a class of the school).
      #expect(try await titles("tA1b") == ["本校共享", "本县共享", "本市共享"])
      #expect(try await titles("sA1") == ["本校共享", "本县共享", "本市共享"])
      // Same county, other school: county and city.
      #expect(try await titles("tA2") == ["本县共享", "本市共享"])
      // The next county: city only.
      #expect(try await titles("tB1") == ["本市共享"])
      // The county official oversees what the county's schools own.
      #expect(try await titles("adminA") == ["本校共享", "本县共享", "本市共享"])
      await expectCode(.notFound) {
        try await w.catalogue.getResource(.with { $0.id = county.id }, metadata: w.auth("tB1"))
      }
      let seen = try await w.catalogue.getResource(
        .with { $0.id = county.id }, metadata: w.auth("tA2"))
      #expect(seen.status == .published && seen.hasPublishTime)
      // Widening the scope needs a new review round: unpublish, edit, resubmit.
      await expectCode(.failedPrecondition) {
        try await w.catalogue.updateResource(
          .with {
            $0.resource = .with {
              $0.id = county.id
              $0.sharingScope = .province
            }
            $0.updateMask = .init(protoPaths: ["sharing_scope"])
          }, metadata: w.auth("tA1"))
      }
      try await w.transition(county.id, .unpublish, by: "tA1")
      _ = try await w.catalogue.updateResource(
        .with {
          $0.resource = .with {
            $0.id = county.id
            $0.sharingScope = .province
          }
          $0.updateMask = .init(protoPaths: ["sharing_scope"])
        }, metadata: w.auth("tA1"))
      #expect(try await titles("tB1") == ["本市共享"])
      // Widened to the province, it goes through review again, now the province's.
      try await w.submit(county.id, by: "tA1")
      await expectCode(.permissionDenied) {
        try await w.transition(county.id, .approve, by: "revA")
      }
      #expect(try await titles("tB1") == ["本市共享"])
      try await w.transition(county.id, .approve, by: "revP")
      #expect(try await titles("tB1") == ["本县共享", "本市共享"])
    }
  }

  @Test func listFiltersAndStablePageTokens() async throws {
    try await withWorld { w in
      try await w.importCurriculum()
      let a = try await w.create(
        "tA1", "A", type: .microLesson, chapter: "M7-1", points: ["KP-RATIONAL"])
      let b = try await w.create("tA1", "B", type: .exerciseSet, chapter: "M7-1-1")
      let c = try await w.create(
        "tA1", "C", type: .exerciseSet, chapter: "M9-22", points: ["KP-QUAD-FN"])
      let d = try await w.create("tA1", "D", type: .lessonPlan, chapter: "C3-1")
      let e = try await w.create(
        "tA1", "E", type: .courseware, stage: .senior, grade: 10, subject: .physics)
      try await w.submit(e.id, by: "tA1")
      func ids(_ f: Smartschool_Catalogue_V1_ResourceFilter) async throws -> Set<String> {
        Set(try await w.listIDs("tA1", f))
      }
      #expect(try await ids(.with { $0.stage = .junior }) == [a.id, b.id, c.id])
      #expect(try await ids(.with { $0.grade = 7 }) == [a.id, b.id])
      #expect(try await ids(.with { $0.subject = .chinese }) == [d.id])
      #expect(try await ids(.with { $0.type = .exerciseSet }) == [b.id, c.id])
      #expect(try await ids(.with { $0.editionCode = "PEP-MATH-J" }) == [a.id, b.id, c.id])
      // A chapter covers its sections; a section only itself.
      #expect(try await ids(.with { $0.chapterCode = "M7-1" }) == [a.id, b.id])
      #expect(try await ids(.with { $0.chapterCode = "M7-1-1" }) == [b.id])
      #expect(try await ids(.with { $0.knowledgePointCode = "KP-QUAD-FN" }) == [c.id])
      #expect(try await ids(.with { $0.status = .submitted }) == [e.id])
      #expect(try await ids(.with { $0.ownerOrgCode = "K340121" }).count == 5)
      #expect(try await ids(.with { $0.ownerOrgCode = "K340122" }).isEmpty)
      #expect(try await ids(.with { $0.authorID = w.userIDs["tA1"]! }).count == 5)
      #expect(
        try await ids(
          .with {
            $0.grade = 7
            $0.type = .microLesson
          }) == [a.id])
      await expectCode(.invalidArgument) {
        try await w.catalogue.listResources(
          .with { $0.filter = .with { $0.chapterCode = "PEP-MATH-7A" } }, metadata: w.auth("tA1"))
      }
      await expectCode(.invalidArgument) {
        try await w.catalogue.listResources(.with { $0.pageSize = 1001 }, metadata: w.auth("tA1"))
      }

      // Pages of two: newest first, no duplicates, stable while resources are added.
      let first = try await w.catalogue.listResources(
        .with { $0.pageSize = 2 }, metadata: w.auth("tA1"))
      #expect(first.resources.map(\.title) == ["E", "D"])
      let f = try await w.create("tA1", "F")
      let second = try await w.catalogue.listResources(
        .with {
          $0.pageSize = 2
          $0.pageToken = first.nextPageToken
        }, metadata: w.auth("tA1"))
      #expect(second.resources.map(\.title) == ["C", "B"])
      let third = try await w.catalogue.listResources(
        .with {
          $0.pageSize = 2
          $0.pageToken = second.nextPageToken
        }, metadata: w.auth("tA1"))
      #expect(third.resources.map(\.title) == ["A"] && third.nextPageToken.isEmpty)
      #expect(try await w.listIDs("tA1", pageSize: 1).first == f.id)
      // A token is bound to its filters.
      await expectCode(.invalidArgument) {
        try await w.catalogue.listResources(
          .with {
            $0.pageSize = 2
            $0.pageToken = first.nextPageToken
            $0.filter = .with { $0.grade = 7 }
          }, metadata: w.auth("tA1"))
      }
      await expectCode(.invalidArgument) {
        try await w.catalogue.listResources(
          .with { $0.pageToken = "garbage" }, metadata: w.auth("tA1"))
      }
    }
  }
}
