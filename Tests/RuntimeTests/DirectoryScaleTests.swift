import Foundation
import GRDB
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel
import Synchronization
import Testing
import TestSupport

/// One replica's view of a shared fake feed, with the revocations told to this replica.
final class ReplicaSource: IdentityChangeSource {
  let feed: FakeFeed
  let revoked = Mutex<[String: Date]>([:])

  init(_ feed: FakeFeed) { self.feed = feed }

  func listChanges(after: Int64, pageSize: Int) async throws
    -> Smartschool_Common_V1_ListChangesResponse
  {
    try await feed.listChanges(after: after, pageSize: pageSize)
  }

  func sessionsRevoked(_ sessions: [String: Date]) {
    revoked.withLock { $0.merge(sessions) { $1 } }
  }
}

/// What the two-replica race shares (a class: task-group closures cannot capture the
/// non-copyable atomics themselves).
private final class RaceState: Sendable {
  let writing = Atomic<Bool>(true)
  let problems = Mutex<[String]>([])
}

/// P → K → S1, S2; classes C1 (in S1) and C2 (in S2).
private func addTree(_ feed: FakeFeed) {
  feed.add(testOrg("p", "P", .province, parent: "", path: "/p/"))
  feed.add(testOrg("k", "K", .county, parent: "p", path: "/p/k/"))
  feed.add(testOrg("s1", "S1", .school, parent: "k", path: "/p/k/s1/"))
  feed.add(testOrg("s2", "S2", .school, parent: "k", path: "/p/k/s2/"))
  feed.add(testOrg("c1", "C1", .class, parent: "s1", path: "/p/k/s1/c1/"))
  feed.add(testOrg("c2", "C2", .class, parent: "s2", path: "/p/k/s2/c2/"))
}

private let paths = ["s1": "/p/k/s1/", "s2": "/p/k/s2/", "c1": "/p/k/s1/c1/", "c2": "/p/k/s2/c2/"]

/// Each tracked user's home org and whether active, in the persisted copy, and the cursor,
/// read in one snapshot.
private func snapshot(_ store: any ServiceStorage) async throws
  -> (cursor: Int64, users: [String: String])
{
  if let sqlite = store as? Store {
    return try await sqlite.scan { db in
      let cursor =
        try Int64.fetchOne(db, sql: "SELECT sequence FROM runtime_directory_cursor WHERE id = 1")
        ?? 0
      var users: [String: String] = [:]
      for row in try Row.fetchAll(
        db, sql: "SELECT id, org_id, active FROM runtime_directory_users")
      {
        users[row["id"]] = (row["org_id"] as String) + ((row["active"] as Bool) ? "" : "-off")
      }
      return (cursor, users)
    }
  }
  let postgres = try #require(store as? PostgresStore)
  return try await postgres.read { tx in
    let cursor =
      try await tx.one("SELECT sequence FROM runtime_directory_cursor WHERE id = 1")?[0].decode(
        Int64.self) ?? 0
    var users: [String: String] = [:]
    for row in try await tx.query("SELECT id, org_id, active FROM runtime_directory_users") {
      users[try row[0].decode(String.self)] =
        try row[1].decode(String.self) + (try row[2].decode(Bool.self) ? "" : "-off")
    }
    return (cursor, users)
  }
}

/// The users' states the feed gives up to `cursor`, as ``snapshot(_:)`` spells them.
private func expectedUsers(_ feed: FakeFeed, through cursor: Int64) throws -> [String: String] {
  var users: [String: String] = [:]
  for c in feed.changes.withLock({ $0 }) where c.sequence <= cursor && c.entity == "user" {
    let u = try Smartschool_Identity_V1_User(serializedBytes: c.payload.value)
    users[u.id] = u.orgID + (u.status == .deactivated ? "-off" : "")
  }
  return users
}

/// A second handle on the same store: another replica's connection pool on PostgreSQL; on
/// SQLite, where one process owns the file, the same store.
private func secondReplicaStore(_ first: any ServiceStorage, dir: TemporaryDirectory)
  async throws -> any ServiceStorage
{
  first.backend == .postgresql ? try await TestStore.open(name: "dir", directory: dir) : first
}

private func waitUntil(seconds: Double, _ condition: () async throws -> Bool) async throws
  -> Bool
{
  let deadline = Date().addingTimeInterval(seconds)
  while Date() < deadline {
    if try await condition() { return true }
    try await Task.sleep(for: .milliseconds(20))
  }
  return try await condition()
}

