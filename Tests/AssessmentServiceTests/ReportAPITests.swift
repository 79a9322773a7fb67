import AssessmentService
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

@Suite struct ReportAPITests {
  @Test func statisticsAtEveryScopeWithRankedChildren() async throws {
    try await withWorld { w in
      try await w.scoredExam()
      func stats(_ scope: String, as user: String = "aK1", bins: Int32 = 0) async throws
        -> Smartschool_Assessment_V1_ExamStatistics
      {
        try await w.assessment.getExamStatistics(
          .with {
            $0.examCode = "M-K1"
            $0.scopeOrgCode = scope
            $0.binCount = bins
          }, metadata: w.auth(user))
      }
      // Whole exam: totals 38, 20, 45, 25, 50 of 50.
      let exam = try await stats("")
      #expect(exam.scope.orgCode == "" && exam.scope.count == 5)
      #expect(near(exam.scope.mean, 35.6))
      #expect(near(exam.scope.standardDeviation, 131.44.squareRoot()))
      #expect(exam.scope.min == 20 && exam.scope.max == 50 && exam.scope.median == 38)
      #expect(exam.scope.passRate == 60 && exam.scope.excellentRate == 40)
      #expect(exam.scope.lowRate == 0)  // 20 is exactly the low line
      #expect(exam.scope.bins.count == 10 && exam.scope.bins[9].count == 2)  // 45 and 50
      #expect(exam.scope.bins[9].percent == 40)
      // Children of the county: S1 (38, 20, 45 → 34.33) ranks below S2 (25, 50 → 37.5).
      #expect(exam.children.map(\.orgCode) == ["S1", "S2"])
      #expect(exam.children.map(\.rank) == [2, 1])
      #expect(near(exam.children[0].mean, 103.0 / 3))
      // Item analysis: item 4's difficulty is (5+2+9+5+10)/5/10 = 0.62.
      #expect(exam.items.map(\.number) == [1, 2, 3, 4])
      #expect(near(exam.items[3].difficulty, 0.62))
      // Groups of max(1, round(1.35)) = 1: top ext-s5 (10), bottom ext-stu2 (6) on item 1.
      #expect(near(exam.items[0].discrimination, 0.4))
      #expect(exam.items[0].hasPointBiserial && exam.hasCronbachAlpha && exam.hasSem)

      let county = try await stats("K1", bins: 5)
      #expect(county.scope.orgCode == "K1" && county.scope.count == 5)
      #expect(county.scope.bins.count == 5)
      let school = try await stats("S1", as: "tS1")
      #expect(school.scope.count == 3 && school.children.map(\.orgCode) == ["CL1a", "CL1b"])
      #expect(school.children.map(\.rank) == [2, 1])
      let klass = try await stats("CL1a", as: "tS1")
      #expect(klass.scope.count == 2 && near(klass.scope.mean, 29) && klass.children.isEmpty)

      // Scope: a teacher sees their school only; another county is refused.
      await expectCode(.permissionDenied) { try await stats("K1", as: "tS1") }
      await expectCode(.permissionDenied) { try await stats("S2", as: "tS1") }
      await expectCode(.permissionDenied) { try await stats("", as: "tS3") }
      await expectCode(.invalidArgument) { try await stats("S3", as: "admin") }  // not under K1
      #expect(await fieldViolations { _ = try await stats("", bins: 101) } == ["bin_count"])
      await expectCode(.notFound) { try await stats("NOPE") }
    }
  }

  @Test func emptyExamAndEqualScoresGiveNoNaN() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      let empty = try await w.assessment.getExamStatistics(
        .with { $0.examCode = "M-K1" }, metadata: w.auth("aK1"))
      #expect(empty.scope.count == 0 && empty.scope.mean == 0 && empty.scope.passRate == 0)
      #expect(empty.children.allSatisfy { $0.count == 0 && $0.rank == 0 })
      #expect(!empty.hasCronbachAlpha && !empty.hasSem)
      #expect(empty.items.allSatisfy { !$0.hasPointBiserial && !$0.difficulty.isNaN })

