import SmartSchoolModel

/// The reporting rhythm of the seed plans (一月一通报、半年一考核、全年一评比): schools ranked
/// over a month, a half-year or a year of teaching weeks.
public enum Rankings {
  /// First and last day of the period of `period` containing `day`.
  public static func bounds(_ period: Smartschool_Supervision_V1_RankingPeriod, _ day: CalendarDate)
    -> (from: CalendarDate, to: CalendarDate)
  {
    let (y, m, _) = day.components
    let (first, months): (Int, Int) =
      switch period {
      case .month: (m, 1)
      case .halfYear: (m <= 6 ? 1 : 7, 6)
      default: (1, 12)
      }
    let from = CalendarDate(year: y, month: first, day: 1)!
    let next =
      first + months > 12
      ? CalendarDate(year: y + 1, month: 1, day: 1)!
      : CalendarDate(year: y, month: first + months, day: 1)!
    return (from, next.adding(days: -1))
  }

  /// The teaching weeks of any term whose Mondays fall within [from, to], in order.
  public static func weeks(_ terms: [TermCalendar], from: CalendarDate, to: CalendarDate)
    -> [CalendarDate]
  {
    Set(terms.flatMap(\.teachingWeeks)).filter { from <= $0 && $0 <= to }.sorted()
  }

  /// True when a school's classroom-weeks average below 6 lessons or 3 subjects.
  public static func below(_ t: ComplianceTally) -> Bool {
    t.classroomWeeks > 0
      && (t.lessonCount < Compliance.lessonStandard * t.classroomWeeks
        || t.subjectCount < Compliance.subjectStandard * t.classroomWeeks)
  }

  /// `schools` ranked by 课时达标率 over `current` (exactly: cross products), ties by code,
  /// schools without classroom-weeks last, with the change since `previous`.
  public static func rank(
    _ schools: [WeeklyNoticeBuilder.School], current: [String: ComplianceTally],
    previous: [String: ComplianceTally]
  ) -> [Smartschool_Supervision_V1_RankedSchool] {
    let zero = ComplianceTally()
    let ordered = schools.sorted { a, b in
      let x = current[a.code] ?? zero
      let y = current[b.code] ?? zero
      if (x.classroomWeeks == 0) != (y.classroomWeeks == 0) { return y.classroomWeeks == 0 }
      let lhs = x.lessonCount * max(y.classroomWeeks, 1)
      let rhs = y.lessonCount * max(x.classroomWeeks, 1)
      return lhs != rhs ? lhs > rhs : a.code < b.code
    }
    return ordered.enumerated().map { i, s in
      let now = current[s.code] ?? zero
      let before = previous[s.code] ?? zero
      return .with {
        $0.rank = Int32(i + 1)
        $0.schoolCode = s.code
        $0.schoolName = s.name
        $0.schoolKind = s.kind
        $0.figures = now.figures(code: s.code, name: s.name)
        $0.previousLessonRatePercent = before.lessonRate.value
        $0.lessonRateChange = Decimal2.rounded(now.lessonRate.value - before.lessonRate.value)
        $0.belowStandard = below(now)
      }
    }
  }
}
