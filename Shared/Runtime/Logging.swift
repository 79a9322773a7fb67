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
    var object: [String: String] = [
      "time": JSONLogHandler.timestamp(),
      "level": event.level.rawValue,
      "service": label,
      "msg": "\(event.message)",
    ]
    for (k, v) in metadata { object[k] = "\(v)" }
    if let extra = event.metadata { for (k, v) in extra { object[k] = "\(v)" } }
    var line = JSONLogHandler.line(object)
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

  /// One JSON object with sorted keys, written by hand: a line is logged for every RPC, and
  /// Foundation's JSONSerialization and ISO8601DateFormatter took about a third of a busy
  /// service's CPU.
  public static func line(_ object: [String: String]) -> [UInt8] {
    var out: [UInt8] = [UInt8(ascii: "{")]
    out.reserveCapacity(320)
    for (i, field) in object.sorted(by: { $0.key < $1.key }).enumerated() {
      if i > 0 { out.append(UInt8(ascii: ",")) }
      appendString(field.key, to: &out)
      out.append(UInt8(ascii: ":"))
      appendString(field.value, to: &out)
    }
    out.append(UInt8(ascii: "}"))
    return out
  }

  /// A JSON string literal: quotes, backslashes and control characters escaped, the rest
  /// (including non-ASCII text) as UTF-8.
  static func appendString(_ text: String, to out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    // Most values (methods, codes, ids) need no escaping: copied whole.
    if !text.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C || $0 == 0x7F }) {
      out.append(contentsOf: text.utf8)
      out.append(UInt8(ascii: "\""))
      return
    }
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
