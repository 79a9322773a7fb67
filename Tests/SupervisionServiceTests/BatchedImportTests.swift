import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import Synchronization
import TestSupport
import Testing

typealias LessonBatch = Smartschool_Supervision_V1_LessonBatch

/// About 5,200 lessons over the seed classrooms and 60 days around the term, periods 1–21:
/// valid rows across several of the server's commits, with rejected rows among them (outside
/// the term, before R-A2 was equipped, after R-A3 retired, R-B1 out of the county's scope,
/// an unknown classroom, period 21, a duration of 300).
func batchedLessons() -> [Smartschool_Supervision_V1_Lesson] {
  var out: [Smartschool_Supervision_V1_Lesson] = []
  let first = CalendarDate("2020-09-01")!
  for day in 0..<60 {
    let date = first.adding(days: day).description
    for room in ["R-A1", "R-A2", "R-A3", "R-B1", "NOPE"] where room != "NOPE" || day % 9 == 0 {
      for period in Int32(1)...21 {
        let subject: Smartschool_Common_V1_Subject = period % 2 == 0 ? .chinese : .mathematics
        let minutes: Int32 = (day * 21 + Int(period)) % 211 == 0 ? 300 : 40
        out.append(lesson(room, date, period, subject: subject, minutes: minutes))
      }
    }
  }
  return out
}

/// `rows` cut into messages of the sizes in `sizes`, repeated until every row is in one.
func lessonBatches(_ rows: [Smartschool_Supervision_V1_Lesson], sizes: [Int]) -> [LessonBatch] {
  var out: [LessonBatch] = []
  var start = 0
  var k = 0
  while start < rows.count {
    let end = min(rows.count, start + sizes[k % sizes.count])
    out.append(.with { $0.lessons = Array(rows[start..<end]) })
    start = end
    k += 1
  }
  return out
}

func importLessonBatches(
  _ client: SupervisionClient, _ messages: [LessonBatch], _ metadata: Metadata
) async throws -> Smartschool_Common_V1_ImportSummary {
  try await client.importLessonBatches(metadata: metadata) { writer in
    for message in messages { try await writer.write(message) }
  }
}

/// A value one harness's closure hands to the next.
final class Captured<Value: Sendable>: Sendable {
  private let mutex = Mutex<Value?>(nil)
  var value: Value? { mutex.withLock { $0 } }
  func set(_ value: Value) { mutex.withLock { $0 = value } }
}

@Suite(.serialized) struct BatchedLessonImportTests {
  @Test func batchesGiveTheSummaryAndLessonsOfSingleRows() async throws {
    let all = batchedLessons()
    let single = Captured<
      (Smartschool_Common_V1_ImportSummary, [Smartschool_Supervision_V1_Lesson])
    >()
    let h1 = try await Harness()
    try await h1.run { client in
      try await seedClassrooms(client, h1)
      let summary = try await importLessons(client, all, h1.auth("county_admin", at: "CA"))
      let p = h1.auth("province_admin", at: "P")
      single.set((summary, try await termLessons(client, under: "P", p)))
    }
    let (expected, stored) = try #require(single.value)
    #expect(expected.received == Int64(all.count) && expected.accepted > 1000)
    #expect(expected.rejected > 100 && expected.created == expected.accepted)
    let h2 = try await Harness()
    try await h2.run { client in
      try await seedClassrooms(client, h2)
      let a = h2.auth("county_admin", at: "CA")
      let p = h2.auth("province_admin", at: "P")
      // Mixed sizes, empty messages, one row, the cap exactly, and messages across commits.
      let messages = lessonBatches(all, sizes: [5000, 1, 0, 499, 3, 0, 1234])
      #expect(messages.contains { $0.lessons.count == 5000 })
      let summary = try await importLessonBatches(client, messages, a)
      #expect(summary == expected)
      #expect(try await termLessons(client, under: "P", p) == stored)

      // A repeat stores nothing new and changes nothing.
      let again = try await importLessonBatches(client, lessonBatches(all, sizes: [1000]), a)
      #expect(again.received == expected.received && again.accepted == expected.accepted)
      #expect(again.created == 0 && again.updated == 0 && again.errors == expected.errors)
      #expect(try await termLessons(client, under: "P", p) == stored)

      let empty = try await importLessonBatches(client, [LessonBatch(), LessonBatch()], a)
      #expect(empty.received == 0 && empty.accepted == 0 && empty.errors.isEmpty)

      // The permission is checked before any row, as in the single-row form.
      await expectCode(.permissionDenied) {
        try await importLessonBatches(client, messages, h2.auth("teacher", at: "A1"))
      }
    }
  }

