import Foundation
import NIOCore
import PostgresNIO
import ServiceRuntime

// The search index's SQL on PostgreSQL: the statements of SearchIndexStore.swift (SQLite) over
// the same tables, with a resource's rows written as one statement per table over arrays. The
// rows are scored in Swift by the same ``Ranking/Scorer`` whatever order they arrive in, so
// both stores return the same results in the same order. A search's matches come back as one
// packed bytea (fixed-size binary records): decoding a row costs postgres-nio far more than
// the query spends on it, and a common word matches thousands.
extension PostgresCatalogueStore {
  /// The name of an edition node, as the index reads it.
  static func editionName(_ tx: PostgresTransaction, code: String) async throws -> String? {
    try await tx.one("SELECT name FROM curriculum_nodes WHERE code = \(code)")?[0].decode(
      String.self)
  }

  /// A resource analysed for the index before its write transaction: the edition's name is
  /// read first, and ``indexResource(_:seq:_:fresh:)`` analyses again only if it changed meanwhile.
  func analyse(_ r: Resource) async throws -> AnalysedResource {
    var name: String? = nil
    if !r.editionCode.isEmpty {
      name = try await store.query(
        "SELECT name FROM curriculum_nodes WHERE code = \(r.editionCode)"
      ).first?[0].decode(String.self)
    }
    return AnalysedResource(resource: r, editionName: name)
  }

  /// Writes a resource's index rows (replacing any; `fresh`: a resource inserted in this
  /// transaction, which has none), in the caller's write transaction: the document, its
  /// postings and the statistics in one statement.
  static func indexResource(
    _ tx: PostgresTransaction, seq: Int64, _ analysed: AnalysedResource, fresh: Bool = false
  ) async throws {
    var analysed = analysed
    let r = analysed.resource
    let name = r.editionCode.isEmpty ? nil : try await editionName(tx, code: r.editionCode)
    if name != analysed.editionName {
      analysed = AnalysedResource(resource: r, editionName: name)
    }
    let old = fresh ? nil : try await removePostings(tx, seq: seq)
    let postings = analysed.postings
    let tokens = postings.map(\.key)
    let counts = postings.map { SearchIndex.counts($0.value) }
    let lengths = SearchIndex.packLengths(analysed.lengths)
    let positions = analysed.positions
    let before = old ?? Array(repeating: 0, count: SearchIndex.fieldCount)
    let fields = analysed.lengths
    let moved = zip(fields, before).map { $0 - $1 }
    try await tx.execute(
      """
      WITH document AS (
        INSERT INTO search_documents
          (resource_seq, title_len, keywords_len, description_len, positions)
        VALUES (\(seq), \(fields[0]), \(fields[1]), \(fields[2]), \(positions))),
      stats AS (
        \(unescaped: statsUpdate(documents: old == nil ? 1 : 0, lengths: moved)))
      INSERT INTO search_postings (token, resource_seq, counts, lengths)
      SELECT t, \(seq), c, \(lengths)
      FROM unnest(\(tokens)::text[], \(counts)::bigint[]) AS u(t, c)
      """)
  }

  /// Removes a resource's index rows, if any.
  static func unindexResource(_ tx: PostgresTransaction, seq: Int64) async throws {
    guard let old = try await removePostings(tx, seq: seq) else { return }
    try await updateStats(tx, documents: -1, lengths: old.map { -$0 })
  }

  /// Deletes a resource's index rows; its field lengths, `nil` when it had none.
  static func removePostings(_ tx: PostgresTransaction, seq: Int64) async throws -> [Int]? {
    guard
      let row = try await tx.one(
        """
        DELETE FROM search_documents WHERE resource_seq = \(seq)
        RETURNING title_len, keywords_len, description_len, positions
        """)
    else { return nil }
    // The document's tokens name its postings (by their key).
    let tokens = SearchIndex.positionTokens(try row["positions"].decode(String.self))
    try await tx.execute(
      "DELETE FROM search_postings WHERE token = ANY(\(tokens)) AND resource_seq = \(seq)")
    return [
      try row["title_len"].decode(Int.self), try row["keywords_len"].decode(Int.self),
      try row["description_len"].decode(Int.self),
    ]
  }

  /// Moves the statistics stripe of this connection (one a transaction, so two transactions
  /// never lock two stripes in opposite orders); a writer holds it until it commits, and
  /// concurrent writers on other connections move other stripes.
  static func updateStats(_ tx: PostgresTransaction, documents: Int, lengths: [Int]) async throws
  {
    try await tx.execute(
      PostgresQuery(unsafeSQL: statsUpdate(documents: documents, lengths: lengths)))
  }

