import Foundation
import ServiceRuntime

/// A chart of a report, drawn as inline SVG in its HTML file: bars (one series), grouped bars
/// (several series side by side per label) or a line chart (one line per series).
public struct ReportChart: Sendable {
  /// How the values are drawn.
  public enum Kind: String, Sendable {
    /// One horizontal bar per label (rankings, distributions).
    case bars
    /// One group of horizontal bars per label, one bar per series.
    case groupedBars = "grouped-bars"
    /// One line per series over the labels (weeks, terms).
    case line
  }

  /// One named row of values, one value per label.
  public struct Series: Sendable {
    /// The legend, e.g. "课时达标率 Lesson rate".
    public var name: String
    /// One value per label.
    public var values: [Double]

    /// A series.
    public init(name: String, values: [Double]) {
      self.name = name
      self.values = values
    }
  }

  /// How the values are drawn.
  public var kind: Kind
  /// The caption, Chinese with English beside it.
  public var title: String
  /// The categories: bars, groups or points along the x axis.
  public var labels: [String]
  /// The values; a bar chart has one series.
  public var series: [Series]
  /// Written after each value, e.g. "%" (empty for plain numbers).
  public var unit: String
  /// Indexes of labels below standard: their bars are marked (▼, a class of their own).
  public var marked: Set<Int>

  /// A chart; `series` values beyond `labels` are ignored, missing ones count as 0.
  public init(
    kind: Kind, title: String, labels: [String], series: [Series], unit: String = "",
    marked: Set<Int> = []
  ) {
    self.kind = kind
    self.title = title
    self.labels = labels
    self.series = series
    self.unit = unit
    self.marked = marked
  }

  /// One bar per label.
  public static func bars(
    _ title: String, labels: [String], values: [Double], unit: String = "",
    marked: Set<Int> = []
  ) -> ReportChart {
    ReportChart(
      kind: .bars, title: title, labels: labels, series: [Series(name: title, values: values)],
      unit: unit, marked: marked)
  }

  /// A histogram of score bins, e.g. "60–70", one bar per bin with its student count.
  static func distribution(_ title: String, bins: [(lower: Double, upper: Double, count: Int64)])
    -> ReportChart
  {
    func score(_ v: Double) -> String {
      v == v.rounded() ? String(Int(v)) : decimal2(v)
    }
    return .bars(
      title, labels: bins.map { "\(score($0.lower))–\(score($0.upper))" },
      values: bins.map { Double($0.count) })
  }
}

extension Report {
  /// The report as one self-contained HTML page: inline CSS, the charts as inline SVG, every
  /// table as an HTML table (rows with a ▼ cell have class "below"), no script, no external
  /// asset; laid out to print on A4.
  public func html() -> String {
    let title = tables.first?.title ?? "报告 Report"
    var out = """
      <!DOCTYPE html>
      <html lang="zh-CN">
      <head>
      <meta charset="utf-8">
      <meta name="viewport" content="width=device-width, initial-scale=1">
      <title>\(escapeHTML(title))</title>
      <style>\(ReportHTML.style)</style>
      </head>
      <body>
      <h1>\(escapeHTML(title))</h1>

      """
    for note in notes {
      out += "<p class=\"note\">\(escapeHTML(note))</p>\n"
    }
    if !charts.isEmpty {
      out += "<section class=\"charts\">\n"
      for (index, chart) in charts.enumerated() {
        out += ReportHTML.figure(chart, id: "chart-\(index + 1)")
      }
      out += "</section>\n"
    }
    for (index, table) in tables.enumerated() {
      out += ReportHTML.table(table, id: "table-\(index + 1)")
    }
    return out + "</body>\n</html>\n"
  }
}

