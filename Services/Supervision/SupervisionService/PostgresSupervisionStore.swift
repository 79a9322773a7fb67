import Foundation
import Logging
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf
import Synchronization

/// The PostgreSQL store of the supervision service, with the SQLite one's semantics statement
/// for statement; any number of replicas may share its database. What differs: a lesson
/// batch is one `INSERT … SELECT FROM unnest(…) ON CONFLICT … DO UPDATE … WHERE changed
/// RETURNING` (no round trip per row, and two replicas importing the same rows neither
/// duplicate them nor lose a batch to a unique violation), terms are written under an
/// advisory lock so the no-overlap rule holds across replicas, and a lesson batch holds its
/// classrooms `FOR SHARE` so a concurrent move of a classroom cannot leave lessons on its old
/// path.
final class PostgresSupervisionStore: SupervisionStoring {
  let store: PostgresStore
  /// Vacuums and analyses the lessons and their counts once a bulk import goes quiet.
  private let upkeep: PostgresUpkeep

  init(store: PostgresStore, logger: Logger) {
    self.store = store
    upkeep = PostgresUpkeep(
      store: store, tables: ["sup_lessons", "sup_classroom_weeks", "sup_teacher_weeks"],
      logger: logger)
  }

  // MARK: terms

  private static func excludedText(_ t: TermRecord) -> String {
    t.excluded.map { String($0.dayNumber) }.joined(separator: ",")
  }

  private static func term(_ row: PostgresRandomAccessRow) throws -> TermRecord {
    let excluded = try row["excluded"].decode(String.self)
    return TermRecord(
      id: try row["id"].decode(String.self), code: try row["code"].decode(String.self),
      name: try row["name"].decode(String.self),
      start: CalendarDate(dayNumber: try row["start_day"].decode(Int.self)),
      end: CalendarDate(dayNumber: try row["end_day"].decode(Int.self)),
      excluded: excluded.split(separator: ",").compactMap { Int($0) }.map(
        CalendarDate.init(dayNumber:)),
      createTime: try row["create_time"].decode(Double.self),
      updateTime: try row["update_time"].decode(Double.self))
  }

  private static let termSelect = "SELECT * FROM sup_terms ORDER BY start_day DESC, code"

  /// Checks `t` against every other term while holding the terms' lock, so two replicas
  /// writing overlapping terms at once cannot both pass the check.
  private static func lockAndCheckOverlap(_ tx: PostgresTransaction, _ t: TermRecord)
    async throws
  {
    try await tx.lock("supervision.terms")
    let others = try await tx.query(PostgresQuery(unsafeSQL: termSelect)).map(Self.term)
    try t.requireNoOverlap(with: others)
  }

  func createTerm(_ t: TermRecord) async throws {
    try await store.write { tx in
      try await Self.lockAndCheckOverlap(tx, t)
      try await tx.execute(
        """
        INSERT INTO sup_terms (id, code, name, start_day, end_day, excluded, create_time,
          update_time)
        VALUES (\(t.id), \(t.code), \(t.name), \(t.start.dayNumber), \(t.end.dayNumber),
          \(Self.excludedText(t)), \(t.createTime), \(t.updateTime))
        """)
      try tx.recordChange(
        entity: "term", id: t.id, naturalKey: t.code, op: .upsert, orgPath: "/",
        payload: t.proto)
    }
  }

  func updateTerm(_ t: TermRecord) async throws {
    try await store.write { tx in
      try await Self.lockAndCheckOverlap(tx, t)
      try await tx.execute(
        """
        UPDATE sup_terms SET name = \(t.name), start_day = \(t.start.dayNumber),
          end_day = \(t.end.dayNumber), excluded = \(Self.excludedText(t)),
          update_time = \(t.updateTime)
        WHERE code = \(t.code)
        """)
      try tx.recordChange(
        entity: "term", id: t.id, naturalKey: t.code, op: .upsert, orgPath: "/",
        payload: t.proto)
    }
  }

  func term(code: String) async throws -> TermRecord? {
    try await store.query("SELECT * FROM sup_terms WHERE code = \(code)").first.map(Self.term)
  }

  func terms() async throws -> [TermRecord] {
    try await store.query(PostgresQuery(unsafeSQL: Self.termSelect)).map(Self.term)
  }

  // MARK: classrooms

