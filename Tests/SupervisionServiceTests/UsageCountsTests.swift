import Crypto
import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import SwiftProtobuf
import Testing
import TestSupport

/// A small deterministic generator (SplitMix64), so that a failure can be replayed.
struct SeededRandom: RandomNumberGenerator {
  var state: UInt64
  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

/// The reports read per classroom-week and per teacher-week counts that the database keeps
/// beside the lessons; these tests check that every figure of every report equals the same
/// report counted from the raw lessons (``UsageReads/fromLessons``) after random imports,
/// changing re-imports, re-sent rows, classroom changes and holiday-week changes.
struct UsageCountsTests {
  /// Teachers of the tree, and one identity does not know (its lessons are held).
  static let teachers = ["T1", "T2", "T3", "T4", "TX"]
  static let unknownTeacher = "TX"

  static func tree() -> TreeBuilder {
    var t = standardTree()
    t.teacher("T4", at: "A2", birthYear: 1990)
    return t
  }

  /// The classrooms: code, school, class, equipped, retired.
  static let rooms: [(String, String, String, String, String)] = [
    ("U-A1", "A1", "", "2020-08-01", ""),
    ("U-A1C", "A1", "A1-1", "2020-08-01", ""),
    ("U-A2", "A2", "", "2020-10-14", ""),
    ("U-A3", "A3", "", "2020-08-01", "2020-11-20"),
    ("U-B1", "B1", "", "2020-08-01", ""),
    ("U-B1B", "B1", "", "2020-09-16", ""),
  ]

  /// Two terms sharing the week of 2020-12-28 (the first ends on its Wednesday, the second
  /// starts on its Thursday); the first starts on a Wednesday and has a holiday week.
  static let terms: [(code: String, start: String, end: String, excluded: [String])] = [
    ("U-1", "2020-09-09", "2020-12-30", ["2020-10-05"]),
    ("U-2", "2020-12-31", "2021-01-27", []),
  ]

  /// A stored lesson as the test knows it.
  struct Stored: Hashable {
    var room: String
    var date: CalendarDate
    var period: Int32
    var teacher: String
    var subject: Int
    var source: Int

    var key: String { "\(room)/\(date)/\(period)" }

    var proto: Smartschool_Supervision_V1_Lesson {
      .with {
        $0.classroomCode = room
        $0.teacherExternalID = teacher
        $0.subject = Smartschool_Common_V1_Subject(rawValue: subject)!
        $0.date = date.description
        $0.period = period
        $0.durationMinutes = 40
        $0.source = Smartschool_Supervision_V1_LessonSource(rawValue: source)!
      }
    }
  }

  /// The classrooms' service periods as the test set them.
  struct Spans {
    var spans: [String: (equipped: CalendarDate, retired: CalendarDate?)] = [:]
    func inService(_ room: String, on date: CalendarDate) -> Bool {
      let s = spans[room]!
      return s.equipped <= date && (s.retired.map { date < $0 } ?? true)
    }
    func inService(_ room: String, weekOf monday: CalendarDate) -> Bool {
      let s = spans[room]!
      return s.equipped <= monday.adding(days: 6) && (s.retired.map { monday < $0 } ?? true)
    }
  }

  static func setUp(_ client: SupervisionClient, _ admin: Metadata) async throws -> Spans {
    for t in terms {
      _ = try await client.createTerm(
        .with {
          $0.term = .with {
            $0.code = t.code
            $0.name = t.code
            $0.startDate = t.start
            $0.endDate = t.end
            $0.excludedWeeks = t.excluded
          }
        }, metadata: admin)
    }
    var spans = Spans()
    for (code, school, cls, equipped, retired) in rooms {
      _ = try await client.createClassroom(
        classroom(code, school: school, cls: cls, equipped: equipped, retired: retired),
        metadata: admin)
      spans.spans[code] = (CalendarDate(equipped)!, CalendarDate(retired))
    }
    return spans
  }