/// The pieces of a report's HTML page.
enum ReportHTML {
  static let style = """
    body{font-family:"Noto Sans CJK SC","Source Han Sans SC","Microsoft YaHei",\
    "PingFang SC",sans-serif;margin:1.5em;color:#222;font-size:14px}
    h1{font-size:1.4em;margin:0 0 .6em}h2{font-size:1.1em;margin:1.4em 0 .4em}
    .note{background:#fff6d6;border-left:4px solid #e0a800;padding:.4em .8em}
    .charts{display:flex;flex-wrap:wrap;gap:1em}
    figure.chart{margin:0;border:1px solid #ddd;padding:.5em;break-inside:avoid}
    figcaption{font-weight:bold;margin-bottom:.3em}svg{max-width:100%;height:auto}
    svg text{font-size:11px;fill:#333}svg .axis{stroke:#999;stroke-width:1}
    svg .grid{stroke:#e4e4e4;stroke-width:1}svg .bar.below{fill:#d9534f}
    svg .legend text{font-size:11px}
    table{border-collapse:collapse;margin:.3em 0 1em;font-size:.9em}
    th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
    th{background:#f0f3f7}th .en{display:block;font-weight:normal;color:#555;font-size:.85em}
    td.num{text-align:right;font-variant-numeric:tabular-nums}
    tr.below td{background:#fdecea}tr.total td{font-weight:bold;background:#f6f6f6}
    .empty{color:#777;font-style:italic}
    @page{size:A4;margin:12mm}
    @media print{body{margin:0;font-size:9pt}thead{display:table-header-group}
    tr{break-inside:avoid}section.table{break-inside:auto}h2{break-after:avoid}
    table.wide{font-size:7pt}table.wide th,table.wide td{padding:.1em .25em}}
    """

  /// Fill colours of the series, in order.
  static let colours = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948"]

  static func table(_ table: ReportTable, id: String) -> String {
    var out = "<section class=\"table\" id=\"\(id)\">\n<h2>\(escapeHTML(table.title))</h2>\n"
    // A table of many columns (a session's subjects side by side) gets a smaller print font
    // so that it fits an A4 page's width.
    let wide = table.columns.count > 12 ? " class=\"wide\"" : ""
    out += "<table\(wide)>\n<thead><tr>"
    for column in table.columns {
      out +=
        "<th><span class=\"zh\">\(escapeHTML(column.zh))</span>"
        + " <span class=\"en\" lang=\"en\">\(escapeHTML(column.en))</span></th>"
    }
    out += "</tr></thead>\n<tbody>\n"
    for row in table.rows {
      var classes: [String] = []
      if row.contains(where: { $0 == "▼" || $0.hasPrefix("▼ ") }) { classes.append("below") }
      if row.contains(where: { $0 == "合计" || $0.hasPrefix("合计 ") }) { classes.append("total") }
      out += classes.isEmpty ? "<tr>" : "<tr class=\"\(classes.joined(separator: " "))\">"
      for cell in row {
        out += isNumber(cell) ? "<td class=\"num\">" : "<td>"
        out += escapeHTML(cell) + "</td>"
      }
      out += "</tr>\n"
    }
    if table.rows.isEmpty {
      out +=
        "<tr class=\"empty\"><td colspan=\"\(max(1, table.columns.count))\">"
        + "无数据 No rows</td></tr>\n"
    }
    return out + "</tbody>\n</table>\n</section>\n"
  }

  /// Figures are right-aligned: numbers, percentages, ranks like "3/40".
  static func isNumber(_ cell: String) -> Bool {
    !cell.isEmpty && cell.allSatisfy { $0.isNumber || "+-.,%/".contains($0) }
      && cell.contains(where: \.isNumber)
  }

  static func number(_ v: Double) -> String {
    v == v.rounded() && abs(v) < 1e15 ? String(Int(v)) : decimal2(v)
  }

  /// A value as shown beside its bar or point: whole numbers when every value of the chart is
  /// one (counts), else two decimals throughout.
  static func shown(_ v: Double, _ chart: ReportChart) -> String {
    let whole = chart.series.allSatisfy { $0.values.allSatisfy { $0 == $0.rounded() } }
    return (whole ? number(v) : decimal2(v)) + chart.unit
  }

