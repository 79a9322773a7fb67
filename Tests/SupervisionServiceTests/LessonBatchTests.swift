import Foundation
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

@testable import SupervisionService

/// A lesson batch written straight to the store, on the run's backend: the rows it inserts are
/// counted per batch (not by a trigger), so a batch that names a key twice (inserted, then
/// changed by its second row) must still leave the counts equal to a count of the lessons.
/// (An import stream refuses a key twice, so only a store's other callers can send one.)
struct LessonBatchTests {
  static func open(_ directory: TemporaryDirectory) async throws -> any SupervisionStoring {
    guard
      let (store, logger) = try await TestStore.postgres(
        named: "supervision_" + directory.path, migrations: SupervisionMigrations.postgres)
    else { return try SQLiteSupervisionStore(directory: directory.path) }
    return PostgresSupervisionStore(store: store, logger: logger)
  }

  /// Registers the classroom `code` (id `room<code>`) of school S at `path`.
  static func room(_ code: String, at path: String, in store: any SupervisionStoring)
    async throws -> ClassroomRecord
  {
    try await store.createClassroom(
      ClassroomRecord(
        number: 0, id: "room" + code, code: code, name: code, schoolID: "S", schoolCode: "S",
        classCode: "", orgPath: path, equipped: CalendarDate("2020-08-01")!, retired: nil,
        createTime: 0, updateTime: 0))
  }

