import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import Testing

/// Early warning (issue 26, point 3).
@Suite struct WarningTests {
  /// The term of the warning tests: 14 teaching weeks from 2021-02-22 to 2021-05-30.
  static func seedSpringTerm(_ client: SupervisionClient, _ h: Harness) async throws {
    _ = try await client.createTerm(
      .with {
        $0.term = .with {
          $0.code = "W"
          $0.name = "spring"
          $0.startDate = "2021-02-22"
          $0.endDate = "2021-05-30"
        }
      }, metadata: h.auth("province_admin", at: "P"))
  }

  /// A compliant week at `room` (6 lessons, 3 subjects) from the Monday `monday`.
  static func compliantWeek(_ room: String, _ monday: String, teacher: String = "T1")
    -> [Smartschool_Supervision_V1_Lesson]
  {
    let subjects: [Smartschool_Common_V1_Subject] = [.chinese, .mathematics, .english]
    let start = CalendarDate(monday)!
    return (0..<6).map { i in
      lesson(
        room, start.adding(days: i / 2).description, Int32(i % 2 + 1), subject: subjects[i % 3],
        teacher: teacher)
    }
  }

  static func warnings(
    _ client: SupervisionClient, _ h: Harness, asOf: String, weeks: Int32 = 0,
    since: String = "", activeOnly: Bool = false
  ) async throws -> Smartschool_Supervision_V1_WarningList {
    try await client.listWarnings(
      .with {
        $0.orgCode = "CA"
        $0.termCode = "W"
        $0.asOf = asOf
        $0.consecutiveWeeks = weeks
        $0.changedSince = since
        $0.activeOnly = activeOnly
      }, metadata: h.auth("county_admin", at: "CA"))
  }

  @Test func classroomsAndSchoolsBelowStandardNWeeksRunning() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      try await Self.seedSpringTerm(client, h)
      let a = h.auth("county_admin", at: "CA")
      // R-A1: at standard in weeks 1, 2 and 6; nothing in weeks 3-5 and from week 7.
      // R-A2: nothing at all. R-A3 retired before the term: no weeks.
      let rows = ["2021-02-22", "2021-03-01", "2021-03-29"].flatMap {
        Self.compliantWeek("R-A1", $0)
      }
      _ = try await importLessons(client, rows, a)

      let list = try await Self.warnings(client, h, asOf: "2021-04-26")
      #expect(list.consecutiveWeeks == 3 && list.asOf == "2021-04-26")
      let rooms = list.warnings.filter { $0.kind == .classroomBelowStandard }
      #expect(rooms.map(\.classroomCode) == ["R-A2", "R-A1", "R-A1"])
      #expect(rooms.map(\.triggeredDate) == ["2021-03-08", "2021-03-22", "2021-04-19"])
      #expect(rooms.map(\.clearedDate) == ["", "2021-03-29", ""])
      // Weeks 1-9 ended before 04-26: R-A2 has been below all nine.
      #expect(rooms.map(\.weeksBelow) == [9, 3, 3])
      #expect(rooms[1].reason.contains("2021-03-08"))
      let schools = list.warnings.filter { $0.kind == .schoolBelowStandard }
      #expect(schools.map(\.schoolCode) == ["A2", "A1", "A1"])
      #expect(schools.map(\.clearedDate) == ["", "2021-03-29", ""])
      #expect(schools[0].schoolName == "Org A2")
      // No teacher at risk yet (T2 owes 2 with 5 weeks left), no inspection warning in April.
      #expect(list.warnings.count == 6)
      #expect(list.active == 4 && list.cleared == 2)

