import ArgumentParser
import Foundation
import SmartSchoolClient
import SmartSchoolModel

/// The supervision reports that were gRPC calls only: the weekly notice, the inspection
/// summary and early warning.
extension Reports {
  /// 每周通报: schools ranked by lessons per classroom, below-standard rows marked (▼).
  public static func notice(_ client: SmartSchoolClient, org: String, week: String)
    async throws -> Report
  {
    let r = try await client.supervision.getWeeklyNotice(
      .with {
        $0.orgCode = org
        $0.week = week
      })
    let empty = r.thisWeek.classroomWeeks == 0 ? " — 本周无智慧课堂数据 no classroom data" : ""
    let schools = ReportTable(
      title: "每周通报 Weekly notice — \(org), \(r.termCode), 周 week of \(r.week)\(empty)",
      columns: [
        ("名次", "Rank"), ("代码", "Code"), ("学校", "School"), ("类别", "Kind"),
        ("教室", "Rooms"), ("课时", "Lessons"), ("室均", "Per room"), ("上周", "Before"),
        ("变化", "Change"), ("达标", "Below"),
      ],
      rows: r.schools.map {
        [
          "\($0.rank)", $0.schoolCode, $0.schoolName, $0.schoolKind.chineseName,
          "\($0.classrooms)", "\($0.lessons)", decimal2($0.lessonsPerClassroom),
          decimal2($0.previousLessonsPerClassroom), decimal2($0.change),
          $0.belowStandard ? "▼" : "",
        ]
      } + [
        [
          "", "合计", "Total", "", "\(r.thisWeek.classrooms)", "\(r.thisWeek.lessonCount)",
          decimal2(r.thisWeek.averageLessons), decimal2(r.previous.averageLessons),
          decimal2(r.lessonsPerClassroomChange), "",
        ]
      ])
    let kinds = ReportTable(
      title: "按学校类别 By school kind", columns: kindColumns,
      rows: r.bySchoolKind.map { kindRow($0) } + [kindRow(r.thisWeek, label: "合计 Total")])
    let rooms = ReportTable(
      title: "未达标智慧课堂 Classrooms below standard (\(r.classroomsBelowStandard.count))",
      columns: [("学校", "School"), ("教室", "Classroom"), ("课时", "Lessons"), ("学科", "Subjects")],
      rows: r.classroomsBelowStandard.map {
        [
          $0.schoolCode, "\($0.classroomCode) \($0.classroomName)", "\($0.lessons)",
          "\($0.subjects)",
        ]
      })
    // The notice answers two weeks; the trend up to this week is the compliance report's.
    let term = try await client.supervision.getComplianceReport(
      .with {
        $0.orgCode = org
        $0.termCode = r.termCode
        $0.toWeek = r.week
      })
    let ranking = ReportChart.bars(
      "室均课时排名 Lessons per classroom, ranked", labels: r.schools.map(\.schoolName),
      values: r.schools.map(\.lessonsPerClassroom),
      marked: indexes(r.schools) { $0.belowStandard })
    return Report(
      tables: [schools, kinds, rooms], json: json(r),
      charts: [ranking, kindChart(r.bySchoolKind), weeklyTrend(term.byWeek)])
  }

  static let kindColumns: [(zh: String, en: String)] = [
    ("类别", "Kind"), ("课室周", "Room-weeks"), ("课时", "Lessons"), ("学科达标率", "Subject rate"),
    ("课时达标率", "Lesson rate"), ("达标占比", "Compliant"), ("手工录入", "Manual"),
  ]

  static func kindRow(_ f: Smartschool_Supervision_V1_ComplianceFigures, label: String? = nil)
    -> [String]
  {
    [
      label ?? f.orgName, "\(f.classroomWeeks)", "\(f.lessonCount)", f.subjectRateText,
      f.lessonRateText, f.compliantShareText, f.manualShareText,
    ]
  }

  static func kindRow(_ k: Smartschool_Supervision_V1_KindShare) -> [String] {
    [k.label, "\(k.total)", "\(k.met)", k.shareText]
  }

