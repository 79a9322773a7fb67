import SmartSchoolModel

/// The catalogue's own inverted index, as plain rows any SQL store keeps the same way:
///
/// - `search_postings (token, resource_seq, counts, lengths)`: one row per token and resource,
///   in token order, holding only what scoring every match needs (``counts(_:)``: per field the
///   occurrences inside a dictionary word and those straddling two, and whether the title
///   starts with the token; ``packLengths(_:)``: the document's field lengths). A search reads
///   these for all its matches, with no text to parse. SQLite keeps only facet postings here:
///   its text postings are segments of blobs (`search_segments`, SearchSegments.swift), written
///   once a write merges the latest documents, read from their positions text until then
///   (`search_recent_documents` lists them; SearchIndexStore.swift).
/// - `search_documents (resource_seq, title_len, keywords_len, description_len, positions)`:
///   field lengths in tokens (bigrams and words; the characters of longer runs do not count)
///   and every token's positions as one text (``encodePositions(_:)``: per token, each field's
///   positions as comma-separated offsets, an occurrence that straddles two dictionary words
///   written `-(offset + 1)`; facet tokens, ``editionToken(_:)``, with none). Only proximity
///   needs positions, so a search reads them for its few best candidates; one row per
///   document instead of one per token keeps a create's writes to its postings.
/// - `search_stats (id, documents, title_len, keywords_len, description_len)`: collection
///   totals, kept as ``statsStripes`` rows whose sums are the totals (``statsTotals``). A
///   writer moves one row, which it holds until it commits: PostgreSQL's concurrent writers
///   each move the row of their own connection instead of queueing on a single one.
///
/// Every live (not deleted) resource is indexed whatever its status; visibility is applied
/// when searching, as for listing. Document frequencies are counted from the postings.
enum SearchIndex {
  /// Title, keywords, description.
  static let fieldCount = 3

  /// The rows of `search_stats` (ids 1 through this).
  static let statsStripes = 16

  /// The collection totals: one row, the sums of the stripes (the same SQL on both stores).
  static let statsTotals = """
    SELECT CAST(sum(documents) AS BIGINT), CAST(sum(title_len) AS BIGINT),
      CAST(sum(keywords_len) AS BIGINT), CAST(sum(description_len) AS BIGINT)
    FROM search_stats
    """

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

  /// Whether `token` is a facet token (``editionToken(_:)``'s) rather than one of text.
  @inline(__always) static func isFacetToken(_ token: String) -> Bool {
    token.utf8.first == UInt8(ascii: "~")
  }

  /// Analyses a resource's fields. `editionName` is the name of its edition node, if any.
  static func document(
    title: String, keywords: [String], description: String, editionName: String?
  ) -> Document {
    let a = analysis(
      title: title, keywords: keywords, description: description, editionName: editionName)
    return Document(lengths: a.lengths, postings: Dictionary(uniqueKeysWithValues: a.postings))
  }

  /// ``document(title:keywords:description:editionName:)``'s lengths and postings, the
  /// postings in byte order (``TokenOrder``), as the stores write them.
  static func analysis(
    title: String, keywords: [String], description: String, editionName: String?
  ) -> (lengths: [Int], postings: [(key: String, value: Posting)]) {
    var lengths = Array(repeating: 0, count: fieldCount)
    var postings: [(key: String, value: Posting)] = []
    let fields = [title, keywords.joined(separator: "\n"), description]
    let occurrences = fields.map(SearchText.occurrences)
    // Sized once: growing the table rehashed every token (a tenth of the analysis).
    var index: [TokenKey: Int] = [:]
    index.reserveCapacity(occurrences.reduce(8) { $0 + $1.count })
    for (field, found) in occurrences.enumerated() {
      for o in found {
        if !o.isCharacter { lengths[field] += 1 }
        let position = o.aligned ? o.position : -(o.position + 1)
        if let i = index[TokenKey(o.token)] {
          postings[i].value.positions[field].append(position)
        } else {
          index[TokenKey(o.token)] = postings.count
          var posting = Posting()
          posting.positions[field].append(position)
          postings.append((o.token, posting))
        }
      }
    }
    var named = SearchVocabulary.editions(
      in: SearchText.normalized(title + "\n" + keywords.joined(separator: "\n")))
    if let editionName {
      named.formUnion(SearchVocabulary.editions(in: SearchText.normalized(editionName)))
    }
    for edition in named {
      let token = editionToken(edition)
      if let i = index[TokenKey(token)] {
        postings[i].value = Posting()
      } else {
        index[TokenKey(token)] = postings.count
        postings.append((token, Posting()))
      }
    }
    // Byte order is the stores' order of text keys, and the same as `<` on these normalised
    // (NFC) tokens, without `<`'s Unicode comparison (a seventh of the analysis).
    return (
      lengths,
      postings.map { (TokenOrder($0.key), $0) }.sorted { $0.0 < $1.0 }.map(\.1)
    )
  }