  /// The columns ``classroom(_:)`` reads, by position (a city's report reads thousands).
  private static let classroomColumns = """
    number, id, code, name, school_id, school_code, class_code, org_path, equipped_day,
    retired_day, create_time, update_time
    """

  private static func classroom(_ row: PostgresRandomAccessRow) throws -> ClassroomRecord {
    ClassroomRecord(
      number: try row[0].decode(Int64.self), id: try row[1].decode(String.self),
      code: try row[2].decode(String.self), name: try row[3].decode(String.self),
      schoolID: try row[4].decode(String.self), schoolCode: try row[5].decode(String.self),
      classCode: try row[6].decode(String.self), orgPath: try row[7].decode(String.self),
      equipped: CalendarDate(dayNumber: try row[8].decode(Int.self)),
      retired: try row[9].decode(Int?.self).map(CalendarDate.init(dayNumber:)),
      createTime: try row[10].decode(Double.self), updateTime: try row[11].decode(Double.self))
  }

  func createClassroom(_ c: ClassroomRecord) async throws -> ClassroomRecord {
    try await store.write { tx in
      let row = try await tx.one(
        """
        INSERT INTO sup_classrooms (id, code, name, school_id, school_code, class_code,
          org_path, equipped_day, retired_day, create_time, update_time)
        VALUES (\(c.id), \(c.code), \(c.name), \(c.schoolID), \(c.schoolCode), \(c.classCode),
          \(c.orgPath), \(c.equipped.dayNumber), \(c.retired?.dayNumber), \(c.createTime),
          \(c.updateTime))
        RETURNING number
        """)
      var stored = c
      stored.number = try row?[0].decode(Int64.self) ?? 0
      try tx.recordChange(
        entity: "classroom", id: c.id, naturalKey: c.code, op: .upsert, orgPath: c.orgPath,
        payload: stored.proto)
      return stored
    }
  }

  func updateClassroom(_ c: ClassroomRecord) async throws {
    try await store.write { tx in
      // Taking the classroom's row lock first makes a lesson batch holding it FOR SHARE
      // finish (or wait), so the path update below reaches every lesson it wrote.
      try await tx.execute(
        """
        UPDATE sup_classrooms SET name = \(c.name), class_code = \(c.classCode),
          org_path = \(c.orgPath), equipped_day = \(c.equipped.dayNumber),
          retired_day = \(c.retired?.dayNumber), update_time = \(c.updateTime)
        WHERE number = \(c.number)
        """)
      try await tx.execute(
        """
        UPDATE sup_lessons SET org_path = \(c.orgPath)
        WHERE classroom = \(c.number) AND org_path <> \(c.orgPath)
        """)
      try tx.recordChange(
        entity: "classroom", id: c.id, naturalKey: c.code, op: .upsert, orgPath: c.orgPath,
        payload: c.proto)
    }
  }

  func classroom(code: String) async throws -> ClassroomRecord? {
    try await store.query(
      "SELECT \(unescaped: Self.classroomColumns) FROM sup_classrooms WHERE code = \(code)"
    ).first.map(Self.classroom)
  }

  func classrooms(codes: [String]) async throws -> [String: ClassroomRecord] {
    guard !codes.isEmpty else { return [:] }
    let rooms = try await store.query(
      """
      SELECT \(unescaped: Self.classroomColumns) FROM sup_classrooms
      WHERE code = ANY(\(codes)::text[])
      """
    ).map(Self.classroom)
    return Dictionary(rooms.map { ($0.code, $0) }, uniquingKeysWith: { a, _ in a })
  }

  func classrooms(
    under path: String, afterCode: String?, limit: Int?, inServiceOn: CalendarDate?
  ) async throws -> [ClassroomRecord] {
    let (lo, hi) = Self.range(path)
    return try await store.query(
      """
      SELECT \(unescaped: Self.classroomColumns) FROM sup_classrooms
      WHERE org_path >= \(lo) AND org_path < \(hi)
        AND (\(afterCode)::text IS NULL OR code > \(afterCode))
        AND (\(inServiceOn?.dayNumber)::int8 IS NULL OR retired_day IS NULL
          OR retired_day > \(inServiceOn?.dayNumber))
      ORDER BY code LIMIT \(limit)
      """
    ).map(Self.classroom)
  }

  // MARK: lessons

