import GRDB
import ServiceRuntime

// The search index's SQL on SQLite (see ``SearchIndex`` for the tables). Every statement is
// plain SQL that PostgreSQL runs as written, except `IN (?, …)` lists (`= ANY($1)` there); the
// scores are computed in Swift (``Ranking/Scorer``) from the rows, whatever order they come
// in, so both stores rank the same rows identically.
//
// A resource is analysed before its write transaction (``SearchIndex/document``, by
// ``analyse``) so that the single writer does not tokenize. A write stores its document row
// (`search_documents`: lengths and every token's positions, one text) and lists it in
// `search_recent_documents`; its postings are not written yet. In token order a create's
// hundred-odd postings would dirty a page each all over an index of a row per posting, and
// every commit writes each dirty page whole to the WAL (a megabyte a create, measured). The
// document's text holds them all: once `recentLimit` documents are listed, the write that
// lists the last decodes their texts and writes their text postings as a new segment, a blob
// per token (``mergeRecent``, SearchSegments.swift), and their facet postings as rows of
// `search_postings`. A search decodes the blobs of its tokens in every segment and the listed
// documents' texts (``recentMatches``), looks the matches up in `resources` within the
// conditions, then reads positions only for the candidates ``Ranking/TopResults`` asks for.

extension SQLiteCatalogueStore {
  /// The index rows of a document, many a statement.
  static let insertPostings = MultiRowStatement(
    "INSERT INTO search_postings (token, resource_seq, counts, lengths)", columns: 4,
    rowsPerStatement: 100)

  /// Documents whose postings are read from their text until a write moves them all into
  /// `search_postings` (the store's default; see the comment at the top of this file).
  static let defaultRecentLimit = 256

  /// Whether a recent document's text (`s.positions`) has the token of the argument: a line of
  /// the text starts with it and a tab (SQL on `search_documents s`).
  static let positionsHaveToken =
    "instr(char(10) || s.positions, char(10) || ? || char(9)) > 0"

  /// The documents `search_recent_documents` lists: sequence, the three field lengths and the
  /// positions text.
  static let recentDocuments = """
    SELECT s.resource_seq, s.title_len, s.keywords_len, s.description_len, s.positions
    FROM search_recent_documents d CROSS JOIN search_documents s ON s.resource_seq = d.resource_seq
    ORDER BY d.resource_seq
    """

  /// A recent document some of a search's tokens matched (``recentMatches``).
  struct RecentMatch {
    var sequence: Int64
    /// Per token, ``SearchIndex/counts(_:)`` of its posting, −1 when absent.
    var counts: [Int64]
    var lengths: Int64
    /// How many of the other tokens asked for (editions) the document has.
    var others: Int
  }

  /// The documents `search_recent_documents` lists that have one of `tokens`, their counts
  /// decoded from their texts; `others` are counted, not matched.
  static func recentMatches(_ db: Database, tokens: [String], others: [String] = []) throws
    -> [RecentMatch]
  {
    var wanted: [String: Int] = [:]
    for (i, token) in (tokens + others).enumerated() where wanted[token] == nil {
      wanted[token] = i
    }
    var matches: [RecentMatch] = []
    let rows = try Row.fetchCursor(db.cachedStatement(sql: recentDocuments))
    while let row = try rows.next() {
      let found = SearchIndex.decodePositions(row[4], wanted: wanted)
      guard found.keys.contains(where: { $0 < tokens.count }) else { continue }
      matches.append(
        RecentMatch(
          sequence: row[0],
          counts: tokens.indices.map { i in found[i].map(SearchIndex.counts) ?? -1 },
          lengths: SearchIndex.packLengths([row[1], row[2], row[3]]),
          others: found.keys.count { $0 >= tokens.count }))
    }
    return matches
  }

  /// The name of an edition node, as the index reads it.
  static func editionName(_ db: Database, code: String) throws -> String? {
    try String.fetchOne(
      db.cachedStatement(sql: "SELECT name FROM curriculum_nodes WHERE code = ?"),
      arguments: [code])
  }

  /// A resource analysed for the index outside a write transaction: the edition's name is
  /// read first, and ``indexResource(_:seq:_:fresh:)`` analyses again only if it changed meanwhile.
  func analyse(_ r: Resource) async throws -> AnalysedResource {
    let code = r.editionCode
    let name =
      code.isEmpty ? nil : try await store.read { db in try Self.editionName(db, code: code) }
    return AnalysedResource(resource: r, editionName: name)
  }