  /// `count` new lessons (keys not in `stored`) on days within the terms and in service.
  static func newLessons(
    _ count: Int, stored: [String: Stored], spans: Spans, rng: inout SeededRandom
  ) -> [Stored] {
    let first = CalendarDate(terms[0].start)!
    let last = CalendarDate(terms[1].end)!
    var out: [String: Stored] = [:]
    var attempts = 0
    while out.count < count && attempts < count * 20 {
      attempts += 1
      let room = rooms.randomElement(using: &rng)!.0
      let date = first.adding(
        days: Int.random(in: 0...(last.dayNumber - first.dayNumber), using: &rng))
      guard spans.inService(room, on: date) else { continue }
      let l = Stored(
        room: room, date: date, period: Int32.random(in: 1...6, using: &rng),
        teacher: teachers.randomElement(using: &rng)!, subject: Int.random(in: 1...5, using: &rng),
        source: Int.random(in: 1...3, using: &rng))
      if stored[l.key] == nil && out[l.key] == nil { out[l.key] = l }
    }
    return out.values.sorted { $0.key < $1.key }
  }

  static func send(_ client: SupervisionClient, _ rows: [Stored], _ admin: Metadata)
    async throws -> Smartschool_Common_V1_ImportSummary
  {
    try await client.importLessonBatches(metadata: admin) { writer in
      for chunk in stride(from: 0, to: rows.count, by: 40) {
        try await writer.write(
          .with { $0.lessons = rows[chunk..<min(chunk + 40, rows.count)].map(\.proto) })
      }
    }
  }

  /// Every report the service has over usage, as one list of messages, for the orgs, terms,
  /// weeks and periods the test data spans.
  static func reports(_ client: SupervisionClient, _ admin: Metadata) async throws
    -> [any SwiftProtobuf.Message]
  {
    var out: [any SwiftProtobuf.Message] = []
    // The root, a county, a school and a class: every level a scope can sit at.
    let orgs = ["P", "CA", "A1", "A1-1"]
    for org in orgs {
      for t in terms {
        let term = try await client.getTerm(.with { $0.code = t.code }, metadata: admin)
        out.append(
          try await client.getComplianceReport(
            .with {
              $0.orgCode = org
              $0.termCode = t.code
            }, metadata: admin))
        if term.teachingWeeks.count > 3 {
          out.append(
            try await client.getComplianceReport(
              .with {
                $0.orgCode = org
                $0.termCode = t.code
                $0.fromWeek = term.teachingWeeks[1]
                $0.toWeek = term.teachingWeeks[3]
              }, metadata: admin))
        }
        out.append(
          try await client.getTeacherTargets(
            .with {
              $0.orgCode = org
              $0.termCode = t.code
            }, metadata: admin))
        for (asOf, n) in [(t.end, 0), ("2020-11-02", 2), ("2021-02-01", 1)] {
          guard asOf >= t.start else { continue }
          out.append(
            try await client.listWarnings(
              .with {
                $0.orgCode = org
                $0.termCode = t.code
                $0.asOf = asOf
                $0.consecutiveWeeks = Int32(n)
              }, metadata: admin))
        }
      }
      for week in ["2020-09-09", "2020-09-14", "2020-10-12", "2020-10-19", "2020-11-23",
        "2020-12-28", "2021-01-04", "2021-01-25"]
      {
        out.append(
          try await client.getWeeklyNotice(
            .with {
              $0.orgCode = org
              $0.week = week
            }, metadata: admin))
      }
      for (period, date) in [
        (Smartschool_Supervision_V1_RankingPeriod.month, "2020-10-15"), (.month, "2020-12-01"),
        (.month, "2021-01-10"), (.halfYear, "2020-12-31"), (.year, "2020-06-01"),
        (.year, "2021-01-01"),
      ] {
        out.append(
          try await client.getRanking(
            .with {
              $0.orgCode = org
              $0.period = period
              $0.date = date
            }, metadata: admin))
      }
      out.append(try await client.getTrends(.with { $0.orgCode = org }, metadata: admin))
    }
    return out
  }

