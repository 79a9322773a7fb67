import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import NIOHPACK
import NIOHTTP2

/// Request metadata over the HTTP/2 header-list limit fails that one call with
/// RESOURCE_EXHAUSTED instead of the whole connection.
///
/// swift-nio-http2 treats a header block over SETTINGS_MAX_HEADER_LIST_SIZE (16 KiB, which the
/// gRPC transport advertises and offers no setting for) as a connection error: it sends GOAWAY
/// and every call multiplexed on the connection fails with UNAVAILABLE, as a municipal gateway
/// carrying many users would see. ``RequestHeaderGuard`` sits in front of the HTTP/2 handler on
/// every connection and decodes each request header block itself (HPACK, so it keeps its own
/// copy of the client's dynamic table). A block within the limit goes on byte for byte; a
/// larger one, up to ``RequestHeaderGuard/largestBlock``, goes on re-encoded with only the
/// headers that route the call and the marker header ``markerName`` holding its size, which
/// ``check(_:)`` turns into RESOURCE_EXHAUSTED. Blocks larger still, and anything the guard
/// cannot parse, go on untouched for the HTTP/2 handler to refuse as before.
public enum RequestHeaderLimit {
  /// The largest header list (RFC 7541 sizes: name + value + 32 per field) a call may send.
  public static let limit = HPACKDecoder.defaultMaxHeaderListSize
  /// The metadata key carrying the size of a refused header list.
  public static let markerName = "smartschool-refused-metadata-bytes"

  /// Configures `config` so that every accepted connection gets a ``RequestHeaderGuard``
  /// before its HTTP/2 handler, after any connection callback already set.
  public static func installGuard(on config: inout HTTP2ServerTransport.Posix.Config) {
    let previous = config.channelDebuggingCallbacks.onAcceptTCPConnection
    config.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
      let installed = channel.eventLoop.makeCompletedFuture {
        let sync = channel.pipeline.syncOperations
        let http2 = try sync.handler(type: NIOHTTP2Handler.self)
        try sync.addHandler(
          RequestHeaderGuard(allocator: channel.allocator), position: .before(http2))
      }
      guard let previous else { return installed }
      return installed.flatMap { previous(channel) }
    }
  }

  /// Fails with RESOURCE_EXHAUSTED when `metadata` is what the guard left of an oversize
  /// header list.
  public static func check(_ metadata: Metadata) throws(ServiceError) {
    for case .string(let size) in metadata[markerName] {
      throw .resourceExhausted(
        "request metadata of \(size) bytes exceeds the limit of \(limit) bytes")
    }
  }
}

