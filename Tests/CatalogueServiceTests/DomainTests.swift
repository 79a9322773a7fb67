import Foundation
import ServiceRuntime
import SmartSchoolModel
import Testing

@testable import CatalogueService

@Suite("Review workflow rules")
struct WorkflowTests {
  @Test func everyActionMovesFromExactlyOneStatus() throws {
    let table: [(ReviewAction, ResourceStatus, ResourceStatus)] = [
      (.submit, .draft, .submitted),
      (.withdraw, .submitted, .draft),
      (.approve, .submitted, .published),
      (.reject, .submitted, .rejected),
      (.revise, .rejected, .draft),
      (.unpublish, .published, .draft),
    ]
    let statuses: [ResourceStatus] = [.draft, .submitted, .published, .rejected]
    for (action, from, to) in table {
      #expect(try Workflow.next(from: from, action: action, comment: "ok") == to)
      for other in statuses where other != from {
        do {
          _ = try Workflow.next(from: other, action: action, comment: "ok")
          Issue.record("\(action) from \(other) should fail")
        } catch {
          #expect(error.code == .failedPrecondition)
        }
      }
    }
  }

  @Test func rejectionNeedsAComment() {
    for comment in ["", "   ", "\n"] {
      #expect(throws: ServiceError.invalid("comment", "a rejection needs a comment")) {
        try Workflow.next(from: .submitted, action: .reject, comment: comment)
      }
    }
    #expect(throws: ServiceError.self) {
      try Workflow.next(from: .draft, action: .unspecified, comment: "")
    }
  }

  @Test func authorsAndReviewersHaveTheirOwnActions() throws {
    for action: ReviewAction in [.submit, .withdraw, .revise] {
      try Workflow.authorize(action: action, isAuthor: true, isReviewer: false)
      #expect(throws: ServiceError.self) {
        try Workflow.authorize(action: action, isAuthor: false, isReviewer: true)
      }
    }
    for action: ReviewAction in [.approve, .reject] {
      try Workflow.authorize(action: action, isAuthor: false, isReviewer: true)
      #expect(throws: ServiceError.self) {
        try Workflow.authorize(action: action, isAuthor: false, isReviewer: false)
      }
      // A reviewer never reviews their own resource.
      do {
        try Workflow.authorize(action: action, isAuthor: true, isReviewer: true)
        Issue.record("self-review allowed")
      } catch {
        #expect(error.code == .permissionDenied)
        #expect(error.message.contains("own"))
      }
    }
    try Workflow.authorize(action: .unpublish, isAuthor: true, isReviewer: false)
    try Workflow.authorize(action: .unpublish, isAuthor: false, isReviewer: true)
    #expect(throws: ServiceError.self) {
      try Workflow.authorize(action: .unpublish, isAuthor: false, isReviewer: false)
    }
  }

  @Test func onlyDraftsAndRejectedResourcesAreEditable() {
    #expect(Workflow.isEditable(.draft))
    #expect(Workflow.isEditable(.rejected))
    #expect(!Workflow.isEditable(.submitted))
    #expect(!Workflow.isEditable(.published))
  }
}

@Suite("Coverage arithmetic")
struct CoverageTests {
  @Test func percentagesRoundHalfUpToTwoDecimals() {
    let cases: [(Int, Int, Int, String)] = [
      (2, 3, 6667, "66.67"), (1, 3, 3333, "33.33"), (1, 6, 1667, "16.67"),
      (1, 7, 1429, "14.29"), (1, 8, 1250, "12.50"), (5, 8, 6250, "62.50"),
      (3, 5, 6000, "60.00"), (0, 4, 0, "0.00"), (4, 4, 10000, "100.00"), (0, 0, 0, "0.00"),
      (1, 2000, 5, "0.05"), (1, 1600, 6, "0.06"),  // 0.0625 → 0.06
      (1, 16, 625, "6.25"), (1, 80_000, 0, "0.00"), (1, 40_000, 0, "0.00"),
      (1, 20_000, 1, "0.01"),  // 0.005 rounds half up
    ]
    for (covered, total, hundredths, text) in cases {
      let h = Coverage.hundredths(covered: covered, total: total)
      #expect(h == hundredths, "\(covered)/\(total)")
      #expect(Coverage.text(hundredths: h) == text, "\(covered)/\(total)")
    }
  }

