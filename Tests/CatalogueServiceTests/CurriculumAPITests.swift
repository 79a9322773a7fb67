import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

@Suite("Curriculum and case coverage through a real server")
struct CurriculumAPITests {
  @Test func importIsIdempotentAndReportsBadRows() async throws {
    try await withWorld { w in
      let rows = curriculumRows()
      let first = try await w.importCurriculum(rows)
      #expect(first.received == Int64(rows.count) && first.accepted == first.received)
      #expect(first.created == Int64(rows.count) && first.errors.isEmpty)
      let again = try await w.importCurriculum(rows)
      #expect(again.created == 0 && again.updated == Int64(rows.count) && again.errors.isEmpty)
      let feedAfterFirst = try await w.catalogue.listChanges(
        .with { $0.pageSize = 1000 }, metadata: w.auth("admin"))
      // Unchanged rows write no change events.
      #expect(feedAfterFirst.changes.count == rows.count)
      // Each node's event carries the node as stored (its edition, stage and grade filled in).
      var stored: [String: Smartschool_Catalogue_V1_CurriculumNode] = [:]
      let roots = try await w.catalogue.listCurriculum(.init(), metadata: w.auth("admin"))
      for edition in roots.nodes {
        stored[edition.code] = edition
        let below = try await w.catalogue.listCurriculum(
          .with {
            $0.editionCode = edition.code
            $0.pageSize = 1000
          }, metadata: w.auth("admin"))
        for n in below.nodes { stored[n.code] = n }
      }
      let fed = feedAfterFirst.changes.filter { $0.entity == "curriculum_node" }
      #expect(fed.count == stored.count && !fed.isEmpty)
      for c in fed {
        let node = try Smartschool_Catalogue_V1_CurriculumNode(unpackingAny: c.payload)
        #expect(node == stored[c.naturalKey], "\(c.naturalKey)")
      }

      func node(
        _ code: String, _ parent: String, _ kind: Smartschool_Catalogue_V1_CurriculumNodeKind,
        grade: Int32 = 0, stage: Smartschool_Common_V1_Stage = .unspecified
      ) -> Smartschool_Catalogue_V1_ImportCurriculumRequest {
        .with {
          $0.node = .with {
            $0.code = code
            $0.parentCode = parent
            $0.kind = kind
            $0.name = "名称 " + code
            $0.grade = grade
            $0.stage = stage
          }
        }
      }
      var renamed = rows[2]
      renamed.node.name = "第一章 有理数（修订）"
      let mixed: [Smartschool_Catalogue_V1_ImportCurriculumRequest] = [
        renamed,  // 0: update
        node("M7-4", "PEP-MATH-7A", .chapter),  // 1: new chapter
        node("M7-4-1", "M7-4", .section),  // 2: parent earlier in the stream
        node("X-1", "NO-PARENT", .chapter),  // 3: unknown parent
        node("X-2", "PEP-MATH-J", .chapter),  // 4: a chapter under an edition
        node("X-3", "PEP-MATH-J", .volume),  // 5: volume without grade
        node("X-4", "PEP-MATH-J", .volume, grade: 3),  // 6: grade outside the stage
        node("M7-4", "PEP-MATH-7A", .chapter),  // 7: duplicate in stream
        node("M7-2", "PEP-MATH-9A", .chapter),  // 8: moving a node
        node("M7-3", "M7-2", .section),  // 9: a chapter's code as a section
        node("bad code", "PEP-MATH-7A", .chapter),  // 10: bad code
        node("X-5", "PEP-MATH-7A", .chapter, stage: .senior),  // 11: stage disagrees
        .with {
          $0.knowledgePoint = .with {
            $0.code = "KP-X"
            $0.name = "x"
            $0.stage = .junior
            $0.subject = .mathematics
            $0.chapterCode = "NOPE"
          }
        },  // 12: unknown chapter
        .with {
          $0.knowledgePoint = .with {
            $0.code = "KP-Y"
            $0.name = "y"
            $0.stage = .primary
            $0.subject = .mathematics
            $0.chapterCode = "M7-3"
          }
        },  // 13: chapter of another stage
        .init(),  // 14: empty row
        .with {
          $0.knowledgePoint = .with {
            $0.code = "KP-NEW"
            $0.name = "整式"
            $0.stage = .junior
            $0.subject = .mathematics
            $0.chapterCode = "M7-2"
          }
        },  // 15: new point
      ]
      let summary = try await w.importCurriculum(mixed)
      #expect(summary.received == 16)
      #expect(summary.errors.map(\.index) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
      #expect(
        summary.errors.map(\.field) == [
          "node.parent_code", "node.parent_code", "node.grade", "node.grade", "node.code",
          "node.parent_code", "node.kind", "node.code", "node.stage",
          "knowledge_point.chapter_code", "knowledge_point.chapter_code", "row",
        ])
      #expect(summary.accepted == 4 && summary.created == 3 && summary.updated == 1)

      // Reading the tree.
      let editions = try await w.catalogue.listCurriculum(.init(), metadata: w.auth("sA1"))
      #expect(editions.nodes.map(\.code) == ["PEP-CHN-P", "PEP-MATH-J"])
      let chapters = try await w.catalogue.listCurriculum(
        .with { $0.parentCode = "PEP-MATH-7A" }, metadata: w.auth("tA1"))
      #expect(chapters.nodes.map(\.code) == ["M7-1", "M7-2", "M7-3", "M7-4"])
      #expect(chapters.nodes[0].name == "第一章 有理数（修订）")
      #expect(
        chapters.nodes.allSatisfy {
          $0.grade == 7 && $0.stage == .junior && $0.editionCode == "PEP-MATH-J"
        })
      let sections = try await w.catalogue.listCurriculum(
        .with {
          $0.editionCode = "PEP-MATH-J"
          $0.kind = .section
          $0.pageSize = 1
        }, metadata: w.auth("tA1"))
      #expect(sections.nodes.map(\.code) == ["M7-1-1"] && !sections.nextPageToken.isEmpty)
      let more = try await w.catalogue.listCurriculum(
        .with {
          $0.editionCode = "PEP-MATH-J"
          $0.kind = .section
          $0.pageSize = 1
          $0.pageToken = sections.nextPageToken
        }, metadata: w.auth("tA1"))
      #expect(more.nodes.map(\.code) == ["M7-4-1"])
      await expectCode(.notFound) {
        try await w.catalogue.listCurriculum(
          .with { $0.editionCode = "M7-1" }, metadata: w.auth("tA1"))
      }
      let points = try await w.catalogue.listKnowledgePoints(
        .with { $0.subject = .mathematics }, metadata: w.auth("tA1"))
      #expect(
        points.knowledgePoints.map(\.code)
          == ["KP-LINEAR", "KP-NEW", "KP-QUAD-EQ", "KP-QUAD-FN", "KP-RATIONAL"])
      let inChapter = try await w.catalogue.listKnowledgePoints(
        .with { $0.chapterCode = "M9-22" }, metadata: w.auth("tA1"))
      #expect(inChapter.knowledgePoints.map(\.name) == ["二次函数的图像与性质"])

      // Only province-level curriculum writers import.
      await expectCode(.permissionDenied) {
        try await w.catalogue.importCurriculum(
          metadata: w.auth("tA1"), requestProducer: { writer in try await writer.write(rows[0]) })
      }
      await expectCode(.permissionDenied) {
        try await w.catalogue.importCurriculum(
          metadata: w.auth("adminA"), requestProducer: { writer in try await writer.write(rows[0]) }
        )
      }
      let byExchange = try await w.catalogue.importCurriculum(
        metadata: w.auth("exchange"), requestProducer: { writer in try await writer.write(rows[0]) }
      )
      #expect(byExchange.accepted == 1)
    }
  }

  @Test func coverageOnASmallCurriculumWithKnownAnswers() async throws {
    try await withWorld { w in
      try await w.importCurriculum()
      // County A, shared county-wide: cases on a section of M7-1 and on M7-2 (twice).
      _ = try await w.published(
        "tA1", "有理数 教学案例", reviewer: "revA", type: .teachingCase, chapter: "M7-1-1",
        scope: .county)
      _ = try await w.published(
        "tA1", "整式 教学案例", reviewer: "revA", type: .teachingCase, chapter: "M7-2",
        scope: .county)
      _ = try await w.published(
        "tA2", "整式 教学案例二", reviewer: "revA", type: .teachingCase, chapter: "M7-2",
        scope: .school)
      // County B, shared within its school only: a case on M9-22.
      _ = try await w.published(
        "tB1", "二次函数 教学案例", reviewer: "revB", type: .teachingCase, chapter: "M9-22")
      // Not counted: a draft case, a published courseware, a deleted case.
      _ = try await w.create("tA1", "一元一次方程 草稿案例", type: .teachingCase, chapter: "M7-3")
      _ = try await w.published(
        "tA1", "一元二次方程 课件", reviewer: "revP", chapter: "M9-21", scope: .province)
      let deleted = try await w.published(
        "tA1", "删除的案例", reviewer: "revP", type: .teachingCase, chapter: "M9-21", scope: .province)
      _ = try await w.catalogue.deleteResource(
        .with { $0.id = deleted.id }, metadata: w.auth("tA1"))

      func report(
        _ org: String, as user: String = "admin",
        subject: Smartschool_Common_V1_Subject = .unspecified
      )
        async throws -> [String]
      {
        let r = try await w.catalogue.getCaseCoverage(
          .with {
            $0.orgCode = org
            $0.subject = subject
          }, metadata: w.auth(user))
        return r.rows.map {
          "\($0.subject.chineseName)\($0.grade):\($0.coveredChapters)/\($0.chapters)="
            + "\($0.coverageText)\($0.meetsTarget ? "✓" : "")"
        } + ["总计:\(r.total.coveredChapters)/\(r.total.chapters)=\(r.total.coverageText)"]
      }
      // County A sees its two county-shared cases (and S-A2's own case is owned within it).
      #expect(
        try await report("K340121", as: "adminA")
          == ["语文3:0/2=0.00", "数学7:2/3=66.67✓", "数学9:0/2=0.00", "总计:2/7=28.57"])
      // School S-A2 sees the county-shared cases and its own.
      #expect(
        try await report("S-A2", as: "tA2")
          == ["语文3:0/2=0.00", "数学7:2/3=66.67✓", "数学9:0/2=0.00", "总计:2/7=28.57"])
      // School S-B1 sees only its own case.
      #expect(
        try await report("S-B1", as: "tB1")
          == ["语文3:0/2=0.00", "数学7:0/3=0.00", "数学9:1/2=50.00", "总计:1/7=14.29"])
      // The city owns them all.
      #expect(
        try await report("C3401")
          == ["语文3:0/2=0.00", "数学7:2/3=66.67✓", "数学9:1/2=50.00", "总计:3/7=42.86"])
      #expect(
        try await report("C3401", subject: .mathematics)
          == ["数学7:2/3=66.67✓", "数学9:1/2=50.00", "总计:3/5=60.00"])
      await expectCode(.permissionDenied) {
        try await w.catalogue.getCaseCoverage(
          .with { $0.orgCode = "K340122" }, metadata: w.auth("tA1"))
      }
      await expectCode(.notFound) {
        try await w.catalogue.getCaseCoverage(
          .with { $0.orgCode = "NOPE" }, metadata: w.auth("admin"))
      }
      await expectCode(.notFound) {
        try await w.catalogue.getCaseCoverage(
          .with {
            $0.orgCode = "C3401"
            $0.editionCode = "NOPE"
          }, metadata: w.auth("admin"))
      }
    }
  }
}
