import GRPCCore
import SmartSchoolModel

/// What committing one batch of an import did.
public struct BatchOutcome: Sendable {
  /// Rows that created a new entity.
  public var created = 0
  /// Rows that replaced (or confirmed) an existing one.
  public var updated = 0
  /// Rows rejected while committing.
  public var errors: [Smartschool_Common_V1_RowError] = []

  /// An empty outcome.
  public init() {}
}

extension Smartschool_Common_V1_RowError {
  /// A rejected row: its index in the stream, natural key, field and reason.
  public static func row(_ index: Int, key: String, field: String, _ reason: String) -> Self {
    .with {
      $0.index = Int64(index)
      $0.key = String(key.prefix(128))
      $0.field = field
      $0.reason = reason
    }
  }
}

/// The verdict on one streamed row before it is committed.
public enum PreparedRow<Row: Sendable>: Sendable {
  /// The row is valid; commit it.
  case accept(Row)
  /// The row is rejected; report it.
  case reject(Smartschool_Common_V1_RowError)
}

/// Drives every client-streaming import the same way: each message is validated on its own
/// (a bad row is a per-row rejection, never a failed stream), valid rows are committed in
/// batches of `batchSize` (so memory stays bounded whatever the stream's length and every
/// acknowledged batch is durable), and the summary counts and lists what happened, in stream
/// order.
public enum BulkImport {
  /// Runs the import over `stream`.
  ///
  /// - Parameters:
  ///   - prepare: validates message number `index`, returning the row to commit or the error.
  ///   - commit: writes one batch in one transaction.
  ///   - finish: runs after the last batch (e.g. retries of rows deferred by `commit`).
  public static func run<Message: Sendable, Row: Sendable>(
    _ stream: some AsyncSequence<Message, any Error>, batchSize: Int = 1000,
    prepare: (Message, Int) async throws -> PreparedRow<Row>,
    commit: ([(index: Int, row: Row)]) async throws -> BatchOutcome,
    finish: () async throws -> BatchOutcome = { BatchOutcome() }
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    var summary = Smartschool_Common_V1_ImportSummary()
    var batch: [(index: Int, row: Row)] = []
    batch.reserveCapacity(batchSize)
    func add(_ outcome: BatchOutcome) {
      summary.created += Int64(outcome.created)
      summary.updated += Int64(outcome.updated)
      summary.errors += outcome.errors
    }
    var index = 0
    for try await message in stream {
      defer { index += 1 }
      summary.received += 1
      switch try await prepare(message, index) {
      case .accept(let row): batch.append((index, row))
      case .reject(let error): summary.errors.append(error)
      }
      if batch.count >= batchSize {
        add(try await commit(batch))
        batch.removeAll(keepingCapacity: true)
      }
    }
    if !batch.isEmpty { add(try await commit(batch)) }
    add(try await finish())
    summary.errors.sort { $0.index < $1.index }
    summary.rejected = Int64(summary.errors.count)
    summary.accepted = summary.received - summary.rejected
    return summary
  }
}

extension BulkImport {
  /// ``run(_:batchSize:prepare:commit:finish:)`` with one batch committing while the next is
  /// read from the stream and validated, so the database's work and the decoding overlap. At
  /// most one commit is in flight (memory stays two batches) and batches still commit one
  /// after another, in stream order. A failed stream waits for the batch in flight to end
  /// (committed or not) before the error goes back, so what the caller sees afterwards stays
  /// put.
  public static func runOverlapped<Message: Sendable, Row: Sendable>(
    _ stream: some AsyncSequence<Message, any Error>, batchSize: Int = 1000,
    prepare: (Message, Int) async throws -> PreparedRow<Row>,
    commit: @escaping @Sendable ([(index: Int, row: Row)]) async throws -> BatchOutcome
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    try await runOverlapped(
      stream, batchSize: batchSize, prepare: prepare, stage: { $0 }, commit: commit)
  }