      // N = 4: R-A1's three-week gaps raise nothing.
      let four = try await Self.warnings(client, h, asOf: "2021-04-26", weeks: 4)
      #expect(four.warnings.map(\.classroomCode).filter { !$0.isEmpty } == ["R-A2"])
      // Polling: only what was raised or cleared from 03-29 on; or only what stands.
      let since = try await Self.warnings(client, h, asOf: "2021-04-26", since: "2021-03-29")
      #expect(since.warnings.map(\.triggeredDate) == ["2021-03-22", "2021-03-22", "2021-04-19",
        "2021-04-19"])
      let standing = try await Self.warnings(client, h, asOf: "2021-04-26", activeOnly: true)
      #expect(standing.warnings.allSatisfy { $0.clearedDate.isEmpty } && standing.cleared == 0)
      #expect(standing.active == 4)
      // Before any week ended, nothing.
      #expect(try await Self.warnings(client, h, asOf: "2021-02-24").warnings.isEmpty)
    }
  }

  @Test func teachersAtRiskAndSchoolsNotInspected() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      try await Self.seedSpringTerm(client, h)
      let a = h.auth("county_admin", at: "CA")
      _ = try await importLessons(client, Self.compliantWeek("R-A1", "2021-02-22"), a)
      // T2 (born 1975: 46, owes 2) teaches nothing until week 13 (05-17), then twice.
      let risky = try await Self.warnings(client, h, asOf: "2021-05-17")
      let teachers = risky.warnings.filter { $0.kind == .teacherAtRisk }
      #expect(teachers.map(\.teacherExternalID) == ["T2"])
      // After week 11 (05-03) three teaching weeks are left for two lessons.
      #expect(teachers[0].triggeredDate == "2021-05-03" && teachers[0].clearedDate.isEmpty)
      #expect(teachers[0].lessons == 0 && teachers[0].required == 2)
      #expect(teachers[0].schoolCode == "A1" && teachers[0].reason.contains("3 teaching weeks"))
      _ = try await importLessons(
        client,
        [
          lesson("R-A2", "2021-05-17", 1, subject: .music, teacher: "T2"),
          lesson("R-A2", "2021-05-18", 1, subject: .music, teacher: "T2"),
        ], a)
      let caughtUp = try await Self.warnings(client, h, asOf: "2021-05-31")
      let t2 = caughtUp.warnings.filter { $0.kind == .teacherAtRisk }
      #expect(t2.map(\.clearedDate) == ["2021-05-17"])

      // Inspections, judged in October: A1 inspected in March, A2 only on 10-10, A3 never
      // (a research visit is no inspection).
      let inspector = h.auth("inspector", at: "CA")
      _ = try await client.createInspection(visit("A1", "2021-03-01"), metadata: inspector)
      _ = try await client.createInspection(visit("A2", "2021-10-10"), metadata: inspector)
      _ = try await client.createInspection(
        visit("A3", "2021-09-01", kind: .researchVisit), metadata: inspector)
      let october = try await Self.warnings(client, h, asOf: "2021-10-15")
      let uninspected = october.warnings.filter { $0.kind == .schoolNotInspected }
      #expect(uninspected.map(\.schoolCode) == ["A2", "A3"])
      #expect(uninspected.map(\.triggeredDate) == ["2021-10-01", "2021-10-01"])
      #expect(uninspected.map(\.clearedDate) == ["2021-10-10", ""])
      let september = try await Self.warnings(client, h, asOf: "2021-09-30")
      #expect(!september.warnings.contains { $0.kind == .schoolNotInspected })
    }
  }

  @Test func badRequestsAndScope() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      try await Self.seedSpringTerm(client, h)
      await expectCode(.invalidArgument) {
        try await Self.warnings(client, h, asOf: "2021-04-26", weeks: 21)
      }
      await expectCode(.invalidArgument) { try await Self.warnings(client, h, asOf: "2021-13-01") }
      await expectCode(.invalidArgument) { try await Self.warnings(client, h, asOf: "2021-01-01") }
      await expectCode(.notFound) {
        try await client.listWarnings(
          .with {
            $0.orgCode = "CA"
            $0.termCode = "nope"
          }, metadata: h.auth("county_admin", at: "CA"))
      }
      await expectCode(.permissionDenied) {
        try await client.listWarnings(
          .with {
            $0.orgCode = "CA"
            $0.termCode = "W"
          }, metadata: h.auth("county_admin", at: "CB"))
      }
    }
  }
}
