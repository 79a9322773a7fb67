import Foundation
import Logging
import Synchronization

/// A log handler writing one JSON object per line to standard error: what log shippers read
/// when a service runs off a terminal (systemd, containers).
public struct JSONLogHandler: LogHandler {
  /// The logger label (the service name).
  public let label: String
  public var logLevel: Logger.Level
  public var metadata: Logger.Metadata = [:]

  private static let lock = Mutex(())

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
    guard
      var data = try? JSONSerialization.data(
        withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
    else { return }
    data.append(0x0A)
    JSONLogHandler.lock.withLock { _ in FileHandle.standardError.write(data) }
  }

  private static func timestamp() -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: Date())
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
