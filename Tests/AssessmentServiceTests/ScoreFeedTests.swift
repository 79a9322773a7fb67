import AssessmentService
import Foundation
import GRPCCore
import SmartSchoolModel
import SwiftProtobuf
import TestSupport
import Testing

/// A data-centre follower of the assessment feed: the score sheets it holds by natural key,
/// applied event by event from a cursor, and its rows in ExportScores' form and order.
private struct Follower {
  var sheets: [String: Smartschool_Assessment_V1_ScoreSheet] = [:]
  var cursor: Int64 = 0
  /// The score-sheet events of the last `follow`, as "op key".
  var applied: [String] = []

  mutating func follow(_ w: World) async throws {
    applied = []
    while true {
      let page = try await w.assessment.listChanges(
        .with {
          $0.afterSequence = cursor
          $0.pageSize = 1000
        }, metadata: w.auth("exchange"))
      for change in page.changes where change.entity == "score_sheet" {
        #expect(change.id == change.naturalKey)
        switch change.op {
        case .upsert:
          let sheet = try Smartschool_Assessment_V1_ScoreSheet(
            serializedBytes: change.payload.value)
          #expect(change.naturalKey == "\(sheet.examCode)/\(sheet.studentExternalID)")
          #expect(change.payload.typeURL.hasSuffix("smartschool.assessment.v1.ScoreSheet"))
          // Under the student's class: followers scoped below the exam see their own students.
          #expect(change.orgPath == w.directory.org(code: sheet.classCode)?.path)
          sheets[change.naturalKey] = sheet
          applied.append("upsert \(change.naturalKey)")
        case .delete:
          #expect(!change.hasPayload)
          sheets[change.naturalKey] = nil
          applied.append("delete \(change.naturalKey)")
        default:
          Issue.record("unexpected op \(change.op)")
        }
      }
      cursor = page.lastSequence
      if !page.moreAvailable { return }
    }
  }

  /// The rows of `exam` as ExportScores gives them: by student then item, a mark as item 0.
  func rows(_ exam: String) -> [ScoreRow] {
    sheets.values.filter { $0.examCode == exam }
      .sorted { $0.studentExternalID.utf8.lexicographicallyPrecedes($1.studentExternalID.utf8) }
      .flatMap { sheet -> [ScoreRow] in
        func base(_ item: Int32) -> ScoreRow {
          .with {
            $0.examCode = sheet.examCode
            $0.studentExternalID = sheet.studentExternalID
            $0.classCode = sheet.classCode
            $0.schoolCode = sheet.schoolCode
            $0.itemNumber = item
          }
        }
        if sheet.attendance == .absent || sheet.attendance == .exempt {
          var mark = base(0)
          mark.attendance = sheet.attendance
          mark.reasonNotTested = sheet.reasonNotTested
          return [mark]
        }
        return sheet.scores.map { s in
          var r = base(s.itemNumber)
          r.score = s.score
          r.chosenOption = s.chosenOption
          return r
        }
      }
  }
}

extension World {
  fileprivate func exportRows(_ exam: String) async throws -> [ScoreRow] {
    try await assessment.exportScores(.with { $0.examCode = exam }, metadata: auth("aK1")) {
      response in
      var rows: [ScoreRow] = []
      for try await r in response.messages { rows.append(r) }
      return rows
    }
  }
}

@Suite("Scores in the change feed (data centre)")
struct ScoreFeedTests {
  @Test("a follower rebuilds an exam's scores from the feed through imports, changes and deletes")
  func rebuild() async throws {
    try await withWorld { w in
      try await w.createStandardExam(optionExam())
      try await w.createStandardExam(optionExam(code: "M-K1B"))
      var follower = Follower()

      // First import: five students with scores and options, one absent, one exempt; a second
      // exam's students beside them.
      let first =
        optionRows() + [
          markRow("M-K1", "ext-s6", "CL2", "S2", .absent),
          markRow("M-K1", "ext-s7", "CL1b", "S1", .exempt, reason: "免考"),
        ] + rows(exam: "M-K1B", Array(standardResults.prefix(2)))
      var summary = try await w.importScores(first)
      #expect(summary.rejected == 0)
      try await follower.follow(w)
      // One event per student and paper, not per row.
      #expect(follower.applied.count == 9)
      #expect(follower.rows("M-K1") == (try await w.exportRows("M-K1")))
      #expect(follower.rows("M-K1B") == (try await w.exportRows("M-K1B")))
      #expect(follower.rows("M-K1").count == 22)

      // The same rows again (one stream each way): no event at all.
      summary = try await w.importScores(first)
      #expect(summary.rejected == 0)
      _ = try await w.assessment.importScoreBatches(
        metadata: w.auth("aK1"),
        requestProducer: { writer in try await writer.write(.with { $0.rows = first }) })
      try await follower.follow(w)
      #expect(follower.applied.isEmpty)

      // Changes: stu1's item 3 score, s4's option on item 2, s3 moved to class CL1a (a delete
      // at its old path, then the sheet at the new one), s5 sent unchanged.
      var changed = [
        row("M-K1", "ext-stu1", "CL1a", "S1", 3, 11),
        row("M-K1", "ext-s5", "CL2", "S2", 4, 10),
      ]
      var option = row("M-K1", "ext-s4", "CL2", "S2", 2, 5)
      option.chosenOption = "A"
      changed.append(option)
      changed += rows(exam: "M-K1", [("ext-s3", "CL1a", "S1", [9, 9, 18, 9])]).map { r in
        var r = r
        if r.itemNumber == 1 { r.chosenOption = "B" }
        if r.itemNumber == 2 { r.chosenOption = "A" }
        return r
      }
      summary = try await w.importScores(changed)
      #expect(summary.rejected == 0)
      try await follower.follow(w)
      // Events of different sheets come in either store's order; a sheet's own in order.
      #expect(
        follower.applied.sorted() == [
          "delete M-K1/ext-s3", "upsert M-K1/ext-s3", "upsert M-K1/ext-s4", "upsert M-K1/ext-stu1",
        ])
      #expect(
        follower.applied.firstIndex(of: "delete M-K1/ext-s3")!
          < follower.applied.firstIndex(of: "upsert M-K1/ext-s3")!)
      #expect(follower.rows("M-K1") == (try await w.exportRows("M-K1")))

      // Deletes: ext-s6's absence cleared with no score leaves nothing of it; ext-s7's
      // exemption cleared with its scores in the same import replaces the mark by the scores.
      summary = try await w.importScores(
        [
          markRow("M-K1", "ext-s6", "CL2", "S2", .sat),
          markRow("M-K1", "ext-s7", "CL1b", "S1", .sat),
        ] + rows(exam: "M-K1", [("ext-s7", "CL1b", "S1", [1, 2, 3, 4])]))
      #expect(summary.rejected == 0)
      try await follower.follow(w)
      #expect(follower.applied.sorted() == ["delete M-K1/ext-s6", "upsert M-K1/ext-s7"])
      let exported = try await w.exportRows("M-K1")
      #expect(follower.rows("M-K1") == exported)
      #expect(!exported.contains { $0.studentExternalID == "ext-s6" })

      // Rebuilt from cursor 0 by a new follower: the same rows.
      var fresh = Follower()
      try await fresh.follow(w)
      #expect(fresh.sheets["M-K1/ext-s6"] == nil)
      #expect(fresh.rows("M-K1") == exported)
      #expect(fresh.rows("M-K1B") == (try await w.exportRows("M-K1B")))
    }
  }
}
