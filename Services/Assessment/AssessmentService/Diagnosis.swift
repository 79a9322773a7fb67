// Knowledge-point mastery and weak points for a student, and class diagnosis. Pure.

/// Mastery of one knowledge point: earned / possible on the items that test it.
public struct MasteryFigure: Equatable, Sendable {
  public var code: String
  public var earned: Double
  public var possible: Double

  public var mastery: Double { possible > 0 ? earned / possible : 0 }
}

/// Mastery per knowledge point, ordered by code. `itemPoints[i]` lists item i's codes.
public func knowledgePointMastery(
  scores: [Double], maxScores: [Double], itemPoints: [[String]]
) -> [MasteryFigure] {
  var table: [String: MasteryFigure] = [:]
  for index in scores.indices {
    for code in Set(itemPoints[index]) {
      var figure = table[code] ?? MasteryFigure(code: code, earned: 0, possible: 0)
      figure.earned += scores[index]
      figure.possible += maxScores[index]
      table[code] = figure
    }
  }
  return table.values.sorted { $0.code < $1.code }
}

/// Weak points: mastery below the pass fraction, weakest first, then by code.
public func weakPoints(_ mastery: [MasteryFigure], passFraction: Double) -> [MasteryFigure] {
  mastery.filter { $0.mastery < passFraction }.sorted {
    $0.mastery != $1.mastery ? $0.mastery < $1.mastery : $0.code < $1.code
  }
}