  /// Writes a resource's index rows (replacing any; `fresh`: a resource inserted in this
  /// transaction, which has none), in the caller's write transaction: its document row, listed
  /// in `search_recent_documents` (its postings written by the merge once `recentLimit`
  /// documents are listed), or with its postings in `search_postings` when `recentLimit` is
  /// nil (the migrations' rebuild, which writes every document at once).
  static func indexResource(
    _ db: Database, seq: Int64, _ analysed: AnalysedResource, fresh: Bool = false,
    recentLimit: Int?
  ) throws {
    var analysed = analysed
    let r = analysed.resource
    let name = r.editionCode.isEmpty ? nil : try editionName(db, code: r.editionCode)
    if name != analysed.editionName {
      analysed = AnalysedResource(resource: r, editionName: name)
    }
    let old = fresh ? nil : try removePostings(db, seq: seq)
    let postings = analysed.postings
    try db.cachedStatement(
      sql: """
        INSERT INTO search_documents
          (resource_seq, title_len, keywords_len, description_len, positions)
        VALUES (?, ?, ?, ?, ?)
        """
    ).execute(
      arguments: [
        seq, analysed.lengths[0], analysed.lengths[1], analysed.lengths[2], analysed.positions,
      ])
    let lengths = SearchIndex.packLengths(analysed.lengths)
    if let recentLimit {
      try db.cachedStatement(sql: "INSERT INTO search_recent_documents (resource_seq) VALUES (?)")
        .execute(arguments: [seq])
      let waiting = try Int.fetchOne(
        db.cachedStatement(sql: "SELECT count(*) FROM search_recent_documents"))
      if let waiting, waiting >= recentLimit { try mergeRecent(db) }
    } else {
      try insertPostings.run(db, count: postings.count) { i, row in
        row.bind(postings[i].key)
        row.bind(seq)
        row.bind(SearchIndex.counts(postings[i].value))
        row.bind(lengths)
      }
    }
    let before = old ?? Array(repeating: 0, count: SearchIndex.fieldCount)
    try updateStats(
      db, documents: old == nil ? 1 : 0, lengths: zip(analysed.lengths, before).map { $0 - $1 })
  }

  /// Removes a resource's index rows, if any.
  static func unindexResource(_ db: Database, seq: Int64) throws {
    guard let old = try removePostings(db, seq: seq) else { return }
    try updateStats(db, documents: -1, lengths: old.map { -$0 })
  }

  /// Deletes a resource's index rows; its field lengths, `nil` when it had none.
  static func removePostings(_ db: Database, seq: Int64) throws -> [Int]? {
    guard
      let row = try Row.fetchOne(
        db.cachedStatement(
          sql: """
            SELECT title_len, keywords_len, description_len, positions FROM search_documents
            WHERE resource_seq = ?
            """), arguments: [seq])
    else { return nil }
    try db.cachedStatement(sql: "DELETE FROM search_recent_documents WHERE resource_seq = ?")
      .execute(arguments: [seq])
    if db.changesCount == 0 {
      // Merged: the document's tokens name its postings (facet tokens' by their key).
      let delete = try db.cachedStatement(
        sql: "DELETE FROM search_postings WHERE token = ? AND resource_seq = ?")
      var text: [String] = []
      for token in SearchIndex.positionTokens(row["positions"]) {
        if SearchIndex.isFacetToken(token) {
          try delete.execute(arguments: [token, seq])
        } else {
          text.append(token)
        }
      }
      try removeFromSegments(db, seq: seq, tokens: text)
    }
    try db.cachedStatement(sql: "DELETE FROM search_documents WHERE resource_seq = ?")
      .execute(arguments: [seq])
    return [row["title_len"], row["keywords_len"], row["description_len"]]
  }

  /// Moves the postings of every document `search_recent_documents` lists into a new segment
  /// (SearchSegments.swift), their facet postings into `search_postings` in token order, and
  /// empties the list.
  static func mergeRecent(_ db: Database) throws {
    var facets: [(order: SearchIndex.TokenOrder, seq: Int64, counts: Int64, lengths: Int64)] =
      []
    var segment: [SearchIndex.TokenKey: [UInt8]] = [:]
    let rows = try Row.fetchCursor(db.cachedStatement(sql: recentDocuments))
    while let row = try rows.next() {
      let seq: Int64 = row[0]
      let lengths = SearchIndex.packLengths([row[1], row[2], row[3]])
      for p in SearchIndex.decodeCounts(row[4]) {
        if SearchIndex.isFacetToken(p.token) {
          facets.append((SearchIndex.TokenOrder(p.token), seq, p.counts, lengths))
        } else {
          // In sequence order: the documents come in that order.
          append(
            SegmentEntry(seq: seq, counts: p.counts, lengths: lengths),
            to: &segment[SearchIndex.TokenKey(p.token), default: []])
        }
      }
    }
    facets.sort { $0.order == $1.order ? $0.seq < $1.seq : $0.order < $1.order }
    try insertPostings.run(db, count: facets.count) { i, row in
      row.bind(facets[i].order.token)
      row.bind(facets[i].seq)
      row.bind(facets[i].counts)
      row.bind(facets[i].lengths)
    }
    try addSegment(db, segment, level: 0)
    try db.cachedStatement(sql: "DELETE FROM search_recent_documents").execute()
  }

