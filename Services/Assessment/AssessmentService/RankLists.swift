import ServiceRuntime
import SmartSchoolModel

/// The ranks of a rank list (成绩单) over totals of students: in the whole list, in class,
/// school and county (competition ranking), percentile rank in the whole list, and the
/// members of the scope ordered best first (ties by student id) with their ranks in the scope.
struct RankTable {
  var allRanks: [Int]
  var classRanks: [Int]
  var schoolRanks: [Int]
  var countyRanks: [Int]
  var percentiles: [Double]
  /// Indices of the scope's members, best first.
  var members: [Int]
  /// Rank in the scope of each of `members`, in the same order.
  var scopeRanks: [Int]

  /// Competition ranks of `totals` within the groups named by `keys` (one key per total).
  static func ranks(_ totals: [Double], groupedBy keys: [String]) -> [Int] {
    var groups: [String: [Int]] = [:]
    for (i, key) in keys.enumerated() { groups[key, default: []].append(i) }
    var ranks = Array(repeating: 0, count: totals.count)
    for indices in groups.values {
      for (i, rank) in zip(indices, competitionRanks(indices.map { totals[$0] })) {
        ranks[i] = rank
      }
    }
    return ranks
  }

  /// The table of `totals` (student i: `ids[i]`, `classes[i]`, `schools[i]`, `counties[i]`);
  /// `inScope[i]` says whether student i is listed.
  init(
    totals: [Double], ids: [String], classes: [String], schools: [String], counties: [String],
    inScope: [Bool]
  ) {
    allRanks = competitionRanks(totals)
    percentiles = percentileRanks(totals)
    classRanks = Self.ranks(totals, groupedBy: classes)
    schoolRanks = Self.ranks(totals, groupedBy: schools)
    countyRanks = Self.ranks(totals, groupedBy: counties)
    members = totals.indices.filter { inScope[$0] }.sorted { a, b in
      totals[a] != totals[b] ? totals[a] > totals[b] : ids[a] < ids[b]
    }
    // Best first: a member's scope rank is its position's, or its equal predecessor's.
    scopeRanks = []
    for (k, i) in members.enumerated() {
      let tied = k > 0 && totals[members[k - 1]] == totals[i]
      scopeRanks.append(tied ? scopeRanks[k - 1] : k + 1)
    }
  }

  /// The page of `members` positions after the student with (total, id) `after` (nil: the
  /// first page): positions into `members`, and whether more follow.
  func page(after: (total: Double, id: String)?, size: Int, totals: [Double], ids: [String])
    -> (positions: Range<Int>, more: Bool)
  {
    var start = 0
    if let after {
      start =
        members.firstIndex { i in
          totals[i] < after.total || (totals[i] == after.total && ids[i] > after.id)
        } ?? members.count
    }
    let end = Swift.min(members.count, start + size)
    return (start..<end, end < members.count)
  }

  /// The token of the page after `positions` when `more` follow, else "".
  func token(
    after positions: Range<Int>, more: Bool, totals: [Double], ids: [String], query: String
  ) -> String {
    guard more, let k = positions.last else { return "" }
    let i = members[k]
    return PageToken(after: [String(totals[i].bitPattern), ids[i]]).encode(query: query)
  }
}

extension AssessmentAPI {
  /// A rank list's page token: the last student's total (its bits, exactly) and id, bound to
  /// `query`; nil for the first page.
  static func rankCursor(_ token: String, query: String) throws(ServiceError)
    -> (total: Double, id: String)?
  {
    guard let decoded = try PageToken.decode(token, query: query) else { return nil }
    guard decoded.after.count == 2, let bits = UInt64(decoded.after[0]) else {
      throw ServiceError.invalid("page_token", "is not a page token this service issued")
    }
    return (Double(bitPattern: bits), decoded.after[1])
  }

  /// The rank table of students at `paths` (their class paths), counties found in the org
  /// directory once per path; the scope is `scope` (nil: everyone).
  func rankTable(
    totals: [Double], ids: [String], classes: [String], schools: [String], paths: [String],
    scope: OrgPath?
  ) -> RankTable {
    var places: [String: (county: String, inScope: Bool)] = [:]
    for path in paths where places[path] == nil {
      let leaf = OrgPath(path)?.leaf ?? ""
      places[path] = (
        directory.ancestor(of: leaf, kind: .county)?.id ?? "", scope?.covers(path) ?? true
      )
    }
    return RankTable(
      totals: totals, ids: ids, classes: classes, schools: schools,
      counties: paths.map { places[$0]!.county }, inScope: paths.map { places[$0]!.inScope })
  }
}
