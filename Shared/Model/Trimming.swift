/// Trimming of surrounding white space, with the same results as Foundation's
/// `trimmingCharacters(in: .whitespaces)` and `(in: .whitespacesAndNewlines)` on Linux, scalar
/// by scalar as Foundation does, without bridging to `NSString`: that bridge made trimming a
/// resource's fields a fortieth of a create's CPU.
extension StringProtocol {
  /// The text without leading and trailing white space and line breaks (Foundation's
  /// `.whitespacesAndNewlines`: ``spaceScalars`` and U+000A–U+000D, U+0085, U+2028, U+2029).
  public func trimmingWhitespace() -> String {
    String(self).trimmingScalars { s in
      String.spaceScalars.contains(s.value) || (0x0A...0x0D).contains(s.value)
        || s.value == 0x85 || s.value == 0x2028 || s.value == 0x2029
    }
  }

  /// The text without leading and trailing spaces and tabs (Foundation's `.whitespaces`:
  /// ``spaceScalars``); line breaks stay.
  public func trimmingSpaces() -> String {
    String(self).trimmingScalars { String.spaceScalars.contains($0.value) }
  }
}

extension String {
  /// Foundation's `.whitespaces` on Linux: tab, the space separators (Zs) and U+200B.
  public static let spaceScalars: Set<UInt32> = [
    0x09, 0x20, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007,
    0x2008, 0x2009, 0x200A, 0x200B, 0x202F, 0x205F, 0x3000,
  ]

  /// The string without the leading and trailing scalars `trimmed` accepts; the string itself
  /// when it has none (no copy).
  fileprivate func trimmingScalars(_ trimmed: (Unicode.Scalar) -> Bool) -> String {
    let scalars = unicodeScalars
    guard let first = scalars.first, let last = scalars.last else { return self }
    if !trimmed(first) && !trimmed(last) { return self }
    guard let start = scalars.firstIndex(where: { !trimmed($0) }) else { return "" }
    let end = scalars.lastIndex(where: { !trimmed($0) })!
    return String(scalars[start...end])
  }
}
