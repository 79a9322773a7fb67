import SmartSchoolModel
import SupervisionService
import Testing

private func d(_ text: String) -> CalendarDate { CalendarDate(text)! }

/// A hand-made term: four Monday-based weeks from 2020-09-07, the week of 2020-09-28 a
/// holiday, so three teaching weeks: 09-07, 09-14, 09-21.
private let term = TermCalendar(
  start: d("2020-09-07"), end: d("2020-10-04"), excludedWeeks: [d("2020-09-30")])

@Suite struct ComplianceArithmeticTests {
  /// Classroom 1 (equipped before the term, at school S1) and classroom 2 (equipped on
  /// Wednesday of the second week, at S2).
  let classrooms = [
    ClassroomSpan(number: 1, code: "R1", orgPath: "/p/c/S1/", equipped: d("2020-08-01")),
    ClassroomSpan(number: 2, code: "R2", orgPath: "/p/c/S2/", equipped: d("2020-09-16")),
  ]

  func lessons() -> [LessonFact] {
    var l: [LessonFact] = []
    // R1, week 1: 6 lessons, 3 subjects (compliant), plus a duplicate of period 1.
    for (i, s) in [1, 1, 2, 2, 3, 3].enumerated() {
      l.append(
        LessonFact(
          classroom: 1, date: d("2020-09-07").adding(days: i / 2), period: i % 2 + 1, subject: s))
    }
    l.append(LessonFact(classroom: 1, date: d("2020-09-07"), period: 1, subject: 1))
    // R1, week 2: 7 lessons but only 2 subjects.
    for i in 0..<7 {
      l.append(
        LessonFact(
          classroom: 1, date: d("2020-09-14").adding(days: i % 5), period: i / 5 + 1,
          subject: i % 2 + 1))
    }
    // R1, week 3: nothing. Holiday week: 5 lessons that must not count.
    for i in 0..<5 {
      l.append(
        LessonFact(classroom: 1, date: d("2020-09-28").adding(days: i), period: 1, subject: i + 1))
    }
    // R2, week 2 (from Wednesday): 3 lessons, 3 subjects.
    for i in 0..<3 {
      l.append(
        LessonFact(classroom: 2, date: d("2020-09-16").adding(days: i), period: 1, subject: i + 1))
    }
    // R2, week 3: 6 lessons, 4 subjects (compliant).
    for i in 0..<6 {
      l.append(
        LessonFact(
          classroom: 2, date: d("2020-09-21").adding(days: i % 3), period: i / 3 + 1,
          subject: i % 4 + 1))
    }
    return l
  }

  @Test func teachingWeeksSkipTheHoliday() {
    #expect(term.teachingWeeks == [d("2020-09-07"), d("2020-09-14"), d("2020-09-21")])
  }

