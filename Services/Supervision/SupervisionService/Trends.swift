import GRPCCore
import ServiceRuntime
import SmartSchoolModel

/// Trends across terms and school years (the series behind a line chart).
public enum TrendSeries {
  public typealias Point = Smartschool_Supervision_V1_TrendPoint

  /// The most terms one series may span (twenty school years).
  public static let maxTerms = 40

  /// The school year (学年) of a term starting on `start`: a term starting August to December
  /// belongs to the year starting then, one starting January to July to the year before.
  /// Its code ("2025-2026") and name ("2025—2026学年").
  public static func schoolYear(of start: CalendarDate) -> (code: String, name: String) {
    let (year, month, _) = start.components
    let first = month >= 8 ? year : year - 1
    return ("\(first)-\(first + 1)", "\(first)—\(first + 1)学年")
  }

  /// What one point counts, kept exact so a year can add up its terms.
  struct Counts {
    var scope = ComplianceTally()
    var kinds: [Smartschool_Common_V1_SchoolKind: ComplianceTally] = [:]
    /// One entry per teacher-term: the teacher's school kind and whether the target was met.
    var teachers: [(kind: Smartschool_Common_V1_SchoolKind, met: Bool)] = []
    var weeks = 0

    mutating func add(_ other: Counts) {
      scope.merge(other.scope)
      for (kind, tally) in other.kinds { kinds[kind, default: ComplianceTally()].merge(tally) }
      teachers += other.teachers
      weeks += other.weeks
    }

    /// The point's figures; `code`/`name` label it, the scope figures carry the org's.
    func point(
      code: String, name: String, from: CalendarDate, to: CalendarDate, terms: [String],
      org: Smartschool_Identity_V1_Org
    ) -> Point {
      let met = teachers.filter(\.met).count
      let share = Percent(numerator: met, denominator: teachers.count)
      return .with {
        $0.code = code
        $0.name = name
        $0.startDate = from.description
        $0.endDate = to.description
        $0.termCodes = terms
        $0.teachingWeeks = Int32(weeks)
        $0.scope = scope.figures(code: org.code, name: org.name)
        $0.bySchoolKind = KindSplit.figures(kinds)
        $0.teachers = Int64(teachers.count)
        $0.teachersMet = Int64(met)
        $0.teachersMetSharePercent = share.value
        $0.teachersMetShareText = share.description
        $0.teachersBySchoolKind = KindSplit.shares(teachers)
      }
    }
  }
}

extension SupervisionAPI {
  public func getTrends(
    request: Smartschool_Supervision_V1_GetTrendsRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_Trends {
    var v = Validator()
    if !request.fromTermCode.isEmpty { v.code(request.fromTermCode, "from_term_code") }
    if !request.toTermCode.isEmpty { v.code(request.toTermCode, "to_term_code") }
    try v.throwIfInvalid()
    let org = try scope(code: request.orgCode)
    let from =
      request.fromTermCode.isEmpty
      ? nil : try await term(code: request.fromTermCode, field: "from_term_code")
    let to =
      request.toTermCode.isEmpty
      ? nil : try await term(code: request.toTermCode, field: "to_term_code")
    if let from, let to, to.start < from.start {
      throw ServiceError.invalid(
        "to_term_code", "term \(to.code) starts before term \(from.code) (from_term_code)")
    }
    let terms = try await store.terms().filter { t in
      (from.map { t.start >= $0.start } ?? true) && (to.map { t.start <= $0.start } ?? true)
    }.sorted { $0.start < $1.start }
    if terms.count > TrendSeries.maxTerms {
      throw ServiceError.invalid(
        "to_term_code",
        "the series spans \(terms.count) terms; at most \(TrendSeries.maxTerms) are allowed")
    }
    let classrooms = try await store.classrooms(
      under: org.path, afterCode: nil, limit: nil, inServiceOn: nil)
    var trends = Smartschool_Supervision_V1_Trends()
    trends.orgCode = org.code
    trends.orgName = org.name
    var years: [(code: String, name: String, terms: [TermRecord], counts: TrendSeries.Counts)] =
      []
    for term in terms {
      let weeks = term.calendar.teachingWeeks
      var usage: UsageTable = [:]
      if let first = weeks.first, let last = weeks.last {
        usage = try await self.usage(under: org.path, weeks: first.dayNumber...last.dayNumber)
      }
      var counts = TrendSeries.Counts()
      counts.weeks = weeks.count
      let result = Compliance.evaluate(
        classrooms: classrooms.map(\.span), weeks: weeks, usage: usage
      ) { _ in nil }
      counts.scope = result.scope
      counts.kinds = kindTallies(classrooms, result)
      counts.teachers = try await teacherTargets(org: org, term: term).teachers.map {
        ($0.schoolKind, $0.met)
      }
      trends.terms.append(
        counts.point(
          code: term.code, name: term.name.isEmpty ? term.code : term.name, from: term.start,
          to: term.end, terms: [term.code], org: org))
      let year = TrendSeries.schoolYear(of: term.start)
      if years.last?.code == year.code {
        years[years.count - 1].terms.append(term)
        years[years.count - 1].counts.add(counts)
      } else {
        years.append((year.code, year.name, [term], counts))
      }
    }
    trends.years = years.map { y in
      y.counts.point(
        code: y.code, name: y.name, from: y.terms.first!.start, to: y.terms.last!.end,
        terms: y.terms.map(\.code), org: org)
    }
    return trends
  }
}
