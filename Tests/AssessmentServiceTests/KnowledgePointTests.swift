import AssessmentService
import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

/// 知识点得分率 of a set of standard students, computed here by hand from the table: per
/// point, (earned, possible, percent of the students whose own rate is below 0.60).
func plainRates(_ students: [(String, String, String, [Double])])
  -> [String: (earned: Double, possible: Double, below: Double)]
{
  // The standard items: 1 (10, A), 2 (10, A and B), 3 (20, B), 4 (10, C).
  let points: [String: [(item: Int, max: Double)]] = [
    "KP-A": [(0, 10), (1, 10)], "KP-B": [(1, 10), (2, 20)], "KP-C": [(3, 10)],
  ]
  var out: [String: (earned: Double, possible: Double, below: Double)] = [:]
  for (code, items) in points {
    var earned = 0.0
    var possible = 0.0
    var below = 0
    for (_, _, _, scores) in students {
      let mine = items.reduce(0.0) { $0 + scores[$1.item] }
      let most = items.reduce(0.0) { $0 + $1.max }
      earned += mine
      possible += most
      if mine / most < 0.60 { below += 1 }
    }
    out[code] = (earned, possible, Double(below) / Double(students.count) * 100)
  }
  return out
}

func round4(_ x: Double) -> Double { (x * 10_000).rounded() / 10_000 }
private func round2(_ x: Double) -> Double { (x * 100).rounded() / 100 }

@Suite("Knowledge points above the class (知识点得分率)")
struct KnowledgePointTests {
  /// Checks a group of the report against the hand computation over `students`.
  private func check(
    _ group: Smartschool_Assessment_V1_KnowledgePointGroup,
    _ students: [(String, String, String, [Double])],
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    let plain = plainRates(students)
    #expect(group.count == Int64(students.count), sourceLocation: sourceLocation)
    #expect(group.points.map(\.code) == ["KP-A", "KP-B", "KP-C"], sourceLocation: sourceLocation)
    for p in group.points {
      let e = plain[p.code]!
      #expect(
        near(p.earned, e.earned) && near(p.possible, e.possible)
          && near(p.scoreRate, round4(e.earned / e.possible))
          && near(p.shareBelowPass, round2(e.below)),
        "\(group.orgCode) \(p.code): \(p) against \(e)", sourceLocation: sourceLocation)
    }
  }

  @Test("a county and its schools, every class of a county, absentees in no rate")
  func report() async throws {
    try await withWorld { w in
      try await w.scoredExam()
      _ = try await w.importScores([markRow("M-K1", "ext-s9", "CL2", "S2", .absent)])
      let county = try await w.assessment.getKnowledgePointReport(
        .with {
          $0.examCode = "M-K1"
          $0.scopeOrgCode = "K1"
        }, metadata: w.auth("aK1"))
      #expect(county.examCode == "M-K1" && county.scope.orgCode == "K1")
      check(county.scope, standardResults)
      #expect(county.children.map(\.orgCode) == ["S1", "S2"])
      check(county.children[0], standardResults.filter { $0.2 == "S1" })
      check(county.children[1], standardResults.filter { $0.2 == "S2" })
      // Hand-worked anchors: KP-A 76/100, KP-C 31/50 with three students below 0.60.
      #expect(near(county.scope.points[0].scoreRate, 0.76))
      #expect(near(county.scope.points[2].scoreRate, 0.62))
      #expect(near(county.scope.points[2].shareBelowPass, 60))

      let classes = try await w.assessment.getKnowledgePointReport(
        .with {
          $0.examCode = "M-K1"
          $0.childrenKind = .class
        }, metadata: w.auth("aK1"))
      #expect(classes.scope.orgCode.isEmpty)
      check(classes.scope, standardResults)
      #expect(classes.children.map(\.orgCode).sorted() == ["CL1a", "CL1b", "CL2"])
      for child in classes.children {
        check(child, standardResults.filter { $0.1 == child.orgCode })
      }
    }
  }

  @Test("a school's own exam gives the class diagnosis no county rate")
  func schoolExam() async throws {
    try await withWorld { w in
      let school = plainRates(standardResults.filter { $0.2 == "S1" })
      // A school's own exam has no county above the class within it.
      try await w.createStandardExam(standardExam(code: "M-S1", org: "S1"))
      _ = try await w.importScores(rows(exam: "M-S1", standardResults.filter { $0.2 == "S1" }))
      let own = try await w.assessment.getClassDiagnosis(
        .with {
          $0.examCode = "M-S1"
          $0.classCode = "CL1a"
        }, metadata: w.auth("tS1"))
      #expect(!own.knowledgePoints.isEmpty)
      #expect(own.knowledgePoints.allSatisfy { !$0.hasCountyMastery })
      for p in own.knowledgePoints {
        let s = school[p.code]!
        #expect(near(p.schoolMastery, round4(s.earned / s.possible)))
        #expect(near(p.examMastery, round4(s.earned / s.possible)))
      }
    }
  }

  @Test("bad scopes, kinds and callers are refused")
  func refusals() async throws {
    try await withWorld { w in
      try await w.scoredExam()
      func ask(_ scope: String, _ kind: Smartschool_Common_V1_OrgKind = .unspecified) -> (
        Smartschool_Assessment_V1_GetKnowledgePointReportRequest
      ) {
        .with {
          $0.examCode = "M-K1"
          $0.scopeOrgCode = scope
          $0.childrenKind = kind
        }
      }
      await expectCode(.invalidArgument) {
        try await w.assessment.getKnowledgePointReport(ask("K1", .county), metadata: w.auth("aK1"))
      }
      await expectCode(.invalidArgument) {
        try await w.assessment.getKnowledgePointReport(ask("S3"), metadata: w.auth("aK1"))
      }
      await expectCode(.permissionDenied) {
        try await w.assessment.getKnowledgePointReport(ask("K1"), metadata: w.auth("tS1"))
      }
      await expectCode(.notFound) {
        try await w.assessment.getKnowledgePointReport(
          .with { $0.examCode = "M-NONE" }, metadata: w.auth("aK1"))
      }
      await expectCode(.unauthenticated) {
        try await w.assessment.getKnowledgePointReport(ask("K1"))
      }
    }
  }
}
