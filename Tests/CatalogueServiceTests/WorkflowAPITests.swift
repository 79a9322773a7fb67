import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

@Suite("Review workflow through a real server")
struct WorkflowAPITests {
  @Test func draftSubmitRejectReviseSubmitApproveIsRecorded() async throws {
    try await withWorld { w in
      let r = try await w.create("tA1", "一元一次方程 微课", type: .microLesson)
      // Wrong transitions are FAILED_PRECONDITION.
      await expectCode(.failedPrecondition) { try await w.transition(r.id, .revise, by: "tA1") }
      await expectCode(.failedPrecondition) { try await w.transition(r.id, .withdraw, by: "tA1") }
      #expect(try await w.submit(r.id, by: "tA1").status == .submitted)
      await expectCode(.failedPrecondition) { try await w.transition(r.id, .submit, by: "tA1") }
      // Submitted resources are frozen.
      await expectCode(.failedPrecondition) {
        try await w.catalogue.updateResource(
          .with {
            $0.resource = .with {
              $0.id = r.id
              $0.title = "x"
            }
            $0.updateMask = .init(protoPaths: ["title"])
          }, metadata: w.auth("tA1"))
      }
      // A rejection needs a comment.
      await expectCode(.invalidArgument) { try await w.transition(r.id, .reject, by: "revA") }
      let rejected = try await w.transition(r.id, .reject, by: "revA", comment: "缺少教学目标")
      #expect(rejected.status == .rejected && rejected.reviewComment == "缺少教学目标")
      // Rejected: only revise leads on; editing is allowed again.
      await expectCode(.failedPrecondition) { try await w.transition(r.id, .approve, by: "revA") }
      await expectCode(.failedPrecondition) { try await w.transition(r.id, .submit, by: "tA1") }
      _ = try await w.catalogue.updateResource(
        .with {
          $0.resource = .with {
            $0.id = r.id
            $0.description_p = "教学目标：会解一元一次方程"
          }
          $0.updateMask = .init(protoPaths: ["description"])
        }, metadata: w.auth("tA1"))
      #expect(try await w.transition(r.id, .revise, by: "tA1").status == .draft)
      try await w.transition(r.id, .submit, by: "tA1")
      let published = try await w.transition(r.id, .approve, by: "revS", comment: "好")
      #expect(published.status == .published && published.hasPublishTime)
      await expectCode(.failedPrecondition) { try await w.transition(r.id, .approve, by: "revA") }

      let history = try await w.catalogue.listTransitions(
        .with { $0.resourceID = r.id }, metadata: w.auth("tA1"))
      #expect(history.transitions.map(\.action) == [.submit, .reject, .revise, .submit, .approve])
      #expect(
        history.transitions.map(\.fromStatus) == [
          .draft, .submitted, .rejected, .draft, .submitted,
        ])
      #expect(
        history.transitions.map(\.toStatus) == [
          .submitted, .rejected, .draft, .submitted, .published,
        ])
      #expect(history.transitions.map(\.actorName) == ["tA1", "revA", "tA1", "tA1", "revS"])
      #expect(history.transitions[1].comment == "缺少教学目标")
      #expect(history.transitions.allSatisfy { $0.resourceID == r.id && $0.hasTime })
      // Paged, oldest first.
      let page = try await w.catalogue.listTransitions(
        .with {
          $0.resourceID = r.id
          $0.pageSize = 3
        }, metadata: w.auth("tA1b"))
      let rest = try await w.catalogue.listTransitions(
        .with {
          $0.resourceID = r.id
          $0.pageSize = 3
          $0.pageToken = page.nextPageToken
        }, metadata: w.auth("tA1b"))
      #expect(
        (page.transitions + rest.transitions).map(\.sequence) == history.transitions.map(\.sequence)
      )
      #expect(rest.nextPageToken.isEmpty)
      // Who cannot see the resource cannot read its history.
      await expectCode(.notFound) {
        try await w.catalogue.listTransitions(
          .with { $0.resourceID = r.id }, metadata: w.auth("tB1"))
      }
    }
  }

  @Test func onlyAReviewerWhoseScopeCoversTheOwnerReviews() async throws {
    try await withWorld { w in
      let r = try await w.create("tA1", "二次函数 课件", scope: .province)
      try await w.submit(r.id, by: "tA1")
      // The next county's reviewer does not even see the submission.
      await expectCode(.notFound) { try await w.transition(r.id, .approve, by: "revB") }
      // The author and other teachers are not reviewers (a teacher cannot even see it).
      await expectCode(.permissionDenied) { try await w.transition(r.id, .approve, by: "tA1") }
      await expectCode(.notFound) {
        try await w.transition(r.id, .reject, by: "tA1b", comment: "no")
      }
      // Reviewers take no author actions.
      await expectCode(.permissionDenied) { try await w.transition(r.id, .withdraw, by: "revA") }
      // Shared province-wide, it needs the province's reviewer.
      await expectCode(.permissionDenied) { try await w.transition(r.id, .approve, by: "revA") }
      #expect(try await w.transition(r.id, .approve, by: "revP").status == .published)
      // Published province-wide, the next county's reviewer sees it but may not unpublish it.
      let seen = try await w.catalogue.getResource(.with { $0.id = r.id }, metadata: w.auth("revB"))
      #expect(seen.status == .published)
      await expectCode(.permissionDenied) { try await w.transition(r.id, .unpublish, by: "revB") }
      await expectCode(.permissionDenied) {
        try await w.catalogue.deleteResource(.with { $0.id = r.id }, metadata: w.auth("revB"))
      }
      await expectCode(.permissionDenied) {
        try await w.catalogue.deleteResource(.with { $0.id = r.id }, metadata: w.auth("tA1b"))
      }
      // The county's reviewer may.
      #expect(try await w.transition(r.id, .unpublish, by: "revA").status == .draft)
      // A school reviewer reviews its own school only.
      let other = try await w.create("tA2", "别校资源")
      try await w.submit(other.id, by: "tA2")
      await expectCode(.notFound) { try await w.transition(other.id, .approve, by: "revS") }
      #expect(try await w.transition(other.id, .approve, by: "revA").status == .published)
      // A county admin may delete what the county owns.
      _ = try await w.catalogue.deleteResource(
        .with { $0.id = other.id }, metadata: w.auth("adminA"))
      await expectCode(.invalidArgument) {
        try await w.transition(r.id, .unspecified, by: "tA1")
      }
    }
  }
}
