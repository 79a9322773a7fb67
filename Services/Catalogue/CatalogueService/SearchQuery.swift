import ServiceRuntime

/// A search query analysed by ``SearchText``: its words become groups of tokens that a resource
/// must match, and words naming a stage, grade, subject, type or edition become facets.
///
/// - A Latin or digit word ("ppt", "it", "2024") is a group of one token, matched as a whole
///   word: "it" does not match "unit".
/// - A Han run is a group of its bigrams (one character: that character), of which most must
///   match (all of 1, n − max(1, n/3) of n ≥ 2), so a query found in a title with one character
///   missing, added or wrong still matches (勾股定里 → 勾股定理), and so does one with a word
///   inserted (勾股定理证明 → 勾股定理的证明).
/// - A word that is wholly vocabulary (八年级, 数学, "人教版 数学") filters; vocabulary at either end
///   of a longer run (勾股定理教案, 物理变化) boosts resources of that facet and its tokens count
///   towards the score without being required.
///
/// Nothing in the query reaches SQL as syntax: tokens are bound as values.
struct SearchQuery: Equatable, Sendable {
  /// Longest query accepted, in characters.
  static let maxLength = 100
  /// Most words accepted.
  static let maxTerms = 8

  /// One token of the query.
  struct Term: Equatable, Sendable {
    var token: String
    /// The group the token belongs to; `nil` for a token that only adds to the score.
    var group: Int?
    /// Offset in the normalised query (proximity compares it with offsets in fields).
    var offset: Int
    /// Inside one dictionary word of the query, or a word of its own.
    var aligned: Bool
  }

  /// Tokens in query order.
  var terms: [Term] = []
  /// For each group, how many of its distinct tokens a resource must contain.
  var required: [Int] = []
  /// Facets every result must have.
  var filters = SearchFacets()
  /// Facets that raise a result's score.
  var boosts = SearchFacets()

  /// True when the query has words to match (not only facets).
  var hasText: Bool { !required.isEmpty }
  /// True for an empty query: every resource the filters select.
  var isEmpty: Bool { !hasText && filters.isEmpty }

  /// Distinct tokens, in query order.
  var tokens: [String] {
    var seen: Set<String> = []
    return terms.map(\.token).filter { seen.insert($0).inserted }
  }

  /// A stable text form of what the query means (page-token fingerprints).
  var fingerprint: String {
    terms.map { "\($0.token)/\($0.group.map(String.init) ?? "-")" }.joined(separator: " ")
      + "|" + filters.description + "|" + boosts.description
  }

  /// How many of a group's `n` distinct tokens must match.
  static func required(of n: Int) -> Int { n <= 1 ? n : (n + 1) / 2 }

  /// Parses query text. Empty (or blank) text is the empty query; text with no letter or
  /// digit, longer than ``maxLength`` or with more than ``maxTerms`` words is INVALID_ARGUMENT.
  static func parse(_ text: String, field: String = "query") throws(ServiceError) -> SearchQuery {
    if text.count > maxLength {
      throw .invalid(field, "must have at most \(maxLength) characters")
    }
    if text.allSatisfy({ $0.isWhitespace }) { return SearchQuery() }
    let runs = SearchText.runs(SearchText.normalize(text))
    if runs.isEmpty {
      throw .invalid(field, "has no letters or digits to search for")
    }
    if runs.count > maxTerms {
      throw .invalid(field, "must have at most \(maxTerms) words")
    }
    var query = SearchQuery()
    var seenGroups: Set<String> = []
    for run in runs {
      guard run.isHan else {
        if let facet = SearchVocabulary.facet(run.text) {
          query.filters.add(facet)
          continue
        }
        if !seenGroups.insert(run.text).inserted { continue }
        query.add(SearchText.occurrences(run), optional: false)
        continue
      }
      let peeled = SearchVocabulary.peel(run.scalars)
      if peeled.prefix + peeled.suffix == run.scalars.count {
        for facet in peeled.facets { query.filters.add(facet) }
        continue
      }
      if !seenGroups.insert(run.text).inserted { continue }
      for facet in peeled.facets { query.boosts.add(facet) }
      let occurrences = SearchText.occurrences(run).filter { !$0.isCharacter }
      // Bigrams wholly inside the peeled vocabulary, or straddling its edge, are optional.
      let core = (run.start + peeled.prefix)..<(run.start + run.scalars.count - peeled.suffix)
      let coreLength = core.count
      var required: [SearchText.Occurrence] = []
      var optional: [SearchText.Occurrence] = []
      for o in occurrences {
        let span = o.position..<(o.position + o.token.unicodeScalars.count)
        if coreLength == 1 ? span == core : core.contains(span.lowerBound)
          && core.contains(span.upperBound - 1)
        {
          required.append(o)
        } else {
          optional.append(o)
        }
      }
      if coreLength == 1 {
        // A one-character remainder ("数学课" → 课): that character is the group.
        let c = run.scalars[peeled.prefix]
        required = [
          SearchText.Occurrence(
            token: String(c), position: core.lowerBound, aligned: true, isCharacter: false)
        ]
      }
      query.add(required, optional: false)
      query.add(optional, optional: true)
    }
    query.terms.sort { $0.offset != $1.offset ? $0.offset < $1.offset : $0.token < $1.token }
    return query
  }

  private mutating func add(_ occurrences: [SearchText.Occurrence], optional: Bool) {
    if occurrences.isEmpty { return }
    var group: Int? = nil
    if !optional {
      group = required.count
      required.append(Self.required(of: Set(occurrences.map(\.token)).count))
    }
    for o in occurrences {
      terms.append(Term(token: o.token, group: group, offset: o.position, aligned: o.aligned))
    }
  }

  // MARK: The character index of migration 2 (dropped by migration 3)

  /// Text as migration 2's character index stored it: every letter or digit (ASCII
  /// lower-cased) its own token, separator runs replaced by "ǂ". Kept only because that
  /// shipped migration calls it.
  static func characterTokens(_ text: String) -> String {
    var tokens: [String] = []
    var boundary = false
    for scalar in text.unicodeScalars {
      if SearchText.isWordScalar(scalar) {
        if boundary && !tokens.isEmpty { tokens.append("ǂ") }
        boundary = false
        let v = scalar.value
        tokens.append(String((v >= 0x41 && v <= 0x5A) ? Unicode.Scalar(v + 0x20)! : scalar))
      } else {
        boundary = true
      }
    }
    return tokens.joined(separator: " ")
  }
}
