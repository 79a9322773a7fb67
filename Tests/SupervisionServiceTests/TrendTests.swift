import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import Testing

/// Trends across terms and school years (issue 26, point 2): GetTrends through a real server,
/// its figures checked against a count of the lessons the test sent, made here from scratch.
@Suite struct TrendTests {
  struct TermSpec {
    var code: String
    var name: String
    var start: CalendarDate
    var end: CalendarDate
    var excluded: [CalendarDate] = []

    /// Mondays of the teaching weeks.
    var weeks: [CalendarDate] {
      stride(from: start.monday.dayNumber, through: end.dayNumber, by: 7).map {
        start.monday.adding(days: $0 - start.monday.dayNumber)
      }.filter { !excluded.contains($0) }
    }
  }

  struct Room {
    var code: String
    var school: String
    var kind: Smartschool_Common_V1_SchoolKind
    var equipped: CalendarDate
    var retired: CalendarDate?

    func inService(_ day: CalendarDate) -> Bool {
      equipped <= day && retired.map { day < $0 } != false
    }
    func owes(weekOf monday: CalendarDate) -> Bool {
      equipped <= monday.adding(days: 6) && retired.map { monday < $0 } != false
    }
  }

  static let terms = [
    TermSpec(
      code: "Y19-2", name: "2019—2020学年第二学期", start: CalendarDate("2020-03-02")!,
      end: CalendarDate("2020-03-22")!),
    TermSpec(
      code: "Y20-1", name: "2020—2021学年第一学期", start: CalendarDate("2020-09-07")!,
      end: CalendarDate("2020-10-04")!, excluded: [CalendarDate("2020-09-28")!]),
    TermSpec(
      code: "Y20-2", name: "2020—2021学年第二学期", start: CalendarDate("2021-03-01")!,
      end: CalendarDate("2021-03-14")!),
    TermSpec(
      code: "Y21-1", name: "2021—2022学年第一学期", start: CalendarDate("2021-09-06")!,
      end: CalendarDate("2021-09-19")!),
  ]

  static let rooms = [
    Room(
      code: "R1", school: "A1", kind: .teachingPoint, equipped: CalendarDate("2020-01-01")!),
    // Equipped on a Wednesday: it owes that week.
    Room(code: "R2", school: "A2", kind: .rural, equipped: CalendarDate("2020-09-16")!),
    Room(
      code: "R3", school: "A3", kind: .urban, equipped: CalendarDate("2020-01-01")!,
      retired: CalendarDate("2021-03-08")!),
    Room(code: "R4", school: "B1", kind: .rural, equipped: CalendarDate("2020-01-01")!),
  ]

  /// Every lesson of every term's weekdays (holiday weeks too): 0–3 a day per classroom,
  /// subjects and teachers varying; T2 teaches rarely, so not every teacher meets the target.
  static func lessons() -> [Smartschool_Supervision_V1_Lesson] {
    var out: [Smartschool_Supervision_V1_Lesson] = []
    for term in terms {
      for n in term.start.dayNumber...term.end.dayNumber {
        let day = term.start.adding(days: n - term.start.dayNumber)
        guard day.isoWeekday <= 5 else { continue }
        for (r, room) in rooms.enumerated() where room.inService(day) {
          let count = (n + r * 3 + n / 7) % 4
          for period in stride(from: 1, through: count, by: 1) {
            let subject = Smartschool_Common_V1_Subject(rawValue: (n * 7 + period * 5 + r) % 5 + 1)!
            let teacher = room.school == "B1" ? "T3" : (n + period) % 13 == 0 ? "T2" : "T1"
            out.append(
              lesson(room.code, day.description, Int32(period), subject: subject, teacher: teacher))
          }
        }
      }
    }
    return out
  }

  /// The figures a point must show, counted from `lessons` for the classrooms of `schools`
  /// over `specs`' teaching weeks.
  struct Expected {
    var classrooms: Set<String> = []
    var classroomWeeks = 0
    var lessons = 0
    var subjects = 0
    var compliant = 0
    var teachers = 0
    var met = 0
  }

