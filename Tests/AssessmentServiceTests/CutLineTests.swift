import AssessmentService
import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

/// The county exam of CutLineTests: 40 students over CL1a, CL1b and CL2, totals of 50.
private let lineStudents: [(String, String, String, [Double])] = (0..<40).map { n in
  let classes = [("CL1a", "S1"), ("CL1b", "S1"), ("CL2", "S2")]
  let (classCode, school) = classes[n % 3]
  let k = Double((n * 7) % 23)
  return (
    String(format: "ext-c%02d", n), classCode, school,
    [min(10, k / 2), min(10, (k / 3).rounded(.down)), min(20, k), Double(n % 5)]
  )
}

/// Plain: the total of the ⌈share·N⌉-th best.
private func plainTopLine(_ share: Double, _ totals: [Double]) -> Double {
  let sorted = totals.sorted(by: >)
  var k = 1
  while Double(k) < share * Double(sorted.count) - 1e-9 { k += 1 }
  return sorted[k - 1]
}

@Suite(.serialized) struct CutLineTests {
  /// Lines by fixed score and by top share: the rates of the scope and of its children use the
  /// scope's lines, reported with the statistics; 临界生 per class below a line.
  @Test func scoreAndTopShareLinesAndBorderlineStudents() async throws {
    try await withWorld { w in
      var exam = standardExam()
      exam.cutLines = .with {
        $0.pass = .with { $0.score = 28 }
        $0.excellent = .with { $0.topShare = 0.2 }
        $0.low = .with { $0.score = 12.5 }
      }
      let created = try await w.createStandardExam(exam)
      #expect(created.cutLines.excellent.topShare == 0.2 && created.cutLines.pass.score == 28)
      let summary = try await w.importScores(rows(lineStudents))
      #expect(summary.rejected == 0 && summary.errors.isEmpty)
      let fetched = try await w.assessment.getExam(
        .with { $0.code = "M-K1" }, metadata: w.auth("aK1"))
      #expect(fetched.cutLines == exam.cutLines)

      let totals = lineStudents.map { $0.3.reduce(0, +) }
      func stats(_ scope: String) async throws -> Smartschool_Assessment_V1_ExamStatistics {
        try await w.assessment.getExamStatistics(
          .with {
            $0.examCode = "M-K1"
            $0.scopeOrgCode = scope
          }, metadata: w.auth("aK1"))
      }
      let county = try await stats("K1")
      let top = plainTopLine(0.2, totals)
      #expect(county.lines.excellent == top && county.lines.pass == 28)
      #expect(county.lines.good == 35 && county.lines.low == 12.5)  // good: 0.70 of 50
      let plain = Plain(totals: totals)
      #expect(county.scope.excellentRate == plain.rate { $0 >= top })
      #expect(county.scope.passRate == plain.rate { $0 >= 28 })
      #expect(county.scope.lowRate == plain.rate { $0 < 12.5 })
      #expect(county.scope.goodRate == plain.rate { $0 >= 35 })
      // Schools are measured against the county's line.
      for child in county.children {
        let mine = Plain(
          totals: lineStudents.indices.filter { lineStudents[$0].2 == child.orgCode }
            .map { totals[$0] })
        #expect(child.excellentRate == mine.rate { $0 >= top }, "\(child.orgCode)")
        #expect(child.passRate == mine.rate { $0 >= 28 }, "\(child.orgCode)")
      }
      // A school's own report draws the top share from its own students.
      let s2 = try await stats("S2")
      let s2Totals = lineStudents.indices.filter { lineStudents[$0].2 == "S2" }.map { totals[$0] }
      #expect(s2.lines.excellent == plainTopLine(0.2, s2Totals))

      // 临界生: up to 4 points below the pass line (28), per class, closest first.
      let border = try await w.assessment.listBorderlineStudents(
        .with {
          $0.examCode = "M-K1"
          $0.scopeOrgCode = "K1"
          $0.line = .pass
          $0.margin = 4
        }, metadata: w.auth("aK1"))
      #expect(border.line == 28)
      var expected: [String: [String]] = [:]
      for (i, s) in lineStudents.enumerated() where totals[i] < 28 && 28 - totals[i] <= 4 {
        expected[s.1, default: []].append(s.0)
      }
      #expect(border.classes.map(\.classCode) == expected.keys.sorted())
      for c in border.classes {
        let ids = expected[c.classCode]!.sorted { a, b in
          let (ta, tb) = (
            totals[lineStudents.firstIndex { $0.0 == a }!],
            totals[lineStudents.firstIndex { $0.0 == b }!]
          )
          return ta != tb ? ta > tb : a < b
        }
        #expect(c.students.map(\.studentExternalID) == ids)
        #expect(c.students.allSatisfy { $0.gap > 0 && $0.gap <= 4 && $0.gap == 28 - $0.total })
      }
      // Below the top-share excellent line, for one school: the line is the school's.
      let s1Border = try await w.assessment.listBorderlineStudents(
        .with {
          $0.examCode = "M-K1"
          $0.scopeOrgCode = "S1"
          $0.line = .excellent
          $0.margin = 50
        }, metadata: w.auth("tS1"))
      let s1Totals = lineStudents.indices.filter { lineStudents[$0].2 == "S1" }.map { totals[$0] }
      let s1Top = plainTopLine(0.2, s1Totals)
      #expect(s1Border.line == s1Top)
      #expect(
        s1Border.classes.flatMap(\.students).count == s1Totals.filter { $0 < s1Top }.count)

      // Hostile requests.
      func borderline(_ line: Smartschool_Assessment_V1_RateLine, _ margin: Double) async
        -> [String]
      {
        await fieldViolations {
          _ = try await w.assessment.listBorderlineStudents(
            .with {
              $0.examCode = "M-K1"
              $0.line = line
              $0.margin = margin
            }, metadata: w.auth("aK1"))
        }
      }
      #expect(await borderline(.unspecified, 3) == ["line"])
      #expect(await borderline(.pass, 0) == ["margin"])
      #expect(await borderline(.pass, -2) == ["margin"])
      #expect(await borderline(.pass, .nan) == ["margin"])
      #expect(await borderline(.pass, 51) == ["margin"])
      await expectCode(.permissionDenied) {
        try await w.assessment.listBorderlineStudents(
          .with {
            $0.examCode = "M-K1"
            $0.scopeOrgCode = "K1"
            $0.line = .pass
            $0.margin = 3
          }, metadata: w.auth("tS1"))
      }
    }
  }

  /// Cut lines are checked when the exam is made.
  @Test func badCutLinesAreRefused() async throws {
    try await withWorld { w in
      func violations(_ lines: Smartschool_Assessment_V1_CutLines) async -> [String] {
        var exam = standardExam(code: "M-BAD")
        exam.cutLines = lines
        return await fieldViolations { _ = try await w.createStandardExam(exam) }
      }
      #expect(await violations(.with { $0.pass = .with { $0.score = 51 } }) == [
        "exam.cut_lines.pass.score"
      ])
      #expect(await violations(.with { $0.excellent = .with { $0.topShare = 1 } }) == [
        "exam.cut_lines.excellent.top_share"
      ])
      #expect(await violations(.with { $0.low = .with { $0.topShare = 0.1 } }) == [
        "exam.cut_lines.low.top_share"
      ])
      #expect(await violations(.with { $0.good = Smartschool_Assessment_V1_CutLine() }) == [
        "exam.cut_lines.good"
      ])
      // A pass line of 44 lies above the excellent fraction's 42.5.
      #expect(
        Set(await violations(.with { $0.pass = .with { $0.score = 44 } })) == ["exam.cut_lines"])
      // With a top-share excellent line, the pass line is not compared with it.
      #expect(
        await violations(
          .with {
            $0.pass = .with { $0.score = 44 }
            $0.good = .with { $0.score = 45 }
            $0.excellent = .with { $0.topShare = 0.1 }
          }) == [])
    }
  }
}
