import Foundation
import GRDB
import GRPCCore
import Logging
import Prometheus
import Synchronization

/// The Prometheus metrics every service exports on its `/metrics` port.
public final class ServiceMetrics: Sendable {
  /// The registry the metrics live in; `/metrics` renders it.
  public let registry = PrometheusCollectorRegistry()
  private let inFlight: Gauge
  private let storeSize: Gauge
  private let changeFeedHead: Gauge
  private struct Key: Hashable {
    var method: String
    var code: String
  }
  private let perCall = Mutex<[Key: (Counter, DurationHistogram)]>([:])
  private static let buckets: [Duration] = [
    .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
    .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
    .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
    .seconds(5), .seconds(10),
  ]

  /// Metrics for the service named `service` (a label on every series).
  public init(service: String) {
    inFlight = registry.makeGauge(
      descriptor: .init(
        namespace: "smartschool", metricName: "rpc_in_flight", unitName: "",
        helpText: "RPCs being served now"), labels: [("service", service)])
    storeSize = registry.makeGauge(
      descriptor: .init(
        namespace: "smartschool", metricName: "store_size", unitName: "bytes",
        helpText: "Size of the SQLite store and its WAL"), labels: [("service", service)])
    changeFeedHead = registry.makeGauge(
      descriptor: .init(
        namespace: "smartschool", metricName: "change_feed_head", unitName: "",
        helpText: "Sequence of the newest change-feed event"), labels: [("service", service)])
  }

  /// Records one finished RPC.
  public func recordRPC(method: String, code: String, duration: Duration) {
    let key = Key(method: method, code: code)
    let pair = perCall.withLock { map in
      if let pair = map[key] { return pair }
      let labels = [("method", method), ("code", code)]
      let counter = registry.makeCounter(
        descriptor: .init(
          namespace: "smartschool", metricName: "rpc_requests", unitName: "total",
          helpText: "RPCs served, by method and status code"), labels: labels)
      let histogram = registry.makeDurationHistogram(
        descriptor: .init(
          namespace: "smartschool", metricName: "rpc_duration", unitName: "seconds",
          helpText: "RPC latency, by method and status code"), labels: labels,
        buckets: ServiceMetrics.buckets)
      map[key] = (counter, histogram)
      return (counter, histogram)
    }
    pair.0.increment()
    pair.1.record(duration)
  }

  /// Adjusts the in-flight gauge.
  public func inFlight(_ delta: Double) { inFlight.increment(by: delta) }

  /// Updates the store gauges (called before each scrape).
  public func updateStore(_ store: any ServiceStorage) async {
    storeSize.set(Double(await store.sizeInBytes()))
    if let head = try? await store.changeFeedHead() {
      changeFeedHead.set(Double(head))
    }
  }

  /// The Prometheus text exposition of every metric.
  public func render() -> String { registry.emitToString() }
}

/// The one interceptor every RPC passes through: it authenticates the caller (through an
/// ``Authenticator``) and binds ``Principal/current`` for the whole call, logs one structured
/// line per RPC (method, code, duration, principal, request id, peer), records the RPC
/// metrics, refuses calls whose metadata the transport cut for size (``RequestHeaderLimit``)
/// and request messages holding unknown enum values (``EnumValueCheck``), and
/// turns any error that is not already a gRPC status into INTERNAL so nothing reaches a client
/// as UNKNOWN.
///
/// One layer rather than one per concern: each interceptor layer wraps the handler and the
/// response producer in another async closure, and this runs on every call.
public struct CallInterceptor: ServerInterceptor {
  private let logger: Logger
  private let metrics: ServiceMetrics
  private let authenticator: Authenticator
  private let rpcLog: RPCLog
  private let enumCheck = EnumValueCheck.suite

