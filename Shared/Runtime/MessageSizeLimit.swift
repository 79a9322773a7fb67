import GRPCCore
import GRPCNIOTransportHTTP2

/// A server transport that refuses a request message larger than `limit` bytes with
/// RESOURCE_EXHAUSTED.
///
/// grpc-swift's HTTP/2 transport answers a message over its own payload limit by resetting the
/// stream, which a client sees as CANCELLED with no reason. Wrapped this way, the transport's
/// limit is set higher (``transportLimit(for:)``) and a message between the two limits fails
/// the call with a status that says what happened, before any handler decodes it; the
/// transport's reset remains the last guard against anything larger.
///
/// It wraps the one transport the services use, `HTTP2ServerTransport.Posix`, rather than any
/// transport: the check runs on every request part, and concrete types let it compile to a
/// direct call. A generic `map` over the inbound sequence cost about 13,000 instructions (1.6%)
/// of a small unary read, in generic metadata lookups and an extra boxed async iterator.
public struct MessageSizeLimitedTransport: ServerTransport {
  /// The wrapped transport's type.
  public typealias Inner = HTTP2ServerTransport.Posix
  /// The wire type of the wrapped transport.
  public typealias Bytes = Inner.Bytes

  /// The wrapped transport.
  public let inner: Inner
  /// The largest request message accepted, in bytes.
  public let limit: Int

  /// Wraps `inner`, refusing request messages larger than `limit` bytes.
  public init(_ inner: Inner, limit: Int) {
    self.inner = inner
    self.limit = limit
  }

  /// The payload limit to give the wrapped transport for a service limit of `limit`: twice
  /// the limit (at least 1 MiB more), so the common oversize message gets a status.
  public static func transportLimit(for limit: Int) -> Int {
    let (doubled, overflow) = limit.multipliedReportingOverflow(by: 2)
    return overflow ? Int.max : max(doubled, limit + 1 << 20)
  }

  public func configure(context: GRPCServerContext) {
    inner.configure(context: context)
  }

  public func listen(
    streamHandler:
      @escaping @Sendable (
        _ stream: RPCStream<Inbound, Outbound>,
        _ context: ServerContext
      ) async -> Void
  ) async throws {
    let limit = self.limit
    try await inner.listen { stream, context in
      await streamHandler(
        RPCStream(
          descriptor: stream.descriptor,
          inbound: RPCAsyncSequence(wrapping: SizeCheckedParts(base: stream.inbound, limit: limit)),
          outbound: stream.outbound),
        context)
    }
  }

  public func beginGracefulShutdown() {
    inner.beginGracefulShutdown()
  }
}

/// The request parts of one stream, failing with RESOURCE_EXHAUSTED at a message over `limit`
/// bytes.
struct SizeCheckedParts: AsyncSequence, Sendable {
  typealias Element = RPCRequestPart<MessageSizeLimitedTransport.Bytes>
  typealias Failure = any Error

  let base: RPCAsyncSequence<Element, any Error>
  let limit: Int

  func makeAsyncIterator() -> AsyncIterator {
    AsyncIterator(base: base.makeAsyncIterator(), limit: limit)
  }

  struct AsyncIterator: AsyncIteratorProtocol {
    var base: RPCAsyncSequence<Element, any Error>.AsyncIterator
    let limit: Int

    mutating func next(isolation actor: isolated (any Actor)?) async throws(any Error)
      -> Element?
    {
      let part = try await base.next(isolation: actor)
      if case .message(let bytes) = part, bytes.count > limit {
        throw RPCError(
          code: .resourceExhausted,
          message: "request message of \(bytes.count) bytes exceeds the limit of \(limit)")
      }
      return part
    }

    mutating func next() async throws -> Element? {
      try await next(isolation: nil)
    }
  }
}
