import AssessmentService
import Foundation
import GRPCCore
import Synchronization
import SmartSchoolModel
import TestSupport
import Testing

/// 6,000 rows (1,500 students × 4 items, across the server's 2,000-row commits) with bad rows
/// spread through them: an unknown exam, an item above its max, an unknown class.
func batchedImportRows() -> [ScoreRow] {
  var students: [(String, String, String, [Double])] = []
  for i in 0..<1500 {
    let even = i % 2 == 0
    students.append(
      (String(format: "ext-b%04d", i), even ? "CL1a" : "CL2", even ? "S1" : "S2",
       [Double(i % 11), Double(i % 7), Double(i % 21), Double(i % 5)]))
  }
  var all = rows(students)
  for i in stride(from: 3, to: all.count, by: 397) { all[i].examCode = "NOPE" }
  for i in stride(from: 1001, to: all.count, by: 1499) { all[i].score = 99 }
  for i in stride(from: 1998, to: all.count, by: 1777) { all[i].classCode = "NOPE" }
  return all
}

typealias ScoreRowBatch = Smartschool_Assessment_V1_ScoreRowBatch

/// A value one world's closure hands to the next.
final class Captured<Value: Sendable>: Sendable {
  private let mutex = Mutex<Value?>(nil)
  var value: Value? { mutex.withLock { $0 } }
  func set(_ value: Value) { mutex.withLock { $0 = value } }
}

/// `rows` cut into messages of the sizes in `sizes`, repeated until every row is in one.
func batches(_ rows: [ScoreRow], sizes: [Int]) -> [ScoreRowBatch] {
  var out: [ScoreRowBatch] = []
  var start = 0
  var k = 0
  while start < rows.count {
    let end = min(rows.count, start + sizes[k % sizes.count])
    out.append(.with { $0.rows = Array(rows[start..<end]) })
    start = end
    k += 1
  }
  return out
}

extension World {
  /// Imports `messages` through ImportScoreBatches as `user`.
  func importScoreBatches(_ messages: [ScoreRowBatch], as user: String = "aK1") async throws
    -> Smartschool_Common_V1_ImportSummary
  {
    try await assessment.importScoreBatches(
      metadata: auth(user),
      requestProducer: { writer in
        for message in messages { try await writer.write(message) }
      })
  }
}

@Suite(.serialized) struct BatchedImportTests {
  @Test func batchesGiveTheSummaryAndRowsOfSingleRows() async throws {
    let all = batchedImportRows()
    let single = Captured<(Smartschool_Common_V1_ImportSummary, [String])>()
    try await withWorld { w in
      try await w.createStandardExam()
      let summary = try await w.importScores(all)
      single.set((summary, try await w.exported("M-K1")))
    }
    let (expected, stored) = try #require(single.value)
    #expect(expected.received == 6000 && expected.rejected > 10 && expected.accepted > 5000)
    try await withWorld { w in
      try await w.createStandardExam()
      // Mixed sizes, an empty message, one row, the cap exactly, and a message that crosses
      // the server's commit batches.
      let messages = batches(all, sizes: [1, 0, 999, 5000, 3, 0, 1997])
      #expect(messages.contains { $0.rows.isEmpty } && messages.contains { $0.rows.count == 5000 })
      let summary = try await w.importScoreBatches(messages)
      #expect(summary == expected)
      #expect(try await w.exported("M-K1") == stored)

      // A repeat changes nothing: every accepted row replaces itself.
      let again = try await w.importScoreBatches(batches(all, sizes: [1000]))
      #expect(again.accepted == expected.accepted && again.created == 0)
      #expect(again.updated == expected.accepted)
      #expect(again.errors == expected.errors)
      #expect(try await w.exported("M-K1") == stored)

      // Only empty messages: nothing received.
      let empty = try await w.importScoreBatches([ScoreRowBatch(), ScoreRowBatch()])
      #expect(empty.received == 0 && empty.accepted == 0 && empty.errors.isEmpty)
    }
  }

  @Test func batchedImportKeepsTheScopeRules() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      let summary = try await w.importScoreBatches(batches(rows(), sizes: [7]), as: "aS1")
      #expect(summary.accepted == 12 && summary.rejected == 8)
      #expect(summary.errors.allSatisfy { $0.reason.contains("outside the caller's scope") })
      await expectCode(.permissionDenied) {
        try await w.importScoreBatches([.with { $0.rows = rows() }], as: "tS1")
      }
    }
  }

  @Test func aMessageOverTheCapFailsTheStreamAndKeepsCommittedBatches() async throws {
    try await withWorld { w in
      try await w.createStandardExam()
      // A batch and a quarter of good rows (4 items a student), in messages of 5,000.
      let batch = AssessmentAPI.importBatch
      var students: [(String, String, String, [Double])] = []
      for i in 0..<((batch + batch / 4) / 4) {
        students.append((String(format: "ext-c%05d", i), "CL1a", "S1", [1, 2, 3, 4]))
      }
      let good = rows(students)
      // 100,000 rows in one message (about 800 KB: under the 4 MiB message limit).
      let over = ScoreRowBatch.with {
        $0.rows = Array(repeating: .with { $0.examCode = "M-K1" }, count: 100_000)
      }
      let error = await rpcError {
        _ = try await w.importScoreBatches(batches(good, sizes: [5000]) + [over])
      }
      #expect(error?.code == .invalidArgument)
      #expect(error?.message.contains("100000 rows") == true)
      #expect(error?.message.contains("at most 5000") == true)
      // The first batch was a whole commit before the bad message; the rest was not.
      let exam = try await w.assessment.getExam(.with { $0.code = "M-K1" }, metadata: w.auth("aK1"))
      #expect(exam.scoreCount == batch)
      // One row over the cap is refused the same way.
      let justOver = await rpcError {
        _ = try await w.importScoreBatches([
          .with { $0.rows = Array(repeating: good[0], count: 5001) }
        ])
      }
      #expect(justOver?.code == .invalidArgument)
    }
  }
}