  @Test func tallyDedupesRowsAndDropsHolidayWeek() {
    let usage = Compliance.tally(lessons(), term: term)
    #expect(
      usage[ClassroomWeek(classroom: 1, week: d("2020-09-07"))]
        == WeekUsage(lessons: 6, subjects: 3))
    #expect(
      usage[ClassroomWeek(classroom: 1, week: d("2020-09-14"))]
        == WeekUsage(lessons: 7, subjects: 2))
    #expect(usage[ClassroomWeek(classroom: 1, week: d("2020-09-28"))] == nil)
    #expect(
      usage[ClassroomWeek(classroom: 2, week: d("2020-09-21"))]
        == WeekUsage(lessons: 6, subjects: 4))
  }

  @Test func scopeFiguresFromExactCounts() {
    let usage = Compliance.tally(lessons(), term: term)
    let r = Compliance.evaluate(
      classrooms: classrooms, weeks: term.teachingWeeks, usage: UsageTable(usage)
    ) { $0.orgPath }
    // R1: 3 weeks; R2 equipped mid-term: weeks 2 and 3 only.
    #expect(r.scope.classroomWeeks == 5)
    #expect(r.scope.subjectCount == 3 + 2 + 0 + 3 + 4)
    #expect(r.scope.lessonCount == 6 + 7 + 0 + 3 + 6)
    // Week 2 of R1 has 7 lessons but 2 subjects: not compliant.
    #expect(r.scope.compliantWeeks == 2)
    #expect(r.scope.averageSubjects == 12.0 / 5)
    #expect(r.scope.averageLessons == 22.0 / 5)
    // 2.4 / 3 = 80%, 4.4 / 6 = 73.33%, 2 / 5 = 40%.
    #expect(r.scope.subjectRate.description == "80.00%")
    #expect(r.scope.lessonRate.description == "73.33%")
    #expect(r.scope.lessonRate.value == 73.33)
    #expect(r.scope.compliantShare.description == "40.00%")
    #expect(r.scope.classrooms == [1, 2])
  }

  @Test func groupsAndWeeks() {
    let usage = Compliance.tally(lessons(), term: term)
    let r = Compliance.evaluate(
      classrooms: classrooms, weeks: term.teachingWeeks, usage: UsageTable(usage)
    ) { $0.orgPath }
    #expect(r.groups["/p/c/S1/"]?.classroomWeeks == 3)
    #expect(r.groups["/p/c/S1/"]?.lessonCount == 13)
    #expect(r.groups["/p/c/S2/"]?.classroomWeeks == 2)
    #expect(r.groups["/p/c/S2/"]?.compliantShare.description == "50.00%")
    // Week 1: only R1 (R2 not yet equipped).
    #expect(r.byWeek[d("2020-09-07")]?.classroomWeeks == 1)
    #expect(r.byWeek[d("2020-09-07")]?.compliantWeeks == 1)
    // Week 3: R1 with nothing (counts as 0) and R2 compliant.
    let w3 = r.byWeek[d("2020-09-21")]!
    #expect(w3.classroomWeeks == 2)
    #expect(w3.lessonCount == 6)
    #expect(w3.lessonRate.description == "50.00%")
  }

  @Test func aUsageTableHoldsExactlyWhatWasSet() {
    // Random classroom-weeks on Mondays of the range, off them, before and after it, set in a
    // random order through both ways a table is filled; every one reads back, nothing else does.
    var generator = SystemRandomNumberGenerator()
    let first = d("2020-09-07").dayNumber
    for _ in 0..<20 {
      var entries: [ClassroomWeek: WeekUsage] = [:]
      for _ in 0..<Int.random(in: 0...200, using: &generator) {
        let day = first + Int.random(in: -30...150, using: &generator)
        let week = Bool.random(using: &generator) ? day - (day - first) % 7 : day
        entries[ClassroomWeek(
          classroom: Int64.random(in: 1...12, using: &generator),
          week: CalendarDate(dayNumber: week))] = WeekUsage(
            lessons: Int.random(in: 1...40, using: &generator),
            subjects: Int.random(in: 1...9, using: &generator),
            manual: Int.random(in: 0...3, using: &generator))
      }
      var filled = UsageTable(weeks: first...(first + 7 * 16))
      for (key, u) in entries.shuffled(using: &generator) {
        let row = filled.makeRow(key.classroom)
        filled.set(u, row: row, classroom: key.classroom, week: key.week.dayNumber)
      }
      let converted = UsageTable(entries)
      #expect(filled.entries == entries)
      #expect(converted.entries == entries)
      #expect(filled == converted)
      for classroom in Int64(0)...13 {
        for day in (first - 35)...(first + 160) {
          let week = CalendarDate(dayNumber: day)
          let want = entries[ClassroomWeek(classroom: classroom, week: week)]
          #expect(filled[ClassroomWeek(classroom: classroom, week: week)] == want)
          #expect(
            filled.usage(row: filled.row(of: classroom), classroom: classroom, week: week) == want)
        }
      }
    }
    let empty: UsageTable = [:]
    #expect(empty.entries.isEmpty)
    #expect(empty[1, first] == nil)
  }

  @Test func rateAbove100WhenUseBeatsTheStandard() {
    let span = ClassroomSpan(number: 1, code: "R", orgPath: "/x/", equipped: d("2020-01-01"))
    let usage = [
      ClassroomWeek(classroom: 1, week: d("2020-09-07")): WeekUsage(lessons: 10, subjects: 5)
    ]
    let r = Compliance.evaluate(
      classrooms: [span], weeks: [d("2020-09-07")], usage: UsageTable(usage)
    ) { _ in nil }
    #expect(r.scope.lessonRate.description == "166.67%")
    #expect(r.scope.subjectRate.description == "166.67%")
    #expect(r.groups.isEmpty)
  }

  @Test func noClassroomsGivesZerosNotNaN() {
    let r = Compliance.evaluate(classrooms: [], weeks: term.teachingWeeks, usage: [:]) { _ in nil }
    #expect(r.scope.classroomWeeks == 0)
    #expect(r.scope.averageLessons == 0)
    #expect(r.scope.subjectRate.value == 0)
    #expect(r.scope.compliantShare.description == "0.00%")
    #expect(!r.scope.averageSubjects.isNaN)
  }

  @Test func retiredClassroomWeeks() {
    let span = ClassroomSpan(
      number: 1, code: "R", orgPath: "/x/", equipped: d("2020-08-01"), retired: d("2020-09-14"))
    #expect(span.inService(weekOf: d("2020-09-07")))
    #expect(!span.inService(weekOf: d("2020-09-14")))
    #expect(span.inService(on: d("2020-09-13")))
    #expect(!span.inService(on: d("2020-09-14")))
    let r = Compliance.evaluate(classrooms: [span], weeks: term.teachingWeeks, usage: [:]) { _ in
      nil
    }
    #expect(r.scope.classroomWeeks == 1)
  }

  @Test func percentRounding() {
    #expect(Percent(numerator: 2, denominator: 3).description == "66.67%")
    #expect(Percent(numerator: 1, denominator: 3).description == "33.33%")
    #expect(Percent(numerator: 1, denominator: 8).description == "12.50%")
    #expect(Percent(numerator: 1, denominator: 200_000).description == "0.00%")
    #expect(Percent(numerator: 1, denominator: 20_000).description == "0.01%")  // half up
    #expect(Percent(numerator: 7, denominator: 7).description == "100.00%")
    #expect(Percent(numerator: 5, denominator: 0).description == "0.00%")
  }
}

