import AssessmentService
import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

/// The standard exam with options on its two objective items: item 1 A–D (key B), item 2 A–C
/// (key C); items 3 and 4 subjective.
func optionExam(code: String = "M-K1", org: String = "K1") -> Smartschool_Assessment_V1_Exam {
  var exam = standardExam(code: code, org: org)
  exam.items[0].options = ["A", "B", "C", "D"]
  exam.items[0].answerKey = "B"
  exam.items[1].objective = true
  exam.items[1].options = ["A", "B", "C"]
  exam.items[1].answerKey = "C"
  return exam
}

/// The options the standard students chose on items 1 and 2 ("": none recorded).
let standardChoices: [String: (String, String)] = [
  "ext-stu1": ("B", "C"), "ext-stu2": ("A", "C"), "ext-s3": ("B", "A"), "ext-s4": ("", "B"),
  "ext-s5": ("B", "C"),
]

/// The standard rows with the standard choices on items 1 and 2.
func optionRows(exam: String = "M-K1") -> [ScoreRow] {
  rows(exam: exam).map { r in
    var r = r
    if let chosen = standardChoices[r.studentExternalID] {
      if r.itemNumber == 1 { r.chosenOption = chosen.0 }
      if r.itemNumber == 2 { r.chosenOption = chosen.1 }
    }
    return r
  }
}

@Suite("Option analysis (选项分析)")
struct OptionAnalysisTests {
  @Test("items declare options and a key; bad declarations are field violations")
  func declarations() async throws {
    try await withWorld { w in
      let created = try await w.createStandardExam(optionExam())
      #expect(created.items[0].options == ["A", "B", "C", "D"] && created.items[0].answerKey == "B")
      let read = try await w.assessment.getExam(.with { $0.code = "M-K1" }, metadata: w.auth("aK1"))
      #expect(read.items[1].options == ["A", "B", "C"] && read.items[1].answerKey == "C")
      #expect(read.items[2].options.isEmpty)

      var subjective = optionExam(code: "M-BAD1")
      subjective.items[2].options = ["A", "B"]
      var keyless = optionExam(code: "M-BAD2")
      keyless.items[0].answerKey = "E"
      var twice = optionExam(code: "M-BAD3")
      twice.items[0].options = ["A", "A", "B"]
      var comma = optionExam(code: "M-BAD4")
      comma.items[0].options = ["A,B", "C"]
      var single = optionExam(code: "M-BAD5")
      single.items[0].options = ["A"]
      single.items[0].answerKey = "A"
      var keyOnly = optionExam(code: "M-BAD6")
      keyOnly.items[3].answerKey = "A"
      let cases: [(Smartschool_Assessment_V1_Exam, String)] = [
        (subjective, "exam.items[2].options"), (keyless, "exam.items[0].answer_key"),
        (twice, "exam.items[0].options[1]"), (comma, "exam.items[0].options[0]"),
        (single, "exam.items[0].options"), (keyOnly, "exam.items[3].answer_key"),
      ]
      for (exam, field) in cases {
        let fields = await fieldViolations {
          _ = try await w.assessment.createExam(.with { $0.exam = exam }, metadata: w.auth("aK1"))
        }
        #expect(fields.contains(field), "\(exam.code): \(fields)")
      }
    }
  }

  @Test("chosen options are imported, validated per row and exported")
  func importAndExport() async throws {
    try await withWorld { w in
      try await w.createStandardExam(optionExam())
      let summary = try await w.importScores(optionRows())
      #expect(summary.accepted == 20 && summary.rejected == 0)

      // Hostile rows: an undeclared option, an option on an item without options, an option on
      // a mark, a label that is no label. Each is refused and the stored choice stays.
      var undeclared = row("M-K1", "ext-stu1", "CL1a", "S1", 1, 3)
      undeclared.chosenOption = "E"
      var noOptions = row("M-K1", "ext-stu1", "CL1a", "S1", 3, 3)
      noOptions.chosenOption = "A"
      var onMark = markRow("M-K1", "ext-s9", "CL2", "S2", .absent)
      onMark.chosenOption = "A"
      var junk = row("M-K1", "ext-stu1", "CL1a", "S1", 2, 3)
      junk.chosenOption = "B'; --"
      let refused = try await w.importScores([undeclared, noOptions, onMark, junk])
      #expect(refused.accepted == 0 && refused.rejected == 4)
      #expect(refused.errors.map(\.field) == Array(repeating: "chosen_option", count: 4))

      let exported = try await w.assessment.exportScores(
        .with { $0.examCode = "M-K1" }, metadata: w.auth("aK1")
      ) { response in
        var chosen: [String: String] = [:]
        for try await r in response.messages where !r.chosenOption.isEmpty {
          chosen["\(r.studentExternalID)/\(r.itemNumber)"] = r.chosenOption
        }
        return chosen
      }
      var expected: [String: String] = [:]
      for (student, (one, two)) in standardChoices {
        if !one.isEmpty { expected["\(student)/1"] = one }
        if !two.isEmpty { expected["\(student)/2"] = two }
      }
      #expect(exported == expected)
      // The stored scores are those first imported (stu1's item 1 is still 10).
      #expect(try await w.exported("M-K1").contains("ext-stu1/CL1a/1=10.0"))
    }
  }