  static func updateStats(_ db: Database, documents: Int, lengths: [Int]) throws {
    try db.cachedStatement(
      sql: """
        UPDATE search_stats SET documents = documents + ?, title_len = title_len + ?,
          keywords_len = keywords_len + ?, description_len = description_len + ?
        WHERE id = 1
        """
    ).execute(arguments: [documents, lengths[0], lengths[1], lengths[2]])
  }

  /// Indexes every live resource (the migration that gives the index its current tables; the
  /// earlier migrations that made older tables call it too, and then it does nothing, since
  /// the later one rebuilds).
  static func rebuildSearchIndex(_ db: Database) throws {
    guard try db.columns(in: "search_documents").contains(where: { $0.name == "positions" })
    else { return }
    let rows = try Row.fetchAll(
      db,
      sql: """
        SELECT seq, title, keywords, description, edition_code FROM resources
        WHERE deleted_at IS NULL ORDER BY seq
        """)
    for row in rows {
      let resource = Resource.with {
        $0.title = row["title"]
        $0.keywords = split(row["keywords"])
        $0.description_p = row["description"]
        $0.editionCode = row["edition_code"] ?? ""
      }
      let name = resource.editionCode.isEmpty
        ? nil : try editionName(db, code: resource.editionCode)
      try indexResource(
        db, seq: row["seq"], AnalysedResource(resource: resource, editionName: name),
        recentLimit: nil)
    }
  }

  /// The facet filters of a query on `resources r`.
  static func add(_ f: SearchFacets, to c: inout Conditions) {
    func list(_ column: String, _ values: Set<Int>) {
      if values.isEmpty { return }
      c.add("\(column) IN (\(placeholders(values.count)))", values.sorted())
    }
    list("r.stage", f.stages)
    list("r.grade", f.grades)
    list("r.subject", f.subjects)
    list("r.type", f.types)
    if !f.editions.isEmpty {
      // Looked up per candidate (the other conditions usually leave few): a list of every
      // resource of an edition would be built for each query.
      let tokens = f.editions.sorted().map(SearchIndex.editionToken)
      let any = tokens.map { _ in positionsHaveToken }.joined(separator: " OR ")
      c.add(
        """
        (EXISTS (SELECT 1 FROM search_postings e
          WHERE e.token IN (\(placeholders(tokens.count))) AND e.resource_seq = r.seq)
        OR EXISTS (SELECT 1 FROM search_recent_documents d CROSS JOIN search_documents s
          ON s.resource_seq = d.resource_seq WHERE d.resource_seq = r.seq AND (\(any))))
        """, tokens + tokens)
    }
  }

  /// The collection statistics and the document frequencies of `tokens` (distinct): the
  /// segments' counted by ``segmentMatches``, the recent documents' from `recent`
  /// (``recentMatches`` of the same tokens).
  static func searchStatistics(
    _ db: Database, tokens: [String], merged: [String: Int], recent: [RecentMatch]
  ) throws -> (SearchIndex.Stats, [String: Int]) {
    var stats = SearchIndex.Stats()
    if let row = try Row.fetchOne(
      db.cachedStatement(sql: SearchIndex.statsTotals))
    {
      stats.documents = row[0]
      stats.lengths = [row[1], row[2], row[3]]
    }
    var frequencies = merged
    for match in recent {
      for (i, counts) in match.counts.enumerated() where counts >= 0 {
        frequencies[tokens[i], default: 0] += 1
      }
    }
    return (stats, frequencies)
  }

  /// Matches looked up in `resources` a statement at a time.
  static let matchesPerStatement = 2_000

