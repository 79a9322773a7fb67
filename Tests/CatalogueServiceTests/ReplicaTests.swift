import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

/// Two catalogue replicas in this process on one PostgreSQL database, written to at once: the
/// invariants SQLite's single writer used to keep.
@Suite(
  "Catalogue replicas on one PostgreSQL database", .serialized,
  .enabled(if: TestStore.postgresServer != nil))
struct CatalogueReplicaTests {
  /// Records a usage event through `replica`.
  static func use(
    _ w: World, replica: Int, _ id: String, _ kind: Smartschool_Catalogue_V1_UsageKind,
    by user: String, rating: Int32 = 0
  ) async throws -> Smartschool_Catalogue_V1_ResourceStats {
    try await w.replicas[replica].recordUsage(
      .with {
        $0.resourceID = id
        $0.kind = kind
        $0.rating = rating
      }, metadata: w.auth(user))
  }

  @Test func ratingsAndFavouritesThroughTwoReplicasAtOnceCountOnce() async throws {
    try await withWorld(replicas: 2) { w in
      let r = try await w.published("tA1", "一次函数课件", reviewer: "revP", scope: .province)
      let users = ["tA1", "tA1b", "tA2", "sA1", "revS", "revA"]
      // Each user favourites twice and rates four times (the last rating 1 + index % 5 stars),
      // racing the others, alternately on each replica. Eight calls at most are in flight: all
      // of them queue on one resource's row lock holding a connection of a 4-connection test
      // pool, and more at once would only test the pool's lease limit on a loaded machine.
      var jobs: [@Sendable () async throws -> Void] = []
      for (index, user) in users.enumerated() {
        for attempt in 0..<2 {
          jobs.append { _ = try await Self.use(w, replica: attempt, r.id, .favourite, by: user) }
        }
        jobs.append {
          for attempt in 0..<4 {
            let stars = attempt == 3 ? Int32(1 + index % 5) : 5
            _ = try await Self.use(w, replica: attempt % 2, r.id, .rate, by: user, rating: stars)
          }
        }
        jobs.append {
          for attempt in 0..<3 {
            _ = try await Self.use(w, replica: attempt % 2, r.id, .rate, by: "tB1", rating: 2)
          }
        }
      }
      let failures = await withTaskGroup(of: String?.self) { group in
        var failures: [String] = []
        for (n, job) in jobs.enumerated() {
          if n >= 8, let failure = await group.next() { failures += failure.map { [$0] } ?? [] }
          group.addTask {
            do { try await job(); return nil } catch { return "job \(n): \(error)" }
          }
        }
        for await failure in group { failures += failure.map { [$0] } ?? [] }
        return failures
      }
      #expect(failures.isEmpty, "\(failures)")
      let stats = try await Self.use(w, replica: 1, r.id, .view, by: "tA1")
      let expectedSum = users.indices.reduce(0) { $0 + 1 + $1 % 5 } + 2
      #expect(stats.favourites == Int64(users.count), "\(stats)")
      #expect(stats.ratingCount == Int64(users.count + 1), "\(stats)")
      #expect(
        abs(stats.ratingAverage - Double(expectedSum) / Double(users.count + 1)) < 1e-9,
        "\(stats)")
      // Unfavouriting twice at once on both replicas removes one favourite.
      async let a = Self.use(w, replica: 0, r.id, .unfavourite, by: "tA1b")
      async let b = Self.use(w, replica: 1, r.id, .unfavourite, by: "tA1b")
      _ = try await (a, b)
      let after = try await Self.use(w, replica: 0, r.id, .view, by: "tA1")
      #expect(after.favourites == Int64(users.count - 1))
    }
  }

  @Test func theSameCurriculumImportedThroughTwoReplicasAtOnceRejectsNoRow() async throws {
    try await withWorld(replicas: 2) { w in
      let rows = curriculumRows()
      for round in 0..<3 {
        let renamed = rows.map { row -> Smartschool_Catalogue_V1_ImportCurriculumRequest in
          var row = row
          if case .node = row.row { row.node.name += " \(round)" }
          return row
        }
        async let first = w.replicas[0].importCurriculum(
          metadata: w.auth("admin"),
          requestProducer: { writer in try await writer.write(contentsOf: renamed) })
        async let second = w.replicas[1].importCurriculum(
          metadata: w.auth("admin"),
          requestProducer: { writer in try await writer.write(contentsOf: renamed) })
        let (a, b) = try await (first, second)
        #expect(a.rejected == 0 && b.rejected == 0, "\(a.errors) \(b.errors)")
        #expect(a.accepted == Int64(rows.count) && b.accepted == Int64(rows.count))
        if round == 0 {
          // Every row created once, by one replica or the other.
          #expect(a.created + b.created == Int64(rows.count), "\(a) \(b)")
        }
      }
      let nodes = try await w.replicas[1].listCurriculum(
        .with { $0.editionCode = "PEP-MATH-J" }, metadata: w.auth("tA1"))
      #expect(!nodes.nodes.isEmpty && nodes.nodes.allSatisfy { $0.name.hasSuffix(" 2") })
    }
  }

  /// Outcome of a review call: the status it reached, or the error code.
  enum Review: Sendable, Equatable {
    case moved(Smartschool_Catalogue_V1_ResourceStatus)
    case refused(RPCError.Code)
  }

  static func review(
    _ w: World, replica: Int, _ id: String, _ action: Smartschool_Catalogue_V1_ReviewAction,
    by user: String
  ) async throws -> Review {
    do {
      let r = try await w.replicas[replica].transitionResource(
        .with {
          $0.id = id
          $0.action = action
          $0.comment = "审核意见"
        }, metadata: w.auth(user))
      return .moved(r.status)
    } catch let error as RPCError {
      return .refused(error.code)
    }
  }

  @Test func twoReviewersDecidingAtOnceOnTwoReplicasCannotBothSucceed() async throws {
    try await withWorld(replicas: 2) { w in
      for round in 0..<8 {
        let r = try await w.create("tA1", "课件 \(round)", scope: .county)
        try await w.submit(r.id, by: "tA1")
        async let approved = Self.review(w, replica: 0, r.id, .approve, by: "revA")
        async let rejected = Self.review(w, replica: 1, r.id, .reject, by: "revP")
        let outcomes = try await [approved, rejected]
        let moved = outcomes.filter { if case .moved = $0 { true } else { false } }
        #expect(moved.count == 1, "round \(round): \(outcomes)")
        #expect(outcomes.contains(.refused(.failedPrecondition)), "round \(round): \(outcomes)")
        let history = try await w.replicas[1].listTransitions(
          .with { $0.resourceID = r.id }, metadata: w.auth("tA1"))
        let decision: Smartschool_Catalogue_V1_ReviewAction =
          moved == [.moved(.published)] ? .approve : .reject
        #expect(history.transitions.map(\.action) == [.submit, decision])
      }
    }
  }
}
