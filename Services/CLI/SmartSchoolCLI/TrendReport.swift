import ArgumentParser
import Foundation
import SmartSchoolClient
import SmartSchoolModel

/// 趋势: an org's usage figures across terms and school years (supervision's GetTrends).
extension Reports {
  // Narrow labels: the tables fit a 120-column terminal.
  static let trendColumns: [(zh: String, en: String)] = [
    ("代码", "Code"), ("名称", "Name"), ("周", "Wk"), ("课室周", "R-wk"), ("课时", "Lessons"),
    ("学科达标率", "Subj%"), ("课时达标率", "Lsn%"), ("达标占比", "Met%"),
  ]

  static func trendRow(_ p: Smartschool_Supervision_V1_TrendPoint) -> [String] {
    [
      p.code, p.name, "\(p.teachingWeeks)", "\(p.scope.classroomWeeks)",
      "\(p.scope.lessonCount)", p.scope.subjectRateText, p.scope.lessonRateText,
      p.scope.compliantShareText,
    ]
  }

  /// Per term and per school year: compliance and teacher targets, the total and each school
  /// kind, with line charts across the terms.
  public static func trends(
    _ client: SmartSchoolClient, org: String, fromTerm: String?, toTerm: String?
  ) async throws -> Report {
    let r = try await client.supervision.getTrends(
      .with {
        $0.orgCode = org
        $0.fromTermCode = fromTerm ?? ""
        $0.toTermCode = toTerm ?? ""
      })
    let range = "\(fromTerm ?? "…") – \(toTerm ?? "…")"
    let none = r.terms.isEmpty ? " — 范围内无学期 no terms in the range" : ""
    let terms = ReportTable(
      title: "趋势 Trends — \(r.orgName) \(r.orgCode), 学期 terms \(range)\(none)",
      columns: trendColumns, rows: r.terms.map(trendRow))
    let years = ReportTable(
      title: "按学年 By school year", columns: trendColumns, rows: r.years.map(trendRow))
    let teachers = ReportTable(
      title: "教师开课目标 Teachers meeting the lesson target (学年: teacher-terms)",
      columns: [
        ("代码", "Code"), ("名称", "Name"), ("教师", "Teachers"), ("达标", "Met"),
        ("占比", "Share"),
      ],
      rows: (r.terms + r.years).map {
        [$0.code, $0.name, "\($0.teachers)", "\($0.teachersMet)", $0.teachersMetShareText]
      })
    var kindRows: [[String]] = []
    for p in r.terms {
      let teachers = Dictionary(
        p.teachersBySchoolKind.map { ($0.schoolKind, $0) }, uniquingKeysWith: { a, _ in a })
      for f in p.bySchoolKind {
        let t = teachers[f.schoolKind]
        kindRows.append(
          [
            p.code, f.orgName, "\(f.classroomWeeks)", "\(f.lessonCount)", f.subjectRateText,
            f.lessonRateText, f.compliantShareText,
            t.map { "\($0.met)/\($0.total) \($0.shareText)" } ?? "",
          ])
      }
      kindRows.append(
        [
          p.code, "合计 Total", "\(p.scope.classroomWeeks)", "\(p.scope.lessonCount)",
          p.scope.subjectRateText, p.scope.lessonRateText, p.scope.compliantShareText,
          "\(p.teachersMet)/\(p.teachers) \(p.teachersMetShareText)",
        ])
    }
    let kinds = ReportTable(
      title: "按学校类别 By school kind, per term",
      columns: [
        ("学期", "Term"), ("类别", "Kind"), ("课室周", "R-wk"), ("课时", "Lessons"),
        ("学科达标率", "Subj%"), ("课时达标率", "Lsn%"), ("达标占比", "Met%"),
        ("教师达标", "Teachers"),
      ], rows: kindRows)
    let labels = r.terms.map(\.name)
    var charts: [ReportChart] = []
    if !r.terms.isEmpty {
      charts.append(
        ReportChart(
          kind: .line, title: "学期趋势 Trend by term", labels: labels,
          series: [
            .init(name: "学科达标率 Subject rate", values: r.terms.map(\.scope.subjectRatePercent)),
            .init(name: "课时达标率 Lesson rate", values: r.terms.map(\.scope.lessonRatePercent)),
            .init(
              name: "达标占比 Compliant share", values: r.terms.map(\.scope.compliantSharePercent)),
            .init(
              name: "教师达标 Teachers meeting the target",
              values: r.terms.map(\.teachersMetSharePercent)),
          ], unit: "%"))
      let kindNames = r.terms[0].bySchoolKind.map(\.orgName)
      charts.append(
        ReportChart(
          kind: .line, title: "课时达标率按学校类别 Lesson rate by school kind", labels: labels,
          series: kindNames.map { kind in
            .init(
              name: kind,
              values: r.terms.map { p in
                p.bySchoolKind.first { $0.orgName == kind }?.lessonRatePercent ?? 0
              })
          } + [.init(name: "合计 Total", values: r.terms.map(\.scope.lessonRatePercent))],
          unit: "%"))
    }
    return Report(tables: [terms, years, teachers, kinds], json: json(r), charts: charts)
  }
}

extension ReportCommand {
  struct Trends: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "趋势: compliance and teacher targets across terms and school years.",
      discussion:
        "Example: smartschool report trends --org K341523 --from-term 2025-2026-1 "
        + "--to-term 2025-2026-1")
    @OptionGroup var common: Common
    @Option(help: "Org code.") var org: String
    @Option(help: "First term (code; default: the earliest).") var fromTerm: String?
    @Option(help: "Last term (code; default: the latest).") var toTerm: String?
    func run() async throws {
      try await common.print {
        try await Reports.trends($0, org: org, fromTerm: fromTerm, toTerm: toTerm)
      }
    }
  }
}
