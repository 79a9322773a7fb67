import SmartSchoolModel

/// The catalogue's own inverted index, as plain rows any SQL store keeps the same way:
///
/// - `search_postings (token, resource_seq, title_pos, keywords_pos, description_pos)`: one row
///   per token and resource, each field's positions as comma-separated offsets (an occurrence
///   that straddles two dictionary words is written `-(offset + 1)`); facet tokens
///   (``editionToken(_:)``) have no positions.
/// - `search_documents (resource_seq, title_len, keywords_len, description_len)`: field lengths
///   in tokens (bigrams and words; the characters of longer runs do not count).
/// - `search_stats (documents, title_len, keywords_len, description_len)`: collection totals.
///
/// Every live (not deleted) resource is indexed whatever its status; visibility is applied
/// when searching, as for listing. Document frequencies are counted from the postings.
enum SearchIndex {
  /// Title, keywords, description.
  static let fieldCount = 3

  /// One token's positions in a document, per field.
  struct Posting: Equatable, Sendable {
    var positions: [[Int]] = Array(repeating: [], count: SearchIndex.fieldCount)
  }

  /// A document as indexed.
  struct Document: Equatable, Sendable {
    var lengths: [Int] = Array(repeating: 0, count: SearchIndex.fieldCount)
    /// Text tokens, and facet tokens with empty positions.
    var postings: [String: Posting] = [:]
  }

  /// Collection statistics.
  struct Stats: Equatable, Sendable {
    var documents = 0
    var lengths: [Int] = Array(repeating: 0, count: SearchIndex.fieldCount)

    func averageLength(_ field: Int) -> Double {
      documents == 0 ? 0 : Double(lengths[field]) / Double(documents)
    }
  }

  /// The facet token of an edition (never produced from text: text tokens have no "~").
  static func editionToken(_ name: String) -> String { "~edition:" + name }

  /// Analyses a resource's fields. `editionName` is the name of its edition node, if any.
  static func document(
    title: String, keywords: [String], description: String, editionName: String?
  ) -> Document {
    var doc = Document()
    let fields = [title, keywords.joined(separator: "\n"), description]
    for (field, text) in fields.enumerated() {
      for o in SearchText.occurrences(text) {
        if !o.isCharacter { doc.lengths[field] += 1 }
        doc.postings[o.token, default: Posting()].positions[field].append(
          o.aligned ? o.position : -(o.position + 1))
      }
    }
    var named = SearchVocabulary.editions(
      in: SearchText.normalized(title + "\n" + keywords.joined(separator: "\n")))
    if let editionName {
      named.formUnion(SearchVocabulary.editions(in: SearchText.normalized(editionName)))
    }
    for edition in named { doc.postings[editionToken(edition)] = Posting() }
    return doc
  }

  /// The offset of an encoded position.
  static func offset(_ encoded: Int) -> Int { encoded >= 0 ? encoded : -encoded - 1 }

  /// A field's positions as stored.
  static func encode(_ positions: [Int]) -> String {
    positions.map(String.init).joined(separator: ",")
  }

  /// Positions as stored, decoded.
  static func decode(_ text: String) -> [Int] {
    text.isEmpty ? [] : text.split(separator: ",").compactMap { Int($0) }
  }
}