  /// ``runOverlapped(_:batchSize:prepare:commit:)`` with each batch (the last one too) first
  /// passed to `stage` while the batch before it still commits (e.g. grouping its rows, reading what
  /// it refers to), and what `stage` returns committed: the work `stage` does leaves the
  /// commit's path. Whatever `stage` read must be checked again by `commit`, inside its
  /// transaction.
  ///
  /// With `inFlight` 2, two commits may run at once (on PostgreSQL, each on a pooled connection
  /// of its own), so two batches' statements and this process's work on them overlap;
  /// outcomes are still counted in stream order, and memory holds three batches. Commits
  /// running at once may finish, and take their locks, in either order, so only batches that
  /// share no row may overlap: `followsPrevious` says of each staged batch, in stream order,
  /// whether it shares one with the batch before it (a key whose later row must win), and such
  /// a batch commits only once the commit before it has ended.
  public static func runOverlapped<Message: Sendable, Row: Sendable, Staged: Sendable>(
    _ stream: some AsyncSequence<Message, any Error>, batchSize: Int = 1000,
    inFlight: Int = 1, followsPrevious: (Staged) -> Bool = { _ in true },
    prepare: (Message, Int) async throws -> PreparedRow<Row>,
    stage: ([(index: Int, row: Row)]) async throws -> Staged,
    commit: @escaping @Sendable (Staged) async throws -> BatchOutcome
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    precondition(inFlight == 1 || inFlight == 2, "one or two commits in flight")
    var committing: [Task<BatchOutcome, any Error>] = []
    // Waits for the oldest commits until at most `keeping` remain; their outcomes, in order.
    // A failure fails the import once every commit in flight has ended.
    func settle(keeping: Int) async throws -> BatchOutcome {
      var outcome = BatchOutcome()
      var failure: (any Error)? = nil
      while committing.count > keeping || (failure != nil && !committing.isEmpty) {
        do {
          let done = try await committing.removeFirst().value
          outcome.created += done.created
          outcome.updated += done.updated
          outcome.errors += done.errors
        } catch {
          if failure == nil { failure = error }
        }
      }
      if let failure { throw failure }
      return outcome
    }
    do {
      return try await run(
        stream, batchSize: batchSize, prepare: prepare,
        commit: { batch in
          let staged = try await stage(batch)
          let previous = try await settle(
            keeping: inFlight > 1 && !followsPrevious(staged) ? inFlight - 1 : 0)
          committing.append(Task { try await commit(staged) })
          return previous
        },
        finish: { try await settle(keeping: 0) })
    } catch {
      for task in committing { _ = try? await task.value }
      throw error
    }
  }
}

/// The rows of a stream whose messages each carry several rows (the batched form of an import
/// RPC, e.g. `ImportScoreBatches`), in stream order: one row at a time, so `BulkImport` numbers,
/// validates and commits them exactly as it does a stream of single rows, and memory holds one
/// message's rows at most.
///
/// A message with more than `limit` rows fails the iteration with INVALID_ARGUMENT on `field`
/// (a client bug, not bad data: the import stops there; batches committed before it stay).
public struct StreamRows<Base: AsyncSequence, Row>: AsyncSequence
where Base.Failure == any Error {
  public typealias Element = Row
  public typealias Failure = any Error

  /// The most rows one message of a batched import may carry.
  public static var defaultLimit: Int { 5000 }

  let base: Base
  let limit: Int
  let field: String
  let unpack: @Sendable (Base.Element) -> [Row]

  /// Flattens `base`, taking each message's rows with `unpack`; `field` names the repeated
  /// field in the error for a message over `limit` rows.
  public init(
    _ base: Base, limit: Int = Self.defaultLimit, field: String = "rows",
    rows unpack: @escaping @Sendable (Base.Element) -> [Row]
  ) {
    self.base = base
    self.limit = limit
    self.field = field
    self.unpack = unpack
  }

  /// Iterates the rows.
  public struct AsyncIterator: AsyncIteratorProtocol {
    var base: Base.AsyncIterator
    let limit: Int
    let field: String
    let unpack: @Sendable (Base.Element) -> [Row]
    var pending: [Row] = []
    var position = 0
    var messages = 0

    /// The next row, reading the next message when the current one's rows are used up.
    public mutating func next() async throws -> Row? {
      while position == pending.count {
        guard let message = try await base.next() else { return nil }
        pending = unpack(message)
        position = 0
        messages += 1
        if pending.count > limit {
          let count = pending.count
          pending = []
          throw ServiceError.invalid(
            field,
            "message \(messages) of the stream carries \(count) rows; at most \(limit) per message")
        }
      }
      defer { position += 1 }
      return pending[position]
    }
  }

  /// An iterator over the rows.
  public func makeAsyncIterator() -> AsyncIterator {
    AsyncIterator(base: base.makeAsyncIterator(), limit: limit, field: field, unpack: unpack)
  }
}
