import Foundation
import ServiceRuntime
import SmartSchoolModel
import Synchronization
import Testing

/// The import driver's overlapped commits: two at once where batches share no row, one after
/// the other where they do, outcomes in stream order, and nothing left running on failure.
struct BulkImportTests {
  /// What the commits did, in the order it happened.
  final class Log: Sendable {
    let events = Mutex<[(batch: Int, start: Bool)]>([])
    let running = Mutex<(now: Int, most: Int)>((0, 0))

    func start(_ batch: Int) {
      events.withLock { $0.append((batch, true)) }
      running.withLock {
        $0.now += 1
        $0.most = max($0.most, $0.now)
      }
    }

    func end(_ batch: Int) {
      running.withLock { $0.now -= 1 }
      events.withLock { $0.append((batch, false)) }
    }

    /// Where batch `n` started and ended in the log.
    func span(_ n: Int) -> (start: Int, end: Int) {
      let events = events.withLock { $0 }
      return (
        events.firstIndex { $0.batch == n && $0.start }!,
        events.firstIndex { $0.batch == n && !$0.start }!
      )
    }
  }

  static func stream(_ count: Int) -> AsyncThrowingStream<Int, any Error> {
    AsyncThrowingStream { continuation in
      for n in 0..<count { continuation.yield(n) }
      continuation.finish()
    }
  }

  /// Every third batch shares a row with the one before it: it starts only after that one
  /// ended; the others run beside the batch before them, never more than two at once; each
  /// row is counted once, and the errors come back in stream order.
  @Test func batchesSharingRowsWaitAndTheOthersOverlap() async throws {
    let log = Log()
    var next = 0
    let summary = try await BulkImport.runOverlapped(
      Self.stream(120), batchSize: 5, inFlight: 2,
      followsPrevious: { (staged: (batch: Int, rows: [Int])) in staged.batch % 3 == 0 },
      prepare: { (n: Int, index: Int) -> PreparedRow<Int> in
        n % 7 == 6 ? .reject(.row(index, key: "\(n)", field: "n", "sevens")) : .accept(n)
      },
      stage: { batch in
        defer { next += 1 }
        return (batch: next, rows: batch.map(\.row))
      },
      commit: { staged in
        log.start(staged.batch)
        // Later batches finish sooner: a commit that starts later may end first.
        try await Task.sleep(for: .milliseconds(2 + (24 - staged.batch % 24) % 4))
        log.end(staged.batch)
        var outcome = BatchOutcome()
        outcome.created = staged.rows.count
        outcome.errors = staged.rows.filter { $0 % 11 == 0 }.map {
          .row($0, key: "\($0)", field: "n", "elevens")
        }
        return outcome
      })
    // 17 rows refused before their batch (n % 7 == 6), 10 by their commit (n % 11 == 0).
    #expect(summary.received == 120)
    #expect(summary.created == 103)
    #expect(summary.rejected == 27 && summary.errors.count == 27)
    #expect(summary.errors.map(\.index) == summary.errors.map(\.index).sorted())
    let batches = Set(log.events.withLock { $0.map(\.batch) }).sorted()
    #expect(batches == Array(0..<21))
    var overlapped = 0
    for (previous, batch) in zip(batches, batches.dropFirst()) {
      if batch % 3 == 0 {
        #expect(log.span(batch).start > log.span(previous).end, "batch \(batch)")
      } else if log.span(batch).start < log.span(previous).end {
        overlapped += 1
      }
    }
    #expect(overlapped > 0)
    #expect(log.running.withLock { $0.most } == 2)
  }

  /// A failed commit fails the import only once the commit beside it has ended; what the
  /// caller sees afterwards no longer moves.
  @Test func aFailedCommitWaitsForTheOneBesideIt() async throws {
    let log = Log()
    struct Refused: Error {}
    await #expect(throws: Refused.self) {
      _ = try await BulkImport.runOverlapped(
        Self.stream(100), batchSize: 10, inFlight: 2,
        followsPrevious: { (_: Int) in false },
        prepare: { (n: Int, _: Int) -> PreparedRow<Int> in .accept(n) },
        stage: { batch in batch[0].row / 10 },
        commit: { batch in
          log.start(batch)
          defer { log.end(batch) }
          // Batch 5 starts while 4 runs, and runs on after 4 has failed.
          try await Task.sleep(for: .milliseconds(batch == 4 ? 20 : batch == 5 ? 100 : 1))
          if batch == 4 { throw Refused() }
          return BatchOutcome()
        })
    }
    #expect(log.running.withLock { $0.now } == 0)
    let events = log.events.withLock { $0 }
    #expect(events.filter(\.start).count == events.filter { !$0.start }.count)
    #expect(events.contains { $0.batch == 5 && !$0.start })
    #expect(!events.contains { $0.batch == 6 })
  }
}
