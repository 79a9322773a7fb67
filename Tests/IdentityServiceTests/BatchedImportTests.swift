import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

/// The batched form of ImportUsers (`users`, many rows a message) against the single-row form
/// (`user`), on either store.
@Suite("Identity batched user imports over gRPC")
struct BatchedUserImportTests {
  typealias Request = Smartschool_Identity_V1_ImportUsersRequest

  /// 6,000 rows across three server batches, with bad rows among them (an unknown org, a taken
  /// username, a row repeating an earlier user).
  static func rows() -> [User] {
    var rows = (0..<6000).map { i in ImportTests.row("B\(i)", "bat\(i)", "学生\(i)").user }
    rows[10] = ImportTests.row("B10", "bat10", "x", org: "NO-SUCH").user
    rows[1999] = ImportTests.row("B1999", "BAT3", "x").user
    rows[2000] = ImportTests.row("B2000", "bad name!", "x").user
    rows[4100] = ImportTests.row("B7", "bat7", "Renamed").user
    return rows
  }

  /// `rows` in messages of the sizes in `sizes` (repeated); a size written as -n sends n rows
  /// with the first in `user` and the rest in `users`.
  static func messages(_ rows: [User], sizes: [Int]) -> [Request] {
    var out: [Request] = []
    var start = 0
    var k = 0
    while start < rows.count {
      let size = sizes[k % sizes.count]
      let end = min(rows.count, start + abs(size))
      let part = Array(rows[start..<end])
      out.append(
        .with {
          if size < 0, let first = part.first {
            $0.user = first
            $0.users = Array(part.dropFirst())
          } else {
            $0.users = part
          }
        })
      start = end
      k += 1
    }
    return out
  }

  static func send(_ identity: IdentityClient, token: String, _ messages: [Request]) async throws
    -> Smartschool_Common_V1_ImportSummary
  {
    try await identity.importUsers(
      metadata: bearer(token), requestProducer: { w in for m in messages { try await w.write(m) } })
  }

  /// What two imports must agree on for each stored user (ids and times differ).
  static func stored(_ identity: IdentityClient, token: String) async throws -> [String] {
    try await ImportTests.listed(identity, token: token, prefix: "bat").map {
      "\($0.externalID)|\($0.username)|\($0.displayName)|\($0.orgCode)|\($0.kind)|\($0.status)"
    }
  }

  @Test func batchesGiveTheSummaryUsersAndFeedOfSingleRows() async throws {
    let rows = Self.rows()
    var expected = Smartschool_Common_V1_ImportSummary()
    var users: [String] = []
    var events = 0
    try await withTree { identity, admin, _ in
      expected = try await ImportTests.importUsers(
        identity, token: admin, rows.map { user in .with { $0.user = user } })
      users = try await Self.stored(identity, token: admin)
      events = try await ImportTests.userEvents(identity, token: admin).events.count
    }
    #expect(expected.received == 6000 && expected.errors.map(\.index) == [10, 1999, 2000])
    #expect(expected.created == 5997 - 1 && expected.updated == 1)
    try await withTree { identity, admin, _ in
      // Mixed sizes and both fields: one row, a message of user + users, the cap exactly, and
      // messages across the server's 2,000-row batches.
      let messages = Self.messages(rows, sizes: [1, -3, 996, 5000, -998, 7])
      #expect(messages.contains { $0.users.count == 5000 } && messages.contains(where: \.hasUser))
      let summary = try await Self.send(identity, token: admin, messages)
      #expect(summary == expected)
      let now = try await Self.stored(identity, token: admin)
      #expect(now == users)
      let feed = try await ImportTests.userEvents(identity, token: admin)
      #expect(feed.events.count == events)

      // A repeat creates nothing and puts nothing on the feed.
      var renamed = rows
      renamed[7] = rows[4100]
      let again = try await Self.send(
        identity, token: admin, Self.messages(renamed, sizes: [1000]))
      #expect(again.created == 0 && again.updated == 5997)
      #expect(again.errors.map(\.index) == [10, 1999, 2000])
      let later = try await ImportTests.userEvents(identity, token: admin, after: feed.last)
      #expect(later.events.isEmpty)

      // A message with no rows is one empty row, as it always was in the single-row form.
      let empty = try await Self.send(identity, token: admin, [Request(), Request()])
      #expect(empty.received == 2 && empty.rejected == 2 && empty.errors.map(\.index) == [0, 1])
    }
  }

  @Test func aMessageOverTheCapFailsTheStreamAndKeepsCommittedBatches() async throws {
    try await withTree { identity, admin, _ in
      let good = (0..<2500).map { i in ImportTests.row("C\(i)", "bat\(i)", "c\(i)").user }
      // 100,000 rows in one message (about 500 KB: under the 4 MiB message limit).
      let over = Request.with {
        $0.users = Array(repeating: .with { $0.externalID = "x" }, count: 100_000)
      }
      let error = await rpcError {
        _ = try await Self.send(identity, token: admin, [.with { $0.users = good }, over])
      }
      #expect(error?.code == .invalidArgument)
      #expect(error?.message.contains("users") == true)
      #expect(error?.message.contains("100000 rows") == true)
      // The first 2,000 rows were a whole batch before the bad message; the rest was not.
      let landed = try await Self.stored(identity, token: admin)
      #expect(landed.count == 2000)
      // user + 5,000 users is one row over the cap.
      let justOver = await rpcError {
        _ = try await Self.send(
          identity, token: admin,
          [.with {
            $0.user = good[0]
            $0.users = Array(good.prefix(5000 - 2500)) + Array(good.prefix(2500))
          }])
      }
      #expect(justOver?.code == .invalidArgument)
    }
  }
}
