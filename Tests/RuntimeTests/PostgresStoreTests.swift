import Foundation
import Logging
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel
import Synchronization
import Testing
import TestSupport

/// The PostgreSQL store's own guarantees, with several stores on one database standing in for
/// replicas. Run when `SMARTSCHOOL_TEST_DATABASE_URL` names a server (Tests/run-all.sh's
/// PostgreSQL pass); the backend-neutral suites run on both stores.
@Suite(
  "PostgreSQL store: commit-ordered feed, replicas, errors",
  .enabled(if: TestStore.postgresServer != nil))
struct PostgresStoreTests {
  static let migrations = [
    PostgresMigration(
      "test.1.things",
      ["CREATE TABLE things (id text PRIMARY KEY, value integer NOT NULL)"])
  ]

  static var logger: Logger {
    var logger = Logger(label: "pg-test")
    logger.logLevel = .critical
    return logger
  }

  /// A fresh database and a store on it; more stores on the same database with `open()`.
  struct Database {
    let settings: DatabaseSettings
    init() async throws {
      settings = try await TestStore.database(named: "runtime-" + UUID().uuidString)!
    }
    func open(_ migrations: [PostgresMigration] = PostgresStoreTests.migrations) async throws
      -> PostgresStore
    {
      try await PostgresStore(settings: settings, migrations: migrations, logger: logger)
    }
  }

  static func insert(_ tx: PostgresTransaction, _ id: String) async throws {
    try await tx.execute("INSERT INTO things (id, value) VALUES (\(id), 1)")
    try tx.recordChange(entity: "thing", id: id, naturalKey: id, op: .upsert, orgPath: "/p/")
  }

  /// Inserts each id under a savepoint; returns the rejected ones with their errors.
  static func importSkippingBad(_ tx: PostgresTransaction, _ ids: [String]) async throws
    -> [(String, ServiceError)]
  {
    var rejected: [(String, ServiceError)] = []
    for id in ids {
      do {
        try await tx.savepoint { try await insert(tx, id) }
      } catch let error as ServiceError {
        rejected.append((id, error))
      }
    }
    return rejected
  }

  /// The ServiceError `body` throws, if any.
  static func serviceError(_ body: () async throws -> Void) async -> ServiceError? {
    do {
      try await body()
      return nil
    } catch {
      return error as? ServiceError
    }
  }

  /// A transaction that recorded its event first but commits last must not be skipped by a
  /// follower that has already read the later-started, earlier-committed one. With sequences
  /// from a serial column, the slow writer's event would carry the lower number and be missed.
  @Test func feedIsCommitOrderedWhenCommitOrderDiffersFromStartOrder() async throws {
    let db = try await Database()
    let store = try await db.open()
    defer { Task { await store.close() } }
    let (started, startedGo) = AsyncStream<Void>.makeStream()
    let (release, releaseGo) = AsyncStream<Void>.makeStream()
    let slow = Task {
      try await store.write { tx in
        try await Self.insert(tx, "slow")
        startedGo.yield()
        for await _ in release { break }
      }
    }
    for await _ in started { break }
    try await store.write { tx in try await Self.insert(tx, "fast") }
    let first = try await store.listChanges(after: 0, limit: 10, scopes: nil, unscoped: [])
    #expect(first.changes.map(\.id) == ["fast"])
    let cursor = first.changes.last!.sequence
    releaseGo.yield()
    try await slow.value
    let next = try await store.listChanges(after: cursor, limit: 10, scopes: nil, unscoped: [])
    #expect(next.changes.map(\.id) == ["slow"])
    #expect(try await store.changeFeedHead() == 2)
  }

  /// Many writers on three stores (replicas) at once while a follower polls: the follower,
  /// moving its cursor past what it has read, ends with every event, each once.
  @Test func followerMissesNothingUnderConcurrentWritersOnThreeReplicas() async throws {
    let db = try await Database()
    let replicas = [try await db.open(), try await db.open(), try await db.open()]
    defer { for r in replicas { Task { await r.close() } } }
    let writers = 6
    let perWriter = 25
    let done = Counter()
    try await withThrowingTaskGroup(of: Void.self) { group in
      for w in 0..<writers {
        group.addTask {
          for i in 0..<perWriter {
            try await replicas[w % 3].write { tx in
              try await Self.insert(tx, "w\(w)-\(i)")
              try await Task.sleep(for: .milliseconds(Int.random(in: 0...3)))
            }
          }
          done.add(1)
        }
      }
      group.addTask {
        var cursor: Int64 = 0
        var seen: [String] = []
        while true {
          let finished = done.value == writers
          let page = try await replicas[0].listChanges(
            after: cursor, limit: 50, scopes: nil, unscoped: [])
          seen += page.changes.map(\.id)
          cursor = page.changes.last?.sequence ?? cursor
          if finished && !page.hasMore && page.changes.isEmpty { break }
        }
        #expect(seen.count == writers * perWriter)
        #expect(Set(seen).count == writers * perWriter)
      }
      try await group.waitForAll()
    }
  }

