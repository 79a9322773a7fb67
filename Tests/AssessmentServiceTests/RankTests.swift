import AssessmentService
import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

/// A city exam's results over both counties: 64 students in CL1a, CL1b (S1), CL2 (S2, K1) and
/// CL3 (S3, K2), with ties, plus two absentees. Totals are what the test knows; it computes
/// every figure it checks from them with the plain helpers here.
struct CityExam {
  static let code = "M-C"
  static let classes = [("CL1a", "S1", "K1"), ("CL1b", "S1", "K1"), ("CL2", "S2", "K1"),
    ("CL3", "S3", "K2")]

  struct Student {
    var id: String
    var classCode: String
    var school: String
    var county: String
    var scores: [Double]
    var total: Double { scores.reduce(0, +) }
  }

  static let students: [Student] = (0..<64).map { n in
    let (classCode, school, county) = classes[n % 4]
    // Ties: every total repeats (n / 2 shared by pairs), and classes differ in level.
    let k = Double((n / 2) % 11)
    let lift = Double(n % 4) * 1.5
    let scores = [min(10, k), min(10, k / 2 + lift), min(20, k + lift * 2), (k / 3).rounded(.down)]
    return Student(
      id: String(format: "ext-r%02d", n), classCode: classCode, school: school, county: county,
      scores: scores)
  }

  static let absent = [("ext-r90", "CL1a", "S1"), ("ext-r91", "CL3", "S3")]

  static func exam() -> Smartschool_Assessment_V1_Exam {
    var e = standardExam(code: code, org: "C3401")
    e.goodFraction = 0.72
    return e
  }

  static func scoreRows() -> [ScoreRow] {
    rows(exam: code, students.map { ($0.id, $0.classCode, $0.school, $0.scores) })
      + absent.map { markRow(code, $0.0, $0.1, $0.2, .absent) }
  }
}

/// Plain competition rank: 1 + the number of values strictly above `x`.
func plainRank(_ x: Double, _ values: [Double]) -> Int32 {
  Int32(1 + values.filter { $0 > x }.count)
}

/// Plain percentile rank: (CF − 0.5·F)/N·100, two decimals.
func plainPercentile(_ x: Double, _ values: [Double]) -> Double {
  let cf = Double(values.filter { $0 <= x }.count)
  let f = Double(values.filter { $0 == x }.count)
  return ((cf - 0.5 * f) / Double(values.count) * 100 * 100).rounded() / 100
}

@Suite(.serialized) struct RankTests {
  /// 良好率 beside the other three rates, every class of the city ranked by mean and by each
  /// rate across schools and counties, and the good line's defaults and checks.
  @Test func fourRatesAndEveryClassRankedByEach() async throws {
    try await withWorld { w in
      let created = try await w.assessment.createExam(
        .with { $0.exam = CityExam.exam() }, metadata: w.auth("admin"))
      #expect(created.goodFraction == 0.72)
      let summary = try await w.importScores(CityExam.scoreRows(), as: "admin")
      #expect(summary.rejected == 0 && summary.errors.isEmpty)
      let stats = try await w.assessment.getExamStatistics(
        .with {
          $0.examCode = CityExam.code
          $0.childrenKind = .class
        }, metadata: w.auth("admin"))
      let all = Plain(totals: CityExam.students.map(\.total))
      // Lines of 50: pass 30, good 36, excellent 42.5, low 20.
      #expect(stats.scope.count == 64 && near(stats.scope.mean, all.mean))
      #expect(stats.scope.goodRate == all.rate { $0 >= 36 })
      #expect(stats.scope.passRate == all.rate { $0 >= 30 })
      #expect(stats.scope.absentCount == 2 && stats.scope.expectedCount == 66)
      #expect(stats.children.map(\.orgCode) == ["CL1a", "CL1b", "CL2", "CL3"])
      var plain: [Plain] = []
      for (classCode, _, _) in CityExam.classes {
        plain.append(
          Plain(totals: CityExam.students.filter { $0.classCode == classCode }.map(\.total)))
      }
      let means = plain.map(\.mean)
      let rates = (
        pass: plain.map { $0.rate { $0 >= 30 } }, good: plain.map { $0.rate { $0 >= 36 } },
        excellent: plain.map { $0.rate { $0 >= 42.5 } }, low: plain.map { $0.rate { $0 < 20 } }
      )
      for (i, c) in stats.children.enumerated() {
        #expect(near(c.mean, means[i]), "\(c.orgCode)")
        #expect(c.goodRate == rates.good[i] && c.passRate == rates.pass[i])
        #expect(c.excellentRate == rates.excellent[i] && c.lowRate == rates.low[i])
        #expect(c.rank == plainRank(means[i], means))
        #expect(c.passRateRank == plainRank(rates.pass[i], rates.pass))
        #expect(c.goodRateRank == plainRank(rates.good[i], rates.good))
        #expect(c.excellentRateRank == plainRank(rates.excellent[i], rates.excellent))
        // The lowest low rate is best.
        #expect(c.lowRateRank == Int32(1 + rates.low.filter { $0 < rates.low[i] }.count))
      }
      // The absentees are counted in their classes.
      #expect(stats.children.map(\.absentCount) == [1, 0, 0, 1])
      // Schools of county K1, ranked among themselves.
      let schools = try await w.assessment.getExamStatistics(
        .with {
          $0.examCode = CityExam.code
          $0.scopeOrgCode = "K1"
          $0.childrenKind = .school
        }, metadata: w.auth("aK1"))
      #expect(schools.children.map(\.orgCode) == ["S1", "S2"])
      let s1 = Plain(totals: CityExam.students.filter { $0.school == "S1" }.map(\.total))
      #expect(near(schools.children[0].mean, s1.mean))
      #expect(schools.children[0].goodRate == s1.rate { $0 >= 36 })
      // Kinds at or above the scope's, or not a school or class, are refused.
      #expect(
        await fieldViolations {
          _ = try await w.assessment.getExamStatistics(
            .with {
              $0.examCode = CityExam.code
              $0.scopeOrgCode = "CL1a"
              $0.childrenKind = .class
            }, metadata: w.auth("admin"))
        } == ["children_kind"])
      #expect(
        await fieldViolations {
          _ = try await w.assessment.getExamStatistics(
            .with {
              $0.examCode = CityExam.code
              $0.childrenKind = .county
            }, metadata: w.auth("admin"))
        } == ["children_kind"])

