import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import Testing

/// The term of the API tests: 2020-09-07 … 2020-10-04, the week of 09-28 a holiday.
func seedTerm(_ client: SupervisionClient, _ h: Harness) async throws {
  _ = try await client.createTerm(
    .with {
      $0.term = .with {
        $0.code = "2020-2021-1"
        $0.name = "2020-2021 first term"
        $0.startDate = "2020-09-07"
        $0.endDate = "2020-10-04"
        $0.excludedWeeks = ["2020-09-30"]
      }
    }, metadata: h.auth("province_admin", at: "P"))
}

func classroom(
  _ code: String, school: String, cls: String = "", equipped: String, retired: String = ""
) -> Smartschool_Supervision_V1_CreateClassroomRequest {
  .with {
    $0.classroom = .with {
      $0.code = code
      $0.schoolCode = school
      $0.classCode = cls
      $0.equippedDate = equipped
      $0.retiredDate = retired
    }
  }
}

/// Term, classrooms R-A1 (class A1-1), R-A2 (equipped mid-term), R-A3 (retired 09-21),
/// R-B1, and the lesson rows of the import test.
func seedClassrooms(_ client: SupervisionClient, _ h: Harness) async throws {
  try await seedTerm(client, h)
  let a = h.auth("county_admin", at: "CA")
  _ = try await client.createClassroom(
    classroom("R-A1", school: "A1", cls: "A1-1", equipped: "2020-08-01"), metadata: a)
  _ = try await client.createClassroom(
    classroom("R-A2", school: "A2", equipped: "2020-09-16"), metadata: a)
  _ = try await client.createClassroom(
    classroom("R-A3", school: "A3", equipped: "2020-08-01", retired: "2020-09-21"), metadata: a)
  _ = try await client.createClassroom(
    classroom("R-B1", school: "B1", equipped: "2020-08-01"),
    metadata: h.auth("county_admin", at: "CB"))
}

let importRows: [Smartschool_Supervision_V1_Lesson] = [
  lesson("R-A1", "2020-09-07", 1, subject: .chinese),
  lesson("R-A1", "2020-09-07", 2, subject: .mathematics),
  lesson("R-A1", "2020-09-08", 1, subject: .english),
  lesson("R-A1", "2020-09-08", 2, subject: .chinese),
  lesson("R-A1", "2020-09-09", 1, subject: .mathematics),
  lesson("R-A1", "2020-09-09", 2, subject: .english),
  lesson("R-A1", "2020-09-07", 1, subject: .chinese),  // duplicate of row 0
  lesson("R-A1", "2020-11-02", 1, subject: .chinese),  // outside any term
  lesson("R-A3", "2020-09-22", 1, subject: .chinese),  // retired classroom
  lesson("NOPE", "2020-09-07", 1, subject: .chinese),  // unknown classroom
  lesson("R-B1", "2020-09-07", 1, subject: .chinese),  // the next county's classroom
  lesson("R-A2", "2020-09-16", 1, subject: .chinese, minutes: 300),  // too long
  lesson("R-A2", "2020-09-16", 1, subject: .mathematics, teacher: "T2"),
  lesson("R-A2", "2020-09-17", 1, subject: .mathematics, teacher: "T1"),
]

func importLessons(
  _ client: SupervisionClient, _ rows: [Smartschool_Supervision_V1_Lesson], _ metadata: Metadata
) async throws -> Smartschool_Common_V1_ImportSummary {
  try await client.importLessons(metadata: metadata) { writer in
    try await writer.write(contentsOf: rows)
  }
}

