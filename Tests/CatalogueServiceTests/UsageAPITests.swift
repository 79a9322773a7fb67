import Foundation
import GRPCCore
import SmartSchoolModel
import SwiftProtobuf
import TestSupport
import Testing

extension World {
  @discardableResult
  func use(
    _ user: String, _ id: String, _ kind: Smartschool_Catalogue_V1_UsageKind, rating: Int32 = 0,
    times: Int = 1
  ) async throws -> Smartschool_Catalogue_V1_ResourceStats {
    var stats = Smartschool_Catalogue_V1_ResourceStats()
    for _ in 0..<times {
      stats = try await catalogue.recordUsage(
        .with {
          $0.resourceID = id
          $0.kind = kind
          $0.rating = rating
        }, metadata: auth(user))
    }
    return stats
  }
}

@Suite("Usage, popularity, recommendations and the change feed through a real server")
struct UsageAPITests {
  @Test func usageStatsAndPopularInAScopeOverAPeriod() async throws {
    try await withWorld { w in
      let x = try await w.published("tA1", "X 课件", reviewer: "revP", scope: .city)
      let y = try await w.published("tA1", "Y 课件", reviewer: "revP", scope: .city)
      try await w.use("tA1b", x.id, .view, times: 3)
      try await w.use("tB1", y.id, .view, times: 5)
      // Favourites are per user and idempotent.
      try await w.use("tA1b", x.id, .favourite)
      try await w.use("tA1b", x.id, .favourite)
      try await w.use("tA2", x.id, .favourite)
      try await w.use("tA2", x.id, .unfavourite)
      try await w.use("tA2", x.id, .unfavourite)
      // A user's new rating replaces the old one.
      try await w.use("tA1b", x.id, .rate, rating: 2)
      try await w.use("tA1b", x.id, .rate, rating: 5)
      let stats = try await w.use("tA2", x.id, .rate, rating: 4)
      #expect(stats.views == 3 && stats.favourites == 1 && stats.ratingCount == 2)
      #expect(stats.ratingAverage == 4.5)
      #expect(stats.popularity == 3 + 5 * 1 + (9 - 4))
      let got = try await w.catalogue.getResource(.with { $0.id = x.id }, metadata: w.auth("tB1"))
      #expect(got.stats == stats)
      #expect(
        try await w.catalogue.getResourceStats(
          .with { $0.resourceID = x.id }, metadata: w.auth("tA1"))
          == stats)
      await expectCode(.invalidArgument) { try await w.use("tA1b", x.id, .rate, rating: 6) }
      await expectCode(.invalidArgument) { try await w.use("tA1b", x.id, .rate) }
      await expectCode(.invalidArgument) { try await w.use("tA1b", x.id, .view, rating: 3) }
      await expectCode(.invalidArgument) { try await w.use("tA1b", x.id, .unspecified) }
      let draft = try await w.create("tA1", "草稿")
      await expectCode(.notFound) { try await w.use("tA1b", draft.id, .view) }

      func popular(_ org: String, as user: String = "admin", start: Date? = nil, end: Date? = nil)
        async throws -> [String]
      {
        try await w.catalogue.listPopular(
          .with {
            $0.orgCode = org
            if let start { $0.startTime = .init(date: start) }
            if let end { $0.endTime = .init(date: end) }
          }, metadata: w.auth(user)
        ).resources.map { "\($0.resource.title):\(Int($0.score))" }
      }
      // County A's users used X (3 views, 1 net favourite, ratings 2→5 and 4: 3+5+(11−6)).
      #expect(try await popular("K340121", as: "adminA") == ["X 课件:13"])
      // County B's users used Y; the city sees both.
      #expect(try await popular("K340122") == ["Y 课件:5"])
      #expect(try await popular("C3401") == ["X 课件:13", "Y 课件:5"])
      #expect(try await popular("C3401", start: Date().addingTimeInterval(3600)).isEmpty)
      #expect(try await popular("C3401", end: Date().addingTimeInterval(-3600)).isEmpty)
      #expect(try await popular("C3401", start: Date().addingTimeInterval(-3600)).count == 2)
      await expectCode(.permissionDenied) { try await popular("K340122", as: "tA1") }
      await expectCode(.invalidArgument) {
        try await popular("C3401", start: Date(), end: Date().addingTimeInterval(-1))
      }
      // Unpublished resources drop out.
      try await w.transition(y.id, .unpublish, by: "revA")
      #expect(try await popular("C3401") == ["X 课件:13"])
    }
  }

  @Test func recommendationsRankByCoverageThenRatingThenUsage() async throws {
    try await withWorld { w in
      try await w.importCurriculum()
      let both = try await w.published(
        "tA1", "方程与函数 综合", reviewer: "revA", scope: .county,
        points: ["KP-QUAD-EQ", "KP-QUAD-FN"], grade: 9)
      let fnRated = try await w.published(
        "tA1", "二次函数 精讲", reviewer: "revA", scope: .county, points: ["KP-QUAD-FN"], grade: 9)
      let fnPlain = try await w.published(
        "tA1", "二次函数 练习", reviewer: "revA", type: .exerciseSet, scope: .county,
        points: ["KP-QUAD-FN"], grade: 9)
      let eqUsed = try await w.published(
        "tA1", "一元二次方程 微课", reviewer: "revA", type: .microLesson, scope: .county,
        points: ["KP-QUAD-EQ"], grade: 9)
      _ = try await w.published(
        "tA1", "有理数", reviewer: "revA", scope: .county, points: ["KP-RATIONAL"], grade: 7)
      _ = try await w.published(
        "tB1", "别县的二次函数", reviewer: "revB", points: ["KP-QUAD-FN"], grade: 9)
      _ = try await w.create("tA1", "草稿 二次函数", grade: 9, points: ["KP-QUAD-FN"])
      try await w.use("tA2", fnRated.id, .rate, rating: 5)
      try await w.use("tA1b", fnRated.id, .rate, rating: 5)
      try await w.use("tA2", eqUsed.id, .view, times: 4)

      func recommend(
        _ points: [String], as user: String = "tA2",
        types: [Smartschool_Catalogue_V1_ResourceType] = [],
        grade: Int32 = 0
      ) async throws -> [String] {
        try await w.catalogue.recommendResources(
          .with {
            $0.knowledgePointCodes = points
            $0.stage = .junior
            $0.subject = .mathematics
            $0.grade = grade
            $0.types = types
          }, metadata: w.auth(user)
        ).recommendations.map { "\($0.resource.title)@\($0.coverage)" }
      }
      #expect(
        try await recommend(["KP-QUAD-FN", "KP-QUAD-EQ"]) == [
          "方程与函数 综合@1.0", "二次函数 精讲@0.5", "一元二次方程 微课@0.5", "二次函数 练习@0.5",
        ])
      let detail = try await w.catalogue.recommendResources(
        .with { $0.knowledgePointCodes = ["KP-QUAD-FN", "KP-QUAD-EQ", "KP-QUAD-FN"] },
        metadata: w.auth("tA2"))
      #expect(detail.recommendations.first?.resource.id == both.id)
      #expect(
        detail.recommendations.first?.matchedKnowledgePointCodes == ["KP-QUAD-EQ", "KP-QUAD-FN"])
      #expect(try await recommend(["KP-QUAD-FN"], types: [.exerciseSet]) == ["二次函数 练习@1.0"])
      #expect(try await recommend(["KP-QUAD-FN"], grade: 7).isEmpty)
      // The next county sees only its own; drafts are never pushed.
      #expect(try await recommend(["KP-QUAD-FN"], as: "tB1") == ["别县的二次函数@1.0"])
      #expect(!(try await recommend(["KP-QUAD-FN"], as: "tA1")).contains { $0.hasPrefix("草稿") })
      #expect(try await recommend(["KP-READ"]).isEmpty)
      await expectCode(.invalidArgument) { try await recommend([]) }
      await expectCode(.invalidArgument) { try await recommend(["KP-NOPE"]) }
      await expectCode(.invalidArgument) { try await recommend(["bad code"]) }
      _ = fnPlain
    }
  }

  @Test func changeFeedIsScopedAndNeedsThePermission() async throws {
    try await withWorld { w in
      let a = try await w.create("tA1", "A")
      let b = try await w.create("tB1", "B")
      try await w.submit(a.id, by: "tA1")
      func ids(_ user: String) async throws -> [String] {
        try await w.catalogue.listChanges(.with { $0.pageSize = 1000 }, metadata: w.auth(user))
          .changes.map(\.id)
      }
      // a: created, content uploaded, submitted.
      #expect(try await ids("exchange") == [a.id, b.id, a.id, a.id])
      #expect(try await ids("adminA") == [a.id, a.id, a.id])
      await expectCode(.permissionDenied) { try await ids("tA1") }
      await expectCode(.permissionDenied) { try await ids("revA") }
      let page = try await w.catalogue.listChanges(
        .with { $0.pageSize = 3 }, metadata: w.auth("exchange"))
      #expect(page.changes.count == 3 && page.moreAvailable)
      let rest = try await w.catalogue.listChanges(
        .with { $0.afterSequence = page.lastSequence }, metadata: w.auth("exchange"))
      #expect(rest.changes.map(\.id) == [a.id] && !rest.moreAvailable)
      let payload = try Smartschool_Catalogue_V1_Resource(unpackingAny: rest.changes[0].payload)
      #expect(payload.status == .submitted)
      await expectCode(.invalidArgument) {
        try await w.catalogue.listChanges(
          .with { $0.afterSequence = -1 }, metadata: w.auth("exchange"))
      }
    }
  }
}
