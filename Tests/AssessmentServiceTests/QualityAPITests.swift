import AssessmentService
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

func entry(
  _ dimension: Smartschool_Assessment_V1_QualityDimension, _ title: String,
  _ grade: Smartschool_Assessment_V1_QualityGrade, student: String = "ext-stu1",
  school: String = "S1"
) -> Smartschool_Assessment_V1_QualityEntry {
  .with {
    $0.studentExternalID = student
    $0.schoolCode = school
    $0.schoolYear = "2025-2026"
    $0.term = 1
    $0.dimension = dimension
    $0.title = title
    $0.description_p = "记录: " + title
    $0.evidenceRef = "evidence/" + title
    $0.grade = grade
  }
}

@Suite(.serialized) struct QualityAPITests {
  @Test func recordImportAndProfile() async throws {
    try await withWorld { w in
      let recorded = try await w.assessment.recordQualityEntry(
        entry(.moralCharacter, "志愿服务", .b), metadata: w.auth("tS1"))
      #expect(recorded.title == "志愿服务")
      // Recording the same natural key again replaces the grade.
      _ = try await w.assessment.recordQualityEntry(
        entry(.moralCharacter, "志愿服务", .a), metadata: w.auth("tS1"))
      let sent = [
        entry(.moralCharacter, "班级值日", .b),  // 0
        entry(.moralCharacter, "文明礼仪", .b),  // 1
        entry(.physicalMentalHealth, "体测", .c),  // 2
        entry(.artisticLiteracy, "合唱", .a),  // 3
        entry(.socialPractice, "", .a),  // 4 no title
        entry(.socialPractice, "研学", .a, school: "S3"),  // 5 wrong school
        entry(.unspecified, "无维度", .a),  // 6
        entry(.socialPractice, "研学", .a, student: "ext-other", school: "S3"),  // 7 out of scope
        entry(.artisticLiteracy, "合唱", .b),  // 8 replaces 3
      ]
      let summary = try await w.assessment.importQualityEntries(
        metadata: w.auth("tS1"),
        requestProducer: { writer in try await writer.write(contentsOf: sent) })
      #expect(summary.received == 9 && summary.accepted == 5 && summary.rejected == 4)
      #expect(summary.errors.map(\.index) == [4, 5, 6, 7])
      #expect(summary.errors.map(\.field) == ["title", "school_code", "dimension", "school_code"])
      #expect(summary.created == 4 && summary.updated == 1)

      func profile(_ student: String, as user: String) async throws
        -> Smartschool_Assessment_V1_QualityProfile
      {
        try await w.assessment.getQualityProfile(
          .with {
            $0.studentExternalID = student
            $0.schoolYear = "2025-2026"
            $0.term = 1
          }, metadata: w.auth(user))
      }
      let p = try await profile("ext-stu1", as: "par1")
      #expect(p.dimensions.map(\.dimension.rawValue) == [1, 2, 3, 4, 5])
      #expect(p.dimensions[0].entries.count == 3)
      #expect(p.dimensions[0].overall == .b)  // A, B, B
      #expect(p.dimensions[1].overall == .unspecified && p.dimensions[1].entries.isEmpty)
      #expect(p.dimensions[2].overall == .c)
      #expect(p.dimensions[3].entries.map(\.grade) == [.b] && p.dimensions[3].overall == .b)
      #expect(p.dimensions[0].entries.first { $0.title == "志愿服务" }?.grade == .a)
      #expect(try await profile("ext-stu1", as: "stu1").dimensions[0].entries.count == 3)
      #expect(try await profile("ext-stu1", as: "tS1").dimensions[2].entries.count == 1)
      await expectCode(.permissionDenied) { try await profile("ext-stu1", as: "stu2") }
      await expectCode(.permissionDenied) { try await profile("ext-stu1", as: "tS3") }
      await expectCode(.notFound) { try await profile("ext-nobody", as: "aK1") }

      // Single records: validation, scope, unknown school.
      #expect(
        await fieldViolations {
          _ = try await w.assessment.recordQualityEntry(
            entry(.moralCharacter, "x", .unspecified), metadata: w.auth("tS1"))
        } == ["grade"])
      await expectCode(.permissionDenied) {
        try await w.assessment.recordQualityEntry(
          entry(.moralCharacter, "x", .a, student: "ext-s9", school: "S3"), metadata: w.auth("tS1"))
      }
      await expectCode(.permissionDenied) {
        try await w.assessment.recordQualityEntry(
          entry(.moralCharacter, "x", .a), metadata: w.auth("par1"))
      }
      await expectCode(.notFound) {
        try await w.assessment.recordQualityEntry(
          entry(.moralCharacter, "x", .a, school: "NOPE"), metadata: w.auth("tS1"))
      }
      let feed = try await w.assessment.listChanges(.init(), metadata: w.auth("exchange"))
      #expect(feed.changes.filter { $0.entity == "quality_entry" }.count == 7)
    }
  }
}