  func upsertLessons(_ staged: StagedLessons) async throws -> UpsertCounts {
    let lessons = staged.lessons
    // A key twice in one batch would make ON CONFLICT DO UPDATE touch a row twice (refused):
    // the n-th occurrence of a key goes in round n, rounds run in order, as the SQLite store
    // applies the rows one after another. A round holds indexes into the staged batch.
    var rounds: [[Int]] = []
    var seen: [LessonKey: Int] = [:]
    seen.reserveCapacity(lessons.count)
    for (i, l) in lessons.enumerated() {
      let key = LessonKey(classroom: l.classroom, day: l.date.dayNumber, period: l.period)
      let round = seen[key, default: 0]
      seen[key] = round + 1
      if round == rounds.count { rounds.append([]) }
      rounds[round].append(i)
    }
    // One order for every batch, so two replicas' overlapping batches lock rows in the same
    // order instead of deadlocking.
    for r in rounds.indices {
      rounds[r].sort {
        (lessons[$0].classroom, lessons[$0].date.dayNumber, lessons[$0].period)
          < (lessons[$1].classroom, lessons[$1].date.dayNumber, lessons[$1].period)
      }
    }
    let counts = try await store.write { tx in
      let now = Date()
      if rounds.count == 1, let copied = try await copyNew(staged, rounds[0], tx: tx, now: now) {
        return copied
      }
      var counts = UpsertCounts()
      for round in rounds {
        try await upsert(staged, round, tx: tx, counts: &counts, now: now)
      }
      return counts
    }
    upkeep.wrote(counts.created + counts.updated)
    return counts
  }

  private struct LessonKey: Hashable {
    var classroom: Int64
    var day: Int
    var period: Int
  }

  /// The bulk path, for a batch none of whose keys is stored yet (a first import): the
  /// classrooms are held FOR SHARE (their current paths go on the lessons, as the upsert's
  /// join does), then the rows go in by one `COPY` under a savepoint, about half the server's
  /// work of the upsert per row, and nothing comes back. Optimistic, without a probe of the
  /// keys: a stored key (a re-sent batch, or one another replica inserted, waited for until it
  /// commits) fails the copy with a unique violation; it is then undone and nil returned, and
  /// the caller runs the upsert. The price falls on re-sent batches (a copy refused at its
  /// first stored row) and on batches mixing stored and new rows (the copy's work until the
  /// first stored key is undone).
  private func copyNew(
    _ staged: StagedLessons, _ round: [Int], tx: PostgresTransaction, now: Date
  ) async throws -> UpsertCounts? {
    let lessons = round.map { staged.lessons[$0] }
    let rooms = Array(Set(lessons.map(\.classroom))).sorted()
    var paths: [Int64: String] = [:]
    for row in try await tx.query(
      """
      SELECT number, org_path FROM sup_classrooms
      WHERE number = ANY(\(rooms)::int8[]) ORDER BY number FOR SHARE
      """)
    {
      paths[try row[0].decode(Int64.self)] = try row[1].decode(String.self)
    }
    var rows: [[PostgresCopyValue]] = []
    rows.reserveCapacity(lessons.count)
    var events: [ChangeEvent] = []
    events.reserveCapacity(lessons.count)
    var usage = InsertedUsage()
    for (n, var l) in lessons.enumerated() {
      // A classroom gone from the register (never, today) drops its rows, as the upsert's
      // join does.
      guard let path = paths[l.classroom] else { continue }
      rows.append([
        .int(Int(l.classroom)), .int(l.date.dayNumber), .int(l.period),
        .int(l.date.monday.dayNumber), .text(path), .text(l.teacher), .int(l.subject),
        .int(l.minutes), .int(l.source), .int(l.verified ? 1 : 0),
      ])
      events.append(staged.event(round[n], at: path, time: now))
      l.orgPath = path
      usage.add(l)
    }
    do {
      try await tx.savepoint {
        try await tx.copy(
          into: "sup_lessons",
          columns: [
            "classroom", "day", "period", "week", "org_path", "teacher", "subject", "minutes",
            "source", "verified",
          ], rows: rows)
      }
    } catch ServiceError.alreadyExists {
      return nil
    }
    try await Self.add(usage, tx: tx)
    tx.recordChanges(events)
    return UpsertCounts(created: rows.count, updated: 0, unchanged: lessons.count - rows.count)
  }