  @Test("shares per option, overall and in the upper and lower 27% groups, by scope")
  func analysis() async throws {
    try await withWorld { w in
      try await w.createStandardExam(optionExam())
      // An absent student is in no share.
      _ = try await w.importScores(optionRows() + [markRow("M-K1", "ext-s9", "CL2", "S2", .absent)])
      let all = try await w.assessment.getOptionAnalysis(
        .with { $0.examCode = "M-K1" }, metadata: w.auth("aK1"))
      // Five sat: each 27% group is round(1.35) = 1 student; totals 38, 20, 45, 25, 50, so the
      // upper group is ext-s5 (50) and the lower ext-stu2 (20).
      #expect(all.count == 5 && all.groupSize == 1)
      #expect(all.items.map(\.number) == [1, 2])
      func row(_ s: Smartschool_Assessment_V1_OptionShare) -> String {
        "\(s.option)\(s.correct ? "*" : "") \(s.count) \(s.share) \(s.upperShare) \(s.lowerShare)"
      }
      #expect(
        all.items[0].options.map(row) == [
          "A 1 20.0 0.0 100.0", "B* 3 60.0 100.0 0.0", "C 0 0.0 0.0 0.0", "D 0 0.0 0.0 0.0",
        ])
      #expect(row(all.items[0].unrecorded) == " 1 20.0 0.0 0.0")
      #expect(all.items[0].answerKey == "B")
      #expect(
        all.items[1].options.map(row) == [
          "A 1 20.0 0.0 0.0", "B 1 20.0 0.0 0.0", "C* 3 60.0 100.0 100.0",
        ])

      // School S1: ext-stu1 (38), ext-stu2 (20), ext-s3 (45): groups of round(0.81) → 1.
      let s1 = try await w.assessment.getOptionAnalysis(
        .with {
          $0.examCode = "M-K1"
          $0.scopeOrgCode = "S1"
        }, metadata: w.auth("aS1"))
      #expect(s1.count == 3 && s1.groupSize == 1)
      #expect(
        s1.items[0].options.map(row) == [
          "A 1 33.33 0.0 100.0", "B* 2 66.67 100.0 0.0", "C 0 0.0 0.0 0.0", "D 0 0.0 0.0 0.0",
        ])
      #expect(
        s1.items[1].options.map(row) == [
          "A 1 33.33 100.0 0.0", "B 0 0.0 0.0 0.0", "C* 2 66.67 0.0 100.0",
        ])

      // An exam without scores, and one whose items declare no options.
      try await w.createStandardExam(optionExam(code: "M-EMPTY"))
      let empty = try await w.assessment.getOptionAnalysis(
        .with { $0.examCode = "M-EMPTY" }, metadata: w.auth("aK1"))
      #expect(empty.count == 0 && empty.groupSize == 0 && empty.items.count == 2)
      #expect(empty.items.allSatisfy { $0.options.allSatisfy { $0.count == 0 && $0.share == 0 } })
      try await w.createStandardExam(standardExam(code: "M-PLAIN"))
      _ = try await w.importScores(rows(exam: "M-PLAIN"))
      let plain = try await w.assessment.getOptionAnalysis(
        .with { $0.examCode = "M-PLAIN" }, metadata: w.auth("aK1"))
      #expect(plain.count == 5 && plain.groupSize == 1 && plain.items.isEmpty)

      await expectCode(.permissionDenied) {
        try await w.assessment.getOptionAnalysis(
          .with {
            $0.examCode = "M-K1"
            $0.scopeOrgCode = "K1"
          }, metadata: w.auth("aS1"))
      }
      await expectCode(.invalidArgument) {
        try await w.assessment.getOptionAnalysis(
          .with {
            $0.examCode = "M-K1"
            $0.scopeOrgCode = "S3"
          }, metadata: w.auth("aK1"))
      }
      await expectCode(.notFound) {
        try await w.assessment.getOptionAnalysis(
          .with { $0.examCode = "M-NONE" }, metadata: w.auth("aK1"))
      }
      await expectCode(.unauthenticated) {
        try await w.assessment.getOptionAnalysis(.with { $0.examCode = "M-K1" })
      }
    }
  }
}
