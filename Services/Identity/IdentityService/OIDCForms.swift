import Foundation

/// `application/x-www-form-urlencoded` text (a query string or a form body), as OAuth reads
/// it: a parameter given twice is an error (RFC 6749 §3.1), so repeats are reported rather
/// than one of them silently kept.
struct FormFields: Sendable {
  private(set) var values: [String: String] = [:]
  /// Names given more than once, or whose encoding is broken.
  private(set) var malformed: Set<String> = []

  init(_ text: Substring) {
    for pair in text.split(separator: "&", omittingEmptySubsequences: true) {
      let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
      guard let name = Self.decode(parts[0]) else { continue }
      let value = parts.count > 1 ? Self.decode(parts[1]) : ""
      // An empty value counts as absent (RFC 6749 §3.1).
      guard let value else {
        malformed.insert(name)
        continue
      }
      if value.isEmpty { continue }
      if values[name] != nil { malformed.insert(name) }
      values[name] = value
    }
  }

  subscript(_ name: String) -> String? { values[name] }

  /// `+` is a space; then percent-decoding. `nil` for a broken escape.
  static func decode(_ text: Substring) -> String? {
    text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
  }

  /// Percent-encodes `value` for a query string or form: only unreserved characters stay.
  static func encode(_ value: String) -> String {
    value.addingPercentEncoding(withAllowedCharacters: unreserved) ?? ""
  }

  /// `a=1&b=2`, in the given order.
  static func encode(_ pairs: [(String, String)]) -> String {
    pairs.map { "\(encode($0.0))=\(encode($0.1))" }.joined(separator: "&")
  }

  private static let unreserved = CharacterSet(
    charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
}
