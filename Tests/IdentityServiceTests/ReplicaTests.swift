import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
@testable import IdentityService
import Logging
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

/// Three identity replicas in this process on one PostgreSQL database, as ops run them behind
/// a balancer: what one replica does, the others honour within seconds.
@Suite(
  "Identity replicas on one PostgreSQL database",
  .enabled(if: TestStore.postgresServer != nil))
struct ReplicaTests {
  /// Builds three replicas at the same moment on an empty database, then runs `body` with a
  /// client of each.
  func withReplicas(
    _ body: @Sendable ([IdentityClient]) async throws -> Void
  ) async throws {
    try await withReplicas { clients, _ in try await body(clients) }
  }

  /// The same, `body` also given the replicas' database.
  func withReplicas(
    _ body: @Sendable ([IdentityClient], DatabaseSettings) async throws -> Void
  ) async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let config = try await TestStore.config(service: "identity", directory: dir)
    var quiet = Logger(label: "identity")
    quiet.logLevel = .critical
    let logger = quiet
    let definitions = try await withThrowingTaskGroup(of: ServiceDefinition.self) { group in
      for _ in 0..<3 {
        group.addTask {
          try await buildIdentityService(config: config, settings: .forTests(), logger: logger)
        }
      }
      var all: [ServiceDefinition] = []
      for try await d in group { all.append(d) }
      return all
    }
    try await withHost(definitions[0], config: config) { p0, _ in
      try await withHost(definitions[1], config: config) { p1, _ in
        try await withHost(definitions[2], config: config) { p2, _ in
          try await withClient(port: p0) { c0 in
            try await withClient(port: p1) { c1 in
              try await withClient(port: p2) { c2 in
                try await body(
                  [
                    IdentityClient(wrapping: c0), IdentityClient(wrapping: c1),
                    IdentityClient(wrapping: c2),
                  ], config.database!)
              }
            }
          }
        }
      }
    }
  }

  /// Polls `check` until it holds, for at most `seconds`.
  static func eventually(
    _ seconds: Double = 5, _ check: @Sendable () async throws -> Bool
  ) async throws -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
      if try await check() { return true }
      try await Task.sleep(for: .milliseconds(100))
    }
    return try await check()
  }

  /// Two replicas importing overlapping rows at once (2,500 each, 1,000 shared): every row is
  /// accepted, each user is made once, with one event on the feed.
  @Test func twoReplicasImportingTheSameRowsAtOnceMakeEachUserOnce() async throws {
    try await withReplicas { r in
      let admin = try await login(r[0], "admin", testAdminPassword)
      _ = try await buildTree(r[0], admin: admin)
      let rows = (0..<4000).map { i in ImportTests.row("R\(i)", "rep\(i)", "学生\(i)") }
      async let first = ImportTests.importUsers(r[1], token: admin, Array(rows[0..<2500]))
      async let second = ImportTests.importUsers(r[2], token: admin, Array(rows[1500..<4000]))
      let (a, b) = try await (first, second)
      try await ImportTests.expectEachUserOnce(
        r[0], token: admin, a, b, users: 4000, confirmed: 1000, username: "rep", key: "R")
    }
  }

  /// Two replicas importing the same 3,000 new users at once, one in row order and the other
  /// in reverse: both copy without the import lock, meet on each other's uncommitted users
  /// (where PostgreSQL may end one of them as a deadlock) and decide those batches again.
  /// Every row is accepted, each user made once (3,000 created, 3,000 confirmed), one event
  /// each on the feed.
  @Test func twoReplicasImportingTheSameNewUsersInOppositeOrdersMakeEachOnce() async throws {
    try await withReplicas { r in
      let admin = try await login(r[0], "admin", testAdminPassword)
      _ = try await buildTree(r[0], admin: admin)
      let rows = (0..<3000).map { i in ImportTests.row("O\(i)", "opp\(i)", "学生\(i)") }
      async let first = ImportTests.importUsers(r[1], token: admin, rows)
      async let second = ImportTests.importUsers(r[2], token: admin, rows.reversed())
      let (a, b) = try await (first, second)
      try await ImportTests.expectEachUserOnce(
        r[0], token: admin, a, b, users: 3000, confirmed: 3000, username: "opp", key: "O")
    }
  }

  /// While another replica's import holds the import lock (here a transaction on the database
  /// holding it), an import of new users lands without waiting for it, and an import that
  /// changes stored users waits its turn, then lands.
  @Test func newUsersLandWhileAnotherImportHoldsTheImportLock() async throws {
    try await withReplicas { r, database in
      let admin = try await login(r[0], "admin", testAdminPassword)
      _ = try await buildTree(r[0], admin: admin)
      var quiet = Logger(label: "side")
      quiet.logLevel = .critical
      let side = try await PostgresStore(
        settings: database, migrations: IdentityMigrations.postgres, logger: quiet)
      let stored = (0..<500).map { i in ImportTests.row("L\(i)", "lock\(i)", "学生\(i)") }
      #expect(try await ImportTests.importUsers(r[0], token: admin, stored).created == 500)
      let renamed = (0..<500).map { i in ImportTests.row("L\(i)", "lock\(i)", "学生改\(i)") }
      let fresh = (0..<2500).map { i in ImportTests.row("F\(i)", "free\(i)", "学生\(i)") }
      let client = r[1]
      typealias Importing = Task<Smartschool_Common_V1_ImportSummary, any Error>
      let (importing, freshDone, changing, waited) = try await side.write {
        tx -> (Importing, Bool, Importing, Bool) in
        try await tx.lock("identity.import.users")
        let importing = Task { try await ImportTests.importUsers(client, token: admin, fresh) }
        let changing = Task { try await ImportTests.importUsers(client, token: admin, renamed) }
        let freshDone = try await Self.eventually(30) {
          let rows = try await side.query(
            "SELECT count(*) FROM users WHERE username LIKE 'free%'")
          return try rows[0][0].decode(Int64.self) == 2500
        }
        let waited = try await Self.eventually(10) {
          let rows = try await side.query(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'advisory'")
          return try rows[0][0].decode(Int64.self) > 0
        }
        // The lock goes with this transaction either way, so a failure cannot hang the test.
        return (importing, freshDone, changing, waited)
      }
      await side.close()
      let landed = try await importing.value
      #expect(landed.created == 2500 && landed.errors.isEmpty)
      #expect(freshDone, "new users waited for the import lock")
      #expect(waited, "an import changing stored users did not wait for the import lock")
      let changed = try await changing.value
      #expect(changed.updated == 500 && changed.errors.isEmpty)
      #expect(try await ImportTests.listed(r[0], token: admin, prefix: "free").count == 2500)
      let names = try await ImportTests.listed(r[0], token: admin, prefix: "lock")
        .map(\.displayName)
      #expect(names.count == 500 && names.allSatisfy { $0.hasPrefix("学生改") })
    }
  }

  /// Whether some statement on `store`'s database waits for another transaction to end.
  static func someoneWaitsForATransaction(_ store: PostgresStore) async throws -> Bool {
    let rows = try await store.query(
      "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'")
    return try rows[0][0].decode(Int64.self) > 0
  }

  /// A user written outside the import (another replica's CreateUser, here a transaction on
  /// the database) takes a username the import's batch holds after the batch read the users:
  /// the batch's bulk copy fails on it, and the batch still lands every other row, refusing
  /// that one as taken meanwhile.
  @Test func aUsernameTakenWhileABatchIsWrittenRefusesOnlyThatRow() async throws {
    try await withReplicas { r, database in
      let admin = try await login(r[0], "admin", testAdminPassword)
      let tree = try await buildTree(r[0], admin: admin)
      var quiet = Logger(label: "side")
      quiet.logLevel = .critical
      let side = try await PostgresStore(
        settings: database, migrations: IdentityMigrations.postgres, logger: quiet)
      let rows = (0..<300).map { i in
        ImportTests.row("M\(i)", i == 150 ? "taken.meanwhile" : "mid\(i)", "学生\(i)",
          org: tree.classA1.code)
      }
      let client = r[1]
      // The other writer's user is uncommitted while the import reads, so the batch plans
      // the row as new; its copy then waits for that writer, which commits.
      let (importing, waited) = try await side.write {
        tx -> (Task<Smartschool_Common_V1_ImportSummary, any Error>, Bool) in
        try await tx.execute(
          """
          INSERT INTO users (id, external_id, username, display_name, kind, org_id, status,
            created_at, updated_at)
          VALUES ('side-user', 'SIDE', 'Taken.Meanwhile', 'side', 2, \(tree.classA1.id), 2, 0, 0)
          """)
        let importing = Task { try await ImportTests.importUsers(client, token: admin, rows) }
        let waited = try await Self.eventually(20) {
          try await Self.someoneWaitsForATransaction(side)
        }
        return (importing, waited)
      }
      await side.close()
      #expect(waited)
      let summary = try await importing.value
      #expect(summary.created == 299)
      #expect(summary.errors.map(\.index) == [150])
      // "taken meanwhile" when the copy met the other writer's row; "is taken" when a loaded
      // machine let that writer commit before the batch read the users. Either way one row.
      #expect(summary.errors.first?.reason.contains("taken") == true)
      let listed = try await ImportTests.listed(r[0], token: admin, prefix: "mid")
      #expect(listed.count == 299)
      let keys = try await ImportTests.userEvents(r[0], token: admin).events.map(\.key)
      #expect(keys.filter { $0.hasPrefix("M") }.count == 299)
      #expect(!keys.contains("M150"))
    }
  }

  @Test func replicasStartedAtOnceShareOneKeyOneAdminAndFollowEachOther() async throws {
    try await withReplicas { r in
      // One bootstrap admin, one current key, whichever replica answers.
      let tokens = try await withThrowingTaskGroup(of: String.self) { group in
        for c in r { group.addTask { try await login(c, "admin", testAdminPassword) } }
        var all: [String] = []
        for try await t in group { all.append(t) }
        return all
      }
      for c in r {
        let keys = try await c.listSigningKeys(.init(), metadata: bearer(tokens[0])).keys
        #expect(keys.filter(\.current).count == 1)
        for t in tokens { _ = try await c.whoAmI(.init(), metadata: bearer(t)) }
      }
      let users = try await r[1].listUsers(.init(), metadata: bearer(tokens[1])).users
      #expect(users.filter { $0.username == "admin" }.count == 1)

      // A rotation on replica 0 is published and used by the others within seconds, and a
      // token it signs with the new key is good at once everywhere.
      let rotated = try await r[0].rotateSigningKey(.init(), metadata: bearer(tokens[0]))
      let fresh = try await login(r[0], "admin", testAdminPassword)
      for c in r { _ = try await c.whoAmI(.init(), metadata: bearer(fresh)) }
      for c in r.dropFirst() {
        #expect(
          try await Self.eventually {
            try await c.listSigningKeys(.init(), metadata: bearer(fresh)).keys
              .first(where: \.current)?.keyID == rotated.keyID
          })
      }
      #expect(
        try await Self.eventually {
          let token = try await login(r[2], "admin", testAdminPassword)
          return token.split(separator: ".").first.map {
            String(decoding: Base64URL.decode(String($0)) ?? Data(), as: UTF8.self)
              .contains(rotated.keyID)
          } ?? false
        })

      // A role granted through replica 1 shows in WhoAmI at replica 2 (whose account cache
      // held the old bindings).
      let teacherToken = try await Self.teacher(r[1], admin: tokens[1])
      let before = try await r[2].whoAmI(.init(), metadata: bearer(teacherToken))
      let me = before.user.id
      _ = try await r[1].grantRole(
        .with {
          $0.userID = me
          $0.role = .provinceAdmin
          $0.orgCode = "RP-PROV"
        }, metadata: bearer(tokens[1]))
      #expect(
        try await Self.eventually {
          try await r[2].whoAmI(.init(), metadata: bearer(teacherToken)).bindings.count
            == before.bindings.count + 1
        })

      // A logout at replica 0 is refused at replicas 1 and 2 within seconds.
      _ = try await r[0].logout(.init(), metadata: bearer(teacherToken))
      for c in r.dropFirst() {
        #expect(
          try await Self.eventually {
            await statusCode { _ = try await c.whoAmI(.init(), metadata: bearer(teacherToken)) }
              == .unauthenticated
          })
      }
    }
  }

  /// A province and a staff member in it, created through `identity`; returns the teacher's token.
  static func teacher(_ identity: IdentityClient, admin: String) async throws -> String {
    _ = try await identity.createOrg(
      .with {
        $0.org = .with {
          $0.code = "RP-PROV"
          $0.name = "省"
          $0.kind = .province
        }
      }, metadata: bearer(admin))
    _ = try await newUser(
      identity, admin: admin, externalID: "RP-T1", username: "rp-teacher", kind: .staff,
      org: "RP-PROV")
    return try await login(identity, "rp-teacher", "Secret-pass-1")
  }
}