  @Test func aKeyTwiceInOneBatchIsInsertedThenChangedAndCountedOnce() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try await Self.open(dir)
    let monday = CalendarDate("2020-09-14")!
    let path = "/P/C/K/S/"
    let room = try await Self.room("R1", at: path, in: store)
    func lesson(_ day: Int, _ period: Int, _ teacher: String, _ subject: Int, _ source: Int = 1)
      -> LessonRecord
    {
      LessonRecord(
        classroom: room.number, classroomCode: "R1", date: monday.adding(days: day),
        period: period, orgPath: path, teacher: teacher, subject: subject, minutes: 40,
        source: source)
    }
    // A lesson stored in the next week; then a batch whose week has no counts yet, which
    // repeats one of its new keys with another teacher, subject and source (the counts the
    // first row adds must be there before the second moves them), and repeats another
    // unchanged.
    _ = try await store.upsertLessons([lesson(7, 1, "T1", 1)])
    let counts = try await store.upsertLessons([
      lesson(1, 1, "T1", 2), lesson(2, 1, "T2", 2), lesson(1, 1, "T3", 3, 3),
      lesson(3, 1, "T1", 4), lesson(3, 1, "T1", 4),
    ])
    #expect(counts.created == 3)
    #expect(counts.updated == 1)
    #expect(counts.unchanged == 1)
    let next = monday.adding(days: 7)
    let weeks = monday.dayNumber...next.dayNumber
    let kept = try await store.weekUsage(under: path, weeks: weeks)
    let counted = try await store.lessonUsage(under: path, weeks: weeks)
    #expect(kept == counted)
    #expect(
      kept == [
        ClassroomWeek(classroom: room.number, week: monday):
          WeekUsage(lessons: 3, subjects: 3, manual: 1),
        ClassroomWeek(classroom: room.number, week: next): WeekUsage(lessons: 1, subjects: 1),
      ])
    let teachers = try await store.teacherWeekCounts(under: path, weeks: weeks)
    #expect(
      teachers == [
        "T1": [monday.dayNumber: 1, next.dayNumber: 1], "T2": [monday.dayNumber: 1],
        "T3": [monday.dayNumber: 1],
      ])
  }

  /// Batches of new lessons whose teacher-week counts are partly stored (a week an earlier
  /// batch began) and partly new, written one after another and then four at once adding to
  /// the same new teacher-weeks (on PostgreSQL the new counts go in by COPY after a probe for
  /// the stored ones; racing batches must not lose a count to a unique violation nor count
  /// twice): the counts kept per teacher and week equal a count of the lessons after every
  /// round.
  @Test func teacherWeekCountsStayExactUnderBatchesThatMeetStoredAndRacingKeys() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try await Self.open(dir)
    let monday = CalendarDate("2020-09-14")!
    let path = "/P/C/K/S/"
    var rooms: [Int64] = []
    for r in 0..<3 { rooms.append(try await Self.room("R\(r)", at: path, in: store).number) }
    // Lesson `n` of a round: its own (classroom, day, period) and one of a few teachers, so
    // that every batch adds to teacher-weeks other batches of the round add to. The second
    // round brings two new teachers beside the first round's four (its batches meet stored and
    // new keys); each later round has four teachers of its own (every batch of it races the
    // others to add the same new keys).
    func lesson(_ round: Int, _ n: Int) -> LessonRecord {
      let slot = round * 64 + n
      let teacher = round < 2 ? "T\(slot % (4 + 2 * round))" : "T\(round)-\(slot % 4)"
      return LessonRecord(
        classroom: rooms[slot % 3], classroomCode: "R\(slot % 3)",
        date: monday.adding(days: (slot / 3) % 5 + 7 * ((slot / 15) % 3)),
        period: 1 + (slot / 45) % 20, orgPath: path, teacher: teacher,
        subject: 1 + slot % 5, minutes: 40, source: 1)
    }
    let weeks = monday.dayNumber...monday.adding(days: 14).dayNumber
    let days = monday.dayNumber...monday.adding(days: 20).dayNumber
    for round in 0..<6 {
      if round < 2 {
        // One batch at a time: the second round's batches find some of their keys stored.
        for b in 0..<4 {
          _ = try await store.upsertLessons((0..<16).map { lesson(round, b * 16 + $0) })
        }
      } else {
        // Four batches at once, each adding to the same teacher-weeks.
        try await withThrowingTaskGroup(of: Void.self) { group in
          for b in 0..<4 {
            let batch = (0..<16).map { lesson(round, b * 16 + $0) }
            group.addTask { _ = try await store.upsertLessons(batch) }
          }
          try await group.waitForAll()
        }
      }
      let kept = try await store.teacherWeekCounts(under: path, weeks: weeks)
      let counted = try await store.teacherWeeklyLessonCounts(under: path, days: days)
      #expect(kept == counted, "round \(round)")
      #expect(kept.values.reduce(0) { $0 + $1.values.reduce(0, +) } == 64 * (round + 1))
    }
  }

  /// The import stages a batch (its feed events made at the classroom's path as the stream
  /// read it) while the batch before is written; the classroom may move before the staged
  /// batch is written. Its lessons and their feed events must then carry the new path, on the
  /// bulk path (a batch of new keys) and on the upsert (changed keys among stored ones), and an
  /// unchanged lesson must make no event. The events are timed by the write, not the stage.
  @Test func aBatchStagedBeforeItsClassroomMovedIsStoredAndFedAtTheNewPath() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try await Self.open(dir)
    let monday = CalendarDate("2020-09-14")!
    let (first, second) = ("/P/C/K/S/", "/P/C/K/T/")
    var room = try await Self.room("R1", at: first, in: store)
    func lesson(_ day: Int, _ period: Int, _ teacher: String, at path: String) -> LessonRecord {
      LessonRecord(
        classroom: room.number, classroomCode: "R1", date: monday.adding(days: day),
        period: period, orgPath: path, teacher: teacher, subject: 2, minutes: 40, source: 1)
    }
    func move(to path: String) async throws {
      room.orgPath = path
      try await store.updateClassroom(room)
    }
    var after: Int64 = 0
    func lessonEvents() async throws -> [Smartschool_Common_V1_Change] {
      let page = try await store.changes(after: after, limit: 1000, scopes: [.root])
      after = page.changes.last?.sequence ?? after
      return page.changes.filter { $0.entity == "lesson" }
    }
    let weeks = monday.dayNumber...monday.dayNumber

    // Events not timed before `since` (less a millisecond for the timestamp's rounding) were
    // timed by the write: each batch is staged 50 ms before it.
    var since = Date()
    func timedByTheWrite(_ events: [Smartschool_Common_V1_Change]) -> Bool {
      events.allSatisfy { $0.time.date.timeIntervalSince(since) > -0.001 }
    }
    let fresh = try StagedLessons((1...4).map { lesson($0, 1, "T1", at: first) })
    try await Task.sleep(for: .milliseconds(50))
    try await move(to: second)
    since = Date()
    let made = try await store.upsertLessons(fresh)
    #expect(made.created == 4)
    let madeEvents = try await lessonEvents()
    #expect(madeEvents.count == 4)
    #expect(madeEvents.allSatisfy { $0.orgPath == second })
    #expect(timedByTheWrite(madeEvents))
    #expect(
      Set(madeEvents.map(\.naturalKey)) == Set(fresh.lessons.map(\.naturalKey)))
    for event in madeEvents {
      let payload = try Smartschool_Supervision_V1_Lesson(unpackingAny: event.payload)
      #expect(payload.teacherExternalID == "T1")
      #expect(payload.classroomCode == "R1")
    }
    #expect(try await store.weekUsage(under: first, weeks: weeks) == [:])
    #expect(
      try await store.weekUsage(under: second, weeks: weeks)
        == [
          ClassroomWeek(classroom: room.number, week: monday): WeekUsage(lessons: 4, subjects: 1)
        ])

    // Stored keys, one changed and one not, and a new key; the classroom moves back.
    let mixed = try StagedLessons([
      lesson(1, 1, "T2", at: second), lesson(2, 1, "T1", at: second),
      lesson(5, 1, "T1", at: second),
    ])
    try await Task.sleep(for: .milliseconds(50))
    try await move(to: first)
    since = Date()
    let written = try await store.upsertLessons(mixed)
    #expect((written.created, written.updated, written.unchanged) == (1, 1, 1))
    let mixedEvents = try await lessonEvents()
    #expect(mixedEvents.count == 2)
    #expect(mixedEvents.allSatisfy { $0.orgPath == first })
    #expect(timedByTheWrite(mixedEvents))
    #expect(
      Set(mixedEvents.map(\.naturalKey))
        == [mixed.lessons[0].naturalKey, mixed.lessons[2].naturalKey])
    let stored = try await store.lessons(
      classroom: room.number, under: first, days: monday.dayNumber...monday.dayNumber + 6,
      after: nil, limit: 100)
    #expect(stored.count == 5)
    #expect(stored.allSatisfy { $0.orgPath == first })
    #expect(try await store.weekUsage(under: first, weeks: weeks)
      == store.lessonUsage(under: first, weeks: weeks))
  }
}
