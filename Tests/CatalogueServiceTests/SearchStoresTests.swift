import Foundation
import ServiceRuntime
import SmartSchoolModel
import TestSupport
import Testing

@testable import CatalogueService

/// The relevance corpus written the same way into a SQLite store and a PostgreSQL store: every
/// judged query (and a few with filters and paging) returns the same resources in the same
/// order, with the same relevance, totals and facet groups.
@Suite("Search on both stores", .enabled(if: TestStore.postgresServer != nil))
struct SearchStoresTests {
  static let school = OrgPath(ids: ["p", "c", "k", "s"])

  /// A corpus item as a school-shared resource of "author".
  static func resource(_ item: SearchCorpus.Item, id: String) -> Resource {
    var r = Resource()
    r.id = id
    r.title = item.title
    r.description_p = item.description
    r.keywords = item.keywords
    r.type = item.type
    r.stage = .of(grade: item.topic.grade)!
    r.grade = Int32(item.topic.grade)
    r.subject = item.topic.subject
    r.authorID = "author"
    r.authorName = "author"
    r.ownerOrgPath = school.description
    r.sharingScope = .school
    r.licence = "CC-BY"
    return r
  }

  /// Writes the corpus, then edits, deletes and uses a few resources, identically.
  static func fill(_ store: any CatalogueStore) async throws -> [String: Int64] {
    var seqs: [String: Int64] = [:]
    for (index, item) in SearchCorpus.items.enumerated() {
      var r = resource(item, id: "r-\(item.key)")
      let stored = try await store.insertResource(r, reach: school, topChapter: nil)
      seqs[item.key] = stored.seq
      if index % 7 == 3 {
        r.title += " 修订版"
        _ = try await store.updateResource(seq: stored.seq, r, reach: school, topChapter: nil)
      }
      if index % 11 == 5 {
        _ = try await store.recordUsage(
          seq: stored.seq,
          UsageEvent(
            kind: .rate, stars: 1 + index % 5, userID: "u", userPath: school.description,
            time: Date(timeIntervalSince1970: 1_700_000_000)))
      }
    }
    for item in SearchCorpus.items.enumerated().filter({ $0.offset % 13 == 6 }) {
      try await store.deleteResource(seq: seqs[item.element.key]!)
    }
    return seqs
  }

  struct Answer: Equatable, CustomStringConvertible {
    var ids: [String]
    var relevance: [Double]
    var total: Int
    var groups: [String]

    var description: String { "\(total) \(ids.prefix(8)) \(groups)" }
  }

  static func answer(
    _ store: any CatalogueStore, _ text: String, filter: ResolvedFilter = .init(),
    offset: Int = 0, limit: Int = 1000
  ) async throws -> Answer {
    let page = try await store.search(
      query: try SearchQuery.parse(text), filter: filter,
      viewer: Viewer(userID: "author", readScopes: [], reviewScopes: []), offset: offset,
      limit: limit)
    return Answer(
      ids: page.hits.map(\.resource.resource.id), relevance: page.hits.map(\.relevance),
      total: page.total, groups: page.groups.map { "\($0.subject)/\($0.grade)/\($0.type)=\($0.count)" })
  }

  @Test func everyQueryRanksTheSameOnSQLiteAndPostgreSQL() async throws {
    let sqliteDir = try TemporaryDirectory()
    let postgresDir = try TemporaryDirectory()
    defer {
      sqliteDir.remove()
      postgresDir.remove()
    }
    let sqlite = try SQLiteCatalogueStore(directory: sqliteDir.path)
    let postgres = try await openCatalogueStore(postgresDir)
    #expect(postgres is PostgresCatalogueStore)
    _ = try await Self.fill(sqlite)
    _ = try await Self.fill(postgres)
    // The same database read the other way: every query's driver postings joined against the
    // visible rows (hashed) instead of each resource looked up.
    let joined = PostgresCatalogueStore(
      store: (postgres as! PostgresCatalogueStore).store, lookupLimit: 0)
    var compared = 0
    var nonEmpty = 0
    for judged in SearchCorpus.queries {
      let a = try await Self.answer(sqlite, judged.query)
      let b = try await Self.answer(postgres, judged.query)
      #expect(a == b, "\(judged.query): SQLite \(a) PostgreSQL \(b)")
      let c = try await Self.answer(joined, judged.query)
      #expect(a == c, "\(judged.query): SQLite \(a) PostgreSQL joined \(c)")
      compared += 1
      if a.total > 0 { nonEmpty += 1 }
    }
    // Filters, facets, paging and the empty query.
    var math = ResolvedFilter()
    math.subject = Smartschool_Common_V1_Subject.mathematics.rawValue
    for (text, filter, offset) in [
      ("函数", math, 0), ("函数", ResolvedFilter(), 3), ("八年级 数学", ResolvedFilter(), 0),
      ("教案", ResolvedFilter(), 5), ("", math, 0), ("", ResolvedFilter(), 10),
    ] {
      let a = try await Self.answer(sqlite, text, filter: filter, offset: offset, limit: 7)
      let b = try await Self.answer(postgres, text, filter: filter, offset: offset, limit: 7)
      #expect(a == b, "'\(text)' at \(offset): SQLite \(a) PostgreSQL \(b)")
      let c = try await Self.answer(joined, text, filter: filter, offset: offset, limit: 7)
      #expect(a == c, "'\(text)' at \(offset): SQLite \(a) PostgreSQL joined \(c)")
      compared += 1
    }
    #expect(compared >= 46 && nonEmpty >= 40)
    await postgres.storage.close()
  }
}

