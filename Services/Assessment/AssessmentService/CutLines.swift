// Cut lines (分数线): each rate's line as a fraction of full marks, a fixed score, or the total
// that the best share of a scope reaches. Pure.

/// The score lines of the four rates: at or above pass, good and excellent; strictly below low.
public struct ScoreLineFigures: Equatable, Sendable {
  public var pass: Double
  public var good: Double
  public var excellent: Double
  public var low: Double

  public init(pass: Double, good: Double, excellent: Double, low: Double) {
    self.pass = pass
    self.good = good
    self.excellent = excellent
    self.low = low
  }

  /// The lines of the thresholds' fractions of full marks.
  public init(_ t: Thresholds) {
    self.init(
      pass: t.pass * t.fullMarks, good: t.good * t.fullMarks,
      excellent: t.excellent * t.fullMarks, low: t.low * t.fullMarks)
  }
}

/// How one rate's line is drawn.
public enum LineRule: Equatable, Sendable {
  /// A fraction of full marks.
  case fraction(Double)
  /// A fixed score.
  case score(Double)
  /// The total of the ⌈share·N⌉-th best of a scope's N totals (ties at the line all count).
  case topShare(Double)

  /// The line for a scope whose totals (of those who sat) are `totals`; a top share of no
  /// totals has no line (`nil`).
  public func line(fullMarks: Double, totals: [Double]) -> Double? {
    switch self {
    case .fraction(let f): return f * fullMarks
    case .score(let s): return s
    case .topShare(let share): return topShareLine(share, totals)
    }
  }
}

/// The total reached by the best `share` (0–1) of `totals`: the ⌈share·N⌉-th highest (at
/// least the first); nil without totals. A share·N a rounding error above a whole number counts
/// as that number (0.2 of 10 is 2 students, not 3).
public func topShareLine(_ share: Double, _ totals: [Double]) -> Double? {
  guard !totals.isEmpty else { return nil }
  let sorted = totals.sorted(by: >)
  let wanted = Int((share * Double(sorted.count) - 1e-9).rounded(.up))
  return sorted[Swift.min(Swift.max(wanted, 1), sorted.count) - 1]
}

/// The four rates' line rules of an exam.
public struct LineRules: Equatable, Sendable {
  public var pass: LineRule
  public var good: LineRule
  public var excellent: LineRule
  public var low: LineRule

  public init(pass: LineRule, good: LineRule, excellent: LineRule, low: LineRule) {
    self.pass = pass
    self.good = good
    self.excellent = excellent
    self.low = low
  }

  /// The lines for a scope whose totals are `totals`. A top-share line without totals is put
  /// above full marks (no one reaches it: every rate of an empty scope is 0 anyway).
  public func lines(fullMarks: Double, totals: [Double]) -> ScoreLineFigures {
    func line(_ rule: LineRule) -> Double {
      rule.line(fullMarks: fullMarks, totals: totals) ?? fullMarks + 1
    }
    return ScoreLineFigures(
      pass: line(pass), good: line(good), excellent: line(excellent), low: line(low))
  }
}