  /// An interceptor authenticating with `authenticator`, logging to `logger` and recording
  /// into `metrics`.
  public init(logger: Logger, metrics: ServiceMetrics, authenticator: Authenticator) {
    self.logger = logger
    self.metrics = metrics
    self.authenticator = authenticator
    self.rpcLog = RPCLog(logger: logger)
  }

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next:
      @Sendable (StreamingServerRequest<Input>, ServerContext) async throws ->
      StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let start = ContinuousClock.now
    let requestID =
      request.metadata[stringValues: "x-request-id"].first(where: { _ in true })
      .map { String($0.prefix(128)) } ?? RequestID.make()
    metrics.inFlight(1)
    let principal: Principal?
    do {
      try RequestHeaderLimit.check(request.metadata)
      principal = try await authenticator.principal(
        for: context.descriptor, metadata: request.metadata)
    } catch {
      let rpcError = error.rpcError
      finish(rpcError, context: context, start: start, principalID: "", requestID: requestID)
      throw rpcError
    }
    let finish: @Sendable (RPCError?) -> Void = { [self] error in
      self.finish(
        error, context: context, start: start, principalID: principal?.userID ?? "",
        requestID: requestID)
    }
    do {
      var response = try await Principal.$current.withValue(principal) {
        try await next(enumCheck.checked(request), context)
      }
      switch response.accepted {
      case .success(var contents):
        let producer = contents.producer
        contents.producer = { writer in
          do {
            let trailers = try await Principal.$current.withValue(principal) {
              try await producer(writer)
            }
            finish(nil)
            return trailers
          } catch {
            let rpcError = CallInterceptor.statusError(error, logger: logger)
            finish(rpcError)
            throw rpcError
          }
        }
        response.accepted = .success(contents)
      case .failure(let error):
        finish(error)
      }
      return response
    } catch {
      let rpcError = CallInterceptor.statusError(error, logger: logger)
      finish(rpcError)
      throw rpcError
    }
  }

  /// Records a finished call: the metrics and its log line.
  private func finish(
    _ error: RPCError?, context: ServerContext, start: ContinuousClock.Instant,
    principalID: String, requestID: String
  ) {
    let method = context.descriptor.fullyQualifiedMethod
    let code = error.map { String(describing: $0.code) } ?? "ok"
    let elapsed = start.duration(to: .now)
    metrics.inFlight(-1)
    metrics.recordRPC(method: method, code: code, duration: elapsed)
    rpcLog.record(
      method: method, code: code, duration: elapsed, principal: principalID,
      requestID: requestID, peer: context.remotePeer, error: error?.message)
  }

  /// The gRPC status for any error a handler threw: gRPC errors as they are, domain and store
  /// errors through the one mapping, cancellation as CANCELLED, anything else INTERNAL.
  public static func statusError(_ error: any Error, logger: Logger) -> RPCError {
    switch error {
    case let e as RPCError: return e
    case let e as ServiceError: return e.rpcError
    case let e as any RPCErrorConvertible: return RPCError(e)
    case let e as DatabaseError: return Store.map(e).rpcError
    case is CancellationError: return RPCError(code: .cancelled, message: "the call was cancelled")
    default:
      logger.error("unexpected error", metadata: ["error": "\(error)"])
      return RPCError(code: .internalError, message: "internal error")
    }
  }
}

extension Duration {
  /// The duration in whole microseconds (truncated).
  public var microseconds: Int64 {
    components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000
  }

  /// The duration in milliseconds, with microsecond precision.
  public var milliseconds: Double { Double(microseconds) / 1000 }
}

/// Ids for calls that bring no `x-request-id`: a random prefix drawn once per process and a
/// counter, 20 hex digits like an ``EntityID``. Unique within a process by the counter and
/// across processes and restarts by the prefix, without the two system random numbers (two
/// getrandom calls) an entity id costs on every call.
public enum RequestID {
  private static let prefix: UInt32 = {
    var generator = SystemRandomNumberGenerator()
    return generator.next()
  }()
  private static let counter = Atomic<UInt64>(0)

  /// The next request id.
  public static func make() -> String {
    let count = counter.add(1, ordering: .relaxed).newValue
    let digits = Array("0123456789abcdef".utf8)
    let prefix = RequestID.prefix
    return String(unsafeUninitializedCapacity: 20) { buffer in
      for i in 0..<8 { buffer[i] = digits[Int(truncatingIfNeeded: prefix >> (28 - 4 * i)) & 15] }
      for i in 0..<12 {
        buffer[8 + i] = digits[Int(truncatingIfNeeded: count >> (44 - 4 * i)) & 15]
      }
      return 20
    }
  }
}
