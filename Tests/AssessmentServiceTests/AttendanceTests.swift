import AssessmentService
import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

/// A row that marks (ABSENT, EXEMPT) or clears (SAT) a student's attendance.
func markRow(
  _ exam: String, _ student: String, _ classCode: String, _ school: String,
  _ attendance: Smartschool_Assessment_V1_Attendance, reason: String = ""
) -> ScoreRow {
  var r = row(exam, student, classCode, school, 0, 0)
  r.attendance = attendance
  r.reasonNotTested = reason
  return r
}

/// Plain figures over a list of totals, written here apart from the service's statistics.
struct Plain {
  let totals: [Double]
  var count: Int { totals.count }
  var mean: Double { totals.isEmpty ? 0 : totals.reduce(0, +) / Double(totals.count) }
  var sd: Double {
    guard !totals.isEmpty else { return 0 }
    let m = mean
    return (totals.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(totals.count)).squareRoot()
  }
  /// Percent of totals meeting `test`, two decimals.
  func rate(_ test: (Double) -> Bool) -> Double {
    guard !totals.isEmpty else { return 0 }
    return (Double(totals.filter(test).count) / Double(totals.count) * 10_000).rounded() / 100
  }
  /// 1 + the number of totals strictly above `x`.
  func rank(_ x: Double) -> Int { 1 + totals.filter { $0 > x }.count }
}

@Suite(.serialized) struct AttendanceTests {
  /// Absent and exempt students are counted (应考/实考/缺考) and listed, in no figure, no
  /// item analysis and no rank; an incomplete student is told by the import and listed.
  @Test func absenteesAreCountedListedAndInNoFigure() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      // Sat: stu1 38, s3 45, s4 25, s5 50 (standard); s6 sat items 1-2 only (CL2).
      let sat: [(String, String, String, [Double])] = [
        standardResults[0], standardResults[2], standardResults[3], standardResults[4],
      ]
      var sent = rows(sat)
      sent.append(row("M-K1", "ext-s6", "CL2", "S2", 1, 7))
      sent.append(row("M-K1", "ext-s6", "CL2", "S2", 2, 3))
      sent.append(markRow("M-K1", "ext-stu2", "CL1a", "S1", .absent))
      sent.append(markRow("M-K1", "ext-s8", "CL2", "S2", .exempt, reason: "随班就读 免考"))
      let summary = try await w.importScores(sent)
      #expect(summary.received == 20 && summary.accepted == 20 && summary.rejected == 0)
      #expect(summary.created == 20 && summary.updated == 0)
      // One notice: ext-s6's last row (index 17), missing items 3 and 4; the rows stay.
      #expect(summary.errors.map(\.index) == [17])
      #expect(summary.errors.map(\.field) == ["item_number"])
      #expect(summary.errors[0].key == "M-K1/ext-s6")
      #expect(summary.errors[0].reason.contains("item(s) 3, 4"))

