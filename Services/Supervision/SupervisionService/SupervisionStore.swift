import Foundation
import GRDB
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf

/// A term as the store keeps it.
public struct TermRecord: Hashable, Sendable {
  public var id: String
  public var code: String
  public var name: String
  public var start: CalendarDate
  public var end: CalendarDate
  public var excluded: [CalendarDate]
  public var createTime: Double
  public var updateTime: Double

  public var calendar: TermCalendar {
    TermCalendar(start: start, end: end, excludedWeeks: Set(excluded))
  }

  /// Terms may not overlap (a lesson's date and a notice's week must name one term): fails
  /// FAILED_PRECONDITION naming the first of `others` (another code) this term overlaps.
  public func requireNoOverlap(with others: [TermRecord]) throws(ServiceError) {
    for other in others where other.code != code {
      if other.start <= end && start <= other.end {
        throw .failedPrecondition("the term overlaps term \(other.code)")
      }
    }
  }

  public var proto: Smartschool_Supervision_V1_Term {
    .with {
      $0.id = id
      $0.code = code
      $0.name = name
      $0.startDate = start.description
      $0.endDate = end.description
      $0.excludedWeeks = excluded.map(\.description)
      $0.teachingWeeks = calendar.teachingWeeks.map(\.description)
      $0.createTime = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: createTime))
      $0.updateTime = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: updateTime))
    }
  }
}

extension ClassroomRecord {
  public var proto: Smartschool_Supervision_V1_Classroom {
    .with {
      $0.id = id
      $0.code = code
      $0.name = name
      $0.schoolCode = schoolCode
      $0.classCode = classCode
      $0.equippedDate = equipped.description
      $0.retiredDate = retired?.description ?? ""
      $0.orgPath = orgPath
      $0.createTime = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: createTime))
      $0.updateTime = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: updateTime))
    }
  }
}

/// How many of an import batch's rows created, replaced or left a lesson as it was.
public struct UpsertCounts: Sendable, Hashable {
  public var created = 0
  public var updated = 0
  public var unchanged = 0
}

/// Every SQL statement of the supervision service, behind a protocol with one implementation
/// per backend (``SQLiteSupervisionStore``, `PostgresSupervisionStore`). Paths are org paths;
/// "under" means a path-prefix match.
public protocol SupervisionStoring: Sendable {
  /// Stores a new term; FAILED_PRECONDITION when it overlaps another term, checked in the
  /// writing transaction (so two writers cannot both pass), ALREADY_EXISTS for a taken code.
  func createTerm(_ term: TermRecord) async throws
  /// Rewrites the term of `term.code`, with createTerm's overlap check.
  func updateTerm(_ term: TermRecord) async throws
  func term(code: String) async throws -> TermRecord?
  func terms() async throws -> [TermRecord]

  func createClassroom(_ c: ClassroomRecord) async throws -> ClassroomRecord
  func updateClassroom(_ c: ClassroomRecord) async throws
  func classroom(code: String) async throws -> ClassroomRecord?
  /// The classrooms with the given codes, by code (those that exist), in one read.
  func classrooms(codes: [String]) async throws -> [String: ClassroomRecord]
  func classrooms(under path: String, afterCode: String?, limit: Int?, inServiceOn: CalendarDate?)
    async throws -> [ClassroomRecord]

