import Foundation
import GRDB
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf
import Synchronization
import Testing
import TestSupport

/// Bulk writes' feed events packed in blocks (ChangeBlocks.swift), on this run's store: a
/// follower sees exactly the events, numbers, pages and scopes it would see from one row an
/// event, and the feed holds a row a block.
@Suite("Change feed blocks")
struct ChangeBlockTests {
  /// Records `events` in one write transaction of `store`, whichever backend it is.
  static func record(_ store: any ServiceStorage, _ events: [ChangeEvent]) async throws {
    if let store = store as? Store {
      try await store.write { db in try ChangeFeed.record(db, events: events) }
    } else if let store = store as? PostgresStore {
      try await store.write { tx in tx.recordChanges(events) }
    }
  }

  /// The feed's rows (a block counts one).
  static func rowCount(_ store: any ServiceStorage) async throws -> Int {
    if let store = store as? Store {
      return try await store.read { db in
        try Int.fetchOne(db, sql: "SELECT count(*) FROM runtime_changes") ?? 0
      }
    }
    let store = store as! PostgresStore
    return try await store.query("SELECT count(*) FROM runtime_changes").first![0].decode(
      Int.self)
  }

  /// What a follower must get for `e` numbered `sequence`.
  static func expected(_ e: ChangeEvent, _ sequence: Int64) -> Smartschool_Common_V1_Change {
    var c = Smartschool_Common_V1_Change()
    c.sequence = sequence
    c.entity = e.entity
    c.id = e.id
    c.naturalKey = e.naturalKey
    c.op = Smartschool_Common_V1_ChangeOp(rawValue: e.op) ?? .unspecified
    c.time = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: e.time))
    c.orgPath = e.orgPath
    if let type = e.payloadType, let payload = e.payload {
      c.payload = Google_Protobuf_Any()
      c.payload.typeURL = type
      c.payload.value = payload
    }
    return c
  }

  static let paths = [
    "/p/c1/co1/s1/", "/p/c1/co1/s2/", "/p/c1/co2/s3/", "/p/c2/co3/s4/", "/p/c1/co1/s1/k1/",
    "/p/智慧/学校/", "/p/智能/", "/",
  ]

  /// `count` events of several kinds, paths, times (runs sharing one), keys equal to their ids
  /// or not, deletes without payloads, empty and binary payloads.
  static func events(_ tag: String, _ count: Int, paths: [String] = paths) throws
    -> [ChangeEvent]
  {
    try (0..<count).map { n in
      var e = try ChangeEvent(
        entity: n % 11 == 3 ? "session" : (n % 2 == 0 ? "lesson" : "user"),
        id: "\(tag)-\(n)", naturalKey: n % 3 == 0 ? "\(tag)-\(n)" : "k\t\(tag)\(n)",
        op: n % 7 == 0 ? .delete : .upsert, orgPath: paths[(n * 5 + n / 9) % paths.count],
        time: Date(timeIntervalSince1970: 1_733_526_000.123_456_7 + Double(n / 4) / 3))
      if n % 7 != 0 {
        e.payloadType = "type.googleapis.com/smartschool.t\(n % 3)"
        e.payload = Data((0..<(n % 13 == 0 ? 0 : n % 300)).map { UInt8(($0 * 37 + n) % 256) })
      }
      return e
    }
  }

  /// Every page a follower reads from `after` with pages of `limit`, joined.
  static func follow(
    _ store: any ServiceStorage, after: Int64, limit: Int, scopes: [OrgPath]?,
    unscoped: [String]
  ) async throws -> [Smartschool_Common_V1_Change] {
    var out: [Smartschool_Common_V1_Change] = []
    var cursor = after
    for _ in 0..<10_000 {
      let page = try await store.listChanges(
        after: cursor, limit: limit, scopes: scopes, unscoped: unscoped)
      #expect(page.changes.count <= limit)
      out += page.changes
      guard page.hasMore else { return out }
      #expect(page.changes.count == limit, "a page short of its limit says more follow")
      cursor = page.changes.last!.sequence
    }
    Issue.record("the feed did not end")
    return out
  }

  @Test func blocksListExactlyAsOneRowAnEvent() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try await TestStore.open(name: "blocks", directory: dir)
    defer { Task { await store.close() } }
    // Transactions of 3, 1,000 (four blocks), 2, 300 (two) and 1 events.
    let writes = [
      try Self.events("a", 3), try Self.events("b", 1_000), try Self.events("c", 2),
      try Self.events("d", 300), try Self.events("e", 1),
    ]
    for w in writes { try await Self.record(store, w) }
    let all = writes.joined().enumerated().map { Self.expected($1, Int64($0 + 1)) }
    #expect(try await store.changeFeedHead() == 1_306)
    #expect(try await Self.rowCount(store) == 3 + 4 + 2 + 2 + 1)

    let filters: [(scopes: [OrgPath]?, unscoped: [String])] = [
      (nil, []), ([.root], []), ([OrgPath("/p/c1/co1/")!], []),
      ([OrgPath("/p/c1/co1/s1/")!, OrgPath("/p/c2/")!], []),
      ([OrgPath("/p/c1/co2/")!], ["session"]), ([OrgPath("/p/智慧/")!], []),
      ([OrgPath("/p/c9/")!], []), ([OrgPath("/p/c9/")!], ["session", "nothing"]),
    ]
    for f in filters {
      let scopes = f.scopes?.map(\.description)
      let visible = all.filter { c in
        guard let scopes, !scopes.contains("/") else { return true }
        return f.unscoped.contains(c.entity) || scopes.contains { c.orgPath.hasPrefix($0) }
      }
      for limit in [1, 7, 256, 1_000] {
        let got = try await Self.follow(
          store, after: 0, limit: limit, scopes: f.scopes, unscoped: f.unscoped)
        #expect(got == visible, "\(f) by \(limit): \(got.count) of \(visible.count)")
      }
      // Starting anywhere: before, inside and at the end of blocks, past the end.
      for after in [2, 3, 4, 100, 258, 259, 1_003, 1_005, 1_200, 1_305, 1_306, 2_000] {
        let page = try await store.listChanges(
          after: Int64(after), limit: 50, scopes: f.scopes, unscoped: f.unscoped)
        let want = visible.filter { $0.sequence > after }
        #expect(page.changes == Array(want.prefix(50)), "\(f) after \(after)")
        #expect(page.hasMore == (want.count > 50), "\(f) after \(after)")
      }
    }
    // Nothing for an empty scope list.
    let none = try await store.listChanges(after: 0, limit: 10, scopes: [], unscoped: ["user"])
    #expect(none.changes.isEmpty && !none.hasMore)
  }

  /// Writers committing bulk and single events at once, while a follower pages along: the
  /// follower sees every event once, in order, with no gap it later finds filled.
  @Test func aFollowerMissesNothingWhileBlocksAreWritten() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try await TestStore.open(name: "racing", directory: dir)
    defer { Task { await store.close() } }
    let writers = 4
    let rounds = 6
    let seen = try await withThrowingTaskGroup(of: [Smartschool_Common_V1_Change].self) { group in
      for w in 0..<writers {
        group.addTask {
          for r in 0..<rounds {
            let size = (w + r) % 3 == 0 ? 5 : 256 + (w * 97 + r * 131) % 700
            try await Self.record(store, try Self.events("w\(w)r\(r)", size))
          }
          return []
        }
      }
      group.addTask {
        var got: [Smartschool_Common_V1_Change] = []
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(120)
        while clock.now < deadline {
          let page = try await store.listChanges(
            after: got.last?.sequence ?? 0, limit: 100, scopes: nil, unscoped: [])
          got += page.changes
          if page.changes.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
          let head = try await store.changeFeedHead()
          if got.count > 0 && got.last!.sequence == head
            && got.count >= Self.total(writers: writers, rounds: rounds)
          {
            break
          }
        }
        return got
      }
      var followed: [Smartschool_Common_V1_Change] = []
      for try await result in group where !result.isEmpty { followed = result }
      return followed
    }
    let total = Self.total(writers: writers, rounds: rounds)
    #expect(seen.count == total)
    #expect(seen.map(\.sequence) == Array(1...Int64(total)))
    // The follower's pages are the feed read afterwards in one go.
    let after = try await Self.follow(store, after: 0, limit: 1_000, scopes: nil, unscoped: [])
    #expect(after == seen)
    #expect(Set(seen.map(\.id)).count == total)
  }

  static func total(writers: Int, rounds: Int) -> Int {
    var n = 0
    for w in 0..<writers {
      for r in 0..<rounds { n += (w + r) % 3 == 0 ? 5 : 256 + (w * 97 + r * 131) % 700 }
    }
    return n
  }

  /// A block's body cut short or with any byte changed is refused or read, never read past.
  @Test func aDamagedBlockIsRefusedNotReadPast() throws {
    let block = ChangeBlock.pack(try Self.events("x", 40))[0]
    let body = Array(block.body)
    #expect(try ChangeBlock.unpack(body, first: 1, last: 40).count == 40)
    for cut in 0..<body.count {
      #expect(throws: ServiceError.self) {
        try ChangeBlock.unpack(body[..<cut], first: 1, last: 40)
      }
    }
    // Numbered for another count: refused.
    #expect(throws: ServiceError.self) { try ChangeBlock.unpack(body, first: 1, last: 41) }
    var random = SeededGenerator(seed: 7)
    for _ in 0..<2_000 {
      var damaged = body
      let at = Int.random(in: 0..<damaged.count, using: &random)
      damaged[at] = UInt8.random(in: 0...255, using: &random)
      _ = try? ChangeBlock.unpack(damaged, first: 1, last: 40)
    }
  }

  /// The block's common path stops at a whole character, so the database's prefix tests
  /// (which count characters) agree with it.
  @Test func aBlocksScopeIsTheCommonPathCutAtACharacter() throws {
    func scope(_ paths: [String]) throws -> String {
      ChangeBlock.pack(
        try paths.enumerated().map {
          try ChangeEvent(entity: "e", id: "\($0)", naturalKey: "k", op: .upsert, orgPath: $1)
        })[0].scope
    }
    #expect(try scope(["/p/a/b/", "/p/a/c/"]) == "/p/a/")
    #expect(try scope(["/p/智慧/", "/p/智能/"]) == "/p/智")
    // 智 and 慧 share their first UTF-8 byte (E6): the prefix must not end inside a character.
    #expect(try scope(["/p/智/", "/p/慧/"]) == "/p/")
    #expect(try scope(["/x/", "/y/"]) == "/")
    #expect(try scope(["/p/a/"]) == "/p/a/")
  }
}
