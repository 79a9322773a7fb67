import Foundation
import Logging

/// A log handler writing one JSON object per line to standard error (through
/// ``LogSink/standardError``): what log shippers read when a service runs off a terminal
/// (systemd, containers).
public struct JSONLogHandler: LogHandler {
  /// The logger label (the service name).
  public let label: String
  public var logLevel: Logger.Level
  public var metadata: Logger.Metadata = [:]
  /// Where the lines go.
  public let sink: LogSink

  /// A handler for `label` at `level`, writing to `sink`.
  public init(label: String, level: Logger.Level, sink: LogSink = .standardError) {
    self.label = label
    self.logLevel = level
    self.sink = sink
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    var line = JSONLogHandler.line(
      label: label, level: event.level, message: event.message, handlerMetadata: metadata,
      eventMetadata: event.metadata)
    line.append(0x0A)
    sink.write(line)
  }

  /// The line ``log(event:)`` writes (without its newline): `time`, `level`, `service` and
  /// `msg`, then the handler's metadata, then the event's, a later value replacing an earlier
  /// one of the same key.
  ///
  /// The fields go into a small array, not a dictionary, and values are written as they are,
  /// not through string interpolation: this runs on the thread serving the RPC, once per call,
  /// and the dictionary of interpolated strings cost a busy service about 5% of its CPU.
  public static func line(
    label: String, level: Logger.Level, message: Logger.Message,
    handlerMetadata: Logger.Metadata, eventMetadata: Logger.Metadata?
  ) -> [UInt8] {
    var fields: [(key: String, value: String)] = [
      ("time", timestamp()), ("level", level.rawValue), ("service", label),
      ("msg", message.description),
    ]
    fields.reserveCapacity(4 + handlerMetadata.count + (eventMetadata?.count ?? 0))
    func put(_ key: String, _ value: Logger.MetadataValue) {
      let text = value.description  // a string as it is; anything else as swift-log renders it
      if let i = fields.firstIndex(where: { $0.key == key }) {
        fields[i].value = text
      } else {
        fields.append((key, text))
      }
    }
    for (k, v) in handlerMetadata { put(k, v) }
    if let eventMetadata { for (k, v) in eventMetadata { put(k, v) } }
    return render(&fields)
  }

  /// One JSON object with sorted keys, written by hand: a line is logged for every RPC, and
  /// Foundation's JSONSerialization and ISO8601DateFormatter took about a third of a busy
  /// service's CPU.
  public static func line(_ object: [String: String]) -> [UInt8] {
    var fields = object.map { (key: $0.key, value: $0.value) }
    return render(&fields)
  }

  /// `fields` (distinct keys) as one JSON object, keys sorted. The values are already text:
  /// fields holding `Logger.MetadataValue` were copied through generic value witnesses at
  /// every step, about 17,000 instructions (2%) of a small unary read.
  private static func render(_ fields: inout [(key: String, value: String)]) -> [UInt8] {
    fields.sort { $0.key < $1.key }
    var out: [UInt8] = [UInt8(ascii: "{")]
    out.reserveCapacity(320)
    for i in fields.indices {
      if i > 0 { out.append(UInt8(ascii: ",")) }
      appendString(fields[i].key, to: &out)
      out.append(UInt8(ascii: ":"))
      appendString(fields[i].value, to: &out)
    }
    out.append(UInt8(ascii: "}"))
    return out
  }

