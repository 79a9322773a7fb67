@testable import CatalogueService
import Foundation
import GRDB
import ServiceRuntime
import SmartSchoolModel
import TestSupport
import Testing

@Suite("Search index maintenance")
struct SearchIndexTests {
  static let viewer = Viewer(userID: "u1", readScopes: [], reviewScopes: [])

  func titles(_ store: SQLiteCatalogueStore, _ text: String) async throws -> [String] {
    try await store.search(
      query: SearchQuery.parse(text), filter: ResolvedFilter(), viewer: Self.viewer, offset: 0,
      limit: 100
    ).hits.map(\.resource.resource.title)
  }

  func postings(_ store: SQLiteCatalogueStore) async throws -> (Int, Int, Int) {
    try await store.store.read { db in
      (
        try SQLiteCatalogueStore.mergedPostings(db).count
          + String.fetchAll(
            db,
            sql: """
              SELECT s.positions FROM search_recent_documents d
              JOIN search_documents s ON s.resource_seq = d.resource_seq
              """
          ).reduce(0) { $0 + SearchIndex.decodeCounts($1).count },
        try Int.fetchOne(db, sql: "SELECT count(*) FROM search_documents")!,
        try Int.fetchOne(db, sql: SearchIndex.statsTotals)!
      )
    }
  }

  /// The statistics row equals the sums over the document rows.
  func statsMatchDocuments(_ store: SQLiteCatalogueStore) async throws -> Bool {
    try await store.store.read { db in
      let sums = try Row.fetchOne(
        db,
        sql: """
          SELECT count(*) AS n, coalesce(sum(title_len), 0) AS t,
            coalesce(sum(keywords_len), 0) AS k, coalesce(sum(description_len), 0) AS d
          FROM search_documents
          """)!
      let stats = try Row.fetchOne(db, sql: SearchIndex.statsTotals)!
      return (sums["n"] as Int) == stats[0] && (sums["t"] as Int) == stats[1]
        && (sums["k"] as Int) == stats[2] && (sums["d"] as Int) == stats[3]
    }
  }

