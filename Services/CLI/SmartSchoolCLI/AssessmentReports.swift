import ArgumentParser
import Foundation
import SmartSchoolClient
import SmartSchoolModel

// Reports of joint exam sessions (联考) and of progress between exams, as tables and CSV.
extension Reports {
  /// The subject comparison (学科对比) of a session report: the scope, then each child; per
  /// row the totals' count, mean, rates and rank, then each paper's mean and rank.
  public static func sessionReport(_ r: Smartschool_Assessment_V1_SessionReport) -> Report {
    let papers = r.scope.subjects.map { $0.subject.englishName }
    var columns: [(zh: String, en: String)] = [
      ("代码", "Code"), ("名称", "Name"), ("实考", "Sat"), ("缺考", "Absent"),
      ("总分均分", "Mean total"), ("及格率", "Pass rate"), ("优秀率", "Excellent rate"),
      ("排名", "Rank"),
    ]
    for (subject, paper) in zip(r.scope.subjects, papers) {
      columns.append((subject.subject.chineseName + "均分", paper + " mean"))
      columns.append((subject.subject.chineseName + "排名", paper + " rank"))
    }
    func row(_ s: Smartschool_Assessment_V1_SessionScope) -> [String] {
      let t = s.totals
      var cells = [
        t.orgCode.isEmpty ? "(全部 all)" : t.orgCode, t.orgName, "\(t.satCount)",
        "\(t.absentCount)", decimal2(t.mean), percent(t.passRate), percent(t.excellentRate),
        t.rank == 0 ? "" : "\(t.rank)",
      ]
      for column in s.subjects {
        cells.append(decimal2(column.figures.mean))
        cells.append(column.figures.rank == 0 ? "" : "\(column.figures.rank)")
      }
      return cells
    }
    let title =
      "学科对比 Subject comparison — \(r.sessionCode), 满分 full marks "
      + decimal2(r.fullMarks)
    let subjects = r.scope.subjects
    // Means as a share of each paper's full marks, so that subjects of 150 and 100 compare.
    let comparison = ReportChart(
      kind: .groupedBars, title: "学科对比 Subject comparison",
      labels: subjects.map { "\($0.subject.chineseName) \($0.subject.englishName)" },
      series: [
        .init(
          name: "得分率 Mean ÷ full marks",
          values: subjects.map { $0.fullMarks > 0 ? 100 * $0.figures.mean / $0.fullMarks : 0 }),
        .init(name: "及格率 Pass rate", values: subjects.map(\.figures.passRate)),
        .init(name: "优秀率 Excellent rate", values: subjects.map(\.figures.excellentRate)),
      ], unit: "%")
    return Report(
      tables: [
        ReportTable(title: title, columns: columns, rows: [row(r.scope)]),
        ReportTable(title: "下级单位 By child org", columns: columns, rows: r.children.map(row)),
      ], json: json(r),
      charts: [
        distribution("总分分布 Distribution of totals", r.scope.totals.bins), comparison,
        .bars(
          "下级单位总分均分 Mean total by child org", labels: r.children.map(\.totals.orgName),
          values: r.children.map(\.totals.mean)),
      ])
  }

  /// The rank list (成绩单) of a session from its students, best first.
  public static func sessionRanks(
    _ students: [Smartschool_Assessment_V1_SessionRankedStudent], session: String
  ) -> Report {
    let papers = students.first?.papers.map(\.examCode) ?? []
    var columns: [(zh: String, en: String)] = [
      ("学生", "Student"), ("班级", "Class"), ("学校", "School"), ("总分", "Total"),
      ("科数", "Papers"), ("班级名次", "Class rank"), ("学校名次", "School rank"),
      ("县区名次", "County rank"), ("联考名次", "Session rank"), ("百分等级", "Percentile"),
    ]
    columns += papers.map { ($0, $0) }
    let rows = students.map { s in
      [
        s.studentExternalID, s.classCode, s.schoolCode, decimal2(s.total), "\(s.papersSat)",
        "\(s.classRank)", "\(s.schoolRank)", "\(s.countyRank)", "\(s.sessionRank)",
        decimal2(s.percentileRank),
      ] + s.papers.map { $0.sat ? decimal2($0.total) : "缺考" }
    }
    var list = Smartschool_Assessment_V1_ListSessionRanksResponse()
    list.students = students
    list.totalCount = Int64(students.count)
    return Report(
      tables: [ReportTable(title: "成绩单 Rank list — \(session)", columns: columns, rows: rows)],
      json: json(list))
  }

