import ServiceRuntime
import Synchronization

/// Where the reports read smart-classroom use from. In service: the counts per classroom-week
/// (`sup_classroom_weeks`) and per classroom, teacher and week (`sup_teacher_weeks`) that the
/// database keeps beside the lessons, written in the transaction that writes the lessons (by
/// the import for lessons it inserts, by triggers for lessons it changes). Switched to
/// `fromLessons`, the reports count the lessons themselves as they did before the counts
/// existed: slower, and kept only so that a test can check that every report reads the same
/// from both.
public final class UsageReads: Sendable {
  private let raw = Atomic<Bool>(false)

  /// Reads from the counts.
  public init() {}

  /// True when the reports count the lessons instead of reading the kept counts.
  public var fromLessons: Bool {
    get { raw.load(ordering: .relaxed) }
    set { raw.store(newValue, ordering: .relaxed) }
  }
}

/// The counts a batch's newly inserted lessons add, summed per classroom-week and per
/// classroom, week and teacher, so that the batch writes one row per count it changes, not two
/// per lesson (an insert trigger's work was most of a SQLite lesson write). Both stores add
/// them in the transaction that inserts the lessons; a lesson changed later moves its counts
/// by the update triggers.
struct InsertedUsage {
  private struct Week: Hashable {
    var classroom: Int64
    var week: Int
  }
  private struct TeacherWeek: Hashable {
    var classroom: Int64
    var week: Int
    var teacher: String
  }
  /// Per classroom-week: lessons, manual, then the sixteen subject counts.
  private var weeks: [Week: [Int]] = [:]
  private var teachers: [TeacherWeek: Int] = [:]

  /// True when no verified lesson was added.
  var isEmpty: Bool { weeks.isEmpty }

  /// Counts `lesson`, just inserted, if it is verified (a held lesson counts nowhere).
  mutating func add(_ lesson: LessonRecord) {
    guard lesson.verified else { return }
    let week = lesson.date.monday.dayNumber
    let key = Week(classroom: lesson.classroom, week: week)
    // Changed in place: the default subscript's array is never copied out and back.
    weeks[key, default: Array(repeating: 0, count: 18)][0] += 1
    if lesson.source == 3 { weeks[key]![1] += 1 }
    if (1...16).contains(lesson.subject) { weeks[key]![1 + lesson.subject] += 1 }
    teachers[TeacherWeek(classroom: lesson.classroom, week: week, teacher: lesson.teacher),
      default: 0] += 1
  }

  /// The classroom-week rows in key order: classroom, week, lessons, manual, `s1`…`s16` and
  /// the distinct subjects among them (what a row new to the table holds).
  var classroomWeekRows: [[Int]] {
    weeks.sorted { ($0.key.classroom, $0.key.week) < ($1.key.classroom, $1.key.week) }.map {
      [Int($0.key.classroom), $0.key.week] + $0.value + [$0.value[2...].filter { $0 > 0 }.count]
    }
  }

  /// The teacher-week rows in key order.
  var teacherWeekRows: [(classroom: Int64, week: Int, teacher: String, lessons: Int)] {
    teachers.sorted {
      ($0.key.classroom, $0.key.week, $0.key.teacher) < ($1.key.classroom, $1.key.week,
        $1.key.teacher)
    }.map { ($0.key.classroom, $0.key.week, $0.key.teacher, $0.value) }
  }
}

/// The SQL of the usage counts, the same columns on both stores: per classroom-week the
/// verified lessons, the manual ones among them and one count per subject (`s1`…`s16`, so that
/// a lesson changing subject moves one count and the distinct subjects stay exact); per
/// classroom, week and teacher the verified lessons. A count may fall to 0 (a lesson held
/// again, or moved to another teacher); readers skip such rows.
enum UsageCountsSQL {
  /// The subject count columns.
  static let subjectColumns = (1...16).map { "s\($0)" }

  /// The distinct subjects of a counts row whose subject counts are `count(column)`: the
  /// number of them above 0 (`int` casts each comparison on PostgreSQL).
  static func distinctSubjects(_ count: (String) -> String, int: String = "") -> String {
    subjectColumns.map { "(\(count($0)) > 0)\(int)" }.joined(separator: " + ")
  }

