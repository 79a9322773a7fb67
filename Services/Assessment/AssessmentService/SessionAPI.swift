import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel

// Joint exam sessions (联考): the session report and its rank list.
extension AssessmentAPI {
  /// The session's papers, by subject then code; NOT_FOUND when no exam belongs to it.
  func sessionPapers(_ code: String) async throws -> [ExamRecord] {
    var v = Validator()
    v.code(code, "session_code")
    try v.throwIfInvalid()
    let papers = try await store.exams(session: code)
    guard !papers.isEmpty else { throw ServiceError.notFound("no exam belongs to session \(code)") }
    return papers
  }

  /// Groups of students by org: for each distinct org path, the index in `orgs` of the first
  /// org on it (nil: none), found once per path.
  final class OrgGroups {
    let index: [String: Int]
    var byPath: [String: Int?] = [:]

    init(_ orgs: [Org]) {
      var index: [String: Int] = [:]
      for (i, o) in orgs.enumerated() { index[o.id] = i }
      self.index = index
    }

    func group(of path: String) -> Int? {
      if let known = byPath[path] { return known }
      let found = OrgPath(path)?.ids.lazy.compactMap { self.index[$0] }.first
      byPath[path] = .some(found)
      return found
    }
  }

  /// Every paper's whole results, in the papers' order, read side by side (on PostgreSQL the
  /// server aggregates one paper while the service decodes another; one after the other, a
  /// county's nine papers took 1.75 s of a 1 s report).
  func paperResults(_ papers: [ExamRecord]) async throws -> [[StudentResult]] {
    try await withThrowingTaskGroup(of: (Int, [StudentResult]).self) { group in
      for (p, paper) in papers.enumerated() {
        group.addTask { (p, try await self.store.results(exam: paper, scopePath: nil)) }
      }
      var results = Array(repeating: [StudentResult](), count: papers.count)
      for try await (p, paper) in group { results[p] = paper }
      return results
    }
  }

  /// The session figures of each org of `orgs` (its students are those under it), ranked
  /// among `orgs` by the mean total, by each rate of the totals, and per paper by mean.
  static func sessionColumns(
    _ orgs: [Org], students: [SessionStudent], papers: [ExamRecord], results: [[StudentResult]],
    bins: Int
  ) -> [Smartschool_Assessment_V1_SessionScope] {
    let groups = OrgGroups(orgs)
    let fullMarks = papers.reduce(0) { $0 + $1.exam.fullMarks }
    let totalLines = ScoreLineFigures(Thresholds(fullMarks: fullMarks))
    var members = Array(repeating: [SessionStudent](), count: orgs.count)
    for s in students {
      if let g = groups.group(of: s.orgPath) { members[g].append(s) }
    }
    var rows: [Smartschool_Assessment_V1_SessionScope] = orgs.indices.map { g in
      let sat = members[g].filter { $0.sat > 0 }
      var totals = scopeFigures(
        sat.map(\.total), org: orgs[g], lines: totalLines, fullMarks: fullMarks, bins: bins)
      totals.satCount = Int64(sat.count)
      totals.expectedCount = Int64(members[g].count)
      totals.absentCount = Int64(members[g].count - sat.count)
      return .with { $0.totals = totals }
    }
    for (p, paper) in papers.enumerated() {
      var byGroup = Array(repeating: [StudentResult](), count: orgs.count)
      for r in results[p] {
        if let g = groups.group(of: r.orgPath) { byGroup[g].append(r) }
      }
      for g in orgs.indices {
        let sat = byGroup[g].filter(\.sat).map(\.total)
        let lines = paper.lineRules.lines(fullMarks: paper.exam.fullMarks, totals: sat)
        var figures = scopeFigures(
          sat, org: orgs[g], lines: lines, fullMarks: paper.exam.fullMarks, bins: bins)
        countAttendance(&figures, byGroup[g], reportsMissing: paper.reportsMissingItems)
        rows[g].subjects.append(
          .with {
            $0.examCode = paper.exam.code
            $0.subject = paper.exam.subject
            $0.fullMarks = paper.exam.fullMarks
            $0.figures = figures
          })
      }
    }
    // Ranks among the orgs that have figures; the others keep 0.
    var totals = rows.map(\.totals)
    rankSiblings(&totals)
    for g in rows.indices { rows[g].totals = totals[g] }
    for p in papers.indices {
      var column = rows.map(\.subjects[p].figures)
      rankSiblings(&column)
      for g in rows.indices { rows[g].subjects[p].figures = column[g] }
    }
    return rows
  }

