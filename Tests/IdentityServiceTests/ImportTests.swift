import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

/// Streamed user imports larger than one batch, on either store: every good row lands, every
/// bad one is reported with its row, a second run changes and emits nothing, and two streams
/// importing the same rows at once make each user once.
@Suite("Identity user imports over gRPC")
struct ImportTests {
  static func row(
    _ ext: String, _ username: String, _ name: String, org: String = "CL-A1-3-1",
    kind: Smartschool_Identity_V1_UserKind = .student
  ) -> Smartschool_Identity_V1_ImportUsersRequest {
    .with {
      $0.user = .with {
        $0.externalID = ext
        $0.username = username
        $0.displayName = name
        $0.kind = kind
        $0.orgCode = org
      }
    }
  }

  static func importUsers(
    _ identity: IdentityClient, token: String, _ rows: [Smartschool_Identity_V1_ImportUsersRequest]
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    try await identity.importUsers(
      metadata: bearer(token), requestProducer: { w in for r in rows { try await w.write(r) } })
  }

  /// The user events on the feed after `after` (natural key, payload), and the last sequence.
  static func userEvents(_ identity: IdentityClient, token: String, after: Int64 = 0)
    async throws -> (events: [(key: String, user: User)], last: Int64)
  {
    var events: [(key: String, user: User)] = []
    var seq = after
    while true {
      let page = try await identity.listChanges(
        .with {
          $0.afterSequence = seq
          $0.pageSize = 1000
        }, metadata: bearer(token))
      for c in page.changes where c.entity == "user" {
        events.append((c.naturalKey, try User(serializedBytes: c.payload.value)))
      }
      seq = max(seq, page.lastSequence)
      if !page.moreAvailable { break }
    }
    return (events, seq)
  }

  /// What two imports run at once over shared rows must leave: every row accepted by one of
  /// them, `users` users made between them and `confirmed` rows counted as updates, each user
  /// once in a listing by `username` prefix and once on the feed by external id `key` prefix.
  static func expectEachUserOnce(
    _ identity: IdentityClient, token: String,
    _ a: Smartschool_Common_V1_ImportSummary, _ b: Smartschool_Common_V1_ImportSummary,
    users: Int, confirmed: Int, username: String, key: String
  ) async throws {
    #expect(a.errors.isEmpty && b.errors.isEmpty, "\(a.errors.prefix(3)) \(b.errors.prefix(3))")
    #expect(a.created + b.created == Int64(users))
    #expect(a.updated + b.updated == Int64(confirmed))
    #expect(try await listed(identity, token: token, prefix: username).count == users)
    let keys = try await userEvents(identity, token: token).events.map(\.key)
      .filter { $0.hasPrefix(key) }
    #expect(keys.count == users)
    #expect(Set(keys).count == users)
  }

  /// Every user of `prefix`'s external ids, by listing (username order).
  static func listed(_ identity: IdentityClient, token: String, prefix: String) async throws
    -> [User]
  {
    var users: [User] = []
    var pageToken = ""
    repeat {
      let page = try await identity.listUsers(
        .with {
          $0.namePrefix = prefix
          $0.pageSize = 1000
          $0.pageToken = pageToken
        }, metadata: bearer(token))
      users += page.users
      pageToken = page.nextPageToken
    } while !pageToken.isEmpty
    return users
  }