  /// Compares every report read from the counts with the same report counted from the
  /// lessons, and the scope figures with a count made here from what the test stored.
  static func expectCountsExact(
    _ client: SupervisionClient, _ admin: Metadata, reads: UsageReads, stored: [String: Stored],
    spans: Spans, sourceLocation: SourceLocation = #_sourceLocation
  ) async throws {
    reads.fromLessons = false
    let counted = try await reports(client, admin)
    reads.fromLessons = true
    let recounted = try await reports(client, admin)
    reads.fromLessons = false
    #expect(counted.count == recounted.count, sourceLocation: sourceLocation)
    var differing = 0
    for (a, b) in zip(counted, recounted) where !a.isEqualTo(message: b) {
      differing += 1
      if differing <= 3 {
        Issue.record(
          "counts and lessons differ:\n\(a.textFormatString())\nvs\n\(b.textFormatString())",
          sourceLocation: sourceLocation)
      }
    }
    #expect(differing == 0, sourceLocation: sourceLocation)

    // An independent count of the scope's lessons and of each teacher's.
    for t in terms {
      let term = try await client.getTerm(.with { $0.code = t.code }, metadata: admin)
      let weeks = Set(term.teachingWeeks.compactMap { CalendarDate($0) })
      let start = CalendarDate(t.start)!
      let end = CalendarDate(t.end)!
      var lessons = 0
      var manual = 0
      var byTeacher: [String: Int] = [:]
      for l in stored.values where l.teacher != unknownTeacher {
        let week = l.date.monday
        guard weeks.contains(week) else { continue }
        if spans.inService(l.room, weekOf: week) {
          lessons += 1
          if l.source == 3 { manual += 1 }
        }
        if start <= l.date && l.date <= end { byTeacher[l.teacher, default: 0] += 1 }
      }
      let report = try await client.getComplianceReport(
        .with {
          $0.orgCode = "P"
          $0.termCode = t.code
        }, metadata: admin)
      #expect(report.scope.lessonCount == Int64(lessons), sourceLocation: sourceLocation)
      #expect(report.scope.manualLessons == Int64(manual), sourceLocation: sourceLocation)
      #expect(lessons > 0, "the test data must reach the reports", sourceLocation: sourceLocation)
      let targets = try await client.getTeacherTargets(
        .with {
          $0.orgCode = "P"
          $0.termCode = t.code
        }, metadata: admin)
      for teacher in targets.teachers {
        #expect(
          teacher.lessons == Int64(byTeacher[teacher.teacherExternalID] ?? 0),
          "\(t.code) \(teacher.teacherExternalID)", sourceLocation: sourceLocation)
      }
    }
  }

  /// Re-sends of stored lessons (of classrooms in service that day, as an import requires):
  /// about a quarter unchanged, the rest with another subject, teacher (held or verified by
  /// it) or source.
  static func changes(
    _ count: Int, stored: [String: Stored], spans: Spans, rng: inout SeededRandom
  ) -> [Stored] {
    let keys = stored.keys.sorted().filter {
      spans.inService(stored[$0]!.room, on: stored[$0]!.date)
    }
    var picked: [String: Stored] = [:]
    for _ in 0..<count {
      guard let key = keys.randomElement(using: &rng) else { break }
      var l = stored[key]!
      switch Int.random(in: 0..<4, using: &rng) {
      case 0: break
      case 1: l.subject = Int.random(in: 1...5, using: &rng)
      case 2: l.teacher = teachers.randomElement(using: &rng)!
      default: l.source = Int.random(in: 1...3, using: &rng)
      }
      picked[key] = l
    }
    return picked.values.sorted { $0.key < $1.key }
  }

  @Test func everyReportReadsFromTheCountsWhatTheLessonsGive() async throws {
    let reads = UsageReads()
    // Seven lessons a commit: each import is many batches, written two at a time, whose
    // lessons share classroom-weeks and teacher-weeks.
    let h = try await Harness(tree: Self.tree(), lessonBatch: 7, usageReads: reads)
    try await h.run { client in
      let admin = h.auth("system_admin", at: nil)
      var spans = try await Self.setUp(client, admin)
      var rng = SeededRandom(state: 27)
      var stored: [String: Stored] = [:]
      for round in 0..<4 {
        // New lessons, then changed and unchanged re-sends.
        let fresh = Self.newLessons(120, stored: stored, spans: spans, rng: &rng)
        let summary = try await Self.send(client, fresh, admin)
        #expect(summary.rejected == 0, "\(summary.errors.prefix(3))")
        #expect(summary.created == Int64(fresh.count))
        for l in fresh { stored[l.key] = l }
        let resent = Self.changes(60, stored: stored, spans: spans, rng: &rng)
        let again = try await Self.send(client, resent, admin)
        #expect(again.rejected == 0, "\(again.errors.prefix(3))")
        let changed = resent.filter { stored[$0.key] != $0 }.count
        #expect(again.updated == Int64(changed))
        for l in resent { stored[l.key] = l }

        switch round {
        case 0:
          // A classroom moves into a class and back out; another is retired early.
          for cls in ["A1-1", ""] {
            _ = try await client.updateClassroom(
              .with {
                $0.classroom = .with {
                  $0.code = "U-A1"
                  $0.classCode = cls
                  $0.equippedDate = "2020-08-01"
                }
              }, metadata: admin)
          }
          _ = try await client.updateClassroom(
            .with {
              $0.classroom = .with {
                $0.code = "U-B1"
                $0.equippedDate = "2020-08-01"
                $0.retiredDate = "2020-12-09"
              }
            }, metadata: admin)
          spans.spans["U-B1"]!.retired = CalendarDate("2020-12-09")
        case 1:
          // Holiday weeks change: another week excluded, the first one taught after all.
          _ = try await client.updateTerm(
            .with {
              $0.term = .with {
                $0.code = "U-1"
                $0.name = "U-1"
                $0.startDate = Self.terms[0].start
                $0.endDate = Self.terms[0].end
                $0.excludedWeeks = ["2020-11-02"]
              }
            }, metadata: admin)
        case 2:
          // A classroom equipped later than its lessons: they stay, counted where it serves.
          _ = try await client.updateClassroom(
            .with {
              $0.classroom = .with {
                $0.code = "U-A1C"
                $0.classCode = "A1-1"
                $0.equippedDate = "2020-10-21"
              }
            }, metadata: admin)
          spans.spans["U-A1C"]!.equipped = CalendarDate("2020-10-21")!
        default: break
        }
        try await Self.expectCountsExact(client, admin, reads: reads, stored: stored, spans: spans)
      }
    }
  }

