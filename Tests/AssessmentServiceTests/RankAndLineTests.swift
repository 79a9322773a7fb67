import AssessmentService
import Testing

/// The pure pieces behind rank lists, cut lines and progress, on hand-worked cases.
@Suite struct RankAndLineTests {
  @Test func competitionAndPercentileRanks() {
    #expect(competitionRanks([70, 90, 70, 50]) == [2, 1, 2, 4])
    #expect(competitionRanks([3, 1, 1], lowerIsBetter: true) == [3, 1, 1])
    #expect(competitionRanks([]) == [])
    // (CF − 0.5·F)/N·100: 70 → (3 − 1)/4 = 50; 90 → (4 − 0.5)/4 = 87.5; 50 → 12.5.
    #expect(percentileRanks([70, 90, 70, 50]) == [50, 87.5, 50, 12.5])
  }

  @Test func topShareLineCountsWholeStudents() {
    let totals = (1...10).map(Double.init)
    #expect(topShareLine(0.2, totals) == 9)  // the 2nd best
    // 0.07 × 100 is 7.000000000000001 in floating point: still 7 students of 100, the line
    // the 7th best (94), not the 8th.
    #expect(0.07 * 100.0 > 7)
    #expect(topShareLine(0.07, (1...100).map(Double.init)) == 94)
    #expect(topShareLine(0.25, totals) == 8)  // ⌈2.5⌉ = 3rd best
    #expect(topShareLine(0.01, totals) == 10)  // at least the best
    #expect(topShareLine(0.5, []) == nil)
    let rules = LineRules(
      pass: .fraction(0.6), good: .score(7.5), excellent: .topShare(0.2), low: .fraction(0.4))
    #expect(
      rules.lines(fullMarks: 10, totals: totals)
        == ScoreLineFigures(pass: 6, good: 7.5, excellent: 9, low: 4))
    // Nobody sat: a top-share line nobody reaches.
    #expect(rules.lines(fullMarks: 10, totals: []).excellent > 10)
  }

  @Test func standardisedScoresAndLeastSquares() {
    #expect(zScores([2, 4, 4, 4, 5, 5, 7, 9]) == [-1.5, -0.5, -0.5, -0.5, 0, 0, 1, 2])
    #expect(zScores([3, 3]) == [0, 0])
    let line = leastSquares(x: [0, 1, 2], y: [1, 3, 5])
    #expect(line.slope == 2 && line.intercept == 1)
    let flat = leastSquares(x: [1, 1], y: [2, 4])
    #expect(flat.slope == 0 && flat.intercept == 3)
  }
}
