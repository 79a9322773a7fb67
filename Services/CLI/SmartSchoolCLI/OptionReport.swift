import ArgumentParser
import Foundation
import SmartSchoolClient
import SmartSchoolModel

/// 选项分析: the share of students choosing each option of an exam's objective items, overall
/// and in the upper and lower 27% groups (assessment's GetOptionAnalysis).
extension Reports {
  static func percentText(_ value: Double) -> String { String(format: "%.2f%%", value) }

  /// One row per option of each item (then the students with none recorded): the item, the
  /// option (✓ the key), count and shares.
  static func optionRows(_ item: Smartschool_Assessment_V1_ItemOptionAnalysis) -> [[String]] {
    (item.options + [item.unrecorded]).map { o in
      [
        "\(item.number)", o.option.isEmpty ? "(未作答 none)" : o.option, o.correct ? "✓" : "",
        "\(o.count)", percentText(o.share), percentText(o.upperShare),
        percentText(o.lowerShare),
      ]
    }
  }

  /// The option analysis of `exam` for `scope` (empty: the whole exam), with one bar chart per
  /// item: each option's share in the upper and lower groups and overall.
  public static func optionReport(_ client: SmartSchoolClient, exam: String, scope: String?)
    async throws -> Report
  {
    let r = try await client.assessment.getOptionAnalysis(
      .with {
        $0.examCode = exam
        $0.scopeOrgCode = scope ?? ""
      })
    let none = r.items.isEmpty ? " — 无带选项的客观题 no item declares options" : ""
    let table = ReportTable(
      title:
        "选项分析 Option analysis — \(r.examCode)\(scope.map { " (\($0))" } ?? ""), "
        + "实考 sat \(r.count), 高低分组各 \(r.groupSize) per 27% group\(none)",
      columns: [
        ("题号", "Item"), ("选项", "Option"), ("答案", "Key"), ("人数", "Count"),
        ("选择率", "Share"), ("高分组", "Upper 27%"), ("低分组", "Lower 27%"),
      ], rows: r.items.flatMap(optionRows))
    let charts = r.items.map { item in
      let options = item.options + [item.unrecorded]
      return ReportChart(
        kind: .groupedBars, title: "第 \(item.number) 题 Item \(item.number)",
        labels: options.map { $0.option.isEmpty ? "—" : $0.option + ($0.correct ? " ✓" : "") },
        series: [
          .init(name: "全体 All", values: options.map(\.share)),
          .init(name: "高分组 Upper 27%", values: options.map(\.upperShare)),
          .init(name: "低分组 Lower 27%", values: options.map(\.lowerShare)),
        ], unit: "%")
    }
    return Report(tables: [table], json: json(r), charts: charts)
  }
}

extension ReportCommand {
  struct OptionAnalysis: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "options",
      abstract: "选项分析: each option's share of an exam's objective items, overall and by group.",
      discussion: "Example: smartschool report options --exam K341523-2025-1-MATH7 --scope K341523")
    @OptionGroup var common: Common
    @Option(help: "Exam code.") var exam: String
    @Option(help: "Scope org code (county, school or class; default: the whole exam).")
    var scope: String?
    func run() async throws {
      try await common.print { try await Reports.optionReport($0, exam: exam, scope: scope) }
    }
  }
}
