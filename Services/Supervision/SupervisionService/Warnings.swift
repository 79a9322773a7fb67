import SmartSchoolModel

/// Early warning (监测预警): runs of below-standard weeks, teachers falling behind their term
/// target, schools not inspected late in the year.
public enum Warnings {
  public typealias Warning = Smartschool_Supervision_V1_Warning

  /// The default N of "below standard N teaching weeks running".
  public static let defaultWeeks = 3

  /// One warning episode over a series of weeks.
  public struct Episode: Hashable, Sendable {
    /// Monday of the week that raised it, and of the week that cleared it (nil: standing).
    public var triggered: CalendarDate
    public var cleared: CalendarDate?
    /// Monday of the run's first week, and the weeks it lasted (so far).
    public var from: CalendarDate
    public var weeks: Int
  }

  /// The episodes of a week series: `below` is true for a week below standard, false for one
  /// at standard and nil for a week that does not count (not in service), which ends a run
  /// and clears it. A run is raised at its `n`-th week.
  public static func episodes(_ series: [(week: CalendarDate, below: Bool?)], n: Int)
    -> [Episode]
  {
    var out: [Episode] = []
    var runStart: CalendarDate? = nil
    var length = 0
    for (week, below) in series {
      if below == true {
        if runStart == nil { runStart = week }
        length += 1
        if length == n {
          out.append(Episode(triggered: week, cleared: nil, from: runStart!, weeks: length))
        } else if length > n {
          out[out.count - 1].weeks = length
        }
      } else {
        if length >= n { out[out.count - 1].cleared = week }
        runStart = nil
        length = 0
      }
    }
    return out
  }

  /// True when a teacher owing `owed` lessons with `weeksLeft` teaching weeks to go would miss
  /// the target at one lesson every two weeks.
  public static func teacherAtRisk(owed: Int, weeksLeft: Int) -> Bool {
    owed > 0 && weeksLeft < 2 * owed
  }

  /// A teacher's episodes from the lessons counted in each week (in order), the requirement
  /// and the term's teaching weeks after each listed one (`left[i]`).
  public static func teacherEpisodes(weekly: [(week: CalendarDate, lessons: Int)], left: [Int],
    required: Int) -> [(episode: Episode, lessons: Int)]
  {
    var out: [(episode: Episode, lessons: Int)] = []
    var total = 0
    for (i, w) in weekly.enumerated() {
      total += w.lessons
      let risk = teacherAtRisk(owed: required - total, weeksLeft: left[i])
      if risk, out.last.map({ $0.episode.cleared != nil }) ?? true {
        out.append((Episode(triggered: w.week, cleared: nil, from: w.week, weeks: 1), total))
      } else if !risk, let last = out.last, last.episode.cleared == nil {
        out[out.count - 1].episode.cleared = w.week
      }
    }
    return out
  }

  /// The reason text of a below-standard episode.
  public static func reason(_ e: Episode) -> String {
    "below standard \(e.weeks) teaching weeks running (from the week of \(e.from))"
  }

  /// Orders warnings as the list gives them.
  public static func sorted(_ warnings: [Warning]) -> [Warning] {
    warnings.sorted {
      ($0.triggeredDate, $0.kind.rawValue, $0.schoolCode, $0.classroomCode, $0.teacherExternalID)
        < ($1.triggeredDate, $1.kind.rawValue, $1.schoolCode, $1.classroomCode,
          $1.teacherExternalID)
    }
  }
}