  static func figure(_ chart: ReportChart, id: String) -> String {
    let svg =
      switch chart.kind {
      case .bars, .groupedBars: barsSVG(chart)
      case .line: lineSVG(chart)
      }
    return "<figure class=\"chart \(chart.kind.rawValue)\" id=\"\(id)\">"
      + "<figcaption>\(escapeHTML(chart.title))</figcaption>\n\(svg)</figure>\n"
  }

  static func value(_ series: ReportChart.Series, _ index: Int) -> Double {
    index < series.values.count && series.values[index].isFinite ? series.values[index] : 0
  }

  static let width = 720.0
  static let labelWidth = 220.0
  static let plotWidth = 400.0

  /// Horizontal bars: a label column, the bars from a zero line (negative values to its left),
  /// each value at its bar's end; grouped bars get a legend.
  static func barsSVG(_ chart: ReportChart) -> String {
    let grouped = chart.kind == .groupedBars
    let series = grouped ? chart.series : Array(chart.series.prefix(1))
    let barHeight = grouped ? 12.0 : 16.0
    let groupHeight = barHeight * Double(max(1, series.count)) + 8
    let top = grouped ? 24.0 : 4.0
    let height = top + groupHeight * Double(chart.labels.count) + 20
    let all = series.flatMap { s in chart.labels.indices.map { value(s, $0) } }
    let low = min(0, all.min() ?? 0)
    let high = max(0, all.max() ?? 0)
    // Negative values are written left of their bars: keep room for them beside the labels.
    let gutter = low < 0 ? 50.0 : 0
    let scale = high > low ? (plotWidth - gutter) / (high - low) : 0
    let zero = labelWidth + gutter + (-low) * scale
    var out = svgOpen(chart, height: height)
    if grouped { out += legend(series) }
    for (i, label) in chart.labels.enumerated() {
      let y = top + groupHeight * Double(i)
      let mark = chart.marked.contains(i) ? "▼ " : ""
      out +=
        "<text class=\"label\" x=\"\(f(labelWidth - 6))\" y=\"\(f(y + groupHeight / 2))\""
        + " text-anchor=\"end\" dominant-baseline=\"middle\">\(escapeHTML(mark + label))</text>\n"
      for (k, s) in series.enumerated() {
        let v = value(s, i)
        let x = v < 0 ? zero + v * scale : zero
        let by = y + 4 + barHeight * Double(k)
        let below = chart.marked.contains(i) && !grouped ? " below" : ""
        out +=
          "<rect class=\"bar\(below)\" data-label=\"\(escapeHTML(label))\""
          + " data-series=\"\(escapeHTML(s.name))\" data-value=\"\(number(v))\""
          + " x=\"\(f(x))\" y=\"\(f(by))\" width=\"\(f(max(abs(v) * scale, 0.5)))\""
          + " height=\"\(f(barHeight - 2))\" fill=\"\(colours[k % colours.count])\">"
          + "<title>\(escapeHTML("\(label) · \(s.name): \(shown(v, chart))"))</title></rect>\n"
        let vx = v < 0 ? x - 4 : zero + abs(v) * scale + 4
        out +=
          "<text class=\"value\" x=\"\(f(vx))\" y=\"\(f(by + barHeight / 2 - 1))\""
          + " text-anchor=\"\(v < 0 ? "end" : "start")\" dominant-baseline=\"middle\">"
          + "\(escapeHTML(shown(v, chart)))</text>\n"
      }
    }
    let axisBottom = top + groupHeight * Double(chart.labels.count)
    out +=
      "<line class=\"axis\" x1=\"\(f(zero))\" y1=\"\(f(top))\" x2=\"\(f(zero))\""
      + " y2=\"\(f(axisBottom))\"/>\n"
    return out + "</svg>\n"
  }