  /// A token as a dictionary key, hashed and compared by its UTF-8 bytes: tokens are NFC
  /// already, and a `String` key is normalised again by every hash (a third of the analysis).
  struct TokenKey: Hashable {
    let token: String

    init(_ token: String) { self.token = token }

    func hash(into hasher: inout Hasher) {
      var token = token
      token.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }

    static func == (a: Self, b: Self) -> Bool { a.token.utf8.elementsEqual(b.token.utf8) }
  }

  /// A token's place in byte (UTF-8) order, the order both stores keep text keys in and, for
  /// these NFC tokens, the same as `<` without its Unicode comparison: the first 16 bytes as
  /// two big-endian integers (tokens hold no NUL, so a shorter token's zero padding sorts
  /// first), the rest compared only between tokens that share those.
  struct TokenOrder: Comparable {
    let token: String
    let high: UInt64
    let low: UInt64

    init(_ token: String) {
      self.token = token
      var key: (UInt64, UInt64) = (0, 0)
      withUnsafeMutableBytes(of: &key) { buffer in
        for (i, byte) in token.utf8.prefix(16).enumerated() { buffer[i] = byte }
      }
      high = UInt64(bigEndian: key.0)
      low = UInt64(bigEndian: key.1)
    }

    static func < (a: Self, b: Self) -> Bool {
      if a.high != b.high { return a.high < b.high }
      if a.low != b.low { return a.low < b.low }
      let (m, n) = (a.token.utf8.count, b.token.utf8.count)
      return m > 16 && n > 16 ? a.token.utf8.lexicographicallyPrecedes(b.token.utf8) : m < n
    }

    static func == (a: Self, b: Self) -> Bool {
      let n = a.token.utf8.count
      return a.high == b.high && a.low == b.low && n == b.token.utf8.count
        && (n <= 16 || a.token.utf8.elementsEqual(b.token.utf8))
    }
  }

  /// The offset of an encoded position.
  static func offset(_ encoded: Int) -> Int { encoded >= 0 ? encoded : -encoded - 1 }

  /// A field's positions as stored.
  static func encode(_ positions: [Int]) -> String {
    positions.map(String.init).joined(separator: ",")
  }

  /// Largest occurrence count kept per field and kind in ``counts(_:)`` (a field repeating a
  /// token more often scores as if it had this many: BM25 has long saturated).
  static let countLimit = 1023
  /// Largest field length kept in ``packLengths(_:)``.
  static let lengthLimit = (1 << 20) - 1
  /// The bit of ``counts(_:)`` set when the title's first token is this one.
  static let titleStartBit: Int64 = 1 << 60

  /// A posting's statistics as one integer: for field f, the occurrences inside one word at
  /// bits 20f…20f+9 and those straddling two words at 20f+10…20f+19; ``titleStartBit``.
  static func counts(_ posting: Posting) -> Int64 {
    var packed: Int64 = 0
    for field in 0..<fieldCount {
      let positions = posting.positions[field]
      let aligned = positions.count { $0 >= 0 }
      packed |= packCounts(field, aligned: aligned, loose: positions.count - aligned)
    }
    if posting.positions[0].contains(where: { offset($0) == 0 }) { packed |= titleStartBit }
    return packed
  }

  /// One field's bits of ``counts(_:)``: its occurrences inside one word and straddling two.
  @inline(__always) static func packCounts(_ field: Int, aligned: Int, loose: Int) -> Int64 {
    Int64(min(aligned, countLimit)) << (20 * field)
      | Int64(min(loose, countLimit)) << (20 * field + 10)
  }

  /// Occurrences in `field` inside one word, from ``counts(_:)``.
  @inline(__always) static func aligned(_ counts: Int64, _ field: Int) -> Int {
    Int((counts >> (20 * field)) & 1023)
  }

  /// Occurrences in `field` straddling two words, from ``counts(_:)``.
  @inline(__always) static func loose(_ counts: Int64, _ field: Int) -> Int {
    Int((counts >> (20 * field + 10)) & 1023)
  }

  /// Field lengths as one integer, 20 bits each.
  static func packLengths(_ lengths: [Int]) -> Int64 {
    var packed: Int64 = 0
    for field in 0..<fieldCount {
      packed |= Int64(min(max(lengths[field], 0), lengthLimit)) << (20 * field)
    }
    return packed
  }

  /// One field's length from ``packLengths(_:)``.
  @inline(__always) static func length(_ packed: Int64, _ field: Int) -> Int {
    Int((packed >> (20 * field)) & Int64(lengthLimit))
  }

  /// Positions as stored, decoded.
  static func decode(_ text: some StringProtocol) -> [Int] {
    text.isEmpty ? [] : text.split(separator: ",").compactMap { Int($0) }
  }

