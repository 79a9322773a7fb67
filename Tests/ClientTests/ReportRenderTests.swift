import ArgumentParser
import Foundation
import SmartSchoolCLI
import SmartSchoolModel
import TestSupport
import Testing

/// The one report renderer: HTML pages with charts, CSV one table per file.
@Suite struct ReportRenderTests {
  /// Two tables and two charts whose names carry markup and quotes.
  var hostile: Report {
    let schools = ReportTable(
      title: "每周通报 Weekly notice — <K1> & \"co\"",
      columns: [("名次", "Rank"), ("学校", "School <b>"), ("室均", "Per room"), ("达标", "Below")],
      rows: [
        ["1", "一中 <script>alert('x')</script>", "6.50", ""],
        ["2", "A&B \"小学\"", "2.00", "▼"],
        ["", "合计", "4.25", ""],
      ])
    let kinds = ReportTable(title: "按学校类别 By school kind", columns: [("类别", "Kind")])
    return Report(
      tables: [schools, kinds], json: "{}",
      charts: [
        .bars(
          "排名 <Ranking> & \"bars\"", labels: ["一中 <script>", "A&B \"小学\""],
          values: [6.5, 2], marked: [1]),
        ReportChart(
          kind: .line, title: "趋势 Trend", labels: ["09-01", "09-08", "09-15"],
          series: [
            .init(name: "课时 <lessons>", values: [50, 75, 100]),
            .init(name: "学科", values: [10, 20, .nan]),
          ], unit: "%"),
      ],
      notes: ["目录 <down> & out"])
  }