  @Test func aMessageOverTheCapFailsTheStreamAndKeepsCommittedBatches() async throws {
    let h = try await Harness(lessonBatch: 500)
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      let good = Array(
        batchedLessons().filter {
          $0.classroomCode == "R-A1" && $0.period <= 20 && $0.durationMinutes == 40
            && $0.date >= "2020-09-07" && $0.date <= "2020-10-04"
        }.prefix(520))
      #expect(good.count == 520)
      // 100,000 lessons in one message (about 500 KB: under the 4 MiB message limit).
      let over = LessonBatch.with {
        $0.lessons = Array(repeating: .with { $0.classroomCode = "R-A1" }, count: 100_000)
      }
      let error = await rpcError {
        _ = try await importLessonBatches(client, [.with { $0.lessons = good }, over], a)
      }
      #expect(error?.code == .invalidArgument)
      #expect(error?.message.contains("lessons") == true)
      #expect(error?.message.contains("at most 5000") == true)
      // The first 500 rows were a whole commit before the bad message; the rest was not.
      let stored = try await termLessons(client, under: "CA", a)
      #expect(stored.count == 500)
      let justOver = await rpcError {
        _ = try await importLessonBatches(
          client, [.with { $0.lessons = Array(repeating: good[0], count: 5001) }], a)
      }
      #expect(justOver?.code == .invalidArgument)
    }
  }

  /// A batch of new rows followed (in key order) by stored ones, some changed: on PostgreSQL
  /// its bulk copy meets a stored key after inserting the new rows, is undone, and the batch
  /// is upserted; then a batch of only new rows. Counts, rows and feed are those of the
  /// writes: every created or changed lesson on the feed once, with its path and payload.
  @Test func newRowsBeforeStoredOnesAreCountedStoredAndFedOnce() async throws {
    let h = try await Harness()
    try await h.run { client in
      try await seedClassrooms(client, h)
      let a = h.auth("county_admin", at: "CA")
      let start = CalendarDate("2020-09-07")!
      func rows(days: Range<Int>, periods: ClosedRange<Int32>, teacher: (Int, Int32) -> String)
        -> [Smartschool_Supervision_V1_Lesson]
      {
        days.flatMap { d in
          periods.map { p in
            lesson(
              "R-A1", start.adding(days: d).description, p, subject: .mathematics,
              teacher: teacher(d, p))
          }
        }
      }
      func lessonChanges(after: Int64) async throws
        -> (changes: [Smartschool_Common_V1_Change], last: Int64)
      {
        let all = try await feedEvents(client, after: after, h)
        return (all.filter { $0.entity == "lesson" }, all.last?.sequence ?? after)
      }
      let key = { (l: Smartschool_Supervision_V1_Lesson) in "R-A1/\(l.date)/\(l.period)" }

      let stored = rows(days: 15..<19, periods: 1...5) { _, _ in "T1" }
      let first = try await importLessons(client, stored, a)
      #expect(first.created == 20 && first.rejected == 0)
      let head = try await lessonChanges(after: 0)
      #expect(head.changes.count == 20)

      // 75 new rows, then the 20 stored ones with every other period given to T2.
      let mixed = rows(days: 0..<19, periods: 1...5) { d, p in d >= 15 && p % 2 == 0 ? "T2" : "T1" }
      let summary = try await importLessonBatches(client, [.with { $0.lessons = mixed }], a)
      #expect(summary.accepted == 95 && summary.rejected == 0)
      #expect(summary.created == 75 && summary.updated == 8)
      let afterMixed = try await lessonChanges(after: head.last)
      let expected = Dictionary(
        uniqueKeysWithValues: mixed.filter {
          $0.date < "2020-09-22" || $0.teacherExternalID == "T2"
        }.map { (key($0), $0) })
      #expect(afterMixed.changes.count == 83)
      #expect(Set(afterMixed.changes.map(\.naturalKey)) == Set(expected.keys))
      for change in afterMixed.changes {
        #expect(change.orgPath == h.tree.paths["A1-1"])
        #expect(change.id == change.naturalKey)
        let payload = try Smartschool_Supervision_V1_Lesson(unpackingAny: change.payload)
        #expect(payload == expected[change.naturalKey])
      }

      // Only new rows.
      let fresh = rows(days: 0..<19, periods: 6...8) { _, _ in "T1" }
      let more = try await importLessons(client, fresh, a)
      #expect(more.created == 57 && more.updated == 0 && more.rejected == 0)
      let afterFresh = try await lessonChanges(after: afterMixed.last)
      #expect(afterFresh.changes.map(\.naturalKey) == fresh.map(key))
      #expect(afterFresh.changes.allSatisfy { $0.orgPath == h.tree.paths["A1-1"] })
      #expect(
        try afterFresh.changes.map { try Smartschool_Supervision_V1_Lesson(unpackingAny: $0.payload) }
          == fresh)

      let listed = try await termLessons(client, under: "CA", a)
      #expect(listed.count == 95 + 57)
      #expect(Set(listed.map(key)).count == 95 + 57)
      #expect(listed.filter { $0.teacherExternalID == "T2" }.count == 8)
    }
  }
}