  /// One statement for `lessons` (distinct keys): inserts the new rows, updates those that
  /// differ, leaves the rest; the rows it wrote come back and go on the feed.
  private func upsert(
    _ staged: StagedLessons, _ round: [Int], tx: PostgresTransaction,
    counts: inout UpsertCounts, now: Date
  ) async throws {
    let lessons = round.map { staged.lessons[$0] }
    let classrooms = lessons.map(\.classroom)
    let days = lessons.map(\.date.dayNumber)
    let periods = lessons.map(\.period)
    let weeks = lessons.map(\.date.monday.dayNumber)
    let teachers = lessons.map(\.teacher)
    let subjects = lessons.map(\.subject)
    let minutes = lessons.map(\.minutes)
    let sources = lessons.map(\.source)
    let verified = lessons.map { $0.verified ? 1 : 0 }
    // The classrooms are held FOR SHARE and the lessons take their current path from them:
    // a classroom moved meanwhile waits for this batch, or this batch sees its new path.
    let rows = try await tx.query(
      """
      WITH c AS (
        SELECT number, org_path FROM sup_classrooms
        WHERE number = ANY(\(classrooms)::int8[]) ORDER BY number FOR SHARE)
      INSERT INTO sup_lessons AS l (classroom, day, period, week, org_path, teacher, subject,
        minutes, source, verified)
      SELECT u.classroom, u.day, u.period, u.week, c.org_path, u.teacher, u.subject, u.minutes,
        u.source, u.verified
      FROM unnest(\(classrooms)::int8[], \(days)::int8[], \(periods)::int8[], \(weeks)::int8[],
        \(teachers)::text[], \(subjects)::int8[], \(minutes)::int8[], \(sources)::int8[],
        \(verified)::int8[])
        WITH ORDINALITY
        AS u(classroom, day, period, week, teacher, subject, minutes, source, verified, n)
      JOIN c ON c.number = u.classroom
      ORDER BY u.n
      ON CONFLICT (classroom, day, period) DO UPDATE SET teacher = excluded.teacher,
        subject = excluded.subject, minutes = excluded.minutes, source = excluded.source,
        org_path = excluded.org_path, verified = excluded.verified
      WHERE (l.teacher, l.subject, l.minutes, l.source, l.verified)
        IS DISTINCT FROM (excluded.teacher, excluded.subject, excluded.minutes, excluded.source,
          excluded.verified)
      RETURNING l.classroom, l.day, l.period, l.org_path, (l.xmax = 0) AS inserted
      """)
    if rows.isEmpty {
      counts.unchanged += lessons.count
      return
    }
    // Each key's place in the staged batch (keys are distinct within a round).
    var byKey: [LessonKey: Int] = [:]
    var usage = InsertedUsage()
    byKey.reserveCapacity(lessons.count)
    for (n, l) in lessons.enumerated() {
      byKey[LessonKey(classroom: l.classroom, day: l.date.dayNumber, period: l.period)] =
        round[n]
    }
    var events: [ChangeEvent] = []
    events.reserveCapacity(rows.count)
    for row in rows {
      let key = LessonKey(
        classroom: try row["classroom"].decode(Int64.self), day: try row["day"].decode(Int.self),
        period: try row["period"].decode(Int.self))
      guard let i = byKey[key] else { continue }
      var l = staged.lessons[i]
      l.orgPath = try row["org_path"].decode(String.self)
      if try row["inserted"].decode(Bool.self) {
        counts.created += 1
        usage.add(l)
      } else {
        counts.updated += 1
      }
      events.append(staged.event(i, at: l.orgPath, time: now))
    }
    tx.recordChanges(events)
    counts.unchanged += lessons.count - rows.count
    try await Self.add(usage, tx: tx)
  }