  /// `s1 integer NOT NULL DEFAULT 0, …` in `type`.
  static func subjectColumnDefinitions(_ type: String) -> String {
    subjectColumns.map { "\($0) \(type) NOT NULL DEFAULT 0" }.joined(separator: ", ")
  }

  /// `SUM(subject = 1), …` on SQLite, `count(*) FILTER (WHERE subject = 1), …` on PostgreSQL:
  /// the per-subject counts of a group of lesson rows.
  static func subjectSums(postgres: Bool, sign: String = "") -> String {
    (1...16).map { k in
      postgres
        ? "sum(CASE WHEN subject = \(k) THEN \(sign.isEmpty ? "1" : sign) ELSE 0 END)"
        : "SUM(subject = \(k))"
    }.joined(separator: ", ")
  }

  /// `s1 = t.s1 + excluded.s1, …` (`t` the counts table's alias, empty on SQLite).
  static func subjectIncrements(alias: String) -> String {
    let prefix = alias.isEmpty ? "" : alias + "."
    return subjectColumns.map { "\($0) = \(prefix)\($0) + excluded.\($0)" }
      .joined(separator: ", ")
  }

  /// The columns of a classroom-week row as ``InsertedUsage/classroomWeekRows`` gives it.
  static let classroomWeekColumns =
    "classroom, week, lessons, manual, " + subjectColumns.joined(separator: ", ") + ", subjects"

  /// What a classroom-week row added to a stored one sets (`t` the table's alias, empty on
  /// SQLite; `int` casts each comparison on PostgreSQL).
  static func classroomWeekAdditions(alias: String, int: String = "") -> String {
    let prefix = alias.isEmpty ? "" : alias + "."
    return "lessons = \(prefix)lessons + excluded.lessons, "
      + "manual = \(prefix)manual + excluded.manual, \(subjectIncrements(alias: alias)), "
      + "subjects = \(distinctSubjects({ "(\(prefix)\($0) + excluded.\($0))" }, int: int))"
  }

  /// SQLite: adds classroom-week rows (``InsertedUsage/classroomWeekRows``).
  static let sqliteAddClassroomWeeks = MultiRowStatement(
    "INSERT INTO sup_classroom_weeks (\(classroomWeekColumns))", columns: 21,
    "ON CONFLICT (classroom, week) DO UPDATE SET \(classroomWeekAdditions(alias: ""))")

  /// SQLite: adds teacher-week rows.
  static let sqliteAddTeacherWeeks = MultiRowStatement(
    "INSERT INTO sup_teacher_weeks (classroom, week, teacher, lessons)", columns: 4,
    "ON CONFLICT (classroom, week, teacher) DO UPDATE SET lessons = lessons + excluded.lessons")

  /// PostgreSQL: adds the classroom-week rows, one array parameter per column (`$1`…`$21`
  /// in ``classroomWeekColumns``' order), in key order so that replicas lock them in one order.
  static let postgresAddClassroomWeeks: String = {
    let columns = classroomWeekColumns.components(separatedBy: ", ")
    let arrays = columns.indices.map { "$\($0 + 1)::int8[]" }.joined(separator: ", ")
    return """
      INSERT INTO sup_classroom_weeks AS t (\(classroomWeekColumns))
      SELECT * FROM unnest(\(arrays)) AS u(\(classroomWeekColumns))
      ORDER BY classroom, week
      ON CONFLICT (classroom, week)
        DO UPDATE SET \(classroomWeekAdditions(alias: "t", int: "::int"))
      """
  }()

  /// PostgreSQL: adds the teacher-week rows (classroom, week, teacher, lessons arrays).
  static let postgresAddTeacherWeeks = """
    INSERT INTO sup_teacher_weeks AS t (classroom, week, teacher, lessons)
    SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int8[])
      AS u(classroom, week, teacher, lessons)
    ORDER BY classroom, week, teacher
    ON CONFLICT (classroom, week, teacher) DO UPDATE SET lessons = t.lessons + excluded.lessons
    """