  /// Three replicas starting at once on an empty database migrate once and all start; a
  /// database with a migration this binary does not know is refused.
  @Test func replicasStartingAtOnceMigrateOnceAndNewerSchemaIsRefused() async throws {
    let db = try await Database()
    let stores = try await withThrowingTaskGroup(of: PostgresStore.self) { group in
      for _ in 0..<3 { group.addTask { try await db.open() } }
      var all: [PostgresStore] = []
      for try await s in group { all.append(s) }
      return all
    }
    #expect(stores.count == 3)
    let counts = try await stores[0].query(
      "SELECT id, count(*) FROM runtime_migrations GROUP BY id")
    #expect(counts.count == 6)  // runtime.1 to runtime.5 and the test's own
    for row in counts { #expect(try row[1].decode(Int64.self) == 1) }
    for s in stores { await s.close() }
    let newer = try await db.open(
      Self.migrations + [PostgresMigration("test.2.more", ["CREATE TABLE more (x integer)"])])
    await newer.close()
    await #expect(throws: StoreOpenError.self) { _ = try await db.open() }
  }

  /// The feed's counter moves in the statement that inserts the events (with the changed
  /// tables read alongside); without a counter row, none is inserted there, the counter is
  /// made at 0 and the events go in numbered from 1, so the feed loses and duplicates nothing.
  @Test func feedEventsAreNumberedWhenTheCounterRowIsMissing() async throws {
    let db = try await Database()
    let store = try await db.open()
    defer { Task { await store.close() } }
    let things = try await store.watch(["things"])
    try await store.write { tx in
      try await tx.execute("DELETE FROM runtime_counters WHERE name = 'changes'")
    }
    var version = things.current
    try await store.write { tx in
      try await Self.insert(tx, "a")
      try await Self.insert(tx, "b")
    }
    #expect(things.current > version)
    version = things.current
    try await store.write { tx in try await Self.insert(tx, "c") }
    #expect(things.current > version)
    let feed = try await store.listChanges(after: 0, limit: 10, scopes: nil, unscoped: [])
    #expect(feed.changes.map(\.id) == ["a", "b", "c"])
    #expect(feed.changes.map(\.sequence) == [1, 2, 3])
    #expect(try await store.changeFeedHead() == 3)
  }

  /// One transaction with more events than one feed statement takes (20,000): every event
  /// lands, numbered in the order recorded with no gap, each with its payload or without one
  /// as it was recorded; the next transaction's numbers follow on.
  @Test func aTransactionWithMoreEventsThanOneStatementTakesNumbersThemAll() async throws {
    let db = try await Database()
    let store = try await db.open()
    defer { Task { await store.close() } }
    let count = 20_123
    try await store.write { tx in
      for n in 0..<count {
        var row = Smartschool_Common_V1_RowError()
        row.index = Int64(n)
        try tx.recordChange(
          entity: "thing", id: "t\(n)", naturalKey: "k\(n)", op: .upsert, orgPath: "/p/",
          payload: n % 3 == 0 ? nil : row)
      }
    }
    try await store.write { tx in try await Self.insert(tx, "after") }
    var changes: [Smartschool_Common_V1_Change] = []
    var cursor: Int64 = 0
    while true {
      let page = try await store.listChanges(
        after: cursor, limit: 5000, scopes: nil, unscoped: [])
      changes += page.changes
      guard let last = page.changes.last, page.hasMore else { break }
      cursor = last.sequence
    }
    #expect(changes.count == count + 1)
    #expect(changes.map(\.sequence) == Array(1...Int64(count + 1)))
    #expect(changes.map(\.id) == (0..<count).map { "t\($0)" } + ["after"])
    #expect(changes.prefix(count).allSatisfy { $0.naturalKey == "k" + $0.id.dropFirst() })
    for (n, change) in changes.prefix(count).enumerated() {
      guard n % 3 != 0 else {
        #expect(!change.hasPayload, "event \(n)")
        continue
      }
      let row = try Smartschool_Common_V1_RowError(unpackingAny: change.payload)
      #expect(row.index == Int64(n))
    }
  }

  /// A large batch's events go in packed (from 256 events), a small one's a row each: the
  /// same events come back the same either way, whatever bytes their text and payloads hold
  /// (tabs, newlines, backslashes, `\N`, CJK; every byte value), with their times to the last
  /// bit, numbered on from the events before them; without a counter row, from 1.
  @Test func packedEventsComeBackAsInsertedOnes() async throws {
    let odd = ["tab\there", "new\nline", "back\\slash", "\\N", "cr\rx", "智慧学校", "", "end\\"]
    let events = try (0..<1_000).map { n in
      var e = try ChangeEvent(
        entity: "thing" + odd[n % 8], id: "i\(n)" + odd[(n + 1) % 8],
        naturalKey: odd[(n + 2) % 8] + "k\(n)", op: n % 5 == 0 ? .delete : .upsert,
        orgPath: "/p/" + odd[(n + 3) % 8] + "/",
        time: Date(timeIntervalSince1970: 1_733_526_000.123_456_7 + Double(n) / 3))
      if n % 5 != 0 {
        e.payloadType = "type.googleapis.com/smartschool.common.v1.RowError"
        e.payload = Data((0..<(n % 300)).map { UInt8(($0 * 37 + n) % 256) })
      }
      return e
    }
    func all(_ store: PostgresStore) async throws -> [Smartschool_Common_V1_Change] {
      try await ChangeBlockTests.follow(store, after: 0, limit: 1_000, scopes: nil, unscoped: [])
    }
    let db = try await Database()
    let store = try await db.open()
    defer { Task { await store.close() } }
    try await store.write { tx in try await Self.insert(tx, "before") }
    try await store.write { tx in tx.recordChanges(events) }
    for chunk in stride(from: 0, to: events.count, by: 50) {
      try await store.write { tx in tx.recordChanges(Array(events[chunk..<chunk + 50])) }
    }
    let changes = try await all(store)
    #expect(changes.map(\.sequence) == Array(1...2_001))
    #expect(try await store.changeFeedHead() == 2_001)
    for (n, e) in events.enumerated() {
      #expect(changes[1 + n] == ChangeBlockTests.expected(e, Int64(2 + n)), "packed \(n)")
      #expect(changes[1_001 + n] == ChangeBlockTests.expected(e, Int64(1_002 + n)), "row \(n)")
    }
    // One row a block, one an event.
    #expect(try await ChangeBlockTests.rowCount(store) == 1 + 4 + 1_000)

    let empty = try await Database().open()
    defer { Task { await empty.close() } }
    try await empty.write { tx in
      try await tx.execute("DELETE FROM runtime_counters WHERE name = 'changes'")
    }
    try await empty.write { tx in tx.recordChanges(events) }
    let fresh = try await all(empty)
    #expect(fresh == events.enumerated().map { ChangeBlockTests.expected($1, Int64($0 + 1)) })
    #expect(try await empty.changeFeedHead() == 1_000)
  }

  /// Events packed ahead of their transaction (`PostgresEncodedChanges`, a bulk writer's
  /// stage) are stored exactly as recorded ones: numbered on from the counter across a change
  /// in the numbers' width, times shared by runs of events read back to the last bit, packed
  /// events undone with their savepoint, and unpacked events recorded between packed ones kept
  /// in order. Integers of every width go through `COPY` intact.
  @Test func encodedEventsAreStoredAsRecordedOnes() async throws {
    func events(_ tag: String, _ count: Int, start: Int) throws -> [ChangeEvent] {
      try (0..<count).map { n in
        var e = try ChangeEvent(
          entity: "thing", id: "\(tag)\(n)", naturalKey: "k\t\(tag)\(n)",
          op: n % 7 == 0 ? .delete : .upsert, orgPath: "/p/\(n % 3)/",
          // Runs of five events share a time, as a batch's do.
          time: Date(timeIntervalSince1970: 1_733_526_000.1 + Double((start + n) / 5) / 7))
        if n % 7 != 0 {
          e.payloadType = "type.googleapis.com/smartschool.common.v1.RowError"
          e.payload = Data((0..<(n % 90)).map { UInt8(($0 * 31 + n) % 256) })
        }
        return e
      }
    }
    let a = try events("a", 300, start: 0)
    let b = try events("b", 300, start: 300)
    let c = try events("c", 10, start: 600)
    let d = try events("d", 300, start: 610)
    let db = try await Database()
    let store = try await db.open()
    defer { Task { await store.close() } }
    try await store.write { tx in
      try await tx.execute("UPDATE runtime_counters SET value = 9999999990 WHERE name = 'changes'")
    }
    try await store.write { tx in
      tx.recordChanges(PostgresEncodedChanges(a))
      do {
        try await tx.savepoint {
          tx.recordChanges(PostgresEncodedChanges(b))
          throw ServiceError.aborted("undo b")
        }
      } catch ServiceError.aborted {}
      tx.recordChanges(c)
      tx.recordChanges(PostgresEncodedChanges(d))
    }
    // A savepoint undoing part of a packed batch: its blocks go, the rest is packed anew.
    let e = try events("e", 600, start: 910)
    try await store.write { tx in
      try await tx.savepoint { tx.recordChanges(PostgresEncodedChanges(Array(e.prefix(400)))) }
      do {
        try await tx.savepoint {
          tx.recordChanges(PostgresEncodedChanges(Array(e.suffix(200))))
          throw ServiceError.aborted("undo the tail")
        }
      } catch ServiceError.aborted {}
    }
    // Fewer events than are packed: kept as they are, a row each.
    try await store.write { tx in tx.recordChanges(PostgresEncodedChanges(Array(c.prefix(3)))) }
    let expected = a + c + d + e.prefix(400) + c.prefix(3)
    let first: Int64 = 9_999_999_991
    let changes = try await ChangeBlockTests.follow(
      store, after: first - 1, limit: 1_000, scopes: nil, unscoped: [])
    #expect(changes.map(\.sequence) == Array(first..<first + Int64(expected.count)))
    #expect(
      changes == expected.enumerated().map { ChangeBlockTests.expected($1, first + Int64($0)) })

    let numbers = [Int.min, -1_000_000_007, -10, -9, -1, 0, 1, 9, 10, 99, 100, 1 << 40, Int.max]
    let back = try await store.write { tx in
      try await tx.execute("CREATE TEMP TABLE numbers (n bigint, x double precision)")
      try await tx.copy(
        into: "numbers", columns: ["n", "x"],
        rows: numbers.map { [.int($0), .double(Double($0) / 3)] })
      return try await tx.query("SELECT n, x FROM numbers").map {
        (try $0[0].decode(Int.self), try $0[1].decode(Double.self))
      }
    }
    #expect(back.map(\.0) == numbers)
    #expect(back.map(\.1.bitPattern) == numbers.map { (Double($0) / 3).bitPattern })
  }

