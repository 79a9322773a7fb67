import Foundation
import SmartSchoolModel

/// A titled table whose columns carry a Chinese label with the English one beside it.
public struct ReportTable: Sendable {
  /// The title, e.g. "常态化应用 Compliance".
  public var title: String
  /// Column labels: (Chinese, English).
  public var columns: [(zh: String, en: String)]
  /// Rows of cells, already formatted.
  public var rows: [[String]]

  /// A table.
  public init(title: String, columns: [(zh: String, en: String)], rows: [[String]] = []) {
    self.title = title
    self.columns = columns
    self.rows = rows
  }

  /// Aligned text: header "中文 English", columns padded by display width (CJK counts 2).
  public func text() -> String {
    let headers = columns.map { "\($0.zh) \($0.en)" }
    var widths = headers.map(displayWidth)
    for row in rows {
      for (i, cell) in row.enumerated() where i < widths.count {
        widths[i] = max(widths[i], displayWidth(cell))
      }
    }
    func line(_ cells: [String]) -> String {
      cells.enumerated().map { i, cell in
        cell + String(repeating: " ", count: max(0, widths[i] - displayWidth(cell)))
      }.joined(separator: "  ").trimmingSpaces() + "\n"
    }
    var out = "== \(title) ==\n" + line(headers)
    out += line(widths.map { String(repeating: "-", count: $0) })
    for row in rows { out += line(row) }
    return out
  }

  /// A file name from the title's English words before any " — ", ":" or " (", lower case and
  /// hyphenated, e.g. "by-child-org" for "下级单位 By child org"; "table" when there are none.
  public var slug: String {
    let head = title.components(separatedBy: " — ")[0].components(separatedBy: ":")[0]
      .components(separatedBy: " (")[0]
    let words = head.split { !($0.isASCII && ($0.isLetter || $0.isNumber)) }
    return words.isEmpty ? "table" : words.joined(separator: "-").lowercased()
  }

  /// CSV with the English labels as the header.
  public func csv() -> String {
    csvLine(columns.map(\.en)) + rows.map(csvLine).joined()
  }
}

/// Columns a string takes on a terminal: 2 for East Asian wide characters, else 1.
func displayWidth(_ text: String) -> Int {
  text.unicodeScalars.reduce(0) { total, scalar in
    let v = scalar.value
    let wide =
      (0x1100...0x115F).contains(v) || (0x2E80...0xA4CF).contains(v)
      || (0xAC00...0xD7A3).contains(v) || (0xF900...0xFAFF).contains(v)
      || (0xFE30...0xFE4F).contains(v) || (0xFF00...0xFF60).contains(v)
      || (0xFFE0...0xFFE6).contains(v)
    return total + (wide ? 2 : 1)
  }
}

/// A percentage with two decimals and a % sign, e.g. "66.67%".
public func percent(_ value: Double) -> String {
  String(format: "%.2f%%", value)
}

/// A number with two decimals.
public func decimal2(_ value: Double) -> String {
  String(format: "%.2f", value)
}
