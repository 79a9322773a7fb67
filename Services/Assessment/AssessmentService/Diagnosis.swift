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

/// A class's figures on one knowledge point.
public struct ClassPointFigure: Equatable, Sendable {
  public var code: String
  /// Class earned / class possible, 0–1.
  public var mastery: Double
  /// Percent of students whose own mastery is below the pass fraction, two decimals.
  public var shareBelowPass: Double
}

/// Per knowledge point, the class's mastery and the share of students below pass, weakest
/// first (then by code). `students[s][i]` is student s's score on item i. Empty class: [].
public func classKnowledgePoints(
  students: [[Double]], maxScores: [Double], itemPoints: [[String]], passFraction: Double
) -> [ClassPointFigure] {
  guard !students.isEmpty else { return [] }
  var earned: [String: Double] = [:]
  var possible: [String: Double] = [:]
  var below: [String: Int] = [:]
  for scores in students {
    for figure in knowledgePointMastery(
      scores: scores, maxScores: maxScores, itemPoints: itemPoints)
    {
      earned[figure.code, default: 0] += figure.earned
      possible[figure.code, default: 0] += figure.possible
      if figure.mastery < passFraction { below[figure.code, default: 0] += 1 }
    }
  }
  return possible.keys.map { code in
    let p = possible[code] ?? 0
    return ClassPointFigure(
      code: code, mastery: p > 0 ? (earned[code] ?? 0) / p : 0,
      shareBelowPass: roundTo2(Double(below[code] ?? 0) / Double(students.count) * 100))
  }.sorted { $0.mastery != $1.mastery ? $0.mastery < $1.mastery : $0.code < $1.code }
}

/// Rounds to four decimals (mastery on the wire).
public func roundTo4(_ value: Double) -> Double {
  (value * 10_000).rounded() / 10_000
}