  /// 4,500 rows over three batches with bad rows among them: an unknown org, a taken
  /// username (earlier in the stream and in an earlier batch), a second row of a new user in a
  /// later batch. Then the same stream again: nothing created, nothing on the feed.
  @Test func aLongImportLandsGoodRowsReportsBadOnesAndRepeatsAsANoOp() async throws {
    try await withTree { identity, admin, _ in
      let n = 4500
      var rows = (0..<n).map { i in Self.row("E\(i)", "imp\(i)", "学生\(i)") }
      rows[10] = Self.row("E10", "imp10", "x", org: "NO-SUCH")
      rows[2500] = Self.row("E2500", "IMP3", "x")  // imp3 is row 3's, in the first batch
      rows[4100] = Self.row("E7", "imp7", "Renamed")  // E7 again, two batches later
      rows[4101] = Self.row("E8", "imp8", "学生8")  // E8 again, unchanged
      let summary = try await Self.importUsers(identity, token: admin, rows)
      #expect(summary.received == Int64(n))
      #expect(summary.errors.map(\.index) == [10, 2500])
      #expect(summary.errors.map(\.field) == ["user.org_code", "user.username"])
      #expect(summary.created == Int64(n - 4))
      #expect(summary.updated == 2)
      let users = try await Self.listed(identity, token: admin, prefix: "imp")
      #expect(users.count == n - 4)
      #expect(Set(users.map(\.externalID)).count == n - 4)
      #expect(users.first { $0.externalID == "E7" }?.displayName == "Renamed")
      #expect(users.allSatisfy { $0.status == .pendingActivation })
      // One event per new user and one for the change; none for the unchanged row.
      let feed = try await Self.userEvents(identity, token: admin)
      let keys = feed.events.map(\.key).filter { $0.hasPrefix("E") }
      #expect(keys.count == n - 4 + 1)
      #expect(keys.filter { $0 == "E7" }.count == 2)
      #expect(feed.events.last { $0.key == "E7" }?.user.displayName == "Renamed")
      #expect(feed.events.first { $0.key == "E9" }?.user.orgCode == "CL-A1-3-1")

      // The same users as they now are (row 7 renamed too): the second run changes nothing.
      rows[7] = rows[4100]
      let again = try await Self.importUsers(identity, token: admin, rows)
      #expect(again.created == 0)
      #expect(again.updated == Int64(n - 2))
      #expect(again.errors.map(\.index) == [10, 2500])
      let after = try await Self.userEvents(identity, token: admin, after: feed.last)
      #expect(after.events.isEmpty)
    }
  }

  /// Usernames passed on within one batch, as row by row: a user gives up a name, another
  /// existing user takes it, a new user takes the second one's old name, and a later row may
  /// not take a name still held.
  @Test func usernamesPassedOnWithinABatchLandAsRowByRow() async throws {
    try await withTree { identity, admin, _ in
      let a = Self.row("U1", "name.a", "One", org: "S-A1", kind: .teacher)
      let b = Self.row("U2", "name.b", "Two", org: "S-A1", kind: .teacher)
      _ = try await Self.importUsers(identity, token: admin, [a, b])
      let summary = try await Self.importUsers(
        identity, token: admin,
        [
          Self.row("U2", "name.x", "Two", org: "S-A1", kind: .teacher),
          Self.row("U1", "NAME.B", "One", org: "S-A1", kind: .teacher),
          Self.row("U3", "name.a", "Three", org: "S-A1", kind: .teacher),
          Self.row("U4", "Name.X", "Four", org: "S-A1", kind: .teacher),
        ])
      #expect(summary.created == 1)
      #expect(summary.updated == 2)
      #expect(summary.errors.map(\.index) == [3])
      #expect(summary.errors.map(\.field) == ["user.username"])
      func username(_ ext: String) async throws -> String {
        try await identity.getUser(.with { $0.externalID = ext }, metadata: bearer(admin)).username
      }
      #expect(try await username("U1") == "NAME.B")
      #expect(try await username("U2") == "name.x")
      #expect(try await username("U3") == "name.a")
    }
  }

  /// A row naming an existing user outside the caller's scope is refused, even when the row
  /// would move the user into the caller's scope; the user stays as it was.
  @Test func anExistingUserOutsideTheCallersScopeIsRefused() async throws {
    try await withTree { identity, admin, _ in
      let outside = try await newUser(
        identity, admin: admin, externalID: "TB1", username: "tb1", kind: .teacher, org: "S-B1")
      let official = try await newUser(
        identity, admin: admin, externalID: "OA", username: "official.a", kind: .staff,
        org: "K340121")
      _ = try await grant(identity, token: admin, user: official.id, role: .countyAdmin,
                          org: "K340121")
      let token = try await login(identity, "official.a", "Secret-pass-1")
      let summary = try await Self.importUsers(
        identity, token: token,
        [
          Self.row("TB1", "tb1", "moved", org: "S-A1", kind: .teacher),
          Self.row("TA1", "ta1", "new", org: "S-A1", kind: .teacher),
        ])
      #expect(summary.created == 1)
      #expect(summary.errors.map(\.index) == [0])
      #expect(summary.errors.map(\.field) == ["user.external_id"])
      let still = try await identity.getUser(.with { $0.id = outside.id }, metadata: bearer(admin))
      #expect(still.orgCode == "S-B1")
      #expect(still.displayName == "tb1")
    }
  }

