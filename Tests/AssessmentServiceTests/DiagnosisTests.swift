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
}
