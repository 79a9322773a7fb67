import GRPCCore
import SmartSchoolModel
import Synchronization

/// grpc.health.v1 for one server: Check and Watch for "" (the whole server) and each
/// registered service name. The host flips every status to NOT_SERVING when it starts to drain.
public final class HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol, Sendable {
  /// A serving status.
  public typealias Status = Grpc_Health_V1_HealthCheckResponse.ServingStatus

  private struct State {
    var statuses: [String: Status] = [:]
    var watchers: [Int: (String, AsyncStream<Status>.Continuation)] = [:]
    var nextWatcher = 0
  }
  private let state = Mutex(State())

  /// A health service knowing "" and the given service names, all NOT_SERVING until set.
  public init(services: [String]) {
    state.withLock { s in
      s.statuses[""] = .notServing
      for name in services { s.statuses[name] = .notServing }
    }
  }

  /// Sets the status of every known service (and of "").
  public func setAll(_ status: Status) {
    let names = state.withLock { Array($0.statuses.keys) }
    for name in names { set(name, status) }
  }

  /// Sets the status of one service and tells its watchers.
  public func set(_ service: String, _ status: Status) {
    let toNotify = state.withLock { s -> [AsyncStream<Status>.Continuation] in
      s.statuses[service] = status
      return s.watchers.values.filter { $0.0 == service }.map(\.1)
    }
    for c in toNotify { c.yield(status) }
  }

  /// The current status of a service; `nil` when unknown.
  public func status(of service: String) -> Status? {
    state.withLock { $0.statuses[service] }
  }

  public func check(
    request: Grpc_Health_V1_HealthCheckRequest, context: ServerContext
  ) async throws -> Grpc_Health_V1_HealthCheckResponse {
    guard let status = status(of: request.service) else {
      throw RPCError(code: .notFound, message: "unknown service '\(request.service)'")
    }
    return .with { $0.status = status }
  }

  public func watch(
    request: Grpc_Health_V1_HealthCheckRequest,
    response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
    context: ServerContext
  ) async throws {
    let (stream, continuation) = AsyncStream<Status>.makeStream()
    let id = state.withLock { s -> Int in
      let id = s.nextWatcher
      s.nextWatcher += 1
      s.watchers[id] = (request.service, continuation)
      continuation.yield(s.statuses[request.service] ?? .serviceUnknown)
      return id
    }
    defer { _ = state.withLock { $0.watchers.removeValue(forKey: id) } }
    var last: Status? = nil
    for await status in stream {
      if status != last {
        try await response.write(.with { $0.status = status })
        last = status
      }
    }
  }

  /// Ends every Watch stream (at shutdown).
  public func finishWatchers() {
    let all = state.withLock { s -> [AsyncStream<Status>.Continuation] in
      let c = s.watchers.values.map(\.1)
      s.watchers.removeAll()
      return c
    }
    for c in all { c.finish() }
  }
}
