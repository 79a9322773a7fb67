import Foundation
import PostgresNIO
import ServiceRuntime

// The search index's SQL on PostgreSQL: the statements of SearchIndexStore.swift (SQLite) over
// the same tables, with a resource's postings written as one statement over arrays. The rows
// are scored in Swift by the same ``Ranking/relevance(query:document:stats:frequencies:facets:)``
// whatever order they arrive in, so both stores return the same results in the same order.
extension PostgresCatalogueStore {
  /// Writes a resource's index rows (replacing any), in the caller's write transaction.
  static func indexResource(
    _ tx: PostgresTransaction, seq: Int64, title: String, keywords: [String],
    description: String, editionCode: String?
  ) async throws {
    let old = try await removePostings(tx, seq: seq)
    var editionName: String? = nil
    if let editionCode, !editionCode.isEmpty {
      editionName = try await tx.one(
        "SELECT name FROM curriculum_nodes WHERE code = \(editionCode)"
      )?[0].decode(String.self)
    }
    let doc = SearchIndex.document(
      title: title, keywords: keywords, description: description, editionName: editionName)
    try await tx.execute(
      """
      INSERT INTO search_documents (resource_seq, title_len, keywords_len, description_len)
      VALUES (\(seq), \(doc.lengths[0]), \(doc.lengths[1]), \(doc.lengths[2]))
      """)
    let postings = doc.postings.sorted(by: { $0.key < $1.key })
    if !postings.isEmpty {
      let tokens = postings.map(\.key)
      let titles = postings.map { SearchIndex.encode($0.value.positions[0]) }
      let keywords = postings.map { SearchIndex.encode($0.value.positions[1]) }
      let descriptions = postings.map { SearchIndex.encode($0.value.positions[2]) }
      try await tx.execute(
        """
        INSERT INTO search_postings
          (token, resource_seq, title_pos, keywords_pos, description_pos)
        SELECT t, \(seq), a, b, c
        FROM unnest(\(tokens)::text[], \(titles)::text[], \(keywords)::text[],
          \(descriptions)::text[]) AS u(t, a, b, c)
        """)
    }
    let before = old ?? Array(repeating: 0, count: SearchIndex.fieldCount)
    try await updateStats(
      tx, documents: old == nil ? 1 : 0, lengths: zip(doc.lengths, before).map { $0 - $1 })
  }

  /// Removes a resource's index rows, if any.
  static func unindexResource(_ tx: PostgresTransaction, seq: Int64) async throws {
    guard let old = try await removePostings(tx, seq: seq) else { return }
    try await updateStats(tx, documents: -1, lengths: old.map { -$0 })
  }

  /// Deletes a resource's postings and document row; its field lengths, `nil` when it had none.
  static func removePostings(_ tx: PostgresTransaction, seq: Int64) async throws -> [Int]? {
    guard
      let row = try await tx.one(
        """
        DELETE FROM search_documents WHERE resource_seq = \(seq)
        RETURNING title_len, keywords_len, description_len
        """)
    else { return nil }
    try await tx.execute("DELETE FROM search_postings WHERE resource_seq = \(seq)")
    return [
      try row["title_len"].decode(Int.self), try row["keywords_len"].decode(Int.self),
      try row["description_len"].decode(Int.self),
    ]
  }

  /// Moves the single statistics row; writers queue on its lock until they commit, so it is
  /// the last statement of an indexing write.
  static func updateStats(_ tx: PostgresTransaction, documents: Int, lengths: [Int]) async throws
  {
    try await tx.execute(
      """
      UPDATE search_stats SET documents = documents + \(documents),
        title_len = title_len + \(lengths[0]), keywords_len = keywords_len + \(lengths[1]),
        description_len = description_len + \(lengths[2])
      WHERE id = 1
      """)
  }

