import Foundation
import GRDB
import ServiceRuntime
import SmartSchoolModel
import TestSupport
import Testing

@Suite("Store, change feed, paging")
struct StorageTests {
  func migrations(_ m: inout DatabaseMigrator) {
    m.registerMigration("test.1") { db in
      try db.execute(sql: "CREATE TABLE things (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
    }
  }

  /// A store in `dir` holding `count` things, keyed `<keyPrefix><i>` and named `n<i>`.
  func storeWithThings(_ count: Int, keyPrefix: String = "", in dir: TemporaryDirectory) throws
    -> Store
  {
    let store = try Store(directory: dir.path, name: "t", migrations: migrations)
    try store.pool.write { db in
      for i in 0..<count {
        try db.execute(
          sql: "INSERT INTO things VALUES (?, ?)", arguments: ["\(keyPrefix)\(i)", "n\(i)"])
      }
    }
    return store
  }

  @Test func aNewerSchemaIsRefused() throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    _ = try Store(directory: dir.path, name: "t", migrations: migrations)
    let queue = try DatabaseQueue(path: dir.path + "/t.sqlite")
    try queue.write { db in
      try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('test.99.future')")
    }
    #expect(throws: StoreOpenError.self) {
      _ = try Store(directory: dir.path, name: "t", migrations: migrations)
    }
  }

  @Test func uniqueViolationsMapToAlreadyExists() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try Store(directory: dir.path, name: "t", migrations: migrations)
    try await store.write { db in try db.execute(sql: "INSERT INTO things VALUES ('1', 'a')") }
    await #expect(throws: ServiceError.alreadyExists("an entity with the same key already exists"))
    {
      try await store.write { db in try db.execute(sql: "INSERT INTO things VALUES ('2', 'a')") }
    }
  }

  /// Writes that queue behind a running one share its successor's transaction (group commit),
  /// yet each still succeeds or fails alone: a write that breaks a constraint or throws after
  /// writing is rolled back by itself and gets its own error, and the rest commit.
  @Test func queuedWritesCommitTogetherButFailAlone() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try storeWithThings(1, in: dir)
    let version = try store.watch(["things"])
    let before = version.current
    struct Refused: Error, Equatable { let writer: Int }
    // The first write holds the writer while the others queue behind it.
    let holding = Task {
      try await store.write { db in
        try db.execute(sql: "INSERT INTO things VALUES ('hold', 'hold')")
        usleep(800_000)
      }
    }
    try await Task.sleep(for: .milliseconds(100))
    let outcomes = try await withThrowingTaskGroup(of: (Int, String).self) { group in
      for writer in 0..<63 {
        group.addTask {
          do {
            let id: Int64 = try await store.write { db in
              try db.execute(
                sql: "INSERT INTO things VALUES (?, ?)", arguments: ["w\(writer)", "m\(writer)"])
              let id = db.lastInsertedRowID
              switch writer % 3 {
              case 1:
                // Name n0 is taken: the row above must go too.
                try db.execute(sql: "INSERT INTO things VALUES (?, 'n0')", arguments: ["x\(writer)"])
              case 2: throw Refused(writer: writer)
              default: break
              }
              return id
            }
            return (writer, id > 0 ? "ok" : "no id")
          } catch let error as ServiceError {
            return (writer, error.code == .alreadyExists ? "exists" : "\(error)")
          } catch let error as Refused {
            return (writer, error.writer == writer ? "refused" : "someone else's error")
          }
        }
      }
      var outcomes: [Int: String] = [:]
      for try await (writer, outcome) in group { outcomes[writer] = outcome }
      return outcomes
    }
    try await holding.value
    for writer in 0..<63 {
      #expect(outcomes[writer] == ["ok", "exists", "refused"][writer % 3], "writer \(writer)")
    }
    let stored = try await store.read { db in
      try String.fetchAll(db, sql: "SELECT id FROM things WHERE id LIKE 'w%' OR id LIKE 'x%'")
    }
    #expect(Set(stored) == Set((0..<63).filter { $0 % 3 == 0 }.map { "w\($0)" }))
    #expect(try await store.read { db in
      try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM things WHERE id = 'hold'")
    } == 1)
    // 64 writes that changed the table, in far fewer transactions.
    let transactions = version.current - before
    #expect(transactions >= 2 && transactions <= 8, "\(transactions) transactions")
  }

  /// A store out of room (a page limit standing in for a full disk) refuses the writes that
  /// do not fit with RESOURCE_EXHAUSTED, alone or grouped with others: a caller told its write
  /// committed finds its row, a caller refused finds none, and the store writes again once
  /// there is room.
  @Test func aFullStoreRefusesWhatDoesNotFitAndLosesNothingElse() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try storeWithThings(1, in: dir)
    let pages = try await store.write { db in try Int.fetchOne(db, sql: "PRAGMA page_count")! }
    try await store.write { db in try db.execute(sql: "PRAGMA max_page_count = \(pages + 8)") }
    // About fifty pages: never fits.
    let big = String(repeating: "x", count: 200_000)
    await #expect(throws: ServiceError.self) {
      try await store.write { db in
        try db.execute(sql: "INSERT INTO things VALUES ('alone', ?)", arguments: [big])
      }
    }
    // A held writer makes the rest queue into groups.
    let holding = Task { try await store.write { _ in _ = usleep(300_000) } }
    try await Task.sleep(for: .milliseconds(50))
    let outcomes = try await withThrowingTaskGroup(of: (Int, String).self) { group in
      for writer in 0..<40 {
        group.addTask {
          do {
            try await store.write { db in
              try db.execute(
                sql: "INSERT INTO things VALUES (?, ?)",
                arguments: ["w\(writer)", writer % 4 == 0 ? big + "\(writer)" : "m\(writer)"])
            }
            return (writer, "ok")
          } catch let error as ServiceError {
            return (writer, error.code == .resourceExhausted ? "full" : "\(error)")
          }
        }
      }
      var outcomes: [Int: String] = [:]
      for try await (writer, outcome) in group { outcomes[writer] = outcome }
      return outcomes
    }
    try await holding.value
    let stored = try await Set(
      store.read { db in
        try String.fetchAll(db, sql: "SELECT id FROM things WHERE id LIKE 'w%' OR id = 'alone'")
      })
    #expect(!stored.contains("alone"))
    for writer in 0..<40 {
      let outcome = outcomes[writer] ?? "none"
      #expect(outcome == "full" || (outcome == "ok" && writer % 4 != 0), "writer \(writer)")
      #expect(stored.contains("w\(writer)") == (outcome == "ok"), "writer \(writer): \(outcome)")
    }
    // SQLite rolls a transaction that ran out of room back whole: a group with a write that
    // does not fit fails together, and nothing of it stays. A small write still fits.
    try await store.write { db in try db.execute(sql: "INSERT INTO things VALUES ('small', 's')") }
    try await store.write { db in try db.execute(sql: "PRAGMA max_page_count = 1073741823") }
    try await store.write { db in
      try db.execute(sql: "INSERT INTO things VALUES ('after', ?)", arguments: [big])
    }
    #expect(
      try await store.read { db in
        try Int.fetchOne(db, sql: "SELECT count(*) FROM things WHERE id IN ('after', 'small')")
      } == 2)
  }

  /// The write-ahead log is copied into the database file beside the writes, never by a
  /// commit (whose wait for the copy and its two `fsync`s every queued write would share),
  /// while readers keep seeing every committed row.
  @Test func theLogIsCheckpointedBesideTheWritesNotInThem() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    var store: Store? = try storeWithThings(1, in: dir)
    let s = store!
    try await s.write { db in
      try db.execute(sql: "CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    }
    // 2,400 rows of 6 KB (two pages each) from 16 writers: about 6,000 pages of log, far
    // below the bound at which the writer checkpoints itself, with one asked for each 1,000.
    let writers = 16
    let each = 150
    try await withThrowingTaskGroup(of: Void.self) { group in
      for w in 0..<writers {
        group.addTask {
          for i in 0..<each {
            let row = Data(repeating: UInt8(truncatingIfNeeded: w * each + i), count: 6_000)
            try await s.write { db in
              try db.execute(sql: "INSERT INTO blobs (data) VALUES (?)", arguments: [row])
            }
          }
        }
      }
      // A reader alongside: the count never goes back and every row read is whole.
      group.addTask {
        var last = 0
        for _ in 0..<200 {
          let (count, short) = try await s.read { db in
            (
              try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM blobs")!,
              try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM blobs WHERE length(data) <> 6000")!
            )
          }
          #expect(count >= last && short == 0)
          last = count
          try await Task.sleep(for: .milliseconds(2))
        }
      }
      try await group.waitForAll()
    }
    // What they copied lands in the database file itself: at least half the rows' bytes (the
    // log past the last request waits for the next one).
    func fileSize() throws -> Int {
      try FileManager.default.attributesOfItem(atPath: s.location)[.size] as? Int ?? 0
    }
    let deadline = ContinuousClock.now + .seconds(20)
    while try s.walCheckpoints.background < 3 || fileSize() < 7_200_000,
      ContinuousClock.now < deadline
    {
      try await Task.sleep(for: .milliseconds(20))
    }
    #expect(s.walCheckpoints.background >= 3, "\(s.walCheckpoints)")
    #expect(s.walCheckpoints.byWriter == 0, "\(s.walCheckpoints)")
    let size = try fileSize()
    #expect(size >= 7_200_000, "database file \(size) bytes")
    let integrity = try await s.read { db in
      try String.fetchOne(db, sql: "PRAGMA integrity_check")
    }
    #expect(integrity == "ok")
    store = nil
    let reopened = try Store(directory: dir.path, name: "t", migrations: migrations)
    let rows = try await reopened.read { db in
      try Int.fetchOne(db, sql: "SELECT COUNT(DISTINCT substr(data, 1, 1)) FROM blobs")
    }
    #expect(rows == 256)
    #expect(try await reopened.read { db in
      try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM blobs WHERE length(data) = 6000")
    } == writers * each)
  }

  /// A reader holding an old snapshot keeps every checkpoint from emptying the log; past
  /// 16,000 pages the writer then checkpoints itself, and once the reader is gone the log starts
  /// over by that size instead of growing: rows written afterwards reuse the log file.
  @Test func theLogStaysBoundedPastItsLimit() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try storeWithThings(1, in: dir)
    try await store.write { db in
      try db.execute(sql: "CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    }
    let log = store.location + "-wal"
    func logSize() throws -> Int {
      try FileManager.default.attributesOfItem(atPath: log)[.size] as? Int ?? 0
    }
    func write(_ rows: Int, from: Int) async throws {
      for first in stride(from: from, to: from + rows, by: 50) {
        try await store.write { db in
          for i in first..<(first + 50) {
            try db.execute(
              sql: "INSERT INTO blobs (id, data) VALUES (?, ?)",
              arguments: [i, Data(repeating: UInt8(truncatingIfNeeded: i), count: 6_000)])
          }
        }
      }
    }
    // The reader's snapshot: taken before any row, held while 12,000 rows (18,000 pages) go in.
    var readerConfig = Configuration()
    readerConfig.readonly = true
    readerConfig.allowsUnsafeTransactions = true  // the snapshot outlives one access
    let reader = try DatabaseQueue(path: store.location, configuration: readerConfig)
    try reader.inDatabase { db in
      try db.execute(sql: "BEGIN")
      #expect(try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM blobs") == 0)
    }
    try await write(12_000, from: 0)
    #expect(store.walCheckpoints.byWriter >= 1, "\(store.walCheckpoints)")
    let grown = try logSize()
    #expect(grown > 16_000 * 4_096, "log \(grown) bytes")
    // The snapshot is still whole: it sees no row.
    try reader.inDatabase { db in
      #expect(try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM blobs") == 0)
      try db.execute(sql: "COMMIT")
    }
    // Without the reader, as many rows again: by 16,000 pages the log is emptied and reused
    // (with SQLite's checkpoint left to commits it would be too; without either it would double).
    try await write(12_000, from: 12_000)
    // (Its first write still appends, 50 rows: the reader's last snapshot was not copied yet.)
    let after = try logSize()
    #expect(after <= grown + 1_000_000, "log \(after) bytes after, \(grown) before")
    let (count, bytes, firsts) = try await store.read { db in
      let row = try Row.fetchOne(
        db,
        sql: """
          SELECT COUNT(*), SUM(length(data)), COUNT(DISTINCT substr(data, 1, 1)) FROM blobs
          WHERE substr(data, 1, 1) = substr(data, 6000, 1)
          """)!
      return (row[0] as Int, row[1] as Int, row[2] as Int)
    }
    #expect(count == 24_000 && bytes == 24_000 * 6_000 && firsts == 256)
  }

  /// `Store.read` runs on its own read-only connections, reused across calls: each read must
  /// still see every write committed before it, from any task, and must not write.
  @Test func readsSeeEveryEarlierWriteAndCannotWrite() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try Store(directory: dir.path, name: "t", migrations: migrations)
    try await withThrowingTaskGroup(of: Void.self) { group in
      for writer in 0..<8 {
        group.addTask {
          for round in 0..<25 {
            let id = "\(writer)-\(round)"
            try await store.write { db in
              try db.execute(sql: "INSERT INTO things VALUES (?, ?)", arguments: [id, "n" + id])
            }
            let name = try await store.read { db in
              try String.fetchOne(db, sql: "SELECT name FROM things WHERE id = ?", arguments: [id])
            }
            #expect(name == "n" + id)
          }
        }
      }
      try await group.waitForAll()
    }
    let count = try await store.read { db in
      try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM things")
    }
    #expect(count == 200)
    await #expect(throws: (any Error).self) {
      try await store.read { db in try db.execute(sql: "INSERT INTO things VALUES ('x', 'x')") }
    }
    #expect(
      try await store.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM things") } == 200
    )
  }

  @Test func rowsDecodeWhileTheStatementStepsAndLeaveItReusable() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try storeWithThings(5, keyPrefix: "k", in: dir)
    struct Boom: Error {}
    let (all, first, none, nested, again) = try await store.read { db in
      // Column names are looked up case-insensitively, as with GRDB's own rows.
      let sql = "SELECT id, name AS Name FROM things WHERE id >= ? ORDER BY id"
      let all = try db.cachedStatement(sql: sql).decodeAll(arguments: ["k1"]) {
        row -> String in row["id"] + "=" + row["name"]
      }
      let first = try db.cachedStatement(sql: sql).decodeFirst(arguments: ["k3"]) {
        row -> String in row["id"]
      }
      let none = try db.cachedStatement(sql: sql).decodeFirst(arguments: ["z"]) {
        row -> String in row["id"]
      }
      // Another query while the outer statement steps.
      let nested = try db.cachedStatement(sql: sql).decodeAll(arguments: ["k3"]) { row -> Int in
        let id: String = row["id"]
        return try Int.fetchOne(
          db, sql: "SELECT COUNT(*) FROM things WHERE id < ?", arguments: [id])
          ?? -1
      }
      // A decode that throws stops the statement part-way; the next use starts afresh.
      #expect(throws: Boom.self) {
        try db.cachedStatement(sql: sql).decodeAll(arguments: ["k0"]) { row -> String in
          if row["id"] == "k2" { throw Boom() }
          return row["id"]
        }
      }
      let again = try db.cachedStatement(sql: sql).decodeAll(arguments: ["k0"]) {
        row -> String in row["id"]
      }
      return (all, first, none, nested, again)
    }
    #expect(all == ["k1=n1", "k2=n2", "k3=n3", "k4=n4"])
    #expect(first == "k3")
    #expect(none == nil)
    #expect(nested == [3, 4])
    #expect(again == ["k0", "k1", "k2", "k3", "k4"])
    // The reads ended their transactions: a write commits and the next read sees it.
    try await store.write { db in try db.execute(sql: "DELETE FROM things WHERE id = 'k0'") }
    let head = try await store.read { db in
      try db.cachedStatement(sql: "SELECT id FROM things ORDER BY id").decodeFirst {
        row -> String in row["id"]
      }
    }
    #expect(head == "k1")
  }

  /// A cached value is served without reading until a write commits a change to a table it
  /// watches; writes to other tables and rolled-back writes leave it in place.
  @Test func cachedValuesLastUntilAWatchedTableChanges() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try storeWithThings(3, in: dir)
    try await store.write { db in try db.execute(sql: "CREATE TABLE other (x INTEGER)") }
    let cache = StoreCache<String, String>(version: try store.watch(["things"]), capacity: 10)
    var reads = 0
    func name(_ id: String) async throws -> String? {
      try await cache.value(for: id) {
        reads += 1
        return try await store.read { db in
          try String.fetchOne(db, sql: "SELECT name FROM things WHERE id = ?", arguments: [id])
        }
      }
    }
    #expect(try await name("1") == "n1")
    #expect(try await name("1") == "n1")
    #expect(reads == 1)
    try await store.write { db in try db.execute(sql: "INSERT INTO other VALUES (1)") }
    struct Abandon: Error {}
    await #expect(throws: Abandon.self) {
      try await store.write { db in
        try db.execute(sql: "UPDATE things SET name = 'gone' WHERE id = '1'")
        throw Abandon()
      }
    }
    #expect(try await name("1") == "n1")
    #expect(reads == 1)
    try await store.write { db in
      try db.execute(sql: "UPDATE things SET name = 'renamed' WHERE id = '1'")
    }
    #expect(try await name("1") == "renamed")
    #expect(reads == 2)
    // A key with no row is read every time and never kept.
    #expect(try await name("missing") == nil)
    #expect(try await name("missing") == nil)
    #expect(reads == 4)
    #expect(cache.count == 1)
  }

  /// Values read together come from memory where current and from one read of the keys
  /// missing; a write to a watched table makes them all read again, a write during the read
  /// keeps none, keys with no row are never kept, and the capacity still bounds what is held.
  @Test func cachedValuesReadTogetherReadOnlyTheMissingKeys() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try storeWithThings(5, in: dir)
    let version = try store.watch(["things"])
    let cache = StoreCache<String, String>(version: version, capacity: 4)
    var asked: [[String]] = []
    func names(_ ids: [String]) async throws -> [String: String] {
      try await cache.values(for: ids) { keys in
        asked.append(keys.sorted())
        return try await store.read { db in
          var out: [String: String] = [:]
          for id in keys {
            out[id] = try String.fetchOne(
              db, sql: "SELECT name FROM things WHERE id = ?", arguments: [id])
          }
          return out
        }
      }
    }
    #expect(try await names(["0", "1", "0"]) == ["0": "n0", "1": "n1"])
    #expect(try await names(["1", "2", "missing"]) == ["1": "n1", "2": "n2"])
    #expect(asked == [["0", "1"], ["2", "missing"]])
    #expect(try await names(["0", "1", "2"]) == ["0": "n0", "1": "n1", "2": "n2"])
    #expect(asked.count == 2)
    #expect(try await names(["missing"]).isEmpty)
    #expect(asked.last == ["missing"] && asked.count == 3)
    // The one-by-one reads see what the bulk read kept, and the other way round.
    #expect(try await cache.value(for: "2") { "not read" } == "n2")
    try await store.write { db in
      try db.execute(sql: "UPDATE things SET name = 'renamed' WHERE id = '1'")
    }
    #expect(try await names(["0", "1"]) == ["0": "n0", "1": "renamed"])
    #expect(asked.last == ["0", "1"])
    // A write while reading: the values are returned, not kept.
    let during = try await cache.values(for: ["3"]) { keys in
      try await store.write { db in
        try db.execute(sql: "UPDATE things SET name = 'newer' WHERE id = '3'")
      }
      return ["3": "n3"]
    }
    #expect(during == ["3": "n3"])
    #expect(try await names(["3"]) == ["3": "newer"])
    _ = try await names(["0", "1", "2", "3", "4"])
    #expect(cache.count == 4)
  }

  /// Only tables whose row changes SQLite reports can be watched: not WITHOUT ROWID, not
  /// virtual (full-text search), not missing.
  @Test func watchingAWithoutRowidOrMissingTableIsRefused() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try storeWithThings(0, in: dir)
    try await store.write { db in
      try db.execute(sql: "CREATE TABLE pairs (a TEXT PRIMARY KEY, b TEXT) WITHOUT ROWID")
      try db.execute(sql: "CREATE VIRTUAL TABLE texts USING fts5(body)")
    }
    #expect(throws: StoreOpenError.self) { _ = try store.watch(["things", "pairs"]) }
    #expect(throws: StoreOpenError.self) { _ = try store.watch(["texts"]) }
    #expect(throws: StoreOpenError.self) { _ = try store.watch(["nothing"]) }
    _ = try store.watch(["things"])
  }

  /// A write that commits while a value is being read leaves that value out of the cache; the
  /// capacity bounds what is held, and a capacity of 0 reads every time.
  @Test func aCacheNeverKeepsAValueAWriteOvertook() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try storeWithThings(3, in: dir)
    let version = try store.watch(["things"])
    let cache = StoreCache<String, String>(version: version, capacity: 2)
    let before = version.current
    let stale = try await cache.value(for: "0") {
      let old = try await store.read { db in
        try String.fetchOne(db, sql: "SELECT name FROM things WHERE id = '0'")
      }
      try await store.write { db in
        try db.execute(sql: "UPDATE things SET name = 'new' WHERE id = '0'")
      }
      return old
    }
    #expect(stale == "n0")
    #expect(version.current == before + 1)
    #expect(cache.count == 0)
    #expect(try await cache.value(for: "0") { "fresh" } == "fresh")
    for id in ["1", "2", "0"] { _ = try await cache.value(for: id) { id } }
    #expect(cache.count == 2)
    let off = StoreCache<String, String>(version: version, capacity: 0)
    var reads = 0
    for _ in 0..<3 {
      _ = try await off.value(for: "0") {
        reads += 1
        return "x"
      }
    }
    #expect(reads == 3)
    #expect(off.count == 0)
  }

  /// Rows written many a statement (``MultiRowStatement``, values bound with SQLite's C API)
  /// read back exactly: integers at both ends of Int64, reals, text with CJK and emoji, "" (not
  /// NULL), NULLs, empty and binary blobs; 150 rows cross two full statements and a partial
  /// one, RETURNING gives every row in order, a conflict is skipped, and a watched table's
  /// version moves (GRDB still sees the statements).
  @Test func multiRowStatementsWriteEveryKindOfValue() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try Store(directory: dir.path, name: "t") { m in
      m.registerMigration("test.1") { db in
        try db.execute(
          sql: "CREATE TABLE kinds (n INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB)")
      }
    }
    let version = try store.watch(["kinds"])
    let before = version.current
    typealias Kinds = (n: Int64, i: Int64, r: Double, t: String?, b: Data?)
    let texts: [String?] = [
      "", "智慧学校 ✓ 🏫", nil, "a\u{0}b", String(repeating: "长", count: 3000),
    ]
    let blobs: [Data?] = [
      Data(), Data([0, 255, 0, 7]), nil, Data(repeating: 0xAB, count: 70_000),
    ]
    let rows: [Kinds] = (0..<150).map { (k: Int) -> Kinds in
      let n = Int64(k)
      let i: Int64 = k % 2 == 0 ? Int64.min + n : Int64.max - n
      return (n: n, i: i, r: Double(k) / 3, t: texts[k % texts.count], b: blobs[k % blobs.count])
    }
    let insert = MultiRowStatement(
      "INSERT INTO kinds (n, i, r, t, b)", columns: 5, "ON CONFLICT (n) DO NOTHING RETURNING n")
    let returned = try await store.write { db in
      try db.execute(sql: "INSERT INTO kinds (n, i) VALUES (149, 0)")
      var returned: [Int64] = []
      try insert.run(db, count: rows.count) { i, row in
        row.bind(rows[i].n)
        row.bind(rows[i].i)
        row.bind(rows[i].r)
        row.bind(rows[i].t)
        row.bind(rows[i].b)
      } returned: { returned.append($0[0]) }
      return returned
    }
    #expect(returned == Array(0..<149))
    #expect(version.current > before)
    let stored = try await store.read { db in
      // The text's bytes, as a blob: GRDB reads text up to its first NUL.
      try Row.fetchAll(
        db, sql: "SELECT n, i, r, CAST(t AS BLOB), b, typeof(t), typeof(b) FROM kinds ORDER BY n"
      ).map { r in
        (n: r[0] as Int64, i: r[1] as Int64, r: r[2] as Double?, t: r[3] as Data?,
         b: r[4] as Data?, tt: r[5] as String, bt: r[6] as String)
      }
    }
    #expect(stored.count == 150)
    for (row, want) in zip(stored, rows) where want.n < 149 {
      #expect(row.i == want.i && row.r == want.r, "row \(want.n)")
      #expect((row.t ?? Data()) == Data((want.t ?? "").utf8), "row \(want.n)")
      #expect(row.tt == (want.t == nil ? "null" : "text"), "row \(want.n)")
      #expect(row.bt == (want.b == nil ? "null" : "blob"), "row \(want.n)")
      #expect((row.b ?? Data()) == (want.b ?? Data()), "row \(want.n)")
    }
    // A row bound short is refused, not run with a missing value.
    await #expect(throws: ServiceError.self) {
      try await store.write { db in
        try insert.run(db, count: 1) { _, row in row.bind(Int64(500)) }
      }
    }
  }

  @Test func changeFeedIsOrderedAndScoped() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try Store(directory: dir.path, name: "t", migrations: migrations)
    try await store.write { db in
      try ChangeFeed.record(
        db, entity: "org", id: "1", naturalKey: "A", op: .upsert, orgPath: "/p/a/")
      try ChangeFeed.record(
        db, entity: "org", id: "2", naturalKey: "B", op: .upsert, orgPath: "/p/b/")
      try ChangeFeed.record(
        db, entity: "org", id: "1", naturalKey: "A", op: .delete, orgPath: "/p/a/")
    }
    let all = try await store.read { db in try ChangeFeed.list(db, after: 0, limit: 2, scopes: nil)
    }
    #expect(all.changes.map(\.naturalKey) == ["A", "B"])
    #expect(all.hasMore)
    let rest = try await store.read { db in
      try ChangeFeed.list(db, after: all.changes.last!.sequence, limit: 2, scopes: nil)
    }
    #expect(rest.changes.map(\.op) == [.delete])
    #expect(!rest.hasMore)
    let scoped = try await store.read { db in
      try ChangeFeed.list(db, after: 0, limit: 10, scopes: [OrgPath("/p/a/")!])
    }
    #expect(scoped.changes.map(\.id) == ["1", "1"])
    let head = try await store.read { db in try ChangeFeed.head(db) }
    #expect(head == 3)
  }

  @Test func backupsAreConsistentCopies() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try storeWithThings(100, in: dir)
    try store.backup(to: dir.path + "/copy.sqlite")
    let copy = try DatabaseQueue(path: dir.path + "/copy.sqlite")
    let count = try await copy.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM things")
    }
    #expect(count == 100)
  }

  /// Ids drawn from the shared pool of random bytes by many tasks at once, across about a
  /// hundred refills of it: each is 20 lower-case hex digits, none repeats, and the digits are
  /// spread evenly (a byte handed out twice or a pool left zeroed would show).
  @Test func entityIDsAreDistinctRandomHexWhoeverDrawsThem() async {
    let ids = await withTaskGroup(of: [String].self) { group in
      for _ in 0..<8 { group.addTask { (0..<5_000).map { _ in EntityID.make() } } }
      return await group.reduce(into: []) { $0 += $1 }
    }
    #expect(ids.count == 40_000)
    #expect(Set(ids).count == 40_000)
    let hex = Set("0123456789abcdef")
    #expect(ids.allSatisfy { $0.count == 20 && $0.allSatisfy(hex.contains) })
    // 800,000 digits, each of the 16 expected 50,000 times (standard deviation about 220).
    var counts: [Character: Int] = [:]
    for id in ids { for c in id { counts[c, default: 0] += 1 } }
    #expect(counts.count == 16)
    #expect(counts.values.allSatisfy { abs($0 - 50_000) < 2_000 }, "\(counts)")
  }

  @Test func pageSizesAndTokens() throws {
    #expect(try PageSize.resolve(0) == 50)
    #expect(try PageSize.resolve(1000) == 1000)
    #expect(throws: ServiceError.self) { try PageSize.resolve(1001) }
    #expect(throws: ServiceError.self) { try PageSize.resolve(-1) }
    let token = PageToken(after: ["学校", "id-1"]).encode(query: "q")
    #expect(try PageToken.decode(token, query: "q") == PageToken(after: ["学校", "id-1"]))
    #expect(try PageToken.decode("", query: "q") == nil)
    #expect(throws: ServiceError.self) { try PageToken.decode(token, query: "other") }
    #expect(throws: ServiceError.self) { try PageToken.decode("%%%", query: "q") }
  }

  @Test func statusesQuotingHugeInputStaySmallEnoughForTrailers() {
    let huge = String(repeating: "数", count: 50_000)
    let notFound = ServiceError.notFound("chapter '\(huge)' not found").rpcError
    #expect(notFound.code == .notFound)
    #expect(notFound.message.count <= 1000 && notFound.message.hasPrefix("chapter '数"))
    let many = ServiceError.invalidArgument(
      (0..<500).map { FieldViolation("items[\($0)].name", "unknown name '\(huge)'") })
    let error = many.rpcError
    #expect(error.code == .invalidArgument)
    #expect(many.reported.count == 11)
    #expect(many.reported.last!.description == "and 490 more violations")
    // grpc-message is percent-encoded (3 bytes per non-ASCII byte); binary trailers base64.
    let message = error.message.utf8.reduce(0) { $0 + ($1 < 0x80 ? 1 : 3) }
    let trailers = error.metadata.reduce(0) { total, entry in
      switch entry.value {
      case .string(let s): total + entry.key.utf8.count + s.utf8.count
      case .binary(let b): total + entry.key.utf8.count + (b.count + 2) / 3 * 4
      }
    }
    #expect(message + trailers < 16 * 1024, "\(message) + \(trailers)")
  }

  @Test func validatorCollectsEveryViolation() {
    var v = Validator()
    v.code("a b", "code")
    v.text("", "name")
    v.text("ok\u{7}", "desc")
    v.length("abcdef", "short", 1...3)
    #expect(v.violations.map(\.field) == ["code", "name", "desc", "short"])
    #expect(throws: ServiceError.self) { try v.throwIfInvalid() }
    #expect(TextRules.isCode("S-A1.x_2"))
    #expect(!TextRules.isCode("学校"))
    #expect(!TextRules.isCode("'; DROP TABLE orgs; --"))
  }

  /// The text check decides blank, too long and control characters as Foundation and the
  /// Unicode tables do, for ASCII and for everything else.
  @Test func validatorTextChecksBlankLengthAndControlCharacters() {
    func verdict(_ value: String, required: Bool = true, max: Int = 5) -> String {
      var v = Validator()
      v.text(value, "f", required: required, maxLength: max)
      return v.violations.first?.description ?? "ok"
    }
    let empty = "must not be empty", long = "must have at most 5 characters"
    let control = "must not contain control characters"
    for blank in ["", " ", "\t", " \t ", "\u{3000}", "\u{A0}\u{2003}"] {
      #expect(verdict(blank) == empty, "\(Array(blank.unicodeScalars))")
      #expect(verdict(blank, required: false) == (blank.contains("\t") ? control : "ok"))
    }
    let accents = String(repeating: "e\u{301}", count: 5)
    for text in ["a", " a ", "学生", "五个汉字们", accents, "👩‍👩‍👧"] {
      #expect(verdict(text) == "ok", "\(text)")
    }
    #expect(verdict("六个汉字们啊") == long)
    #expect(verdict("abcdef") == long)
    #expect(verdict(String(repeating: "长", count: 10_000)) == long)
    for bad in ["a\tb", "a\nb", "\u{0}", "x\u{7F}", "x\u{85}", "\u{9F}", "a\u{1B}[0m"] {
      #expect(verdict(bad, max: 10) == control, "\(Array(bad.unicodeScalars))")
    }
    // Format characters (Cf) are not control characters.
    #expect(verdict("a\u{200B}b") == "ok")
  }
}