/// A page of search results is the same slice of the full ranking however little of it is
/// asked for: the candidates a page leaves unscored (``Ranking/TopResults`` stops once no
/// remaining bound can reach the page) never belong on it. On the store `TestStore` chooses.
@Suite("Search pages")
struct SearchPageTests {
  @Test func everyPageIsASliceOfTheFullRanking() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try await openCatalogueStore(dir)
    _ = try await SearchStoresTests.fill(store)
    var sliced = 0
    for judged in SearchCorpus.queries {
      let full = try await SearchStoresTests.answer(store, judged.query)
      for (offset, limit) in [(0, 1), (0, 5), (2, 3), (5, 10)] {
        let page = try await SearchStoresTests.answer(
          store, judged.query, offset: offset, limit: limit)
        let end = min(full.ids.count, offset + limit)
        let start = min(offset, end)
        #expect(page.ids == Array(full.ids[start..<end]), "\(judged.query) \(offset)+\(limit)")
        #expect(page.relevance == Array(full.relevance[start..<end]), "\(judged.query)")
        #expect(page.total == full.total && page.groups == full.groups, "\(judged.query)")
        if end > start { sliced += 1 }
      }
    }
    #expect(sliced > 150)
    if let postgres = store as? PostgresCatalogueStore { await postgres.storage.close() }
  }
}

/// On SQLite a document's postings are read from its positions text (it is listed in
/// `search_recent_documents`) until a write moves every listed document's into a segment:
/// wherever a document's postings are, every query answers the same. The corpus is written
/// into three stores whose writes merge always (every posting in segments, merged by level),
/// every ninth document (some in each place), or never (every document listed).
@Suite("Search on SQLite, postings waiting or merged")
struct SearchRecentPostingsTests {
  @Test func everyQueryAnswersTheSameWhereverThePostingsAre() async throws {
    var dirs: [TemporaryDirectory] = []
    defer { for dir in dirs { dir.remove() } }
    var stores: [SQLiteCatalogueStore] = []
    var waiting: [Int] = []
    for limit in [1, 9, 1_000_000] {
      let dir = try TemporaryDirectory()
      dirs.append(dir)
      let store = try SQLiteCatalogueStore(directory: dir.path, recentLimit: limit)
      _ = try await SearchStoresTests.fill(store)
      stores.append(store)
      waiting.append(
        try await store.store.read { db in
          try Int.fetchOne(db, sql: "SELECT count(*) FROM search_recent_documents")!
        })
    }
    #expect(
      waiting[0] == 0 && (1..<9).contains(waiting[1]) && waiting[2] > 250, "\(waiting)")
    var math = ResolvedFilter()
    math.subject = Smartschool_Common_V1_Subject.mathematics.rawValue
    var asked: [(String, ResolvedFilter, Int, Int)] = SearchCorpus.queries.map {
      ($0.query, ResolvedFilter(), 0, 1000)
    }
    asked += [
      ("函数", math, 0, 7), ("函数", ResolvedFilter(), 3, 7), ("人教版 函数", ResolvedFilter(), 0, 50),
      ("北师大版", ResolvedFilter(), 0, 50), ("八年级 数学", ResolvedFilter(), 0, 7),
      ("教案", ResolvedFilter(), 5, 7), ("", math, 0, 7),
    ]
    var nonEmpty = 0
    for (text, filter, offset, limit) in asked {
      var answers: [SearchStoresTests.Answer] = []
      for store in stores {
        answers.append(
          try await SearchStoresTests.answer(
            store, text, filter: filter, offset: offset, limit: limit))
      }
      #expect(answers[1] == answers[0], "'\(text)': merged \(answers[0]), mixed \(answers[1])")
      #expect(answers[2] == answers[0], "'\(text)': merged \(answers[0]), waiting \(answers[2])")
      if answers[0].total > 0 { nonEmpty += 1 }
    }
    #expect(nonEmpty >= 40)
  }
}