  /// Two streams at once over overlapping rows (3,000 each, 1,500 shared): every row is
  /// accepted, each user exists once, and the feed has one event per user.
  @Test func twoStreamsImportingTheSameRowsAtOnceMakeEachUserOnce() async throws {
    try await withTree { identity, admin, _ in
      let rows = (0..<4500).map { i in Self.row("C\(i)", "conc\(i)", "学生\(i)") }
      async let first = Self.importUsers(identity, token: admin, Array(rows[0..<3000]))
      async let second = Self.importUsers(identity, token: admin, Array(rows[1500..<4500]))
      let (a, b) = try await (first, second)
      try await Self.expectEachUserOnce(
        identity, token: admin, a, b, users: 4500, confirmed: 1500, username: "conc", key: "C")
    }
  }

  /// A guardian import with the verdicts of linking row by row: each pair linked once however
  /// often it is named (its first row makes it, later ones count as updates), a link made
  /// before left as it is, unknown, wrong-kind and out-of-scope rows refused; one feed event
  /// per link made, in row order, keyed by the external ids.
  @Test func guardianImportLinksEachPairOnceAndFeedsItInRowOrder() async throws {
    try await withTree { identity, admin, _ in
      var users = (0..<30).flatMap { n in
        [
          Self.row("P\(n)", "parent\(n)", "家长\(n)", org: "S-A1", kind: .parent),
          Self.row("K\(n)", "kid\(n)", "学生\(n)"),
        ]
      }
      users.append(Self.row("KB", "kidb", "外县学生", org: "CL-B1-3-1"))
      #expect(try await Self.importUsers(identity, token: admin, users).created == 61)
      let official = try await newUser(
        identity, admin: admin, externalID: "OA", username: "official.a", kind: .staff,
        org: "K340121")
      _ = try await grant(
        identity, token: admin, user: official.id, role: .countyAdmin, org: "K340121")
      let token = try await login(identity, "official.a", "Secret-pass-1")
      func link(_ pairs: [(String, String)], as caller: String) async throws
        -> Smartschool_Common_V1_ImportSummary
      {
        try await identity.importGuardians(
          metadata: bearer(caller),
          requestProducer: { w in
            for (p, k) in pairs {
              try await w.write(.with {
                $0.parentExternalID = p
                $0.studentExternalID = k
              })
            }
          })
      }
      #expect(try await link([("P0", "K0")], as: admin).created == 1)
      let (_, before) = try await Self.userEvents(identity, token: admin)
      let pairs = (0..<30).map { ("P\($0)", "K\($0)") } + [
        ("P1", "K2"), ("P1", "K2"), ("K3", "K4"), ("P5", "NOPE"), ("P6", "KB"),
      ]
      let summary = try await link(pairs, as: token)
      #expect(summary.created == 30 && summary.updated == 2 && summary.rejected == 3)
      #expect(summary.errors.map(\.index) == [32, 33, 34])
      #expect(
        summary.errors.map(\.field)
          == ["parent_external_id", "student_external_id", "student_external_id"])
      var keys: [String] = []
      var after = before
      while true {
        let page = try await identity.listChanges(
          .with {
            $0.afterSequence = after
            $0.pageSize = 1000
          }, metadata: bearer(admin))
        keys += page.changes.filter { $0.entity == "guardian_link" }.map(\.naturalKey)
        after = max(after, page.lastSequence)
        if !page.moreAvailable { break }
      }
      #expect(keys == (1..<30).map { "P\($0):K\($0)" } + ["P1:K2"])
      let k2 = try #require(
        try await identity.listUsers(.with { $0.namePrefix = "kid2" }, metadata: bearer(admin))
          .users.first { $0.externalID == "K2" })
      let guardians = try await identity.listGuardians(
        .with { $0.studentID = k2.id }, metadata: bearer(admin))
      #expect(guardians.guardians.map(\.externalID).sorted() == ["P1", "P2"])
    }
  }
}