  /// The SQLite triggers: a verified lesson inserted counts; a lesson updated moves its counts
  /// when its subject, source, teacher or verification changed (its classroom and week are its
  /// key and never change). Every expression of an upsert's or update's SET reads the row as it
  /// was. With `subjects` (migration 7) the classroom-weeks also keep their distinct subjects
  /// (a report reads one column instead of sixteen), and only the two triggers that write them
  /// are given (to replace migration 6's).
  static func sqliteTriggers(subjects: Bool) -> [String] {
    let newSubjects = (1...16).map { "NEW.subject = \($0)" }.joined(separator: ", ")
    var decrements = subjectColumns.enumerated().map { i, c in
      "\(c) = \(c) - (OLD.subject = \(i + 1))"
    }.joined(separator: ", ")
    var columns = "classroom, week, lessons, manual, " + subjectColumns.joined(separator: ", ")
    var values = "NEW.classroom, NEW.week, 1, NEW.source = 3, \(newSubjects)"
    var increments = subjectIncrements(alias: "")
    if subjects {
      columns += ", subjects"
      values += ", 1"
      increments += ", subjects = \(distinctSubjects { "\($0) + excluded.\($0)" })"
      let left = distinctSubjects { "\($0) - (OLD.subject = \($0.dropFirst()))" }
      decrements += ", subjects = \(left)"
    }
    let upsertClassroomWeek = """
      INSERT INTO sup_classroom_weeks (\(columns))
        SELECT \(values) WHERE NEW.verified = 1
        ON CONFLICT (classroom, week) DO UPDATE SET lessons = lessons + 1,
          manual = manual + excluded.manual, \(increments);
      """
    let upsertTeacherWeek = """
      INSERT INTO sup_teacher_weeks (classroom, week, teacher, lessons)
        SELECT NEW.classroom, NEW.week, NEW.teacher, 1 WHERE NEW.verified = 1
        ON CONFLICT (classroom, week, teacher) DO UPDATE SET lessons = lessons + 1;
      """
    let teacherWeekTrigger = """
      CREATE TRIGGER sup_lessons_count_teacher_week AFTER UPDATE OF teacher, verified ON sup_lessons
      WHEN OLD.teacher <> NEW.teacher OR OLD.verified <> NEW.verified BEGIN
        UPDATE sup_teacher_weeks SET lessons = lessons - 1
        WHERE classroom = OLD.classroom AND week = OLD.week AND teacher = OLD.teacher
          AND OLD.verified = 1;
        \(upsertTeacherWeek)
      END
      """
    return [
      """
      CREATE TRIGGER sup_lessons_count_insert AFTER INSERT ON sup_lessons
      WHEN NEW.verified = 1 BEGIN
        \(upsertClassroomWeek)
        \(upsertTeacherWeek)
      END
      """,
      """
      CREATE TRIGGER sup_lessons_count_classroom_week
      AFTER UPDATE OF subject, source, verified ON sup_lessons
      WHEN OLD.subject <> NEW.subject OR OLD.source <> NEW.source
        OR OLD.verified <> NEW.verified BEGIN
        UPDATE sup_classroom_weeks SET lessons = lessons - 1, manual = manual - (OLD.source = 3),
          \(decrements)
        WHERE classroom = OLD.classroom AND week = OLD.week AND OLD.verified = 1;
        \(upsertClassroomWeek)
      END
      """,
    ] + (subjects ? [] : [teacherWeekTrigger])
  }

