import Foundation
import GRDB
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import TestSupport
import Testing

@testable import CatalogueService

/// Publishing shares a resource over its whole reach, so approving needs review rights at an
/// org covering that reach, not only the owner; and only a resource with content is submitted
/// or published.
@Suite("Publishing needs review rights over the sharing reach, and content")
struct ReviewScopeAPITests {
  @Test func aSchoolReviewerPublishesOnlyWhatStaysInTheSchool() async throws {
    try await withWorld { w in
      let school = try await w.create("tA1", "本校 课件", scope: .school)
      let county = try await w.create("tA1", "全县 课件", scope: .county)
      let province = try await w.create("tA1", "全省 课件", scope: .province)
      for r in [school, county, province] { try await w.submit(r.id, by: "tA1") }
      let refused = await rpcError { try await w.transition(province.id, .approve, by: "revS") }
      #expect(refused?.code == .permissionDenied)
      #expect(refused?.message.contains("P34") == true, "\(refused?.message ?? "")")
      await expectCode(.permissionDenied) {
        try await w.transition(county.id, .approve, by: "revS")
      }
      #expect(try await w.transition(school.id, .approve, by: "revS").status == .published)
      // Refused, the two stay submitted: seen by their author and reviewers, by no one else.
      for r in [county, province] {
        let now = try await w.catalogue.getResource(.with { $0.id = r.id }, metadata: w.auth("tA1"))
        #expect(now.status == .submitted && !now.hasPublishTime)
        for user in ["tB1", "tA2", "tA1b"] {
          await expectCode(.notFound) {
            try await w.catalogue.getResource(.with { $0.id = r.id }, metadata: w.auth(user))
          }
        }
      }
      #expect(try await w.listIDs("tB1").isEmpty)
      #expect(try await w.searchTitles("tB1", "课件").isEmpty)
      #expect(try await w.listIDs("tA1b") == [school.id])
      // Each at its own level: the county's reviewer the county, the province's the province.
      await expectCode(.permissionDenied) {
        try await w.transition(province.id, .approve, by: "revA")
      }
      try await w.transition(county.id, .approve, by: "revA")
      #expect(try await w.listIDs("tB1").isEmpty)
      #expect(try await w.listIDs("tA2") == [county.id])
      try await w.transition(province.id, .approve, by: "revP")
      #expect(try await w.listIDs("tB1") == [province.id])
    }
  }