  @Test func rowsPerSubjectAndGradeWithTotal() {
    func ch(_ code: String, _ grade: Int, _ subject: Smartschool_Common_V1_Subject) -> ChapterRef {
      ChapterRef(
        code: code, stage: Smartschool_Common_V1_Stage.of(grade: grade)!, grade: grade,
        subject: subject)
    }
    let chapters = [
      ch("m7-1", 7, .mathematics), ch("m7-2", 7, .mathematics), ch("m7-3", 7, .mathematics),
      ch("m9-1", 9, .mathematics), ch("m9-2", 9, .mathematics),
      ch("c3-1", 3, .chinese), ch("c3-2", 3, .chinese),
    ]
    let report = Coverage.report(chapters: chapters, covered: ["m7-1", "m7-3", "m9-2", "x"])
    #expect(report.rows.map { "\($0.subject.rawValue)/\($0.grade)" } == ["1/3", "2/7", "2/9"])
    let m7 = report.rows[1]
    #expect(m7.chapters == 3 && m7.coveredChapters == 2)
    #expect(m7.coverageText == "66.67" && m7.coveragePercent == 66.67 && m7.meetsTarget)
    let m9 = report.rows[2]
    #expect(m9.coverageText == "50.00" && !m9.meetsTarget)
    #expect(report.rows[0].coverageText == "0.00")
    #expect(report.total.chapters == 7 && report.total.coveredChapters == 3)
    #expect(report.total.coverageText == "42.86")
    // Exactly the target meets it.
    #expect(
      Coverage.row(stage: .junior, subject: .physics, grade: 8, chapters: 5, covered: 3)
        .meetsTarget)
  }
}

@Suite("Ranking")
struct RankingTests {
  @Test func popularityWeighsDownloadsFavouritesAndRatings() {
    #expect(
      Ranking.popularity(views: 10, downloads: 2, favourites: 1, ratingSum: 9, ratingCount: 2)
        == 10 + 6 + 5 + 5)
    // A 1-star rating lowers popularity, a 2-star one is neutral.
    #expect(
      Ranking.popularity(views: 0, downloads: 0, favourites: 0, ratingSum: 1, ratingCount: 1)
        == -1)
    #expect(
      Ranking.popularity(views: 0, downloads: 0, favourites: 0, ratingSum: 2, ratingCount: 1)
        == 0)
  }

  @Test func searchOrderIsRelevanceThenPopularityThenNewest() {
    var keys = [
      Ranking.SearchKey(relevance: 5, popularity: 100, sequence: 1),
      Ranking.SearchKey(relevance: 10, popularity: 0, sequence: 2),
      Ranking.SearchKey(relevance: 5, popularity: 200, sequence: 3),
      Ranking.SearchKey(relevance: 5, popularity: 200, sequence: 4),
    ]
    keys.sort(by: Ranking.searchOrder)
    #expect(keys.map(\.sequence) == [2, 4, 3, 1])
  }

  @Test func recommendationsRankByCoverageThenRatingThenUsage() {
    func c(_ id: String, _ matched: Int, _ sum: Int64, _ count: Int64, _ pop: Double)
      -> Ranking.Candidate
    {
      Ranking.Candidate(
        id: id, matched: matched, ratingSum: sum, ratingCount: count,
        popularity: pop)
    }
    let ranked = [
      c("popular-one-point", 1, 50, 10, 1000),
      c("two-points-unrated", 2, 0, 0, 0),
      c("two-points-well-rated", 2, 45, 10, 1),
      c("two-points-one-five-star", 2, 5, 1, 50),
      c("two-points-unrated-used", 2, 0, 0, 10),
    ].sorted(by: Ranking.recommendationOrder).map(\.id)
    #expect(
      ranked == [
        "two-points-well-rated",  // (45+6)/12 = 4.25
        "two-points-one-five-star",  // (5+6)/3 = 3.67
        "two-points-unrated-used",  // 3.0, more usage
        "two-points-unrated",
        "popular-one-point",
      ])
  }

  @Test func periodScoreCountsUnfavouritesAndStars() {
    let u = Ranking.PeriodUsage(
      views: 4, downloads: 1, favourites: 2, unfavourites: 1, ratings: 2, ratingStars: 9)
    #expect(Ranking.periodScore(u) == 4 + 3 + 5 + 5)
  }
}

