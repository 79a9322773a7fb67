import GRPCCore
import ServiceRuntime
import SmartSchoolModel

// Progress between two exams of one cohort: GetProgress.
extension AssessmentAPI {
  /// One matched student of a progress report, with what the groups need.
  struct Matched {
    var progress: Smartschool_Assessment_V1_StudentProgress
    var orgPath: String
  }

  /// A group's progress over its matched students; rates by the lines given.
  static func groupProgress(
    _ members: [Matched], org: Org?, earlierLines: ScoreLineFigures,
    laterLines: ScoreLineFigures
  ) -> Smartschool_Assessment_V1_GroupProgress {
    let n = Double(members.count)
    func mean(_ value: (Smartschool_Assessment_V1_StudentProgress) -> Double) -> Double {
      members.isEmpty ? 0 : members.reduce(0) { $0 + value($1.progress) } / n
    }
    func rate(_ test: (Smartschool_Assessment_V1_StudentProgress) -> Bool) -> Double {
      members.isEmpty ? 0 : roundTo2(Double(members.filter { test($0.progress) }.count) / n * 100)
    }
    return .with {
      $0.orgCode = org?.code ?? ""
      $0.orgName = org?.name ?? ""
      $0.matched = Int64(members.count)
      $0.earlierMeanZ = mean(\.earlierZ)
      $0.laterMeanZ = mean(\.laterZ)
      $0.zChange = $0.laterMeanZ - $0.earlierMeanZ
      $0.earlierMean = mean(\.earlierTotal)
      $0.laterMean = mean(\.laterTotal)
      $0.earlierPassRate = rate { $0.earlierTotal >= earlierLines.pass }
      $0.laterPassRate = rate { $0.laterTotal >= laterLines.pass }
      $0.earlierExcellentRate = rate { $0.earlierTotal >= earlierLines.excellent }
      $0.laterExcellentRate = rate { $0.laterTotal >= laterLines.excellent }
      $0.valueAdded = mean(\.residual)
    }
  }

  public func getProgress(
    request: Smartschool_Assessment_V1_GetProgressRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_ProgressReport {
    let principal = try Principal.require()
    var v = Validator()
    v.code(request.earlierExamCode, "earlier_exam_code")
    v.code(request.laterExamCode, "later_exam_code")
    v.check((0...100).contains(request.movers), "movers", "must be between 0 and 100 (0: 10)")
    try v.throwIfInvalid()
    _ = try Self.binCount(0, childrenKind: request.childrenKind)
    if request.earlierExamCode == request.laterExamCode {
      throw ServiceError.invalid("later_exam_code", "must name another exam than the earlier")
    }
    let earlier = try await exam(code: request.earlierExamCode, field: "earlier_exam_code")
    let later = try await exam(code: request.laterExamCode, field: "later_exam_code")
    let (scopeOrg, scopePath) = try scope(of: later, code: request.scopeOrgCode)
    guard try Self.path(earlier.orgPath).covers(scopePath) else {
      throw ServiceError.invalid("scope_org_code", "must lie under both exams' running orgs")
    }
    let children = try children(
      of: scopeOrg, path: scopePath, exam: later, kind: request.childrenKind)
    try principal.require(.resultsRead, at: scopePath)
    // Standardised scores and ranks over each whole exam's students who sat.
    let before = try await store.results(exam: earlier, scopePath: nil).filter(\.sat)
    let after = try await store.results(exam: later, scopePath: nil).filter(\.sat)
    let beforeZ = zScores(before.map(\.total))
    let afterZ = zScores(after.map(\.total))
    let beforeRanks = competitionRanks(before.map(\.total))
    let afterRanks = competitionRanks(after.map(\.total))
    var beforeIndex: [String: Int] = [:]
    for (i, s) in before.enumerated() { beforeIndex[s.externalID] = i }
    func inScope(_ path: String) -> Bool { scopeOrg == nil || scopePath.covers(path) }
    var matched: [Matched] = []
    for (j, s) in after.enumerated() where inScope(s.orgPath) {
      guard let i = beforeIndex[s.externalID] else { continue }
      matched.append(
        Matched(
          progress: .with {
            $0.studentExternalID = s.externalID
            $0.classCode = s.classCode
            $0.schoolCode = s.schoolCode
            $0.earlierTotal = before[i].total
            $0.laterTotal = s.total
            $0.earlierZ = beforeZ[i]
            $0.laterZ = afterZ[j]
            $0.zChange = afterZ[j] - beforeZ[i]
            $0.earlierRank = Int32(beforeRanks[i])
            $0.laterRank = Int32(afterRanks[j])
            $0.rankChange = Int32(beforeRanks[i] - afterRanks[j])
          }, orgPath: s.orgPath))
    }
    let line = leastSquares(
      x: matched.map(\.progress.earlierZ), y: matched.map(\.progress.laterZ))
    for k in matched.indices {
      let p = matched[k].progress
      matched[k].progress.residual = p.laterZ - (line.intercept + line.slope * p.earlierZ)
    }
    // Each exam's lines as drawn for the scope (its students who sat).
    let earlierLines = earlier.lineRules.lines(
      fullMarks: earlier.exam.fullMarks, totals: before.filter { inScope($0.orgPath) }.map(\.total))
    let laterLines = later.lineRules.lines(
      fullMarks: later.exam.fullMarks, totals: after.filter { inScope($0.orgPath) }.map(\.total))
    let groups = OrgGroups(children)
    var members = Array(repeating: [Matched](), count: children.count)
    for m in matched {
      if let g = groups.group(of: m.orgPath) { members[g].append(m) }
    }
    var childRows = children.indices.map {
      Self.groupProgress(
        members[$0], org: children[$0], earlierLines: earlierLines, laterLines: laterLines)
    }
    let ranked = childRows.indices.filter { childRows[$0].matched > 0 }
    for (i, rank) in zip(ranked, competitionRanks(ranked.map { childRows[$0].valueAdded })) {
      childRows[i].valueAddedRank = Int32(rank)
    }
    let movers = request.movers == 0 ? 10 : Int(request.movers)
    let byChange = matched.map(\.progress).sorted {
      $0.zChange != $1.zChange
        ? $0.zChange > $1.zChange : $0.studentExternalID < $1.studentExternalID
    }
    let byDecline = matched.map(\.progress).sorted {
      $0.zChange != $1.zChange
        ? $0.zChange < $1.zChange : $0.studentExternalID < $1.studentExternalID
    }
    return .with {
      $0.earlierExamCode = earlier.exam.code
      $0.laterExamCode = later.exam.code
      $0.matched = Int64(matched.count)
      $0.slope = line.slope
      $0.intercept = line.intercept
      $0.scope = Self.groupProgress(
        matched, org: scopeOrg, earlierLines: earlierLines, laterLines: laterLines)
      $0.children = childRows
      $0.mostImproved = Array(byChange.prefix(movers))
      $0.mostDeclined = Array(byDecline.prefix(movers))
    }
  }
}