  /// The UPDATE of ``updateStats(_:documents:lengths:)`` (integers only, so written inline).
  static func statsUpdate(documents: Int, lengths: [Int]) -> String {
    """
    UPDATE search_stats SET documents = documents + \(documents),
      title_len = title_len + \(lengths[0]), keywords_len = keywords_len + \(lengths[1]),
      description_len = description_len + \(lengths[2])
    WHERE id = pg_backend_pid() % \(SearchIndex.statsStripes) + 1
    """
  }

  /// One page of results for a query with words, among the resources `viewer` sees that
  /// `filter` and the query's facets select.
  static func searchText(
    _ tx: PostgresTransaction, query: SearchQuery, filter: ResolvedFilter, viewer: Viewer,
    offset: Int, limit: Int, lookupLimit: Int
  ) async throws -> SearchPage {
    // The statistics and the document frequencies in one round trip.
    let queryTokens = query.tokens
    var stats = SearchIndex.Stats()
    var frequencies: [String: Int] = [:]
    if let row = try await tx.one(
      """
      SELECT s.*,
        ARRAY(SELECT (SELECT count(*) FROM search_postings p WHERE p.token = u.t)
          FROM unnest(\(queryTokens)::text[]) WITH ORDINALITY AS u(t, o) ORDER BY u.o)
      FROM (\(unescaped: SearchIndex.statsTotals)) AS s
      """)
    {
      stats.documents = try row[0].decode(Int.self)
      stats.lengths = [
        try row[1].decode(Int.self), try row[2].decode(Int.self), try row[3].decode(Int.self),
      ]
      for (token, n) in zip(queryTokens, try row[4].decode([Int].self)) where n > 0 {
        frequencies[token] = n
      }
    }
    let scorer = Ranking.Scorer(query: query, stats: stats, frequencies: frequencies)
    let tokens = scorer.tokens
    let candidates = try await candidates(
      tx, scorer: scorer, frequencies: tokens.map { frequencies[$0] ?? 0 }, filter: filter,
      viewer: viewer, lookupLimit: lookupLimit)

    var top = Ranking.TopResults(candidates, scorer: scorer, need: offset + limit)
    let pairIndex = Dictionary(uniqueKeysWithValues: top.pairTokens.map { (tokens[$0], $0) })
    while let batch = top.nextBatch() {
      var positions: [Int64: [Int: SearchIndex.Posting]] = [:]
      for row in try await tx.query(
        """
        SELECT resource_seq, positions FROM search_documents WHERE resource_seq = ANY(\(batch))
        """)
      {
        positions[try row["resource_seq"].decode(Int64.self)] = SearchIndex.decodePositions(
          try row["positions"].decode(String.self), wanted: pairIndex)
      }
      top.refine(positions)
    }

    let page = top.keys.dropFirst(offset)
    var hits: [(resource: StoredResource, relevance: Double)] = []
    if !page.isEmpty {
      let seqs = page.map(\.sequence)
      let fetched = try await tx.query(
        "SELECT \(unescaped: columns) FROM resources r WHERE r.seq = ANY(\(seqs))"
      ).map(decode)
      let bySeq = Dictionary(fetched.map { ($0.seq, $0) }, uniquingKeysWith: { a, _ in a })
      hits = page.compactMap { key in bySeq[key.sequence].map { ($0, key.relevance) } }
    }
    return SearchPage(hits: hits, total: top.total, groups: top.groups)
  }