  static func expected(
    _ specs: [TermSpec], schools: Set<String>, kind: Smartschool_Common_V1_SchoolKind? = nil,
    lessons: [Smartschool_Supervision_V1_Lesson], teachers: [(id: String, born: Int)]
  ) -> Expected {
    var e = Expected()
    for term in specs {
      for room in rooms where schools.contains(room.school) && (kind ?? room.kind) == room.kind {
        for week in term.weeks where room.owes(weekOf: week) {
          let taught = lessons.filter {
            $0.classroomCode == room.code && CalendarDate($0.date)!.monday == week
              && $0.teacherExternalID != "TX"
          }
          let subjects = Set(taught.map(\.subject)).count
          e.classrooms.insert(room.code)
          e.classroomWeeks += 1
          e.lessons += taught.count
          e.subjects += subjects
          if taught.count >= 6 && subjects >= 3 { e.compliant += 1 }
        }
      }
      if kind != nil { continue }
      for t in teachers {
        let taught = lessons.filter { l in
          let day = CalendarDate(l.date)!
          return l.teacherExternalID == t.id && term.start <= day && day <= term.end
            && term.weeks.contains(day.monday)
            && rooms.contains { $0.code == l.classroomCode && schools.contains($0.school) }
        }.count
        let required = term.start.components.year - t.born < 45 ? 4 : 2
        e.teachers += 1
        if taught >= required { e.met += 1 }
      }
    }
    return e
  }

  /// Checks `f` against the counts `e`, rates to within rounding.
  static func check(
    _ f: Smartschool_Supervision_V1_ComplianceFigures, _ e: Expected,
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    #expect(f.classrooms == Int64(e.classrooms.count), sourceLocation: sourceLocation)
    #expect(f.classroomWeeks == Int64(e.classroomWeeks), sourceLocation: sourceLocation)
    #expect(f.lessonCount == Int64(e.lessons), sourceLocation: sourceLocation)
    #expect(f.subjectCount == Int64(e.subjects), sourceLocation: sourceLocation)
    #expect(f.compliantClassroomWeeks == Int64(e.compliant), sourceLocation: sourceLocation)
    let weeks = Double(max(e.classroomWeeks, 1))
    let rates = [
      (f.subjectRatePercent, Double(e.subjects) / (weeks * 3) * 100),
      (f.lessonRatePercent, Double(e.lessons) / (weeks * 6) * 100),
      (f.compliantSharePercent, Double(e.compliant) / weeks * 100),
    ]
    for (got, want) in rates {
      #expect(abs(got - want) <= 0.005 + 1e-9, "\(got) vs \(want)", sourceLocation: sourceLocation)
    }
    #expect(f.lessonRateText == String(format: "%.2f%%", f.lessonRatePercent))
  }

  static func seed(_ client: SupervisionClient, _ h: Harness) async throws
    -> [Smartschool_Supervision_V1_Lesson]
  {
    for t in terms {
      _ = try await client.createTerm(
        .with {
          $0.term = .with {
            $0.code = t.code
            $0.name = t.name
            $0.startDate = t.start.description
            $0.endDate = t.end.description
            $0.excludedWeeks = t.excluded.map(\.description)
          }
        }, metadata: h.auth("province_admin", at: "P"))
    }
    for room in rooms {
      _ = try await client.createClassroom(
        classroom(
          room.code, school: room.school, equipped: room.equipped.description,
          retired: room.retired?.description ?? ""),
        metadata: h.auth("province_admin", at: "P"))
    }
    // A lesson by a teacher identity does not know: held, counted nowhere.
    let rows = lessons() + [lesson("R1", "2020-09-08", 9, subject: .music, teacher: "TX")]
    let summary = try await importLessons(client, rows, h.auth("province_admin", at: "P"))
    #expect(summary.rejected == 0 && summary.held == 1)
    return rows
  }

