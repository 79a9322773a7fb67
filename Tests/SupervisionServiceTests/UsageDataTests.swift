import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import Testing

/// Every change-feed event after `after`, as the system admin reads it.
func feedEvents(_ client: SupervisionClient, after: Int64, _ h: Harness) async throws
  -> [Smartschool_Common_V1_Change]
{
  var out: [Smartschool_Common_V1_Change] = []
  var cursor = after
  while true {
    let page = try await client.listChanges(
      .with {
        $0.afterSequence = cursor
        $0.pageSize = 1000
      }, metadata: h.auth("system_admin", at: nil))
    out += page.changes
    cursor = page.lastSequence
    if !page.moreAvailable { return out }
  }
}

/// The last sequence of the change feed.
func feedHead(_ client: SupervisionClient, _ h: Harness) async throws -> Int64 {
  try await feedEvents(client, after: 0, h).last?.sequence ?? 0
}

func complianceReport(_ client: SupervisionClient, _ org: String, _ metadata: Metadata)
  async throws -> Smartschool_Supervision_V1_ComplianceReport
{
  try await client.getComplianceReport(
    .with {
      $0.orgCode = org
      $0.termCode = "2020-2021-1"
    }, metadata: metadata)
}

func teacherTargets(_ client: SupervisionClient, _ org: String, _ metadata: Metadata)
  async throws -> [String: Int64]
{
  let report = try await client.getTeacherTargets(
    .with {
      $0.orgCode = org
      $0.termCode = "2020-2021-1"
    }, metadata: metadata)
  return Dictionary(
    uniqueKeysWithValues: report.teachers.map { ($0.teacherExternalID, $0.lessons) })
}

/// Usage data that cannot overstate use (issue 26, point 5).
@Suite struct UsageDataTests {
  /// Six lessons in three subjects at R-A1 in the week of 09-07: one compliant classroom-week.
  static func compliantWeek(teacher: String) -> [Smartschool_Supervision_V1_Lesson] {
    let subjects: [Smartschool_Common_V1_Subject] = [.chinese, .mathematics, .english]
    return (0..<6).map { i in
      lesson(
        "R-A1", "2020-09-0\(7 + i / 2)", Int32(i % 2 + 1), subject: subjects[i % 3],
        teacher: teacher)
    }
  }

  @Test func lessonsByTeachersIdentityDoesNotKnowAreHeldAndCountForNothing() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      // T9 is no teacher identity knows.
      var rows = Self.compliantWeek(teacher: "T9")
      rows[5].teacherExternalID = "T1"
      let summary = try await importLessons(client, rows, a)
      #expect(summary.accepted == 6 && summary.rejected == 0 && summary.created == 6)
      #expect(summary.held == 5)
      let listed = try await termLessons(client, under: "CA", a)
      #expect(listed.count == 6)
      let held = listed.filter(\.unverified).map(\.teacherExternalID)
      #expect(held == Array(repeating: "T9", count: 5))
      // Only T1's lesson counts: one lesson, one subject, nothing compliant.
      let report = try await complianceReport(client, "CA", a)
      #expect(report.scope.lessonCount == 1)
      #expect(report.scope.subjectCount == 1)
      #expect(report.scope.compliantClassroomWeeks == 0)
      let week = try await client.getWeeklyNotice(
        .with {
          $0.orgCode = "CA"
          $0.week = "2020-09-07"
        }, metadata: a)
      #expect(week.thisWeek.lessonCount == 1)
      #expect(week.schoolsBelowStandard.contains("A1"))
      #expect(try await teacherTargets(client, "CA", a)["T1"] == 1)

