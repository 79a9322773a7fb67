import Crypto
import Foundation

/// Page-size rules of every List RPC: 0 means the default (50); more than 1000 is refused.
public enum PageSize {
  /// The page size used when a request gives 0.
  public static let defaultSize = 50
  /// The largest page size a request may ask for.
  public static let maximum = 1000

  /// The effective page size, or INVALID_ARGUMENT on the named field.
  public static func resolve(_ requested: Int32, field: String = "page_size") throws(ServiceError)
    -> Int
  {
    if requested < 0 { throw .invalid(field, "must not be negative") }
    if requested > maximum { throw .invalid(field, "must be at most \(maximum)") }
    return requested == 0 ? defaultSize : Int(requested)
  }
}

/// An opaque, stable page token: the sort key of the last row returned (keyset paging), bound
/// to the query it came from so that it cannot be replayed with other filters.
///
/// Tokens are base64url text; clients must treat them as opaque.
public struct PageToken: Equatable, Sendable {
  /// The sort-key values of the last row of the previous page.
  public var after: [String]

  /// A token that resumes after the row with the given sort key.
  public init(after: [String]) {
    self.after = after
  }

  /// Encodes the token for a query described by `query` (any stable text of its filters).
  public func encode(query: String) -> String {
    var text = PageToken.fingerprint(query)
    for part in after {
      text += "\u{1F}" + part
    }
    return Data(text.utf8).base64EncodedString()
      .replacingOccurrences(of: "+", with: "-")
      .replacingOccurrences(of: "/", with: "_")
      .replacingOccurrences(of: "=", with: "")
  }

  /// Decodes `token` for a query described by `query`. An empty token is the first page
  /// (`nil`); a malformed token or one made for other filters is INVALID_ARGUMENT.
  public static func decode(_ token: String, query: String, field: String = "page_token")
    throws(ServiceError) -> PageToken?
  {
    if token.isEmpty { return nil }
    var b64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while b64.count % 4 != 0 { b64 += "=" }
    guard token.count <= 4096, let data = Data(base64Encoded: b64),
      let text = String(data: data, encoding: .utf8)
    else { throw .invalid(field, "is not a page token this service issued") }
    let parts = text.split(separator: "\u{1F}", omittingEmptySubsequences: false).map(String.init)
    guard let first = parts.first, first == fingerprint(query) else {
      throw .invalid(field, "was issued for a different query; start again without a token")
    }
    return PageToken(after: Array(parts.dropFirst()))
  }

  private static func fingerprint(_ query: String) -> String {
    let digest = SHA256.hash(data: Data(query.utf8))
    return digest.prefix(6).map { String(format: "%02x", $0) }.joined()
  }
}