  /// A document's postings as one text: a line per token in token order,
  /// `token TAB title TAB keywords TAB description` (``encode(_:)``; tokens hold no tab or line
  /// break, since they are made of letters and digits, or are facet tokens).
  static func encodePositions(_ postings: [(key: String, value: Posting)]) -> String {
    // Written as bytes: appending a string per number took a tenth of a create's analysis.
    var bytes: [UInt8] = []
    bytes.reserveCapacity(postings.count * 24)
    for (n, (token, posting)) in postings.enumerated() {
      if n > 0 { bytes.append(UInt8(ascii: "\n")) }
      bytes.append(contentsOf: token.utf8)
      for field in 0..<fieldCount {
        bytes.append(UInt8(ascii: "\t"))
        for (k, position) in posting.positions[field].enumerated() {
          if k > 0 { bytes.append(UInt8(ascii: ",")) }
          appendDecimal(position, to: &bytes)
        }
      }
    }
    return String(decoding: bytes, as: UTF8.self)
  }

  /// Appends `value` in decimal, as `String(value)` writes it.
  static func appendDecimal(_ value: Int, to bytes: inout [UInt8]) {
    if value < 0 { bytes.append(UInt8(ascii: "-")) }
    var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
    var magnitude = value.magnitude
    withUnsafeMutableBytes(of: &digits) { buffer in
      var start = buffer.count
      repeat {
        start -= 1
        buffer[start] = UInt8(ascii: "0") + UInt8(magnitude % 10)
        magnitude /= 10
      } while magnitude > 0
      bytes.append(contentsOf: buffer[start...])
    }
  }

  /// The tokens of ``encodePositions(_:)``'s text.
  static func positionTokens(_ text: String) -> [String] {
    text.split(separator: "\n").map { line in
      String(line.prefix { $0 != "\t" })
    }
  }

  /// The postings in ``encodePositions(_:)``'s text of the tokens `wanted` names (token →
  /// index), by index.
  static func decodePositions(_ text: String, wanted: [String: Int]) -> [Int: Posting] {
    // Bytes compared with each wanted token, a line at a time: SQLite's search reads every
    // recent document's text this way, where a String per line took milliseconds a search.
    let keys = wanted.map { (bytes: Array($0.key.utf8), index: $0.value) }
    var found: [Int: Posting] = [:]
    var text = text
    text.withUTF8 { bytes in
      var line = 0
      while line < bytes.count {
        var end = line
        while end < bytes.count, bytes[end] != newline { end += 1 }
        var tab = line
        while tab < end, bytes[tab] != tabulator { tab += 1 }
        let token = UnsafeBufferPointer(rebasing: bytes[line..<tab])
        if let key = keys.first(where: { $0.bytes.elementsEqual(token) }) {
          var posting = Posting()
          var field = -1
          var i = tab
          while i < end, field + 1 < fieldCount {
            i += 1  // the tab before the field
            field += 1
            while i < end, bytes[i] != tabulator {
              posting.positions[field].append(number(bytes, &i))
              if i < end, bytes[i] == comma { i += 1 }
            }
          }
          found[key.index] = posting
        }
        line = end + 1
      }
    }
    return found
  }

  /// Every posting in ``encodePositions(_:)``'s text as its token and ``counts(_:)``, in the
  /// text's (token) order: what SQLite's merge moves into `search_postings`, since a recent
  /// document's text is the only copy of its postings. Counted as the text is read, with no
  /// ``Posting`` built (the merge decodes some 27,000 at a time).
  static func decodeCounts(_ text: String) -> [(token: String, counts: Int64)] {
    var postings: [(token: String, counts: Int64)] = []
    var text = text
    text.withUTF8 { bytes in
      var i = 0
      while i < bytes.count {
        let start = i
        while i < bytes.count, bytes[i] != tabulator, bytes[i] != newline { i += 1 }
        let token = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        var packed: Int64 = 0
        var field = -1
        while i < bytes.count, bytes[i] == tabulator, field + 1 < fieldCount {
          i += 1
          field += 1
          var aligned = 0
          var loose = 0
          while i < bytes.count, bytes[i] != tabulator, bytes[i] != newline {
            let position = number(bytes, &i)
            if position >= 0 { aligned += 1 } else { loose += 1 }
            if field == 0, offset(position) == 0 { packed |= titleStartBit }
            if i < bytes.count, bytes[i] == comma { i += 1 }
          }
          packed |= packCounts(field, aligned: aligned, loose: loose)
        }
        while i < bytes.count, bytes[i] != newline { i += 1 }
        i += 1
        postings.append((token, packed))
      }
    }
    return postings
  }

  private static let newline = UInt8(ascii: "\n")
  private static let tabulator = UInt8(ascii: "\t")
  private static let comma = UInt8(ascii: ",")

  /// The decimal number (``appendDecimal(_:to:)``'s) at `i`, which moves past it.
  private static func number(_ bytes: UnsafeBufferPointer<UInt8>, _ i: inout Int) -> Int {
    let negative = i < bytes.count && bytes[i] == UInt8(ascii: "-")
    if negative { i += 1 }
    var value = 0
    while i < bytes.count, bytes[i] &- UInt8(ascii: "0") < 10 {
      value = value &* 10 &+ Int(bytes[i] &- UInt8(ascii: "0"))
      i += 1
    }
    return negative ? 0 &- value : value
  }
}