  /// One page of results for a query with words, within conditions `c` on `resources r`.
  static func searchText(
    _ db: Database, query: SearchQuery, conditions c: Conditions, offset: Int, limit: Int
  ) throws -> SearchPage {
    let tokens = query.tokens
    let editions = query.boosts.editions.sorted().map(SearchIndex.editionToken)
    let recent = try recentMatches(db, tokens: tokens, others: editions)
    let merged = try segmentMatches(db, tokens: tokens)
    let (stats, frequencies) = try searchStatistics(
      db, tokens: tokens, merged: merged.frequencies, recent: recent)
    let scorer = Ranking.Scorer(query: query, stats: stats, frequencies: frequencies)
    // A merged document's facet postings are rows of search_postings; a recent one's are
    // counted from its text (`others`), and it has none there.
    let editionColumn =
      editions.isEmpty
      ? "0"
      : """
      (SELECT count(*) FROM search_postings e
        WHERE e.resource_seq = r.seq AND e.token IN (\(placeholders(editions.count))))
      """
    var matches: [(sequence: Int64, counts: [Int64], lengths: Int64, others: Int)] =
      merged.matches.map { ($0.sequence, $0.counts, $0.lengths, 0) }
    matches += recent.map { ($0.sequence, $0.counts, $0.lengths, $0.others) }
    var candidates: [Ranking.SearchCandidate] = []
    var start = 0
    while start < matches.count {
      // The matches the conditions keep, each looked up by its sequence.
      let batch = matches[start..<min(start + matchesPerStatement, matches.count)]
      let position = Dictionary(
        uniqueKeysWithValues: batch.indices.map { (matches[$0].sequence, $0) })
      // The list drives the join (CROSS JOIN keeps it outer): the planner would otherwise
      // walk an index of the conditions' columns over every visible resource.
      let values = Array(repeating: "(?)", count: batch.count).joined(separator: ", ")
      let rows = try Row.fetchCursor(
        db,
        sql: """
          WITH m(seq) AS (VALUES \(values))
          SELECT r.seq, r.stage, r.grade, r.subject, r.type, r.popularity, \(editionColumn)
          FROM m CROSS JOIN resources r ON r.seq = m.seq WHERE \(c.sql)
          """,
        arguments: StatementArguments(
          batch.map { $0.sequence } as [any DatabaseValueConvertible] + editions + c.arguments))
      while let row = try rows.next() {
        let match = matches[position[row[0]]!]
        candidates.append(
          Ranking.SearchCandidate(
            sequence: match.sequence, counts: match.counts, lengths: match.lengths,
            stage: row[1], grade: row[2], subject: row[3], type: row[4],
            hasEdition: match.others > 0 || (row[6] as Int) > 0, popularity: row[5]))
      }
      start += batch.count
    }

    var top = Ranking.TopResults(candidates, scorer: scorer, need: offset + limit)
    let pairIndex = Dictionary(uniqueKeysWithValues: top.pairTokens.map { (tokens[$0], $0) })
    while let batch = top.nextBatch() {
      var positions: [Int64: [Int: SearchIndex.Posting]] = [:]
      for row in try Row.fetchAll(
        db,
        sql: """
          SELECT resource_seq, positions FROM search_documents
          WHERE resource_seq IN (\(placeholders(batch.count)))
          """, arguments: StatementArguments(batch))
      {
        positions[row[0]] = SearchIndex.decodePositions(row[1], wanted: pairIndex)
      }
      top.refine(positions)
    }

    let page = top.keys.dropFirst(offset)
    var hits: [(resource: StoredResource, relevance: Double)] = []
    if !page.isEmpty {
      let seqs = page.map(\.sequence)
      let fetched = try db.cachedStatement(
        sql: "SELECT \(columns) FROM resources r WHERE r.seq IN (\(placeholders(seqs.count)))"
      ).decodeAll(arguments: StatementArguments(seqs), decode)
      let bySeq = Dictionary(fetched.map { ($0.seq, $0) }, uniquingKeysWith: { a, _ in a })
      hits = page.compactMap { key in bySeq[key.sequence].map { ($0, key.relevance) } }
    }
    return SearchPage(hits: hits, total: top.total, groups: top.groups)
  }
}

/// A resource with its analysis for the search index (``SearchIndex/document``), made before
/// the write transaction that stores it, and the edition name the analysis used.
struct AnalysedResource: Sendable {
  var resource: Resource
  var editionName: String?
  /// The document's field lengths.
  var lengths: [Int]
  /// The document's postings in token order, and their positions as stored
  /// (``SearchIndex/encodePositions(_:)``): made with the analysis, so that the single writer
  /// does not sort and encode them.
  var postings: [(key: String, value: SearchIndex.Posting)]
  var positions: String

  /// Analyses `resource`, its edition named `editionName`.
  init(resource: Resource, editionName: String?) {
    self.resource = resource
    self.editionName = editionName
    (lengths, postings) = SearchIndex.analysis(
      title: resource.title, keywords: resource.keywords, description: resource.description_p,
      editionName: editionName)
    positions = SearchIndex.encodePositions(postings)
  }
}

/// A facet group of search results.
struct SearchGroupKey: Hashable, Comparable {
  var subject: Int
  var grade: Int
  var type: Int

  static func < (a: Self, b: Self) -> Bool {
    (a.subject, a.grade, a.type) < (b.subject, b.grade, b.type)
  }
}
