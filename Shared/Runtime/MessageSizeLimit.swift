import GRPCCore

/// A server transport that refuses a request message larger than `limit` bytes with
/// RESOURCE_EXHAUSTED.
///
/// grpc-swift's HTTP/2 transport answers a message over its own payload limit by resetting the
/// stream, which a client sees as CANCELLED with no reason. Wrapped this way, the transport's
/// limit is set higher (``transportLimit(for:)``) and a message between the two limits fails
/// the call with a status that says what happened, before any handler decodes it; the
/// transport's reset remains the last guard against anything larger.
public struct MessageSizeLimitedTransport<Inner: ServerTransport>: ServerTransport {
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
      let checked = stream.inbound.map { part throws -> RPCRequestPart<Bytes> in
        if case .message(let bytes) = part, bytes.count > limit {
          throw RPCError(
            code: .resourceExhausted,
            message: "request message of \(bytes.count) bytes exceeds the limit of \(limit)")
        }
        return part
      }
      await streamHandler(
        RPCStream(
          descriptor: stream.descriptor, inbound: RPCAsyncSequence(wrapping: checked),
          outbound: stream.outbound),
        context)
    }
  }

  public func beginGracefulShutdown() {
    inner.beginGracefulShutdown()
  }
}
