import ArgumentParser
import Foundation
import GRPCCore
import SmartSchoolClient
import SmartSchoolModel
import SwiftProtobuf

/// A report as tables (text, CSV), charts (HTML) and the services' own JSON (machine output).
public struct Report: Sendable {
  /// The tables, in order.
  public var tables: [ReportTable]
  /// The JSON of the underlying answers.
  public var json: String
  /// Charts drawn from the same answers as the tables (HTML only).
  public var charts: [ReportChart]
  /// What the reader must know, e.g. a part left out because a service was unreachable:
  /// written to stderr and shown in the HTML page.
  public var notes: [String]

  /// A report.
  public init(
    tables: [ReportTable], json: String, charts: [ReportChart] = [], notes: [String] = []
  ) {
    self.tables = tables
    self.json = json
    self.charts = charts
    self.notes = notes
  }

  /// Renders in `format`: text, json, html, or csv (the tables' CSV one after another, for
  /// reading in a test; the CLI writes a report of several tables one file per table).
  public func render(_ format: OutputFormat) -> String {
    switch format {
    case .text:
      tables.map { $0.text() }.joined(separator: "\n")
        + notes.map { "\n注意 Note: \($0)\n" }.joined()
    case .json: json + "\n"
    case .csv: csvFiles().map(\.text).joined(separator: "\n")
    case .html: html()
    }
  }

  /// One CSV file per table, named by its place and its title's English words, e.g.
  /// "2-by-child-org.csv".
  public func csvFiles() -> [(name: String, text: String)] {
    tables.enumerated().map { index, table in
      ("\(index + 1)-\(table.slug).csv", table.csv())
    }
  }

  /// Writes the report in `format`: to stdout without `out`; else to the file `out`, or for
  /// CSV of several tables into the directory `out` (made when missing), one file per table.
  /// CSV of several tables needs `out`, and `out` naming a .csv file needs one table.
  /// Answers the paths written.
  @discardableResult
  public func write(_ format: OutputFormat, to out: String?) throws -> [String] {
    let oneFile = out.map { !$0.hasSuffix("/") && !isDirectory($0) } ?? true
    guard format == .csv, tables.count != 1 || !oneFile else {
      guard let out else {
        writeOut(render(format))
        return []
      }
      if !oneFile {
        throw ValidationError("--out \(out) is a directory: \(format) is written to one file")
      }
      try Self.fileData(render(format), format).write(
        to: URL(fileURLWithPath: out), options: .atomic)
      return [out]
    }
    guard let out else {
      throw ValidationError(
        "this report has \(tables.count) tables and CSV is one table per file: "
          + "add --out DIR to write \(csvFiles().map(\.name).joined(separator: ", "))")
    }
    if out.lowercased().hasSuffix(".csv") {
      throw ValidationError(
        "--out \(out) names one CSV file but this report has \(tables.count) tables: "
          + "give a directory")
    }
    try FileManager.default.createDirectory(
      atPath: out, withIntermediateDirectories: true)
    let directory = URL(fileURLWithPath: out, isDirectory: true)
    return try csvFiles().map { file in
      let url = directory.appendingPathComponent(file.name)
      try Self.fileData(file.text, .csv).write(to: url, options: .atomic)
      return url.path
    }
  }
}

extension Report {
  /// A report's file bytes: a CSV file starts with a UTF-8 byte order mark, without which Excel
  /// on Windows reads the Chinese as the local code page; standard output stays without one.
  static func fileData(_ text: String, _ format: OutputFormat) -> Data {
    Data(((format == .csv ? "\u{FEFF}" : "") + text).utf8)
  }
}

private func isDirectory(_ path: String) -> Bool {
  var directory: ObjCBool = false
  return FileManager.default.fileExists(atPath: path, isDirectory: &directory)
    && directory.boolValue
}

/// `--format`.
public enum OutputFormat: String, CaseIterable, ExpressibleByArgument, Sendable {
  case text, json, csv, html
}

/// Builds the reports from the services' answers.
public enum Reports {
  static func json(_ message: some SwiftProtobuf.Message) -> String {
    (try? message.jsonString()) ?? "{}"
  }

  static func complianceRow(_ f: Smartschool_Supervision_V1_ComplianceFigures) -> [String] {
    [
      f.orgCode.isEmpty ? f.week : f.orgCode, f.orgName, "\(f.classrooms)",
      "\(f.classroomWeeks)", decimal2(f.averageSubjects), decimal2(f.averageLessons),
      percent(f.subjectRatePercent), percent(f.lessonRatePercent),
      percent(f.compliantSharePercent),
    ]
  }