  /// Writes a staged batch of lessons (one transaction); the usage counts and the feed events
  /// of the lessons it inserted or changed follow in it.
  func upsertLessons(_ staged: StagedLessons) async throws -> UpsertCounts
  /// The usage of each classroom under `path` in each week whose Monday's day number is in
  /// `weeks`, counted from the verified lessons themselves (the check of ``weekUsage``).
  func lessonUsage(under path: String, weeks: ClosedRange<Int>) async throws -> UsageTable
  /// ``lessonUsage`` read from the counts kept per classroom-week: one row per classroom-week
  /// instead of one per lesson.
  func weekUsage(under path: String, weeks: ClosedRange<Int>) async throws -> UsageTable
  func lessons(
    classroom: Int64?, under path: String, days: ClosedRange<Int>, after: (Int, Int64, Int)?,
    limit: Int
  ) async throws -> [LessonRecord]
  /// Verified lessons on `days` under `path` per teacher and week (its Monday's day number),
  /// counted from the lessons.
  func teacherWeeklyLessonCounts(under path: String, days: ClosedRange<Int>) async throws
    -> [String: [Int: Int]]
  /// Verified lessons in the weeks whose Monday's day number is in `weeks` (whole weeks) of
  /// the classrooms under `path`, per teacher and week, from the counts kept per classroom,
  /// teacher and week.
  func teacherWeekCounts(under path: String, weeks: ClosedRange<Int>) async throws
    -> [String: [Int: Int]]

  func createTraining(
    _ record: Smartschool_Supervision_V1_TrainingRecord, halfHours: Int, year: Int)
    async throws
  func trainingHalfHours(under path: String, year: Int) async throws -> [String: Int]

  func putFacility(_ report: Smartschool_Supervision_V1_FacilityReport, orgPath: String)
    async throws
  func facility(schoolCode: String, year: Int) async throws
    -> Smartschool_Supervision_V1_FacilityReport?
  func facilities(under path: String, year: Int) async throws
    -> [String: Smartschool_Supervision_V1_FacilityReport]

  /// Stores a visit by its natural key `key`: a new key inserts it; a stored one is merged
  /// (``Inspections/merge(_:into:)``) and rewritten only when it changed. Answers the record
  /// as stored.
  func putInspection(
    _ inspection: Smartschool_Supervision_V1_Inspection, key: String, day: CalendarDate
  ) async throws -> Smartschool_Supervision_V1_Inspection
  func inspection(id: String) async throws -> Smartschool_Supervision_V1_Inspection?
  /// Rewrites the inspection `id` as `change` makes it from the stored record, in one
  /// transaction holding the row (`change` may throw to refuse); answers the new record.
  func updateInspection(
    id: String,
    _ change: @escaping @Sendable (Smartschool_Supervision_V1_Inspection) throws
      -> Smartschool_Supervision_V1_Inspection
  ) async throws -> Smartschool_Supervision_V1_Inspection
  func inspections(under path: String, year: Int?, after: (Int, String)?, limit: Int)
    async throws -> [Smartschool_Supervision_V1_Inspection]
  /// Every visit under `path` on the days of `days`.
  func inspections(under path: String, days: ClosedRange<Int>) async throws
    -> [Smartschool_Supervision_V1_Inspection]

  func changes(after: Int64, limit: Int, scopes: [OrgPath]) async throws
    -> (changes: [Smartschool_Common_V1_Change], hasMore: Bool)
}

extension SupervisionStoring {
  /// Stages and writes a batch of lessons.
  func upsertLessons(_ lessons: [LessonRecord]) async throws -> UpsertCounts {
    try await upsertLessons(try StagedLessons(lessons))
  }

  /// The [lower, upper) bounds of every path under `path` ('/' + 1 is '0'): byte order, so
  /// PostgreSQL's path columns are `COLLATE "C"`.
  static func range(_ path: String) -> (String, String) {
    (path, String(path.dropLast()) + "0")
  }
}

/// The SQLite store of the supervision service.
public final class SQLiteSupervisionStore: SupervisionStoring {
  let store: Store

  /// The store as the Runtime sees it (change feed, org directory, metrics).
  public var storage: any ServiceStorage { store }

  /// Opens (and migrates) `<directory>/supervision.sqlite`.
  public init(directory: String) throws {
    self.store = try Store(
      directory: directory, name: "supervision", migrations: SupervisionMigrations.register)
  }

  // MARK: terms

