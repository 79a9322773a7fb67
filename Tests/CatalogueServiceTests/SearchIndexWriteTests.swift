import Foundation
import GRDB
import Logging
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel
import TestSupport
import Testing

@testable import CatalogueService

/// The search index as stored equals the analysis of the live resources, after writes that
/// race each other: creates at once (committed together on SQLite), edits and deletes among
/// them, and a create that fails (a taken external id) in the middle of the others. On the
/// store `TestStore` chooses.
@Suite("Search index under concurrent writes")
struct SearchIndexWriteTests {
  static let school = SearchStoresTests.school

  static func resource(_ i: Int, externalID: String = "") -> Resource {
    var r = SearchStoresTests.resource(
      SearchCorpus.items[i % SearchCorpus.items.count], id: "w-\(i)")
    r.externalID = externalID
    return r
  }

  /// What the index holds: postings as "token seq counts lengths", documents as "seq lengths
  /// positions", and the statistics row.
  struct Index: Equatable {
    var postings: Set<String> = []
    var documents: Set<String> = []
    var stats: [Int] = []
  }

  /// The index as stored (on SQLite, the rows of search_postings, the entries of the segments
  /// and the postings of the recent documents' texts: a document's are in one place, so a
  /// posting in two would show as one here and fail the size check).
  static func stored(_ store: any CatalogueStore) async throws -> Index {
    let postings = "SELECT token, resource_seq, counts, lengths FROM search_postings"
    let recent = """
      SELECT s.resource_seq, s.title_len, s.keywords_len, s.description_len, s.positions
      FROM search_recent_documents d JOIN search_documents s ON s.resource_seq = d.resource_seq
      """
    let documents = """
      SELECT resource_seq, title_len, keywords_len, description_len, positions
      FROM search_documents
      """
    let stats = SearchIndex.statsTotals
    var index = Index()
    if let sqlite = store as? SQLiteCatalogueStore {
      return try await sqlite.store.read { db in
        var index = Index()
        var rows = 0
        for p in try SQLiteCatalogueStore.mergedPostings(db) {
          index.postings.insert("\(p.token) \(p.seq) \(p.counts) \(p.lengths)")
          rows += 1
        }
        for row in try Row.fetchAll(db, sql: recent) {
          let lengths = SearchIndex.packLengths([row[1], row[2], row[3]])
          for posting in SearchIndex.decodeCounts(row[4]) {
            index.postings.insert(
              "\(posting.token) \(row[0] as Int64) \(posting.counts) \(lengths)")
            rows += 1
          }
        }
        #expect(rows == index.postings.count, "a posting stored twice")
        for row in try Row.fetchAll(db, sql: documents) {
          index.documents.insert(
            "\(row[0] as Int64) \(row[1] as Int) \(row[2] as Int) \(row[3] as Int) "
              + (row[4] as String))
        }
        let s = try Row.fetchOne(db, sql: stats)!
        index.stats = [s[0], s[1], s[2], s[3]]
        return index
      }
    }
    let postgres = try #require(store as? PostgresCatalogueStore)
    for row in try await postgres.store.query(PostgresQuery(unsafeSQL: postings)) {
      index.postings.insert(
        "\(try row[0].decode(String.self)) \(try row[1].decode(Int64.self)) "
          + "\(try row[2].decode(Int64.self)) \(try row[3].decode(Int64.self))")
    }
    for row in try await postgres.store.query(PostgresQuery(unsafeSQL: documents)) {
      index.documents.insert(
        "\(try row[0].decode(Int64.self)) \(try row[1].decode(Int.self)) "
          + "\(try row[2].decode(Int.self)) \(try row[3].decode(Int.self)) "
          + (try row[4].decode(String.self)))
    }
    let s = try #require(try await postgres.store.query(PostgresQuery(unsafeSQL: stats)).first)
    index.stats = try (0..<4).map { try s[$0].decode(Int.self) }
    return index
  }