  /// One page of results for a query with words, within conditions `c` on `resources r`.
  static func searchText(
    _ tx: PostgresTransaction, query: SearchQuery, conditions c: Conditions, offset: Int,
    limit: Int
  ) async throws -> SearchPage {
    let tokens = query.tokens
    var stats = SearchIndex.Stats()
    if let row = try await tx.one(
      "SELECT documents, title_len, keywords_len, description_len FROM search_stats WHERE id = 1")
    {
      stats.documents = try row["documents"].decode(Int.self)
      stats.lengths = [
        try row["title_len"].decode(Int.self), try row["keywords_len"].decode(Int.self),
        try row["description_len"].decode(Int.self),
      ]
    }
    var frequencies: [String: Int] = [:]
    for row in try await tx.query(
      """
      SELECT token, count(*) AS n FROM search_postings WHERE token = ANY(\(tokens))
      GROUP BY token
      """)
    {
      frequencies[try row["token"].decode(String.self)] = try row["n"].decode(Int.self)
    }

    var q = c
    let editions = query.boosts.editions.sorted().map(SearchIndex.editionToken)
    let editionColumn =
      editions.isEmpty
      ? "0"
      : """
      (SELECT count(*) FROM search_postings e
        WHERE e.resource_seq = p.resource_seq AND e.token = ANY(\(q.bind(editions))))
      """
    let sql = """
      SELECT p.resource_seq AS seq, p.token, p.title_pos, p.keywords_pos, p.description_pos,
        d.title_len, d.keywords_len, d.description_len, r.stage, r.grade, r.subject, r.type,
        r.popularity, \(editionColumn) AS editions
      FROM search_postings p JOIN search_documents d ON d.resource_seq = p.resource_seq
        JOIN resources r ON r.seq = p.resource_seq
      WHERE p.token = ANY(\(q.bind(tokens))) AND \(c.sql)
      """
    var candidates: [Int64: Ranking.SearchCandidate] = [:]
    for row in try await tx.query(q.query(sql)) {
      let seq = try row["seq"].decode(Int64.self)
      var candidate = candidates[seq] ?? Ranking.SearchCandidate()
      if candidate.document.postings.isEmpty {
        candidate.document.lengths = [
          try row["title_len"].decode(Int.self), try row["keywords_len"].decode(Int.self),
          try row["description_len"].decode(Int.self),
        ]
        candidate.subject = try row["subject"].decode(Int.self)
        candidate.grade = try row["grade"].decode(Int.self)
        candidate.type = try row["type"].decode(Int.self)
        candidate.popularity = try row["popularity"].decode(Double.self)
        candidate.facets = SearchFacets(
          stages: [try row["stage"].decode(Int.self)], grades: [candidate.grade],
          subjects: [candidate.subject], types: [candidate.type],
          editions: try row["editions"].decode(Int.self) > 0 ? query.boosts.editions : [])
      }
      candidate.document.postings[try row["token"].decode(String.self)] = SearchIndex.Posting(
        positions: [
          SearchIndex.decode(try row["title_pos"].decode(String.self)),
          SearchIndex.decode(try row["keywords_pos"].decode(String.self)),
          SearchIndex.decode(try row["description_pos"].decode(String.self)),
        ])
      candidates[seq] = candidate
    }

    let (keys, counts) = Ranking.rank(
      candidates, query: query, stats: stats, frequencies: frequencies)
    let page = keys.dropFirst(offset).prefix(limit)
    var hits: [(resource: StoredResource, relevance: Double)] = []
    if !page.isEmpty {
      let seqs = page.map(\.sequence)
      let fetched = try await tx.query(
        "SELECT \(unescaped: columns) FROM resources r WHERE r.seq = ANY(\(seqs))"
      ).map(decode)
      let bySeq = Dictionary(fetched.map { ($0.seq, $0) }, uniquingKeysWith: { a, _ in a })
      hits = page.compactMap { key in bySeq[key.sequence].map { ($0, key.relevance) } }
    }
    let groups = counts.sorted { $0.key < $1.key }.map {
      (subject: $0.key.subject, grade: $0.key.grade, type: $0.key.type, count: $0.value)
    }
    return SearchPage(hits: hits, total: keys.count, groups: groups)
  }
}