  /// 督导: schools inspected in a year (not inspected marked ▼), ratings, research visits.
  public static func inspections(
    _ client: SmartSchoolClient, org: String, year: Int, term: String?
  ) async throws -> Report {
    let r = try await client.supervision.getInspectionSummary(
      .with {
        $0.orgCode = org
        $0.year = Int32(year)
        $0.termCode = term ?? ""
      })
    let visits = r.ratings.reduce(0) { $0 + $1.count }
    let none = visits == 0 ? " — 本年无督导记录 no visits this year" : ""
    let period = r.researchTermCode.isEmpty ? "本年 year" : r.researchTermCode
    let schools = ReportTable(
      title:
        "督导 Inspections — \(org), \(r.year): \(r.inspected.count)/\(r.schools) "
        + "(\(r.inspectedShareText))\(none)",
      columns: [
        ("代码", "Code"), ("学校", "School"), ("类别", "Kind"), ("督导", "Inspections"),
        ("最近", "Last"), ("视导 \(period)", "Research visits"), ("待整改", "Open"),
        ("未督导", "Missing"),
      ],
      rows: (r.inspected + r.notInspected).sorted { $0.schoolCode < $1.schoolCode }.map {
        [
          $0.schoolCode, $0.schoolName, $0.schoolKind.chineseName, "\($0.inspections)",
          $0.lastDate, "\($0.researchVisits)", "\($0.openFollowUps)",
          $0.inspections == 0 ? "▼" : "",
        ]
      })
    let ratings = ReportTable(
      title: "评级分布 Ratings (\(visits) 次 visits)",
      columns: [("评级", "Rating"), ("次数", "Visits"), ("占比", "Share")],
      rows: r.ratings.map { [ratingName($0.rating), "\($0.count)", $0.shareText] })
    let kinds = ReportTable(
      title: "按学校类别 By school kind",
      columns: [("类别", "Kind"), ("学校", "Schools"), ("已督导", "Inspected"), ("占比", "Share")],
      rows: r.bySchoolKind.map(kindRow) + [
        ["合计 Total", "\(r.schools)", "\(r.inspected.count)", r.inspectedShareText]
      ])
    let followUp = ReportTable(
      title:
        "整改 Follow-up — 视导覆盖 research visits \(r.researchVisited)/\(r.schools) "
        + "(\(r.researchVisitedShareText))",
      columns: [("状态", "Status"), ("次数", "Visits")],
      rows: [
        ["待整改 Open", "\(r.followUpsOpen)"], ["已整改 Rectified", "\(r.followUpsRectified)"],
        ["已复核 Verified", "\(r.followUpsVerified)"],
        ["无需整改 Not needed", "\(r.followUpsNotNeeded)"],
      ])
    let charts = [
      ReportChart.bars(
        "评级分布 Ratings", labels: r.ratings.map { ratingName($0.rating) },
        values: r.ratings.map { Double($0.count) }),
      ReportChart.bars(
        "已督导学校占比 Share of schools inspected", labels: r.bySchoolKind.map(\.label),
        values: r.bySchoolKind.map(\.sharePercent),
        unit: "%"),
    ]
    return Report(tables: [schools, ratings, kinds, followUp], json: json(r), charts: charts)
  }

  /// 月通报 / 半年考核 / 全年评比: schools ranked over a period, below-standard rows ▼.
  public static func ranking(
    _ client: SmartSchoolClient, org: String, period: Smartschool_Supervision_V1_RankingPeriod,
    date: String
  ) async throws -> Report {
    let r = try await client.supervision.getRanking(
      .with {
        $0.orgCode = org
        $0.period = period
        $0.date = date
      })
    let name =
      switch period {
      case .month: "月通报 Monthly notice"
      case .halfYear: "半年考核 Half-year assessment"
      default: "全年评比 Yearly ranking"
      }
    let none = r.weeks.isEmpty ? " — 本期无教学周 no teaching weeks in this period" : ""
    let schools = ReportTable(
      title: "\(name) — \(org), \(r.fromDate) … \(r.toDate), \(r.weeks.count) 周 weeks\(none)",
      columns: [
        ("名次", "Rank"), ("代码", "Code"), ("学校", "School"), ("类别", "Kind"),
        ("课室周", "Room-weeks"), ("课时", "Lessons"), ("课时达标率", "Lesson rate"),
        ("学科达标率", "Subject rate"), ("上期", "Before"), ("变化", "Change"), ("达标", "Below"),
      ],
      rows: r.schools.map {
        [
          "\($0.rank)", $0.schoolCode, $0.schoolName, $0.schoolKind.chineseName,
          "\($0.figures.classroomWeeks)", "\($0.figures.lessonCount)",
          $0.figures.lessonRateText, $0.figures.subjectRateText,
          percent($0.previousLessonRatePercent), decimal2($0.lessonRateChange),
          $0.belowStandard ? "▼" : "",
        ]
      } + [
        [
          "", "合计", "Total", "", "\(r.scope.classroomWeeks)", "\(r.scope.lessonCount)",
          r.scope.lessonRateText, r.scope.subjectRateText,
          percent(r.previousScope.lessonRatePercent),
          decimal2(r.scope.lessonRatePercent - r.previousScope.lessonRatePercent), "",
        ]
      ])
    let kinds = ReportTable(
      title: "按学校类别 By school kind", columns: kindColumns,
      rows: r.bySchoolKind.map { kindRow($0) } + [kindRow(r.scope, label: "合计 Total")])
    let ranking = ReportChart.bars(
      "课时达标率排名 Lesson rate, ranked", labels: r.schools.map(\.schoolName),
      values: r.schools.map(\.figures.lessonRatePercent), unit: "%",
      marked: indexes(r.schools) { $0.belowStandard })
    return Report(
      tables: [schools, kinds], json: json(r), charts: [ranking, kindChart(r.bySchoolKind)])
  }