  /// The foreign keys `search_postings` carries.
  static func postingsForeignKeys(_ store: any CatalogueStore) async throws -> Int {
    if let sqlite = store as? SQLiteCatalogueStore {
      return try await sqlite.store.read { db in
        try Row.fetchAll(db, sql: "PRAGMA foreign_key_list(search_postings)").count
      }
    }
    let postgres = try #require(store as? PostgresCatalogueStore)
    let sql = """
      SELECT count(*)::int FROM pg_constraint
      WHERE conrelid = 'search_postings'::regclass AND contype = 'f'
      """
    let row = try #require(try await postgres.store.query(PostgresQuery(unsafeSQL: sql)).first)
    return try row[0].decode(Int.self)
  }

  /// The index recomputed from the live resources.
  static func recomputed(_ live: [(seq: Int64, resource: Resource)]) -> Index {
    var index = Index()
    var stats = [0, 0, 0, 0]
    for (seq, r) in live {
      let doc = SearchIndex.document(
        title: r.title, keywords: r.keywords, description: r.description_p, editionName: nil)
      let lengths = SearchIndex.packLengths(doc.lengths)
      let postings = doc.postings.sorted(by: { $0.key < $1.key })
      for (token, posting) in postings {
        index.postings.insert("\(token) \(seq) \(SearchIndex.counts(posting)) \(lengths)")
      }
      index.documents.insert(
        "\(seq) \(doc.lengths[0]) \(doc.lengths[1]) \(doc.lengths[2]) "
          + SearchIndex.encodePositions(postings))
      stats[0] += 1
      for f in 0..<3 { stats[f + 1] += doc.lengths[f] }
    }
    index.stats = stats
    return index
  }

  /// Runs `operations` eight at a time (a PostgreSQL pool has few connections), each wave's
  /// racing each other; what they return.
  static func race<T: Sendable>(_ operations: [@Sendable () async throws -> T]) async throws
    -> [T]
  {
    var results: [T] = []
    for start in stride(from: 0, to: operations.count, by: 8) {
      let wave = operations[start..<min(start + 8, operations.count)]
      results += try await withThrowingTaskGroup(of: T.self) { group in
        for operation in wave { group.addTask { try await operation() } }
        var made: [T] = []
        for try await item in group { made.append(item) }
        return made
      }
    }
    return results
  }

  @Test func theIndexEqualsARecomputationAfterRacingWrites() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    // On SQLite, every seventh document written moves the recent postings into the main table,
    // so the racing creates, edits and deletes meet documents on both sides of a merge.
    let store = try await openCatalogueStore(dir, recentLimit: 7)
    var rng = SystemRandomNumberGenerator()
    // Round 1: 40 creates, two of them (racing each other) with the same external id.
    let creates = (0..<40).map { i -> @Sendable () async throws -> (Int, StoredResource?) in
      let r = Self.resource(i, externalID: i == 3 || i == 5 ? "same-key" : "")
      return {
        do {
          return (i, try await store.insertResource(r, reach: Self.school, topChapter: nil))
        } catch let error as ServiceError {
          guard case .alreadyExists = error else { throw error }
          return (i, nil)
        }
      }
    }
    var created: [Int: StoredResource] = [:]
    var refused: [Int] = []
    for (i, stored) in try await Self.race(creates) {
      if let stored { created[i] = stored } else { refused.append(i) }
    }
    #expect(refused.count == 1 && [3, 5].contains(refused.first ?? -1), "\(refused)")
    #expect(created.count == 39)
    var live: [Int64: Resource] = [:]
    for (i, stored) in created {
      live[stored.seq] = Self.resource(i, externalID: stored.resource.externalID)
    }
    #expect(try await Self.stored(store) == Self.recomputed(live.map { ($0.key, $0.value) }))