  /// The PostgreSQL trigger functions (statement-level, over the transition tables, so that a
  /// batch of lessons — one upsert statement or one COPY — adds its counts in two statements,
  /// in key order so that replicas writing the same counts lock them in one order), and the
  /// triggers. With `subjects` (migration 7) the classroom-weeks also keep their distinct
  /// subjects, and only the functions are given (replacing migration 6's; the triggers stay).
  static func postgresFunctions(subjects: Bool) -> [String] {
    var columns = "classroom, week, lessons, manual, " + subjectColumns.joined(separator: ", ")
    var distinct = ""
    var increments = subjectIncrements(alias: "t")
    if subjects {
      columns += ", subjects"
      distinct = ", " + distinctSubjects({ "g.\($0)" }, int: "::int")
      increments +=
        ", subjects = " + distinctSubjects({ "(t.\($0) + excluded.\($0))" }, int: "::int")
    }
    // The counts of `source`'s verified rows grouped per classroom-week (`g`), added.
    func classroomWeeks(_ sums: String, from source: String) -> String {
      """
      INSERT INTO sup_classroom_weeks AS t (\(columns))
      SELECT g.*\(distinct)
      FROM (SELECT classroom, week, \(sums) FROM \(source) WHERE verified = 1
        GROUP BY classroom, week) g
      ORDER BY classroom, week
      ON CONFLICT (classroom, week) DO UPDATE SET lessons = t.lessons + excluded.lessons,
        manual = t.manual + excluded.manual, \(increments);
      """
    }
    func teacherWeeks(_ count: String, from source: String) -> String {
      """
      INSERT INTO sup_teacher_weeks AS t (classroom, week, teacher, lessons)
      SELECT classroom, week, teacher, \(count) FROM \(source) WHERE verified = 1
      GROUP BY classroom, week, teacher ORDER BY classroom, week, teacher
      ON CONFLICT (classroom, week, teacher) DO UPDATE SET lessons = t.lessons + excluded.lessons;
      """
    }
    let subjectSums = { (sign: String) in
      (1...16).map { "sum(CASE WHEN subject = \($0) THEN \(sign) ELSE 0 END) AS s\($0)" }
        .joined(separator: ", ")
    }
    // A changed row as (sign, old or new values): -1 for what it was, +1 for what it is.
    func changed(_ differs: String) -> String {
      """
      (SELECT -1 AS n, o.classroom, o.week, o.teacher, o.subject, o.source, o.verified
        FROM old_lessons o JOIN new_lessons x USING (classroom, day, period) WHERE \(differs)
      UNION ALL
      SELECT 1, x.classroom, x.week, x.teacher, x.subject, x.source, x.verified
        FROM old_lessons o JOIN new_lessons x USING (classroom, day, period) WHERE \(differs)) d
      """
    }
    let create = subjects ? "CREATE OR REPLACE FUNCTION" : "CREATE FUNCTION"
    let functions = [
      """
      \(create) sup_lessons_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        \(classroomWeeks(
          "count(*) AS lessons, count(*) FILTER (WHERE source = 3) AS manual, "
            + subjectSums("1"), from: "new_lessons"))
        \(teacherWeeks("count(*)", from: "new_lessons"))
        RETURN NULL;
      END $$
      """,
      """
      \(create) sup_lessons_count_update() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        \(classroomWeeks(
          "sum(n) AS lessons, sum(CASE WHEN source = 3 THEN n ELSE 0 END) AS manual, "
            + subjectSums("n"),
          from: changed(
            "(o.subject, o.source, o.verified) IS DISTINCT FROM (x.subject, x.source, x.verified)"
          )))
        \(teacherWeeks(
          "sum(n)",
          from: changed("(o.teacher, o.verified) IS DISTINCT FROM (x.teacher, x.verified)")))
        RETURN NULL;
      END $$
      """,
    ]
    return functions + (subjects ? [] : [
      """
      CREATE TRIGGER sup_lessons_count_insert AFTER INSERT ON sup_lessons
      REFERENCING NEW TABLE AS new_lessons
      FOR EACH STATEMENT EXECUTE FUNCTION sup_lessons_count_insert()
      """,
      """
      CREATE TRIGGER sup_lessons_count_update AFTER UPDATE ON sup_lessons
      REFERENCING OLD TABLE AS old_lessons NEW TABLE AS new_lessons
      FOR EACH STATEMENT EXECUTE FUNCTION sup_lessons_count_update()
      """,
    ])
  }

  /// Fills the counts from the lessons stored before they existed (same SQL on both stores
  /// but for the per-subject sums).
  static func backfill(postgres: Bool) -> [String] {
    let columns = "classroom, week, lessons, manual, " + subjectColumns.joined(separator: ", ")
    let manual = postgres ? "count(*) FILTER (WHERE source = 3)" : "SUM(source = 3)"
    return [
      """
      INSERT INTO sup_classroom_weeks (\(columns))
      SELECT classroom, week, count(*), \(manual), \(subjectSums(postgres: postgres))
      FROM sup_lessons WHERE verified = 1 GROUP BY classroom, week
      """,
      """
      INSERT INTO sup_teacher_weeks (classroom, week, teacher, lessons)
      SELECT classroom, week, teacher, count(*) FROM sup_lessons WHERE verified = 1
      GROUP BY classroom, week, teacher
      """,
    ]
  }
}
