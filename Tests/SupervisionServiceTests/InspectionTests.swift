import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import Testing

/// A visit to `school` on `date` by the caller (inspector left to default).
func visit(
  _ school: String, _ date: String, rating: Smartschool_Supervision_V1_InspectionRating = .good,
  kind: Smartschool_Supervision_V1_InspectionKind = .inspection, findings: String = "常态化使用"
) -> Smartschool_Supervision_V1_CreateInspectionRequest {
  .with {
    $0.inspection = .with {
      $0.schoolCode = school
      $0.date = date
      $0.findings = findings
      $0.rating = rating
      $0.kind = kind
      $0.subject = .mathematics
    }
  }
}

func inspectionSummary(
  _ client: SupervisionClient, _ org: String, year: Int32, term: String = "",
  _ metadata: Metadata
) async throws -> Smartschool_Supervision_V1_InspectionSummary {
  try await client.getInspectionSummary(
    .with {
      $0.orgCode = org
      $0.year = year
      $0.termCode = term
    }, metadata: metadata)
}

/// Inspections as the plans run them (issue 26, point 4).
@Suite struct InspectionTests {
  @Test func aReSentVisitIsTheSameInspectionAndAChangedOneUpdatesIt() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let inspector = h.auth("inspector", at: "CA")
      let first = try await client.createInspection(visit("A1", "2020-10-12"), metadata: inspector)
      let head = try await feedHead(client, h)
      // The same visit again: the stored record, nothing written.
      let again = try await client.createInspection(visit("A1", "2020-10-12"), metadata: inspector)
      #expect(again == first)
      #expect(try await feedEvents(client, after: head, h).isEmpty)
      // Other findings and rating: the same inspection, updated, one event.
      let changed = try await client.createInspection(
        visit("A1", "2020-10-12", rating: .poor, findings: "使用不足"), metadata: inspector)
      #expect(changed.id == first.id && changed.createTime == first.createTime)
      #expect(changed.rating == .poor && changed.findings == "使用不足")
      let events = try await feedEvents(client, after: head, h)
      #expect(events.map(\.entity) == ["inspection"] && events[0].id == first.id)
      // Another inspector, kind or day is another visit.
      var other = visit("A1", "2020-10-12")
      other.inspection.inspector = "王督学"
      _ = try await client.createInspection(other, metadata: inspector)
      _ = try await client.createInspection(
        visit("A1", "2020-10-12", kind: .researchVisit), metadata: inspector)
      _ = try await client.createInspection(visit("A1", "2020-10-13"), metadata: inspector)
      let listed = try await client.listInspections(
        .with { $0.orgCode = "A1" }, metadata: inspector)
      #expect(listed.inspections.count == 4)
      #expect(listed.inspections.filter { $0.id == first.id }.map(\.rating) == [.poor])
    }
  }

  @Test func noInspectionIsDatedInTheFuture() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let inspector = h.auth("inspector", at: "CA")
      let tomorrow = Inspections.today(Date()).adding(days: 1).description
      do {
        _ = try await client.createInspection(visit("A1", tomorrow), metadata: inspector)
        Issue.record("expected INVALID_ARGUMENT")
      } catch let error as RPCError {
        #expect(error.code == .invalidArgument)
        #expect(error.message.contains("inspection.date"))
      }
      let today = Inspections.today(Date()).description
      let stored = try await client.createInspection(visit("A1", today), metadata: inspector)
      #expect(stored.date == today)
      // Unknown kinds and a follow-up already past OPEN are refused on create.
      var kind = visit("A1", "2020-10-12")
      kind.inspection.kind = .init(rawValue: 7)!
      await expectCode(.invalidArgument) {
        try await client.createInspection(kind, metadata: inspector)
      }
      var verified = visit("A1", "2020-10-12")
      verified.inspection.followUp = .verified
      await expectCode(.invalidArgument) {
        try await client.createInspection(verified, metadata: inspector)
      }
    }
  }

  @Test func findingsAreFollowedUpOpenRectifiedVerified() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let inspector = h.auth("inspector", at: "CA")
      let school = h.auth("school_admin", at: "A1")
      let created = try await client.createInspection(
        visit("A1", "2020-10-12", rating: .fair), metadata: inspector)
      #expect(created.followUp == .open && created.followUpDate.isEmpty)
      func move(_ status: Smartschool_Supervision_V1_FollowUpStatus, _ metadata: Metadata)
        async throws -> Smartschool_Supervision_V1_Inspection
      {
        try await client.updateInspectionFollowUp(
          .with {
            $0.inspectionID = created.id
            $0.status = status
            $0.note = "整改: \(status)"
          }, metadata: metadata)
      }
      // A school may not verify its own rectification, nor skip a step; another county's
      // inspector may not touch it.
      await expectCode(.failedPrecondition) { try await move(.verified, inspector) }
      await expectCode(.permissionDenied) {
        try await move(.rectified, h.auth("inspector", at: "CB"))
      }
      let rectified = try await move(.rectified, school)
      #expect(rectified.followUp == .rectified && rectified.followUpNote.contains("rectified"))
      #expect(rectified.followUpDate == Inspections.today(Date()).description)
      await expectCode(.permissionDenied) { try await move(.verified, school) }
      // The check finds it wanting: open again, then rectified and verified.
      #expect(try await move(.open, inspector).followUp == .open)
      _ = try await move(.rectified, school)
      let verified = try await move(.verified, inspector)
      #expect(verified.followUp == .verified)
      await expectCode(.failedPrecondition) { try await move(.open, inspector) }
      await expectCode(.notFound) {
        try await client.updateInspectionFollowUp(
          .with {
            $0.inspectionID = "nope"
            $0.status = .rectified
            $0.note = "x"
          }, metadata: inspector)
      }
      await expectCode(.invalidArgument) { try await move(.notNeeded, inspector) }
      // A re-sent create keeps the follow-up.
      let resent = try await client.createInspection(
        visit("A1", "2020-10-12", rating: .fair), metadata: inspector)
      #expect(resent.followUp == .verified && resent.id == created.id)
      let summary = try await inspectionSummary(client, "CA", year: 2020, inspector)
      #expect(summary.followUpsVerified == 1 && summary.followUpsOpen == 0)
    }
  }

  @Test func theSummaryGivesRatingsResearchVisitsAndFollowUps() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let inspector = h.auth("inspector", at: "CA")
      for (school, date, rating) in [
        ("A1", "2020-03-02", Smartschool_Supervision_V1_InspectionRating.excellent),
        ("A1", "2020-10-12", .good), ("A2", "2020-11-02", .good), ("A3", "2019-12-30", .poor),
      ] {
        _ = try await client.createInspection(
          visit(school, date, rating: rating), metadata: inspector)
      }
      var done = visit("A2", "2020-09-15", rating: .excellent, kind: .researchVisit)
      done.inspection.followUp = .notNeeded
      _ = try await client.createInspection(done, metadata: inspector)
      _ = try await client.createInspection(
        visit("A3", "2020-10-20", rating: .fair, kind: .researchVisit), metadata: inspector)
      // In the seed term (2020-09-07 … 10-04) only A2 had a research visit.
      _ = try await client.createInspection(
        visit("A1", "2020-06-01", rating: .fair, kind: .researchVisit), metadata: inspector)

      let year = try await inspectionSummary(client, "CA", year: 2020, inspector)
      // Research visits are no inspections: A3's 2020 visit was a research visit.
      #expect(year.inspected.map(\.schoolCode) == ["A1", "A2"])
      #expect(year.notInspected.map(\.schoolCode) == ["A3"])
      #expect(year.inspected[0].inspections == 2 && year.inspected[0].lastDate == "2020-10-12")
      // Six visits in 2020: 优 2, 良 2, 中 2, 差 0.
      #expect(year.ratings.map(\.rating) == [.excellent, .good, .fair, .poor])
      #expect(year.ratings.map(\.count) == [2, 2, 2, 0])
      #expect(year.ratings.map(\.shareText) == ["33.33%", "33.33%", "33.33%", "0.00%"])
      #expect(year.researchTermCode.isEmpty && year.researchVisited == 3)
      #expect(year.followUpsOpen == 5 && year.followUpsNotNeeded == 1)
      #expect(year.inspected[0].openFollowUps == 3)

      let term = try await inspectionSummary(
        client, "CA", year: 2020, term: "2020-2021-1", inspector)
      #expect(term.researchTermCode == "2020-2021-1")
      #expect(term.researchVisited == 1 && term.researchVisitedShareText == "33.33%")
      #expect(term.schoolsWithoutResearchVisit == ["A1", "A3"])
      let a2 = try #require(term.inspected.first { $0.schoolCode == "A2" })
      #expect(a2.researchVisits == 1 && a2.lastResearchDate == "2020-09-15")

      await expectCode(.notFound) {
        try await inspectionSummary(client, "CA", year: 2020, term: "1999-1", inspector)
      }
      await expectCode(.permissionDenied) {
        try await inspectionSummary(client, "CA", year: 2020, h.auth("inspector", at: "CB"))
      }
    }
  }
}
