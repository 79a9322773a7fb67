import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

@Suite("Chinese search through a real server")
struct SearchAPITests {
  /// Publishes a small catalogue at school S-A1 (seen by tA1b) plus another school's draft.
  func seed(_ w: World) async throws {
    _ = try await w.published(
      "tA1", "二次函数的图像与性质", reviewer: "revA", keywords: ["抛物线"], grade: 9)
    _ = try await w.published(
      "tA1", "一元二次方程的解法", reviewer: "revA", type: .exerciseSet,
      description: "含二次函数的综合题", grade: 9)
    _ = try await w.published("tA1", "函数的概念", reviewer: "revA", type: .microLesson, grade: 8)
    _ = try await w.published(
      "tA1", "古诗词鉴赏", reviewer: "revA", type: .lessonPlan, keywords: ["唐诗"], grade: 3,
      subject: .chinese)
    _ = try await w.published(
      "tA1", "Newton 第二定律 PPT", reviewer: "revA", keywords: ["力学"], grade: 0,
      subject: .physics)
    let trig = try await w.published("tA1", "三角函数", reviewer: "revA", grade: 9)
    for _ in 0..<3 {
      _ = try await w.catalogue.recordUsage(
        .with {
          $0.resourceID = trig.id
          $0.kind = .view
        }, metadata: w.auth("tA1b"))
    }
    _ = try await w.create("tA2", "二次函数 别校草稿", grade: 9)
  }

  @Test func chineseQueriesOfAnyLengthHitAndMiss() async throws {
    try await withWorld { w in
      try await seed(w)
      // Four characters: the trigram index; relevance: title (and prefix) > description.
      #expect(try await w.searchTitles("tA1b", "二次函数") == ["二次函数的图像与性质", "一元二次方程的解法"])
      // Two characters: substring fallback; equal relevance is broken by popularity.
      #expect(
        try await w.searchTitles("tA1b", "函数")
          == ["函数的概念", "三角函数", "二次函数的图像与性质", "一元二次方程的解法"])
      // One character.
      #expect(
        Set(try await w.searchTitles("tA1b", "数"))
          == ["函数的概念", "三角函数", "二次函数的图像与性质", "一元二次方程的解法"])
      #expect(try await w.searchTitles("tA1b", "诗") == ["古诗词鉴赏"])
      // Misses.
      #expect(try await w.searchTitles("tA1b", "化学").isEmpty)
      #expect(try await w.searchTitles("tA1b", "天气预报").isEmpty)
      // Issue 22 changed these two: a subject's name finds that subject's resources (it found
      // nothing), and a query without the title's 的 finds it (it found nothing).
      #expect(try await w.searchTitles("tA1b", "物理") == ["Newton 第二定律 PPT"])
      #expect(try await w.searchTitles("tA1b", "二次函数图像").first == "二次函数的图像与性质")
      #expect(try await w.searchTitles("tA1b", "别校草稿").isEmpty)
      // ASCII, case-insensitive; several words must all match; keywords count.
      #expect(try await w.searchTitles("tA1b", "ppt") == ["Newton 第二定律 PPT"])
      #expect(try await w.searchTitles("tA1b", "newton 定律") == ["Newton 第二定律 PPT"])
      #expect(try await w.searchTitles("tA1b", "力学") == ["Newton 第二定律 PPT"])
      #expect(try await w.searchTitles("tA1b", "二次函数，抛物线") == ["二次函数的图像与性质"])
      // The author of the other school's draft finds it; nobody else does.
      #expect(try await w.searchTitles("tA2", "二次函数") == ["二次函数 别校草稿"])
    }
  }

  @Test func filtersFacetsAndPaging() async throws {
    try await withWorld { w in
      try await seed(w)
      #expect(
        try await w.searchTitles("tA1b", "函数", .with { $0.grade = 9 })
          == ["三角函数", "二次函数的图像与性质", "一元二次方程的解法"])
      #expect(
        try await w.searchTitles("tA1b", "函数", .with { $0.type = .microLesson })
          == ["函数的概念"])
      #expect(
        try await w.searchTitles("tA1b", "二次函数", .with { $0.type = .exerciseSet })
          == ["一元二次方程的解法"])
      #expect(try await w.searchTitles("tA1b", "函数", .with { $0.subject = .chinese }).isEmpty)

      let response = try await w.catalogue.searchResources(
        .with {
          $0.query = "函数"
          $0.pageSize = 2
        }, metadata: w.auth("tA1b"))
      #expect(response.totalSize == 4 && response.hits.count == 2)
      #expect(response.subjectFacets.map { "\($0.name):\($0.count)" } == ["数学:4"])
      #expect(response.gradeFacets.map { "\($0.name):\($0.count)" } == ["九年级:3", "八年级:1"])
      #expect(response.typeFacets.map { "\($0.name):\($0.count)" } == ["课件:2", "微课:1", "习题:1"])
      #expect(response.hits[0].relevance > response.hits[1].relevance)
      let next = try await w.catalogue.searchResources(
        .with {
          $0.query = "函数"
          $0.pageSize = 2
          $0.pageToken = response.nextPageToken
        }, metadata: w.auth("tA1b"))
      #expect(next.hits.map(\.resource.title) == ["二次函数的图像与性质", "一元二次方程的解法"])
      #expect(next.nextPageToken.isEmpty)
      await expectCode(.invalidArgument) {
        try await w.catalogue.searchResources(
          .with {
            $0.query = "方程"
            $0.pageToken = response.nextPageToken
          }, metadata: w.auth("tA1b"))
      }
      // The empty query browses everything visible, most popular first.
      let all = try await w.catalogue.searchResources(
        .with { $0.pageSize = 100 }, metadata: w.auth("tA1b"))
      #expect(all.totalSize == 6 && all.hits.first?.resource.title == "三角函数")
    }
  }

  @Test func anyQueryTextGivesResultsOrInvalidArgument() async throws {
    try await withWorld { w in
      try await seed(w)
      let queries = [
        "", " ", "!!!", "\"", "\"\"", "二次\"函数", "函数 OR 方程", "NEAR(函数 方程)", "*", "函数*",
        "title:函数", "'; DROP TABLE resources; --", "AND", "NOT 函数", "函数^", "（）", "%", "_",
        "\\", "a", "ab", "\u{0}", "🙂", "e\u{301}", String(repeating: "函", count: 100),
        String(repeating: "函", count: 101), "1 2 3 4 5 6 7 8 9", "-函数", "+", "{函数}",
      ]
      for q in queries {
        let code = await statusCode {
          _ = try await w.catalogue.searchResources(
            .with { $0.query = q }, metadata: w.auth("tA1b"))
        }
        #expect(
          code == nil || code == .invalidArgument,
          "query \(q.debugDescription): \(String(describing: code))")
      }
      #expect(
        await statusCode {
          _ = try await w.catalogue.searchResources(
            .with { $0.query = "!!!" }, metadata: w.auth("tA1b"))
        } == .invalidArgument)
      #expect(try await w.searchTitles("tA1b", "二次\"函数").count == 2)
      #expect(try await w.searchTitles("tA1b", "NEAR(函数").isEmpty)  // "near" must match too
    }
  }
}