  static func trends(
    _ client: SupervisionClient, _ org: String, from: String, to: String, _ metadata: Metadata
  ) async throws -> Smartschool_Supervision_V1_Trends {
    try await client.getTrends(
      .with {
        $0.orgCode = org
        $0.fromTermCode = from
        $0.toTermCode = to
      }, metadata: metadata)
  }

  @Test func termsAndSchoolYearsMatchAnIndependentCount() async throws {
    let h = try await Harness()
    try await h.run { client in
      let rows = try await Self.seed(client, h)
      let a = h.auth("county_admin", at: "CA")
      let r = try await Self.trends(client, "CA", from: "Y19-2", to: "Y20-2", a)
      #expect(r.orgCode == "CA" && r.orgName == "Org CA")
      // Terms in order with their names; Y21-1 lies after the range.
      #expect(r.terms.map(\.code) == ["Y19-2", "Y20-1", "Y20-2"])
      #expect(r.terms.map(\.name) == Self.terms.prefix(3).map(\.name))
      #expect(r.terms.map(\.teachingWeeks) == [3, 3, 2])
      #expect(r.terms[1].startDate == "2020-09-07" && r.terms[1].endDate == "2020-10-04")
      #expect(r.years.map(\.code) == ["2019-2020", "2020-2021"])
      #expect(r.years.map(\.name) == ["2019—2020学年", "2020—2021学年"])
      #expect(r.years.map(\.termCodes) == [["Y19-2"], ["Y20-1", "Y20-2"]])
      #expect(r.years[1].startDate == "2020-09-07" && r.years[1].endDate == "2021-03-14")
      #expect(r.years.map(\.teachingWeeks) == [3, 5])

      let county: Set<String> = ["A1", "A2", "A3"]
      let teachers = [(id: "T1", born: 1976), (id: "T2", born: 1975)]
      let points = [
        (r.terms[0], [Self.terms[0]]), (r.terms[1], [Self.terms[1]]),
        (r.terms[2], [Self.terms[2]]), (r.years[0], [Self.terms[0]]),
        (r.years[1], [Self.terms[1], Self.terms[2]]),
      ]
      var someMissed = false
      for (point, specs) in points {
        let e = Self.expected(specs, schools: county, lessons: rows, teachers: teachers)
        Self.check(point.scope, e)
        #expect(point.scope.orgCode == "CA")
        #expect(point.bySchoolKind.map(\.schoolKind) == [.teachingPoint, .rural, .urban])
        for kind in point.bySchoolKind {
          Self.check(
            kind,
            Self.expected(
              specs, schools: county, kind: kind.schoolKind, lessons: rows, teachers: []))
        }
        #expect(point.teachers == Int64(e.teachers) && point.teachersMet == Int64(e.met))
        let share = Double(e.met) / Double(max(e.teachers, 1)) * 100
        #expect(abs(point.teachersMetSharePercent - share) <= 0.005 + 1e-9)
        // Both teachers teach at the teaching point A1.
        #expect(point.teachersBySchoolKind.map(\.total) == [Int64(e.teachers), 0, 0])
        #expect(point.teachersBySchoolKind.map(\.met) == [Int64(e.met), 0, 0])
        if e.met < e.teachers { someMissed = true }
      }
      #expect(someMissed, "the data should leave some teacher short of the target")
      // R2 was not in service in the spring of 2020; R3, retired on 2021-03-08, owes Y20-2's
      // first week only.
      #expect(r.terms.map(\.scope.classrooms) == [2, 3, 3])
      #expect(r.terms[2].bySchoolKind[2].classroomWeeks == 1)
      #expect(r.years.map(\.scope.classrooms) == [2, 3])
      // The year adds up its terms.
      #expect(
        r.years[1].scope.lessonCount == r.terms[1].scope.lessonCount
          + r.terms[2].scope.lessonCount)

      // One school; an open range runs to the last term.
      let school = try await Self.trends(client, "A1", from: "Y20-1", to: "", a)
      #expect(school.terms.map(\.code) == ["Y20-1", "Y20-2", "Y21-1"])
      for (point, spec) in zip(school.terms, Self.terms.dropFirst()) {
        Self.check(
          point.scope,
          Self.expected([spec], schools: ["A1"], lessons: rows, teachers: teachers))
      }
      let all = try await Self.trends(client, "C", from: "", to: "", h.auth("city_admin", at: "C"))
      #expect(all.terms.count == 4 && all.years.count == 3)
      Self.check(
        all.terms[0].scope,
        Self.expected(
          [Self.terms[0]], schools: ["A1", "A2", "A3", "B1"], lessons: rows,
          teachers: teachers + [(id: "T3", born: 0)]))
    }
  }

  @Test func badRangesAndScopesAreRefused() async throws {
    let h = try await Harness()
    try await h.run { client in
      _ = try await Self.seed(client, h)
      let a = h.auth("county_admin", at: "CA")
      await expectCode(.invalidArgument) {
        try await Self.trends(client, "CA", from: "Y20-2", to: "Y19-2", a)
      }
      await expectCode(.invalidArgument) {
        try await Self.trends(client, "CA", from: "Y19 2", to: "", a)
      }
      await expectCode(.invalidArgument) { try await Self.trends(client, "", from: "", to: "", a) }
      await expectCode(.notFound) { try await Self.trends(client, "CA", from: "NOPE", to: "", a) }
      await expectCode(.notFound) { try await Self.trends(client, "CA", from: "", to: "NOPE", a) }
      await expectCode(.notFound) { try await Self.trends(client, "ZZ", from: "", to: "", a) }
      await expectCode(.permissionDenied) {
        try await Self.trends(client, "CA", from: "", to: "", h.auth("county_admin", at: "CB"))
      }
      await expectCode(.unauthenticated) {
        try await Self.trends(client, "CA", from: "", to: "", [:])
      }
      // A range of one term.
      let one = try await Self.trends(client, "CA", from: "Y20-1", to: "Y20-1", a)
      #expect(one.terms.map(\.code) == ["Y20-1"] && one.years.map(\.code) == ["2020-2021"])
      // At most 40 terms: 36 one-week terms more make 40, a 41st is refused.
      func addTerm(_ i: Int) async throws {
        let start = CalendarDate("2030-01-07")!.adding(days: 14 * i)
        _ = try await client.createTerm(
          .with {
            $0.term = .with {
              $0.code = "W\(i)"
              $0.name = "W\(i)"
              $0.startDate = start.description
              $0.endDate = start.adding(days: 4).description
            }
          }, metadata: h.auth("province_admin", at: "P"))
      }
      for i in 0..<36 { try await addTerm(i) }
      let forty = try await Self.trends(client, "CA", from: "", to: "", a)
      #expect(forty.terms.count == 40 && forty.terms.last?.code == "W35")
      try await addTerm(36)
      await expectCode(.invalidArgument) { try await Self.trends(client, "CA", from: "", to: "", a) }
      let last = try await Self.trends(client, "CA", from: "W0", to: "W36", a)
      #expect(last.terms.count == 37 && last.years.map(\.code) == ["2029-2030", "2030-2031"])
    }
  }

  @Test func aTermsSchoolYear() {
    func year(_ d: String) -> String { TrendSeries.schoolYear(of: CalendarDate(d)!).code }
    #expect(year("2025-09-01") == "2025-2026")
    #expect(year("2025-08-01") == "2025-2026")
    #expect(year("2026-02-20") == "2025-2026")
    #expect(year("2026-07-31") == "2025-2026")
    #expect(TrendSeries.schoolYear(of: CalendarDate("2026-03-01")!).name == "2025—2026学年")
  }
}
