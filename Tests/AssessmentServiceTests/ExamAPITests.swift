import AssessmentService
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

@Suite(.serialized) struct ExamAPITests {
  @Test func createGetAndListExams() async throws {
    try await withWorld { w in
      let created = try await w.createStandardExam()
      #expect(created.fullMarks == 50)  // the sum of the items' max scores
      #expect(created.passFraction == 0.60 && created.excellentFraction == 0.85)
      #expect(created.lowFraction == 0.40)
      #expect(!created.frozen && created.scoreCount == 0)
      _ = try await w.assessment.createExam(
        .with { $0.exam = standardExam(code: "M-S3", org: "S3") }, metadata: w.auth("admin"))

      // A teacher of a school of the county reads the county's exam.
      let got = try await w.assessment.getExam(.with { $0.code = "M-K1" }, metadata: w.auth("tS1"))
      #expect(got.items.map(\.number) == [1, 2, 3, 4])
      #expect(got.items[1].knowledgePoints == ["KP-A", "KP-B"])
      #expect(got.name == "七年级数学期末统考")
      // Another county's teacher does not.
      await expectCode(.permissionDenied) {
        try await w.assessment.getExam(.with { $0.code = "M-K1" }, metadata: w.auth("tS3"))
      }
      await expectCode(.notFound) {
        try await w.assessment.getExam(.with { $0.code = "NOPE" }, metadata: w.auth("tS1"))
      }

      let listS1 = try await w.assessment.listExams(.init(), metadata: w.auth("tS1"))
      #expect(listS1.exams.map(\.code) == ["M-K1"])
      let listS3 = try await w.assessment.listExams(.init(), metadata: w.auth("tS3"))
      #expect(listS3.exams.map(\.code) == ["M-S3"])
      // Paging: one per page for the system admin, who sees both.
      let first = try await w.assessment.listExams(
        .with { $0.pageSize = 1 }, metadata: w.auth("admin"))
      #expect(first.exams.map(\.code) == ["M-K1"] && !first.nextPageToken.isEmpty)
      let second = try await w.assessment.listExams(
        .with {
          $0.pageSize = 1
          $0.pageToken = first.nextPageToken
        }, metadata: w.auth("admin"))
      #expect(second.exams.map(\.code) == ["M-S3"] && second.nextPageToken.isEmpty)
      let filtered = try await w.assessment.listExams(
        .with { $0.orgCode = "S3" }, metadata: w.auth("admin"))
      #expect(filtered.exams.map(\.code) == ["M-S3"])
      await expectCode(.invalidArgument) {
        try await w.assessment.listExams(
          .with { $0.pageToken = "garbage!" }, metadata: w.auth("admin"))
      }
    }
  }

