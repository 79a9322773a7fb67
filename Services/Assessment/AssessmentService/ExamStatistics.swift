// Pure statistics of exam totals: summary figures, rates, bins, percentile rank, z/T scores.
// No I/O; every function is total (empty input gives count 0, never NaN).

/// Rounds to two decimals (rates and percentages on the wire).
public func roundTo2(_ value: Double) -> Double {
  (value * 100).rounded() / 100
}

/// One bin of a score distribution: [lower, upper), the last bin closed at full marks.
public struct ScoreBinFigure: Equatable, Sendable {
  public var lower: Double
  public var upper: Double
  public var count: Int
  public var percent: Double
}

/// Thresholds of an exam as fractions of full marks.
public struct Thresholds: Equatable, Sendable {
  public var fullMarks: Double
  public var pass: Double
  public var excellent: Double
  public var low: Double
  /// The 良好 line, between pass and excellent.
  public var good: Double

  public init(
    fullMarks: Double, pass: Double = 0.60, excellent: Double = 0.85, low: Double = 0.40,
    good: Double = 0.70
  ) {
    self.fullMarks = fullMarks
    self.pass = pass
    self.excellent = excellent
    self.low = low
    self.good = good
  }
}

/// Summary statistics of a set of totals.
public struct SummaryFigures: Equatable, Sendable {
  public var count: Int
  public var mean: Double
  public var standardDeviation: Double
  public var min: Double
  public var max: Double
  public var median: Double
  public var passRate: Double
  public var excellentRate: Double
  public var lowRate: Double
  public var bins: [ScoreBinFigure]
  /// 良好率: at or above the good line.
  public var goodRate: Double = 0

  /// Computes the figures with the thresholds' fractions of full marks as the lines.
  public static func compute(
    _ scores: [Double], thresholds: Thresholds, binCount: Int = 10
  ) -> SummaryFigures {
    compute(
      scores, lines: ScoreLineFigures(thresholds), fullMarks: thresholds.fullMarks,
      binCount: binCount)
  }

  /// Computes the figures with the rates' `lines`; `binCount` equal-width bins over
  /// [0, full marks].
  public static func compute(
    _ scores: [Double], lines: ScoreLineFigures, fullMarks: Double, binCount: Int = 10
  ) -> SummaryFigures {
    let bins = Swift.max(1, binCount)
    let width = fullMarks / Double(bins)
    var figures: [ScoreBinFigure] = []
    for index in 0..<bins {
      let lower = Double(index) * width
      let upper = index == bins - 1 ? fullMarks : Double(index + 1) * width
      figures.append(ScoreBinFigure(lower: lower, upper: upper, count: 0, percent: 0))
    }
    guard !scores.isEmpty else {
      return SummaryFigures(
        count: 0, mean: 0, standardDeviation: 0, min: 0, max: 0, median: 0,
        passRate: 0, excellentRate: 0, lowRate: 0, bins: figures)
    }
    let count = Double(scores.count)
    let mean = scores.reduce(0, +) / count
    let sd = populationSD(scores, mean: mean)
    let sorted = scores.sorted()
    let middle = sorted.count / 2
    let median = sorted.count % 2 == 1
      ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    let passLine = lines.pass
    let excellentLine = lines.excellent
    let lowLine = lines.low
    let goodLine = lines.good
    var pass = 0, excellent = 0, low = 0, good = 0
    for score in scores {
      if score >= passLine { pass += 1 }
      if score >= goodLine { good += 1 }
      if score >= excellentLine { excellent += 1 }
      if score < lowLine { low += 1 }
      var index = width > 0 ? Int((score / width).rounded(.down)) : 0
      index = Swift.min(Swift.max(index, 0), bins - 1)
      figures[index].count += 1
    }
    for index in figures.indices {
      figures[index].percent = roundTo2(Double(figures[index].count) / count * 100)
    }
    return SummaryFigures(
      count: scores.count, mean: mean, standardDeviation: sd,
      min: sorted[0], max: sorted[sorted.count - 1], median: median,
      passRate: roundTo2(Double(pass) / count * 100),
      excellentRate: roundTo2(Double(excellent) / count * 100),
      lowRate: roundTo2(Double(low) / count * 100), bins: figures,
      goodRate: roundTo2(Double(good) / count * 100))
  }
}

/// Population standard deviation (divides by N); 0 for fewer than one value.
public func populationSD(_ values: [Double], mean: Double? = nil) -> Double {
  guard !values.isEmpty else { return 0 }
  let m = mean ?? values.reduce(0, +) / Double(values.count)
  let variance = values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(values.count)
  return variance > 0 ? variance.squareRoot() : 0
}

/// Percentile rank PR = (CF − 0.5·F)/N·100, CF counting scores ≤ x and F those equal to x.
public func percentileRank(of score: Double, in scores: [Double]) -> Double {
  guard !scores.isEmpty else { return 0 }
  var cf = 0, f = 0
  for value in scores {
    if value <= score { cf += 1 }
    if value == score { f += 1 }
  }
  return (Double(cf) - 0.5 * Double(f)) / Double(scores.count) * 100
}

/// Competition rank (1 = best): one plus the number of strictly higher scores.
public func competitionRank(of score: Double, in scores: [Double]) -> Int {
  1 + scores.reduce(0) { $0 + ($1 > score ? 1 : 0) }
}

/// z score, or nil when σ = 0 (undefined).
public func zScore(of score: Double, mean: Double, sd: Double) -> Double? {
  sd > 0 ? (score - mean) / sd : nil
}

/// T score = 50 + 10·z.
public func tScore(z: Double) -> Double { 50 + 10 * z }

/// Ranks sibling groups by mean, best first, with competition ranking on equal means.
public func ranksByMean(_ means: [Double]) -> [Int] {
  means.map { mean in 1 + means.reduce(0) { $0 + ($1 > mean ? 1 : 0) } }
}

/// Competition ranks of `values` (1 = best: the highest, or the lowest when `lowerIsBetter`),
/// in the order given; O(n log n).
public func competitionRanks(_ values: [Double], lowerIsBetter: Bool = false) -> [Int] {
  let order = values.indices.sorted {
    lowerIsBetter ? values[$0] < values[$1] : values[$0] > values[$1]
  }
  var ranks = Array(repeating: 0, count: values.count)
  for (position, i) in order.enumerated() {
    let previous = position > 0 ? order[position - 1] : nil
    ranks[i] = previous.map { values[$0] == values[i] } == true ? ranks[previous!] : position + 1
  }
  return ranks
}

/// Percentile ranks of `values` within themselves, as ``percentileRank(of:in:)`` gives each;
/// O(n log n).
public func percentileRanks(_ values: [Double]) -> [Double] {
  let sorted = values.sorted()
  func bound(_ x: Double, strict: Bool) -> Int {
    var lo = 0, hi = sorted.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if strict ? sorted[mid] < x : sorted[mid] <= x { lo = mid + 1 } else { hi = mid }
    }
    return lo
  }
  return values.map { x in
    let cf = bound(x, strict: false)
    let f = cf - bound(x, strict: true)
    return (Double(cf) - 0.5 * Double(f)) / Double(sorted.count) * 100
  }
}