  public func createTerm(_ t: TermRecord) async throws {
    try await store.write { db in
      try t.requireNoOverlap(with: try Self.allTerms(db))
      try db.execute(
        sql: """
          INSERT INTO sup_terms (id, code, name, start_day, end_day, excluded, create_time,
            update_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
          """,
        arguments: [
          t.id, t.code, t.name, t.start.dayNumber, t.end.dayNumber,
          t.excluded.map { String($0.dayNumber) }.joined(separator: ","), t.createTime,
          t.updateTime,
        ])
      try ChangeFeed.record(
        db, entity: "term", id: t.id, naturalKey: t.code, op: .upsert, orgPath: "/",
        payload: t.proto)
    }
  }

  public func updateTerm(_ t: TermRecord) async throws {
    try await store.write { db in
      try t.requireNoOverlap(with: try Self.allTerms(db))
      try db.execute(
        sql: """
          UPDATE sup_terms SET name = ?, start_day = ?, end_day = ?, excluded = ?,
            update_time = ? WHERE code = ?
          """,
        arguments: [
          t.name, t.start.dayNumber, t.end.dayNumber,
          t.excluded.map { String($0.dayNumber) }.joined(separator: ","), t.updateTime, t.code,
        ])
      try ChangeFeed.record(
        db, entity: "term", id: t.id, naturalKey: t.code, op: .upsert, orgPath: "/",
        payload: t.proto)
    }
  }

  private static func term(_ row: Row) -> TermRecord {
    let excluded: String = row["excluded"]
    return TermRecord(
      id: row["id"], code: row["code"], name: row["name"],
      start: CalendarDate(dayNumber: row["start_day"]),
      end: CalendarDate(dayNumber: row["end_day"]),
      excluded: excluded.split(separator: ",").compactMap { Int($0) }.map(
        CalendarDate.init(dayNumber:)),
      createTime: row["create_time"], updateTime: row["update_time"])
  }

  public func term(code: String) async throws -> TermRecord? {
    try await store.read { db in
      try db.cachedStatement(sql: "SELECT * FROM sup_terms WHERE code = ?").decodeFirst(
        arguments: [code], Self.term)
    }
  }

  public func terms() async throws -> [TermRecord] {
    try await store.read { db in try Self.allTerms(db) }
  }

  private static func allTerms(_ db: Database) throws -> [TermRecord] {
    // Cached: every list and every import reads the terms, and compiling the statement each
    // time was a visible share of a busy service's CPU.
    try db.cachedStatement(sql: "SELECT * FROM sup_terms ORDER BY start_day DESC, code")
      .decodeAll(Self.term)
  }

  // MARK: classrooms

  /// The columns ``classroom(_:)`` reads, by position: a city's compliance report reads
  /// thousands of classrooms, and a column found by name costs a search per value.
  private static let classroomColumns = """
    SELECT number, id, code, name, school_id, school_code, class_code, org_path, equipped_day,
      retired_day, create_time, update_time FROM sup_classrooms
    """

  private static func classroom(_ row: Row) -> ClassroomRecord {
    let retired: Int? = row[9]
    return ClassroomRecord(
      number: row[0], id: row[1], code: row[2], name: row[3], schoolID: row[4],
      schoolCode: row[5], classCode: row[6], orgPath: row[7],
      equipped: CalendarDate(dayNumber: row[8]),
      retired: retired.map(CalendarDate.init(dayNumber:)), createTime: row[10],
      updateTime: row[11])
  }

  public func createClassroom(_ c: ClassroomRecord) async throws -> ClassroomRecord {
    try await store.write { db in
      try db.execute(
        sql: """
          INSERT INTO sup_classrooms (id, code, name, school_id, school_code, class_code,
            org_path, equipped_day, retired_day, create_time, update_time)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
          """,
        arguments: [
          c.id, c.code, c.name, c.schoolID, c.schoolCode, c.classCode, c.orgPath,
          c.equipped.dayNumber, c.retired?.dayNumber, c.createTime, c.updateTime,
        ])
      var stored = c
      stored.number = db.lastInsertedRowID
      try ChangeFeed.record(
        db, entity: "classroom", id: c.id, naturalKey: c.code, op: .upsert, orgPath: c.orgPath,
        payload: stored.proto)
      return stored
    }
  }