  static func ratingName(_ r: Smartschool_Supervision_V1_InspectionRating) -> String {
    switch r {
    case .excellent: "优 Excellent"
    case .good: "良 Good"
    case .fair: "中 Fair"
    case .poor: "差 Poor"
    default: "-"
    }
  }

  static func warningName(_ k: Smartschool_Supervision_V1_WarningKind) -> String {
    switch k {
    case .classroomBelowStandard: "教室连续未达标"
    case .schoolBelowStandard: "学校连续未达标"
    case .teacherAtRisk: "教师开课不足"
    case .schoolNotInspected: "学校未督导"
    default: "-"
    }
  }

  /// 监测预警: every warning of a term as of a day, standing ones marked ▼.
  public static func warnings(
    _ client: SmartSchoolClient, org: String, term: String, asOf: String?, weeks: Int?
  ) async throws -> Report {
    let r = try await client.supervision.listWarnings(
      .with {
        $0.orgCode = org
        $0.termCode = term
        $0.asOf = asOf ?? ""
        $0.consecutiveWeeks = Int32(weeks ?? 0)
      })
    let none = r.warnings.isEmpty ? " — 无预警 no warnings" : ""
    let table = ReportTable(
      title:
        "监测预警 Early warning — \(org), \(r.termCode), as of \(r.asOf), "
        + "N = \(r.consecutiveWeeks): \(r.active) 未解除 standing, \(r.cleared) 已解除 cleared\(none)",
      columns: [
        ("预警", "Warning"), ("学校", "School"), ("对象", "Subject"), ("触发", "Raised"),
        ("解除", "Cleared"), ("原因", "Reason"),
      ],
      rows: r.warnings.map {
        [
          ($0.clearedDate.isEmpty ? "▼ " : "") + warningName($0.kind),
          "\($0.schoolCode) \($0.schoolName)",
          $0.classroomCode.isEmpty ? $0.teacherExternalID : $0.classroomCode, $0.triggeredDate,
          $0.clearedDate, $0.reason,
        ]
      })
    return Report(tables: [table], json: json(r))
  }
}

extension ReportCommand {
  struct Notice: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "每周通报: a week's schools ranked by lessons per smart classroom.",
      discussion: "Example: smartschool report notice --org K341523 --week 2025-09-08")
    @OptionGroup var common: Common
    @Option(help: "Org code.") var org: String
    @Option(help: "Any date of the week (YYYY-MM-DD).") var week: String
    func run() async throws {
      try await common.print { try await Reports.notice($0, org: org, week: week) }
    }
  }

  struct Inspections: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "督导: schools inspected in a year, ratings, research visits, follow-up.",
      discussion: "Example: smartschool report inspections --org K341523 --year 2025")
    @OptionGroup var common: Common
    @Option(help: "Org code.") var org: String
    @Option(help: "Year (default: this year).") var year: Int?
    @Option(help: "Count research visits in this term (code) instead of the year.")
    var term: String?
    func run() async throws {
      try await common.print {
        try await Reports.inspections(
          $0, org: org, year: year ?? ReportCommand.thisYear, term: term)
      }
    }
  }

  struct Ranking: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "月通报/半年考核/全年评比: schools ranked over a month, half-year or year.",
      discussion:
        "Example: smartschool report ranking --org K341523 --period month --date 2025-09-01")
    @OptionGroup var common: Common
    @Option(help: "Org code.") var org: String
    @Option(help: "month, half-year or year.") var period: String = "month"
    @Option(help: "Any day of the period (YYYY-MM-DD).") var date: String
    func run() async throws {
      let periods: [String: Smartschool_Supervision_V1_RankingPeriod] = [
        "month": .month, "half-year": .halfYear, "year": .year,
      ]
      guard let p = periods[period] else {
        throw ValidationError("--period must be month, half-year or year")
      }
      try await common.print { try await Reports.ranking($0, org: org, period: p, date: date) }
    }
  }

  struct Warnings: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "监测预警: classrooms, schools and teachers falling behind; schools not inspected.",
      discussion: "Example: smartschool report warnings --org K341523 --term 2025-2026-1")
    @OptionGroup var common: Common
    @Option(help: "Org code.") var org: String
    @Option(help: "Term code.") var term: String
    @Option(help: "Judge as of this day (YYYY-MM-DD; default: today).") var asOf: String?
    @Option(help: "Weeks below standard that raise a warning (default: the server's).")
    var weeks: Int?
    func run() async throws {
      try await common.print {
        try await Reports.warnings($0, org: org, term: term, asOf: asOf, weeks: weeks)
      }
    }
  }
}
