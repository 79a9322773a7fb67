import SmartSchoolModel
import Testing

@Suite("Vocabulary")
struct VocabularyTests {
  @Test func chineseAndEnglishNamesParse() {
    #expect(Smartschool_Common_V1_Subject.parse("数学") == .mathematics)
    #expect(Smartschool_Common_V1_Subject.parse(" Mathematics ") == .mathematics)
    #expect(Smartschool_Common_V1_Subject.parse("道德与法治") == .moralityAndLaw)
    #expect(Smartschool_Common_V1_Subject.parse("算术") == nil)
    #expect(Smartschool_Common_V1_Stage.parse("初中") == .junior)
    #expect(Smartschool_Common_V1_SchoolKind.parse("教学点") == .teachingPoint)
    #expect(Smartschool_Common_V1_SchoolKind.parse("teaching_point") == .teachingPoint)
    #expect(Smartschool_Common_V1_OrgKind.parse("班级") == .`class`)
    #expect(Smartschool_Common_V1_Subject.known.count == 16)
    #expect(Set(Smartschool_Common_V1_Subject.known.map(\.chineseName)).count == 16)
  }

  @Test func stagesCoverGrades() {
    #expect(Smartschool_Common_V1_Stage.of(grade: 6) == .primary)
    #expect(Smartschool_Common_V1_Stage.of(grade: 7) == .junior)
    #expect(Smartschool_Common_V1_Stage.of(grade: 12) == .senior)
    #expect(Smartschool_Common_V1_Stage.of(grade: 13) == nil)
    #expect(Smartschool_Common_V1_OrgKind.`class`.requiredParentKind == .school)
    #expect(Smartschool_Common_V1_OrgKind.province.requiredParentKind == nil)
  }

  @Test func orgPathsCoverByPrefix() {
    let county = OrgPath("/p/c/k/")!
    #expect(county.covers(OrgPath("/p/c/k/s/")!))
    #expect(county.covers(county))
    #expect(!county.covers(OrgPath("/p/c/k2/")!))
    #expect(!OrgPath("/p/c/k/")!.covers("/p/c/kk/"))
    #expect(OrgPath.root.covers(county))
    #expect(county.parent == OrgPath("/p/c/")!)
    #expect(county.appending("s").description == "/p/c/k/s/")
    #expect(OrgPath("p/c") == nil)
    #expect(OrgPath("/p//c/") == nil)
    #expect(OrgPath("/") == .root)
  }
}

@Suite("Calendar")
struct CalendarTests {
  @Test func datesRoundTripAndKnowTheirWeekday() {
    let d = CalendarDate("2020-09-01")!
    #expect(d.description == "2020-09-01")
    #expect(d.isoWeekday == 2)  // a Tuesday
    #expect(d.monday.description == "2020-08-31")
    #expect(CalendarDate("2021-02-29") == nil)
    #expect(CalendarDate("2020-02-29") != nil)
    #expect(CalendarDate("2020-9-1") == nil)
    #expect(CalendarDate(dayNumber: 0).description == "1970-01-01")
    #expect(CalendarDate("2021-01-01")!.adding(days: -1).description == "2020-12-31")
  }

  /// Only `YYYY-MM-DD` in ASCII digits parses, to the date of a day-by-day count: every day
  /// of 1899-2101 round-trips; signs, spaces, other digits, other separators, other lengths
  /// and impossible dates do not parse.
  @Test func onlyTenDigitAndDashDatesParse() {
    let first = CalendarDate(year: 1899, month: 1, day: 1)!
    let last = CalendarDate(year: 2101, month: 12, day: 31)!
    for n in first.dayNumber...last.dayNumber {
      let date = CalendarDate(dayNumber: n)
      #expect(CalendarDate(date.description) == date)
    }
    #expect(CalendarDate("0000-01-01") == CalendarDate(year: 0, month: 1, day: 1))
    #expect(CalendarDate("9999-12-31") == CalendarDate(year: 9999, month: 12, day: 31))
    for bad in [
      "", "2020-09-0", "2020-09-011", "2020-09-01 ", " 2020-09-01", "+202-09-01", "2020-+9-01",
      "2020-09-+1", "-020-09-01", "2020/09/01", "2020-09_01", "20200901--", "2020-0a-01",
      "２０２０-09-01", "2020-09-1٣", "2020-13-01", "2020-00-10", "2020-04-31", "2020-02-30",
      "2020-09-00", "2020-9-01x", "2020-09-01\u{0}",
    ] {
      #expect(CalendarDate(bad) == nil, "\(bad)")
    }
  }

  @Test func teachingWeeksSkipExcludedWeeks() {
    let term = TermCalendar(
      start: CalendarDate("2020-09-01")!, end: CalendarDate("2020-10-16")!,
      excludedWeeks: [CalendarDate("2020-10-01")!])
    let weeks = term.teachingWeeks.map(\.description)
    #expect(weeks == [
      "2020-08-31", "2020-09-07", "2020-09-14", "2020-09-21", "2020-10-05", "2020-10-12",
    ])
    #expect(term.teachingWeek(of: CalendarDate("2020-10-02")!) == nil)
    #expect(term.teachingWeek(of: CalendarDate("2020-09-03")!)?.description == "2020-08-31")
    #expect(term.teachingWeek(of: CalendarDate("2020-10-17")!) == nil)
  }

  @Test func schoolYears() {
    #expect(SchoolYear("2020-2021")?.startYear == 2020)
    #expect(SchoolYear("2020-2022") == nil)
    #expect(SchoolYear("20-21") == nil)
  }
}
