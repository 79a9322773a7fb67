import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import Testing

/// 一月一通报、半年一考核、全年一评比 (issue 26, point 2).
@Suite struct RankingTests {
  static func ranking(
    _ client: SupervisionClient, _ period: Smartschool_Supervision_V1_RankingPeriod,
    _ date: String, _ metadata: Metadata
  ) async throws -> Smartschool_Supervision_V1_Ranking {
    try await client.getRanking(
      .with {
        $0.orgCode = "CA"
        $0.period = period
        $0.date = date
      }, metadata: metadata)
  }

  @Test func schoolsRankedByMonthHalfYearAndYearWithTheChange() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      _ = try await importLessons(client, importRows, a)

      // September 2020: the seed term's three teaching weeks. A1: 6 lessons in 3 weeks
      // (33.33%); A2 (equipped 09-16): 2 in 2 weeks (16.67%); A3 (retired 09-21): 0 in 2.
      let september = try await Self.ranking(client, .month, "2020-09-17", a)
      #expect(september.fromDate == "2020-09-01" && september.toDate == "2020-09-30")
      #expect(september.previousFromDate == "2020-08-01")
      #expect(september.previousToDate == "2020-08-31")
      #expect(september.weeks == ["2020-09-07", "2020-09-14", "2020-09-21"])
      #expect(september.schools.map(\.schoolCode) == ["A1", "A2", "A3"])
      #expect(september.schools.map(\.rank) == [1, 2, 3])
      #expect(september.schools.map(\.figures.lessonRateText) == ["33.33%", "16.67%", "0.00%"])
      #expect(september.schools.map(\.lessonRateChange) == [33.33, 16.67, 0])
      #expect(september.schoolsBelowStandard == ["A1", "A2", "A3"])
      #expect(september.scope.lessonCount == 8 && september.scope.classroomWeeks == 7)
      #expect(september.bySchoolKind.map(\.lessonCount) == [6, 2, 0])
      #expect(september.schools[2].schoolKind == .urban)

      // October has no teaching week (the term ends 10-04, its last week a holiday): nothing
      // ranked by figures, and every school's change from September.
      let october = try await Self.ranking(client, .month, "2020-10-02", a)
      #expect(october.weeks.isEmpty && october.scope.classroomWeeks == 0)
      #expect(october.schools.map(\.schoolCode) == ["A1", "A2", "A3"])
      #expect(october.schools.map(\.previousLessonRatePercent) == [33.33, 16.67, 0])
      #expect(october.schools.map(\.lessonRateChange) == [-33.33, -16.67, 0])
      #expect(october.schoolsBelowStandard.isEmpty)

      let half = try await Self.ranking(client, .halfYear, "2020-11-11", a)
      #expect(half.fromDate == "2020-07-01" && half.toDate == "2020-12-31")
      #expect(half.previousFromDate == "2020-01-01" && half.weeks.count == 3)
      let year = try await Self.ranking(client, .year, "2020-02-29", a)
      #expect(year.fromDate == "2020-01-01" && year.toDate == "2020-12-31")
      #expect(year.previousToDate == "2019-12-31")
      #expect(year.schools.map(\.figures) == half.schools.map(\.figures))

      await expectCode(.invalidArgument) {
        try await Self.ranking(client, .unspecified, "2020-09-17", a)
      }
      await expectCode(.invalidArgument) { try await Self.ranking(client, .month, "2020-9-17", a) }
      await expectCode(.permissionDenied) {
        try await Self.ranking(client, .month, "2020-09-17", h.auth("county_admin", at: "CB"))
      }
    }
  }

  @Test func periodBounds() {
    func b(_ p: Smartschool_Supervision_V1_RankingPeriod, _ d: String) -> String {
      let (from, to) = Rankings.bounds(p, CalendarDate(d)!)
      return "\(from) \(to)"
    }
    #expect(b(.month, "2024-02-10") == "2024-02-01 2024-02-29")
    #expect(b(.month, "2024-12-31") == "2024-12-01 2024-12-31")
    #expect(b(.halfYear, "2024-06-30") == "2024-01-01 2024-06-30")
    #expect(b(.halfYear, "2024-07-01") == "2024-07-01 2024-12-31")
    #expect(b(.year, "2024-07-01") == "2024-01-01 2024-12-31")
  }
}