  /// A JSON string literal: quotes, backslashes and control characters escaped, the rest
  /// (including non-ASCII text) as UTF-8.
  static func appendString(_ text: String, to out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    // Most values (methods, codes, ids) need no escaping: copied whole, scanned and copied as
    // one buffer when the string is stored contiguously (native strings are).
    let plain = text.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
      for byte in bytes where byte < 0x20 || byte == 0x22 || byte == 0x5C || byte == 0x7F {
        return false
      }
      out.append(contentsOf: bytes)
      return true
    }
    if plain == true {
      out.append(UInt8(ascii: "\""))
      return
    }
    // Text needing escapes, or a string not stored contiguously: byte by byte.
    for byte in text.utf8 {
      switch byte {
      case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
      case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
      case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
      case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
      case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
      case 0..<0x20, 0x7F:
        let hex = Array("0123456789abcdef".utf8)
        out += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
      default: out.append(byte)
      }
    }
    out.append(UInt8(ascii: "\""))
  }

  /// Now as RFC 3339 UTC with milliseconds, e.g. 2026-11-23T08:15:02.123Z.
  public static func timestamp(_ date: Date = Date()) -> String {
    var text: [UInt8] = []
    appendTimestamp(date, to: &text)
    return String(decoding: text, as: UTF8.self)
  }

  /// Appends ``timestamp(_:)``'s 24 characters to `out`, digits written in place: this runs
  /// for every log line.
  static func appendTimestamp(_ date: Date, to out: inout [UInt8]) {
    let interval = date.timeIntervalSince1970
    var seconds = time_t(interval.rounded(.down))
    let millis = min(999, Int((interval - Double(seconds)) * 1000))
    var parts = tm()
    gmtime_r(&seconds, &parts)
    let start = out.count
    out.append(contentsOf: "0000-00-00T00:00:00.000Z".utf8)
    func put(_ value: Int, at end: Int, width: Int) {
      var rest = value
      for i in stride(from: start + end, to: start + end - width, by: -1) {
        out[i] = UInt8(ascii: "0") + UInt8(rest % 10)
        rest /= 10
      }
    }
    put(Int(parts.tm_year) + 1900, at: 3, width: 4)
    put(Int(parts.tm_mon) + 1, at: 6, width: 2)
    put(Int(parts.tm_mday), at: 9, width: 2)
    put(Int(parts.tm_hour), at: 12, width: 2)
    put(Int(parts.tm_min), at: 15, width: 2)
    put(Int(parts.tm_sec), at: 18, width: 2)
    put(millis, at: 22, width: 3)
  }

  /// The line ``RPCLog`` writes for one finished RPC: the same object, keys sorted, that
  /// ``line(label:level:message:handlerMetadata:eventMetadata:)`` renders from its fields at
  /// level info with message `rpc`, written field by field. Going through swift-log built a
  /// metadata dictionary and rendered the duration through `Double`'s description, about a
  /// tenth of a small read's CPU.
  public static func rpcLine(
    service: String, method: String, code: String, duration: Duration, principal: String,
    requestID: String, peer: String, error: String?, time: Date = Date()
  ) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(320)
    func field(_ key: StaticString, _ value: String) {
      out.append(
        contentsOf: UnsafeRawBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount))
      appendString(value, to: &out)
    }
    field("{\"code\":", code)
    out.append(contentsOf: ",\"duration_ms\":\"".utf8)
    appendMilliseconds(duration, to: &out)
    out.append(UInt8(ascii: "\""))
    if let error { field(",\"error\":", error) }
    field(",\"level\":", "info")
    field(",\"method\":", method)
    field(",\"msg\":", "rpc")
    field(",\"peer\":", peer)
    field(",\"principal\":", principal)
    field(",\"request_id\":", requestID)
    field(",\"service\":", service)
    out.append(contentsOf: ",\"time\":\"".utf8)
    appendTimestamp(time, to: &out)
    out.append(contentsOf: "\"}".utf8)
    return out
  }

  /// Appends `duration` in milliseconds with three decimals (microseconds), e.g. `1.727`.
  static func appendMilliseconds(_ duration: Duration, to out: inout [UInt8]) {
    let micros = max(0, duration.microseconds)
    out.append(contentsOf: String(micros / 1000).utf8)
    let fraction = micros % 1000
    out.append(UInt8(ascii: "."))
    out.append(UInt8(ascii: "0") + UInt8(fraction / 100))
    out.append(UInt8(ascii: "0") + UInt8(fraction / 10 % 10))
    out.append(UInt8(ascii: "0") + UInt8(fraction % 10))
  }
}

/// The one log line per RPC (method, code, duration, principal, request id, peer, and the
/// error's message when it failed), at level info.
///
/// With the JSON handler and no handler metadata the line is rendered directly
/// (``JSONLogHandler/rpcLine(service:method:code:duration:principal:requestID:peer:error:time:)``);
/// with any other handler it goes through swift-log as an event with those fields.
public struct RPCLog: Sendable {
  private let logger: Logger
  /// The JSON handler's label and sink, when lines are rendered directly.
  private let direct: (service: String, sink: LogSink)?

  /// RPC lines for `logger`; its level decides, once, whether they are written at all.
  public init(logger: Logger) {
    self.logger = logger
    if logger.logLevel <= .info, let json = logger.handler as? JSONLogHandler,
      json.metadata.isEmpty
    {
      direct = (json.label, json.sink)
    } else {
      direct = nil
    }
  }

  /// Logs one finished RPC.
  public func record(
    method: String, code: String, duration: Duration, principal: String, requestID: String,
    peer: String, error: String?
  ) {
    if let direct {
      var line = JSONLogHandler.rpcLine(
        service: direct.service, method: method, code: code, duration: duration,
        principal: principal, requestID: requestID, peer: peer, error: error)
      line.append(0x0A)
      direct.sink.write(line)
      return
    }
    guard logger.logLevel <= .info else { return }
    var meta: Logger.Metadata = [
      "method": .string(method), "code": .string(code),
      "duration_ms": "\(duration.milliseconds)",
      "principal": .string(principal), "request_id": .string(requestID),
      "peer": .string(peer),
    ]
    if let error { meta["error"] = .string(error) }
    logger.info("rpc", metadata: meta)
  }
}

