import Crypto
import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import Testing
import TestSupport

/// Two supervision replicas in this process on one PostgreSQL database, written to at the same
/// moment: what SQLite's single writer guaranteed must hold across replicas.
@Suite(
  "Supervision replicas on one PostgreSQL database",
  .enabled(if: TestStore.postgresServer != nil))
struct SupervisionReplicaTests {
  /// Starts two replicas at once on a fresh database (both migrate it), then runs `body` with
  /// a client of each.
  func withReplicas(
    _ body: @Sendable (SupervisionClient, SupervisionClient, Harness) async throws -> Void
  ) async throws {
    let dir = try TemporaryDirectory()
    let key = Curve25519.Signing.PrivateKey()
    // The database first (two CREATE DATABASE at once collide); then both replicas at once.
    _ = try await TestStore.config(service: "supervision", directory: dir)
    async let first = Harness(data: dir, key: key)
    async let second = Harness(data: dir, key: key)
    let (h0, h1) = try await (first, second)
    do {
      try await withClient(port: h0.port) { c0 in
        try await withClient(port: h1.port) { c1 in
          try await body(SupervisionClient(wrapping: c0), SupervisionClient(wrapping: c1), h0)
        }
      }
    } catch {
      await h0.stop()
      await h1.stop()
      throw error
    }
    await h0.stop()
    await h1.stop()
  }

  /// Runs `a` and `b` at once; returns their statuses (nil for success).
  static func race(
    _ a: @escaping @Sendable () async throws -> Void,
    _ b: @escaping @Sendable () async throws -> Void
  ) async -> [RPCError.Code?] {
    async let x = statusCode(a)
    async let y = statusCode(b)
    return await [x, y]
  }

  static func term(_ code: String, from start: String, to end: String)
    -> Smartschool_Supervision_V1_CreateTermRequest
  {
    .with {
      $0.term = .with {
        $0.code = code
        $0.name = code
        $0.startDate = start
        $0.endDate = end
      }
    }
  }

