import Foundation
import SmartSchoolModel
import Testing

/// The model's trimming gives Foundation's results, scalar for scalar, on strings built from
/// every white-space and line-break scalar, their near neighbours, combining marks and Chinese
/// text.
@Suite("Trimming")
struct TrimmingTests {
  static let pieces: [String] = [
    " ", "\t", "\n", "\r", "\u{0B}", "\u{0C}", "\u{85}", "\u{A0}", "\u{1680}", "\u{2000}",
    "\u{2005}", "\u{200A}", "\u{200B}", "\u{2028}", "\u{2029}", "\u{202F}", "\u{205F}",
    "\u{3000}", "\u{FEFF}", "\u{301}", "\u{1F}", "数学", "a", "é", "e\u{301}", "🙂", "\r\n",
  ]

  @Test func trimmingMatchesFoundation() {
    var rng = SeededGenerator(seed: 7)
    var cases = Self.pieces + ["", "  ", "光合作用", "  光合作用 ", "\u{3000}教案\u{3000}"]
    for _ in 0..<20_000 {
      let n = Int.random(in: 1...6, using: &rng)
      cases.append((0..<n).map { _ in Self.pieces.randomElement(using: &rng)! }.joined())
    }
    for text in cases {
      let spaces = text.trimmingCharacters(in: .whitespaces)
      let all = text.trimmingCharacters(in: .whitespacesAndNewlines)
      #expect(
        Array(text.trimmingSpaces().unicodeScalars) == Array(spaces.unicodeScalars),
        "spaces of \(Array(text.unicodeScalars))")
      #expect(
        Array(text.trimmingWhitespace().unicodeScalars) == Array(all.unicodeScalars),
        "whitespace of \(Array(text.unicodeScalars))")
    }
  }

  /// Every scalar of the Basic Multilingual Plane alone: trimmed away by both or by neither.
  @Test func everyScalarIsClassifiedAsFoundationDoes() {
    var differ: [UInt32] = []
    for v in UInt32(0)..<0x10000 {
      guard let scalar = Unicode.Scalar(v) else { continue }
      let text = String(Character(scalar))
      let spaces = text.trimmingCharacters(in: .whitespaces).isEmpty
      let all = text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
      if spaces != text.trimmingSpaces().isEmpty || all != text.trimmingWhitespace().isEmpty {
        differ.append(v)
      }
    }
    #expect(differ.isEmpty, "\(differ.map { String($0, radix: 16) })")
  }
}