  /// 常态化应用: the scope and each child org.
  public static func compliance(
    _ client: SmartSchoolClient, org: String, term: String, week: String?
  ) async throws -> Report {
    let r = try await client.supervision.getComplianceReport(
      .with {
        $0.orgCode = org
        $0.termCode = term
        if let week {
          $0.fromWeek = week
          $0.toWeek = week
        }
      })
    let columns: [(zh: String, en: String)] = [
      ("代码", "Code"), ("名称", "Name"), ("智慧课堂", "Classrooms"),
      ("课室周", "Classroom-weeks"), ("周均学科", "Avg subjects"), ("周均课时", "Avg lessons"),
      ("学科达标率", "Subject rate"), ("课时达标率", "Lesson rate"),
      ("达标占比", "Compliant share"),
    ]
    let scope = ReportTable(
      title: "常态化应用 Compliance — \(org), \(r.termCode), \(r.weeks.count) 周 weeks",
      columns: columns, rows: [complianceRow(r.scope)])
    let children = ReportTable(
      title: "下级单位 By child org", columns: columns, rows: r.children.map(complianceRow))
    let kinds = ReportTable(
      title: "按学校类别 By school kind", columns: kindColumns,
      rows: r.bySchoolKind.map { kindRow($0) } + [kindRow(r.scope, label: "合计 Total")])
    let weeks = ReportTable(
      title: "逐周 Week by week", columns: [("周", "Week")] + columns.dropFirst(2),
      rows: r.byWeek.map { [$0.week] + complianceRow($0).dropFirst(2) })
    let charts = [
      kindChart(r.bySchoolKind), weeklyTrend(r.byWeek),
      .bars(
        "下级单位课时达标率 Lesson rate by child org", labels: r.children.map(\.orgName),
        values: r.children.map(\.lessonRatePercent), unit: "%"),
    ]
    return Report(tables: [scope, children, kinds, weeks], json: json(r), charts: charts)
  }

  /// Subject rate, lesson rate and compliant share week by week.
  static func weeklyTrend(_ weeks: [Smartschool_Supervision_V1_ComplianceFigures]) -> ReportChart {
    ReportChart(
      kind: .line, title: "逐周趋势 Weekly trend", labels: weeks.map(\.week),
      series: rates(weeks), unit: "%")
  }

  static func rates(_ figures: [Smartschool_Supervision_V1_ComplianceFigures])
    -> [ReportChart.Series]
  {
    [
      .init(name: "学科达标率 Subject rate", values: figures.map(\.subjectRatePercent)),
      .init(name: "课时达标率 Lesson rate", values: figures.map(\.lessonRatePercent)),
      .init(name: "达标占比 Compliant share", values: figures.map(\.compliantSharePercent)),
    ]
  }

  /// Subject rate, lesson rate and compliant share side by side for each school kind.
  static func kindChart(_ kinds: [Smartschool_Supervision_V1_ComplianceFigures]) -> ReportChart {
    ReportChart(
      kind: .groupedBars, title: "按学校类别 By school kind", labels: kinds.map(\.orgName),
      series: rates(kinds), unit: "%")
  }

  /// 建设覆盖率 and infrastructure.
  public static func coverage(_ client: SmartSchoolClient, org: String, year: Int) async throws
    -> Report
  {
    let r = try await client.supervision.getCoverageReport(
      .with {
        $0.orgCode = org
        $0.year = Int32(year)
      })
    let kinds = ReportTable(
      title: "建设覆盖率 Construction coverage — \(org), \(r.year)",
      columns: [
        ("学校类别", "School kind"), ("学校数", "Schools"), ("已填报", "Reported"),
        ("已建成", "Built"), ("覆盖率", "Coverage"),
      ],
      rows: r.kinds.map {
        [
          "\($0.schoolKind.chineseName) \($0.schoolKind.englishName)", "\($0.schools)",
          "\($0.reported)", "\($0.built)", percent($0.coveragePercent),
        ]
      })
    let infrastructure = ReportTable(
      title: "基础设施 Infrastructure", columns: [("指标", "Indicator"), ("数值", "Value")],
      rows: [
        ["学校 Schools", "\(r.schools)"], ["已填报 Reported", "\(r.reported)"],
        ["学生 Students", "\(r.students)"], ["教师 Teachers", "\(r.teachers)"],
        ["多媒体教室 Multimedia classrooms", "\(r.multimediaClassrooms)"],
        ["生机比 Students per computer", r.studentsPerComputer],
        ["师机比 Teachers per computer", r.teachersPerComputer],
        [
          "宽带≥200M Broadband ≥ 200 Mbps", "\(r.broadbandMet) (\(percent(r.broadbandSharePercent)))",
        ],
        ["校园网 Campus network", "\(r.campusNetworkSchools)"],
        ["无线覆盖 Wireless", "\(r.wirelessSchools)"],
      ])
    let chart = ReportChart.bars(
      "覆盖率 Coverage by school kind",
      labels: r.kinds.map { "\($0.schoolKind.chineseName) \($0.schoolKind.englishName)" },
      values: r.kinds.map(\.coveragePercent), unit: "%")
    return Report(tables: [kinds, infrastructure], json: json(r), charts: [chart])
  }