  @Test func htmlEscapesNamesAndMarksRows() {
    let html = hostile.html()
    #expect(html.hasPrefix("<!DOCTYPE html>\n<html lang=\"zh-CN\">"))
    #expect(html.contains("<meta charset=\"utf-8\">"))
    // No markup from the data reaches the page, in text or in attributes.
    #expect(!html.contains("<script") && !html.contains("<K1>") && !html.contains("<b>"))
    #expect(!html.contains("<lessons>") && !html.contains("<down>"))
    #expect(html.contains("一中 &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"))
    #expect(html.contains("A&amp;B &quot;小学&quot;"))
    #expect(html.contains("data-label=\"A&amp;B &quot;小学&quot;\""))
    #expect(html.contains("<title>每周通报 Weekly notice — &lt;K1&gt; &amp; &quot;co&quot;</title>"))
    #expect(html.contains("<p class=\"note\">目录 &lt;down&gt; &amp; out</p>"))
    // Self-contained: no script, no external reference.
    #expect(!html.contains("src=") && !html.contains("href=") && !html.contains("@import"))
    // Rows: the ▼ row is marked below standard, the 合计 row as the total; an empty table
    // says so in a row of its own.
    #expect(html.contains("<tr class=\"below\"><td class=\"num\">2</td><td>A&amp;B"))
    #expect(html.contains("<tr class=\"total\"><td></td><td>合计</td>"))
    #expect(html.contains("<td colspan=\"1\">无数据 No rows</td>"))
    #expect(html.components(separatedBy: "<table>").count - 1 == 2)
    #expect(
      html.contains("<span class=\"zh\">学校</span> <span class=\"en\" lang=\"en\">School &lt;b&gt;"))
  }

  @Test func chartsDrawABarPerLabelAndAPointPerValue() {
    let html = hostile.html()
    #expect(html.components(separatedBy: "<svg ").count - 1 == 2)
    #expect(html.components(separatedBy: "<rect class=\"bar").count - 1 == 2)
    #expect(html.components(separatedBy: "<rect class=\"bar below\"").count - 1 == 1)
    #expect(html.contains("▼ A&amp;B &quot;小学&quot;</text>"))
    #expect(html.components(separatedBy: "<circle class=\"point\"").count - 1 == 6)
    #expect(html.components(separatedBy: "<polyline class=\"series\"").count - 1 == 2)
    // A value that is not a number is drawn as 0, never as "nan" in the SVG.
    #expect(!html.lowercased().contains("nan\""))
    #expect(html.contains("data-value=\"100\""))
    // The longest bar spans the plot (400 px from the zero line at 220).
    #expect(html.contains("data-value=\"6.50\" x=\"220\" y=\"8\" width=\"400\""))
  }

  @Test func negativeBarsGrowLeftOfTheZeroLine() {
    let html = Report(
      tables: [], json: "{}",
      charts: [.bars("z", labels: ["up", "down"], values: [1, -3], marked: [1])]
    ).html()
    // low −3, high 1 over 350 px (50 kept for the negative values' text): 87.5 px per unit,
    // zero at 220 + 50 + 262.5 = 532.5.
    #expect(html.contains("data-value=\"1\" x=\"532.5\" y=\"8\" width=\"87.5\""))
    #expect(html.contains("data-value=\"-3\" x=\"270\" y=\"32\" width=\"262.5\""))
    #expect(html.contains("<line class=\"axis\" x1=\"532.5\""))
    // The negative value's text ends left of its bar, clear of the labels (which end at 214).
    #expect(html.contains("<text class=\"value\" x=\"266\" y=\"39\" text-anchor=\"end\""))
  }

  @Test func tablesOfManyColumnsPrintSmaller() {
    let columns = (1...13).map { (zh: "列\($0)", en: "C\($0)") }
    let html = Report(
      tables: [
        ReportTable(title: "宽 Wide", columns: columns),
        ReportTable(title: "窄 Narrow", columns: Array(columns.prefix(12))),
      ], json: "{}"
    ).html()
    #expect(html.components(separatedBy: "<table class=\"wide\">").count - 1 == 1)
    #expect(html.components(separatedBy: "<table>").count - 1 == 1)
  }

  @Test func aCountyRankListRendersInLinearTime() {
    // A county's 成绩单: 13,000 students × 20 columns, one table; rendering is one pass.
    let columns = (1...20).map { (zh: "列\($0)", en: "C\($0)") }
    let rows = (0..<13_000).map { i in (0..<20).map { "S\(i)-\($0) & <x>" } }
    let clock = ContinuousClock()
    var html = ""
    let took = clock.measure {
      html = Report(
        tables: [ReportTable(title: "成绩单 Rank list", columns: columns, rows: rows)],
        json: "{}"
      ).html()
    }
    #expect(html.components(separatedBy: "<tr>").count - 1 == 13_001)
    #expect(took < .seconds(20), "\(took)")
  }

  @Test func csvIsOneFilePerTable() throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let report = hostile
    #expect(report.csvFiles().map(\.name) == ["1-weekly-notice.csv", "2-by-school-kind.csv"])

    // Several tables never go to one stream, nor to one .csv file.
    #expect(throws: ValidationError.self) { try report.write(.csv, to: nil) }
    #expect(throws: ValidationError.self) { try report.write(.csv, to: dir.path + "/all.csv") }

    let out = dir.path + "/notice"
    let written = try report.write(.csv, to: out)
    #expect(written == [out + "/1-weekly-notice.csv", out + "/2-by-school-kind.csv"])
    // Files start with a UTF-8 byte order mark, for Excel; the CLI's own reader takes it.
    func file(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(filePath: path))) }
    let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
    #expect(
      try file(written[0])
        == bom
        + Array(
          ("Rank,School <b>,Per room,Below\n1,一中 <script>alert('x')</script>,6.50,\n"
            + "2,\"A&B \"\"小学\"\"\",2.00,▼\n,合计,4.25,\n").utf8))
    #expect(try file(written[1]) == bom + Array("Kind\n".utf8))
    let read = try CSVTable(
      reader: CSVReader(data: Data(try file(written[0]))),
      expected: ["Rank", "School <b>", "Per room", "Below"])
    #expect(read.columns["Rank"] == 0)

    // One table: a named .csv file, or a file of its own in an existing directory.
    let single = Report(tables: [report.tables[1]], json: "{}")
    #expect(try single.write(.csv, to: dir.path + "/kinds.csv") == [dir.path + "/kinds.csv"])
    #expect(try single.write(.csv, to: out) == [out + "/1-by-school-kind.csv"])

    // HTML and text go to the one file named.
    #expect(try file(dir.path + "/kinds.csv").starts(with: bom))
    #expect(try report.write(.html, to: dir.path + "/r.html") == [dir.path + "/r.html"])
    let page = try String(contentsOfFile: dir.path + "/r.html", encoding: .utf8)
    #expect(page == report.html())
    #expect(throws: ValidationError.self) { try report.write(.html, to: dir.path) }
  }

  @Test func tableSlugsNameFiles() {
    func slug(_ title: String) -> String { ReportTable(title: title, columns: []).slug }
    #expect(slug("下级单位 By child org") == "by-child-org")
    #expect(slug("评级分布 Ratings (12 次 visits)") == "ratings")
    #expect(slug("试题分析 Item analysis — E1, 信度 Cronbach's α = 0.80") == "item-analysis")
    #expect(slug("整改 Follow-up — 视导覆盖 research visits 3/5") == "follow-up")
    #expect(slug("教师开课 Teacher targets — K1, T1: 3/4 达标 met") == "teacher-targets")
    #expect(slug("学情") == "table")
  }

  @Test func sessionAndProgressChartsComeFromTheAnswer() {
    let report = Reports.sessionReport(
      .with {
        $0.sessionCode = "S-K1"
        $0.scope = .with {
          $0.totals.bins = [
            .with {
              $0.lower = 0
              $0.upper = 100
              $0.count = 3
            },
            .with {
              $0.lower = 100
              $0.upper = 200
              $0.count = 7
            },
          ]
          $0.subjects = [
            .with {
              $0.subject = .mathematics
              $0.fullMarks = 150
              $0.figures.mean = 90
              $0.figures.passRate = 60
            }
          ]
        }
        $0.children = [.with { $0.totals.orgName = "一中" }]
      })
    let titles = report.charts.map(\.title)
    #expect(
      titles == [
        "总分分布 Distribution of totals", "学科对比 Subject comparison",
        "下级单位总分均分 Mean total by child org",
      ])
    #expect(report.charts[0].labels == ["0–100", "100–200"])
    #expect(report.charts[0].series[0].values == [3, 7])
    // A mean of 90 out of 150 is 60% of full marks.
    #expect(report.charts[1].series.map(\.values) == [[60], [60], [0]])
    #expect(report.charts[1].labels == ["数学 mathematics"])

    let progress = Reports.progressReport(
      .with {
        $0.children = [
          .with {
            $0.orgCode = "C1"
            $0.zChange = 0.25
          },
          .with {
            $0.orgCode = "C2"
            $0.orgName = "二班"
            $0.zChange = -0.5
          },
        ]
      })
    #expect(progress.charts[0].labels == ["C1", "二班"])
    #expect(progress.charts[0].series[0].values == [0.25, -0.5])
    #expect(progress.charts[0].marked == [1])
  }
}