  /// The migration that adds the index builds it from the resources already stored.
  @Test func migrationIndexesExistingResources() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    do {
      let queue = try DatabaseQueue(path: dir.path + "/catalogue.sqlite")
      var migrator = DatabaseMigrator()
      CatalogueMigrations.register(&migrator)
      try migrator.migrate(queue, upTo: "catalogue.2.short-word-index")
      try await queue.write { db in
        for (i, title, deleted) in [
          (1, "勾股定理的证明", false), (2, "圆的面积", false), (3, "勾股定理习题", true),
        ] {
          try db.execute(
            sql: """
              INSERT INTO resources (id, title, description, keywords, type, stage, grade,
                subject, knowledge_points, author_id, author_name, owner_org_id, owner_org_code,
                owner_path, reach_path, sharing_scope, licence, status, created_at, updated_at,
                deleted_at)
              VALUES (?, ?, '', '', 1, 2, 8, 2, '', 'u1', 'u1', 'o', 'S', '/p/s/', '/p/s/', 1, '',
                1, 0, 0, ?)
              """, arguments: ["r\(i)", title, deleted ? 1.0 : nil])
        }
      }
      try queue.close()
    }
    let store = try SQLiteCatalogueStore(directory: dir.path)
    #expect(try await titles(store, "勾股定理证明") == ["勾股定理的证明"])
    #expect(try await titles(store, "圆") == ["圆的面积"])
    let (_, documents, stats) = try await postings(store)
    #expect(documents == 2 && stats == 2)
    #expect(try await statsMatchDocuments(store))
  }

  /// Create, update and delete keep the index and its statistics in step, in their own
  /// transaction: with the postings merged at every write, and waiting in `search_recent`.
  @Test(arguments: [1, SQLiteCatalogueStore.defaultRecentLimit])
  func everyWriteMaintainsTheIndex(recentLimit: Int) async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try SQLiteCatalogueStore(directory: dir.path, recentLimit: recentLimit)
    func resource(_ id: String, _ title: String, keywords: [String] = []) -> Resource {
      .with {
        $0.id = id
        $0.title = title
        $0.keywords = keywords
        $0.description_p = "课堂演示"
        $0.type = .courseware
        $0.stage = .junior
        $0.grade = 8
        $0.subject = .mathematics
        $0.authorID = "u1"
        $0.authorName = "u1"
        $0.ownerOrgID = "o"
        $0.ownerOrgCode = "S"
        $0.ownerOrgPath = "/p/s/"
        $0.sharingScope = .school
      }
    }
    let reach = OrgPath(ids: ["p", "s"])
    let a = try await store.insertResource(resource("a", "光合作用"), reach: reach, topChapter: nil)
    _ = try await store.insertResource(resource("b", "呼吸作用"), reach: reach, topChapter: nil)
    #expect(try await titles(store, "光合作用") == ["光合作用"])
    #expect(try await postings(store).1 == 2)
    _ = try await store.updateResource(
      seq: a.seq, resource("a", "蒸腾作用", keywords: ["植物"]), reach: reach, topChapter: nil)
    #expect(try await titles(store, "光合作用").isEmpty)
    #expect(try await titles(store, "蒸腾") == ["蒸腾作用"])
    #expect(try await titles(store, "植物") == ["蒸腾作用"])
    #expect(try await statsMatchDocuments(store))
    let before = try await postings(store)
    try await store.deleteResource(seq: a.seq)
    #expect(try await titles(store, "蒸腾作用").isEmpty)
    let after = try await postings(store)
    #expect(after.1 == 1 && after.2 == 1 && after.0 < before.0)
    #expect(try await statsMatchDocuments(store))
    // What remains is exactly the other resource's analysis.
    let doc = SearchIndex.document(
      title: "呼吸作用", keywords: [], description: "课堂演示", editionName: nil)
    #expect(after.0 == doc.postings.count)
  }

  /// Merged postings are kept in segments merged by level (SearchSegments.swift): after
  /// hundreds of small merges among edits and deletes of merged documents, the index equals a
  /// recomputation, every merged document is in exactly one segment, every blob is in
  /// sequence order, no level keeps a full fanout, and searches answer as on a store that
  /// never merged.
  @Test func segmentsMergeByLevelAndLoseNothing() async throws {
    let dirs = [try TemporaryDirectory(), try TemporaryDirectory()]
    defer { for dir in dirs { dir.remove() } }
    let store = try SQLiteCatalogueStore(directory: dirs[0].path, recentLimit: 2)
    let unmerged = try SQLiteCatalogueStore(directory: dirs[1].path, recentLimit: 1_000_000)
    let school = SearchIndexWriteTests.school
    var live: [Int64: Resource] = [:]
    var rng = SeededGenerator(seed: 27)
    for i in 0..<240 {
      let r = SearchIndexWriteTests.resource(i)
      let seq = try await store.insertResource(r, reach: school, topChapter: nil).seq
      #expect(try await unmerged.insertResource(r, reach: school, topChapter: nil).seq == seq)
      live[seq] = r
      if i % 5 == 4 {
        // An edit or a delete of a document merged earlier, in whatever segment it is.
        let target = live.keys.sorted()[Int.random(in: 0..<live.count / 2, using: &rng)]
        if Bool.random(using: &rng) {
          let edited = SearchIndexWriteTests.resource(i + 1000 + Int(target))
          for s in [store, unmerged] {
            _ = try await s.updateResource(seq: target, edited, reach: school, topChapter: nil)
          }
          live[target] = edited
        } else {
          for s in [store, unmerged] { try await s.deleteResource(seq: target) }
          live[target] = nil
        }
      }
    }
    let index = try await SearchIndexWriteTests.stored(store)
    #expect(index == SearchIndexWriteTests.recomputed(live.map { ($0.key, $0.value) }))
    let (levels, owners, sorted) = try await store.store.read { db in
      let levels = try Row.fetchAll(
        db, sql: "SELECT level, count(*) FROM search_segment_levels GROUP BY level"
      ).map { ($0[0] as Int, $0[1] as Int) }
      var owners: [Int64: Set<Int64>] = [:]
      var sorted = true
      for row in try Row.fetchAll(db, sql: "SELECT segment, postings FROM search_segments") {
        let seqs = SQLiteCatalogueStore.entries(row[1]).map(\.seq)
        sorted = sorted && zip(seqs, seqs.dropFirst()).allSatisfy { $0 < $1 }
        for seq in seqs { owners[seq, default: []].insert(row[0]) }
      }
      return (levels, owners, sorted)
    }
    #expect(sorted)
    #expect(levels.contains { $0.0 >= 2 }, "\(levels)")
    #expect(levels.allSatisfy { $0.1 < SQLiteCatalogueStore.segmentFanout }, "\(levels)")
    #expect(owners.values.allSatisfy { $0.count == 1 })
    for text in SearchCorpus.queries.map(\.query) + ["函数", "光合作用 教案", "八年级 数学"] {
      let merged = try await SearchStoresTests.answer(store, text)
      #expect(merged == (try await SearchStoresTests.answer(unmerged, text)), "'\(text)'")
    }
  }
}
