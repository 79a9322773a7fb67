import GRPCCore
import ServiceRuntime
import SmartSchoolModel

// Knowledge points and options above the class: 知识点得分率 for any scope and its children,
// the class diagnosis's school, county and exam rates, and option analysis.
extension AssessmentAPI {
  /// Per knowledge point, the rate of the class's school, its county (nil when the exam is run
  /// under the county) and the whole exam, over the students who sat.
  func ratesAbove(class org: Org, exam record: ExamRecord) async throws
    -> (school: [String: Double], county: [String: Double]?, exam: [String: Double])
  {
    let everyone = try await store.results(exam: record, scopePath: nil).filter(\.sat)
    func rates(_ students: [StudentResult]) -> [String: Double] {
      let figures = pointRates(
        students: students.map(\.scores), maxScores: record.exam.items.map(\.maxScore),
        itemPoints: record.exam.items.map(\.knowledgePoints),
        passFraction: record.exam.passFraction)
      return Dictionary(uniqueKeysWithValues: figures.map { ($0.code, $0.rate) })
    }
    func under(_ path: String) -> [StudentResult] { everyone.filter { $0.orgPath.hasPrefix(path) } }
    let school = directory.org(id: org.parentID).map { under($0.path) } ?? []
    let examPath = try Self.path(record.orgPath)
    let county = try Self.path(org.path).ids.lazy.compactMap { self.directory.org(id: $0) }
      .first { $0.kind == .county }
    var countyRates: [String: Double]?
    if let county, examPath.covers(try Self.path(county.path)) {
      countyRates = rates(under(county.path))
    }
    return (rates(school), countyRates, rates(everyone))
  }

  public func getKnowledgePointReport(
    request: Smartschool_Assessment_V1_GetKnowledgePointReportRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_KnowledgePointReport {
    let principal = try Principal.require()
    _ = try Self.binCount(0, childrenKind: request.childrenKind)
    let (record, scopeOrg, children, everyone) = try await scopedResults(
      principal, exam: request.examCode, scope: request.scopeOrgCode, kind: request.childrenKind)
    let students = everyone.filter(\.sat)
    func group(_ org: Org?, _ students: [StudentResult])
      -> Smartschool_Assessment_V1_KnowledgePointGroup
    {
      .with {
        $0.orgCode = org?.code ?? ""
        $0.orgName = org?.name ?? ""
        $0.count = Int64(students.count)
        $0.points = pointRates(
          students: students.map(\.scores), maxScores: record.exam.items.map(\.maxScore),
          itemPoints: record.exam.items.map(\.knowledgePoints),
          passFraction: record.exam.passFraction
        ).map { p in
          .with {
            $0.code = p.code
            $0.earned = p.earned
            $0.possible = p.possible
            $0.scoreRate = roundTo4(p.rate)
            $0.shareBelowPass = p.shareBelowPass
          }
        }
      }
    }
    let byChild = Self.byChild(students, children: children)
    return .with {
      $0.examCode = record.exam.code
      $0.scope = group(scopeOrg, students)
      $0.children = children.map { group($0, byChild[$0.id] ?? []) }
    }
  }

  public func getOptionAnalysis(
    request: Smartschool_Assessment_V1_GetOptionAnalysisRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_OptionAnalysis {
    let principal = try Principal.require()
    let record = try await exam(code: request.examCode, field: "exam_code")
    let (scopeOrg, scopePath) = try scope(of: record, code: request.scopeOrgCode)
    try principal.require(.resultsRead, at: scopePath)
    let filter = scopeOrg == nil ? nil : scopePath.description
    let students = try await store.results(exam: record, scopePath: filter).filter(\.sat)
    let items = record.exam.items.filter { !$0.options.isEmpty }
    let chosen = items.isEmpty ? [:] : try await store.choices(exam: record, scopePath: filter)
    let figures = optionAnalysis(
      totals: students.map(\.total), ids: students.map(\.externalID),
      choices: students.map { s in items.map { chosen[s.externalID]?[$0.number] ?? "" } },
      options: items.map(\.options))
    func share(_ c: OptionCount, key: String) -> Smartschool_Assessment_V1_OptionShare {
      .with {
        $0.option = c.option
        $0.correct = !c.option.isEmpty && c.option == key
        $0.count = Int64(c.count)
        $0.share = c.share
        $0.upperShare = c.upperShare
        $0.lowerShare = c.lowerShare
      }
    }
    return .with {
      $0.examCode = record.exam.code
      $0.count = Int64(students.count)
      $0.groupSize = Int32(students.isEmpty ? 0 : figures.groupSize)
      $0.items = zip(items, figures.items).map { item, f in
        .with {
          $0.number = item.number
          $0.answerKey = item.answerKey
          $0.options = f.options.map { share($0, key: item.answerKey) }
          $0.unrecorded = share(f.unrecorded, key: item.answerKey)
        }
      }
    }
  }
}