  /// A write on one replica moves the table version another replica watches (its caches
  /// drop the old value) within seconds; the writer's own version has moved when its write
  /// returns.
  @Test func tableVersionFollowsWritesOfOtherReplicas() async throws {
    let db = try await Database()
    let a = try await db.open()
    let b = try await db.open()
    defer {
      Task {
        await a.close()
        await b.close()
      }
    }
    let onA = try await a.watch(["things"])
    let onB = try await b.watch(["things"])
    let beforeA = onA.current
    let beforeB = onB.current
    try await b.write { tx in try await Self.insert(tx, "x") }
    #expect(onB.current > beforeB)
    let deadline = ContinuousClock.now + .seconds(5)
    while onA.current == beforeA && ContinuousClock.now < deadline {
      try await Task.sleep(for: .milliseconds(20))
    }
    #expect(onA.current > beforeA)
    await #expect(throws: StoreOpenError.self) { _ = try await a.watch(["no_such_table"]) }

    // A cache on A serves B's new value once B has written.
    let cache = StoreCache<String, Int>(version: onA, capacity: 10)
    let read: @Sendable () async throws -> Int? = {
      try await a.query("SELECT value FROM things WHERE id = 'x'").first?[0].decode(Int.self)
    }
    #expect(try await cache.value(for: "x", read: read) == 1)
    let seenBefore = onA.current
    try await b.write { tx in try await tx.execute("UPDATE things SET value = 2 WHERE id = 'x'") }
    while onA.current == seenBefore && ContinuousClock.now < deadline + .seconds(5) {
      try await Task.sleep(for: .milliseconds(20))
    }
    #expect(try await cache.value(for: "x", read: read) == 2)
  }

