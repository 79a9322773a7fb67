import SmartSchoolModel

/// A smart classroom as compliance sees it: where it belongs and when it was in service.
public struct ClassroomSpan: Hashable, Sendable {
  /// The store's number for the classroom.
  public var number: Int64
  /// The classroom's code.
  public var code: String
  /// Path of its school (or class).
  public var orgPath: String
  /// First day in service.
  public var equipped: CalendarDate
  /// First day out of service (`nil` while in service).
  public var retired: CalendarDate?

  public init(
    number: Int64, code: String, orgPath: String, equipped: CalendarDate,
    retired: CalendarDate? = nil
  ) {
    self.number = number
    self.code = code
    self.orgPath = orgPath
    self.equipped = equipped
    self.retired = retired
  }

  /// True when lessons on `date` belong to the service period [equipped, retired).
  public func inService(on date: CalendarDate) -> Bool {
    equipped <= date && (retired.map { date < $0 } ?? true)
  }

  /// True when the classroom was in service on at least one day of the week of `monday`:
  /// a classroom equipped mid-week owes that week, so no lesson it logged is ever left out.
  public func inService(weekOf monday: CalendarDate) -> Bool {
    equipped <= monday.adding(days: 6) && (retired.map { monday < $0 } ?? true)
  }
}

/// One classroom in one teaching week.
public struct ClassroomWeek: Hashable, Sendable {
  public var classroom: Int64
  /// Monday of the week.
  public var week: CalendarDate

  public init(classroom: Int64, week: CalendarDate) {
    self.classroom = classroom
    self.week = week
  }
}

/// What a classroom taught in a week: lessons, distinct subjects, and the lessons entered by
/// hand among them.
public struct WeekUsage: Hashable, Sendable {
  public var lessons: Int
  public var subjects: Int
  public var manual: Int

  public init(lessons: Int, subjects: Int, manual: Int = 0) {
    self.lessons = lessons
    self.subjects = subjects
    self.manual = manual
  }

  /// The normal-use standard (常态化应用标准): ≥ 3 subjects and ≥ 6 lessons a week.
  public var compliant: Bool {
    subjects >= Compliance.subjectStandard && lessons >= Compliance.lessonStandard
  }
}

/// Usage per classroom-week as the reports read it: a row of weeks per classroom, so that a
/// city's tens of thousands of classroom-weeks cost one hash per classroom instead of one per
/// classroom-week, both when the store fills it and when a report looks them up. Weeks are
/// Mondays' day numbers in `weeks`, 7 apart; a classroom-week without usage reads nil.
public struct UsageTable: Sendable, Equatable, ExpressibleByDictionaryLiteral {
  /// Day number of the first Monday of the range, and the number of weeks in it.
  public let firstWeek: Int
  public let weekCount: Int
  /// Classroom → index of its first cell in `cells`.
  private var rows: [Int64: Int] = [:]
  private var cells: [WeekUsage?] = []
  /// Classroom-weeks outside the range or off its Mondays (none from the stores' reads).
  private var stray: [ClassroomWeek: WeekUsage] = [:]

  /// An empty table over the Mondays in `weeks` (day numbers).
  public init(weeks: ClosedRange<Int>) {
    firstWeek = weeks.lowerBound
    weekCount = (weeks.upperBound - weeks.lowerBound) / 7 + 1
  }

  public init(_ entries: [ClassroomWeek: WeekUsage]) {
    let days = entries.keys.map(\.week.dayNumber)
    self.init(weeks: (days.min() ?? 0)...(days.max() ?? 0))
    for (key, u) in entries { self[key.classroom, key.week.dayNumber] = u }
  }

  public init(dictionaryLiteral elements: (ClassroomWeek, WeekUsage)...) {
    self.init(Dictionary(elements, uniquingKeysWith: { _, last in last }))
  }

  /// The column of the week of Monday `day`, nil outside the range or off its Mondays.
  private func column(_ day: Int) -> Int? {
    let offset = day - firstWeek
    guard offset >= 0, offset % 7 == 0, offset / 7 < weekCount else { return nil }
    return offset / 7
  }

  /// The usage of `classroom` in the week of Monday `week` (a day number).
  public subscript(classroom: Int64, week: Int) -> WeekUsage? {
    get {
      guard let column = column(week) else {
        return stray[ClassroomWeek(classroom: classroom, week: CalendarDate(dayNumber: week))]
      }
      return rows[classroom].flatMap { cells[$0 + column] }
    }
    set {
      guard let column = column(week) else {
        stray[ClassroomWeek(classroom: classroom, week: CalendarDate(dayNumber: week))] = newValue
        return
      }
      guard newValue != nil || rows[classroom] != nil else { return }
      cells[makeRow(classroom) + column] = newValue
    }
  }

  public subscript(key: ClassroomWeek) -> WeekUsage? {
    self[key.classroom, key.week.dayNumber]
  }

