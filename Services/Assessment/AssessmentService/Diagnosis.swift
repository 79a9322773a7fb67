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

/// A group's figures on one knowledge point (知识点得分率).
public struct PointRate: Equatable, Sendable {
  public var code: String
  /// Summed over the group's students.
  public var earned: Double
  public var possible: Double
  /// Percent of the students whose own mastery is below the pass fraction, two decimals.
  public var shareBelowPass: Double

  /// Earned / possible, 0–1 (0 when nothing was possible).
  public var rate: Double { possible > 0 ? earned / possible : 0 }
}

/// Per knowledge point, a group's earned and possible marks and the share of its students
/// below pass, by code. `students[s][i]` is student s's score on item i. No student: [].
public func pointRates(
  students: [[Double]], maxScores: [Double], itemPoints: [[String]], passFraction: Double
) -> [PointRate] {
  guard !students.isEmpty else { return [] }
  var table: [String: PointRate] = [:]
  for scores in students {
    for figure in knowledgePointMastery(
      scores: scores, maxScores: maxScores, itemPoints: itemPoints)
    {
      var rate =
        table[figure.code]
        ?? PointRate(code: figure.code, earned: 0, possible: 0, shareBelowPass: 0)
      rate.earned += figure.earned
      rate.possible += figure.possible
      // Counted here, made a share below.
      if figure.mastery < passFraction { rate.shareBelowPass += 1 }
      table[figure.code] = rate
    }
  }
  return table.values.map { r in
    var r = r
    r.shareBelowPass = roundTo2(r.shareBelowPass / Double(students.count) * 100)
    return r
  }.sorted { $0.code < $1.code }
}

/// Per knowledge point, the class's mastery and the share of students below pass, weakest
/// first (then by code). `students[s][i]` is student s's score on item i. Empty class: [].
public func classKnowledgePoints(
  students: [[Double]], maxScores: [Double], itemPoints: [[String]], passFraction: Double
) -> [ClassPointFigure] {
  pointRates(
    students: students, maxScores: maxScores, itemPoints: itemPoints, passFraction: passFraction
  ).map { ClassPointFigure(code: $0.code, mastery: $0.rate, shareBelowPass: $0.shareBelowPass) }
    .sorted { $0.mastery != $1.mastery ? $0.mastery < $1.mastery : $0.code < $1.code }
}

/// Rounds to four decimals (mastery on the wire).
public func roundTo4(_ value: Double) -> Double {
  (value * 10_000).rounded() / 10_000
}
