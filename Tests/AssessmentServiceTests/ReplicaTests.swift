import AssessmentService
import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

/// Two assessment replicas in this process on one PostgreSQL database, written to at once:
/// the invariants SQLite's single writer used to keep.
@Suite(
  "Assessment replicas on one PostgreSQL database", .serialized,
  .enabled(if: TestStore.postgresServer != nil))
struct AssessmentReplicaTests {
  /// Outcome of an UpdateExamItems: the new items, or the status it failed with.
  enum Update: Sendable {
    case replaced([Int32])
    case refused(RPCError.Code)
  }

  @Test func anItemUpdateRacingTheFirstImportNeverLeavesScoresOnReplacedItems() async throws {
    try await withWorld(replicas: 2) { w in
      var replaced = 0
      var refused = 0
      for round in 0..<12 {
        let code = "RACE-\(round)"
        try await w.createStandardExam(standardExam(code: code))
        // Replica 0 imports the first scores (items 1–4) while replica 1 swaps the items for
        // 11–14: either the update sees the scores and is refused, or the import reads the
        // new items and rejects every row. Never scores against items that no longer exist.
        async let imported = w.replicas[0].importScores(
          metadata: w.auth("aK1"),
          requestProducer: { writer in try await writer.write(contentsOf: rows(exam: code)) })
        async let updated = Self.update(w, code)
        let (summary, update) = try await (imported, updated)
        let exam = try await w.assessment.getExam(.with { $0.code = code }, metadata: w.auth("aK1"))
        let exported = try await w.exported(code)
        let items = Set(exam.items.map(\.number))
        for line in exported {
          let item = Int32(line.split(separator: "/")[2].split(separator: "=")[0])!
          #expect(items.contains(item), "\(code): score \(line) on an item the exam lacks")
        }
        switch update {
        case .replaced(let numbers):
          replaced += 1
          #expect(numbers == [11, 12, 13, 14])
          #expect(summary.accepted == 0 && summary.rejected == 20, "\(code): \(summary)")
          #expect(exported.isEmpty && !exam.frozen)
        case .refused(let status):
          refused += 1
          #expect(status == .failedPrecondition)
          #expect(summary.accepted == 20 && summary.rejected == 0, "\(code): \(summary)")
          #expect(exported.count == 20 && exam.frozen && items == [1, 2, 3, 4])
        }
      }
      #expect(replaced + refused == 12)
    }
  }

  static func update(_ w: World, _ code: String) async throws -> Update {
    do {
      let exam = try await w.replicas[1].updateExamItems(
        .with {
          $0.code = code
          $0.items = (11...14).map { item($0, 10, ["KP-A"]) }
        }, metadata: w.auth("aK1"))
      return .replaced(exam.items.map(\.number))
    } catch let error as RPCError {
      return .refused(error.code)
    }
  }

  @Test func overlappingQualityImportsFromTwoReplicasLoseNothingAndDuplicateNothing()
    async throws
  {
    try await withWorld(replicas: 2) { w in
      let dimensions: [Smartschool_Assessment_V1_QualityDimension] = [
        .moralCharacter, .academicLevel, .physicalMentalHealth, .artisticLiteracy,
        .socialPractice,
      ]
      for round in 0..<3 {
        // 300 entries; replica 0 imports 0..<200 and replica 1 100..<300 at the same moment
        // (different ids for the same natural keys, in opposite orders).
        let all = (0..<300).map { n in
          entry(dimensions[n % 5], "R\(round)-\(n)", n % 2 == 0 ? .a : .b)
        }
        let first = Array(all[0..<200])
        let second = Array(all[100..<300].reversed())
        async let a = w.replicas[0].importQualityEntries(
          metadata: w.auth("tS1"),
          requestProducer: { writer in try await writer.write(contentsOf: first) })
        async let b = w.replicas[1].importQualityEntries(
          metadata: w.auth("tS1"),
          requestProducer: { writer in try await writer.write(contentsOf: second) })
        let (sa, sb) = try await (a, b)
        #expect(sa.accepted == 200 && sa.rejected == 0, "\(sa)")
        #expect(sb.accepted == 200 && sb.rejected == 0, "\(sb)")
        #expect(sa.created + sb.created == 300 && sa.updated + sb.updated == 100)
      }
      let profile = try await w.assessment.getQualityProfile(
        .with {
          $0.studentExternalID = "ext-stu1"
          $0.schoolYear = "2025-2026"
          $0.term = 1
        }, metadata: w.auth("tS1"))
      let titles = profile.dimensions.flatMap { $0.entries.map(\.title) }
      #expect(titles.count == 900 && Set(titles).count == 900)
    }
  }

  @Test func twoStreamsOfOneExamAtOnceWriteEveryScoreOnce() async throws {
    try await withWorld(replicas: 2) { w in
      try await w.createStandardExam()
      let classes = [("CL1a", "S1"), ("CL1b", "S1"), ("CL2", "S2")]
      func results(_ range: Range<Int>) -> [(String, String, String, [Double])] {
        range.map { n in
          let (classCode, school) = classes[n % 3]
          return (
            String(format: "ext-x%04d", n), classCode, school,
            [Double(n % 11), Double(n % 7), Double(n % 21), Double(n % 5)]
          )
        }
      }
      // 600 students each (2,400 rows, two batches per stream), 300 of them in both streams,
      // the second stream in reverse order.
      let first = rows(exam: "M-K1", results(0..<600))
      let second = Array(rows(exam: "M-K1", results(300..<900)).reversed())
      async let a = w.replicas[0].importScores(
        metadata: w.auth("aK1"),
        requestProducer: { writer in try await writer.write(contentsOf: first) })
      async let b = w.replicas[1].importScores(
        metadata: w.auth("aK1"),
        requestProducer: { writer in try await writer.write(contentsOf: second) })
      let (sa, sb) = try await (a, b)
      #expect(sa.accepted == 2400 && sa.rejected == 0, "\(sa)")
      #expect(sb.accepted == 2400 && sb.rejected == 0, "\(sb)")
      #expect(sa.created + sb.created == 3600 && sa.updated + sb.updated == 1200)
      let exported = try await w.exported("M-K1")
      #expect(exported.count == 3600 && Set(exported).count == 3600)
      #expect(exported == rows(exam: "M-K1", results(0..<900)).map {
        "\($0.studentExternalID)/\($0.classCode)/\($0.itemNumber)=\($0.score)"
      })
      let stats = try await w.replicas[1].getExamStatistics(
        .with { $0.examCode = "M-K1" }, metadata: w.auth("aK1"))
      #expect(stats.scope.count == 900)
    }
  }
}
