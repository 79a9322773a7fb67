import AssessmentService
import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

/// County K1's joint exam session "S-K1": Chinese (X-K1), mathematics (M-K1) and English
/// (E-K1), each the standard four items (50). 30 students over CL1a, CL1b and CL2; ext-j03 is
/// absent from mathematics, ext-j07 exempt from English, ext-j11 absent from every paper.
private struct Joint {
  static let papers: [(code: String, subject: Smartschool_Common_V1_Subject)] = [
    ("X-K1", .chinese), ("M-K1", .mathematics), ("E-K1", .english),
  ]
  static let classes = [("CL1a", "S1"), ("CL1b", "S1"), ("CL2", "S2")]

  /// Item scores of student n on paper p, or nil when the student did not sit it.
  static func scores(_ n: Int, _ p: Int) -> [Double]? {
    if n == 11 || (n == 3 && p == 1) || (n == 7 && p == 2) { return nil }
    let k = Double((n * (p + 3) + p * 5) % 19)
    return [min(10, k / 2), min(10, Double(n % 7)), min(20, k), Double((n + p) % 6)]
  }

  static func id(_ n: Int) -> String { String(format: "ext-j%02d", n) }
  static let count = 30

  /// Plain: student n's totals per paper (nil: not sat) and over the papers sat.
  static func paperTotal(_ n: Int, _ p: Int) -> Double? { scores(n, p)?.reduce(0, +) }
  static func total(_ n: Int) -> Double {
    papers.indices.compactMap { paperTotal(n, $0) }.reduce(0, +)
  }
  static func satAny(_ n: Int) -> Bool { papers.indices.contains { scores(n, $0) != nil } }
  static func school(_ n: Int) -> String { classes[n % 3].1 }
  static func classCode(_ n: Int) -> String { classes[n % 3].0 }
}

extension World {
  /// Creates the session's three papers and imports every row.
  fileprivate func jointSession() async throws {
    for (code, subject) in Joint.papers {
      var exam = standardExam(code: code)
      exam.subject = subject
      exam.sessionCode = "S-K1"
      try await createStandardExam(exam)
    }
    var sent: [ScoreRow] = []
    for n in 0..<Joint.count {
      let (classCode, school) = Joint.classes[n % 3]
      for (p, paper) in Joint.papers.enumerated() {
        if let scores = Joint.scores(n, p) {
          sent += rows(exam: paper.code, [(Joint.id(n), classCode, school, scores)])
        } else {
          sent.append(
            markRow(paper.code, Joint.id(n), classCode, school, n == 7 ? .exempt : .absent,
              reason: n == 7 ? "exempt" : ""))
        }
      }
    }
    let summary = try await importScores(sent)
    #expect(summary.rejected == 0 && summary.errors.isEmpty)
  }
}