  public func updateClassroom(_ c: ClassroomRecord) async throws {
    try await store.write { db in
      try db.execute(
        sql: """
          UPDATE sup_classrooms SET name = ?, class_code = ?, org_path = ?, equipped_day = ?,
            retired_day = ?, update_time = ? WHERE number = ?
          """,
        arguments: [
          c.name, c.classCode, c.orgPath, c.equipped.dayNumber, c.retired?.dayNumber,
          c.updateTime, c.number,
        ])
      // Lessons carry their classroom's path so that scope queries need no join.
      try db.execute(
        sql: "UPDATE sup_lessons SET org_path = ? WHERE classroom = ? AND org_path <> ?",
        arguments: [c.orgPath, c.number, c.orgPath])
      try ChangeFeed.record(
        db, entity: "classroom", id: c.id, naturalKey: c.code, op: .upsert, orgPath: c.orgPath,
        payload: c.proto)
    }
  }

  public func classroom(code: String) async throws -> ClassroomRecord? {
    try await store.read { db in
      try db.cachedStatement(sql: Self.classroomColumns + " WHERE code = ?").decodeFirst(
        arguments: [code], Self.classroom)
    }
  }

  public func classrooms(codes: [String]) async throws -> [String: ClassroomRecord] {
    try await store.read { db in
      let statement = try db.cachedStatement(sql: Self.classroomColumns + " WHERE code = ?")
      var out: [String: ClassroomRecord] = [:]
      for code in codes {
        if let c = try statement.decodeFirst(arguments: [code], Self.classroom) { out[code] = c }
      }
      return out
    }
  }

  public func classrooms(
    under path: String, afterCode: String?, limit: Int?, inServiceOn: CalendarDate?
  ) async throws -> [ClassroomRecord] {
    let (lo, hi) = Self.range(path)
    return try await store.read { db in
      var sql = Self.classroomColumns + " WHERE org_path >= ? AND org_path < ?"
      var args: [any DatabaseValueConvertible] = [lo, hi]
      if let afterCode {
        sql += " AND code > ?"
        args.append(afterCode)
      }
      if let inServiceOn {
        sql += " AND (retired_day IS NULL OR retired_day > ?)"
        args.append(inServiceOn.dayNumber)
      }
      sql += " ORDER BY code"
      if let limit {
        sql += " LIMIT ?"
        args.append(limit)
      }
      return try db.cachedStatement(sql: sql).decodeAll(
        arguments: StatementArguments(args), Self.classroom)
    }
  }

  // MARK: lessons

