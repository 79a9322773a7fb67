import AssessmentService
import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

/// Two county exams of one cohort: 36 students over CL1a, CL1b and CL2 sit the earlier one
/// (M-K1); the later one (M2-K1) has 34 of them (ext-g00 absent, ext-g01 gone) and a newcomer.
private struct Cohort {
  static let classes = [("CL1a", "S1"), ("CL1b", "S1"), ("CL2", "S2")]
  static let size = 36
  static func id(_ n: Int) -> String { String(format: "ext-g%02d", n) }
  static func earlier(_ n: Int) -> [Double] {
    let k = Double((n * 5) % 17)
    return [min(10, k / 2), Double(n % 9), min(20, k), Double(n % 4)]
  }
  static func later(_ n: Int) -> [Double] {
    let k = Double((n * 7 + 3) % 19)
    return [min(10, k / 2), Double((n + 2) % 9), min(20, k + Double(n % 3)), Double(n % 5)]
  }
}

/// Plain standardised scores: (x − mean)/σ, population σ.
private func plainZ(_ values: [Double]) -> [Double] {
  let mean = values.reduce(0, +) / Double(values.count)
  let sd = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count))
    .squareRoot()
  return values.map { ($0 - mean) / sd }
}

@Suite(.serialized) struct ProgressTests {
  @Test func standardisedChangeRanksAndValueAdded() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      try await w.createStandardExam(standardExam(code: "M2-K1"))
      var first: [(String, String, String, [Double])] = []
      var second: [(String, String, String, [Double])] = []
      for n in 0..<Cohort.size {
        let (c, s) = Cohort.classes[n % 3]
        first.append((Cohort.id(n), c, s, Cohort.earlier(n)))
        if n >= 2 { second.append((Cohort.id(n), c, s, Cohort.later(n))) }
      }
      second.append(("ext-new", "CL2", "S2", [5, 5, 5, 5]))
      _ = try await w.importScores(rows(exam: "M-K1", first))
      _ = try await w.importScores(
        rows(exam: "M2-K1", second) + [markRow("M2-K1", Cohort.id(0), "CL1a", "S1", .absent)])
      let report = try await w.assessment.getProgress(
        .with {
          $0.earlierExamCode = "M-K1"
          $0.laterExamCode = "M2-K1"
          $0.movers = 3
        }, metadata: w.auth("aK1"))

      // Plainly: z over each exam's students who sat, the matched students 2..35.
      let e = first.map { $0.3.reduce(0, +) }
      let l = second.map { $0.3.reduce(0, +) }
      let ez = plainZ(e)
      let lz = plainZ(l)
      let matched = Array(2..<Cohort.size)
      let x = matched.map { ez[$0] }
      let y = matched.map { lz[$0 - 2] }
      let mx = x.reduce(0, +) / Double(x.count)
      let my = y.reduce(0, +) / Double(y.count)
      var sxy = 0.0
      var sxx = 0.0
      for (a, b) in zip(x, y) {
        sxy += (a - mx) * (b - my)
        sxx += (a - mx) * (a - mx)
      }
      let slope = sxy / sxx
      let intercept = my - slope * mx
      #expect(report.matched == 34)
      #expect(near(report.slope, slope) && near(report.intercept, intercept))
      let residual = zip(x, y).map { $1 - (intercept + slope * $0) }
      #expect(near(report.scope.valueAdded, residual.reduce(0, +) / 34))
      #expect(near(report.scope.zChange, my - mx))

      // Children: each school's mean residual, ranked.
      var byPlain: [String: [Double]] = [:]
      for (k, n) in matched.enumerated() {
        byPlain[Cohort.classes[n % 3].1, default: []].append(residual[k])
      }
      let added = ["S1", "S2"].map { byPlain[$0]!.reduce(0, +) / Double(byPlain[$0]!.count) }
      #expect(report.children.map(\.orgCode) == ["S1", "S2"])
      for (i, c) in report.children.enumerated() {
        #expect(near(c.valueAdded, added[i]), "\(c.orgCode)")
        #expect(c.valueAddedRank == plainRank(added[i], added))
        #expect(c.matched == Int64(byPlain[c.orgCode]!.count))
      }

      // Movers: the largest z changes first; ranks move by exam rank.
      let changes = matched.enumerated().map { (k, n) in (Cohort.id(n), y[k] - x[k], n) }
      let improved = changes.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }.prefix(3)
      #expect(report.mostImproved.map(\.studentExternalID) == improved.map(\.0))
      let declined = changes.sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }.prefix(3)
      #expect(report.mostDeclined.map(\.studentExternalID) == declined.map(\.0))
      for p in report.mostImproved + report.mostDeclined {
        let n = Int(p.studentExternalID.dropFirst(5))!
        let earlierRank = plainRank(e[n], e)
        let laterRank = plainRank(l[n - 2], l)
        #expect(p.earlierRank == earlierRank && p.laterRank == laterRank)
        #expect(p.rankChange == earlierRank - laterRank)
        #expect(near(p.zChange, lz[n - 2] - ez[n]))
      }

      // Scope and bad requests.
      func progress(
        _ earlier: String, _ later: String, scope: String = "", as user: String = "aK1"
      ) async throws -> Smartschool_Assessment_V1_ProgressReport
      {
        try await w.assessment.getProgress(
          .with {
            $0.earlierExamCode = earlier
            $0.laterExamCode = later
            $0.scopeOrgCode = scope
          }, metadata: w.auth(user))
      }
      #expect(try await progress("M-K1", "M2-K1", scope: "S2", as: "aK1").matched == 12)
      await expectCode(.permissionDenied) { try await progress("M-K1", "M2-K1", as: "tS1") }
      #expect(
        await fieldViolations { _ = try await progress("M-K1", "M-K1") } == ["later_exam_code"])
      await expectCode(.notFound) { try await progress("M-K1", "NOPE") }
      #expect(
        await fieldViolations {
          _ = try await w.assessment.getProgress(
            .with {
              $0.earlierExamCode = "M-K1"
              $0.laterExamCode = "M2-K1"
              $0.movers = 101
            }, metadata: w.auth("aK1"))
        } == ["movers"])
    }
  }
}