  /// Teachers' smart-classroom lessons against their targets.
  public static func teachers(_ client: SmartSchoolClient, org: String, term: String)
    async throws -> Report
  {
    let r = try await client.supervision.getTeacherTargets(
      .with {
        $0.orgCode = org
        $0.termCode = term
      })
    let table = ReportTable(
      title:
        "教师开课 Teacher targets — \(org), \(r.termCode): \(r.metCount)/\(r.teacherCount) "
        + "达标 met (\(percent(r.metSharePercent)))",
      columns: [
        ("工号", "Teacher"), ("姓名", "Name"), ("学校", "School"), ("年龄", "Age"),
        ("开课", "Lessons"), ("要求", "Required"), ("达标", "Met"),
      ],
      rows: r.teachers.map {
        [
          $0.teacherExternalID, $0.displayName, $0.schoolCode,
          $0.ageAtTermStart < 0 ? "-" : "\($0.ageAtTermStart)", "\($0.lessons)",
          "\($0.required)", $0.met ? "是 yes" : "否 no",
        ]
      })
    return Report(tables: [table], json: json(r))
  }

  /// Training hours against 60 a year.
  public static func training(_ client: SmartSchoolClient, org: String, year: Int) async throws
    -> Report
  {
    let r = try await client.supervision.getTrainingReport(
      .with {
        $0.orgCode = org
        $0.year = Int32(year)
      })
    let table = ReportTable(
      title:
        "信息化素养培训 Training — \(org), \(r.year): \(r.metCount)/\(r.teacherCount) 达标 met "
        + "(\(percent(r.metSharePercent)))",
      columns: [("工号", "Teacher"), ("姓名", "Name"), ("学时", "Hours"), ("达标", "Met")],
      rows: r.teachers.map {
        [$0.teacherExternalID, $0.displayName, decimal2($0.hours), $0.met ? "是 yes" : "否 no"]
      })
    return Report(tables: [table], json: json(r))
  }

  static func scopeRow(_ s: Smartschool_Assessment_V1_ScopeStatistics) -> [String] {
    [
      s.orgCode.isEmpty ? "(全部 all)" : s.orgCode, s.orgName, "\(s.count)", decimal2(s.mean),
      decimal2(s.standardDeviation), decimal2(s.min), decimal2(s.max), decimal2(s.median),
      percent(s.passRate), percent(s.excellentRate), percent(s.lowRate),
      s.rank == 0 ? "" : "\(s.rank)",
    ]
  }

  /// Exam statistics of a scope and its child orgs.
  public static func exam(_ client: SmartSchoolClient, exam: String, org: String?) async throws
    -> Report
  {
    let r = try await client.assessment.getExamStatistics(
      .with {
        $0.examCode = exam
        $0.scopeOrgCode = org ?? ""
      })
    let columns: [(zh: String, en: String)] = [
      ("代码", "Code"), ("名称", "Name"), ("人数", "Count"), ("平均分", "Mean"),
      ("标准差", "SD"), ("最低分", "Min"), ("最高分", "Max"), ("中位数", "Median"),
      ("及格率", "Pass rate"), ("优秀率", "Excellent rate"), ("低分率", "Low rate"),
      ("排名", "Rank"),
    ]
    return Report(
      tables: [
        ReportTable(
          title: "考试统计 Exam statistics — \(exam)", columns: columns, rows: [scopeRow(r.scope)]),
        ReportTable(
          title: "下级单位 By child org", columns: columns, rows: r.children.map(scopeRow)),
      ], json: json(r),
      charts: [
        distribution("分数分布 Score distribution", r.scope.bins),
        .bars(
          "下级单位平均分 Mean by child org", labels: r.children.map(\.orgName),
          values: r.children.map(\.mean)),
      ])
  }