  public func upsertLessons(_ staged: StagedLessons) async throws -> UpsertCounts {
    try await store.write { db in
      var counts = UpsertCounts()
      var lessons = staged.lessons
      // A lesson takes its classroom's path as it is now, not as it was when the import
      // stream read the classroom (it may have moved meanwhile).
      let pathOf = try db.cachedStatement(
        sql: "SELECT org_path FROM sup_classrooms WHERE number = ?")
      var paths: [Int64: String] = [:]
      for i in lessons.indices {
        let classroom = lessons[i].classroom
        if let path = paths[classroom] {
          lessons[i].orgPath = path
        } else {
          let path = try String.fetchOne(pathOf, arguments: [classroom]) ?? lessons[i].orgPath
          paths[classroom] = path
          lessons[i].orgPath = path
        }
      }
      // Every row is inserted first, many a statement; the keys that went in come back. Only
      // a row already there is then updated, and only when it differs, so a re-sent import
      // neither rewrites rows nor puts unchanged lessons on the feed. The counts of the rows
      // inserted are added before any update moves counts (a key twice in the batch is
      // inserted, then updated).
      var inserted = Set<LessonKey>()
      try Self.insertLessons.run(db, count: lessons.count) { i, row in
        let l = lessons[i]
        row.bind(l.classroom)
        row.bind(l.date.dayNumber)
        row.bind(l.period)
        row.bind(l.date.monday.dayNumber)
        row.bind(l.orgPath)
        row.bind(l.teacher)
        row.bind(l.subject)
        row.bind(l.minutes)
        row.bind(l.source)
        row.bind(l.verified ? 1 : 0)
      } returned: { row in
        inserted.insert(LessonKey(classroom: row[0], day: row[1], period: row[2]))
      }
      var usage = InsertedUsage()
      var fresh = [Bool](repeating: false, count: lessons.count)
      for (i, l) in lessons.enumerated()
      where inserted.remove(LessonKey(classroom: l.classroom, day: l.date.dayNumber,
        period: l.period)) != nil {
        fresh[i] = true
        usage.add(l)
      }
      try Self.add(usage, db)
      let update = try db.cachedStatement(
        sql: """
          UPDATE sup_lessons SET teacher = ?, subject = ?, minutes = ?, source = ?, org_path = ?,
            verified = ?
          WHERE classroom = ? AND day = ? AND period = ?
            AND (teacher <> ? OR subject <> ? OR minutes <> ? OR source <> ? OR verified <> ?)
          """)
      var events: [ChangeEvent] = []
      let now = Date()
      for (i, l) in lessons.enumerated() {
        if fresh[i] {
          counts.created += 1
        } else {
          let verified = l.verified ? 1 : 0
          try update.execute(arguments: [
            l.teacher, l.subject, l.minutes, l.source, l.orgPath, verified, l.classroom,
            l.date.dayNumber, l.period, l.teacher, l.subject, l.minutes, l.source, verified,
          ])
          if db.changesCount == 0 {
            counts.unchanged += 1
            continue
          }
          counts.updated += 1
        }
        events.append(staged.event(i, at: l.orgPath, time: now))
      }
      try ChangeFeed.record(db, events: events)
      return counts
    }
  }

  private struct LessonKey: Hashable {
    var classroom: Int64
    var day: Int
    var period: Int
  }

  private static let insertLessons = MultiRowStatement(
    """
    INSERT INTO sup_lessons (classroom, day, period, week, org_path, teacher, subject, minutes,
      source, verified)
    """, columns: 10,
    "ON CONFLICT (classroom, day, period) DO NOTHING RETURNING classroom, day, period")

  /// Adds the counts of lessons just inserted, many rows a statement.
  private static func add(_ usage: InsertedUsage, _ db: Database) throws {
    guard !usage.isEmpty else { return }
    let weeks = usage.classroomWeekRows
    try UsageCountsSQL.sqliteAddClassroomWeeks.run(db, count: weeks.count) { i, row in
      for v in weeks[i] { row.bind(v) }
    }
    let teachers = usage.teacherWeekRows
    try UsageCountsSQL.sqliteAddTeacherWeeks.run(db, count: teachers.count) { i, row in
      let t = teachers[i]
      row.bind(t.classroom)
      row.bind(t.week)
      row.bind(t.teacher)
      row.bind(t.lessons)
    }
  }

  /// Rows (classroom, week, lessons, subjects, manual) of `sql` over the scope range and a
  /// range of days or weeks, as usage per classroom-week.
  private func usage(_ sql: String, under path: String, _ range: ClosedRange<Int>) async throws
    -> UsageTable
  {
    let (lo, hi) = Self.range(path)
    return try await store.scan { db in
      let rows = try Row.fetchCursor(
        db.cachedStatement(sql: sql), arguments: [lo, hi, range.lowerBound, range.upperBound])
      var out = UsageTable(weeks: range)
      // A classroom's weeks come together (both queries group or join per classroom), so its
      // row is hashed once; one seen again is found by its hash all the same.
      var current: (classroom: Int64, row: Int)? = nil
      while let row = try rows.next() {
        let classroom: Int64 = row[0]
        if current?.classroom != classroom { current = (classroom, out.makeRow(classroom)) }
        out.set(
          WeekUsage(lessons: row[2], subjects: row[3], manual: row[4]), row: current!.row,
          classroom: classroom, week: row[1])
      }
      return out
    }
  }

