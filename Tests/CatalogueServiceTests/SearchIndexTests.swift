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
        try Int.fetchOne(db, sql: "SELECT count(*) FROM search_postings")!
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
}
