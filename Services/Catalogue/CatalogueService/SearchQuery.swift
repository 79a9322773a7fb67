import ServiceRuntime

/// A search query split into words. Words of three or more characters are looked up in the
/// FTS5 trigram index; shorter ones (common in Chinese: "函数", "数") cannot be, and are looked
/// up as phrases in a second FTS5 index that holds every character as its own token.
///
/// Anything that is not a letter, digit or combining mark separates words, so quotes,
/// operators and FTS syntax never reach SQLite as syntax: each word is also passed to FTS as
/// a quoted string literal.
struct SearchQuery: Equatable, Sendable {
  /// Longest query accepted, in characters.
  static let maxLength = 100
  /// Most words accepted.
  static let maxTerms = 8
  /// Shortest word the trigram index can find.
  static let trigramLength = 3

  /// The words, lower-cased (ASCII), without duplicates, in query order.
  var terms: [String]

  /// Words the trigram index can find.
  var indexedTerms: [String] { terms.filter { $0.unicodeScalars.count >= Self.trigramLength } }
  /// Words matched by substring.
  var shortTerms: [String] { terms.filter { $0.unicodeScalars.count < Self.trigramLength } }
  /// True for an empty query: every resource the filters select.
  var isEmpty: Bool { terms.isEmpty }

  /// Parses query text. Empty (or blank) text is the empty query; text with no letter or
  /// digit, longer than ``maxLength`` or with more than ``maxTerms`` words is INVALID_ARGUMENT.
  static func parse(_ text: String, field: String = "query") throws(ServiceError) -> SearchQuery {
    if text.count > maxLength {
      throw .invalid(field, "must have at most \(maxLength) characters")
    }
    if text.allSatisfy({ $0.isWhitespace }) { return SearchQuery(terms: []) }
    var terms: [String] = []
    var current = String.UnicodeScalarView()
    func flush() {
      if !current.isEmpty {
        let word = asciiLowercased(String(current))
        if !terms.contains(word) { terms.append(word) }
        current = String.UnicodeScalarView()
      }
    }
    for scalar in text.unicodeScalars {
      if isWordScalar(scalar) {
        current.append(scalar)
      } else {
        flush()
      }
    }
    flush()
    if terms.isEmpty {
      throw .invalid(field, "has no letters or digits to search for")
    }
    if terms.count > maxTerms {
      throw .invalid(field, "must have at most \(maxTerms) words")
    }
    return SearchQuery(terms: terms)
  }

  /// The FTS5 MATCH expression for the indexed words: each one a quoted string literal
  /// (a phrase, which the trigram tokenizer matches as a substring), all required.
  /// `nil` when no word is long enough for the index.
  var matchExpression: String? {
    let words = indexedTerms
    if words.isEmpty { return nil }
    return words.map(Self.literal).joined(separator: " AND ")
  }

  /// The MATCH expression for the short words in the character index: each word a phrase of
  /// its characters (adjacent, in order, so a substring), all required. `nil` when there are
  /// none.
  var shortMatchExpression: String? {
    let words = shortTerms
    if words.isEmpty { return nil }
    return words.map { Self.literal(Self.characterTokens($0)) }.joined(separator: " AND ")
  }

  /// Token that stands for any run of separators in the character index, so that a phrase
  /// never matches across two words ("a b" is not "ab"). A letter, so the tokenizer keeps it.
  static let wordBoundary = "ǂ"

  /// Text as the character index stores it: every letter or digit (ASCII lower-cased) its own
  /// token, separator runs replaced by ``wordBoundary``.
  static func characterTokens(_ text: String) -> String {
    var tokens: [String] = []
    var boundary = false
    for scalar in asciiLowercased(text).unicodeScalars {
      if isWordScalar(scalar) {
        if boundary && !tokens.isEmpty { tokens.append(wordBoundary) }
        boundary = false
        tokens.append(String(scalar))
      } else {
        boundary = true
      }
    }
    return tokens.joined(separator: " ")
  }

  /// An FTS5 string literal: the text in double quotes, inner quotes doubled.
  static func literal(_ text: String) -> String {
    "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
  }

  /// Letters, digits and combining marks make up words; everything else separates them.
  static func isWordScalar(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
      .decimalNumber, .letterNumber, .otherNumber, .nonspacingMark, .spacingMark,
      .enclosingMark:
      return true
    default:
      return false
    }
  }

  /// Lower-cases ASCII letters only, as SQLite's lower() does.
  static func asciiLowercased(_ text: String) -> String {
    String(
      String.UnicodeScalarView(
        text.unicodeScalars.map { s in
          (s.value >= 0x41 && s.value <= 0x5A) ? Unicode.Scalar(s.value + 0x20)! : s
        }))
  }
}