  /// Adds the counts of lessons just inserted: one statement per counts table, but for the
  /// teacher-week rows not stored yet (a first import's are nearly all new, about one per
  /// lesson), which go in by `COPY`: 4 µs a row on the server against 10 for the upsert.
  private static func add(_ usage: InsertedUsage, tx: PostgresTransaction) async throws {
    guard !usage.isEmpty else { return }
    let weeks = usage.classroomWeekRows
    var binds = PostgresBindings()
    for column in 0..<21 { binds.append(weeks.map { $0[column] }) }
    try await tx.execute(PostgresQuery(unsafeSQL: UsageCountsSQL.postgresAddClassroomWeeks,
      binds: binds))
    var teachers = usage.teacherWeekRows
    // The stored keys among the batch's, read by classroom and week range (a first import
    // finds none, or the few of a week that an earlier batch began).
    let rooms = Array(Set(teachers.map(\.classroom))).sorted()
    let first = teachers.map(\.week).min() ?? 0
    let last = teachers.map(\.week).max() ?? 0
    struct Key: Hashable {
      var classroom: Int64
      var week: Int
      var teacher: String
    }
    var stored = Set<Key>()
    for row in try await tx.query(
      """
      SELECT classroom, week, teacher FROM sup_teacher_weeks
      WHERE classroom = ANY(\(rooms)::int8[]) AND week BETWEEN \(first) AND \(last)
      """)
    {
      stored.insert(
        Key(
          classroom: try row[0].decode(Int64.self), week: try row[1].decode(Int.self),
          teacher: try row[2].decode(String.self)))
    }
    var fresh: [(classroom: Int64, week: Int, teacher: String, lessons: Int)] = []
    var known: [(classroom: Int64, week: Int, teacher: String, lessons: Int)] = []
    for t in teachers {
      if stored.contains(Key(classroom: t.classroom, week: t.week, teacher: t.teacher)) {
        known.append(t)
      } else {
        fresh.append(t)
      }
    }
    if !fresh.isEmpty {
      do {
        // A batch adding to the same teacher-week waits above, on the classroom-week row this
        // one holds; a lesson moved to another teacher meanwhile (its update trigger) may
        // still add one of these keys after the probe: the copy then fails, is undone, and
        // every row goes through the upsert.
        try await tx.savepoint {
          try await tx.copy(
            into: "sup_teacher_weeks", columns: ["classroom", "week", "teacher", "lessons"],
            rows: fresh.map { [.int(Int($0.classroom)), .int($0.week), .text($0.teacher),
              .int($0.lessons)] })
        }
        teachers = known
      } catch ServiceError.alreadyExists {}
    }
    guard !teachers.isEmpty else { return }
    binds = PostgresBindings()
    binds.append(teachers.map(\.classroom))
    binds.append(teachers.map(\.week))
    binds.append(teachers.map(\.teacher))
    binds.append(teachers.map(\.lessons))
    try await tx.execute(PostgresQuery(unsafeSQL: UsageCountsSQL.postgresAddTeacherWeeks,
      binds: binds))
  }

  func lessonUsage(under path: String, weeks: ClosedRange<Int>) async throws -> UsageTable {
    let (lo, hi) = Self.range(path)
    // Grouped in the scope index's order (a classroom's lessons share its path), so the
    // rows stream out of the index without a sort.
    let rows = try await store.query(
      """
      SELECT classroom, week, COUNT(*) AS lessons, COUNT(DISTINCT subject) AS subjects,
        COUNT(*) FILTER (WHERE source = 3) AS manual
      FROM sup_lessons WHERE org_path >= \(lo) AND org_path < \(hi)
        AND week BETWEEN \(weeks.lowerBound) AND \(weeks.upperBound) AND verified = 1
      GROUP BY org_path, week, classroom
      """)
    return try Self.usage(rows, weeks: weeks)
  }

  /// Rows (classroom, week, lessons, subjects, manual) as usage per classroom-week.
  private static func usage(_ rows: [PostgresRandomAccessRow], weeks: ClosedRange<Int>) throws
    -> UsageTable
  {
    var out = UsageTable(weeks: weeks)
    for row in rows {
      let classroom = try row[0].decode(Int64.self)
      out.set(
        WeekUsage(
          lessons: try row[2].decode(Int.self), subjects: try row[3].decode(Int.self),
          manual: try row[4].decode(Int.self)),
        row: out.makeRow(classroom), classroom: classroom, week: try row[1].decode(Int.self))
    }
    return out
  }

  // The two reads of the kept counts come back one row per classroom (or teacher) with its
  // weeks packed into an int8 array: a city's tens of thousands of classroom-weeks decoded as
  // rows cost more than the query itself.