  @Test func aReviewerOfAnotherCountyCannotPublish() async throws {
    try await withWorld { w in
      for scope: Smartschool_Catalogue_V1_SharingScope in [.school, .county, .city, .province] {
        let r = try await w.create("tA1", "资源 \(scope.rawValue)", scope: scope)
        try await w.submit(r.id, by: "tA1")
        await expectCode(.notFound) { try await w.transition(r.id, .approve, by: "revB") }
        #expect(
          try await w.catalogue.getResource(.with { $0.id = r.id }, metadata: w.auth("tA1"))
            .status == .submitted)
      }
      #expect(try await w.listIDs("tB1").isEmpty)
      // A county-owned resource kept within the county: the county's reviewer, not a school's.
      let owned = try await w.create("adminA", "县教研室 资源", scope: .school, owner: "K340121")
      try await w.submit(owned.id, by: "adminA")
      await expectCode(.notFound) { try await w.transition(owned.id, .approve, by: "revS") }
      #expect(try await w.transition(owned.id, .approve, by: "revA").status == .published)
      #expect(try await w.listIDs("tB1").isEmpty)
    }
  }

  @Test func manyApprovalsAtOnceBeyondTheReviewersScopeAllFail() async throws {
    try await withWorld { w in
      var ids: [String] = []
      for i in 0..<12 {
        let r = try await w.create("tA1", "全省共享 \(i)", scope: i % 2 == 0 ? .province : .city)
        try await w.submit(r.id, by: "tA1")
        ids.append(r.id)
      }
      let codes = try await withThrowingTaskGroup(of: RPCError.Code?.self) { group in
        for id in ids {
          for reviewer in ["revS", "revA", "revS", "revA"] {
            group.addTask {
              await statusCode { try await w.transition(id, .approve, by: reviewer) }
            }
          }
        }
        var codes: [RPCError.Code?] = []
        for try await code in group { codes.append(code) }
        return codes
      }
      #expect(codes.count == 48 && codes.allSatisfy { $0 == .permissionDenied })
      #expect(try await w.listIDs("tB1").isEmpty)
      #expect(try await w.listIDs("tA1", .with { $0.status = .published }).isEmpty)
    }
  }

  @Test func aResourceWithoutContentIsNeitherSubmittedNorPublished() async throws {
    try await withWorld { w in
      let r = try await w.create("tA1", "空资源", scope: .school)
      let refused = await rpcError { try await w.transition(r.id, .submit, by: "tA1") }
      #expect(refused?.code == .failedPrecondition)
      #expect(refused?.message.contains("content") == true, "\(refused?.message ?? "")")
      // An empty upload is no content either.
      _ = try await w.upload("tA1", r.id, Data())
      await expectCode(.failedPrecondition) { try await w.transition(r.id, .submit, by: "tA1") }
      #expect(
        try await w.catalogue.getResource(.with { $0.id = r.id }, metadata: w.auth("tA1"))
          .status == .draft)
      // Submitted before the rule (written straight into the store), it still is not approved.
      let legacy = try await w.create("tA1", "旧的空资源", scope: .school)
      try await w.setStatusInStore(legacy.id, .submitted)
      await expectCode(.failedPrecondition) {
        try await w.transition(legacy.id, .approve, by: "revS")
      }
      #expect(try await w.listIDs("tA1b").isEmpty)
      // With content, the same resource goes through.
      #expect(try await w.submit(r.id, by: "tA1").status == .submitted)
      #expect(try await w.transition(r.id, .approve, by: "revS").status == .published)
      #expect(try await w.listIDs("tA1b") == [r.id])
    }
  }

  /// The reviewer's rights are checked against the resource as read; an author who withdraws,
  /// widens and resubmits in between must not slip the wider reach past that check.
  @Test func anApprovalIsRefusedWhenTheReachChangedSinceItWasChecked() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try await openCatalogueStore(dir)
    defer { Task { await store.storage.close() } }
    let school = OrgPath(ids: ["p", "c", "k", "s"])
    var r = Resource()
    r.id = "r1"
    r.title = "课件"
    r.type = .courseware
    r.authorID = "author"
    r.ownerOrgPath = school.description
    r.sharingScope = .school
    var stored = try await store.insertResource(r, reach: school, topChapter: nil)
    func move(_ action: ReviewAction, _ from: ResourceStatus, _ to: ResourceStatus, at: OrgPath)
      async throws -> StoredResource
    {
      try await store.transition(
        seq: stored.seq, reach: at, action: action, from: from, to: to, actorID: "author",
        actorName: "author", comment: "")
    }
    stored = try await move(.submit, .draft, .submitted, at: school)
    let checked = stored
    // Meanwhile: withdraw, widen to the province, submit again.
    _ = try await move(.withdraw, .submitted, .draft, at: school)
    r.sharingScope = .province
    let province = Visibility.reach(owner: school, scope: .province)
    _ = try await store.updateResource(seq: stored.seq, r, reach: province, topChapter: nil)
    _ = try await move(.submit, .draft, .submitted, at: province)
    await #expect(throws: ServiceError.self) {
      _ = try await move(.approve, .submitted, .published, at: checked.reach)
    }
    #expect(try await store.resource(id: "r1")?.resource.status == .submitted)
    #expect(
      try await move(.approve, .submitted, .published, at: province).resource.status
        == .published)
  }
}