  /// A histogram of a scope's score bins.
  static func distribution(_ title: String, _ bins: [Smartschool_Assessment_V1_ScoreBin])
    -> ReportChart
  {
    .distribution(title, bins: bins.map { ($0.lower, $0.upper, $0.count) })
  }

  /// Item analysis: difficulty, discrimination, flags, Cronbach's alpha.
  public static func items(_ client: SmartSchoolClient, exam: String) async throws -> Report {
    let r = try await client.assessment.getExamStatistics(.with { $0.examCode = exam })
    let alpha = r.hasCronbachAlpha ? decimal2(r.cronbachAlpha.value) : "n/a"
    let table = ReportTable(
      title: "试题分析 Item analysis — \(exam), 信度 Cronbach's α = \(alpha)",
      columns: [
        ("题号", "Item"), ("满分", "Max"), ("平均分", "Mean"), ("难度", "Difficulty P"),
        ("区分度", "Discrimination D"), ("提示", "Flags"),
      ],
      rows: r.items.map { i in
        var flags: [String] = []
        if i.flagTooHard { flags.append("偏难 too hard") }
        if i.flagTooEasy { flags.append("偏易 too easy") }
        if i.flagLowDiscrimination { flags.append("区分度低 low D") }
        return [
          "\(i.number)", decimal2(i.maxScore), decimal2(i.mean), decimal2(i.difficulty),
          decimal2(i.discrimination), flags.joined(separator: "; "),
        ]
      })
    return Report(tables: [table], json: json(r))
  }

  /// A student's report with resources recommended for the weak points.
  public static func student(_ client: SmartSchoolClient, exam: String, student: String)
    async throws -> Report
  {
    let r = try await client.assessment.getStudentReport(
      .with {
        $0.examCode = exam
        $0.studentExternalID = student
      })
    let summary = ReportTable(
      title: "学情报告 Student report — \(student), \(exam)",
      columns: [("指标", "Item"), ("数值", "Value")],
      rows: [
        ["总分 Total", decimal2(r.total)],
        ["班级排名 Class rank", "\(r.classRank)/\(r.classSize)"],
        ["学校排名 School rank", "\(r.schoolRank)/\(r.schoolSize)"],
        ["全体排名 Exam rank", "\(r.examRank)/\(r.examSize)"],
        ["百分等级 Percentile rank", percent(r.percentileRank)],
      ])
    let mastery = ReportTable(
      title: "知识点掌握 Mastery",
      columns: [
        ("知识点", "Knowledge point"), ("得分", "Earned"), ("满分", "Possible"),
        ("掌握度", "Mastery"),
      ],
      rows: r.mastery.map {
        [$0.code, decimal2($0.earned), decimal2($0.possible), percent($0.mastery * 100)]
      })
    var tables = [summary, mastery]
    let chart = ReportChart.bars(
      "知识点掌握度 Mastery", labels: r.mastery.map(\.code),
      values: r.mastery.map { $0.mastery * 100 }, unit: "%")
    var recommendationsJSON = "[]"
    if !r.weakPoints.isEmpty {
      let examInfo = try await client.assessment.getExam(.with { $0.code = exam })
      let recs: Smartschool_Catalogue_V1_RecommendResourcesResponse
      do {
        recs = try await client.catalogue.recommendResources(
          .with {
            $0.knowledgePointCodes = Array(r.weakPoints.prefix(50).map(\.code))
            $0.stage = examInfo.stage
            $0.subject = examInfo.subject
            $0.pageSize = 10
          })
      } catch let error as RPCError
        where error.code == .unavailable || error.code == .deadlineExceeded
      {
        // The report is the assessment's; without the catalogue it still prints, without
        // recommendations, and says so.
        let note =
          "资源目录不可用，未列推荐资源 Catalogue unreachable: recommendations omitted "
          + "(\(error.code): \(error.message))"
        return Report(
          tables: tables, json: "{\"report\":\(json(r)),\"recommendations\":null}",
          charts: [chart], notes: [note])
      }
      recommendationsJSON = json(recs)
      tables.append(
        ReportTable(
          title: "推荐资源 Recommended resources (智能推送)",
          columns: [
            ("标题", "Title"), ("类型", "Type"), ("覆盖知识点", "Matched points"),
            ("覆盖度", "Coverage"),
          ],
          rows: recs.recommendations.map {
            [
              $0.resource.title, "\($0.resource.type)",
              $0.matchedKnowledgePointCodes.joined(separator: ";"), percent($0.coverage * 100),
            ]
          }))
    }
    return Report(
      tables: tables,
      json: "{\"report\":\(json(r)),\"recommendations\":\(recommendationsJSON)}",
      charts: [chart])
  }