    // Round 2: creates, edits (another corpus item's text) and deletes racing each other.
    let seqs = live.keys.sorted()
    var edits: [(Int64, Resource)] = []
    var deletes: [Int64] = []
    for seq in seqs {
      switch Int.random(in: 0..<3, using: &rng) {
      case 0:
        var r = Self.resource(Int.random(in: 0..<SearchCorpus.items.count, using: &rng))
        r.id = live[seq]!.id
        edits.append((seq, r))
      case 1: deletes.append(seq)
      default: break
      }
    }
    var writes: [@Sendable () async throws -> (Int64, Resource)?] = []
    for i in 40..<70 {
      writes.append {
        let r = Self.resource(i)
        return (try await store.insertResource(r, reach: Self.school, topChapter: nil).seq, r)
      }
    }
    for (seq, r) in edits {
      writes.append {
        _ = try await store.updateResource(seq: seq, r, reach: Self.school, topChapter: nil)
        return nil
      }
    }
    for seq in deletes {
      writes.append {
        try await store.deleteResource(seq: seq)
        return nil
      }
    }
    writes.shuffle(using: &rng)
    let more = try await Self.race(writes).compactMap { $0 }
    for (seq, r) in edits { live[seq] = r }
    for seq in deletes { live[seq] = nil }
    for (seq, r) in more { live[seq] = r }
    #expect(more.count == 30 && !deletes.isEmpty && !edits.isEmpty)
    let index = try await Self.stored(store)
    #expect(index == Self.recomputed(live.map { ($0.key, $0.value) }))
    #expect(index.stats[0] == live.count && index.postings.count > 10 * live.count)
    if let sqlite = store as? SQLiteCatalogueStore {
      // Merges ran (the segments hold most documents), and the recent documents listed
      // (whose count decides the next merge, and whose texts a search reads) are exactly those
      // without merged postings.
      let (merged, listed) = try await sqlite.store.read { db in
        (
          Array(Set(try SQLiteCatalogueStore.mergedPostings(db).map(\.seq))),
          try Int64.fetchAll(db, sql: "SELECT resource_seq FROM search_recent_documents")
        )
      }
      #expect(merged.count + listed.count == live.count, "\(merged.count) merged, \(listed)")
      #expect(Set(merged).isDisjoint(with: listed) && listed.count < 7, "\(listed) listed")
    }
    if let postgres = store as? PostgresCatalogueStore {
      // Writers on several connections moved several statistics stripes (one row would make
      // every create wait for the commit of the one before).
      let moved = try #require(
        try await postgres.store.query("SELECT count(*) FROM search_stats WHERE documents <> 0")
          .first)
      #expect(try moved[0].decode(Int.self) > 1)
      await postgres.storage.close()
    }
  }

  /// A store indexed with a row per token in search_positions (migrations up to catalogue.5)
  /// is converted by catalogue.6: the documents' positions, postings and statistics equal a
  /// recomputation, and a phrase query still ranks by proximity.
  @Test func positionsStoredPerTokenAreConvertedByTheMigration() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    // Resources 1…12 (seq given by the store in insertion order, on a new store).
    let items = (0..<12).map { Self.resource($0) }
    var statements: [String] = []
    var stats = [0, 0, 0, 0]
    func quoted(_ text: String) -> String {
      "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }
    for (i, r) in items.enumerated() {
      let seq = i + 1
      statements.append(
        """
        INSERT INTO resources (id, title, description, keywords, type, stage, grade,
          subject, knowledge_points, author_id, author_name, owner_org_id, owner_org_code,
          owner_path, reach_path, sharing_scope, licence, status, created_at, updated_at)
        VALUES (\(quoted(r.id)), \(quoted(r.title)), \(quoted(r.description_p)),
          \(quoted(r.keywords.joined(separator: "\n"))), \(r.type.rawValue), \(r.stage.rawValue),
          \(r.grade), \(r.subject.rawValue), '', 'author', 'author', 'o', 'S',
          \(quoted(Self.school.description)), \(quoted(Self.school.description)), 1, '', 1, 0, 0)
        """)
      let doc = SearchIndex.document(
        title: r.title, keywords: r.keywords, description: r.description_p, editionName: nil)
      statements.append(
        """
        INSERT INTO search_documents (resource_seq, title_len, keywords_len, description_len)
        VALUES (\(seq), \(doc.lengths[0]), \(doc.lengths[1]), \(doc.lengths[2]))
        """)
      for (token, posting) in doc.postings {
        statements.append(
          """
          INSERT INTO search_postings (token, resource_seq, counts, lengths)
          VALUES (\(quoted(token)), \(seq), \(SearchIndex.counts(posting)),
            \(SearchIndex.packLengths(doc.lengths)))
          """)
        statements.append(
          """
          INSERT INTO search_positions
            (resource_seq, token, title_pos, keywords_pos, description_pos)
          VALUES (\(seq), \(quoted(token)), \(quoted(SearchIndex.encode(posting.positions[0]))),
            \(quoted(SearchIndex.encode(posting.positions[1]))),
            \(quoted(SearchIndex.encode(posting.positions[2]))))
          """)
      }
      stats[0] += 1
      for f in 0..<3 { stats[f + 1] += doc.lengths[f] }
    }
    statements.append(
      """
      UPDATE search_stats SET documents = \(stats[0]), title_len = \(stats[1]),
        keywords_len = \(stats[2]), description_len = \(stats[3])
      """)
    let all = statements
    let store: any CatalogueStore
    if let database = try await TestStore.database(named: "catalogue_" + dir.path) {
      var quiet = Logger(label: "catalogue")
      quiet.logLevel = .critical
      let before = CatalogueMigrations.postgres.prefix { $0.id != "catalogue.6.search-positions" }
      let old = try await PostgresStore(
        settings: database, migrations: Array(before), logger: quiet)
      try await old.write { tx in
        for sql in all { try await tx.execute(PostgresQuery(unsafeSQL: sql)) }
      }
      await old.close()
      store = try await openCatalogueStore(dir)
    } else {
      let queue = try DatabaseQueue(path: dir.path + "/catalogue.sqlite")
      var migrator = DatabaseMigrator()
      CatalogueMigrations.register(&migrator)
      try migrator.migrate(queue, upTo: "catalogue.5.visible-index")
      try await queue.write { db in for sql in all { try db.execute(sql: sql) } }
      try queue.close()
      store = try SQLiteCatalogueStore(directory: dir.path)
    }
    let live = items.enumerated().map { (Int64($0.offset + 1), $0.element) }
    let index = try await Self.stored(store)
    #expect(index == Self.recomputed(live))
    #expect(index.documents.allSatisfy { $0.contains("\t") })
    // catalogue.9 (SQLite, a copy of the table) and catalogue.8 (PostgreSQL) took the
    // postings' foreign key away, keeping every posting (above).
    #expect(try await Self.postingsForeignKeys(store) == 0)
    if let sqlite = store as? SQLiteCatalogueStore {
      // catalogue.10 dropped the recent postings' table (their documents' texts hold them).
      let tables = try await sqlite.store.read { db in
        try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE name LIKE 'search_%'")
      }
      #expect(!tables.contains("search_recent") && tables.contains("search_recent_documents"))
    }
    // Proximity reads the converted positions: a phrase query ranks as on the same resources
    // written by today's code, relevance for relevance.
    let freshDirectory = try TemporaryDirectory()
    defer { freshDirectory.remove() }
    let fresh = try await openCatalogueStore(freshDirectory)
    for r in items { _ = try await fresh.insertResource(r, reach: Self.school, topChapter: nil) }
    for text in [items[2].title, items[4].title, items[7].title, items[9].title] {
      let converted = try await SearchStoresTests.answer(store, text)
      let written = try await SearchStoresTests.answer(fresh, text)
      #expect(converted == written && converted.total > 0, "\(text)")
    }
    if let postgres = store as? PostgresCatalogueStore { await postgres.storage.close() }
    if let postgres = fresh as? PostgresCatalogueStore { await postgres.storage.close() }
  }
}