  @Test func createIsGuardedAndValidated() async throws {
    try await withWorld { w in
      // Teachers may not define exams; a school admin may not define the county's.
      await expectCode(.permissionDenied) {
        try await w.assessment.createExam(
          .with { $0.exam = standardExam() }, metadata: w.auth("tS1"))
      }
      await expectCode(.permissionDenied) {
        try await w.assessment.createExam(
          .with { $0.exam = standardExam() }, metadata: w.auth("aS1"))
      }
      await expectCode(.unauthenticated) {
        try await w.assessment.createExam(.with { $0.exam = standardExam() })
      }
      var bad = standardExam()
      bad.schoolYear = "2025"
      bad.grade = 3  // not a junior grade
      bad.items.append(item(2, 5, []))  // duplicate number
      bad.items.append(item(9, -1, ["bad code"]))
      bad.fullMarks = 12
      let fields = await fieldViolations {
        _ = try await w.assessment.createExam(.with { $0.exam = bad }, metadata: w.auth("aK1"))
      }
      #expect(fields.contains("exam.school_year"))
      #expect(fields.contains("exam.grade"))
      #expect(fields.contains { $0.hasSuffix(".number") })
      #expect(fields.contains { $0.hasSuffix(".max_score") })
      #expect(fields.contains { $0.contains(".knowledge_points[0]") })
      #expect(fields.contains("exam.full_marks"))
      var classExam = standardExam(code: "M-CL")
      classExam.orgCode = "CL1a"
      #expect(
        await fieldViolations {
          _ = try await w.assessment.createExam(
            .with { $0.exam = classExam }, metadata: w.auth("aK1"))
        } == ["exam.org_code"])
      var unknownOrg = standardExam(code: "M-X")
      unknownOrg.orgCode = "NOPE"
      await expectCode(.notFound) {
        try await w.assessment.createExam(.with { $0.exam = unknownOrg }, metadata: w.auth("aK1"))
      }
      try await w.createStandardExam()
      await expectCode(.alreadyExists) { try await w.createStandardExam() }
    }
  }

  /// A provincial unified exam (全省统考): run by the province, scored in schools of every
  /// county, its statistics broken down by city; a county admin may not define it.
  @Test func aProvinceRunsAnExamAcrossCounties() async throws {
    try await withWorld { w in
      await expectCode(.permissionDenied) {
        try await w.assessment.createExam(
          .with { $0.exam = standardExam(code: "M-P", org: "P34") }, metadata: w.auth("aK1"))
      }
      let exam = try await w.assessment.createExam(
        .with { $0.exam = standardExam(code: "M-P", org: "P34") }, metadata: w.auth("admin"))
      #expect(exam.orgCode == "P34")
      let summary = try await w.importScores(
        rows(exam: "M-P", [
          ("st1", "CL1a", "S1", [8, 9, 15, 7]), ("st3", "CL3", "S3", [4, 5, 10, 3]),
        ]), as: "admin")
      #expect(summary.accepted == 8 && summary.rejected == 0)
      let stats = try await w.assessment.getExamStatistics(
        .with { $0.examCode = "M-P" }, metadata: w.auth("admin"))
      #expect(stats.scope.count == 2 && stats.scope.mean == 30.5)
      #expect(stats.children.map(\.count) == [2])  // the one city of both counties
    }
  }

  @Test func itemsFreezeOnceScoresExist() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      let updated = try await w.assessment.updateExamItems(
        .with {
          $0.code = "M-K1"
          $0.items = [item(2, 30, ["KP-B"]), item(1, 20, ["KP-A"])]
        }, metadata: w.auth("aK1"))
      #expect(updated.items.map(\.number) == [1, 2] && updated.fullMarks == 50)
      await expectCode(.permissionDenied) {
        try await w.assessment.updateExamItems(
          .with {
            $0.code = "M-K1"
            $0.items = [item(1, 10, [])]
          }, metadata: w.auth("tS1"))
      }
      #expect(
        await fieldViolations {
          _ = try await w.assessment.updateExamItems(
            .with {
              $0.code = "M-K1"
              $0.items = [item(1, 10, []), item(1, 10, [])]
            }, metadata: w.auth("aK1"))
        } == ["items[1].number"])
      let summary = try await w.importScores([row("M-K1", "ext-stu1", "CL1a", "S1", 1, 12)])
      #expect(summary.accepted == 1)
      await expectCode(.failedPrecondition) {
        try await w.assessment.updateExamItems(
          .with {
            $0.code = "M-K1"
            $0.items = [item(1, 10, [])]
          }, metadata: w.auth("aK1"))
      }
      let frozen = try await w.assessment.getExam(
        .with { $0.code = "M-K1" }, metadata: w.auth("aK1"))
      #expect(frozen.frozen && frozen.scoreCount == 1 && frozen.items.count == 2)
    }
  }

  /// Reports read their exam through a cache (AssessmentAPI.exams) that replacing the items
  /// must move: statistics computed before and after UpdateExamItems use each time the items
  /// the exam has then, and a student report lists the new items' knowledge points.
  @Test func reportsUseTheItemsAfterAReplacement() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      let before = try await w.assessment.getExamStatistics(
        .with { $0.examCode = "M-K1" }, metadata: w.auth("aK1"))
      #expect(before.items.map(\.number) == [1, 2, 3, 4])
      _ = try await w.assessment.updateExamItems(
        .with {
          $0.code = "M-K1"
          $0.items = [item(7, 30, ["KP-Y"]), item(8, 20, ["KP-Z"])]
        }, metadata: w.auth("aK1"))
      let summary = try await w.importScores([
        row("M-K1", "ext-stu1", "CL1a", "S1", 7, 12), row("M-K1", "ext-stu1", "CL1a", "S1", 8, 9),
      ])
      #expect(summary.accepted == 2 && summary.rejected == 0)
      let after = try await w.assessment.getExamStatistics(
        .with { $0.examCode = "M-K1" }, metadata: w.auth("aK1"))
      #expect(after.items.map(\.number) == [7, 8])
      #expect(after.scope.count == 1 && after.scope.mean == 21)
      let report = try await w.assessment.getStudentReport(
        .with {
          $0.examCode = "M-K1"
          $0.studentExternalID = "ext-stu1"
        }, metadata: w.auth("aK1"))
      #expect(report.total == 21)
      #expect(report.mastery.map(\.code).sorted() == ["KP-Y", "KP-Z"])
    }
  }

  @Test func changeFeedCarriesExamsAndQualityEntries() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      _ = try await w.assessment.updateExamItems(
        .with {
          $0.code = "M-K1"
          $0.items = [item(1, 10, [])]
        }, metadata: w.auth("aK1"))
      let feed = try await w.assessment.listChanges(.init(), metadata: w.auth("exchange"))
      #expect(feed.changes.map(\.entity) == ["exam", "exam"])
      #expect(feed.changes.map(\.naturalKey) == ["M-K1", "M-K1"])
      let last = try Smartschool_Assessment_V1_Exam(
        serializedBytes: feed.changes[1].payload.value)
      #expect(last.items.count == 1 && last.fullMarks == 10)
      let page = try await w.assessment.listChanges(
        .with {
          $0.afterSequence = feed.changes[0].sequence
          $0.pageSize = 1
        }, metadata: w.auth("exchange"))
      #expect(page.changes.map(\.sequence) == [feed.changes[1].sequence] && !page.moreAvailable)
      await expectCode(.permissionDenied) {
        try await w.assessment.listChanges(.init(), metadata: w.auth("tS1"))
      }
      await expectCode(.invalidArgument) {
        try await w.assessment.listChanges(
          .with { $0.afterSequence = -1 }, metadata: w.auth("exchange"))
      }
    }
  }
}