  /// Class diagnosis.
  public static func classDiagnosis(_ client: SmartSchoolClient, exam: String, classCode: String)
    async throws -> Report
  {
    let r = try await client.assessment.getClassDiagnosis(
      .with {
        $0.examCode = exam
        $0.classCode = classCode
      })
    let points = ReportTable(
      title: "班级学情 Class diagnosis — \(classCode), \(exam): \(r.count) 人 students, "
        + "平均分 mean \(decimal2(r.mean))",
      columns: [
        ("知识点", "Knowledge point"), ("掌握度", "Mastery"),
        ("未达标占比", "Share below pass"),
      ],
      rows: r.knowledgePoints.map {
        [$0.code, percent($0.mastery * 100), percent($0.shareBelowPass)]
      })
    let students = ReportTable(
      title: "未及格学生 Students below pass", columns: [("学号", "Student"), ("总分", "Total")],
      rows: r.studentsBelowPass.map { [$0.studentExternalID, decimal2($0.total)] })
    let chart = ReportChart.bars(
      "知识点掌握度 Mastery", labels: r.knowledgePoints.map(\.code),
      values: r.knowledgePoints.map { $0.mastery * 100 }, unit: "%")
    return Report(tables: [points, students], json: json(r), charts: [chart])
  }

  /// Teaching-case coverage of chapters.
  public static func caseCoverage(_ client: SmartSchoolClient, org: String) async throws
    -> Report
  {
    let r = try await client.catalogue.getCaseCoverage(.with { $0.orgCode = org })
    func row(_ c: Smartschool_Catalogue_V1_CoverageRow) -> [String] {
      [
        c.stage.chineseName, c.subject.chineseName, c.grade == 0 ? "" : "\(c.grade)",
        "\(c.chapters)", "\(c.coveredChapters)", percent(c.coveragePercent),
        c.meetsTarget ? "是 yes" : "否 no",
      ]
    }
    let table = ReportTable(
      title: "教学案例覆盖率 Teaching-case coverage — \(org) (目标 target "
        + "\(percent(r.targetPercent)))",
      columns: [
        ("学段", "Stage"), ("学科", "Subject"), ("年级", "Grade"), ("章数", "Chapters"),
        ("已覆盖", "Covered"), ("覆盖率", "Coverage"), ("达标", "Meets target"),
      ],
      rows: r.rows.map(row) + [row(r.total)])
    return Report(tables: [table], json: json(r))
  }
}