@Suite("Visibility rules")
struct VisibilityTests {
  let school = OrgPath(ids: ["p", "c", "k1", "s1"])
  let sibling = OrgPath(ids: ["p", "c", "k1", "s2"])
  let nextCounty = OrgPath(ids: ["p", "c", "k2", "s3"])

  func viewer(_ read: [OrgPath], review: [OrgPath] = [], id: String = "u") -> Viewer {
    Viewer(userID: id, readScopes: read, reviewScopes: review)
  }

  @Test func reachIsTheOwnersAncestorAtTheSharingLevel() {
    #expect(Visibility.reach(owner: school, scope: .school) == school)
    #expect(Visibility.reach(owner: school, scope: .county) == OrgPath(ids: ["p", "c", "k1"]))
    #expect(Visibility.reach(owner: school, scope: .province) == OrgPath(ids: ["p"]))
    // A county-owned resource shared at school level stays within the county.
    let county = OrgPath(ids: ["p", "c", "k1"])
    #expect(Visibility.reach(owner: county, scope: .school) == county)
  }

  @Test func publishedResourcesAreSeenWhereShared() {
    let countyReach = Visibility.reach(owner: school, scope: .county)
    func sees(_ v: Viewer, status: ResourceStatus = .published, reach: OrgPath) -> Bool {
      Visibility.canSee(status: status, authorID: "author", owner: school, reach: reach, viewer: v)
    }
    #expect(sees(viewer([sibling]), reach: countyReach))
    #expect(!sees(viewer([nextCounty]), reach: countyReach))
    #expect(!sees(viewer([sibling]), reach: school))
    #expect(sees(viewer([school.appending("class")]), reach: school))
    // Officials above the owner see what is owned in their scope.
    #expect(sees(viewer([OrgPath(ids: ["p", "c"])]), reach: school))
    // Drafts: the author only.
    #expect(!sees(viewer([school]), status: .draft, reach: school))
    #expect(sees(viewer([nextCounty], id: "author"), status: .draft, reach: school))
    // Reviewers covering the owner see submissions; others do not.
    #expect(
      sees(
        viewer([], review: [OrgPath(ids: ["p", "c", "k1"])]), status: .submitted,
        reach: school))
    #expect(
      !sees(
        viewer([], review: [OrgPath(ids: ["p", "c", "k2"])]), status: .submitted,
        reach: school))
    #expect(
      !sees(
        viewer([], review: [OrgPath(ids: ["p", "c", "k1"])]), status: .draft,
        reach: school))
  }

  @Test func pathRangesCoverExactlyTheSubtree() {
    let r = Visibility.range(of: OrgPath(ids: ["a", "b"]))
    for inside in ["/a/b/", "/a/b/c/", "/a/b/zz/y/"] {
      #expect(inside >= r.lower && inside < r.upper)
    }
    for outside in ["/a/", "/a/bc/", "/a/b0/", "/a/c/", "/b/"] {
      #expect(!(outside >= r.lower && outside < r.upper))
    }
    #expect(
      Visibility.prefixes(of: OrgPath(ids: ["a", "b"])).map(\.description)
        == ["/a/", "/a/b/"])
  }
}