  /// The row of `classroom`, made empty if it has none: for a store filling the table one
  /// classroom at a time (``set(_:row:classroom:week:)``).
  public mutating func makeRow(_ classroom: Int64) -> Int {
    if let known = rows[classroom] { return known }
    let start = cells.count
    rows[classroom] = start
    cells.append(contentsOf: repeatElement(nil, count: weekCount))
    return start
  }

  /// Sets the usage of `classroom`, whose row ``makeRow(_:)`` gave, in the week of Monday
  /// `week` (a day number).
  public mutating func set(_ usage: WeekUsage, row: Int, classroom: Int64, week: Int) {
    if let column = column(week) {
      cells[row + column] = usage
    } else {
      stray[ClassroomWeek(classroom: classroom, week: CalendarDate(dayNumber: week))] = usage
    }
  }

  /// The row of `classroom`, for ``usage(row:classroom:week:)``; nil when it has no usage.
  public func row(of classroom: Int64) -> Int? { rows[classroom] }

  /// The usage of `classroom`, whose row ``row(of:)`` gave, in the week of Monday `week`: the
  /// subscript without hashing the classroom again for each of its weeks.
  public func usage(row: Int?, classroom: Int64, week: CalendarDate) -> WeekUsage? {
    if let column = column(week.dayNumber) { return row.flatMap { cells[$0 + column] } }
    return stray.isEmpty ? nil : stray[ClassroomWeek(classroom: classroom, week: week)]
  }

  /// Every classroom-week with usage.
  public var entries: [ClassroomWeek: WeekUsage] {
    var out = stray
    for (classroom, start) in rows {
      for column in 0..<weekCount {
        guard let u = cells[start + column] else { continue }
        let week = CalendarDate(dayNumber: firstWeek + 7 * column)
        out[ClassroomWeek(classroom: classroom, week: week)] = u
      }
    }
    return out
  }

  public static func == (a: UsageTable, b: UsageTable) -> Bool { a.entries == b.entries }
}

/// A lesson reduced to what compliance counts.
public struct LessonFact: Hashable, Sendable {
  public var classroom: Int64
  public var date: CalendarDate
  public var period: Int
  public var subject: Int

  public init(classroom: Int64, date: CalendarDate, period: Int, subject: Int) {
    self.classroom = classroom
    self.date = date
    self.period = period
    self.subject = subject
  }
}

/// Exact counts over a set of classroom-weeks; every rate derives from them.
public struct ComplianceTally: Hashable, Sendable {
  public var classroomWeeks = 0
  public var subjectCount = 0
  public var lessonCount = 0
  public var compliantWeeks = 0
  public var manualLessons = 0
  public var classrooms: Set<Int64> = []

  public init() {}

  public mutating func add(classroom: Int64, usage: WeekUsage) {
    add(usage)
    classrooms.insert(classroom)
  }

  /// Adds one classroom-week of a classroom already counted in ``classrooms``.
  mutating func add(_ usage: WeekUsage) {
    classroomWeeks += 1
    subjectCount += usage.subjects
    lessonCount += usage.lessons
    manualLessons += usage.manual
    if usage.compliant { compliantWeeks += 1 }
  }

  /// Adds the counts of `other` (classroom sets united).
  public mutating func merge(_ other: ComplianceTally) {
    classroomWeeks += other.classroomWeeks
    subjectCount += other.subjectCount
    lessonCount += other.lessonCount
    compliantWeeks += other.compliantWeeks
    manualLessons += other.manualLessons
    classrooms.formUnion(other.classrooms)
  }

  /// Average distinct subjects per classroom-week (0 without classroom-weeks).
  public var averageSubjects: Double {
    classroomWeeks == 0 ? 0 : Double(subjectCount) / Double(classroomWeeks)
  }

  /// Average lessons per classroom-week (0 without classroom-weeks).
  public var averageLessons: Double {
    classroomWeeks == 0 ? 0 : Double(lessonCount) / Double(classroomWeeks)
  }

  /// 学科达标率 in hundredths of a percent: subjects ÷ (classroom-weeks × 3).
  public var subjectRate: Percent {
    Percent(numerator: subjectCount, denominator: classroomWeeks * Compliance.subjectStandard)
  }

  /// 课时达标率 in hundredths of a percent: lessons ÷ (classroom-weeks × 6).
  public var lessonRate: Percent {
    Percent(numerator: lessonCount, denominator: classroomWeeks * Compliance.lessonStandard)
  }

  /// Share of the lessons entered by hand.
  public var manualShare: Percent {
    Percent(numerator: manualLessons, denominator: lessonCount)
  }

  /// Share of classroom-weeks meeting both standards.
  public var compliantShare: Percent {
    Percent(numerator: compliantWeeks, denominator: classroomWeeks)
  }
}

/// The result of a compliance evaluation: the whole scope, each group, each week and each
/// classroom with a week in service.
public struct ComplianceResult: Sendable {
  public var weeks: [CalendarDate]
  public var scope = ComplianceTally()
  public var groups: [String: ComplianceTally] = [:]
  public var byWeek: [CalendarDate: ComplianceTally] = [:]
  public var byClassroom: [Int64: ComplianceTally] = [:]
}