  /// Rows (teacher, week, lessons) of `sql` over the scope range and a range of days or weeks,
  /// summed per teacher and week.
  private func teacherWeeks(_ sql: String, under path: String, _ range: ClosedRange<Int>)
    async throws -> [String: [Int: Int]]
  {
    let (lo, hi) = Self.range(path)
    return try await store.scan { db in
      let rows = try Row.fetchCursor(
        db.cachedStatement(sql: sql), arguments: [lo, hi, range.lowerBound, range.upperBound])
      var out: [String: [Int: Int]] = [:]
      while let row = try rows.next() {
        out[row[0] as String, default: [:]][row[1], default: 0] += row[2] as Int
      }
      return out
    }
  }

  public func lessonUsage(under path: String, weeks: ClosedRange<Int>) async throws
    -> UsageTable
  {
    try await usage(
      """
      SELECT classroom, week, COUNT(*) AS lessons, COUNT(DISTINCT subject) AS subjects,
        SUM(source = 3) AS manual
      FROM sup_lessons WHERE org_path >= ? AND org_path < ? AND week BETWEEN ? AND ?
        AND verified = 1
      GROUP BY classroom, week
      """, under: path, weeks)
  }

  public func weekUsage(under path: String, weeks: ClosedRange<Int>) async throws
    -> UsageTable
  {
    try await usage(
      """
      SELECT u.classroom, u.week, u.lessons, u.subjects, u.manual
      FROM sup_classrooms c JOIN sup_classroom_weeks u ON u.classroom = c.number
      WHERE c.org_path >= ? AND c.org_path < ? AND u.week BETWEEN ? AND ? AND u.lessons > 0
      """, under: path, weeks)
  }

  public func teacherWeekCounts(under path: String, weeks: ClosedRange<Int>) async throws
    -> [String: [Int: Int]]
  {
    try await teacherWeeks(
      """
      SELECT t.teacher, t.week, t.lessons
      FROM sup_classrooms c JOIN sup_teacher_weeks t ON t.classroom = c.number
      WHERE c.org_path >= ? AND c.org_path < ? AND t.week BETWEEN ? AND ? AND t.lessons > 0
      """, under: path, weeks)
  }

  public func lessons(
    classroom: Int64?, under path: String, days: ClosedRange<Int>, after: (Int, Int64, Int)?,
    limit: Int
  ) async throws -> [LessonRecord] {
    let (lo, hi) = Self.range(path)
    return try await store.read { db in
      var sql = """
        SELECT l.*, c.code AS classroom_code FROM sup_lessons l
        JOIN sup_classrooms c ON c.number = l.classroom
        WHERE l.org_path >= ? AND l.org_path < ? AND l.day BETWEEN ? AND ?
        """
      var args: [any DatabaseValueConvertible] = [lo, hi, days.lowerBound, days.upperBound]
      if let classroom {
        sql += " AND l.classroom = ?"
        args.append(classroom)
      }
      if let after {
        sql += " AND (l.day, l.classroom, l.period) > (?, ?, ?)"
        args += [after.0, after.1, after.2]
      }
      sql += " ORDER BY l.day, l.classroom, l.period LIMIT ?"
      args.append(limit)
      return try db.cachedStatement(sql: sql).decodeAll(arguments: StatementArguments(args)) {
        row in
        LessonRecord(
          classroom: row["classroom"], classroomCode: row["classroom_code"],
          date: CalendarDate(dayNumber: row["day"]), period: row["period"],
          orgPath: row["org_path"], teacher: row["teacher"], subject: row["subject"],
          minutes: row["minutes"], source: row["source"], verified: row["verified"] as Int != 0)
      }
    }
  }

  public func teacherWeeklyLessonCounts(under path: String, days: ClosedRange<Int>) async throws
    -> [String: [Int: Int]]
  {
    try await teacherWeeks(
      """
      SELECT teacher, week, COUNT(*) FROM sup_lessons
      WHERE org_path >= ? AND org_path < ? AND day BETWEEN ? AND ? AND verified = 1
      GROUP BY teacher, week
      """, under: path, days)
  }