  func weekUsage(under path: String, weeks: ClosedRange<Int>) async throws -> UsageTable {
    let (lo, hi) = Self.range(path)
    // Per week: day number << 40 | lessons << 24 | manual << 8 | subjects (a classroom-week
    // holds at most 7 × 20 lessons; day numbers stay below 2^16 until 2149).
    // Each classroom's weeks gathered by a subquery on its key's range, not by a GROUP BY:
    // array_agg keeps a memory context per group, so a city's 2,000 classrooms spilled the
    // hash aggregate to disk at the default work_mem (41 ms of server time; this, 33).
    let rows = try await store.query(
      """
      SELECT c.number, ARRAY(
        SELECT (u.week::int8 << 40) | (u.lessons::int8 << 24) | (u.manual::int8 << 8)
          | u.subjects::int8
        FROM sup_classroom_weeks u
        WHERE u.classroom = c.number
          AND u.week BETWEEN \(weeks.lowerBound) AND \(weeks.upperBound) AND u.lessons > 0)
      FROM sup_classrooms c
      WHERE c.org_path >= \(lo) AND c.org_path < \(hi)
      """)
    var out = UsageTable(weeks: weeks)
    for row in rows {
      let classroom = try row[0].decode(Int64.self)
      let values = try row[1].decode([Int64].self)
      // A classroom without lessons in the weeks takes no row (only empty cells).
      if values.isEmpty { continue }
      let start = out.makeRow(classroom)
      for v in values {
        out.set(
          WeekUsage(
            lessons: Int((v >> 24) & 0xFFFF), subjects: Int(v & 0xFF),
            manual: Int((v >> 8) & 0xFFFF)),
          row: start, classroom: classroom, week: Int(v >> 40))
      }
    }
    return out
  }

  func teacherWeekCounts(under path: String, weeks: ClosedRange<Int>) async throws
    -> [String: [Int: Int]]
  {
    let (lo, hi) = Self.range(path)
    // Per classroom-week of the teacher: day number << 32 | lessons, summed per week here.
    let rows = try await store.read { tx in
      // A city's 4,000 teachers' arrays take about 8 MB: at the default 4 MB of work_mem the
      // hash aggregate spilled to disk (5 batches) and took 285 ms against 209 in memory.
      try await tx.execute("SET LOCAL work_mem = '32MB'")
      return try await tx.query(
        """
        SELECT t.teacher, array_agg((t.week::int8 << 32) | t.lessons::int8)
        FROM sup_classrooms c JOIN sup_teacher_weeks t ON t.classroom = c.number
        WHERE c.org_path >= \(lo) AND c.org_path < \(hi)
          AND t.week BETWEEN \(weeks.lowerBound) AND \(weeks.upperBound) AND t.lessons > 0
        GROUP BY t.teacher
        """)
    }
    var out: [String: [Int: Int]] = [:]
    out.reserveCapacity(rows.count)
    for row in rows {
      var perWeek: [Int: Int] = [:]
      for v in try row[1].decode([Int64].self) {
        perWeek[Int(v >> 32), default: 0] += Int(v & 0xFFFF_FFFF)
      }
      out[try row[0].decode(String.self)] = perWeek
    }
    return out
  }

  func lessons(
    classroom: Int64?, under path: String, days: ClosedRange<Int>, after: (Int, Int64, Int)?,
    limit: Int
  ) async throws -> [LessonRecord] {
    let (lo, hi) = Self.range(path)
    // (-1, -1, -1) sorts before every lesson: no cursor.
    let cursor = after ?? (-1, -1, -1)
    return try await store.query(
      """
      SELECT l.*, c.code AS classroom_code FROM sup_lessons l
      JOIN sup_classrooms c ON c.number = l.classroom
      WHERE l.org_path >= \(lo) AND l.org_path < \(hi)
        AND l.day BETWEEN \(days.lowerBound) AND \(days.upperBound)
        AND (\(classroom)::int8 IS NULL OR l.classroom = \(classroom))
        AND (l.day, l.classroom, l.period) > (\(cursor.0), \(cursor.1), \(cursor.2))
      ORDER BY l.day, l.classroom, l.period LIMIT \(limit)
      """
    ).map { row in
      LessonRecord(
        classroom: try row["classroom"].decode(Int64.self),
        classroomCode: try row["classroom_code"].decode(String.self),
        date: CalendarDate(dayNumber: try row["day"].decode(Int.self)),
        period: try row["period"].decode(Int.self),
        orgPath: try row["org_path"].decode(String.self),
        teacher: try row["teacher"].decode(String.self),
        subject: try row["subject"].decode(Int.self), minutes: try row["minutes"].decode(Int.self),
        source: try row["source"].decode(Int.self),
        verified: try row["verified"].decode(Int.self) != 0)
    }
  }