@Suite("Org directory at province scale")
struct DirectoryScaleTests {
  @Test func usersLiveInTheStoreAndSurviveARestartWithoutIdentity() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let feed = FakeFeed()
    addTree(feed)
    feed.add(testUser("t1", "T1", .teacher, org: "s1", path: paths["s1"]!))
    feed.add(testUser("t2", "T2", .teacher, org: "s2", path: paths["s2"]!))
    feed.add(testUser("st1", "ST1", .student, org: "c1", path: paths["c1"]!))
    feed.add(testUser("pa1", "PA1", .parent, org: "s1", path: paths["s1"]!))
    feed.link(parent: "pa1", student: "st1")
    feed.revoke(session: "sess-1")
    let store = try await TestStore.open(name: "dir", directory: dir)
    let directory = try await OrgDirectory(source: feed, store: store, trackUsers: true)
    try await directory.sync()
    #expect(try await directory.user(id: "t1")?.externalID == "T1")
    #expect(try await directory.user(externalID: "ST1")?.orgID == "c1")
    #expect(try await directory.user(externalID: "nobody") == nil)
    let county = try #require(OrgPath("/p/k/"))
    let school1 = try #require(OrgPath("/p/k/s1/"))
    #expect(try await directory.users(under: school1, kind: .teacher).map(\.externalID) == ["T1"])
    #expect(
      try await directory.users(under: county, kind: .teacher).map(\.externalID) == ["T1", "T2"])
    #expect(try await directory.users(under: county, kind: .student).map(\.id) == ["st1"])
    #expect(try await directory.children(ofParent: "pa1") == ["st1"])
    #expect(feed.revoked.withLock { $0["sess-1"] } != nil)

    // A move, a deactivation and an unlink, read after the old values were cached.
    feed.add(testUser("t1", "T1", .teacher, org: "s2", path: paths["s2"]!))
    feed.add(testUser("t2", "T2", .teacher, org: "s2", path: paths["s2"]!, active: false))
    feed.link(parent: "pa1", student: "st1", removed: true)
    try await directory.sync()
    #expect(try await directory.user(id: "t1")?.orgID == "s2")
    #expect(try await directory.user(externalID: "T2")?.active == false)
    #expect(try await directory.users(under: school1, kind: .teacher).isEmpty)
    #expect(try await directory.users(under: county, kind: .teacher).map(\.id) == ["t1"])
    #expect(try await directory.children(ofParent: "pa1").isEmpty)
    let cursor = directory.cursor
    #expect(cursor == Int64(feed.changes.withLock { $0.count }))

    // A restart while identity is down: the tree and cursor load, users are read on demand.
    await store.close()
    let reopened = try await TestStore.open(name: "dir", directory: dir)
    let down = FakeFeed()
    down.down.withLock { $0 = true }
    let again = try await OrgDirectory(source: down, store: reopened, trackUsers: true)
    #expect(again.cursor == cursor)
    #expect(again.cachedUserCount == 0)
    #expect(again.org(code: "C2")?.path == "/p/k/s2/c2/")
    #expect(try await again.user(externalID: "T1")?.orgID == "s2")
    #expect(try await again.users(under: county, kind: .teacher).map(\.id) == ["t1"])
    // The restarted replica's verifier still refuses the revoked session.
    #expect(down.revoked.withLock { $0["sess-1"] } != nil)
    await reopened.close()
  }

  /// Users read together by external id are those read one by one: cached, uncached and
  /// unknown ids in one call, an id shared by a deactivated user and its active successor,
  /// and after a sync the changed users, not the cached ones.
  @Test func usersReadTogetherAreTheUsersReadOneByOne() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let feed = FakeFeed()
    addTree(feed)
    for i in 0..<60 {
      feed.add(testUser("u\(i)", "U\(i)", .teacher, org: i % 2 == 0 ? "s1" : "s2",
        path: paths[i % 2 == 0 ? "s1" : "s2"]!, active: i % 7 != 3))
    }
    feed.add(testUser("old", "SHARED", .teacher, org: "s1", path: paths["s1"]!, active: false))
    feed.add(testUser("new", "SHARED", .teacher, org: "s2", path: paths["s2"]!))
    let store = try await TestStore.open(name: "dir", directory: dir)
    let directory = try await OrgDirectory(
      source: feed, store: store, trackUsers: true, userCacheCapacity: 16)
    try await directory.sync()
    let ids = (0..<60).map { "U\($0)" } + ["SHARED", "NOBODY", "U5", "U5"]
    // Some are cached first, more than the cache holds.
    for i in stride(from: 0, to: 60, by: 3) { _ = try await directory.user(externalID: "U\(i)") }
    func oneByOne() async throws -> [String: DirectoryUser] {
      var out: [String: DirectoryUser] = [:]
      for id in ids { out[id] = try await directory.user(externalID: id) }
      return out
    }
    let together = try await directory.users(externalIDs: ids)
    #expect(together.count == 61)
    #expect(together["SHARED"]?.id == "new" && together["NOBODY"] == nil)
    #expect(together["U3"]?.active == false && together["U4"]?.orgID == "s1")
    #expect(together == (try await oneByOne()))
    #expect(directory.cachedUserCount <= 16)
    feed.add(testUser("u4", "U4", .teacher, org: "s2", path: paths["s2"]!, active: false))
    try await directory.sync()
    let after = try await directory.users(externalIDs: ["U4", "U6"])
    #expect(after["U4"]?.orgID == "s2" && after["U4"]?.active == false)
    #expect(after["U6"]?.orgID == "s1")
    #expect(try await directory.users(externalIDs: []).isEmpty)
    await store.close()
  }

  @Test func theUserCacheStaysWithinItsBound() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let feed = FakeFeed()
    addTree(feed)
    for i in 0..<300 {
      feed.add(testUser("u\(i)", "U\(i)", .student, org: "c1", path: paths["c1"]!))
    }
    let store = try await TestStore.open(name: "dir", directory: dir)
    let directory = try await OrgDirectory(
      source: feed, store: store, trackUsers: true, userCacheCapacity: 16)
    try await directory.sync()
    var peak = 0
    for round in 0..<2 {
      for i in 0..<300 {
        let user = try await directory.user(externalID: "U\(i)")
        #expect(user?.id == "u\(i)", "round \(round)")
        #expect(try await directory.user(id: "u\(i)")?.externalID == "U\(i)")
        peak = max(peak, directory.cachedUserCount)
      }
    }
    #expect(peak == 16)
    await store.close()
  }

  @Test func twoReplicasFollowOneFeedIntoOneDatabase() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    // Small pages fetched after random pauses, so the two replicas' pages interleave.
    let feed = FakeFeed(pageLimit: 7, pause: .milliseconds(4))
    addTree(feed)
    let storeA = try await TestStore.open(name: "dir", directory: dir)
    let storeB = try await secondReplicaStore(storeA, dir: dir)
    let sourceA = ReplicaSource(feed)
    let sourceB = ReplicaSource(feed)
    let a = try await OrgDirectory(source: sourceA, store: storeA, trackUsers: true)
    let b = try await OrgDirectory(source: sourceB, store: storeB, trackUsers: true)
    let users = 120
    let race = RaceState()
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        defer { race.writing.store(false, ordering: .releasing) }
        for i in 0..<users {
          feed.add(testUser("u\(i)", "U\(i)", .teacher, org: "s1", path: paths["s1"]!))
          if i % 2 == 0 {
            feed.add(testUser("u\(i / 2)", "U\(i / 2)", .teacher, org: "s2", path: paths["s2"]!))
          }
          if i % 5 == 0 {
            feed.add(
              testUser("u\(i / 3)", "U\(i / 3)", .teacher, org: "s1", path: paths["s1"]!,
                active: false))
          }
          if i % 30 == 0 { feed.revoke(session: "sess-\(i)") }
          try await Task.sleep(for: .milliseconds(2))
        }
      }
      for replica in [a, b] {
        group.addTask {
          while true {
            let done = !race.writing.load(ordering: .acquiring)
            try await replica.sync()
            if done { return }
          }
        }
      }
      // The persisted copy is, at every moment, exactly the feed up to its cursor, and the
      // cursor only moves forward.
      group.addTask {
        var last: Int64 = 0
        var checks = 0
        while race.writing.load(ordering: .acquiring) || checks < 3 {
          let seen = try await snapshot(storeA)
          if seen.cursor < last {
            race.problems.withLock { $0.append("cursor moved back from \(last) to \(seen.cursor)") }
          }
          last = seen.cursor
          let expected = try expectedUsers(feed, through: seen.cursor)
          if seen.users != expected {
            race.problems.withLock {
              $0.append("at cursor \(seen.cursor) the copy differs from the feed")
            }
          }
          checks += 1
          try await Task.sleep(for: .milliseconds(5))
        }
      }
      try await group.waitForAll()
    }
    #expect(race.problems.withLock { $0 } == [])
    let head = Int64(feed.changes.withLock { $0.count })
    #expect(a.cursor == head)
    #expect(b.cursor == head)
    #expect(try await snapshot(storeA).cursor == head)
    let expected = try expectedUsers(feed, through: head)
    #expect(expected.count == users)
    for replica in [a, b] {
      for (id, state) in expected {
        let user = try await replica.user(id: id)
        #expect(user.map { $0.orgID + ($0.active ? "" : "-off") } == state, "user \(id)")
      }
      let county = try #require(OrgPath("/p/k/"))
      let active = expected.values.filter { !$0.hasSuffix("-off") }.count
      #expect(try await replica.users(under: county, kind: .teacher).count == active)
    }
    // Every replica's verifier heard of every revoked session.
    let sessions = Set(
      feed.changes.withLock { $0 }.filter { $0.entity == "session" }.map(\.id))
    #expect(Set(sourceA.revoked.withLock { $0.keys }) == sessions)
    #expect(Set(sourceB.revoked.withLock { $0.keys }) == sessions)
    if storeB !== storeA { await storeB.close() }
    await storeA.close()
  }

  @Test func aReplicaSeesAnotherReplicasChangesBeforeItsNextPoll() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let feed = FakeFeed()
    addTree(feed)
    feed.add(testUser("t1", "T1", .teacher, org: "s1", path: paths["s1"]!))
    let storeA = try await TestStore.open(name: "dir", directory: dir)
    let storeB = try await secondReplicaStore(storeA, dir: dir)
    let a = try await OrgDirectory(source: feed, store: storeA, trackUsers: true)
    let b = try await OrgDirectory(
      source: feed, store: storeB, trackUsers: true, pollInterval: .seconds(120))
    try await a.sync()
    try await b.sync()
    #expect(try await b.user(id: "t1")?.orgID == "s1")
    #expect(try await b.user(externalID: "T1")?.active == true)
    // B polls every two minutes; A applies a move, a deactivation and a new class.
    let polling = Task { try await b.run() }
    try await Task.sleep(for: .milliseconds(300))
    feed.add(testUser("t1", "T1", .teacher, org: "s2", path: paths["s2"]!, active: false))
    feed.add(testOrg("c3", "C3", .class, parent: "s2", path: "/p/k/s2/c3/"))
    try await a.sync()
    // B's cached user is dropped as soon as A's write is known to B's store...
    #expect(try await waitUntil(seconds: 5) { try await b.user(id: "t1")?.orgID == "s2" })
    #expect(try await b.user(externalID: "T1")?.active == false)
    // ...and B follows the feed at once instead of waiting for its poll.
    #expect(try await waitUntil(seconds: 5) { b.org(code: "C3") != nil })
    #expect(b.cursor == a.cursor)
    polling.cancel()
    _ = await polling.result
    if storeB !== storeA { await storeB.close() }
    await storeA.close()
  }

  @Test func theOldPersistedFormMovesToTheIndexedTablesOnce() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try await TestStore.open(name: "dir", directory: dir)
    // What the pre-province directory wrote: every entity in runtime_directory.
    let org = testOrg("s1", "S1", .school, parent: "", path: "/s1/")
    let user = testUser("t1", "T1", .teacher, org: "s1", path: "/s1/")
    let revokedAt = Date().addingTimeInterval(-60)
    try await store.saveDirectory(
      upserts: [
        DirectoryRow(entity: "org", id: "s1", payload: try org.serializedData()),
        DirectoryRow(entity: "user", id: "t1", payload: try user.serializedData()),
        DirectoryRow(entity: "guardian_link", id: "pa1:st1", payload: Data()),
        DirectoryRow(
          entity: "session", id: "sess-1",
          payload: Data(String(revokedAt.timeIntervalSince1970).utf8)),
      ], deletions: [], cursor: 42)
    let feed = FakeFeed()
    feed.down.withLock { $0 = true }
    let directory = try await OrgDirectory(source: feed, store: store, trackUsers: true)
    #expect(directory.cursor == 42)
    #expect(directory.org(code: "S1")?.path == "/s1/")
    #expect(try await directory.user(externalID: "T1")?.orgID == "s1")
    #expect(try await directory.users(under: OrgPath("/s1/")!, kind: .teacher).count == 1)
    #expect(try await directory.children(ofParent: "pa1") == ["st1"])
    #expect(feed.revoked.withLock { $0["sess-1"] } != nil)
    #expect(try await store.loadDirectory().rows.isEmpty)
    // A second start finds nothing left to move and the same copy.
    let again = try await OrgDirectory(source: feed, store: store, trackUsers: true)
    #expect(try await again.user(id: "t1")?.externalID == "T1")
    #expect(again.cursor == 42)
    await store.close()
  }
}