  /// SQLSTATEs reach callers as statuses; a savepoint keeps an import going after a bad row.
  @Test func errorsMapToStatusesAndSavepointsKeepTheTransaction() async throws {
    let db = try await Database()
    let store = try await db.open()
    defer { Task { await store.close() } }
    try await store.write { tx in try await Self.insert(tx, "a") }
    let duplicate = await Self.serviceError { try await store.write { tx in try await Self.insert(tx, "a") } }
    #expect(duplicate?.code == .alreadyExists)
    let outcome = try await store.write { tx in try await Self.importSkippingBad(tx, ["b", "a", "c"]) }
    #expect(outcome.map(\.0) == ["a"])
    #expect(outcome.map(\.1.code) == [.alreadyExists])
    let ids = try await store.listChanges(after: 0, limit: 10, scopes: nil, unscoped: [])
      .changes.map(\.id)
    // The rejected row's event went with its savepoint.
    #expect(ids == ["a", "b", "c"])
  }

  /// One-time work under `exclusively` runs once when replicas race for it.
  @Test func exclusivelyLetsOneReplicaAtATime() async throws {
    let db = try await Database()
    let stores = [try await db.open(), try await db.open(), try await db.open()]
    defer { for s in stores { Task { await s.close() } } }
    let inside = Counter()
    let most = Counter()
    try await withThrowingTaskGroup(of: Void.self) { group in
      for s in stores {
        group.addTask {
          try await s.exclusively("test.once") {
            let now = inside.add(1)
            most.raise(to: now)
            let present = try await s.query("SELECT count(*) FROM things").first![0]
              .decode(Int64.self)
            if present == 0 {
              try await s.write { tx in try await Self.insert(tx, "first") }
            }
            try await Task.sleep(for: .milliseconds(50))
            _ = inside.add(-1)
          }
        }
      }
      try await group.waitForAll()
    }
    #expect(most.value == 1)
    #expect(try await stores[0].changeFeedHead() == 1)
  }