/// Registers classroom L-0 at school A1, streams its term's 120 lessons through `importer`
/// and, after the server has taken the classroom's first row but before the stream ends,
/// moves the classroom into class A1-1 through `mover`: every lesson must end up under the
/// class (a batch takes its classroom's path when it is written, not when the stream began).
func expectLessonsFollowAMoveDuringAnImport(
  importer: SupervisionClient, mover: SupervisionClient, _ h: Harness
) async throws {
  try await seedTerm(importer, h)
  let county = h.auth("county_admin", at: "CA")
  _ = try await importer.createClassroom(
    classroom("L-0", school: "A1", equipped: "2020-08-01"), metadata: county)
  let rows = (0..<15).flatMap { day in
    let date = CalendarDate("2020-09-07")!.adding(days: day / 5 * 7 + day % 5).description
    return (1...8).map { lesson("L-0", date, Int32($0), subject: .chinese) }
  }
  let summary = try await importer.importLessons(metadata: county) { writer in
    try await writer.write(contentsOf: rows[..<60])
    try await Task.sleep(for: .milliseconds(300))
    _ = try await mover.updateClassroom(
      .with {
        $0.classroom = .with {
          $0.code = "L-0"
          $0.classCode = "A1-1"
          $0.equippedDate = "2020-08-01"
        }
      }, metadata: county)
    try await writer.write(contentsOf: rows[60...])
  }
  #expect(summary.created == 120)
  #expect(try await termLessons(importer, under: "A1-1", county).count == 120)
}