/// Watches the bytes a client sends on one HTTP/2 connection for header blocks over
/// ``RequestHeaderLimit/limit`` (see there). DATA and other frames pass through as slices of
/// what was read; every header block is decoded once more here (one HPACK decode per call, on
/// the hot path: its share of suite-bench's figures has not been measured yet).
final class RequestHeaderGuard: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer

  /// The largest header block decoded and rewritten; past it the HTTP/2 handler decides.
  static let largestBlock = 1 << 20
  /// Request headers kept in a rewritten block besides pseudo-headers.
  static let routingHeaders: Set<String> = [
    "content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "user-agent",
  ]

  private enum State {
    /// The client connection preface: bytes still to pass.
    case preface(Int)
    /// Between frames.
    case frameHeader
    /// Inside a frame that is not part of a header block: payload bytes still to pass.
    case passing(Int)
    /// Inspection given up: everything passes.
    case bypass
  }

  /// A header block whose CONTINUATION frames are still to come.
  private struct OpenBlock {
    var frames: ByteBuffer
    var fragment: ByteBuffer
    var payloadBytes: Int
    let streamID: UInt32
    let endStream: Bool
  }

  private var state = State.preface(24)
  private var pending = ByteBuffer()
  private var decoder: HPACKDecoder
  /// Set once a block has been rewritten: from then on the HTTP/2 handler's table follows
  /// this encoder, so every block is re-encoded.
  private var encoder: HPACKEncoder?
  private var open: OpenBlock?
  private let allocator: ByteBufferAllocator

  init(allocator: ByteBufferAllocator) {
    self.allocator = allocator
    self.decoder = HPACKDecoder(
      allocator: allocator, maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize,
      maxHeaderListSize: Self.largestBlock)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var input = unwrapInboundIn(data)
    if case .bypass = state {
      context.fireChannelRead(data)
      return
    }
    if pending.readableBytes > 0 {
      pending.writeBuffer(&input)
      input = pending
      pending = ByteBuffer()
    }
    process(&input, context: context)
    if input.readableBytes > 0 { pending = input }
  }

  private func process(_ input: inout ByteBuffer, context: ChannelHandlerContext) {
    while input.readableBytes > 0 {
      switch state {
      case .bypass:
        forward(input.readSlice(length: input.readableBytes)!, context: context)
      case .preface(let left), .passing(let left):
        let n = min(left, input.readableBytes)
        forward(input.readSlice(length: n)!, context: context)
        state = n == left ? .frameHeader : .passing(left - n)
      case .frameHeader:
        guard input.readableBytes >= 9 else { return }
        let at = input.readerIndex
        let length = Int(input.getInteger(at: at, as: UInt32.self)! >> 8)
        let type = input.getInteger(at: at + 3, as: UInt8.self)!
        guard type == 1 || type == 9 else {
          if open != nil { return giveUp(&input, context: context) }
          forward(input.readSlice(length: 9)!, context: context)
          state = length == 0 ? .frameHeader : .passing(length)
          continue
        }
        guard length <= Self.largestBlock else { return giveUp(&input, context: context) }
        guard input.readableBytes >= 9 + length else { return }
        let frame = input.readSlice(length: 9 + length)!
        if !headerFrame(frame, context: context) {
          return giveUp(&input, context: context)
        }
      }
    }
  }

  /// Takes one HEADERS (type 1) or CONTINUATION (type 9) frame; false when the guard cannot
  /// follow (a protocol error the HTTP/2 handler will report, or a block past the largest), in
  /// which case what it held and `frame` have been handed on.
  private func headerFrame(_ frame: ByteBuffer, context: ChannelHandlerContext) -> Bool {
    let flags = frame.getInteger(at: frame.readerIndex + 4, as: UInt8.self)!
    let streamID = frame.getInteger(at: frame.readerIndex + 5, as: UInt32.self)! & 0x7fff_ffff
    let type = frame.getInteger(at: frame.readerIndex + 3, as: UInt8.self)!
    var payload = frame.getSlice(at: frame.readerIndex + 9, length: frame.readableBytes - 9)!
    let endHeaders = flags & 0x4 != 0
    if type == 1 && open == nil {
      var padding = 0
      if flags & 0x8 != 0, let pad = payload.readInteger(as: UInt8.self) { padding = Int(pad) }
      let priorityRead = flags & 0x20 == 0 || payload.readSlice(length: 5) != nil
      guard priorityRead, padding <= payload.readableBytes else {
        forward(frame, context: context)
        return false
      }
      payload.moveWriterIndex(to: payload.writerIndex - padding)
      open = OpenBlock(
        frames: frame, fragment: payload, payloadBytes: frame.readableBytes - 9,
        streamID: streamID, endStream: flags & 0x1 != 0)
    } else if type == 9, var block = open, block.streamID == streamID,
      block.payloadBytes + payload.readableBytes <= Self.largestBlock
    {
      block.frames.writeImmutableBuffer(frame)
      block.fragment.writeImmutableBuffer(payload)
      block.payloadBytes += payload.readableBytes
      open = block
    } else {
      if let block = open { forward(block.frames, context: context) }
      open = nil
      forward(frame, context: context)
      return false
    }
    guard endHeaders, let block = open else { return true }
    open = nil
    return finish(block, context: context)
  }

  private func finish(_ block: OpenBlock, context: ChannelHandlerContext) -> Bool {
    var fragment = block.fragment
    guard let headers = try? decoder.decodeHeaders(from: &fragment),
      fragment.readableBytes == 0
    else {
      forward(block.frames, context: context)
      return false
    }
    let size = headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 32 }
    let limit = RequestHeaderLimit.limit
    let fits = size <= limit && block.payloadBytes <= limit
    if fits && encoder == nil {
      forward(block.frames, context: context)
      return true
    }
    var kept = HPACKHeaders()
    if fits {
      kept = headers
    } else {
      for (name, value, indexing) in headers
      where (name.hasPrefix(":") || Self.routingHeaders.contains(name)) && value.utf8.count <= 1024 {
        kept.add(name: name, value: value, indexing: indexing)
      }
      kept.add(name: RequestHeaderLimit.markerName, value: String(size), indexing: .nonIndexable)
    }
    var encoded = allocator.buffer(capacity: 256)
    if encoder == nil {
      encoder = HPACKEncoder(allocator: allocator)
      // Empty the HTTP/2 handler's table (size 0, then back to the default) so it follows the
      // new encoder from here on.
      encoded.writeBytes([0x20, 0x3F, 0xE1, 0x1F])
    }
    do {
      try encoder!.encode(headers: kept, to: &encoded)
    } catch {
      forward(block.frames, context: context)
      return false
    }
    writeFrames(encoded, streamID: block.streamID, endStream: block.endStream, context: context)
    return true
  }

  /// Writes `block` as a HEADERS frame and as many CONTINUATION frames as the minimum frame
  /// size (16 KiB) needs.
  private func writeFrames(
    _ block: ByteBuffer, streamID: UInt32, endStream: Bool, context: ChannelHandlerContext
  ) {
    var block = block
    var out = allocator.buffer(capacity: block.readableBytes + 9)
    var first = true
    repeat {
      let chunk = block.readSlice(length: min(block.readableBytes, 16_384))!
      let last = block.readableBytes == 0
      let length = UInt32(chunk.readableBytes)
      out.writeInteger(UInt8(truncatingIfNeeded: length >> 16))
      out.writeInteger(UInt16(truncatingIfNeeded: length))
      out.writeInteger(UInt8(first ? 1 : 9))
      out.writeInteger(UInt8((last ? 0x4 : 0) | (first && endStream ? 0x1 : 0)))
      out.writeInteger(streamID)
      out.writeImmutableBuffer(chunk)
      first = false
    } while block.readableBytes > 0
    forward(out, context: context)
  }

  private func giveUp(_ input: inout ByteBuffer, context: ChannelHandlerContext) {
    if let block = open {
      forward(block.frames, context: context)
      open = nil
    }
    state = .bypass
    forward(input.readSlice(length: input.readableBytes)!, context: context)
  }

  private func forward(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
    context.fireChannelRead(wrapInboundOut(bytes))
  }
}

