/// The position of an org in the tree, as the ids from the root down to the org:
/// `/<province id>/<city id>/…/<org id>/`.
///
/// Scope is a path prefix: a role held at an org covers every org whose path starts with the
/// holder's path. The trailing slash makes prefixes exact (`/a/b/` never covers `/a/bc/`).
public struct OrgPath: Hashable, Sendable, Comparable, CustomStringConvertible {
  /// The ids from the root down to the org.
  public let ids: [String]

  /// The path of the ids from the root down to the org.
  public init(ids: [String]) {
    self.ids = ids
  }

  /// Parses `/a/b/c/`; `nil` for text that is not a path (no leading or trailing slash,
  /// empty segments).
  public init?(_ text: String) {
    guard text.hasPrefix("/"), text.hasSuffix("/"), text.count >= 2 else {
      if text == "/" {
        self.ids = []
        return
      }
      return nil
    }
    let parts = text.dropFirst().dropLast().split(separator: "/", omittingEmptySubsequences: false)
    guard parts.allSatisfy({ !$0.isEmpty }) else { return nil }
    self.ids = parts.map(String.init)
  }

  /// The root path `/`, which covers everything (the system admin's scope).
  public static let root = OrgPath(ids: [])

  /// The text form `/a/b/`.
  public var description: String {
    ids.isEmpty ? "/" : "/" + ids.joined(separator: "/") + "/"
  }

  /// The org's own id (the last segment); `nil` for the root.
  public var leaf: String? { ids.last }

  /// The path of the parent; `nil` for the root.
  public var parent: OrgPath? {
    ids.isEmpty ? nil : OrgPath(ids: Array(ids.dropLast()))
  }

  /// The path of a child with the given id.
  public func appending(_ id: String) -> OrgPath {
    OrgPath(ids: ids + [id])
  }

  /// True when `other` is this org or lies below it.
  public func covers(_ other: OrgPath) -> Bool {
    other.ids.count >= ids.count && other.ids.starts(with: ids)
  }

  /// True when the path text `other` is this org or lies below it.
  public func covers(_ other: String) -> Bool {
    other.hasPrefix(description)
  }

  public static func < (lhs: OrgPath, rhs: OrgPath) -> Bool {
    lhs.description < rhs.description
  }
}
