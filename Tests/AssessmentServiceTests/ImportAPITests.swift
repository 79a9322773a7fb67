import AssessmentService
import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

@Suite struct ImportAPITests {
  @Test func badRowsAreRejectedPerRowAndTheRestLands() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      let sent = [
        row("M-K1", "ext-stu1", "CL1a", "S1", 1, 10),  // 0 ok
        row("NOPE", "ext-stu1", "CL1a", "S1", 1, 5),  // 1 unknown exam
        row("M-K1", "ext-stu1", "CL1a", "S1", 7, 5),  // 2 unknown item
        row("M-K1", "ext-stu1", "CL1a", "S1", 2, 10.5),  // 3 above max
        row("M-K1", "ext-stu1", "CL1a", "S1", 3, -1),  // 4 negative
        row("M-K1", "ext-stu1", "CL1a", "S2", 3, 4),  // 5 class in the wrong school
        row("M-K1", "ext-x", "CL3", "S3", 1, 4),  // 6 class outside the exam's county
        row("M-K1", "ext-stu1", "NOPE", "S1", 4, 4),  // 7 unknown class
        row("M-K1", "", "CL1a", "S1", 4, 4),  // 8 empty student
        row("M-K1", "ext-stu1", "CL1a", "S1", 2, 10),  // 9 ok (max exactly)
      ]
      let summary = try await w.importScores(sent)
      #expect(summary.received == 10 && summary.accepted == 2 && summary.rejected == 8)
      #expect(summary.created == 2 && summary.updated == 0)
      // Index 9 is not a rejection: ext-stu1 sat without items 3 and 4 (its rows are kept).
      #expect(summary.errors.map(\.index) == [1, 2, 3, 4, 5, 6, 7, 8, 9])
      #expect(
        summary.errors.map(\.field) == [
          "exam_code", "item_number", "score", "score", "class_code", "class_code", "class_code",
          "student_external_id", "item_number",
        ])
      #expect(summary.errors[8].reason.contains("item(s) 3, 4"))
      #expect(summary.errors[4].reason.contains("not in school S2"))
      #expect(try await w.exported("M-K1") == ["ext-stu1/CL1a/1=10.0", "ext-stu1/CL1a/2=10.0"])
    }
  }

  @Test func rowsOutsideTheCallersScopeAreRejected() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      // The school admin of S1 may import S1's rows only; teachers may not import at all.
      let summary = try await w.importScores(rows(), as: "aS1")
      #expect(summary.accepted == 12 && summary.rejected == 8)
      #expect(summary.errors.allSatisfy { $0.reason.contains("outside the caller's scope") })
      #expect(Set(summary.errors.map { $0.key.split(separator: "/")[1] }) == ["ext-s4", "ext-s5"])
      await expectCode(.permissionDenied) { try await w.importScores(rows(), as: "tS1") }
      let exported = try await w.exported("M-K1")
      #expect(exported.count == 12 && exported.allSatisfy { !$0.contains("CL2") })
      // Export is for readers at the running org.
      await expectCode(.permissionDenied) { try await w.exported("M-K1", as: "tS1") }
      await expectCode(.notFound) { try await w.exported("NOPE") }
    }
  }

  @Test func resentRowsReplaceAndTotalsFollow() async throws {
    try await withWorld { w in
      try await w.scoredExam()
      var again = rows()
      again[0].score = 2  // ext-stu1 item 1: 10 → 2
      let summary = try await w.importScores(again)
      #expect(summary.accepted == 20 && summary.created == 0 && summary.updated == 20)
      let exam = try await w.assessment.getExam(.with { $0.code = "M-K1" }, metadata: w.auth("aK1"))
      #expect(exam.scoreCount == 20)
      let report = try await w.assessment.getStudentReport(
        .with {
          $0.examCode = "M-K1"
          $0.studentExternalID = "ext-stu1"
        }, metadata: w.auth("aK1"))
      #expect(report.total == 30)  // 38 − 8, derived from the item scores
    }
  }

  /// One commit's rows of a student out of item order, an item given twice, two students'
  /// rows interleaved and a class changed mid-batch: each score is its last value, the
  /// student keeps its last class, and export, report totals and statistics agree; then a
  /// batch mixing students that exist with a new one.
  @Test func rowsOfOneBatchInAnyOrderLandAsTheirLastValues() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      let first = try await w.importScores([
        row("M-K1", "ext-stu1", "CL1a", "S1", 3, 12),
        row("M-K1", "ext-stu2", "CL1a", "S1", 1, 4),
        row("M-K1", "ext-stu1", "CL1a", "S1", 1, 7),
        row("M-K1", "ext-stu1", "CL1a", "S1", 1, 9),
        row("M-K1", "ext-stu2", "CL1b", "S1", 2, 6),
        row("M-K1", "ext-stu1", "CL1a", "S1", 2, 3),
      ])
      #expect(first.accepted == 6 && first.created == 5 && first.updated == 1)
      #expect(
        try await w.exported("M-K1") == [
          "ext-stu1/CL1a/1=9.0", "ext-stu1/CL1a/2=3.0", "ext-stu1/CL1a/3=12.0",
          "ext-stu2/CL1b/1=4.0", "ext-stu2/CL1b/2=6.0",
        ])
      let second = try await w.importScores([
        row("M-K1", "ext-stu1", "CL1a", "S1", 4, 5),
        row("M-K1", "ext-s3", "CL1b", "S1", 2, 8),
        row("M-K1", "ext-stu1", "CL1a", "S1", 1, 2),
        row("M-K1", "ext-stu1", "CL1a", "S1", 4, 6),
        row("M-K1", "ext-s3", "CL1b", "S1", 1, 1),
      ])
      #expect(second.accepted == 5 && second.created == 3 && second.updated == 2)
      #expect(
        try await w.exported("M-K1") == [
          "ext-s3/CL1b/1=1.0", "ext-s3/CL1b/2=8.0", "ext-stu1/CL1a/1=2.0", "ext-stu1/CL1a/2=3.0",
          "ext-stu1/CL1a/3=12.0", "ext-stu1/CL1a/4=6.0", "ext-stu2/CL1b/1=4.0",
          "ext-stu2/CL1b/2=6.0",
        ])
      let exam = try await w.assessment.getExam(.with { $0.code = "M-K1" }, metadata: w.auth("aK1"))
      #expect(exam.scoreCount == 8)
      for (student, classCode, total) in [
        ("ext-stu1", "CL1a", 23.0), ("ext-stu2", "CL1b", 10.0), ("ext-s3", "CL1b", 9.0),
      ] {
        let report = try await w.assessment.getStudentReport(
          .with {
            $0.examCode = "M-K1"
            $0.studentExternalID = student
          }, metadata: w.auth("aK1"))
        #expect(report.total == total && report.classCode == classCode, "\(student)")
      }
      let statistics = try await w.assessment.getExamStatistics(
        .with {
          $0.examCode = "M-K1"
          $0.scopeOrgCode = "K1"
        }, metadata: w.auth("aK1"))
      #expect(statistics.scope.count == 3 && statistics.scope.mean == 14)
    }
  }

  /// A stream scoring the same students three times over, its batches straddling the rounds,
  /// so consecutive batches share most of their students while both are written at once: every
  /// score ends as the last round's, each row counts once as created or updated, and the
  /// exam's statistics (kept as tallies by each batch) equal those of the final scores.
  @Test func batchesWrittenTogetherEndAsTheStreamsLastRows() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      let batch = AssessmentAPI.importBatch
      let count = batch / 4
      func round(_ r: Int) -> [(String, String, String, [Double])] {
        (0..<count).map { i in
          let even = i % 2 == 0
          // Each round's scores differ from the round before on every item.
          let scores = (0..<4).map { k in Double((i + 3 * r + k) % 5) }
          return (
            String(format: "ext-r%05d", i), even ? "CL1a" : "CL2", even ? "S1" : "S2", scores
          )
        }
      }
      // A quarter batch of other students first: each batch then ends inside a round.
      let others = (0..<(batch / 16)).map { i in
        (String(format: "ext-o%05d", i), "CL2", "S2", [1.0, 2, 3, 4])
      }
      let all = rows(others) + rows(round(0)) + rows(round(1)) + rows(round(2))
      let summary = try await w.importScores(all)
      #expect(summary.accepted == Int64(all.count) && summary.rejected == 0)
      #expect(summary.created == Int64(batch / 4 + batch))
      #expect(summary.updated == Int64(2 * batch))
      var expected: [String] = []
      var totals: [Double] = []
      for (student, classCode, _, scores) in others + round(2) {
        for (k, v) in scores.enumerated() {
          expected.append("\(student)/\(classCode)/\(k + 1)=\(v)")
        }
        totals.append(scores.reduce(0, +))
      }
      #expect(try await w.exported("M-K1").sorted() == expected.sorted())
      let statistics = try await w.assessment.getExamStatistics(
        .with {
          $0.examCode = "M-K1"
          $0.scopeOrgCode = "K1"
        }, metadata: w.auth("aK1"))
      #expect(statistics.scope.count == Int64(totals.count))
      let mean = totals.reduce(0, +) / Double(totals.count)
      #expect(abs(statistics.scope.mean - mean) < 1e-9)
    }
  }

  @Test func importKilledMidStreamThenResentEndsWithExactlyTheRows() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      // Three batches' worth of rows (4 items a student); the server commits a batch at once.
      let batch = AssessmentAPI.importBatch
      var students: [(String, String, String, [Double])] = []
      for i in 0..<(3 * batch / 4) {
        let even = i % 2 == 0
        let scores: [Double] = [Double(i % 11), Double(i % 7), Double(i % 21), Double(i % 5)]
        students.append(
          (String(format: "ext-k%04d", i), even ? "CL1a" : "CL2", even ? "S1" : "S2", scores))
      }
      let all = rows(students)
      struct Killed: Error {}
      let killed = await rpcError {
        _ = try await w.assessment.importScores(
          metadata: w.auth("aK1"),
          requestProducer: { writer in
            try await writer.write(contentsOf: Array(all.prefix(2 * batch + batch / 4)))
            // Let the server commit its two whole batches (waiting for them, up to 30 s on a
            // loaded machine), then die mid-stream with a quarter batch unacknowledged.
            let deadline = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < deadline {
              let exam = try await w.assessment.getExam(
                .with { $0.code = "M-K1" }, metadata: w.auth("aK1"))
              if exam.scoreCount >= 2 * batch { break }
              try await Task.sleep(for: .milliseconds(100))
            }
            try await Task.sleep(for: .milliseconds(200))
            throw Killed()
          })
      }
      #expect(killed != nil)
      let partial = try await w.assessment.getExam(
        .with { $0.code = "M-K1" }, metadata: w.auth("aK1"))
      // Whole batches only: nothing half-written, and the acknowledged batches stayed.
      #expect(partial.scoreCount == 2 * batch)
      let summary = try await w.importScores(all)
      #expect(summary.accepted == 3 * batch && summary.rejected == 0)
      #expect(summary.created == batch && summary.updated == 2 * batch)
      let exported = try await w.exported("M-K1")
      var expected: [String] = []
      for (student, classCode, _, scores) in students {
        for (i, v) in scores.enumerated() {
          expected.append("\(student)/\(classCode)/\(i + 1)=\(v)")
        }
      }
      expected.sort()
      #expect(exported == expected)
    }
  }
}