@Suite struct SupervisionAPITests {
  @Test func aClassroomMovedDuringAnImportTakesItsLessonsAlong() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await expectLessonsFollowAMoveDuringAnImport(importer: client, mover: client, h)
    }
  }

  @Test func termsCreateGetListUpdateAndDenials() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedTerm(client, h)
      let reader = h.auth("county_admin", at: "CA")
      let term = try await client.getTerm(.with { $0.code = "2020-2021-1" }, metadata: reader)
      #expect(term.teachingWeeks == ["2020-09-07", "2020-09-14", "2020-09-21"])
      #expect(term.excludedWeeks == ["2020-09-28"])
      // Duplicate code, a county writer, bad dates, no token, unknown term.
      await expectCode(.alreadyExists) { try await seedTerm(client, h) }
      await expectCode(.permissionDenied) {
        try await client.createTerm(
          .with {
            $0.term = .with {
              $0.code = "x"
              $0.name = "x"
              $0.startDate = "2021-02-22"
              $0.endDate = "2021-07-01"
            }
          },
          metadata: reader)
      }
      do {
        _ = try await client.createTerm(
          .with {
            $0.term = .with {
              $0.code = "bad code"
              $0.name = "x"
              $0.startDate = "2021-02-30"
              $0.endDate = "2021-07-01"
            }
          },
          metadata: h.auth("province_admin", at: "P"))
        Issue.record("expected INVALID_ARGUMENT")
      } catch let error as RPCError {
        #expect(error.code == .invalidArgument)
        #expect(error.message.contains("term.code"))
        #expect(error.message.contains("term.start_date"))
      }
      await expectCode(.unauthenticated) {
        try await client.getTerm(.with { $0.code = "2020-2021-1" })
      }
      await expectCode(.notFound) {
        try await client.getTerm(.with { $0.code = "1999" }, metadata: reader)
      }

      _ = try await client.createTerm(
        .with {
          $0.term = .with {
            $0.code = "2020-2021-2"
            $0.name = "second"
            $0.startDate = "2021-02-22"
            $0.endDate = "2021-07-04"
          }
        },
        metadata: h.auth("province_admin", at: "P"))
      await expectCode(.failedPrecondition) {
        try await client.createTerm(
          .with {
            $0.term = .with {
              $0.code = "overlap"
              $0.name = "o"
              $0.startDate = "2020-10-01"
              $0.endDate = "2020-12-01"
            }
          },
          metadata: h.auth("province_admin", at: "P"))
      }
      let page1 = try await client.listTerms(.with { $0.pageSize = 1 }, metadata: reader)
      #expect(page1.terms.map(\.code) == ["2020-2021-2"])
      let page2 = try await client.listTerms(
        .with {
          $0.pageSize = 1
          $0.pageToken = page1.nextPageToken
        }, metadata: reader)
      #expect(page2.terms.map(\.code) == ["2020-2021-1"])
      #expect(page2.nextPageToken.isEmpty)
      await expectCode(.invalidArgument) {
        try await client.listTerms(.with { $0.pageSize = 1001 }, metadata: reader)
      }

      let updated = try await client.updateTerm(
        .with {
          $0.term = .with {
            $0.code = "2020-2021-1"
            $0.name = "renamed"
            $0.startDate = "2020-09-07"
            $0.endDate = "2020-10-04"
          }
        },
        metadata: h.auth("province_admin", at: "P"))
      #expect(updated.teachingWeeks.count == 4)
      #expect(updated.name == "renamed")
      await expectCode(.permissionDenied) {
        try await client.updateTerm(
          .with {
            $0.term = .with {
              $0.code = "2020-2021-1"
              $0.name = "x"
              $0.startDate = "2020-09-07"
              $0.endDate = "2020-10-04"
            }
          },
          metadata: reader)
      }
    }
  }

  @Test func classroomRegisterAndScope() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      let b = h.auth("county_admin", at: "CB")
      let got = try await client.getClassroom(.with { $0.code = "R-A1" }, metadata: a)
      #expect(got.schoolCode == "A1")
      #expect(got.classCode == "A1-1")
      #expect(got.orgPath == h.tree.paths["A1-1"])
      // One county's official cannot read or write the next county's classrooms.
      await expectCode(.permissionDenied) {
        try await client.getClassroom(.with { $0.code = "R-A1" }, metadata: b)
      }
      await expectCode(.permissionDenied) {
        try await client.createClassroom(
          classroom("R-X", school: "A1", equipped: "2020-08-01"), metadata: b)
      }
      await expectCode(.permissionDenied) {
        try await client.listClassrooms(.with { $0.orgCode = "CA" }, metadata: b)
      }
      await expectCode(.alreadyExists) {
        try await client.createClassroom(
          classroom("R-A1", school: "A1", equipped: "2020-08-01"), metadata: a)
      }
      await expectCode(.invalidArgument) {
        try await client.createClassroom(
          classroom("R-Y", school: "A1", equipped: "2020-09-01", retired: "2020-08-01"), metadata: a
        )
      }
      await expectCode(.invalidArgument) {
        try await client.createClassroom(
          classroom("R-Y", school: "CA", equipped: "2020-09-01"), metadata: a)
      }
      await expectCode(.notFound) {
        try await client.createClassroom(
          classroom("R-Y", school: "ZZ", equipped: "2020-09-01"), metadata: a)
      }
      await expectCode(.invalidArgument) {
        // A class of another school.
        try await client.createClassroom(
          classroom("R-Y", school: "A2", cls: "A1-1", equipped: "2020-09-01"), metadata: a)
      }

      let page1 = try await client.listClassrooms(
        .with {
          $0.orgCode = "CA"
          $0.pageSize = 2
        }, metadata: a)
      #expect(page1.classrooms.map(\.code) == ["R-A1", "R-A2"])
      let page2 = try await client.listClassrooms(
        .with {
          $0.orgCode = "CA"
          $0.pageSize = 2
          $0.pageToken = page1.nextPageToken
        }, metadata: a)
      #expect(page2.classrooms.map(\.code) == ["R-A3"])
      let inService = try await client.listClassrooms(
        .with {
          $0.orgCode = "CA"
          $0.inServiceOn = "2020-10-01"
        }, metadata: a)
      #expect(inService.classrooms.map(\.code) == ["R-A1", "R-A2"])

      let retired = try await client.updateClassroom(
        .with {
          $0.classroom = .with {
            $0.code = "R-A2"
            $0.equippedDate = "2020-09-16"
            $0.retiredDate = "2020-12-01"
            $0.name = "Lab"
          }
        },
        metadata: a)
      #expect(retired.retiredDate == "2020-12-01")
      #expect(retired.name == "Lab")
      await expectCode(.invalidArgument) {
        try await client.updateClassroom(
          .with {
            $0.classroom = .with {
              $0.code = "R-A2"
              $0.schoolCode = "A3"
              $0.equippedDate = "2020-09-16"
            }
          },
          metadata: a)
      }
      await expectCode(.permissionDenied) {
        try await client.updateClassroom(
          .with {
            $0.classroom = .with {
              $0.code = "R-A2"
              $0.equippedDate = "2020-09-16"
            }
          }, metadata: b)
      }
    }
  }

  @Test func lessonImportIsValidatedIdempotentAndScoped() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      let summary = try await importLessons(client, importRows, a)
      #expect(summary.received == 14)
      #expect(summary.accepted == 8)
      #expect(summary.rejected == 6)
      #expect(summary.created == 8)
      #expect(summary.updated == 0)
      #expect(summary.held == 0)
      // The key sent twice is an error in the data, reported against its second row.
      #expect(summary.errors.map(\.index) == [6, 7, 8, 9, 10, 11])
      #expect(
        summary.errors.map(\.field) == [
          "period", "date", "date", "classroom_code", "classroom_code", "duration_minutes",
        ])
      #expect(summary.errors[0].reason.contains("row 0"))
      #expect(summary.errors[2].reason.contains("retired"))
      #expect(summary.errors[1].key == "R-A1/2020-11-02/1")

      // Re-importing is idempotent; a changed row replaces the stored one.
      var changed = importRows[1]
      changed.durationMinutes = 45
      let again = try await importLessons(client, [importRows[0], changed], a)
      #expect(again.created == 0)
      #expect(again.updated == 1)
      #expect(again.accepted == 2)

      // A teacher has no import permission at all.
      await expectCode(.permissionDenied) {
        try await importLessons(client, [importRows[0]], h.auth("teacher", at: "A1"))
      }

      let lessons = try await client.listLessons(
        .with {
          $0.orgCode = "CA"
          $0.fromDate = "2020-09-01"
          $0.toDate = "2020-12-31"
        }, metadata: a
      ) { response in
        var out: [Smartschool_Supervision_V1_Lesson] = []
        for try await l in response.messages { out.append(l) }
        return out
      }
      #expect(lessons.count == 8)
      #expect(
        lessons.first(where: { $0.date == "2020-09-07" && $0.period == 2 })?.durationMinutes == 45)
      let one = try await client.listLessons(
        .with {
          $0.classroomCode = "R-A2"
          $0.fromDate = "2020-09-01"
          $0.toDate = "2020-12-31"
        }, metadata: a
      ) { response in
        var n = 0
        for try await _ in response.messages { n += 1 }
        return n
      }
      #expect(one == 2)
      await expectCode(.permissionDenied) {
        try await client.listLessons(
          .with {
            $0.orgCode = "CA"
            $0.fromDate = "2020-09-01"
            $0.toDate = "2020-12-31"
          },
          metadata: h.auth("county_admin", at: "CB")
        ) { response in for try await _ in response.messages {} }
      }
      await expectCode(.invalidArgument) {
        try await client.listLessons(
          .with {
            $0.orgCode = "CA"
            $0.classroomCode = "R-A1"
            $0.fromDate = "2020-09-01"
            $0.toDate = "2020-12-31"
          },
          metadata: a
        ) { response in for try await _ in response.messages {} }
      }
    }
  }

  @Test func largeImportCommitsInBatchesAndCapsRowErrors() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      var rows: [Smartschool_Supervision_V1_Lesson] = []
      let start = CalendarDate("2020-09-07")!
      for room in ["R-A1", "R-B1"] {
        for day in 0..<28 {
          for period in 1...20 {
            let date = start.adding(days: day).description
            rows.append(lesson(room, date, Int32(period), subject: .chinese))
          }
        }
      }
      for i in 0..<1005 {
        rows.append(lesson("GHOST-\(i)", "2020-09-07", 1, subject: .chinese))
      }
      let summary = try await importLessons(client, rows, h.auth("system_admin", at: nil))
      #expect(summary.received == 2125)
      #expect(summary.accepted == 1120)
      #expect(summary.created == 1120)
      #expect(summary.rejected == 1005)
      #expect(summary.errors.count == 1000)
      #expect(summary.errors.first?.index == 1120)
      let r = try await client.getComplianceReport(
        .with {
          $0.orgCode = "C"
          $0.termCode = "2020-2021-1"
        }, metadata: h.auth("city_admin", at: "C"))
      // Lessons in the holiday week are stored but not counted.
      #expect(r.scope.lessonCount == 2 * 3 * 7 * 20)
    }
  }

  @Test func complianceReportForScopeChildrenAndWeeks() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      _ = try await importLessons(client, importRows, a)
      let r = try await client.getComplianceReport(
        .with {
          $0.orgCode = "CA"
          $0.termCode = "2020-2021-1"
        }, metadata: a)
      #expect(r.weeks == ["2020-09-07", "2020-09-14", "2020-09-21"])
      // R-A1: 3 weeks; R-A2 from week 2; R-A3 retired 09-21: weeks 1–2. 7 classroom-weeks.
      #expect(r.scope.classroomWeeks == 7)
      #expect(r.scope.classrooms == 3)
      #expect(r.scope.lessonCount == 8)
      #expect(r.scope.subjectCount == 4)
      #expect(r.scope.compliantClassroomWeeks == 1)
      #expect(r.scope.subjectRateText == "19.05%")
      #expect(r.scope.lessonRateText == "19.05%")
      #expect(r.scope.lessonRatePercent == 19.05)
      #expect(r.scope.compliantShareText == "14.29%")
      #expect(r.children.map(\.orgCode) == ["A1", "A2", "A3"])
      #expect(r.children[0].classroomWeeks == 3)
      #expect(r.children[0].lessonRateText == "33.33%")
      #expect(r.children[1].classroomWeeks == 2)
      #expect(r.children[1].lessonCount == 2)
      #expect(r.children[1].subjectCount == 1)
      #expect(r.children[2].classroomWeeks == 2)
      #expect(r.children[2].lessonCount == 0)
      #expect(r.byWeek.map(\.classroomWeeks) == [2, 3, 2])
      #expect(r.byWeek.map(\.lessonCount) == [6, 2, 0])

      let ranged = try await client.getComplianceReport(
        .with {
          $0.orgCode = "CA"
          $0.termCode = "2020-2021-1"
          $0.fromWeek = "2020-09-16"
          $0.toWeek = "2020-09-18"
        },
        metadata: a)
      #expect(ranged.weeks == ["2020-09-14"])
      #expect(ranged.scope.classroomWeeks == 3)

      // The next county's official is denied; their own county has one idle classroom.
      await expectCode(.permissionDenied) {
        try await client.getComplianceReport(
          .with {
            $0.orgCode = "CA"
            $0.termCode = "2020-2021-1"
          }, metadata: h.auth("county_admin", at: "CB"))
      }
      let b = try await client.getComplianceReport(
        .with {
          $0.orgCode = "CB"
          $0.termCode = "2020-2021-1"
        }, metadata: h.auth("county_admin", at: "CB"))
      #expect(b.scope.classroomWeeks == 3)
      #expect(b.scope.lessonRateText == "0.00%")
      // A school scope without classrooms: zeros, not an error.
      let empty = try await client.getComplianceReport(
        .with {
          $0.orgCode = "A3"
          $0.termCode = "2020-2021-1"
          $0.fromWeek = "2020-09-21"
        }, metadata: a)
      #expect(empty.scope.classroomWeeks == 0)
      #expect(empty.scope.averageLessons == 0)
      #expect(empty.scope.compliantShareText == "0.00%")
      // The city sees its counties as children.
      let city = try await client.getComplianceReport(
        .with {
          $0.orgCode = "C"
          $0.termCode = "2020-2021-1"
        }, metadata: h.auth("city_admin", at: "C"))
      #expect(city.children.map(\.orgCode) == ["CA", "CB"])
      #expect(city.children.map(\.classroomWeeks) == [7, 3])

      await expectCode(.notFound) {
        try await client.getComplianceReport(
          .with {
            $0.orgCode = "CA"
            $0.termCode = "nope"
          }, metadata: a)
      }
      await expectCode(.invalidArgument) {
        try await client.getComplianceReport(
          .with {
            $0.orgCode = "CA"
            $0.termCode = "2020-2021-1"
            $0.fromWeek = "2021-05-01"
          }, metadata: a)
      }
    }
  }

  @Test func weeklyNotice() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      _ = try await importLessons(client, importRows, a)
      let w1 = try await client.getWeeklyNotice(
        .with {
          $0.orgCode = "CA"
          $0.week = "2020-09-09"
        }, metadata: a)
      #expect(w1.week == "2020-09-07")
      #expect(w1.previousWeek == "")
      #expect(w1.schools.map(\.schoolCode) == ["A1", "A3", "A2"])
      #expect(w1.schools[0].lessonsPerClassroom == 6)
      #expect(w1.schools[2].classrooms == 0)
      #expect(w1.schoolsBelowStandard == ["A3"])
      #expect(w1.classroomsBelowStandard.map(\.classroomCode) == ["R-A3"])

      let w2 = try await client.getWeeklyNotice(
        .with {
          $0.orgCode = "CA"
          $0.week = "2020-09-14"
        }, metadata: a)
      #expect(w2.previousWeek == "2020-09-07")
      #expect(w2.schools.map(\.schoolCode) == ["A2", "A1", "A3"])
      #expect(w2.schools[0].lessonsPerClassroom == 2)
      #expect(w2.schools[1].change == -6)
      #expect(w2.schoolsBelowStandard == ["A2", "A1", "A3"])
      #expect(w2.thisWeek.classroomWeeks == 3)
      #expect(w2.previous.classroomWeeks == 2)
      // 2/3 − 6/2 = −2.33 lessons per classroom-week.
      #expect(w2.lessonsPerClassroomChange == -2.33)

      await expectCode(.failedPrecondition) {
        try await client.getWeeklyNotice(
          .with {
            $0.orgCode = "CA"
            $0.week = "2020-09-29"
          }, metadata: a)
      }
      await expectCode(.invalidArgument) {
        try await client.getWeeklyNotice(
          .with {
            $0.orgCode = "CA"
            $0.week = "soon"
          }, metadata: a)
      }
      await expectCode(.permissionDenied) {
        try await client.getWeeklyNotice(
          .with {
            $0.orgCode = "CA"
            $0.week = "2020-09-14"
          }, metadata: h.auth("county_admin", at: "CB"))
      }
    }
  }

  @Test func teacherTargetsAndTraining() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      _ = try await importLessons(client, importRows, a)
      let t = try await client.getTeacherTargets(
        .with {
          $0.orgCode = "CA"
          $0.termCode = "2020-2021-1"
        }, metadata: a)
      #expect(t.teachers.map(\.teacherExternalID) == ["T1", "T2"])
      // T1 (born 1976, 44): 7 lessons of 4. T2 (born 1975, 45): 1 lesson of 2.
      #expect(t.teachers[0].required == 4)
      #expect(t.teachers[0].lessons == 7)
      #expect(t.teachers[0].met)
      #expect(t.teachers[0].ageAtTermStart == 44)
      #expect(t.teachers[1].required == 2)
      #expect(t.teachers[1].lessons == 1)
      #expect(!t.teachers[1].met)
      #expect(t.teachers[0].schoolCode == "A1")
      #expect(t.metShareText == "50.00%")
      await expectCode(.permissionDenied) {
        try await client.getTeacherTargets(
          .with {
            $0.orgCode = "CA"
            $0.termCode = "2020-2021-1"
          }, metadata: h.auth("county_admin", at: "CB"))
      }

      func record(_ teacher: String, _ hours: Double)
        -> Smartschool_Supervision_V1_CreateTrainingRecordRequest
      {
        .with {
          $0.record = .with {
            $0.teacherExternalID = teacher
            $0.course = "信息化素养"
            $0.hours = hours
            $0.completedDate = "2020-10-01"
          }
        }
      }
      let created = try await client.createTrainingRecord(record("T1", 30), metadata: a)
      #expect(!created.id.isEmpty)
      _ = try await client.createTrainingRecord(record("T1", 30), metadata: a)
      _ = try await client.createTrainingRecord(record("T2", 10.5), metadata: a)
      await expectCode(.invalidArgument) {
        try await client.createTrainingRecord(record("T1", 0.3), metadata: a)
      }
      await expectCode(.notFound) {
        try await client.createTrainingRecord(record("T9", 3), metadata: a)
      }
      await expectCode(.permissionDenied) {
        try await client.createTrainingRecord(
          record("T1", 3), metadata: h.auth("county_admin", at: "CB"))
      }
      let report = try await client.getTrainingReport(
        .with {
          $0.orgCode = "CA"
          $0.year = 2020
        }, metadata: a)
      #expect(report.requiredHours == 60)
      #expect(report.teachers.map(\.hours) == [60, 10.5])
      #expect(report.teachers.map(\.met) == [true, false])
      #expect(report.metShareText == "50.00%")
      let other = try await client.getTrainingReport(
        .with {
          $0.orgCode = "CA"
          $0.year = 2021
        }, metadata: a)
      #expect(other.metCount == 0)
      await expectCode(.invalidArgument) {
        try await client.getTrainingReport(
          .with {
            $0.orgCode = "CA"
            $0.year = 20
          }, metadata: a)
      }
    }
  }

  @Test func facilityAndCoverage() async throws {
    let h = try await Harness()
    try await h.run { client in
      let a = h.auth("county_admin", at: "CA")
      _ = try await client.putFacilityReport(
        .with {
          $0.report = .with {
            $0.schoolCode = "A1"
            $0.year = 2020
            $0.smartClassroomPresent = true
            $0.students = 40
            $0.studentComputers = 10
            $0.teachers = 4
            $0.teacherComputers = 4
            $0.broadbandMbps = 100
          }
        },
        metadata: a)
      _ = try await client.putFacilityReport(
        .with {
          $0.report = .with {
            $0.schoolCode = "A2"
            $0.year = 2020
            $0.standardMet = false
            $0.students = 900
            $0.studentComputers = 100
            $0.teachers = 60
            $0.teacherComputers = 50
            $0.broadbandMbps = 200
            $0.campusNetwork = true
          }
        },
        metadata: a)
      // Replacing the report of (A2, 2020).
      _ = try await client.putFacilityReport(
        .with {
          $0.report = .with {
            $0.schoolCode = "A2"
            $0.year = 2020
            $0.standardMet = true
            $0.students = 900
            $0.studentComputers = 100
            $0.teachers = 60
            $0.teacherComputers = 50
            $0.broadbandMbps = 200
            $0.campusNetwork = true
          }
        },
        metadata: a)
      let got = try await client.getFacilityReport(
        .with {
          $0.schoolCode = "A2"
          $0.year = 2020
        }, metadata: a)
      #expect(got.standardMet)
      await expectCode(.notFound) {
        try await client.getFacilityReport(
          .with {
            $0.schoolCode = "A3"
            $0.year = 2020
          }, metadata: a)
      }
      await expectCode(.permissionDenied) {
        try await client.putFacilityReport(
          .with {
            $0.report = .with {
              $0.schoolCode = "A1"
              $0.year = 2020
            }
          }, metadata: h.auth("county_admin", at: "CB"))
      }
      await expectCode(.invalidArgument) {
        try await client.putFacilityReport(
          .with {
            $0.report = .with {
              $0.schoolCode = "A1"
              $0.year = 2020
              $0.students = -1
            }
          }, metadata: a)
      }
      let c = try await client.getCoverageReport(
        .with {
          $0.orgCode = "CA"
          $0.year = 2020
        }, metadata: a)
      #expect(c.kinds.map(\.schoolKind) == [.teachingPoint, .rural, .urban])
      #expect(c.kinds.map(\.coverageText) == ["100.00%", "100.00%", "0.00%"])
      #expect(c.kinds.map(\.schools) == [1, 1, 1])
      #expect(c.schools == 3)
      #expect(c.reported == 2)
      #expect(c.studentsPerComputer == "8.55:1")
      #expect(c.teachersPerComputer == "1.19:1")
      #expect(c.broadbandMet == 1)
      #expect(c.broadbandShareText == "33.33%")
      #expect(c.campusNetworkSchools == 1)
      await expectCode(.permissionDenied) {
        try await client.getCoverageReport(
          .with {
            $0.orgCode = "CA"
            $0.year = 2020
          }, metadata: h.auth("county_admin", at: "CB"))
      }
      let b = try await client.getCoverageReport(
        .with {
          $0.orgCode = "CB"
          $0.year = 2020
        }, metadata: h.auth("county_admin", at: "CB"))
      #expect(b.reported == 0)
      #expect(b.studentsPerComputer == "n/a")
    }
  }

  @Test func inspections() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let inspector = h.auth("inspector", at: "CA")
      let first = try await client.createInspection(visit("A1", "2020-10-12"), metadata: inspector)
      #expect(first.inspector == "inspector@CA")
      _ = try await client.createInspection(visit("A1", "2020-11-03"), metadata: inspector)
      var withRoom = visit("A2", "2019-05-01")
      withRoom.inspection.classroomCode = "R-A2"
      _ = try await client.createInspection(withRoom, metadata: inspector)
      var wrongRoom = visit("A1", "2020-05-01")
      wrongRoom.inspection.classroomCode = "R-A2"
      await expectCode(.invalidArgument) {
        try await client.createInspection(wrongRoom, metadata: inspector)
      }
      var unrated = visit("A1", "2020-05-01")
      unrated.inspection.rating = .unspecified
      await expectCode(.invalidArgument) {
        try await client.createInspection(unrated, metadata: inspector)
      }
      await expectCode(.permissionDenied) {
        try await client.createInspection(
          visit("A1", "2020-10-12"), metadata: h.auth("inspector", at: "CB"))
      }
      // A school admin may read but not inspect.
      await expectCode(.permissionDenied) {
        try await client.createInspection(
          visit("A1", "2020-10-12"), metadata: h.auth("school_admin", at: "A1"))
      }

      let page1 = try await client.listInspections(
        .with {
          $0.orgCode = "CA"
          $0.pageSize = 2
        }, metadata: inspector)
      #expect(page1.inspections.map(\.date) == ["2020-11-03", "2020-10-12"])
      let page2 = try await client.listInspections(
        .with {
          $0.orgCode = "CA"
          $0.pageSize = 2
          $0.pageToken = page1.nextPageToken
        }, metadata: inspector)
      #expect(page2.inspections.map(\.date) == ["2019-05-01"])
      let year = try await client.listInspections(
        .with {
          $0.orgCode = "CA"
          $0.year = 2019
        }, metadata: inspector)
      #expect(year.inspections.count == 1)

      let s = try await client.getInspectionSummary(
        .with {
          $0.orgCode = "CA"
          $0.year = 2020
        }, metadata: inspector)
      #expect(s.schools == 3)
      #expect(s.inspected.map(\.schoolCode) == ["A1"])
      #expect(s.inspected[0].inspections == 2)
      #expect(s.inspected[0].lastDate == "2020-11-03")
      #expect(s.notInspected.map(\.schoolCode) == ["A2", "A3"])
      #expect(s.inspectedShareText == "33.33%")
      await expectCode(.permissionDenied) {
        try await client.getInspectionSummary(
          .with {
            $0.orgCode = "CA"
            $0.year = 2020
          }, metadata: h.auth("inspector", at: "CB"))
      }
    }
  }

  @Test func changeFeedIsScoped() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      _ = try await importLessons(client, importRows, a)
      let feed = try await client.listChanges(.with { $0.pageSize = 1000 }, metadata: a)
      let classrooms = feed.changes.filter { $0.entity == "classroom" }.map(\.naturalKey)
      #expect(classrooms == ["R-A1", "R-A2", "R-A3"])
      #expect(feed.changes.filter { $0.entity == "lesson" }.count == 8)
      #expect(!feed.changes.contains { $0.entity == "term" })
      #expect(feed.lastSequence == feed.changes.last?.sequence)
      let page = try await client.listChanges(.with { $0.pageSize = 2 }, metadata: a)
      #expect(page.changes.count == 2)
      #expect(page.moreAvailable)
      let next = try await client.listChanges(
        .with {
          $0.pageSize = 2
          $0.afterSequence = page.lastSequence
        }, metadata: a)
      #expect(next.changes.first!.sequence > page.lastSequence)

      let all = try await client.listChanges(
        .with { $0.pageSize = 1000 }, metadata: h.auth("system_admin", at: nil))
      #expect(all.changes.contains { $0.entity == "term" })
      #expect(all.changes.contains { $0.naturalKey == "R-B1" })
      let b = try await client.listChanges(
        .with { $0.pageSize = 1000 }, metadata: h.auth("county_admin", at: "CB"))
      #expect(b.changes.map(\.naturalKey) == ["R-B1"])
      await expectCode(.permissionDenied) {
        try await client.listChanges(
          .with { $0.pageSize = 10 }, metadata: h.auth("teacher", at: "A1"))
      }
      await expectCode(.invalidArgument) {
        try await client.listChanges(.with { $0.afterSequence = -1 }, metadata: a)
      }
    }
  }
}