  @Test func creationRacesGiveAlreadyExistsToExactlyOneSide() async throws {
    try await withReplicas { c0, c1, h in
      let admin = h.auth("province_admin", at: "P")
      let county = h.auth("county_admin", at: "CA")
      for round in 0..<8 {
        // The same classroom code registered at both replicas at once.
        let room = classroom("RACE-\(round)", school: "A1", equipped: "2020-08-01")
        let rooms = await Self.race(
          { _ = try await c0.createClassroom(room, metadata: county) },
          { _ = try await c1.createClassroom(room, metadata: county) })
        #expect(rooms.filter { $0 == nil }.count == 1, "round \(round): \(rooms)")
        #expect(rooms.filter { $0 == .alreadyExists }.count == 1, "round \(round): \(rooms)")

        // The same term code at both replicas at once.
        let year = 2001 + round * 2
        let same = Self.term("T-\(round)", from: "\(year)-03-01", to: "\(year)-06-30")
        let terms = await Self.race(
          { _ = try await c0.createTerm(same, metadata: admin) },
          { _ = try await c1.createTerm(same, metadata: admin) })
        #expect(terms.filter { $0 == nil }.count == 1, "round \(round): \(terms)")
        #expect(terms.filter { $0 == .alreadyExists }.count == 1, "round \(round): \(terms)")

        // Two overlapping terms under different codes: the no-overlap rule holds.
        let overlapping = await Self.race(
          {
            _ = try await c0.createTerm(
              Self.term("U-\(round)", from: "\(year + 1)-03-01", to: "\(year + 1)-06-30"),
              metadata: admin)
          },
          {
            _ = try await c1.createTerm(
              Self.term("V-\(round)", from: "\(year + 1)-05-01", to: "\(year + 1)-07-31"),
              metadata: admin)
          })
        #expect(overlapping.filter { $0 == nil }.count == 1, "round \(round): \(overlapping)")
        #expect(
          overlapping.filter { $0 == .failedPrecondition }.count == 1,
          "round \(round): \(overlapping)")
      }
      let listed = try await c1.listTerms(.with { $0.pageSize = 100 }, metadata: admin).terms
      #expect(listed.count == 16)
      let rooms = try await c0.listClassrooms(
        .with {
          $0.orgCode = "CA"
          $0.pageSize = 100
        }, metadata: county
      ).classrooms
      #expect(rooms.map(\.code).sorted() == (0..<8).map { "RACE-\($0)" }.sorted())
    }
  }

  /// Every lesson of `rooms` on the teaching days of the seed term, periods 1–8, taught by
  /// `teacher`.
  static func lessonRows(rooms: Int, teacher: String) -> [Smartschool_Supervision_V1_Lesson] {
    var out: [Smartschool_Supervision_V1_Lesson] = []
    for r in 0..<rooms {
      for week in [0, 7, 14] {
        for day in 0..<5 {
          let date = CalendarDate("2020-09-07")!.adding(days: week + day).description
          for period in 1...8 {
            out.append(
              lesson("L-\(r)", date, Int32(period), subject: .mathematics, teacher: teacher))
          }
        }
      }
    }
    return out
  }

  static func key(_ l: Smartschool_Supervision_V1_Lesson) -> String {
    "\(l.classroomCode)/\(l.date)/\(l.period)"
  }

  @Test func overlappingImportsAtTwoReplicasNeitherDuplicateNorLoseABatch() async throws {
    try await withReplicas { c0, c1, h in
      try await seedTerm(c0, h)
      let county = h.auth("county_admin", at: "CA")
      for r in 0..<12 {
        _ = try await c0.createClassroom(
          classroom("L-\(r)", school: "A1", equipped: "2020-08-01"), metadata: county)
      }
      // 1,440 lessons; each replica imports two thirds, the middle third by both, with
      // different teachers: whichever writes an overlapping row second updates it.
      let t1 = Self.lessonRows(rooms: 12, teacher: "T1")
      let t2 = Self.lessonRows(rooms: 12, teacher: "T2")
      let third = t1.count / 3
      async let a = importLessons(c0, Array(t1[..<(2 * third)]), county)
      async let b = importLessons(c1, Array(t2[third...]), county)
      let (sa, sb) = try await (a, b)
      for s in [sa, sb] {
        #expect(s.accepted == Int64(2 * third))
        #expect(s.rejected == 0)
        #expect(s.errors.isEmpty)
      }
      #expect(sa.created + sb.created == Int64(t1.count))
      #expect(sa.updated + sb.updated == Int64(third))

      // The same rows again at both replicas at once: nothing created or updated.
      async let again0 = importLessons(c0, Array(t1[..<third]), county)
      async let again1 = importLessons(c1, Array(t2[(2 * third)...]), county)
      for s in try await [again0, again1] {
        #expect(s.accepted == Int64(third))
        #expect(s.created == 0)
        #expect(s.updated == 0)
      }

      let listed = try await termLessons(c1, under: "CA", county)
      #expect(listed.count == t1.count)
      #expect(Set(listed.map(Self.key)).count == t1.count)
      let onlyA = Set(t1[..<third].map(Self.key))
      let onlyB = Set(t2[(2 * third)...].map(Self.key))
      let inA = listed.filter { onlyA.contains(Self.key($0)) }
      let inB = listed.filter { onlyB.contains(Self.key($0)) }
      #expect(inA.count == third && inA.allSatisfy { $0.teacherExternalID == "T1" })
      #expect(inB.count == third && inB.allSatisfy { $0.teacherExternalID == "T2" })

      // Every write, at either replica, is on the feed once: 1,440 creations, 480 updates.
      var lessonEvents = 0
      var after: Int64 = 0
      while true {
        let page = try await c0.listChanges(
          .with {
            $0.afterSequence = after
            $0.pageSize = 1000
          }, metadata: h.auth("system_admin", at: nil))
        lessonEvents += page.changes.filter { $0.entity == "lesson" }.count
        after = page.lastSequence
        if !page.moreAvailable { break }
      }
      #expect(lessonEvents == t1.count + third)
    }
  }

  @Test func inspectionsWrittenAtBothReplicasAreAllListedAtEach() async throws {
    try await withReplicas { c0, c1, h in
      let inspector = h.auth("inspector", at: "CA")
      // Twenty visits (one a day), each sent at both replicas at once: twenty inspections.
      // Four visits (eight calls) at a time: each replica's test pool has four connections,
      // and twenty waiting at once could outwait the lease limit on a loaded CI machine.
      var ids: [String] = []
      for first in stride(from: 0, to: 20, by: 4) {
        ids += try await withThrowingTaskGroup(of: String.self) { group in
          for day in first..<(first + 4) {
            let date = CalendarDate("2020-10-01")!.adding(days: day).description
            for client in [c0, c1] {
              group.addTask {
                try await client.createInspection(visit("A2", date), metadata: inspector).id
              }
            }
          }
          var all: [String] = []
          for try await id in group { all.append(id) }
          return all
        }
      }
      #expect(ids.count == 40 && Set(ids).count == 20)
      for client in [c0, c1] {
        let listed = try await client.listInspections(
          .with {
            $0.orgCode = "CA"
            $0.pageSize = 100
          }, metadata: inspector
        ).inspections
        #expect(listed.count == 20)
        #expect(Set(listed.map(\.id)).count == 20)
        let summary = try await client.getInspectionSummary(
          .with {
            $0.orgCode = "CA"
            $0.year = 2020
          }, metadata: inspector)
        #expect(summary.inspected.map(\.inspections) == [20])
      }
    }
  }

  @Test func aClassroomMovedAtOneReplicaDuringAnImportAtTheOtherTakesItsLessonsAlong()
    async throws
  {
    try await withReplicas { c0, c1, h in
      try await expectLessonsFollowAMoveDuringAnImport(importer: c0, mover: c1, h)
    }
  }
}