      // The good line: 0.70 by default, raised to the pass line, and checked.
      var defaults = standardExam(code: "M-G1")
      defaults.passFraction = 0.75
      defaults.excellentFraction = 0.9
      let g1 = try await w.createStandardExam(defaults)
      #expect(g1.goodFraction == 0.75)
      #expect(try await w.createStandardExam(standardExam(code: "M-G2")).goodFraction == 0.70)
      var bad = standardExam(code: "M-G3")
      bad.goodFraction = 0.9
      #expect(
        await fieldViolations { _ = try await w.createStandardExam(bad) } == ["exam.good_fraction"])
    }
  }

  /// The rank list (成绩单) of a county walked page by page: order, ranks in class, school,
  /// county and exam, and percentiles equal a plain computation; scope and tokens are checked.
  @Test func rankListPagesThroughAScope() async throws {
    try await withWorld { w in
      _ = try await w.assessment.createExam(
        .with { $0.exam = CityExam.exam() }, metadata: w.auth("admin"))
      _ = try await w.importScores(CityExam.scoreRows(), as: "admin")
      func page(_ scope: String, _ size: Int32, _ token: String = "", as user: String = "aK1")
        async throws -> Smartschool_Assessment_V1_ListExamRanksResponse
      {
        try await w.assessment.listExamRanks(
          .with {
            $0.examCode = CityExam.code
            $0.scopeOrgCode = scope
            $0.pageSize = size
            $0.pageToken = token
          }, metadata: w.auth(user))
      }
      var listed: [Smartschool_Assessment_V1_RankedStudent] = []
      var token = ""
      var pages = 0
      repeat {
        let p = try await page("K1", 7, token)
        #expect(p.totalCount == 48)
        listed += p.students
        token = p.nextPageToken
        pages += 1
      } while !token.isEmpty && pages < 20
      #expect(pages == 7)  // 48 students, 7 a page
      let everyone = CityExam.students
      let mine = everyone.filter { $0.county == "K1" }
      let expectedOrder = mine.sorted {
        $0.total != $1.total ? $0.total > $1.total : $0.id < $1.id
      }.map(\.id)
      #expect(listed.map(\.studentExternalID) == expectedOrder)
      let allTotals = everyone.map(\.total)
      for r in listed {
        let s = everyone.first { $0.id == r.studentExternalID }!
        #expect(r.total == s.total && r.classCode == s.classCode && r.schoolCode == s.school)
        #expect(r.scopeRank == plainRank(s.total, mine.map(\.total)))
        #expect(
          r.classRank
            == plainRank(s.total, everyone.filter { $0.classCode == s.classCode }.map(\.total)))
        let school = everyone.filter { $0.school == s.school }.map(\.total)
        let county = everyone.filter { $0.county == s.county }.map(\.total)
        #expect(r.schoolRank == plainRank(s.total, school))
        #expect(r.countyRank == plainRank(s.total, county))
        #expect(r.examRank == plainRank(s.total, allTotals))
        #expect(r.percentileRank == plainPercentile(s.total, allTotals))
      }
      // A student's report agrees with the list on the shared figures.
      let first = listed[0]
      let report = try await w.assessment.getStudentReport(
        .with {
          $0.examCode = CityExam.code
          $0.studentExternalID = first.studentExternalID
        }, metadata: w.auth("admin"))
      #expect(report.examRank == first.examRank && report.classRank == first.classRank)
      #expect(report.percentileRank == first.percentileRank)

      // K2's list has its county's students, ranked 1.. in the county and scope alike.
      let k2 = try await page("CL3", 100, as: "admin")
      #expect(k2.totalCount == 16 && k2.nextPageToken.isEmpty)
      #expect(k2.students.allSatisfy { $0.countyRank == $0.scopeRank })

      // Scope: a teacher reads their school, not the county nor another school.
      #expect(try await page("S1", 1000, as: "tS1").totalCount == 32)
      await expectCode(.permissionDenied) { try await page("K1", 10, as: "tS1") }
      await expectCode(.permissionDenied) { try await page("S3", 10, as: "tS1") }
      await expectCode(.invalidArgument) { try await page("K1", 1001) }
      // Tokens: malformed, or issued for another scope.
      let s1Token = try await page("S1", 5, as: "tS1").nextPageToken
      #expect(!s1Token.isEmpty)
      #expect(await fieldViolations { _ = try await page("K1", 5, s1Token) } == ["page_token"])
      #expect(await fieldViolations { _ = try await page("K1", 5, "%%%") } == ["page_token"])
      await expectCode(.notFound) {
        try await w.assessment.listExamRanks(
          .with { $0.examCode = "NOPE" }, metadata: w.auth("aK1"))
      }
    }
  }
}