      // Everyone scores the same: σ = 0, so α, SEM, point-biserial and z are absent.
      let same: [(String, String, String, [Double])] = [
        ("ext-stu1", "CL1a", "S1", [5, 5, 10, 5]), ("ext-stu2", "CL1a", "S1", [5, 5, 10, 5]),
      ]
      _ = try await w.importScores(rows(same))
      let flat = try await w.assessment.getExamStatistics(
        .with { $0.examCode = "M-K1" }, metadata: w.auth("aK1"))
      #expect(flat.scope.count == 2 && flat.scope.standardDeviation == 0)
      #expect(!flat.hasCronbachAlpha && !flat.hasSem)
      #expect(flat.items.allSatisfy { !$0.hasPointBiserial && $0.discrimination == 0 })
      let report = try await w.assessment.getStudentReport(
        .with {
          $0.examCode = "M-K1"
          $0.studentExternalID = "ext-stu1"
        }, metadata: w.auth("aK1"))
      #expect(!report.hasZScore && !report.hasTScore && report.percentileRank == 50)
    }
  }

  @Test func studentReportFiguresAndScope() async throws {
    try await withWorld { w in
      try await w.scoredExam()
      func report(_ student: String, as user: String) async throws
        -> Smartschool_Assessment_V1_StudentReport
      {
        try await w.assessment.getStudentReport(
          .with {
            $0.examCode = "M-K1"
            $0.studentExternalID = student
          }, metadata: w.auth(user))
      }
      let r = try await report("ext-stu1", as: "stu1")
      #expect(r.total == 38 && r.classCode == "CL1a" && r.schoolCode == "S1")
      #expect(r.classRank == 1 && r.classSize == 2)
      #expect(r.schoolRank == 2 && r.schoolSize == 3)
      #expect(r.examRank == 3 && r.examSize == 5)
      #expect(r.percentileRank == 50)  // (3 − 0.5)/5·100
      let z = (38 - 35.6) / 131.44.squareRoot()
      #expect(near(r.zScore.value, z) && near(r.tScore.value, 50 + 10 * z))
      #expect(r.mastery.map(\.code) == ["KP-A", "KP-B", "KP-C"])
      #expect(r.mastery.map(\.mastery) == [0.9, 0.7667, 0.5])
      #expect(r.mastery[1].earned == 23 && r.mastery[1].possible == 30)
      #expect(r.weakPoints.map(\.code) == ["KP-C"])

      // A parent reads their own child only; a student themself only.
      #expect(try await report("ext-stu1", as: "par1").total == 38)
      await expectCode(.permissionDenied) { try await report("ext-stu2", as: "par1") }
      await expectCode(.permissionDenied) { try await report("ext-stu2", as: "stu1") }
      // A teacher of the school reads it; a teacher of another county does not.
      #expect(try await report("ext-stu2", as: "tS1").total == 20)
      await expectCode(.permissionDenied) { try await report("ext-stu1", as: "tS3") }
      await expectCode(.permissionDenied) { try await report("ext-s4", as: "tS1") }
      await expectCode(.notFound) { try await report("ext-nobody", as: "aK1") }
      #expect(
        await fieldViolations { _ = try await report("", as: "aK1") } == ["student_external_id"])
    }
  }

  /// Students' items arrive over several imports, in several batches, some sent again with
  /// new scores: every student's report (total, ranks, sizes, percentile rank, z) equals a
  /// computation from the scores themselves, and so does the statistics' mean.
  @Test func studentReportsFollowScoresWrittenPiecemeal() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      let classes = [("CL1a", "S1"), ("CL1b", "S1"), ("CL2", "S2")]
      var scores: [String: [Double]] = [:]
      var classOf: [String: (String, String)] = [:]
      var imports: [[ScoreRow]] = [[], [], []]
      // 3 × 4,800 rows in the second import: a batch boundary falls inside a student.
      for n in 0..<4800 {
        let student = String(format: "ext-p%04d", n)
        let (classCode, school) = classes[n % 3]
        classOf[student] = (classCode, school)
        var mine = [Double(n % 11), Double(n % 7), Double((n * 3) % 21), Double(n % 5)]
        // Item 1 first; items 2–4 in a second import (its batches split a student);
        // a third import sends item 3 again, changed, for every fourth student.
        imports[0].append(row("M-K1", student, classCode, school, 1, mine[0]))
        for item in 2...4 {
          imports[1].append(row("M-K1", student, classCode, school, Int32(item), mine[item - 1]))
        }
        if n % 4 == 0 {
          mine[2] = Double((n * 7) % 21) + 0.5 > 20 ? 20 : Double((n * 7) % 21) + 0.5
          imports[2].append(row("M-K1", student, classCode, school, 3, mine[2]))
        }
        scores[student] = mine
      }
      for rows in imports {
        let summary = try await w.importScores(rows.reversed())
        #expect(summary.rejected == 0)
      }
      let students = scores.keys.sorted()
      let totals = students.map { scores[$0]!.reduce(0, +) }
      let mean = totals.reduce(0, +) / Double(totals.count)
      let sd = populationSD(totals, mean: mean)
      for (k, student) in students.enumerated() where k % 37 == 0 {
        let r = try await w.assessment.getStudentReport(
          .with {
            $0.examCode = "M-K1"
            $0.studentExternalID = student
          }, metadata: w.auth("aK1"))
        let total = totals[k]
        let (classCode, school) = classOf[student]!
        let classTotals = students.indices.filter { classOf[students[$0]]!.0 == classCode }
          .map { totals[$0] }
        let schoolTotals = students.indices.filter { classOf[students[$0]]!.1 == school }
          .map { totals[$0] }
        #expect(r.total == total, "\(student)")
        #expect(r.examRank == Int32(competitionRank(of: total, in: totals)))
        #expect(r.classRank == Int32(competitionRank(of: total, in: classTotals)))
        #expect(r.schoolRank == Int32(competitionRank(of: total, in: schoolTotals)))
        #expect(r.examSize == 4800 && r.classSize == 1600)
        #expect(r.schoolSize == Int32(schoolTotals.count))
        #expect(r.percentileRank == roundTo2(percentileRank(of: total, in: totals)))
        #expect(near(r.zScore.value, (total - mean) / sd))
      }
      let stats = try await w.assessment.getExamStatistics(
        .with { $0.examCode = "M-K1" }, metadata: w.auth("aK1"))
      #expect(stats.scope.count == 4800 && near(stats.scope.mean, mean))
    }
  }

  @Test func classDiagnosis() async throws {
    try await withWorld { w in
      try await w.scoredExam()
      let d = try await w.assessment.getClassDiagnosis(
        .with {
          $0.examCode = "M-K1"
          $0.classCode = "CL1a"
        }, metadata: w.auth("tS1"))
      #expect(d.count == 2 && d.mean == 29)
      // Beside each point, the rate of the class's school, its county and the exam (here the
      // county's), computed by hand from the standard table.
      let school = plainRates(standardResults.filter { $0.2 == "S1" })
      let all = plainRates(standardResults)
      #expect(d.knowledgePoints.count == 3)
      for p in d.knowledgePoints {
        let s = school[p.code]!
        let a = all[p.code]!
        #expect(near(p.schoolMastery, round4(s.earned / s.possible)), "\(p)")
        #expect(near(p.countyMastery.value, round4(a.earned / a.possible)) && p.hasCountyMastery)
        #expect(near(p.examMastery, round4(a.earned / a.possible)))
      }
      // Weakest first: KP-C 7/20, KP-B 35/60, KP-A 28/40.
      #expect(d.knowledgePoints.map(\.code) == ["KP-C", "KP-B", "KP-A"])
      #expect(d.knowledgePoints.map(\.mastery) == [0.35, 0.5833, 0.7])
      #expect(d.knowledgePoints.map(\.shareBelowPass) == [100, 50, 50])
      #expect(d.studentsBelowPass.map(\.studentExternalID) == ["ext-stu2"])
      #expect(d.studentsBelowPass.map(\.total) == [20])
      await expectCode(.permissionDenied) {
        try await w.assessment.getClassDiagnosis(
          .with {
            $0.examCode = "M-K1"
            $0.classCode = "CL1a"
          }, metadata: w.auth("tS3"))
      }
      await expectCode(.invalidArgument) {
        try await w.assessment.getClassDiagnosis(
          .with {
            $0.examCode = "M-K1"
            $0.classCode = "S1"
          }, metadata: w.auth("aK1"))
      }
    }
  }
}