      // The same rows by known teachers verify the held lessons: the week becomes compliant.
      let again = try await importLessons(client, Self.compliantWeek(teacher: "T2"), a)
      #expect(again.held == 0 && again.updated == 6 && again.created == 0)
      #expect(try await termLessons(client, under: "CA", a).allSatisfy { !$0.unverified })
      let verified = try await complianceReport(client, "CA", a)
      #expect(verified.scope.lessonCount == 6 && verified.scope.compliantClassroomWeeks == 1)
    }
  }

  @Test func withTheRejectPolicyUnknownTeachersAreRowErrors() async throws {
    let h = try await Harness(unknownTeachers: .reject)
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      var rows = Self.compliantWeek(teacher: "T1")
      rows[2].teacherExternalID = "T9"
      rows[4].teacherExternalID = "NOBODY"
      let summary = try await importLessons(client, rows, a)
      #expect(summary.accepted == 4 && summary.rejected == 2 && summary.held == 0)
      #expect(summary.errors.map(\.index) == [2, 4])
      #expect(summary.errors.allSatisfy { $0.field == "teacher_external_id" })
      #expect(try await termLessons(client, under: "CA", a).count == 4)
    }
  }

  /// The classrooms and teachers of a stream are looked up a batch's worth of rows at a time:
  /// with three rows a commit, rows whose verdicts depend on rows of earlier lookups (a key
  /// claimed or not, a classroom or teacher met before) and names first met late in the
  /// stream get the summary and the lessons of one commit for the whole stream.
  @Test func rowsCheckedInBatchesGetTheVerdictsOfOneBatch() async throws {
    let rows = [
      lesson("R-A1", "2020-09-07", 1, subject: .chinese),
      lesson("R-A1", "2020-09-07", 2, subject: .chinese, teacher: "T9"),  // unknown teacher
      lesson("NOPE", "2020-09-07", 1, subject: .chinese),  // unknown classroom
      lesson("R-A1", "2020-09-07", 2, subject: .english, teacher: "T2"),  // key free again
      lesson("R-B1", "2020-09-07", 1, subject: .chinese, teacher: "T3"),  // out of scope
      lesson("R-A1", "2020-09-07", 1, subject: .music, teacher: "T2"),  // repeats row 0
      lesson("R-A2", "2020-09-17", 1, subject: .chinese, teacher: "T9"),  // T9 again
      lesson("NOPE", "2020-09-08", 1, subject: .chinese),
      lesson("R-A2", "2020-09-17", 1, subject: .english, teacher: "T1"),  // key free again
      lesson("R-A3", "2020-09-08", 3, subject: .chinese, teacher: "NOBODY"),
      lesson("R-A3", "2020-09-08", 4, subject: .chinese, teacher: "T2"),
      lesson("R-A2", "2020-09-17", 1, subject: .english, teacher: "T1"),  // repeats row 8
    ]
    let results = Captured<[(Smartschool_Common_V1_ImportSummary, Int)]>()
    for batch in [3, 2_000] {
      let h = try await Harness(lessonBatch: batch, unknownTeachers: .reject)
      try await h.run { client in
        try await seedClassrooms(client, h)
        let a = h.auth("county_admin", at: "CA")
        let summary = try await importLessons(client, rows, a)
        let stored = try await termLessons(client, under: "CA", a)
        results.set((results.value ?? []) + [(summary, stored.count)])
      }
    }
    let all = try #require(results.value)
    #expect(all.count == 2)
    let (summary, stored) = all[0]
    #expect(summary == all[1].0 && stored == all[1].1)
    #expect(summary.received == 12 && summary.accepted == 4 && summary.created == 4)
    #expect(summary.errors.map(\.index) == [1, 2, 4, 5, 6, 7, 9, 11])
    #expect(
      summary.errors.map(\.field) == [
        "teacher_external_id", "classroom_code", "classroom_code", "period",
        "teacher_external_id", "classroom_code", "teacher_external_id", "period",
      ])
    #expect(stored == 4)
  }

  @Test func holidayWeekLessonsCountNowhere() async throws {
    let h = try await Harness()
    try await h.run { client in
      // The seed term's week of 09-28 is a holiday.
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      let holiday = (1...6).map { p in
        lesson("R-A1", "2020-09-29", Int32(p), subject: p % 2 == 0 ? .chinese : .english)
      }
      let teaching = [lesson("R-A1", "2020-09-22", 1, subject: .chinese)]
      let summary = try await importLessons(client, holiday + teaching, a)
      #expect(summary.accepted == 7 && summary.created == 7)
      #expect(try await termLessons(client, under: "CA", a).count == 7)
      // Neither compliance nor T1's term target counts the holiday's six lessons.
      let report = try await complianceReport(client, "CA", a)
      #expect(report.scope.lessonCount == 1)
      #expect(try await teacherTargets(client, "CA", a)["T1"] == 1)
    }
  }

  @Test func reportsShowTheManualShare() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      var rows = Self.compliantWeek(teacher: "T1")
      rows[0].source = .manual
      rows[1].source = .manual
      rows[2].source = .device
      _ = try await importLessons(client, rows, a)
      let report = try await complianceReport(client, "CA", a)
      #expect(report.scope.lessonCount == 6 && report.scope.manualLessons == 2)
      #expect(report.scope.manualShareText == "33.33%" && report.scope.manualSharePercent == 33.33)
      let a1 = try #require(report.children.first { $0.orgCode == "A1" })
      #expect(a1.manualLessons == 2)
      #expect(report.byWeek[0].manualLessons == 2 && report.byWeek[1].manualLessons == 0)
      #expect(report.byWeek[1].manualShareText == "0.00%")
      let stored = try await termLessons(client, under: "A1", a)
      #expect(stored.map(\.source) == [.manual, .manual, .device, .platform, .platform, .platform])
    }
  }

  @Test func aKeySentTwiceInOneImportIsReportedAndTheFirstKept() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      let first = lesson("R-A1", "2020-09-07", 1, subject: .chinese)
      let other = lesson("R-A1", "2020-09-07", 2, subject: .english)
      let repeated = lesson("R-A1", "2020-09-07", 1, subject: .mathematics, teacher: "T2")
      // A rejected row does not claim its key: the valid row after it is accepted.
      let bad = lesson("R-A1", "2020-09-08", 1, subject: .chinese, minutes: 0)
      let good = lesson("R-A1", "2020-09-08", 1, subject: .chinese)
      let summary = try await importLessonBatches(
        client, [.with { $0.lessons = [first, other, repeated, bad, good, repeated] }], a)
      #expect(summary.accepted == 3 && summary.rejected == 3 && summary.created == 3)
      #expect(summary.errors.map(\.index) == [2, 3, 5])
      #expect(summary.errors.map(\.field) == ["period", "duration_minutes", "period"])
      #expect(summary.errors[0].reason.contains("row 0"))
      #expect(summary.errors[0].key == "R-A1/2020-09-07/1")
      let stored = try await termLessons(client, under: "A1", a)
      #expect(stored.first { $0.period == 1 && $0.date == "2020-09-07" } == first)
      // In a later import the same key is a replacement, as before.
      let later = try await importLessons(client, [repeated], a)
      #expect(later.updated == 1 && later.rejected == 0)
    }
  }

  @Test func reImportingUnchangedDataWritesNoFeedEvents() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      let p = h.auth("province_admin", at: "P")
      let term = Smartschool_Supervision_V1_Term.with {
        $0.code = "2020-2021-1"
        $0.name = "2020-2021 first term"
        $0.startDate = "2020-09-07"
        $0.endDate = "2020-10-04"
        $0.excludedWeeks = ["2020-09-28"]
      }
      let room = classroom("R-A1", school: "A1", cls: "A1-1", equipped: "2020-08-01").classroom
      let facility = Smartschool_Supervision_V1_FacilityReport.with {
        $0.schoolCode = "A1"
        $0.year = 2020
        $0.smartClassroomPresent = true
        $0.multimediaClassrooms = 3
        $0.broadbandMbps = 300
      }
      _ = try await client.putFacilityReport(.with { $0.report = facility }, metadata: a)
      _ = try await importLessons(client, Self.compliantWeek(teacher: "T1"), a)
      let head = try await feedHead(client, h)

      // The same term, classroom, facility report and lessons again: nothing on the feed.
      _ = try await client.updateTerm(.with { $0.term = term }, metadata: p)
      let sameRoom = try await client.updateClassroom(.with { $0.classroom = room }, metadata: a)
      #expect(sameRoom.classCode == "A1-1")
      let sameReport = try await client.putFacilityReport(
        .with { $0.report = facility }, metadata: a)
      #expect(sameReport.multimediaClassrooms == 3 && sameReport.hasUpdateTime)
      let again = try await importLessons(client, Self.compliantWeek(teacher: "T1"), a)
      #expect(again.created == 0 && again.updated == 0 && again.accepted == 6)
      #expect(try await feedEvents(client, after: head, h).isEmpty)

      // A change to each writes one event each.
      var renamed = term
      renamed.name = "renamed"
      _ = try await client.updateTerm(.with { $0.term = renamed }, metadata: p)
      var moved = room
      moved.classCode = ""
      _ = try await client.updateClassroom(.with { $0.classroom = moved }, metadata: a)
      var more = facility
      more.multimediaClassrooms = 4
      _ = try await client.putFacilityReport(.with { $0.report = more }, metadata: a)
      var changed = Self.compliantWeek(teacher: "T1")[0]
      changed.durationMinutes = 45
      _ = try await importLessons(client, [changed], a)
      let events = try await feedEvents(client, after: head, h)
      #expect(events.map(\.entity).sorted() == ["classroom", "facility_report", "lesson", "term"])
    }
  }
}