      let stats = try await w.assessment.getExamStatistics(
        .with { $0.examCode = "M-K1" }, metadata: w.auth("aK1"))
      // Independently: the five who sat (s6 counts its missing items as 0: 10).
      let satTotals: [String: Double] = [
        "ext-stu1": 38, "ext-s3": 45, "ext-s4": 25, "ext-s5": 50, "ext-s6": 10,
      ]
      let all = Plain(totals: Array(satTotals.values))
      #expect(stats.scope.count == 5 && stats.scope.satCount == 5)
      #expect(stats.scope.expectedCount == 6 && stats.scope.absentCount == 1)
      #expect(stats.scope.exemptCount == 1 && stats.scope.incompleteCount == 1)
      #expect(near(stats.scope.mean, all.mean) && near(stats.scope.standardDeviation, all.sd))
      #expect(stats.scope.passRate == all.rate { $0 >= 30 })
      #expect(stats.scope.excellentRate == all.rate { $0 >= 42.5 })
      #expect(stats.scope.lowRate == all.rate { $0 < 20 })
      #expect(stats.scope.min == 10 && stats.scope.max == 50)
      #expect(
        stats.notTested.map { "\($0.studentExternalID)/\($0.attendance)/\($0.reasonNotTested)" }
          == ["ext-stu2/absent/", "ext-s8/exempt/随班就读 免考"])
      #expect(stats.incomplete.map(\.studentExternalID) == ["ext-s6"])
      #expect(stats.incomplete[0].missingItems == [3, 4])
      // Children: S1 sat stu1 and s3 (stu2 absent); S2 sat s4, s5, s6 (s8 exempt).
      let s1 = Plain(totals: [38, 45])
      let s2 = Plain(totals: [25, 50, 10])
      #expect(stats.children.map(\.orgCode) == ["S1", "S2"])
      #expect(near(stats.children[0].mean, s1.mean) && near(stats.children[1].mean, s2.mean))
      #expect(stats.children.map(\.satCount) == [2, 3])
      #expect(stats.children.map(\.expectedCount) == [3, 3])
      #expect(stats.children.map(\.absentCount) == [1, 0])
      #expect(stats.children.map(\.exemptCount) == [0, 1])
      #expect(stats.children.map(\.incompleteCount) == [0, 1])
      #expect(stats.children.map(\.rank) == [1, 2])
      // Item analysis over those who sat: item 1's mean (10 + 9 + 5 + 10 + 7) / 5.
      let item1 = [10.0, 9, 5, 10, 7]
      #expect(near(stats.items[0].mean, item1.reduce(0, +) / 5))
      #expect(near(stats.items[0].difficulty, item1.reduce(0, +) / 5 / 10))
      let item4 = [5.0, 9, 5, 10, 0]
      #expect(near(stats.items[3].difficulty, item4.reduce(0, +) / 5 / 10))

      // Reports: the absent student has attendance and no figure; the others rank among
      // those who sat.
      func report(_ student: String) async throws -> Smartschool_Assessment_V1_StudentReport {
        try await w.assessment.getStudentReport(
          .with {
            $0.examCode = "M-K1"
            $0.studentExternalID = student
          }, metadata: w.auth("aK1"))
      }
      let absent = try await report("ext-stu2")
      #expect(absent.attendance == .absent && absent.total == 0 && absent.examRank == 0)
      #expect(absent.examSize == 5 && absent.classSize == 1 && absent.mastery.isEmpty)
      #expect(!absent.hasZScore && absent.percentileRank == 0)
      let exempt = try await report("ext-s8")
      #expect(exempt.attendance == .exempt && exempt.reasonNotTested == "随班就读 免考")
      let stu1 = try await report("ext-stu1")
      #expect(stu1.attendance == .sat && stu1.total == 38 && stu1.missingItems.isEmpty)
      #expect(stu1.examRank == Int32(all.rank(38)) && stu1.examSize == 5)
      #expect(stu1.classRank == 1 && stu1.classSize == 1)
      #expect(near(stu1.zScore.value, (38 - all.mean) / all.sd))
      let s6 = try await report("ext-s6")
      #expect(s6.total == 10 && s6.missingItems == [3, 4] && s6.examRank == 5)

      // Class diagnosis over those who sat; the absentee listed apart.
      let d = try await w.assessment.getClassDiagnosis(
        .with {
          $0.examCode = "M-K1"
          $0.classCode = "CL1a"
        }, metadata: w.auth("tS1"))
      #expect(d.count == 1 && d.mean == 38 && d.studentsBelowPass.isEmpty)
      #expect(d.notTested.map(\.studentExternalID) == ["ext-stu2"])

      // Export carries the marks as item 0.
      let exported = try await w.assessment.exportScores(
        .with { $0.examCode = "M-K1" }, metadata: w.auth("aK1")
      ) { response in
        var lines: [String] = []
        for try await r in response.messages where r.itemNumber == 0 {
          lines.append("\(r.studentExternalID)/\(r.attendance)/\(r.reasonNotTested)")
        }
        return lines
      }
      #expect(exported == ["ext-s8/exempt/随班就读 免考", "ext-stu2/absent/"])
    }
  }

  /// Hostile and conflicting rows are refused per row, with the stored data untouched; a
  /// clear (SAT) lets a marked student's scores in.
  @Test func conflictingAndMalformedMarksAreRefusedPerRow() async throws {
    try await withWorld { w in
      try await w.scoredExam()
      let first = try await w.importScores([
        markRow("M-K1", "ext-new", "CL1a", "S1", .absent),  // 0 ok
        markRow("M-K1", "ext-stu1", "CL1a", "S1", .absent),  // 1 has scores
        {
          var r = markRow("M-K1", "ext-x1", "CL1a", "S1", .absent)
          r.itemNumber = 2
          return r
        }(),  // 2 mark with an item
        {
          var r = markRow("M-K1", "ext-x2", "CL1a", "S1", .absent)
          r.score = 1
          return r
        }(),  // 3 mark with a score
        markRow("M-K1", "ext-x3", "CL1a", "S1", .exempt),  // 4 exempt without a reason
        markRow("M-K1", "ext-x4", "CL1a", "S1", .absent, reason: "ill"),  // 5 absent, reason
        markRow("M-K1", "ext-x5", "CL1a", "S1", .sat),  // 6 nothing to clear
        {
          var r = row("M-K1", "ext-x6", "CL1a", "S1", 1, 4)
          r.reasonNotTested = "no"
          return r
        }(),  // 7 a score with a reason
        markRow("M-K1", "ext-x7", "CL3", "S3", .absent),  // 8 class outside the exam's county
        markRow("M-K1", "ext-x8", "CL1a", "S1", .exempt, reason: "\u{7}"),  // 9 control char
      ])
      #expect(summary(first) == "10/1/9")
      #expect(first.errors.map(\.index) == [1, 2, 3, 4, 5, 6, 7, 8, 9])
      #expect(
        first.errors.map(\.field) == [
          "attendance", "item_number", "score", "reason_not_tested", "reason_not_tested",
          "attendance", "reason_not_tested", "class_code", "reason_not_tested",
        ])
      #expect(first.errors[0].reason.contains("has item scores"))
      // A score for the absent student is refused: the mark must be cleared first.
      let late = try await w.importScores([row("M-K1", "ext-new", "CL1a", "S1", 1, 4)])
      #expect(summary(late) == "1/0/1" && late.errors.map(\.field) == ["attendance"])
      #expect(late.errors[0].reason.contains("is marked absent"))
      // ext-stu1's scores stayed; ext-new is absent with no scores.
      let stored = try await w.exported("M-K1")
      #expect(stored.filter { $0.hasPrefix("ext-stu1/") }.count == 4)
      #expect(!stored.contains { $0.hasPrefix("ext-new/CL1a/1") })

      // In one batch, scores and an ABSENT mark for one student: the mark is refused.
      let mixed = try await w.importScores([
        row("M-K1", "ext-y1", "CL1b", "S1", 1, 2),
        markRow("M-K1", "ext-y1", "CL1b", "S1", .absent),
        row("M-K1", "ext-y1", "CL1b", "S1", 2, 2),
        row("M-K1", "ext-y1", "CL1b", "S1", 3, 2),
        row("M-K1", "ext-y1", "CL1b", "S1", 4, 2),
      ])
      #expect(summary(mixed) == "5/4/1" && mixed.errors.map(\.index) == [1])

      // A clear, then scores, in one batch: ext-new sat after all.
      let cleared = try await w.importScores(
        [markRow("M-K1", "ext-new", "CL1a", "S1", .sat)]
          + rows([("ext-new", "CL1a", "S1", [1, 2, 3, 4])]))
      #expect(summary(cleared) == "5/5/0" && cleared.errors.isEmpty)
      let stats = try await w.assessment.getExamStatistics(
        .with { $0.examCode = "M-K1" }, metadata: w.auth("aK1"))
      // The five standard students, ext-y1 (8) and ext-new (10) sat; nobody is absent.
      let plain = Plain(totals: [38, 20, 45, 25, 50, 8, 10])
      #expect(stats.scope.count == 7 && stats.scope.absentCount == 0)
      #expect(near(stats.scope.mean, plain.mean) && stats.notTested.isEmpty)
      // Marking absent again fails now that ext-new has scores; a re-sent clear is a no-op.
      let again = try await w.importScores([markRow("M-K1", "ext-new", "CL1a", "S1", .absent)])
      #expect(summary(again) == "1/0/1" && again.errors.map(\.field) == ["attendance"])
      let resent = try await w.importScores([markRow("M-K1", "ext-new", "CL1a", "S1", .sat)])
      #expect(summary(resent) == "1/1/0" && resent.updated == 1)
    }
  }

  /// An exam whose missing_items is ZERO counts a missing item as 0 without a word; exams
  /// answer their policy, REPORT by default.
  @Test func zeroPolicyTellsNothing() async throws {
    try await withWorld { w in
      var exam = standardExam(code: "M-Z")
      exam.missingItems = .zero
      let created = try await w.createStandardExam(exam)
      #expect(created.missingItems == .zero)
      #expect(try await w.createStandardExam().missingItems == .report)
      let summary = try await w.importScores([
        row("M-Z", "ext-stu1", "CL1a", "S1", 1, 7), row("M-K1", "ext-stu1", "CL1a", "S1", 1, 7),
      ])
      #expect(summary.rejected == 0 && summary.errors.map(\.key) == ["M-K1/ext-stu1"])
      let stats = try await w.assessment.getExamStatistics(
        .with { $0.examCode = "M-Z" }, metadata: w.auth("aK1"))
      #expect(stats.scope.count == 1 && stats.scope.mean == 7 && stats.scope.incompleteCount == 0)
      #expect(stats.incomplete.isEmpty)
      let fetched = try await w.assessment.getExam(
        .with { $0.code = "M-Z" }, metadata: w.auth("aK1"))
      #expect(fetched.missingItems == .zero)
    }
  }

  func summary(_ s: Smartschool_Common_V1_ImportSummary) -> String {
    "\(s.received)/\(s.accepted)/\(s.rejected)"
  }
}