  /// The directory's cursor never moves backwards, whichever replica saves last.
  @Test func directoryCursorNeverRewinds() async throws {
    let db = try await Database()
    let store = try await db.open()
    defer { Task { await store.close() } }
    let row = DirectoryRow(entity: "org", id: "o1", payload: Data([1, 2]))
    try await store.saveDirectory(upserts: [row], deletions: [], cursor: 10)
    try await store.saveDirectory(upserts: [], deletions: [], cursor: 7)
    let loaded = try await store.loadDirectory()
    #expect(loaded.cursor == 10)
    #expect(loaded.rows == [row])
    try await store.saveDirectory(upserts: [], deletions: [("org", "o1")], cursor: nil)
    #expect(try await store.loadDirectory().rows.isEmpty)
  }

  /// The server drops every connection of the store (as a restart does) while writers run:
  /// calls in between fail UNAVAILABLE, never crash, later calls succeed, and every write
  /// that reported success is in the database.
  @Test func connectionsDroppedUnderLoadRecoverAndLoseNothingCommitted() async throws {
    let db = try await Database()
    let store = try await db.open()
    defer { Task { await store.close() } }
    let server = TestStore.postgresServer!
    let admin = try await PostgresConnection.connect(
      configuration: PostgresConnection.Configuration(
        host: server.host, port: server.port, username: server.username,
        password: server.password, database: server.database, tls: .disable),
      id: 99, logger: Self.logger)
    defer { Task { try? await admin.close() } }
    let committed = Collected<String>()
    let failures = Collected<ServiceError>()
    try await withThrowingTaskGroup(of: Void.self) { group in
      for w in 0..<4 {
        group.addTask {
          for i in 0..<60 {
            let id = "w\(w)-\(i)"
            do {
              try await store.write { tx in try await Self.insert(tx, id) }
              committed.append(id)
            } catch let error as ServiceError {
              failures.append(error)
            }
            try await Task.sleep(for: .milliseconds(2))
          }
        }
      }
      group.addTask {
        for _ in 0..<3 {
          try await Task.sleep(for: .milliseconds(60))
          _ = try await admin.query(
            """
            SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = \(db.settings.database)
            """, logger: Self.logger
          ).collect()
        }
      }
      try await group.waitForAll()
    }
    // Recovered: a new write works.
    try await store.write { tx in try await Self.insert(tx, "after") }
    let stored = Set(
      try await store.query("SELECT id FROM things").map { try $0[0].decode(String.self) })
    for id in committed.all { #expect(stored.contains(id)) }
    #expect(stored.contains("after"))
    for error in failures.all { #expect(error.code == .unavailable, "\(error)") }
  }

  /// A thing's value by id.
  struct ThingValue: PostgresRowStatement {
    static let name = "test_thing_value"
    static let sql = "SELECT value FROM things WHERE id = $1"
    var id: String
    func makeBindings() -> PostgresBindings {
      var bindings = PostgresBindings()
      bindings.append(id)
      return bindings
    }
  }

  /// The things whose value is at least `$1`, by id.
  struct ThingsFrom: PostgresRowStatement {
    static let name = "test_things_from"
    static let sql = "SELECT id FROM things WHERE value >= $1 ORDER BY id"
    var value: Int
    func makeBindings() -> PostgresBindings {
      var bindings = PostgresBindings()
      bindings.append(value)
      return bindings
    }
  }

  /// Prepared statements, many at once over the whole pool (each connection prepares them on
  /// first use), read what is committed, including writes made after they were prepared;
  /// after every connection was dropped they are prepared again on the new ones.
  @Test func preparedStatementsRunOnEveryConnectionAndSurviveDroppedConnections() async throws {
    let db = try await Database()
    let store = try await db.open()
    defer { Task { await store.close() } }
    try await store.write { tx in
      for i in 0..<20 {
        try await tx.execute("INSERT INTO things (id, value) VALUES (\("t\(i)"), \(i))")
      }
    }
    func check(_ round: Int) async throws {
      try await withThrowingTaskGroup(of: Void.self) { group in
        for k in 0..<48 {
          group.addTask {
            let i = (k * 7 + round) % 20
            let value = try await store.query(prepared: ThingValue(id: "t\(i)"))
            #expect(try value.map { try $0[0].decode(Int.self) } == [i])
            let ids = try await store.query(prepared: ThingsFrom(value: 18))
            #expect(try ids.map { try $0[0].decode(String.self) } == ["t18", "t19"])
          }
        }
        try await group.waitForAll()
      }
      #expect(try await store.query(prepared: ThingValue(id: "missing")).isEmpty)
    }
    try await check(0)
    // Inside a transaction too, on the transaction's own connection.
    let inside = try await store.read { tx in
      try await tx.query(prepared: ThingValue(id: "t5")).map { try $0[0].decode(Int.self) }
    }
    #expect(inside == [5])
    try await store.write { tx in try await tx.execute("UPDATE things SET value = value + 100") }
    let moved = try await store.query(prepared: ThingValue(id: "t3"))
    #expect(try moved.map { try $0[0].decode(Int.self) } == [103])
    try await store.write { tx in try await tx.execute("UPDATE things SET value = value - 100") }
    let server = TestStore.postgresServer!
    let admin = try await PostgresConnection.connect(
      configuration: PostgresConnection.Configuration(
        host: server.host, port: server.port, username: server.username,
        password: server.password, database: server.database, tls: .disable),
      id: 98, logger: Self.logger)
    defer { Task { try? await admin.close() } }
    _ = try await admin.query(
      """
      SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE datname = \(db.settings.database)
      """, logger: Self.logger
    ).collect()
    // Calls on a dropped connection fail UNAVAILABLE; the pool then connects afresh.
    var recovered = false
    for _ in 0..<50 where !recovered {
      do {
        try await check(1)
        recovered = true
      } catch let error as ServiceError {
        #expect(error.code == .unavailable, "\(error)")
        try await Task.sleep(for: .milliseconds(100))
      }
    }
    #expect(recovered)
  }

  /// The server refusing connections (a failover, a restart): calls fail UNAVAILABLE within
  /// the lease timeout instead of hanging until the pool's circuit breaker trips (a minute),
  /// and work again, without a restart, once the server takes connections.
  @Test func callsDuringAnOutageFailFastAndRecover() async throws {
    let db = try await Database()
    let store = try await PostgresStore(
      settings: db.settings, migrations: Self.migrations, logger: Self.logger,
      leaseTimeout: .seconds(2))
    defer { Task { await store.close() } }
    try await store.write { tx in try await Self.insert(tx, "before") }
    let admin = try await Self.admin()
    defer { Task { try? await admin.close() } }
    let name = db.settings.database
    _ = try await admin.query(
      PostgresQuery(unsafeSQL: "ALTER DATABASE \"\(name)\" ALLOW_CONNECTIONS false"),
      logger: Self.logger
    ).collect()
    _ = try await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \(name)",
      logger: Self.logger
    ).collect()
    let started = ContinuousClock.now
    let outcomes = Collected<String>()
    await withTaskGroup(of: Void.self) { group in
      for _ in 0..<8 {
        group.addTask {
          do {
            _ = try await store.query("SELECT 1")
            outcomes.append("ok")
          } catch let error as ServiceError {
            outcomes.append("\(error.code)")
          } catch {
            outcomes.append("other: \(error)")
          }
        }
      }
    }
    let waited = ContinuousClock.now - started
    #expect(outcomes.all == Array(repeating: "unavailable", count: 8), "\(outcomes.all)")
    #expect(waited < .seconds(8), "calls waited \(waited)")
    _ = try await admin.query(
      PostgresQuery(unsafeSQL: "ALTER DATABASE \"\(name)\" ALLOW_CONNECTIONS true"),
      logger: Self.logger
    ).collect()
    var recovered = false
    for _ in 0..<60 where !recovered {
      do {
        try await store.write { tx in try await Self.insert(tx, "after") }
        recovered = true
      } catch {
        try await Task.sleep(for: .milliseconds(250))
      }
    }
    #expect(recovered)
    let stored = try await store.query("SELECT id FROM things ORDER BY id")
      .map { try $0[0].decode(String.self) }
    #expect(stored == ["after", "before"])
  }

  /// Every pooled connection busy: a further call waits at most the lease timeout, and a
  /// cancelled wait ends at once and takes no connection.
  @Test func aFullPoolBoundsTheWaitAndHonoursCancellation() async throws {
    let db = try await Database()
    var settings = db.settings
    settings.poolSize = 2
    let store = try await PostgresStore(
      settings: settings, migrations: Self.migrations, logger: Self.logger,
      leaseTimeout: .seconds(1))
    defer { Task { await store.close() } }
    let busy = (0..<2).map { _ in
      Task { _ = try await store.query("SELECT pg_sleep(4)") }
    }
    try await Task.sleep(for: .milliseconds(500))
    let started = ContinuousClock.now
    await #expect(throws: ServiceError.self) { _ = try await store.query("SELECT 1") }
    #expect(ContinuousClock.now - started < .seconds(3))
    let waiting = Task { _ = try await store.query("SELECT 1") }
    try await Task.sleep(for: .milliseconds(100))
    let cancelled = ContinuousClock.now
    waiting.cancel()
    _ = await waiting.result
    #expect(ContinuousClock.now - cancelled < .milliseconds(500))
    for task in busy { _ = try await task.value }
    // Both connections came back: two calls at once both succeed.
    async let a = store.query("SELECT 1")
    async let b = store.query("SELECT 2")
    _ = try await (a, b)
  }

  static func admin() async throws -> PostgresConnection {
    let server = TestStore.postgresServer!
    return try await PostgresConnection.connect(
      configuration: PostgresConnection.Configuration(
        host: server.host, port: server.port, username: server.username,
        password: server.password, database: server.database, tls: .disable),
      id: 99, logger: Self.logger)
  }
}

/// A counter shared by tasks.
final class Counter: Sendable {
  private let state = Mutex(0)
  /// Adds `n` and returns the new value.
  @discardableResult func add(_ n: Int) -> Int { state.withLock { $0 += n; return $0 } }
  /// Raises the value to `n` if lower.
  func raise(to n: Int) { state.withLock { $0 = max($0, n) } }
  var value: Int { state.withLock { $0 } }
}

/// Values collected by tasks.
final class Collected<T: Sendable>: Sendable {
  private let state = Mutex<[T]>([])
  /// Adds one.
  func append(_ value: T) { state.withLock { $0.append(value) } }
  /// Everything so far.
  var all: [T] { state.withLock { $0 } }
}