  func teacherWeeklyLessonCounts(under path: String, days: ClosedRange<Int>) async throws
    -> [String: [Int: Int]]
  {
    let (lo, hi) = Self.range(path)
    let rows = try await store.query(
      """
      SELECT teacher, week, COUNT(*) FROM sup_lessons
      WHERE org_path >= \(lo) AND org_path < \(hi)
        AND day BETWEEN \(days.lowerBound) AND \(days.upperBound) AND verified = 1
      GROUP BY teacher, week
      """)
    var out: [String: [Int: Int]] = [:]
    for row in rows {
      out[try row[0].decode(String.self), default: [:]][try row[1].decode(Int.self)] =
        try row[2].decode(Int.self)
    }
    return out
  }

  private static func counts(_ rows: [PostgresRandomAccessRow]) throws -> [String: Int] {
    var out: [String: Int] = [:]
    out.reserveCapacity(rows.count)
    for row in rows { out[try row[0].decode(String.self)] = try row[1].decode(Int.self) }
    return out
  }

  // MARK: training

  func createTraining(
    _ r: Smartschool_Supervision_V1_TrainingRecord, halfHours: Int, year: Int
  ) async throws {
    let payload: Data = try r.serializedBytes()
    try await store.write { tx in
      try await tx.execute(
        """
        INSERT INTO sup_training (id, teacher, year, half_hours, org_path, payload)
        VALUES (\(r.id), \(r.teacherExternalID), \(year), \(halfHours), \(r.orgPath), \(payload))
        """)
      try tx.recordChange(
        entity: "training_record", id: r.id, naturalKey: r.id, op: .upsert, orgPath: r.orgPath,
        payload: r)
    }
  }

  func trainingHalfHours(under path: String, year: Int) async throws -> [String: Int] {
    let (lo, hi) = Self.range(path)
    return try Self.counts(
      try await store.query(
        """
        SELECT teacher, SUM(half_hours) FROM sup_training
        WHERE org_path >= \(lo) AND org_path < \(hi) AND year = \(year) GROUP BY teacher
        """))
  }

  // MARK: facility reports

  func putFacility(_ r: Smartschool_Supervision_V1_FacilityReport, orgPath: String) async throws {
    let payload: Data = try r.serializedBytes()
    let year = Int(r.year)
    try await store.write { tx in
      try await tx.execute(
        """
        INSERT INTO sup_facility (school_code, year, org_path, payload)
        VALUES (\(r.schoolCode), \(year), \(orgPath), \(payload))
        ON CONFLICT (school_code, year) DO UPDATE SET org_path = excluded.org_path,
          payload = excluded.payload
        """)
      let key = "\(r.schoolCode)/\(r.year)"
      try tx.recordChange(
        entity: "facility_report", id: key, naturalKey: key, op: .upsert, orgPath: orgPath,
        payload: r)
    }
  }

  func facility(schoolCode: String, year: Int) async throws
    -> Smartschool_Supervision_V1_FacilityReport?
  {
    guard
      let row = try await store.query(
        "SELECT payload FROM sup_facility WHERE school_code = \(schoolCode) AND year = \(year)"
      ).first
    else { return nil }
    return try Smartschool_Supervision_V1_FacilityReport(
      serializedBytes: try row[0].decode(Data.self))
  }

  func facilities(under path: String, year: Int) async throws
    -> [String: Smartschool_Supervision_V1_FacilityReport]
  {
    let (lo, hi) = Self.range(path)
    let rows = try await store.query(
      """
      SELECT payload FROM sup_facility
      WHERE org_path >= \(lo) AND org_path < \(hi) AND year = \(year)
      """)
    var out: [String: Smartschool_Supervision_V1_FacilityReport] = [:]
    for row in rows {
      let r = try Smartschool_Supervision_V1_FacilityReport(
        serializedBytes: try row[0].decode(Data.self))
      out[r.schoolCode] = r
    }
    return out
  }

  // MARK: inspections