@Suite struct TargetRuleTests {
  @Test func ageBoundaryAt45() {
    let start = d("2020-09-01")
    // Born 1975: 45 in 2020, not under 45 → 2 lessons.
    #expect(TeacherRule.age(birthYear: 1975, termStart: start) == 45)
    #expect(TeacherRule.requiredLessons(birthYear: 1975, termStart: start) == 2)
    // Born 1976: 44 → 4 lessons.
    #expect(TeacherRule.requiredLessons(birthYear: 1976, termStart: start) == 4)
    // A spring term starting in 2021: born 1976 is now 45.
    #expect(TeacherRule.requiredLessons(birthYear: 1976, termStart: d("2021-02-22")) == 2)
    // Unknown birth year: the general requirement.
    #expect(TeacherRule.age(birthYear: 0, termStart: start) == nil)
    #expect(TeacherRule.requiredLessons(birthYear: 0, termStart: start) == 2)
  }

  @Test func trainingHours() {
    #expect(TeacherRule.trainingMet(halfHours: 120))
    #expect(!TeacherRule.trainingMet(halfHours: 119))
  }

  @Test func ratioFormatting() {
    #expect(Ratio.text(13047, per: 1580) == "8.26:1")
    #expect(Ratio.text(1017, per: 1017) == "1.00:1")
    #expect(Ratio.text(5, per: 2) == "2.50:1")
    #expect(Ratio.text(2, per: 3) == "0.67:1")
    #expect(Ratio.text(1, per: 3) == "0.33:1")
    #expect(Ratio.text(100, per: 0) == "n/a")
    #expect(Ratio.text(0, per: 4) == "0.00:1")
  }

