import Foundation
import SmartSchoolClient

/// The saved login of `smartschool login`: tokens (and, for a service account, its client
/// credentials), in a file readable only by its owner (mode 0600, directory 0700).
public struct SessionFile: Codable, Sendable {
  /// The tokens.
  public var tokens: TokenSet
  /// Service-account credentials, so that a new token can be had without a refresh token.
  public var clientID: String?
  /// The secret of ``clientID``.
  public var clientSecret: String?

  /// A session of `tokens`, with service-account credentials when given.
  public init(tokens: TokenSet, clientID: String? = nil, clientSecret: String? = nil) {
    self.tokens = tokens
    self.clientID = clientID
    self.clientSecret = clientSecret
  }

  /// The default path: `$SMARTSCHOOL_SESSION`, else `~/.smartschool/session.json`.
  public static func defaultPath(
    _ environment: [String: String] = ProcessInfo.processInfo.environment
  ) -> String {
    if let path = environment["SMARTSCHOOL_SESSION"], !path.isEmpty { return path }
    let home = environment["HOME"] ?? NSHomeDirectory()
    return home + "/.smartschool/session.json"
  }

  /// Reads the file; `nil` when there is none.
  public static func load(_ path: String) throws -> SessionFile? {
    guard FileManager.default.fileExists(atPath: path) else { return nil }
    let decoder = JSONDecoder()
    decoder.dateDecodingStrategy = .iso8601
    return try decoder.decode(SessionFile.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
  }

  /// Writes the file atomically with mode 0600.
  public func save(_ path: String) throws {
    let directory = (path as NSString).deletingLastPathComponent
    if !directory.isEmpty && !FileManager.default.fileExists(atPath: directory) {
      try FileManager.default.createDirectory(
        atPath: directory, withIntermediateDirectories: true,
        attributes: [.posixPermissions: 0o700])
    }
    let encoder = JSONEncoder()
    encoder.dateEncodingStrategy = .iso8601
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    let temporary = path + ".tmp-\(getpid())"
    guard
      FileManager.default.createFile(
        atPath: temporary, contents: try encoder.encode(self),
        attributes: [.posixPermissions: 0o600])
    else { throw CLIError("cannot write the session file \(path)") }
    guard rename(temporary, path) == 0 else {
      unlink(temporary)
      throw CLIError("cannot write the session file \(path)")
    }
  }
}

/// A one-line error for the user.
public struct CLIError: Error, CustomStringConvertible {
  /// The line.
  public let description: String
  /// An error saying `text`.
  public init(_ text: String) { description = text }
}