  /// Progress between two exams (进退步): each group's change and value-added, then the
  /// students who moved most.
  public static func progressReport(_ r: Smartschool_Assessment_V1_ProgressReport) -> Report {
    let columns: [(zh: String, en: String)] = [
      ("代码", "Code"), ("名称", "Name"), ("人数", "Matched"), ("前均分", "Mean before"),
      ("后均分", "Mean after"), ("标准分变化", "z change"), ("前及格率", "Pass before"),
      ("后及格率", "Pass after"), ("增值", "Value-added"), ("增值排名", "VA rank"),
    ]
    func row(_ g: Smartschool_Assessment_V1_GroupProgress) -> [String] {
      [
        g.orgCode.isEmpty ? "(全部 all)" : g.orgCode, g.orgName, "\(g.matched)",
        decimal2(g.earlierMean), decimal2(g.laterMean), decimal4(g.zChange),
        percent(g.earlierPassRate), percent(g.laterPassRate), decimal4(g.valueAdded),
        g.valueAddedRank == 0 ? "" : "\(g.valueAddedRank)",
      ]
    }
    let moverColumns: [(zh: String, en: String)] = [
      ("学生", "Student"), ("班级", "Class"), ("前总分", "Before"), ("后总分", "After"),
      ("标准分变化", "z change"), ("前名次", "Rank before"), ("后名次", "Rank after"),
      ("名次变化", "Rank change"),
    ]
    func mover(_ s: Smartschool_Assessment_V1_StudentProgress) -> [String] {
      [
        s.studentExternalID, s.classCode, decimal2(s.earlierTotal), decimal2(s.laterTotal),
        decimal4(s.zChange), "\(s.earlierRank)", "\(s.laterRank)", "\(s.rankChange)",
      ]
    }
    let title =
      "进退步 Progress — \(r.earlierExamCode) → \(r.laterExamCode), 斜率 slope "
      + decimal4(r.slope)
    let names = r.children.map { $0.orgName.isEmpty ? $0.orgCode : $0.orgName }
    let charts = [
      ReportChart.bars(
        "标准分均值变化 Change in mean standardised score", labels: names,
        values: r.children.map(\.zChange), marked: indexes(r.children) { $0.zChange < 0 }),
      ReportChart.bars(
        "增值 Value-added", labels: names, values: r.children.map(\.valueAdded),
        marked: indexes(r.children) { $0.valueAdded < 0 }),
    ]
    return Report(
      tables: [
        ReportTable(title: title, columns: columns, rows: [row(r.scope)] + r.children.map(row)),
        ReportTable(
          title: "进步最大 Most improved", columns: moverColumns, rows: r.mostImproved.map(mover)),
        ReportTable(
          title: "退步最大 Most declined", columns: moverColumns, rows: r.mostDeclined.map(mover)),
      ], json: json(r), charts: charts)
  }

  /// The positions of the elements that `test` holds for, e.g. the rows to mark in a chart.
  static func indexes<T>(_ items: [T], where test: (T) -> Bool) -> Set<Int> {
    Set(items.indices.filter { test(items[$0]) })
  }

  static func decimal4(_ value: Double) -> String { String(format: "%.4f", value) }
}

extension ReportCommand {
  struct Session: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "联考 学科对比: a joint exam session's totals and subjects side by side.",
      discussion:
        "Example: smartschool report session --exam-session K341523-2025-1-G7 --org K341523")
    @OptionGroup var common: Common
    @Option(name: .customLong("exam-session"), help: "The joint exam session's code.")
    var session: String
    @Option(help: "Scope org code (default: the running org).") var org: String?
    @Flag(help: "List every class under the scope instead of its direct children.")
    var classes = false
    func run() async throws {
      try await common.print { client in
        Reports.sessionReport(
          try await client.assessment.getSessionReport(
            .with {
              $0.sessionCode = session
              $0.scopeOrgCode = org ?? ""
              if classes { $0.childrenKind = .class }
            }))
      }
    }
  }

  struct SessionRanks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "session-ranks",
      abstract: "成绩单: a session's students by total, with ranks and each paper.",
      discussion: """
        Example: smartschool report session-ranks --exam-session K341523-2025-1-G7 \
          --org SK341523U01
        """)
    @OptionGroup var common: Common
    @Option(name: .customLong("exam-session"), help: "The joint exam session's code.")
    var session: String
    @Option(help: "Scope org code (default: the running org).") var org: String?
    func run() async throws {
      try await common.print { client in
        var students: [Smartschool_Assessment_V1_SessionRankedStudent] = []
        var token = ""
        repeat {
          let page = try await client.assessment.listSessionRanks(
            .with {
              $0.sessionCode = session
              $0.scopeOrgCode = org ?? ""
              $0.pageSize = 1000
              $0.pageToken = token
            })
          students += page.students
          token = page.nextPageToken
        } while !token.isEmpty
        return Reports.sessionRanks(students, session: session)
      }
    }
  }

  struct Progress: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "进退步: progress and value-added between two exams of a cohort.",
      discussion: """
        Example: smartschool report progress --earlier K341523-2025-1-MATH7-MID \\
                   --later K341523-2025-1-MATH7 --org K341523
        """)
    @OptionGroup var common: Common
    @Option(help: "The earlier exam's code.") var earlier: String
    @Option(help: "The later exam's code.") var later: String
    @Option(help: "Scope org code (default: the later exam's running org).") var org: String?
    func run() async throws {
      try await common.print { client in
        Reports.progressReport(
          try await client.assessment.getProgress(
            .with {
              $0.earlierExamCode = earlier
              $0.laterExamCode = later
              $0.scopeOrgCode = org ?? ""
            }))
      }
    }
  }
}