@Suite(.serialized) struct SessionTests {
  /// Totals over the papers sat, their figures, the subjects side by side and every school
  /// ranked, each against a plain computation.
  @Test func sessionReportTotalsSubjectsAndRanks() async throws {
    try await withWorld { w in
      try await w.jointSession()
      func report(_ scope: String, kind: Smartschool_Common_V1_OrgKind = .unspecified)
        async throws -> Smartschool_Assessment_V1_SessionReport
      {
        try await w.assessment.getSessionReport(
          .with {
            $0.sessionCode = "S-K1"
            $0.scopeOrgCode = scope
            $0.childrenKind = kind
          }, metadata: w.auth("aK1"))
      }
      let county = try await report("")
      #expect(county.fullMarks == 150)
      // Papers by subject: Chinese (1), mathematics (2), English (3).
      #expect(county.examCodes == ["X-K1", "M-K1", "E-K1"])
      let sat = (0..<Joint.count).filter(Joint.satAny)
      let totals = Plain(totals: sat.map(Joint.total))
      #expect(county.scope.totals.count == 29 && county.scope.totals.absentCount == 1)
      #expect(county.scope.totals.expectedCount == 30)
      #expect(near(county.scope.totals.mean, totals.mean))
      #expect(near(county.scope.totals.standardDeviation, totals.sd))
      // Lines of 150: pass 90, good 105, excellent 127.5, low 60.
      #expect(county.scope.totals.passRate == totals.rate { $0 >= 90 })
      #expect(county.scope.totals.lowRate == totals.rate { $0 < 60 })
      #expect(county.scope.totals.rank == 0)
      for (p, column) in county.scope.subjects.enumerated() {
        let plain = Plain(totals: (0..<Joint.count).compactMap { Joint.paperTotal($0, p) })
        #expect(column.examCode == Joint.papers[p].code)
        #expect(column.subject == Joint.papers[p].subject)
        #expect(column.figures.count == plain.count && near(column.figures.mean, plain.mean))
        #expect(column.figures.passRate == plain.rate { $0 >= 30 })
      }
      #expect(county.scope.subjects.map(\.figures.absentCount) == [1, 2, 1])
      #expect(county.scope.subjects.map(\.figures.exemptCount) == [0, 0, 1])

      // The schools, each ranked by mean total and per subject by mean.
      #expect(county.children.map(\.totals.orgCode) == ["S1", "S2"])
      let schoolTotals = ["S1", "S2"].map { school in
        Plain(totals: sat.filter { Joint.school($0) == school }.map(Joint.total))
      }
      for (c, child) in county.children.enumerated() {
        #expect(near(child.totals.mean, schoolTotals[c].mean))
        #expect(child.totals.rank == plainRank(schoolTotals[c].mean, schoolTotals.map(\.mean)))
        for p in Joint.papers.indices {
          let means = ["S1", "S2"].map { school in
            Plain(
              totals: (0..<Joint.count).filter { Joint.school($0) == school }
                .compactMap { Joint.paperTotal($0, p) }
            ).mean
          }
          #expect(near(child.subjects[p].figures.mean, means[c]))
          #expect(child.subjects[p].figures.rank == plainRank(means[c], means))
        }
      }
      // A school's own report: ranked among its sibling schools, with its classes.
      let s1 = try await report("S1")
      #expect(s1.scope.totals.orgCode == "S1" && near(s1.scope.totals.mean, schoolTotals[0].mean))
      #expect(s1.scope.totals.rank == county.children[0].totals.rank)
      #expect(s1.children.map(\.totals.orgCode) == ["CL1a", "CL1b"])
      // Every class of the county ranked together.
      let classes = try await report("", kind: .class)
      let classMeans = Joint.classes.map { c in
        Plain(totals: sat.filter { Joint.classCode($0) == c.0 }.map(Joint.total)).mean
      }
      #expect(classes.children.map(\.totals.orgCode) == ["CL1a", "CL1b", "CL2"])
      for (i, child) in classes.children.enumerated() {
        #expect(near(child.totals.mean, classMeans[i]))
        #expect(child.totals.rank == plainRank(classMeans[i], classMeans))
      }

      await expectCode(.permissionDenied) {
        try await w.assessment.getSessionReport(
          .with { $0.sessionCode = "S-K1" }, metadata: w.auth("tS1"))
      }
      await expectCode(.notFound) {
        try await w.assessment.getSessionReport(
          .with { $0.sessionCode = "S-NONE" }, metadata: w.auth("aK1"))
      }
      #expect(
        await fieldViolations {
          _ = try await w.assessment.getSessionReport(
            .with { $0.sessionCode = "bad code!" }, metadata: w.auth("aK1"))
        } == ["session_code"])
    }
  }

  /// The session's rank list, page by page, against a plain computation; the papers that do
  /// not fit a session are refused.
  @Test func sessionRanksAndPapersThatDoNotFit() async throws {
    try await withWorld { w in
      try await w.jointSession()
      var listed: [Smartschool_Assessment_V1_SessionRankedStudent] = []
      var token = ""
      var pages = 0
      repeat {
        let page = try await w.assessment.listSessionRanks(
          .with {
            $0.sessionCode = "S-K1"
            $0.scopeOrgCode = "S1"
            $0.pageSize = 6
            $0.pageToken = token
          }, metadata: w.auth("tS1"))
        #expect(page.totalCount == 20)  // S1: CL1a and CL1b (ext-j11, in CL2, sat nothing)
        listed += page.students
        token = page.nextPageToken
        pages += 1
      } while !token.isEmpty && pages < 10
      #expect(pages == 4)
      let sat = (0..<Joint.count).filter(Joint.satAny)
      let mine = sat.filter { Joint.school($0) == "S1" }
      let order = mine.sorted {
        Joint.total($0) != Joint.total($1)
          ? Joint.total($0) > Joint.total($1) : Joint.id($0) < Joint.id($1)
      }
      #expect(listed.map(\.studentExternalID) == order.map(Joint.id))
      let all = sat.map(Joint.total)
      for r in listed {
        let n = Int(r.studentExternalID.dropFirst(5))!
        #expect(r.total == Joint.total(n))
        #expect(r.sessionRank == plainRank(Joint.total(n), all))
        #expect(r.scopeRank == plainRank(Joint.total(n), mine.map(Joint.total)))
        let classmates = sat.filter { Joint.classCode($0) == Joint.classCode(n) }
        #expect(r.classRank == plainRank(Joint.total(n), classmates.map(Joint.total)))
        #expect(r.countyRank == r.sessionRank)  // every student is in K1
        #expect(r.percentileRank == plainPercentile(Joint.total(n), all))
        let papersSat = Joint.papers.indices.filter { Joint.scores(n, $0) != nil }.count
        #expect(r.papersSat == Int32(papersSat))
        #expect(r.papers.map(\.examCode) == ["X-K1", "M-K1", "E-K1"])
        #expect(r.papers.map { $0.sat ? $0.total : -1 } == Joint.papers.indices.map {
          Joint.paperTotal(n, $0) ?? -1
        })
      }
      await expectCode(.permissionDenied) {
        try await w.assessment.listSessionRanks(
          .with {
            $0.sessionCode = "S-K1"
            $0.scopeOrgCode = "K1"
          }, metadata: w.auth("tS1"))
      }

      // Papers that do not fit: another grade, or a subject the session has.
      var grade8 = standardExam(code: "P-K1")
      grade8.subject = .physics
      grade8.grade = 8
      grade8.sessionCode = "S-K1"
      #expect(
        await fieldViolations { _ = try await w.createStandardExam(grade8) }
          == ["exam.session_code"])
      var again = standardExam(code: "M2-K1")
      again.sessionCode = "S-K1"
      #expect(
        await fieldViolations { _ = try await w.createStandardExam(again) }
          == ["exam.session_code"])
      var physics = standardExam(code: "P-K1")
      physics.subject = .physics
      physics.sessionCode = "S-K1"
      #expect(try await w.createStandardExam(physics).sessionCode == "S-K1")
      // A paper re-sent (an import run again) is the same exam, not a second paper of its
      // subject: ALREADY_EXISTS, as for any re-sent exam.
      await expectCode(.alreadyExists) { _ = try await w.createStandardExam(physics) }
    }
  }
}