  @Test func coveragePerSchoolKind() {
    var built = FacilityFacts()
    built.standardMet = true
    built.students = 900
    built.studentComputers = 100
    built.teachers = 60
    built.teacherComputers = 60
    built.broadbandMbps = 200
    var point = FacilityFacts()
    point.smartClassroomPresent = true
    point.standardMet = false
    point.students = 40
    point.studentComputers = 10
    point.broadbandMbps = 100
    var notBuilt = FacilityFacts()
    notBuilt.standardMet = false
    notBuilt.smartClassroomPresent = true  // does not count for a rural school
    notBuilt.broadbandMbps = 1000
    let schools = [
      Coverage.School(code: "T1", kind: .teachingPoint),
      Coverage.School(code: "T2", kind: .teachingPoint),
      Coverage.School(code: "R1", kind: .rural),
      Coverage.School(code: "R2", kind: .rural),
      Coverage.School(code: "R3", kind: .rural),
      Coverage.School(code: "U1", kind: .urban),
    ]
    let r = Coverage.report(
      year: 2020, schools: schools,
      reports: ["T1": point, "R1": built, "R2": notBuilt, "U1": built])
    let kinds = Dictionary(uniqueKeysWithValues: r.kinds.map { ($0.schoolKind, $0) })
    #expect(kinds[.teachingPoint]?.schools == 2)
    #expect(kinds[.teachingPoint]?.built == 1)
    #expect(kinds[.teachingPoint]?.coverageText == "50.00%")
    #expect(kinds[.rural]?.schools == 3)
    #expect(kinds[.rural]?.reported == 2)
    #expect(kinds[.rural]?.built == 1)
    #expect(kinds[.rural]?.coverageText == "33.33%")
    #expect(kinds[.urban]?.coveragePercent == 100)
    #expect(r.schools == 6)
    #expect(r.reported == 4)
    // (900 + 40 + 0 + 900) students over (100 + 10 + 0 + 100) computers = 8.76.
    #expect(r.studentsPerComputer == "8.76:1")
    #expect(r.teachersPerComputer == "1.00:1")
    // ≥ 200 Mbps: R1, R2, U1 of 6 schools.
    #expect(r.broadbandMet == 3)
    #expect(r.broadbandShareText == "50.00%")
  }

  @Test func emptyCoverageHasNoNaN() {
    let r = Coverage.report(year: 2020, schools: [], reports: [:])
    #expect(r.kinds.count == 3)
    #expect(r.kinds.allSatisfy { $0.coveragePercent == 0 && $0.coverageText == "0.00%" })
    #expect(r.studentsPerComputer == "n/a")
    #expect(r.broadbandSharePercent == 0)
  }
}

@Suite struct LessonRowTests {
  let classroom = ClassroomRecord(
    number: 7, id: "c7", code: "R7", name: "R7", schoolID: "s", schoolCode: "S",
    classCode: "", orgPath: "/p/s/", equipped: d("2020-09-10"), retired: d("2020-09-25"),
    createTime: 0, updateTime: 0)

  func row(_ date: String, minutes: Int32 = 40) -> Smartschool_Supervision_V1_Lesson {
    .with {
      $0.classroomCode = "R7"
      $0.teacherExternalID = "T1"
      $0.subject = .mathematics
      $0.date = date
      $0.period = 2
      $0.durationMinutes = minutes
      $0.source = .device
    }
  }

  func field(_ r: Result<LessonRecord, RowRejection>) -> String? {
    if case .failure(let e) = r { return e.field }
    return nil
  }

  @Test func rules() {
    let terms = [term]
    let ok = LessonRows.validate(
      row("2020-09-15"), classroom: classroom, inScope: true, terms: terms)
    #expect((try? ok.get())?.naturalKey == "R7/2020-09-15/2")
    #expect(
      field(LessonRows.validate(row("2020-09-15"), classroom: nil, inScope: true, terms: terms))
        == "classroom_code")
    #expect(
      field(
        LessonRows.validate(row("2020-09-15"), classroom: classroom, inScope: false, terms: terms))
        == "classroom_code")
    // Outside any term.
    #expect(
      field(
        LessonRows.validate(row("2020-11-02"), classroom: classroom, inScope: true, terms: terms))
        == "date")
    // Before equipping, and on/after retirement.
    #expect(
      field(
        LessonRows.validate(row("2020-09-08"), classroom: classroom, inScope: true, terms: terms))
        == "date")
    #expect(
      field(
        LessonRows.validate(row("2020-09-25"), classroom: classroom, inScope: true, terms: terms))
        == "date")
    #expect(
      field(
        LessonRows.validate(
          row("2020-09-15", minutes: 0), classroom: classroom, inScope: true, terms: terms))
        == "duration_minutes")
    #expect(
      field(
        LessonRows.validate(
          row("2020-09-15", minutes: 241), classroom: classroom, inScope: true, terms: terms))
        == "duration_minutes")
    #expect(
      field(
        LessonRows.validate(row("2020-9-15"), classroom: classroom, inScope: true, terms: terms))
        == "date")
    var unknownSubject = row("2020-09-15")
    unknownSubject.subject = .unspecified
    #expect(
      field(LessonRows.validate(unknownSubject, classroom: classroom, inScope: true, terms: terms))
        == "subject")
  }
}
