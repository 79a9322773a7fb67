import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import Testing

/// Every usage indicator split by school kind (issue 26, point 1). County CA: A1 a teaching
/// point (teachers T1, T2), A2 rural, A3 urban.
@Suite struct SchoolKindTests {
  @Test func complianceNoticeTargetsTrainingAndInspectionsBySchoolKind() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      _ = try await importLessons(client, importRows, a)
      let kinds: [Smartschool_Common_V1_SchoolKind] = [.teachingPoint, .rural, .urban]

      let report = try await complianceReport(client, "CA", a)
      #expect(report.bySchoolKind.map(\.schoolKind) == kinds)
      #expect(report.bySchoolKind.map(\.orgName) == ["教学点", "乡村学校", "城镇学校"])
      // R-A1 (teaching point) 6 lessons; R-A2 (rural) 2; R-A3 (urban, retired 09-21) none.
      #expect(report.bySchoolKind.map(\.lessonCount) == [6, 2, 0])
      let weeks = report.bySchoolKind.map(\.classroomWeeks).reduce(0, +)
      #expect(weeks == report.scope.classroomWeeks)
      #expect(report.bySchoolKind[0].compliantClassroomWeeks == 1)

      let notice = try await client.getWeeklyNotice(
        .with {
          $0.orgCode = "CA"
          $0.week = "2020-09-07"
        }, metadata: a)
      #expect(notice.bySchoolKind.map(\.lessonCount) == [6, 0, 0])
      #expect(notice.bySchoolKind.map(\.classroomWeeks) == [1, 0, 1])
      #expect(notice.bySchoolKind[0].compliantShareText == "100.00%")
      #expect(notice.schools.first { $0.schoolCode == "A3" }?.schoolKind == .urban)

      let targets = try await client.getTeacherTargets(
        .with {
          $0.orgCode = "CA"
          $0.termCode = "2020-2021-1"
        }, metadata: a)
      #expect(targets.teachers.map(\.schoolKind) == [.teachingPoint, .teachingPoint])
      #expect(targets.bySchoolKind.map(\.label) == ["教学点", "乡村学校", "城镇学校"])
      #expect(targets.bySchoolKind.map(\.total) == [2, 0, 0])
      #expect(targets.bySchoolKind.map(\.met) == [1, 0, 0])
      #expect(targets.bySchoolKind[0].shareText == "50.00%")

      _ = try await client.createTrainingRecord(
        .with {
          $0.record = .with {
            $0.teacherExternalID = "T2"
            $0.course = "信息化素养"
            $0.hours = 60
            $0.completedDate = "2020-10-01"
          }
        }, metadata: a)
      let training = try await client.getTrainingReport(
        .with {
          $0.orgCode = "CA"
          $0.year = 2020
        }, metadata: a)
      #expect(training.bySchoolKind.map(\.met) == [1, 0, 0])
      #expect(training.teachers.allSatisfy { $0.schoolKind == .teachingPoint })

      let inspector = h.auth("inspector", at: "CA")
      _ = try await client.createInspection(visit("A2", "2020-10-12"), metadata: inspector)
      let summary = try await inspectionSummary(client, "CA", year: 2020, inspector)
      #expect(summary.bySchoolKind.map(\.total) == [1, 1, 1])
      #expect(summary.bySchoolKind.map(\.met) == [0, 1, 0])
      #expect(summary.inspected.map(\.schoolKind) == [.rural])
    }
  }

  @Test func coverageIsLabelledAndMultimediaCoverageIsAShare() async throws {
    let h = try await Harness()
    try await h.run { client in
      let a = h.auth("county_admin", at: "CA")
      func put(_ school: String, classrooms: Int32, multimedia: Int32) async throws {
        _ = try await client.putFacilityReport(
          .with {
            $0.report = .with {
              $0.schoolCode = school
              $0.year = 2020
              $0.classrooms = classrooms
              $0.multimediaClassrooms = multimedia
              $0.standardMet = true
            }
          }, metadata: a)
      }
      func coverage() async throws -> Smartschool_Supervision_V1_CoverageReport {
        try await client.getCoverageReport(
          .with {
            $0.orgCode = "CA"
            $0.year = 2020
          }, metadata: a)
      }
      // No classroom counts yet: no share to give.
      try await put("A2", classrooms: 0, multimedia: 5)
      let none = try await coverage()
      #expect(none.multimediaCoverageText == "n/a" && none.classrooms == 0)
      #expect(
        none.kinds.map(\.label) == [
          "教学点智慧课堂覆盖率", "乡村学校智慧学校覆盖率", "城镇学校智慧学校覆盖率",
        ])
      // A1: 4 of 10 classrooms; A3: 8 of 10; A2 (no count) is left out of the share.
      try await put("A1", classrooms: 10, multimedia: 4)
      try await put("A3", classrooms: 10, multimedia: 8)
      let some = try await coverage()
      #expect(some.classrooms == 20 && some.multimediaClassrooms == 17)
      #expect(some.multimediaCoverageText == "60.00%" && some.multimediaCoveragePercent == 60)
      await expectCode(.invalidArgument) { try await put("A1", classrooms: -1, multimedia: 0) }
    }
  }
}