  public func getSessionReport(
    request: Smartschool_Assessment_V1_GetSessionReportRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_SessionReport {
    let principal = try Principal.require()
    let bins = try Self.binCount(request.binCount, childrenKind: request.childrenKind)
    let papers = try await sessionPapers(request.sessionCode)
    let (scopeOrg, scopePath) = try scope(of: papers[0], code: request.scopeOrgCode)
    let children = try children(
      of: scopeOrg, path: scopePath, exam: papers[0], kind: request.childrenKind)
    try principal.require(.resultsRead, at: scopePath)
    // Every paper's whole results: the scope's siblings are ranked too.
    let results = try await paperResults(papers)
    let students = sessionStudents(results)
    var report = Smartschool_Assessment_V1_SessionReport()
    report.sessionCode = request.sessionCode
    report.fullMarks = papers.reduce(0) { $0 + $1.exam.fullMarks }
    report.examCodes = papers.map(\.exam.code)
    // The scope among its siblings under the running org (alone when it is that org).
    let examPath = try Self.path(papers[0].orgPath)
    if let scopeOrg, scopePath != examPath {
      let siblings = directory.children(of: scopeOrg.parentID)
      let row = Self.sessionColumns(
        siblings, students: students, papers: papers, results: results, bins: bins)
      report.scope = row[siblings.firstIndex { $0.id == scopeOrg.id } ?? 0]
    } else {
      let whole = Org.with {
        $0.id = examPath.leaf ?? ""
        $0.code = scopeOrg?.code ?? ""
        $0.name = scopeOrg?.name ?? ""
      }
      var row = Self.sessionColumns(
        [whole], students: students, papers: papers, results: results, bins: bins)[0]
      Self.unrank(&row)
      report.scope = row
    }
    report.children = Self.sessionColumns(
      children, students: students, papers: papers, results: results, bins: bins)
    return report
  }

  /// Clears the ranks of a scope that has no siblings.
  static func unrank(_ row: inout Smartschool_Assessment_V1_SessionScope) {
    func clear(_ f: inout Smartschool_Assessment_V1_ScopeStatistics) {
      f.rank = 0
      f.passRateRank = 0
      f.goodRateRank = 0
      f.excellentRateRank = 0
      f.lowRateRank = 0
    }
    clear(&row.totals)
    for i in row.subjects.indices { clear(&row.subjects[i].figures) }
  }

  public func listSessionRanks(
    request: Smartschool_Assessment_V1_ListSessionRanksRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_ListSessionRanksResponse {
    let principal = try Principal.require()
    let size = try PageSize.resolve(request.pageSize)
    let papers = try await sessionPapers(request.sessionCode)
    let (scopeOrg, scopePath) = try scope(of: papers[0], code: request.scopeOrgCode)
    try principal.require(.resultsRead, at: scopePath)
    let query = "session-ranks|\(request.sessionCode)|\(request.scopeOrgCode)"
    let after = try Self.rankCursor(request.pageToken, query: query)
    let results = try await paperResults(papers)
    let students = sessionStudents(results).filter { $0.sat > 0 }
    let totals = students.map(\.total)
    let ids = students.map(\.externalID)
    let table = rankTable(
      totals: totals, ids: ids, classes: students.map(\.classCode),
      schools: students.map(\.schoolCode), paths: students.map(\.orgPath),
      scope: scopeOrg == nil ? nil : scopePath)
    let (positions, more) = table.page(after: after, size: size, totals: totals, ids: ids)
    var response = Smartschool_Assessment_V1_ListSessionRanksResponse()
    response.totalCount = Int64(table.members.count)
    response.students = positions.map { k in
      let i = table.members[k]
      let s = students[i]
      return .with {
        $0.studentExternalID = s.externalID
        $0.classCode = s.classCode
        $0.schoolCode = s.schoolCode
        $0.total = s.total
        $0.papersSat = Int32(s.sat)
        $0.scopeRank = Int32(table.scopeRanks[k])
        $0.classRank = Int32(table.classRanks[i])
        $0.schoolRank = Int32(table.schoolRanks[i])
        $0.countyRank = Int32(table.countyRanks[i])
        $0.sessionRank = Int32(table.allRanks[i])
        $0.percentileRank = roundTo2(table.percentiles[i])
        $0.papers = zip(papers, s.papers).map { paper, score in
          .with {
            $0.examCode = paper.exam.code
            $0.sat = score != nil
            $0.total = score ?? 0
          }
        }
      }
    }
    response.nextPageToken = table.token(
      after: positions, more: more, totals: totals, ids: ids, query: query)
    return response
  }
}