  /// Lines over evenly spaced labels, with gridlines, a point per value and at most about
  /// twelve x labels.
  static func lineSVG(_ chart: ReportChart) -> String {
    let height = 280.0
    let (left, right, top, bottom) = (60.0, width - 40, 30.0, height - 50)
    let all = chart.series.flatMap { s in chart.labels.indices.map { value(s, $0) } }
    let low = min(0, all.min() ?? 0)
    var high = max(0, all.max() ?? 0)
    if high <= low { high = low + 1 }
    let n = chart.labels.count
    func x(_ i: Int) -> Double {
      n <= 1 ? (left + right) / 2 : left + (right - left) * Double(i) / Double(n - 1)
    }
    func y(_ v: Double) -> Double { bottom - (bottom - top) * (v - low) / (high - low) }
    var out = svgOpen(chart, height: height) + legend(chart.series)
    for step in 0...4 {
      let v = low + (high - low) * Double(step) / 4
      out +=
        "<line class=\"grid\" x1=\"\(f(left))\" y1=\"\(f(y(v)))\" x2=\"\(f(right))\""
        + " y2=\"\(f(y(v)))\"/><text x=\"\(f(left - 4))\" y=\"\(f(y(v)))\" text-anchor=\"end\""
        + " dominant-baseline=\"middle\">\(escapeHTML(shown(v, chart)))</text>\n"
    }
    let every = max(1, Int((Double(n) / 12).rounded(.up)))
    for (i, label) in chart.labels.enumerated() where i % every == 0 || i == n - 1 {
      out +=
        "<text class=\"label\" x=\"\(f(x(i)))\" y=\"\(f(bottom + 16))\""
        + " text-anchor=\"middle\">\(escapeHTML(label))</text>\n"
    }
    for (k, s) in chart.series.enumerated() {
      let colour = colours[k % colours.count]
      let points = chart.labels.indices.map { "\(f(x($0))),\(f(y(value(s, $0))))" }
      out +=
        "<polyline class=\"series\" data-series=\"\(escapeHTML(s.name))\" fill=\"none\""
        + " stroke=\"\(colour)\" stroke-width=\"2\" points=\"\(points.joined(separator: " "))\"/>\n"
      for (i, label) in chart.labels.enumerated() {
        let v = value(s, i)
        out +=
          "<circle class=\"point\" data-label=\"\(escapeHTML(label))\""
          + " data-value=\"\(number(v))\" cx=\"\(f(x(i)))\" cy=\"\(f(y(v)))\" r=\"3\""
          + " fill=\"\(colour)\"><title>\(escapeHTML("\(label) · \(s.name): \(shown(v, chart))"))"
          + "</title></circle>\n"
      }
    }
    out +=
      "<line class=\"axis\" x1=\"\(f(left))\" y1=\"\(f(bottom))\" x2=\"\(f(right))\""
      + " y2=\"\(f(bottom))\"/>\n"
    return out + "</svg>\n"
  }

  static func svgOpen(_ chart: ReportChart, height: Double) -> String {
    "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\""
      + " aria-label=\"\(escapeHTML(chart.title))\" width=\"\(f(width))\""
      + " height=\"\(f(height))\" viewBox=\"0 0 \(f(width)) \(f(height))\">\n"
  }

  static func legend(_ series: [ReportChart.Series]) -> String {
    var out = "<g class=\"legend\">"
    for (k, s) in series.enumerated() {
      let x = 10.0 + 170 * Double(k)
      out +=
        "<rect x=\"\(f(x))\" y=\"6\" width=\"10\" height=\"10\""
        + " fill=\"\(colours[k % colours.count])\"/><text x=\"\(f(x + 14))\" y=\"15\">"
        + "\(escapeHTML(s.name))</text>"
    }
    return out + "</g>\n"
  }

  /// A coordinate with at most one decimal.
  static func f(_ v: Double) -> String {
    let r = (v * 10).rounded() / 10
    return r == r.rounded() ? String(Int(r)) : String(format: "%.1f", r)
  }
}
