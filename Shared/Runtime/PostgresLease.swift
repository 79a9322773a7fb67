import PostgresNIO
import Synchronization

/// A connection taken from the pool with a bound on the wait.
///
/// `PostgresClient.withConnection` waits for a connection as long as the pool keeps trying to
/// open one: with the server gone (a failover, a restart) that is until the pool's circuit
/// breaker trips, about a minute, and every call meanwhile hangs past its deadline. A lease
/// instead gives up after `limit` with UNAVAILABLE, which a client may retry; the pool keeps
/// reconnecting in the background, so calls succeed again as soon as the server answers.
///
/// The connection is held by a task of its own (the pool's API lends a connection only for a
/// closure's lifetime), released by ``release()``.
final class PostgresLease: Sendable {
  /// The leased connection.
  let connection: PostgresConnection
  private let returned = Mutex<Returned>(.no)

  private enum Returned {
    case no
    case waiting(CheckedContinuation<Void, Never>)
    case yes
  }

  private init(_ connection: PostgresConnection) { self.connection = connection }

  /// Gives the connection back to the pool.
  func release() {
    let waiter = returned.withLock { state -> CheckedContinuation<Void, Never>? in
      defer { state = .yes }
      if case .waiting(let continuation) = state { return continuation }
      return nil
    }
    waiter?.resume()
  }

  private func held() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let now = returned.withLock { state -> Bool in
        if case .yes = state { return true }
        state = .waiting(continuation)
        return false
      }
      if now { continuation.resume() }
    }
  }

  /// Takes a connection from `client`, waiting at most `limit`; then throws UNAVAILABLE.
  /// Cancelling the caller cancels the wait.
  static func take(from client: PostgresClient, within limit: Duration) async throws
    -> PostgresLease
  {
    let request = Request()
    return try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation {
        (answer: CheckedContinuation<PostgresLease, any Error>) in
        let task = Task {
          do {
            try await client.withConnection { connection in
              let lease = PostgresLease(connection)
              // Too late (timed out or cancelled): the connection goes straight back.
              guard request.once.claim() else { return }
              request.timer.withLock { $0?.cancel() }
              answer.resume(returning: lease)
              await lease.held()
            }
          } catch {
            if request.once.claim() {
              request.timer.withLock { $0?.cancel() }
              answer.resume(throwing: error)
            }
          }
        }
        request.holder.withLock { $0 = task }
        // Cancelled before the holder existed: `onCancel` found nothing to cancel.
        if Task.isCancelled { task.cancel() }
        request.timer.withLock {
          $0 = Task {
            try? await Task.sleep(for: limit)
            guard !Task.isCancelled, request.once.claim() else { return }
            task.cancel()
            answer.resume(
              throwing: ServiceError.unavailable(
                "no database connection within \(limit.components.seconds) s"))
          }
        }
      }
    } onCancel: {
      // A lease request that is cancelled fails, and the holder passes that on; a holder
      // that already has its connection is unaffected (the caller releases it).
      request.holder.withLock { $0?.cancel() }
    }
  }
}

/// One wait for a lease: who answers first, and the tasks to stop.
private final class Request: Sendable {
  let once = FirstClaim()
  let holder = Mutex<Task<Void, Never>?>(nil)
  let timer = Mutex<Task<Void, Never>?>(nil)
}

/// Lets only the first of several racing parties act.
final class FirstClaim: Sendable {
  private let taken = Mutex(false)

  /// True for the first caller only.
  func claim() -> Bool {
    taken.withLock { taken in
      defer { taken = true }
      return !taken
    }
  }
}
