import GRDB
import ServiceRuntime
import Synchronization

/// Group commit for SQLite's single writer: writes that arrive while one transaction runs wait
/// for it, then run together in the next one, each under a savepoint of its own (one that
/// fails rolls back alone and gets its own error; the others commit).
///
/// Why: a resource's create writes ~150 postings into B-tree pages that the creates around it
/// touch too (the postings of common tokens end at the newest resource, and so do the
/// resources' indexes and the change feed), and every commit appends each page it dirtied to
/// the WAL. One commit per batch writes those pages once per batch instead of once per create.
final class WriteBatcher<Value: Sendable>: Sendable {
  typealias Work = @Sendable (Database) throws -> Value

  private struct Waiting: Sendable {
    let work: Work
    let continuation: CheckedContinuation<Value, any Error>
  }

  private let state = Mutex<(waiting: [Waiting], draining: Bool)>(([], false))
  private let store: Store
  /// Most writes in one transaction.
  let limit: Int

  init(store: Store, limit: Int = 64) {
    self.store = store
    self.limit = limit
  }

  /// Runs `work` in a write transaction, maybe shared with other writes of this batcher.
  func write(_ work: @escaping Work) async throws -> Value {
    try await withCheckedThrowingContinuation { continuation in
      let lead = state.withLock { s in
        s.waiting.append(Waiting(work: work, continuation: continuation))
        if s.draining { return false }
        s.draining = true
        return true
      }
      if lead { Task { await self.drain() } }
    }
  }

  /// Runs the waiting writes, a batch per transaction, until none is left.
  private func drain() async {
    while true {
      let batch: [Waiting] = state.withLock { s in
        let batch = Array(s.waiting.prefix(limit))
        s.waiting.removeFirst(batch.count)
        if batch.isEmpty { s.draining = false }
        return batch
      }
      if batch.isEmpty { return }
      let works = batch.map(\.work)
      let results: [Result<Value, any Error>]
      do {
        results = try await store.write { db in
          works.map { work in
            do {
              var value: Value? = nil
              try db.inSavepoint {
                value = try work(db)
                return .commit
              }
              return .success(value!)
            } catch let error as DatabaseError {
              return .failure(Store.map(error))
            } catch {
              return .failure(error)
            }
          }
        }
      } catch {
        // The commit itself failed: none of the batch is stored.
        results = Array(repeating: .failure(error), count: batch.count)
      }
      for (waiting, result) in zip(batch, results) { waiting.continuation.resume(with: result) }
    }
  }
}
