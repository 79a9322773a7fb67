import Logging
import PostgresNIO
import Synchronization

/// Vacuums and analyses a service's bulk-written tables once a bulk import goes quiet. Until a
/// vacuum marks the new pages all-visible, an index-only scan fetches every row's heap page (a
/// city term of lessons: 150 ms against 115 ms); until an analyse, the planner takes freshly
/// filled tables for near empty (early warning over a city: a nested loop into a sort spilled
/// to disk, 260 ms against 115 ms; a county exam's statistics: its students scanned through
/// the wrong index); and autovacuum looks at a table only once a minute at best. The statement
/// runs outside the import's transactions, after `quiet` without a write at this replica; a
/// failure (e.g. a role that does not own the tables) is logged and the tables left to
/// autovacuum.
public final class PostgresUpkeep: Sendable {
  private struct State {
    var pending = 0
    var generation = 0
  }
  private let state = Mutex(State())
  private let store: PostgresStore
  private let statement: String
  private let logger: Logger
  /// Rows written since the last vacuum that make one worth running.
  public let threshold: Int
  /// How long the writes must pause before the vacuum runs.
  public let quiet: Duration

  /// Upkeep of `tables` (names as in the schema) of `store`.
  public init(
    store: PostgresStore, tables: [String], logger: Logger, threshold: Int = 5_000,
    quiet: Duration = .milliseconds(500)
  ) {
    self.store = store
    self.statement = "VACUUM (ANALYZE) " + tables.joined(separator: ", ")
    self.logger = logger
    self.threshold = threshold
    self.quiet = quiet
  }

  /// Notes `rows` rows written; once `threshold` have been and the writes then pause for
  /// `quiet`, the tables are vacuumed and analysed.
  public func wrote(_ rows: Int) {
    guard rows > 0 else { return }
    let (due, generation) = state.withLock { s in
      s.pending += rows
      s.generation += 1
      return (s.pending >= threshold, s.generation)
    }
    guard due else { return }
    Task { [self] in
      try? await Task.sleep(for: quiet)
      let still = state.withLock { s in
        guard s.generation == generation else { return false }
        s.pending = 0
        return true
      }
      guard still else { return }
      do {
        _ = try await store.query(PostgresQuery(unsafeSQL: statement))
      } catch {
        logger.warning("\(statement) failed: \(error)")
      }
    }
  }
}