/// Where log lines go: callers append whole lines to a buffer, and a thread of the sink's own
/// writes what has gathered, one `write` per batch.
///
/// A `write` per line, made on the thread serving the RPC, cost a busy service about a sixth of
/// a small read's CPU when standard error is a file (and woke a pipe's reader for every line).
/// Here the writer takes what arrived within ``window`` and writes it at once, so a line costs
/// an append under a lock. No caller waits on the output: when its consumer stalls and
/// ``capacity`` bytes are waiting, further lines are dropped and counted, and a line saying how
/// many follows once the output moves again. Lines reach the output whole and in the order
/// they were appended.
///
/// ``standardError`` writes what is buffered when the process exits (`atexit`, bounded by
/// two seconds); a crash or SIGKILL loses at most the last window's lines.
public final class LogSink: @unchecked Sendable {
  /// The sink of the JSON log handler: standard error, flushed at exit.
  public static let standardError: LogSink = {
    let sink = LogSink(fileDescriptor: STDERR_FILENO)
    atexit { LogSink.standardError.flush(timeout: .seconds(2)) }
    return sink
  }()

  /// The file descriptor written to.
  public let fileDescriptor: Int32
  /// How long the writer gathers lines after each write.
  public let window: Duration
  /// The most bytes kept waiting; lines beyond it are dropped and counted.
  public let capacity: Int

  // All guarded by `condition`.
  private let condition = NSCondition()
  private var buffer: [UInt8] = []
  private var dropped = 0
  private var writing = false
  private var writerWaiting = false
  private var started = false

  /// A sink writing to `fileDescriptor` (which it does not close) every `window` at most,
  /// keeping at most `capacity` bytes waiting.
  public init(
    fileDescriptor: Int32, window: Duration = .milliseconds(5), capacity: Int = 8 << 20
  ) {
    self.fileDescriptor = fileDescriptor
    self.window = window
    self.capacity = capacity
  }

  /// Appends `line` (whole lines, each ending in a newline) for the writer thread; never
  /// blocks on the output.
  public func write(_ line: [UInt8]) {
    condition.lock()
    if !started {
      started = true
      let thread = Thread { [self] in run() }
      thread.name = "log-sink"
      thread.start()
    }
    if buffer.count + line.count > capacity {
      dropped += 1
    } else {
      buffer.append(contentsOf: line)
    }
    let wake = writerWaiting
    writerWaiting = false
    condition.unlock()
    if wake { condition.broadcast() }
  }

  /// Waits until every line appended so far is written, or `timeout` has passed.
  public func flush(timeout: Duration = .seconds(10)) {
    let deadline = Date().addingTimeInterval(Double(timeout.microseconds) / 1e6)
    condition.lock()
    defer { condition.unlock() }
    while started && (!buffer.isEmpty || dropped > 0 || writing) {
      if !condition.wait(until: deadline) { return }
    }
  }

  /// Lines dropped (the output not keeping up) and not yet reported by a notice line.
  public var droppedCount: Int {
    condition.lock()
    defer { condition.unlock() }
    return dropped
  }

  private func run() {
    var batch: [UInt8] = []
    let pause = UInt32(clamping: max(0, window.microseconds))
    while true {
      condition.lock()
      while buffer.isEmpty && dropped == 0 {
        writerWaiting = true
        condition.broadcast()  // flushers: everything is written
        condition.wait()
      }
      writerWaiting = false
      swap(&batch, &buffer)
      let lost = dropped
      dropped = 0
      writing = true
      condition.unlock()
      if lost > 0 {
        batch += JSONLogHandler.line([
          "level": "warning", "msg": "log lines dropped: the log output was not keeping up",
          "dropped": String(lost), "time": JSONLogHandler.timestamp(),
        ])
        batch.append(0x0A)
      }
      writeAll(batch)
      // A burst's buffer is not kept for ever.
      if batch.capacity > 1 << 20 { batch = [] } else { batch.removeAll(keepingCapacity: true) }
      condition.lock()
      writing = false
      condition.broadcast()
      condition.unlock()
      if pause > 0 { usleep(pause) }
    }
  }

  /// Straight to the file descriptor (FileHandle's path, through Data and NSError bridging,
  /// cost more than the write itself), retrying short writes and interruptions.
  private func writeAll(_ bytes: [UInt8]) {
    bytes.withUnsafeBytes { buffer in
      var offset = 0
      while offset < buffer.count {
        let n = Glibc.write(fileDescriptor, buffer.baseAddress! + offset, buffer.count - offset)
        if n > 0 {
          offset += n
        } else if n < 0 && errno == EINTR {
          continue
        } else {
          return  // a closed output must not stop the service
        }
      }
    }
  }
}

/// Logging set-up shared by every executable.
public enum ServiceLogging {
  /// A logger for `service`: JSON lines when standard error is not a terminal, readable text
  /// when it is.
  public static func makeLogger(service: String, level: Logger.Level) -> Logger {
    if isatty(STDERR_FILENO) != 0 {
      var logger = Logger(label: service, factory: { StreamLogHandler.standardError(label: $0) })
      logger.logLevel = level
      return logger
    }
    return Logger(label: service, factory: { JSONLogHandler(label: $0, level: level) })
  }
}

/// Writes a line to standard output immediately (`print` is block-buffered off a terminal,
/// so "listening on" lines would never show).
public func writeLine(_ text: String) {
  FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