/// Normal-use compliance (常态化应用).
public enum Compliance {
  public static let subjectStandard = 3
  public static let lessonStandard = 6

  /// Usage per classroom-week from raw lessons. Rows with the same (classroom, date, period)
  /// are one lesson (the last one wins, as the import's upsert does); lessons outside the
  /// term's teaching weeks are not counted.
  public static func tally(_ lessons: [LessonFact], term: TermCalendar) -> [ClassroomWeek:
    WeekUsage]
  {
    struct Key: Hashable {
      var classroom: Int64
      var day: Int
      var period: Int
    }
    var unique: [Key: LessonFact] = [:]
    for l in lessons {
      unique[Key(classroom: l.classroom, day: l.date.dayNumber, period: l.period)] = l
    }
    var lessonsPerWeek: [ClassroomWeek: Int] = [:]
    var subjectsPerWeek: [ClassroomWeek: Set<Int>] = [:]
    for l in unique.values {
      guard let week = term.teachingWeek(of: l.date) else { continue }
      let key = ClassroomWeek(classroom: l.classroom, week: week)
      lessonsPerWeek[key, default: 0] += 1
      subjectsPerWeek[key, default: []].insert(l.subject)
    }
    return lessonsPerWeek.reduce(into: [:]) { out, entry in
      out[entry.key] = WeekUsage(lessons: entry.value, subjects: subjectsPerWeek[entry.key]!.count)
    }
  }

  /// Evaluates the classroom-weeks of `classrooms` over `weeks`: each week during which a
  /// classroom was in service is one unit, with the usage found (or zero). `group` names the
  /// group (child org) of a classroom, `nil` for none.
  public static func evaluate(
    classrooms: [ClassroomSpan], weeks: [CalendarDate], usage: UsageTable,
    group: (ClassroomSpan) -> String?
  ) -> ComplianceResult {
    var result = ComplianceResult(weeks: weeks)
    let zero = WeekUsage(lessons: 0, subjects: 0)
    var byWeek = Array(repeating: ComplianceTally(), count: weeks.count)
    // Each classroom is tallied once, then merged into the scope and its group: a city's
    // report adds tens of thousands of classroom-weeks.
    for c in classrooms {
      var own = ComplianceTally()
      let row = usage.row(of: c.number)
      for (i, week) in weeks.enumerated() where c.inService(weekOf: week) {
        let u = usage.usage(row: row, classroom: c.number, week: week) ?? zero
        own.add(u)
        byWeek[i].add(classroom: c.number, usage: u)
      }
      guard own.classroomWeeks > 0 else { continue }
      own.classrooms = [c.number]
      result.byClassroom[c.number] = own
      result.scope.merge(own)
      if let name = group(c) { result.groups[name, default: ComplianceTally()].merge(own) }
    }
    for (i, week) in weeks.enumerated() { result.byWeek[week] = byWeek[i] }
    return result
  }
}

/// A percentage computed from exact counts and rounded half up to hundredths of a percent;
/// 0 when the denominator is 0 (never NaN).
public struct Percent: Hashable, Sendable, CustomStringConvertible {
  /// The percentage × 100, e.g. 6667 for 66.67%.
  public let hundredths: Int

  public init(numerator: Int, denominator: Int) {
    guard denominator > 0, numerator >= 0 else {
      hundredths = 0
      return
    }
    // numerator / denominator × 10,000, rounded half up, in integers.
    hundredths = (numerator * 20_000 + denominator) / (2 * denominator)
  }

  /// The percentage as a number with two decimals.
  public var value: Double { Double(hundredths) / 100 }

  /// "66.67%".
  public var description: String { Decimal2.text(hundredths) + "%" }
}

/// Two-decimal display of values held in hundredths.
public enum Decimal2 {
  /// "12.05" for 1205.
  public static func text(_ hundredths: Int) -> String {
    let sign = hundredths < 0 ? "-" : ""
    let a = abs(hundredths)
    let frac = a % 100
    return "\(sign)\(a / 100).\(frac < 10 ? "0" : "")\(frac)"
  }

  /// `numerator / denominator` in hundredths, rounded half up (denominator > 0, both ≥ 0).
  public static func hundredths(_ numerator: Int, _ denominator: Int) -> Int {
    (numerator * 200 + denominator) / (2 * denominator)
  }

  /// A value rounded to two decimals.
  public static func rounded(_ value: Double) -> Double { (value * 100).rounded() / 100 }
}

/// Ratios written the way the plans write them: 生机比 "8.25:1".
public enum Ratio {
  /// "x.xx:1" for `count` per one `per`; "n/a" when `per` is 0.
  public static func text(_ count: Int, per: Int) -> String {
    guard per > 0, count >= 0 else { return "n/a" }
    return Decimal2.text(Decimal2.hundredths(count, per)) + ":1"
  }
}