/// `smartschool report …`.
struct ReportCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "report",
    abstract:
      "Print a report as tables (Chinese labels, English beside them), JSON, CSV or HTML.",
    discussion: """
      Example:
        smartschool report compliance --org K341523 --term 2025-2026-1
        smartschool report compliance --org K341523 --term 2025-2026-1 --format html --out c.html
        smartschool report exam --exam K341523-2025-1-MATH7 --format csv --out exam-csv/
      """,
    subcommands: [
      Compliance.self, Coverage.self, Teachers.self, Training.self, Exam.self, Items.self,
      Student.self, ClassReport.self, CaseCoverage.self, Notice.self, Inspections.self,
      Warnings.self, Ranking.self, Session.self, SessionRanks.self, Progress.self, Trends.self,
      OptionAnalysis.self,
    ])

  struct Common: ParsableArguments {
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Output: text, json, csv or html (one page with charts, no external file).")
    var format: OutputFormat = .text
    @Option(
      help: ArgumentHelp(
        "Write to this file instead of stdout; CSV of several tables: a directory.",
        discussion: "CSV is one table per file: a report of several tables needs --out DIR "
          + "(files 1-<table>.csv, 2-<table>.csv, …); a report of one table goes to stdout "
          + "or to --out FILE.csv."))
    var out: String?

    func print(_ make: (SmartSchoolClient) async throws -> Report) async throws {
      try await withCLIClient(connection) { client in
        let report = try await make(client)
        if format != .text {
          for note in report.notes { writeErr("note: \(note)\n") }
        }
        for path in try report.write(format, to: out) { writeErr("wrote \(path)\n") }
      }
    }
  }

  static var thisYear: Int { Calendar(identifier: .gregorian).component(.year, from: Date()) }

  struct Compliance: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "常态化应用: subject and lesson compliance rates of an org's smart classrooms.",
      discussion: "Example: smartschool report compliance --org K341523 --term 2025-2026-1")
    @OptionGroup var common: Common
    @Option(help: "Org code (province, city, county or school).") var org: String
    @Option(help: "Term code.") var term: String
    @Option(help: "Only the week of this date (YYYY-MM-DD).") var week: String?
    func run() async throws {
      try await common.print { try await Reports.compliance($0, org: org, term: term, week: week) }
    }
  }

  struct Coverage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "建设覆盖率: construction coverage by school kind and infrastructure indicators.",
      discussion: "Example: smartschool report coverage --org K341523 --year 2025")
    @OptionGroup var common: Common
    @Option(help: "Org code.") var org: String
    @Option(help: "Year (default: this year).") var year: Int?
    func run() async throws {
      try await common.print {
        try await Reports.coverage($0, org: org, year: year ?? ReportCommand.thisYear)
      }
    }
  }

  struct Teachers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Teachers' smart-classroom lessons in a term against 2 (4 under 45).",
      discussion: "Example: smartschool report teachers --org SK341523U01 --term 2025-2026-1")
    @OptionGroup var common: Common
    @Option(help: "Org code.") var org: String
    @Option(help: "Term code.") var term: String
    func run() async throws {
      try await common.print { try await Reports.teachers($0, org: org, term: term) }
    }
  }

  struct Training: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "信息化素养培训: each teacher's training hours in a year against 60.",
      discussion: "Example: smartschool report training --org K341523 --year 2025")
    @OptionGroup var common: Common
    @Option(help: "Org code.") var org: String
    @Option(help: "Year.") var year: Int
    func run() async throws {
      try await common.print { try await Reports.training($0, org: org, year: year) }
    }
  }

  struct Exam: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Exam statistics: mean, SD, pass/excellent/low rates, by child org.",
      discussion: "Example: smartschool report exam --exam K341523-2025-1-MATH7 --org K341523")
    @OptionGroup var common: Common
    @Option(help: "Exam code.") var exam: String
    @Option(help: "Scope org code (default: the whole exam).") var org: String?
    func run() async throws {
      try await common.print { try await Reports.exam($0, exam: exam, org: org) }
    }
  }

  struct Items: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Item analysis: difficulty, discrimination, flags and Cronbach's alpha.",
      discussion: "Example: smartschool report items --exam K341523-2025-1-MATH7")
    @OptionGroup var common: Common
    @Option(help: "Exam code.") var exam: String
    func run() async throws {
      try await common.print { try await Reports.items($0, exam: exam) }
    }
  }

  struct Student: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "A student's exam report, mastery, and resources for the weak points.",
      discussion:
        "Example: smartschool report student --exam K341523-2025-1-MATH7 --student S0000001")
    @OptionGroup var common: Common
    @Option(help: "Exam code.") var exam: String
    @Option(help: "Student external id.") var student: String
    func run() async throws {
      try await common.print { try await Reports.student($0, exam: exam, student: student) }
    }
  }

  struct ClassReport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "class",
      abstract: "学情报告: a class's knowledge-point mastery and students below pass.",
      discussion: "Example: smartschool report class --exam K341523-2025-1-MATH7 --class SK341523U01-G7-1")
    @OptionGroup var common: Common
    @Option(help: "Exam code.") var exam: String
    @Option(name: .customLong("class"), help: "Class org code.") var classCode: String
    func run() async throws {
      try await common.print {
        try await Reports.classDiagnosis($0, exam: exam, classCode: classCode)
      }
    }
  }

  struct CaseCoverage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "case-coverage",
      abstract: "Share of curriculum chapters with a published smart-classroom teaching case.",
      discussion: "Example: smartschool report case-coverage --org K341523")
    @OptionGroup var common: Common
    @Option(help: "Org code.") var org: String
    func run() async throws {
      try await common.print { try await Reports.caseCoverage($0, org: org) }
    }
  }
}