  // MARK: training

  public func createTraining(
    _ r: Smartschool_Supervision_V1_TrainingRecord, halfHours: Int, year: Int
  ) async throws {
    try await store.write { db in
      try db.execute(
        sql: """
          INSERT INTO sup_training (id, teacher, year, half_hours, org_path, payload)
          VALUES (?, ?, ?, ?, ?, ?)
          """,
        arguments: [
          r.id, r.teacherExternalID, year, halfHours, r.orgPath, try r.serializedBytes() as Data,
        ])
      try ChangeFeed.record(
        db, entity: "training_record", id: r.id, naturalKey: r.id, op: .upsert,
        orgPath: r.orgPath, payload: r)
    }
  }

  public func trainingHalfHours(under path: String, year: Int) async throws -> [String: Int] {
    let (lo, hi) = Self.range(path)
    return try await store.scan { db in
      let rows = try Row.fetchAll(
        db.cachedStatement(
          sql: """
            SELECT teacher, SUM(half_hours) FROM sup_training
            WHERE org_path >= ? AND org_path < ? AND year = ? GROUP BY teacher
            """), arguments: [lo, hi, year])
      return Dictionary(uniqueKeysWithValues: rows.map { ($0[0] as String, $0[1] as Int) })
    }
  }

  // MARK: facility reports

  public func putFacility(_ r: Smartschool_Supervision_V1_FacilityReport, orgPath: String)
    async throws
  {
    try await store.write { db in
      try db.execute(
        sql: """
          INSERT INTO sup_facility (school_code, year, org_path, payload) VALUES (?, ?, ?, ?)
          ON CONFLICT (school_code, year) DO UPDATE SET org_path = excluded.org_path,
            payload = excluded.payload
          """,
        arguments: [r.schoolCode, r.year, orgPath, try r.serializedBytes() as Data])
      let key = "\(r.schoolCode)/\(r.year)"
      try ChangeFeed.record(
        db, entity: "facility_report", id: key, naturalKey: key, op: .upsert, orgPath: orgPath,
        payload: r)
    }
  }

  public func facility(schoolCode: String, year: Int) async throws
    -> Smartschool_Supervision_V1_FacilityReport?
  {
    let data = try await store.read { db in
      try Data.fetchOne(
        db.cachedStatement(
          sql: "SELECT payload FROM sup_facility WHERE school_code = ? AND year = ?"),
        arguments: [schoolCode, year])
    }
    return try data.map { try Smartschool_Supervision_V1_FacilityReport(serializedBytes: $0) }
  }

  public func facilities(under path: String, year: Int) async throws
    -> [String: Smartschool_Supervision_V1_FacilityReport]
  {
    let (lo, hi) = Self.range(path)
    let rows = try await store.scan { db in
      try Data.fetchAll(
        db.cachedStatement(
          sql: """
            SELECT payload FROM sup_facility WHERE org_path >= ? AND org_path < ? AND year = ?
            """),
        arguments: [lo, hi, year])
    }
    var out: [String: Smartschool_Supervision_V1_FacilityReport] = [:]
    for data in rows {
      let r = try Smartschool_Supervision_V1_FacilityReport(serializedBytes: data)
      out[r.schoolCode] = r
    }
    return out
  }

  // MARK: inspections

  public func putInspection(
    _ i: Smartschool_Supervision_V1_Inspection, key: String, day: CalendarDate
  ) async throws -> Smartschool_Supervision_V1_Inspection {
    try await store.write { db in
      if let data = try Data.fetchOne(
        db, sql: "SELECT payload FROM sup_inspections WHERE natural_key = ?", arguments: [key])
      {
        let stored = try Smartschool_Supervision_V1_Inspection(serializedBytes: data)
        guard let merged = Inspections.merge(i, into: stored) else { return stored }
        try Self.writeInspection(db, merged, insert: false, key: key, day: day)
        return merged
      }
      try Self.writeInspection(db, i, insert: true, key: key, day: day)
      return i
    }
  }

