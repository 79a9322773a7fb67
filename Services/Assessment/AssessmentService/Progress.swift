// Progress between two exams (进退步, 增值评价): standardised scores and the least-squares line
// of later on earlier standardised scores. Pure.

/// The standardised scores of `totals`: (x − mean)/σ, population σ; all 0 when σ = 0.
public func zScores(_ totals: [Double]) -> [Double] {
  guard !totals.isEmpty else { return [] }
  let mean = totals.reduce(0, +) / Double(totals.count)
  let sd = populationSD(totals, mean: mean)
  return totals.map { sd > 0 ? ($0 - mean) / sd : 0 }
}

/// The least-squares line y ≈ intercept + slope·x; slope 0 and intercept the mean y when
/// every x is equal (or there is none: both 0).
public func leastSquares(x: [Double], y: [Double]) -> (slope: Double, intercept: Double) {
  guard !x.isEmpty, x.count == y.count else { return (0, 0) }
  let n = Double(x.count)
  let mx = x.reduce(0, +) / n
  let my = y.reduce(0, +) / n
  var sxy = 0.0
  var sxx = 0.0
  for (a, b) in zip(x, y) {
    sxy += (a - mx) * (b - my)
    sxx += (a - mx) * (a - mx)
  }
  guard sxx > 1e-12 else { return (0, my) }
  let slope = sxy / sxx
  return (slope, my - slope * mx)
}
