import AssessmentService
import Testing

@Suite struct DiagnosisTests {
  @Test func masteryAndWeakPointsWeakestFirst() {
    let m = knowledgePointMastery(
      scores: [2, 0, 3], maxScores: [4, 2, 4], itemPoints: [["kA", "kB"], ["kB"], ["kC"]])
    #expect(m.map(\.code) == ["kA", "kB", "kC"])
    #expect(m.map(\.mastery) == [0.5, 2.0 / 6.0, 0.75])
    #expect(weakPoints(m, passFraction: 0.6).map(\.code) == ["kB", "kA"])
  }

  @Test func classPointsWeakestFirstWithShareBelowPass() {
    // Two students on items (kA: 10), (kA, kB: 10), (kB: 20).
    let points = classKnowledgePoints(
      students: [[10, 8, 15], [6, 4, 8]], maxScores: [10, 10, 20],
      itemPoints: [["kA"], ["kA", "kB"], ["kB"]], passFraction: 0.6)
    #expect(points.map(\.code) == ["kB", "kA"])
    #expect(abs(points[0].mastery - 35.0 / 60) < 1e-12 && points[1].mastery == 0.7)
    #expect(points.map(\.shareBelowPass) == [50, 50])
    #expect(
      classKnowledgePoints(students: [], maxScores: [1], itemPoints: [["k"]], passFraction: 0.6)
        .isEmpty)
  }

  @Test func overallGradeIsTheMostFrequentBetterOnTies() {
    #expect(overallGrade([]) == nil)
    #expect(overallGrade([2, 2, 1]) == 2)
    #expect(overallGrade([3, 2, 3, 2]) == 2)
    #expect(overallGrade([4]) == 4)
  }
}
