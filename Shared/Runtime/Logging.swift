import Foundation
import Logging

/// A log handler writing one JSON object per line to standard error: what log shippers read
/// when a service runs off a terminal (systemd, containers).
public struct JSONLogHandler: LogHandler {
  /// The logger label (the service name).
  public let label: String
  public var logLevel: Logger.Level
  public var metadata: Logger.Metadata = [:]

  /// A handler for `label` at `level`.
  public init(label: String, level: Logger.Level) {
    self.label = label
    self.logLevel = level
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
    // Straight to the file descriptor (FileHandle's path, through Data and NSError bridging,
    // cost more than the write itself), in one write and without a lock: a line of up to
    // PIPE_BUF bytes reaches a pipe whole, and writes to a file each advance the shared offset
    // atomically, so lines from different threads do not interleave. Locking here made the
    // threads serving RPCs queue behind each other's write.
    line.withUnsafeBytes { buffer in
      var offset = 0
      while offset < buffer.count {
        let n = write(STDERR_FILENO, buffer.baseAddress! + offset, buffer.count - offset)
        if n > 0 {
          offset += n
        } else if n < 0 && errno == EINTR {
          continue
        } else {
          return  // a closed or full stderr must not stop the service
        }
      }
    }
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
    let interval = date.timeIntervalSince1970
    var seconds = time_t(interval.rounded(.down))
    let millis = min(999, Int((interval - Double(seconds)) * 1000))
    var parts = tm()
    gmtime_r(&seconds, &parts)
    // Digits written in place: this runs for every log line.
    var text = Array("0000-00-00T00:00:00.000Z".utf8)
    func put(_ value: Int, at end: Int, width: Int) {
      var rest = value
      for i in stride(from: end, to: end - width, by: -1) {
        text[i] = UInt8(ascii: "0") + UInt8(rest % 10)
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
    return String(decoding: text, as: UTF8.self)
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
