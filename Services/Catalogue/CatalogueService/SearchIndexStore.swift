import GRDB
import ServiceRuntime

// The search index's SQL on SQLite (see ``SearchIndex`` for the tables). Every statement is
// plain SQL that PostgreSQL runs as written, except `IN (?, …)` lists (`= ANY($1)` there); the
// scores are computed in Swift (``Ranking/relevance(query:document:stats:frequencies:facets:)``)
// from the rows, whatever order they come in, so both stores rank the same rows identically.
//
// Porting: the tables become plain tables (no WITHOUT ROWID) with the same keys; `CROSS JOIN`
// only fixes SQLite's join order and means an inner join on PostgreSQL; the single
// `search_stats` row is updated by every indexing write (on PostgreSQL writers queue on its row
// lock for the rest of their transaction: update it last, as here, or shard it).
extension SQLiteCatalogueStore {
  /// Writes a resource's index rows (replacing any), in the caller's write transaction.
  static func indexResource(
    _ db: Database, seq: Int64, title: String, keywords: [String], description: String,
    editionCode: String?
  ) throws {
    let old = try removePostings(db, seq: seq)
    var editionName: String? = nil
    if let editionCode, !editionCode.isEmpty {
      editionName = try String.fetchOne(
        db.cachedStatement(sql: "SELECT name FROM curriculum_nodes WHERE code = ?"),
        arguments: [editionCode])
    }
    let doc = SearchIndex.document(
      title: title, keywords: keywords, description: description, editionName: editionName)
    try db.cachedStatement(
      sql: """
        INSERT INTO search_documents (resource_seq, title_len, keywords_len, description_len)
        VALUES (?, ?, ?, ?)
        """
    ).execute(arguments: [seq, doc.lengths[0], doc.lengths[1], doc.lengths[2]])
    let insert = try db.cachedStatement(
      sql: """
        INSERT INTO search_postings
          (token, resource_seq, title_pos, keywords_pos, description_pos)
        VALUES (?, ?, ?, ?, ?)
        """)
    for (token, posting) in doc.postings.sorted(by: { $0.key < $1.key }) {
      try insert.execute(
        arguments: [
          token, seq, SearchIndex.encode(posting.positions[0]),
          SearchIndex.encode(posting.positions[1]), SearchIndex.encode(posting.positions[2]),
        ])
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

  /// Deletes a resource's postings and document row; its field lengths, `nil` when it had none.
  static func removePostings(_ db: Database, seq: Int64) throws -> [Int]? {
    guard
      let row = try Row.fetchOne(
        db.cachedStatement(
          sql: """
            SELECT title_len, keywords_len, description_len FROM search_documents
            WHERE resource_seq = ?
            """), arguments: [seq])
    else { return nil }
    try db.cachedStatement(sql: "DELETE FROM search_postings WHERE resource_seq = ?")
      .execute(arguments: [seq])
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

  /// Indexes every live resource (the migration that adds the index).
  static func rebuildSearchIndex(_ db: Database) throws {
    let rows = try Row.fetchAll(
      db,
      sql: """
        SELECT seq, title, keywords, description, edition_code FROM resources
        WHERE deleted_at IS NULL ORDER BY seq
        """)
    for row in rows {
      try indexResource(
        db, seq: row["seq"], title: row["title"], keywords: split(row["keywords"]),
        description: row["description"], editionCode: row["edition_code"])
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
      c.add(
        """
        r.seq IN (SELECT resource_seq FROM search_postings
          WHERE token IN (\(placeholders(f.editions.count))))
        """, f.editions.sorted().map(SearchIndex.editionToken))
    }
  }

  /// One page of results for a query with words, within conditions `c` on `resources r`.
  static func searchText(
    _ db: Database, query: SearchQuery, conditions c: Conditions, offset: Int, limit: Int
  ) throws -> SearchPage {
    let tokens = query.tokens
    var stats = SearchIndex.Stats()
    if let row = try Row.fetchOne(
      db.cachedStatement(
        sql: """
          SELECT documents, title_len, keywords_len, description_len FROM search_stats
          WHERE id = 1
          """))
    {
      stats.documents = row["documents"]
      stats.lengths = [row["title_len"], row["keywords_len"], row["description_len"]]
    }
    var frequencies: [String: Int] = [:]
    for row in try Row.fetchAll(
      db,
      sql: """
        SELECT token, count(*) AS n FROM search_postings
        WHERE token IN (\(placeholders(tokens.count))) GROUP BY token
        """, arguments: StatementArguments(tokens))
    {
      frequencies[row["token"]] = row["n"]
    }

    let editions = query.boosts.editions.sorted().map(SearchIndex.editionToken)
    let editionColumn =
      editions.isEmpty
      ? "0"
      : """
      (SELECT count(*) FROM search_postings e
        WHERE e.resource_seq = p.resource_seq AND e.token IN (\(placeholders(editions.count))))
      """
    var candidates: [Int64: Ranking.SearchCandidate] = [:]
    let rows = try Row.fetchCursor(
      db,
      sql: """
        SELECT p.resource_seq AS seq, p.token, p.title_pos, p.keywords_pos, p.description_pos,
          d.title_len, d.keywords_len, d.description_len, r.stage, r.grade, r.subject, r.type,
          r.popularity, \(editionColumn) AS editions
        FROM search_postings p CROSS JOIN search_documents d CROSS JOIN resources r
        WHERE p.token IN (\(placeholders(tokens.count))) AND d.resource_seq = p.resource_seq
          AND r.seq = p.resource_seq AND \(c.sql)
        """,
      arguments: StatementArguments(editions + tokens + c.arguments))
    while let row = try rows.next() {
      let seq: Int64 = row["seq"]
      var candidate = candidates[seq] ?? Ranking.SearchCandidate()
      if candidate.document.postings.isEmpty {
        candidate.document.lengths = [
          row["title_len"], row["keywords_len"], row["description_len"],
        ]
        candidate.subject = row["subject"]
        candidate.grade = row["grade"]
        candidate.type = row["type"]
        candidate.popularity = row["popularity"]
        candidate.facets = SearchFacets(
          stages: [row["stage"]], grades: [candidate.grade], subjects: [candidate.subject],
          types: [candidate.type],
          editions: (row["editions"] as Int) > 0 ? query.boosts.editions : [])
      }
      candidate.document.postings[row["token"]] = SearchIndex.Posting(
        positions: [
          SearchIndex.decode(row["title_pos"]), SearchIndex.decode(row["keywords_pos"]),
          SearchIndex.decode(row["description_pos"]),
        ])
      candidates[seq] = candidate
    }

    let (keys, counts) = Ranking.rank(
      candidates, query: query, stats: stats, frequencies: frequencies)
    let page = keys.dropFirst(offset).prefix(limit)
    var hits: [(resource: StoredResource, relevance: Double)] = []
    if !page.isEmpty {
      let seqs = page.map(\.sequence)
      let fetched = try db.cachedStatement(
        sql: "SELECT \(columns) FROM resources r WHERE r.seq IN (\(placeholders(seqs.count)))"
      ).decodeAll(arguments: StatementArguments(seqs), decode)
      let bySeq = Dictionary(fetched.map { ($0.seq, $0) }, uniquingKeysWith: { a, _ in a })
      hits = page.compactMap { key in bySeq[key.sequence].map { ($0, key.relevance) } }
    }
    let groups = counts.sorted { $0.key < $1.key }.map {
      (subject: $0.key.subject, grade: $0.key.grade, type: $0.key.type, count: $0.value)
    }
    return SearchPage(hits: hits, total: keys.count, groups: groups)
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