  /// Two replicas on one PostgreSQL database import overlapping lessons at once (the same
  /// new keys from both, and changes of the same stored lessons): the counts, added by both
  /// in their transactions, still equal a count of the lessons.
  @Test(.enabled(if: TestStore.postgresServer != nil))
  func replicasImportingAtOnceKeepTheCountsExact() async throws {
    let dir = try TemporaryDirectory()
    let key = Curve25519.Signing.PrivateKey()
    _ = try await TestStore.config(service: "supervision", directory: dir)
    let reads = UsageReads()
    let h0 = try await Harness(tree: Self.tree(), data: dir, key: key, usageReads: reads)
    let h1 = try await Harness(tree: Self.tree(), data: dir, key: key)
    do {
      try await withClient(port: h0.port) { g0 in
        try await withClient(port: h1.port) { g1 in
          let c0 = SupervisionClient(wrapping: g0)
          let c1 = SupervisionClient(wrapping: g1)
          let admin = h0.auth("system_admin", at: nil)
          let spans = try await Self.setUp(c0, admin)
          var rng = SeededRandom(state: 2027)
          var stored: [String: Stored] = [:]
          for _ in 0..<2 {
            // Both replicas get the same new rows, in opposite orders.
            let fresh = Self.newLessons(150, stored: stored, spans: spans, rng: &rng)
            async let a = Self.send(c0, fresh, admin)
            async let b = Self.send(c1, fresh.reversed(), admin)
            let (x, y) = try await (a, b)
            #expect(x.created + y.created == Int64(fresh.count))
            for l in fresh { stored[l.key] = l }
            // Each replica changes the same stored lessons differently: either may win each
            // row, so the test reads back what was stored.
            let one = Self.changes(80, stored: stored, spans: spans, rng: &rng)
            let other = one.map { l -> Stored in
              var l = l
              l.subject = l.subject % 5 + 1
              l.teacher = l.teacher == "T1" ? "TX" : "T1"
              return l
            }
            async let p = Self.send(c0, one, admin)
            async let q = Self.send(c1, other.reversed(), admin)
            _ = try await (p, q)
            stored = [:]
            for l in try await Self.termLessonsOfBothTerms(c0, admin) {
              let s = Stored(
                room: l.classroomCode, date: CalendarDate(l.date)!, period: l.period,
                teacher: l.teacherExternalID, subject: l.subject.rawValue,
                source: l.source.rawValue)
              stored[s.key] = s
            }
            try await Self.expectCountsExact(c0, admin, reads: reads, stored: stored, spans: spans)
          }
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

  /// Every lesson of the test's two terms, as ListLessons streams them.
  static func termLessonsOfBothTerms(_ client: SupervisionClient, _ admin: Metadata)
    async throws -> [Smartschool_Supervision_V1_Lesson]
  {
    try await client.listLessons(
      .with {
        $0.orgCode = "P"
        $0.fromDate = terms[0].start
        $0.toDate = terms[1].end
      }, metadata: admin
    ) { response in
      var out: [Smartschool_Supervision_V1_Lesson] = []
      for try await l in response.messages { out.append(l) }
      return out
    }
  }
}
