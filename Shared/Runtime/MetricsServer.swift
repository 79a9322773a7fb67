import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A minimal HTTP/1.1 server answering `GET /metrics` with the Prometheus text exposition
/// (and `GET /healthz` with 200 while serving), run as a lifecycle service.
final class MetricsHTTPServer: Service, Sendable {
  private let host: String
  private let port: Int
  private let render: @Sendable () -> String
  private let bound = Mutex<Int?>(nil)
  private let ready = AsyncStream<Int>.makeStream()

  init(host: String, port: Int, render: @escaping @Sendable () -> String) {
    self.host = host
    self.port = port
    self.render = render
  }

  /// The bound port, once listening.
  func boundPort() async -> Int? {
    if let p = bound.withLock({ $0 }) { return p }
    for await p in ready.stream { return p }
    return bound.withLock { $0 }
  }

  func run() async throws {
    let render = self.render
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.configureHTTPServerPipeline()
          try channel.pipeline.syncOperations.addHandler(MetricsHandler(render: render))
        }
      }
      .bind(host: host, port: port).get()
    let p = channel.localAddress?.port ?? port
    bound.withLock { $0 = p }
    ready.continuation.yield(p)
    ready.continuation.finish()
    try? await gracefulShutdown()
    try? await channel.close()
  }
}

private final class MetricsHandler: ChannelInboundHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  private let render: @Sendable () -> String
  private var head: HTTPRequestHead?

  init(render: @escaping @Sendable () -> String) {
    self.render = render
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let h): head = h
    case .body: break
    case .end:
      guard let head else { return }
      let path = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
      let (status, body, type): (HTTPResponseStatus, String, String)
      if head.method == .GET && path == "/metrics" {
        (status, body, type) = (.ok, render(), "text/plain; version=0.0.4; charset=utf-8")
      } else if head.method == .GET && path == "/healthz" {
        (status, body, type) = (.ok, "ok\n", "text/plain")
      } else {
        (status, body, type) = (.notFound, "not found\n", "text/plain")
      }
      var headers = HTTPHeaders()
      headers.add(name: "content-type", value: type)
      headers.add(name: "content-length", value: "\(body.utf8.count)")
      context.write(
        wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
        promise: nil)
      var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
      buffer.writeString(body)
      context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
      let keepAlive = head.isKeepAlive
      let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
      context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
        if !keepAlive { bound.value.close(promise: nil) }
      }
      self.head = nil
    }
  }
}