  private static func writeInspection(
    _ db: Database, _ i: Smartschool_Supervision_V1_Inspection, insert: Bool, key: String,
    day: CalendarDate
  ) throws {
    let payload = try i.serializedBytes() as Data
    if insert {
      try db.execute(
        sql: """
          INSERT INTO sup_inspections (id, school_code, org_path, day, year, payload, natural_key)
          VALUES (?, ?, ?, ?, ?, ?, ?)
          """,
        arguments: [
          i.id, i.schoolCode, i.orgPath, day.dayNumber, day.components.year, payload, key,
        ])
    } else {
      try db.execute(
        sql: "UPDATE sup_inspections SET org_path = ?, payload = ? WHERE id = ?",
        arguments: [i.orgPath, payload, i.id])
    }
    try ChangeFeed.record(
      db, entity: "inspection", id: i.id, naturalKey: key, op: .upsert, orgPath: i.orgPath,
      payload: i)
  }

  public func inspection(id: String) async throws -> Smartschool_Supervision_V1_Inspection? {
    let data = try await store.read { db in
      try Data.fetchOne(
        db, sql: "SELECT payload FROM sup_inspections WHERE id = ?", arguments: [id])
    }
    return try data.map { try Smartschool_Supervision_V1_Inspection(serializedBytes: $0) }
  }

  public func updateInspection(
    id: String,
    _ change: @escaping @Sendable (Smartschool_Supervision_V1_Inspection) throws
      -> Smartschool_Supervision_V1_Inspection
  ) async throws -> Smartschool_Supervision_V1_Inspection {
    try await store.write { db in
      guard
        let row = try Row.fetchOne(
          db, sql: "SELECT payload, natural_key, day FROM sup_inspections WHERE id = ?",
          arguments: [id])
      else { throw ServiceError.notFound("no inspection has id \(id)") }
      let stored = try Smartschool_Supervision_V1_Inspection(serializedBytes: row[0] as Data)
      let changed = try change(stored)
      try Self.writeInspection(
        db, changed, insert: false, key: row[1], day: CalendarDate(dayNumber: row[2]))
      return changed
    }
  }

  public func inspections(under path: String, year: Int?, after: (Int, String)?, limit: Int)
    async throws -> [Smartschool_Supervision_V1_Inspection]
  {
    let (lo, hi) = Self.range(path)
    let rows = try await store.read { db in
      var sql = "SELECT payload FROM sup_inspections WHERE org_path >= ? AND org_path < ?"
      var args: [any DatabaseValueConvertible] = [lo, hi]
      if let year {
        sql += " AND year = ?"
        args.append(year)
      }
      if let after {
        sql += " AND (day, id) < (?, ?)"
        args += [after.0, after.1]
      }
      sql += " ORDER BY day DESC, id DESC LIMIT ?"
      args.append(limit)
      return try Data.fetchAll(db.cachedStatement(sql: sql), arguments: StatementArguments(args))
    }
    return try rows.map { try Smartschool_Supervision_V1_Inspection(serializedBytes: $0) }
  }

  public func inspections(under path: String, days: ClosedRange<Int>) async throws
    -> [Smartschool_Supervision_V1_Inspection]
  {
    let (lo, hi) = Self.range(path)
    let rows = try await store.scan { db in
      try Data.fetchAll(
        db.cachedStatement(
          sql: """
            SELECT payload FROM sup_inspections
            WHERE org_path >= ? AND org_path < ? AND day BETWEEN ? AND ? ORDER BY day, id
            """), arguments: [lo, hi, days.lowerBound, days.upperBound])
    }
    return try rows.map { try Smartschool_Supervision_V1_Inspection(serializedBytes: $0) }
  }

  // MARK: change feed

  public func changes(after: Int64, limit: Int, scopes: [OrgPath]) async throws
    -> (changes: [Smartschool_Common_V1_Change], hasMore: Bool)
  {
    try await store.read { db in try ChangeFeed.list(db, after: after, limit: limit, scopes: scopes)
    }
  }
}