  /// Every visible match's counts, field lengths, facets and popularity (in no order).
  ///
  /// The statement starts from the postings of the query's driver tokens
  /// (``Ranking/Scorer/drivers(frequencies:)``): every match has one of them, and they are
  /// the fewest postings that say so. Up to `lookupLimit` of them, each resource they name is
  /// looked up by seq (resources_search, index-only) in a LATERAL subquery behind OFFSET 0,
  /// which the planner cannot flatten into a hash join against every visible resource; above
  /// it, they are joined with the visible set read as disjoint arms (``visibleArms``: the
  /// published ones one index-only range scan of resources_visible each, hashed). The
  /// resource's postings of the other tokens are then looked up for the matches alone.
  /// Candidates come back as one packed bytea of variable-size records (see the decoding).
  static func candidates(
    _ tx: PostgresTransaction, scorer: Ranking.Scorer, frequencies: [Int],
    filter: ResolvedFilter, viewer: Viewer, lookupLimit: Int
  ) async throws -> [Ranking.SearchCandidate] {
    let tokens = scorer.tokens
    let drivers = scorer.drivers(frequencies: frequencies)
    let driverPostings = drivers.reduce(0) { $0 + frequencies[$1] }
    if driverPostings == 0 { return [] }
    let others = tokens.indices.filter { !drivers.contains($0) }
    var q = Conditions()
    add(filter, to: &q)
    add(scorer.query.filters, to: &q)
    let columns = "r.stage, r.grade, r.subject, r.type, r.popularity"
    let rows: String
    if driverPostings > lookupLimit {
      let filterSQL = q.sql
      let arms = visibleArms(viewer, binding: &q)
      if arms.isEmpty { return [] }
      rows =
        "JOIN ("
        + arms.map { "SELECT r.seq, \(columns) FROM resources r WHERE \(filterSQL) AND \($0)" }
        .joined(separator: " UNION ALL ") + ") AS r ON r.seq = d.seq"
    } else {
      add(viewer, to: &q)
      rows = """
        CROSS JOIN LATERAL (
          SELECT \(columns) FROM resources r WHERE r.seq = d.seq AND \(q.sql) OFFSET 0) AS r
        """
    }
    let placeholders = tokens.map { q.bind($0) }
    // A posting as its token's index in `tokens` and its counts.
    func posting(_ alias: String) -> String {
      "int4send(CASE \(alias).token "
        + tokens.indices.map { "WHEN \(placeholders[$0]) THEN \($0) " }.joined()
        + "END) || int8send(\(alias).counts)"
    }
    let driving =
      drivers.count == 1
      ? """
      SELECT p.resource_seq AS seq, p.lengths, 1 AS n, \(posting("p")) AS postings
      FROM search_postings p WHERE p.token = \(placeholders[drivers[0]])
      """
      : """
      SELECT p.resource_seq AS seq, min(p.lengths) AS lengths, count(*)::int AS n,
        string_agg(\(posting("p")), ''::bytea) AS postings
      FROM search_postings p WHERE p.token = ANY(\(q.bind(drivers.map { tokens[$0] })))
      GROUP BY p.resource_seq
      """
    let editions = scorer.query.boosts.editions.sorted().map(SearchIndex.editionToken)
    let edition =
      editions.isEmpty
      ? "0"
      : """
      (SELECT count(*) FROM search_postings e
        WHERE e.resource_seq = d.seq AND e.token = ANY(\(q.bind(editions))))::int
      """
    var other = ""
    if !others.isEmpty {
      other = """
        CROSS JOIN LATERAL (
          SELECT count(*)::int AS n,
            coalesce(string_agg(\(posting("o")), ''::bytea), ''::bytea) AS postings
          FROM search_postings o
          WHERE o.token = ANY(\(q.bind(others.map { tokens[$0] }))) AND o.resource_seq = d.seq
        ) AS o
        """
    }
    let sql = """
      SELECT string_agg(int8send(d.seq) || int8send(d.lengths) || int4send(r.stage)
          || int4send(r.grade) || int4send(r.subject) || int4send(r.type)
          || float8send(r.popularity) || int4send(\(edition))
          || int4send(d.n\(others.isEmpty ? "" : " + o.n")) || d.postings
          \(others.isEmpty ? "" : "|| o.postings"), ''::bytea)
      FROM (\(driving)) AS d
      \(rows)
      \(other)
      """
    // Per candidate: seq, lengths, stage, grade, subject, type, popularity, has a boosted
    // edition, n; then n postings of (token index, counts).
    let header = 8 + 8 + 4 * 4 + 8 + 4 + 4
    var candidates: [Ranking.SearchCandidate] = []
    guard let row = try await tx.one(q.query(sql)),
      var packed = try row[0].decode(ByteBuffer?.self)
    else { return [] }
    func int32(_ b: inout ByteBuffer) -> Int { Int(b.readInteger(as: Int32.self)!) }
    while packed.readableBytes >= header {
      let seq = packed.readInteger(as: Int64.self)!
      let lengths = packed.readInteger(as: Int64.self)!
      var candidate = Ranking.SearchCandidate(
        sequence: seq, counts: Array(repeating: -1, count: tokens.count), lengths: lengths,
        stage: int32(&packed), grade: int32(&packed), subject: int32(&packed),
        type: int32(&packed), hasEdition: false,
        popularity: Double(bitPattern: packed.readInteger(as: UInt64.self)!))
      candidate.hasEdition = int32(&packed) > 0
      for _ in 0..<int32(&packed) {
        let token = int32(&packed)
        candidate.counts[token] = packed.readInteger(as: Int64.self)!
      }
      candidates.append(candidate)
    }
    return candidates
  }
}