  func putInspection(
    _ i: Smartschool_Supervision_V1_Inspection, key: String, day: CalendarDate
  ) async throws -> Smartschool_Supervision_V1_Inspection {
    let payload: Data = try i.serializedBytes()
    return try await store.write { tx in
      // Two replicas sending the same visit at once: one inserts, the other waits for it on
      // the key and then merges into the stored row.
      let inserted = try await tx.one(
        """
        INSERT INTO sup_inspections (id, school_code, org_path, day, year, payload, natural_key)
        VALUES (\(i.id), \(i.schoolCode), \(i.orgPath), \(day.dayNumber),
          \(day.components.year), \(payload), \(key))
        ON CONFLICT (natural_key) DO NOTHING RETURNING id
        """)
      if inserted != nil {
        try tx.recordChange(
          entity: "inspection", id: i.id, naturalKey: key, op: .upsert, orgPath: i.orgPath,
          payload: i)
        return i
      }
      guard
        let row = try await tx.one(
          "SELECT payload FROM sup_inspections WHERE natural_key = \(key) FOR UPDATE")
      else { throw ServiceError.aborted("the inspection \(key) vanished; try again") }
      let stored = try Smartschool_Supervision_V1_Inspection(
        serializedBytes: try row[0].decode(Data.self))
      guard let merged = Inspections.merge(i, into: stored) else { return stored }
      try await Self.rewrite(tx, merged, key: key)
      return merged
    }
  }

  private static func rewrite(
    _ tx: PostgresTransaction, _ i: Smartschool_Supervision_V1_Inspection, key: String
  ) async throws {
    let payload: Data = try i.serializedBytes()
    try await tx.execute(
      """
      UPDATE sup_inspections SET org_path = \(i.orgPath), payload = \(payload)
      WHERE id = \(i.id)
      """)
    try tx.recordChange(
      entity: "inspection", id: i.id, naturalKey: key, op: .upsert, orgPath: i.orgPath,
      payload: i)
  }

  func inspection(id: String) async throws -> Smartschool_Supervision_V1_Inspection? {
    guard
      let row = try await store.query("SELECT payload FROM sup_inspections WHERE id = \(id)")
        .first
    else { return nil }
    return try Smartschool_Supervision_V1_Inspection(serializedBytes: try row[0].decode(Data.self))
  }

  func updateInspection(
    id: String,
    _ change: @escaping @Sendable (Smartschool_Supervision_V1_Inspection) throws
      -> Smartschool_Supervision_V1_Inspection
  ) async throws -> Smartschool_Supervision_V1_Inspection {
    try await store.write { tx in
      guard
        let row = try await tx.one(
          "SELECT payload, natural_key FROM sup_inspections WHERE id = \(id) FOR UPDATE")
      else { throw ServiceError.notFound("no inspection has id \(id)") }
      let stored = try Smartschool_Supervision_V1_Inspection(
        serializedBytes: try row[0].decode(Data.self))
      let changed = try change(stored)
      try await Self.rewrite(tx, changed, key: try row[1].decode(String.self))
      return changed
    }
  }

  func inspections(under path: String, year: Int?, after: (Int, String)?, limit: Int)
    async throws -> [Smartschool_Supervision_V1_Inspection]
  {
    let (lo, hi) = Self.range(path)
    let rows = try await store.query(
      """
      SELECT payload FROM sup_inspections
      WHERE org_path >= \(lo) AND org_path < \(hi)
        AND (\(year)::int8 IS NULL OR year = \(year))
        AND (\(after?.0)::int8 IS NULL OR (day, id) < (\(after?.0), \(after?.1)::text))
      ORDER BY day DESC, id DESC LIMIT \(limit)
      """)
    return try rows.map {
      try Smartschool_Supervision_V1_Inspection(serializedBytes: try $0[0].decode(Data.self))
    }
  }

  func inspections(under path: String, days: ClosedRange<Int>) async throws
    -> [Smartschool_Supervision_V1_Inspection]
  {
    let (lo, hi) = Self.range(path)
    let rows = try await store.query(
      """
      SELECT payload FROM sup_inspections
      WHERE org_path >= \(lo) AND org_path < \(hi)
        AND day BETWEEN \(days.lowerBound) AND \(days.upperBound)
      ORDER BY day, id
      """)
    return try rows.map {
      try Smartschool_Supervision_V1_Inspection(serializedBytes: try $0[0].decode(Data.self))
    }
  }

  // MARK: change feed

  func changes(after: Int64, limit: Int, scopes: [OrgPath]) async throws
    -> (changes: [Smartschool_Common_V1_Change], hasMore: Bool)
  {
    try await store.listChanges(after: after, limit: limit, scopes: scopes, unscoped: [])
  }
}
