import GRDB
import ServiceRuntime

// The search index's SQL on SQLite (see ``SearchIndex`` for the tables). Every statement is
// plain SQL that PostgreSQL runs as written, except `IN (?, …)` lists (`= ANY($1)` there); the
// scores are computed in Swift (``Ranking/Scorer``) from the rows, whatever order they come
// in, so both stores rank the same rows identically.
//
// A resource's rows go in as multi-row INSERTs (one statement per 100 rows), analysed before
// its write transaction (``SearchIndex/document``, by ``analyse``) so that the single writer
// does not tokenize. A search reads the packed counts of every posting of its tokens joined
// with the visible resources (no text), then positions only for the candidates
// ``Ranking/TopResults`` asks for.

extension SQLiteCatalogueStore {
  /// The index rows of a document, many a statement.
  static let insertPostings = MultiRowStatement(
    "INSERT INTO search_postings (token, resource_seq, counts, lengths)", columns: 4,
    rowsPerStatement: 100)

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
    return AnalysedResource(
      resource: r, editionName: name,
      document: SearchIndex.document(
        title: r.title, keywords: r.keywords, description: r.description_p, editionName: name))
  }

  /// Writes a resource's index rows (replacing any; `fresh`: a resource inserted in this
  /// transaction, which has none), in the caller's write transaction.
  static func indexResource(
    _ db: Database, seq: Int64, _ analysed: AnalysedResource, fresh: Bool = false
  ) throws {
    let r = analysed.resource
    var doc = analysed.document
    let name = r.editionCode.isEmpty ? nil : try editionName(db, code: r.editionCode)
    if name != analysed.editionName {
      doc = SearchIndex.document(
        title: r.title, keywords: r.keywords, description: r.description_p, editionName: name)
    }
    let old = fresh ? nil : try removePostings(db, seq: seq)
    let postings = doc.postings.sorted(by: { $0.key < $1.key })
    try db.cachedStatement(
      sql: """
        INSERT INTO search_documents
          (resource_seq, title_len, keywords_len, description_len, positions)
        VALUES (?, ?, ?, ?, ?)
        """
    ).execute(
      arguments: [
        seq, doc.lengths[0], doc.lengths[1], doc.lengths[2],
        SearchIndex.encodePositions(postings),
      ])
    let lengths = SearchIndex.packLengths(doc.lengths)
    try insertPostings.run(db, count: postings.count) { i, row in
      row.bind(postings[i].key)
      row.bind(seq)
      row.bind(SearchIndex.counts(postings[i].value))
      row.bind(lengths)
    }
    let before = old ?? Array(repeating: 0, count: SearchIndex.fieldCount)
    try updateStats(
      db, documents: old == nil ? 1 : 0, lengths: zip(doc.lengths, before).map { $0 - $1 })
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
    // The document's tokens name its postings (by their key).
    let delete = try db.cachedStatement(
      sql: "DELETE FROM search_postings WHERE token = ? AND resource_seq = ?")
    for token in SearchIndex.positionTokens(row["positions"]) {
      try delete.execute(arguments: [token, seq])
    }
    try db.cachedStatement(sql: "DELETE FROM search_documents WHERE resource_seq = ?")
      .execute(arguments: [seq])
    return [row["title_len"], row["keywords_len"], row["description_len"]]
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
        db, seq: row["seq"],
        AnalysedResource(
          resource: resource, editionName: name,
          document: SearchIndex.document(
            title: resource.title, keywords: resource.keywords,
            description: resource.description_p, editionName: name)))
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
      c.add(
        """
        EXISTS (SELECT 1 FROM search_postings e
          WHERE e.token IN (\(placeholders(f.editions.count))) AND e.resource_seq = r.seq)
        """, f.editions.sorted().map(SearchIndex.editionToken))
    }
  }

  /// The collection statistics and the document frequencies of `tokens`.
  static func searchStatistics(_ db: Database, tokens: [String]) throws
    -> (SearchIndex.Stats, [String: Int])
  {
    var stats = SearchIndex.Stats()
    if let row = try Row.fetchOne(
      db.cachedStatement(sql: SearchIndex.statsTotals))
    {
      stats.documents = row[0]
      stats.lengths = [row[1], row[2], row[3]]
    }
    var frequencies: [String: Int] = [:]
    for row in try Row.fetchAll(
      db,
      sql: """
        SELECT token, count(*) AS n FROM search_postings
        WHERE token IN (\(placeholders(tokens.count))) GROUP BY token
        """, arguments: StatementArguments(tokens))
    {
      frequencies[row[0]] = row[1]
    }
    return (stats, frequencies)
  }

  /// One page of results for a query with words, within conditions `c` on `resources r`.
  static func searchText(
    _ db: Database, query: SearchQuery, conditions c: Conditions, offset: Int, limit: Int
  ) throws -> SearchPage {
    let (stats, frequencies) = try searchStatistics(db, tokens: query.tokens)
    let scorer = Ranking.Scorer(query: query, stats: stats, frequencies: frequencies)
    let tokens = scorer.tokens
    let editions = query.boosts.editions.sorted().map(SearchIndex.editionToken)
    let editionColumn =
      editions.isEmpty
      ? "0"
      : """
      (SELECT count(*) FROM search_postings e
        WHERE e.resource_seq = p.resource_seq AND e.token IN (\(placeholders(editions.count))))
      """
    // The token's index in `tokens` rather than its text.
    let tokenIndex =
      "CASE p.token " + tokens.indices.map { "WHEN ? THEN \($0) " }.joined() + "END"
    var candidates: [Ranking.SearchCandidate] = []
    var bySeq: [Int64: Int] = [:]
    let rows = try Row.fetchCursor(
      db,
      sql: """
        SELECT p.resource_seq, \(tokenIndex), p.counts, p.lengths, r.stage, r.grade, r.subject,
          r.type, r.popularity, \(editionColumn)
        FROM search_postings p CROSS JOIN resources r
        WHERE p.token IN (\(placeholders(tokens.count))) AND r.seq = p.resource_seq AND \(c.sql)
        """,
      arguments: StatementArguments(tokens + editions + tokens + c.arguments))
    while let row = try rows.next() {
      let seq: Int64 = row[0]
      let token: Int = row[1]
      if let i = bySeq[seq] {
        candidates[i].counts[token] = row[2]
        continue
      }
      var candidate = Ranking.SearchCandidate(
        sequence: seq, counts: Array(repeating: -1, count: tokens.count), lengths: row[3],
        stage: row[4], grade: row[5], subject: row[6], type: row[7],
        hasEdition: (row[9] as Int) > 0, popularity: row[8])
      candidate.counts[token] = row[2]
      bySeq[seq] = candidates.count
      candidates.append(candidate)
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
  var document: SearchIndex.Document
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
