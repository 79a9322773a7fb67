// Item analysis: difficulty, discrimination with 27% groups, corrected point-biserial,
// Cronbach's α and SEM. Pure; undefined figures are nil, never NaN.

/// One student's item scores, in item order.
public struct StudentItemScores: Sendable {
  public var externalID: String
  public var scores: [Double]

  public init(externalID: String, scores: [Double]) {
    self.externalID = externalID
    self.scores = scores
  }

  public var total: Double { scores.reduce(0, +) }
}

/// Figures for one item.
public struct ItemFigures: Equatable, Sendable {
  public var mean: Double
  public var difficulty: Double
  public var discrimination: Double
  public var pointBiserial: Double?

  public var lowDiscrimination: Bool { discrimination < 0.20 }
  public var tooHard: Bool { difficulty < 0.2 }
  public var tooEasy: Bool { difficulty > 0.9 }
}

/// Whole-test item analysis.
public struct ItemAnalysis: Equatable, Sendable {
  public var items: [ItemFigures]
  public var alpha: Double?
  public var sem: Double?

  /// Size of each extreme group: max(1, round(0.27·N)).
  public static func groupSize(_ count: Int) -> Int {
    max(1, Int((0.27 * Double(count)).rounded()))
  }

  /// The upper and lower 27% groups of the students with these totals and ids (indices): the
  /// students ordered by total, highest first, ties by id ascending; each group the first or
  /// last ``groupSize(_:)``. No student: two empty groups.
  public static func groups(totals: [Double], ids: [String]) -> (upper: [Int], lower: [Int]) {
    let n = totals.count
    guard n > 0 else { return ([], []) }
    let order = totals.indices.sorted { a, b in
      totals[a] != totals[b] ? totals[a] > totals[b] : ids[a] < ids[b]
    }
    let g = min(groupSize(n), n)
    return (Array(order.prefix(g)), Array(order.suffix(g)))
  }

  /// Analyses `students` on items with the given max scores.
  public static func compute(_ students: [StudentItemScores], maxScores: [Double]) -> ItemAnalysis {
    let k = maxScores.count
    let n = students.count
    guard n > 0 else {
      return ItemAnalysis(
        items: maxScores.map { _ in
          ItemFigures(mean: 0, difficulty: 0, discrimination: 0, pointBiserial: nil)
        }, alpha: nil, sem: nil)
    }
    let totals = students.map(\.total)
    let (upper, lower) = groups(totals: totals, ids: students.map(\.externalID))
    let g = upper.count
    let totalSD = populationSD(totals)
    var items: [ItemFigures] = []
    var varianceSum = 0.0
    for item in 0..<k {
      let column = students.map { $0.scores[item] }
      let maxScore = maxScores[item]
      let mean = column.reduce(0, +) / Double(n)
      let sd = populationSD(column, mean: mean)
      varianceSum += sd * sd
      let pUpper = upper.reduce(0) { $0 + column[$1] } / Double(g) / maxScore
      let pLower = lower.reduce(0) { $0 + column[$1] } / Double(g) / maxScore
      let rest = zip(totals, column).map { $0 - $1 }
      items.append(
        ItemFigures(
          mean: mean, difficulty: mean / maxScore, discrimination: pUpper - pLower,
          pointBiserial: pearson(column, rest)))
    }
    return ItemAnalysis(items: items, varianceSum: varianceSum, totalSD: totalSD)
  }
}

extension ItemAnalysis {
  /// The analysis of `items` with Cronbach's α and the SEM from the items' summed variances
  /// and the total's σ (both nil for fewer than two items or σ = 0).
  init(items: [ItemFigures], varianceSum: Double, totalSD: Double) {
    let k = items.count
    var alpha: Double?
    var sem: Double?
    if k >= 2, totalSD > 0 {
      let a = Double(k) / Double(k - 1) * (1 - varianceSum / (totalSD * totalSD))
      alpha = a
      sem = totalSD * max(0, 1 - a).squareRoot()
    }
    self.init(items: items, alpha: alpha, sem: sem)
  }
}

/// Pearson correlation, or nil when either side has σ = 0.
public func pearson(_ x: [Double], _ y: [Double]) -> Double? {
  let n = Double(x.count)
  guard x.count == y.count, x.count > 0 else { return nil }
  let mx = x.reduce(0, +) / n
  let my = y.reduce(0, +) / n
  var sxy = 0.0, sxx = 0.0, syy = 0.0
  for (a, b) in zip(x, y) {
    sxy += (a - mx) * (b - my)
    sxx += (a - mx) * (a - mx)
    syy += (b - my) * (b - my)
  }
  guard sxx > 1e-12, syy > 1e-12 else { return nil }
  return sxy / (sxx * syy).squareRoot()
}
