import Foundation

/// A calendar date without a time or zone (YYYY-MM-DD), as school calendars use.
public struct CalendarDate: Hashable, Comparable, Sendable, CustomStringConvertible {
  /// Days since 1970-01-01.
  public let dayNumber: Int

  /// The date `dayNumber` days after 1970-01-01.
  public init(dayNumber: Int) {
    self.dayNumber = dayNumber
  }

  /// The date of a proleptic Gregorian year, month and day; `nil` for an impossible date.
  public init?(year: Int, month: Int, day: Int) {
    guard (1...12).contains(month), day >= 1, day <= CalendarDate.daysIn(month: month, year: year)
    else { return nil }
    // Days from civil (Howard Hinnant's algorithm).
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let mp = (month + 9) % 12
    let doy = (153 * mp + 2) / 5 + day - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    self.dayNumber = era * 146097 + doe - 719468
  }

  /// Parses `YYYY-MM-DD` (ASCII digits, no sign or space); `nil` for anything else or an
  /// impossible date. Reads the UTF-8 bytes in place: imports parse a date per row.
  public init?(_ text: String) {
    var text = text
    let parsed = text.withUTF8 { b -> (Int, Int, Int)? in
      guard b.count == 10, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-") else {
        return nil
      }
      func number(_ range: Range<Int>) -> Int? {
        var n = 0
        for i in range {
          let digit = Int(b[i]) - 48
          guard (0...9).contains(digit) else { return nil }
          n = n * 10 + digit
        }
        return n
      }
      guard let y = number(0..<4), let m = number(5..<7), let d = number(8..<10) else {
        return nil
      }
      return (y, m, d)
    }
    guard let (y, m, d) = parsed else { return nil }
    self.init(year: y, month: m, day: d)
  }

  /// Year, month and day.
  public var components: (year: Int, month: Int, day: Int) {
    let z = dayNumber + 719468
    let era = (z >= 0 ? z : z - 146096) / 146097
    let doe = z - era * 146097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
    let y = yoe + era * 400
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let d = doy - (153 * mp + 2) / 5 + 1
    let m = mp < 10 ? mp + 3 : mp - 9
    return (m <= 2 ? y + 1 : y, m, d)
  }

  /// ISO weekday: Monday 1 … Sunday 7.
  public var isoWeekday: Int {
    // 1970-01-01 was a Thursday (4).
    ((dayNumber % 7 + 7) % 7 + 3) % 7 + 1
  }

  /// The Monday of this date's week.
  public var monday: CalendarDate { adding(days: -(isoWeekday - 1)) }

  /// The date `days` later (earlier when negative).
  public func adding(days: Int) -> CalendarDate { CalendarDate(dayNumber: dayNumber + days) }

  /// `YYYY-MM-DD`.
  public var description: String {
    let c = components
    let y = String(c.year).leftPadded(to: 4)
    return "\(y)-\(String(c.month).leftPadded(to: 2))-\(String(c.day).leftPadded(to: 2))"
  }

  /// The date in UTC of a moment.
  public init(_ date: Date) {
    self.dayNumber = Int((date.timeIntervalSince1970 / 86400).rounded(.down))
  }

  public static func < (lhs: CalendarDate, rhs: CalendarDate) -> Bool {
    lhs.dayNumber < rhs.dayNumber
  }

  static func daysIn(month: Int, year: Int) -> Int {
    switch month {
    case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
    case 4, 6, 9, 11: 30
    default: 31
    }
  }
}

extension String {
  fileprivate func leftPadded(to width: Int) -> String {
    count >= width ? self : String(repeating: "0", count: width - count) + self
  }
}

/// A school term (学期): its dates and its teaching weeks.
///
/// Teaching weeks are the Monday-based weeks that overlap the term's dates, less the weeks
/// listed as excluded (holidays). A week is named by its Monday.
public struct TermCalendar: Hashable, Sendable {
  /// First day of the term.
  public let start: CalendarDate
  /// Last day of the term.
  public let end: CalendarDate
  /// Mondays of weeks that are not teaching weeks.
  public let excludedWeeks: Set<CalendarDate>

  /// A term from `start` to `end` (inclusive) without the weeks whose Mondays are listed.
  public init(start: CalendarDate, end: CalendarDate, excludedWeeks: Set<CalendarDate> = []) {
    self.start = start
    self.end = end
    self.excludedWeeks = Set(excludedWeeks.map(\.monday))
  }

  /// The Mondays of the teaching weeks, in order.
  public var teachingWeeks: [CalendarDate] {
    guard start <= end else { return [] }
    var weeks: [CalendarDate] = []
    var monday = start.monday
    while monday <= end {
      if !excludedWeeks.contains(monday) { weeks.append(monday) }
      monday = monday.adding(days: 7)
    }
    return weeks
  }

  /// True when the date falls within the term (whatever its week).
  public func contains(_ date: CalendarDate) -> Bool { start <= date && date <= end }

  /// The teaching week (its Monday) of a date; `nil` outside the term or in an excluded week.
  public func teachingWeek(of date: CalendarDate) -> CalendarDate? {
    guard contains(date) else { return nil }
    let monday = date.monday
    return excludedWeeks.contains(monday) ? nil : monday
  }
}

/// A school year such as "2020-2021": the first year and the next.
public struct SchoolYear: Hashable, Sendable, CustomStringConvertible {
  /// The calendar year the school year starts in (autumn).
  public let startYear: Int

  /// The school year starting in autumn of `startYear`.
  public init(startYear: Int) { self.startYear = startYear }

  /// Parses "2020-2021" (the second year must follow the first).
  public init?(_ text: String) {
    let parts = text.split(separator: "-")
    guard parts.count == 2, parts[0].count == 4, parts[1].count == 4,
      let a = Int(parts[0]), let b = Int(parts[1]), b == a + 1, (1900...2200).contains(a)
    else { return nil }
    self.startYear = a
  }

  /// "2020-2021".
  public var description: String { "\(startYear)-\(startYear + 1)" }
}
