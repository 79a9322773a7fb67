import AssessmentService
import Testing

private func close(_ a: Double?, _ b: Double, _ eps: Double = 1e-6) -> Bool {
  guard let a else { return false }
  return abs(a - b) < eps
}

@Suite struct SummaryFiguresTests {
  @Test func handComputedFourScores() {
    let f = SummaryFigures.compute([40, 60, 80, 100], thresholds: Thresholds(fullMarks: 100))
    #expect(f.count == 4)
    #expect(close(f.mean, 70))
    #expect(close(f.standardDeviation, 500.0.squareRoot()))
    #expect(f.min == 40 && f.max == 100 && f.median == 70)
    #expect(f.passRate == 75 && f.excellentRate == 25)
    #expect(f.lowRate == 0)  // 40 is at the low line: strictly below only
    #expect(f.bins.map(\.count) == [0, 0, 0, 0, 1, 0, 1, 0, 1, 1])
    #expect(f.bins[9].percent == 25 && f.bins[0].percent == 0)
  }

  @Test func ratesHaveTwoDecimals() {
    let f = SummaryFigures.compute([10, 70, 90], thresholds: Thresholds(fullMarks: 100))
    #expect(f.passRate == 66.67 && f.excellentRate == 33.33 && f.lowRate == 33.33)
    #expect(f.median == 70)
  }

  @Test func emptyGivesCountZero() {
    let f = SummaryFigures.compute([], thresholds: Thresholds(fullMarks: 100), binCount: 5)
    #expect(f.count == 0 && f.mean == 0 && f.standardDeviation == 0 && f.passRate == 0)
    #expect(f.bins.count == 5 && f.bins.allSatisfy { $0.count == 0 })
  }

  @Test func singleAndAllEqual() {
    let one = SummaryFigures.compute([55], thresholds: Thresholds(fullMarks: 100))
    #expect(one.standardDeviation == 0 && one.median == 55 && one.lowRate == 0)
    let same = SummaryFigures.compute([30, 30, 30], thresholds: Thresholds(fullMarks: 100))
    #expect(same.standardDeviation == 0 && same.lowRate == 100 && same.passRate == 0)
  }

  @Test func percentileZAndRanks() {
    #expect(percentileRank(of: 2, in: [1, 2, 2, 3]) == 50)
    #expect(percentileRank(of: 3, in: [1, 2, 2, 3]) == 87.5)
    #expect(competitionRank(of: 2, in: [1, 2, 2, 3]) == 2)
    #expect(competitionRank(of: 1, in: [1, 2, 2, 3]) == 4)
    #expect(zScore(of: 5, mean: 5, sd: 0) == nil)
    #expect(close(zScore(of: 80, mean: 70, sd: 5), 2))
    #expect(tScore(z: 2) == 70)
    #expect(ranksByMean([60, 80, 60]) == [2, 1, 2])
  }
}

@Suite struct ItemAnalysisTests {
  @Test func groupSizes() {
    #expect(ItemAnalysis.groupSize(1) == 1)
    #expect(ItemAnalysis.groupSize(4) == 1)
    #expect(ItemAnalysis.groupSize(10) == 3)
    #expect(ItemAnalysis.groupSize(100) == 27)
  }

  @Test func guttmanPattern() {
    let s = [
      StudentItemScores(externalID: "s1", scores: [1, 1, 1]),
      StudentItemScores(externalID: "s2", scores: [1, 1, 0]),
      StudentItemScores(externalID: "s3", scores: [1, 0, 0]),
      StudentItemScores(externalID: "s4", scores: [0, 0, 0]),
    ]
    let a = ItemAnalysis.compute(s, maxScores: [1, 1, 1])
    #expect(a.items.map(\.difficulty) == [0.75, 0.5, 0.25])
    #expect(a.items.map(\.discrimination) == [1, 1, 1])
    #expect(close(a.alpha, 0.75))
    #expect(close(a.sem, 1.25.squareRoot() * 0.5))
    // item 1 [1,1,1,0] vs rest [2,1,0,0]: Sxy 0.75, Sxx 0.75, Syy 2.75
    #expect(close(a.items[0].pointBiserial, 0.75 / (0.75 * 2.75).squareRoot()))
  }

  @Test func tiesAtTheBoundaryBrokenByExternalID() {
    let s = [
      StudentItemScores(externalID: "b", scores: [0, 1]),
      StudentItemScores(externalID: "a", scores: [1, 0]),
      StudentItemScores(externalID: "d", scores: [0, 0]),
      StudentItemScores(externalID: "c", scores: [0, 0]),
    ]
    let a = ItemAnalysis.compute(s, maxScores: [1, 1])
    // upper = "a" (tie with "b" on 1), lower = "d" (tie with "c" on 0)
    #expect(a.items[0].discrimination == 1)
    #expect(a.items[1].discrimination == 0)
    #expect(a.items[1].lowDiscrimination && !a.items[0].lowDiscrimination)
  }

  @Test func perfectlyConsistentTest() {
    let s = [
      StudentItemScores(externalID: "x", scores: [2, 2]),
      StudentItemScores(externalID: "y", scores: [1, 1]),
      StudentItemScores(externalID: "z", scores: [0, 0]),
    ]
    let a = ItemAnalysis.compute(s, maxScores: [2, 2])
    #expect(close(a.alpha, 1) && close(a.sem, 0))
    #expect(close(a.items[0].pointBiserial, 1))
  }

  @Test func allEqualScoresAreAbsentNotNaN() {
    let s = (0..<3).map { StudentItemScores(externalID: "s\($0)", scores: [1, 1]) }
    let a = ItemAnalysis.compute(s, maxScores: [1, 1])
    #expect(a.alpha == nil && a.sem == nil)
    #expect(a.items.allSatisfy { $0.pointBiserial == nil && $0.discrimination == 0 })
    #expect(a.items.allSatisfy { $0.tooEasy && !$0.tooHard })
  }

  @Test func singleStudent() {
    let a = ItemAnalysis.compute(
      [StudentItemScores(externalID: "only", scores: [1, 0])], maxScores: [1, 2])
    #expect(a.items.map(\.difficulty) == [1, 0])
    #expect(a.items.map(\.discrimination) == [0, 0])
    #expect(a.alpha == nil && a.items.allSatisfy { $0.pointBiserial == nil })
    #expect(a.items[1].tooHard)
  }

  @Test func emptyExam() {
    let a = ItemAnalysis.compute([], maxScores: [1, 1])
    #expect(a.items.count == 2 && a.alpha == nil)
  }
}
