@testable import AssessmentService
import Foundation
import GRDB
import Logging
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel
import TestSupport
import Testing

/// A student's scores and chosen options live in its row (no row per score): the store, on
/// the run's backend, against a model of what was written; exports paged through the middle
/// of students; and a database written before the move (one row per score) upgrading with
/// every score, mark and chosen option kept.
@Suite(.serialized) struct ScoreStorageTests {
  static let exam = "UP-1"
  static let options = ["A", "B", "C", "D"]

  /// The store at `directory` on the run's backend (the same directory reopens the same data).
  static func open(_ directory: TemporaryDirectory) async throws -> any AssessmentStoring {
    guard
      let (store, logger) = try await TestStore.postgres(
        named: "assessment_" + directory.path, migrations: AssessmentMigrations.postgres)
    else { return try SQLiteAssessmentStore(directory: directory.path) }
    return PostgresAssessmentStore(store: store, logger: logger)
  }

  static func createExam(_ store: any AssessmentStoring) async throws {
    var exam = standardExam(code: exam)
    exam.fullMarks = 50
    exam.passFraction = 0.6
    exam.goodFraction = 0.7
    exam.excellentFraction = 0.85
    exam.lowFraction = 0.3
    exam.missingItems = .report
    for i in 0..<2 {
      exam.items[i].options = options
      exam.items[i].answerKey = "B"
    }
    try await store.createExam(
      ExamRecord(number: 0, id: EntityID.make(), exam: exam, orgPath: "/P34/C3401/K1/"),
      time: 1)
  }

  static func score(
    _ index: Int, _ student: String, _ item: Int32, _ score: Double, _ choice: String = ""
  ) -> PendingScore {
    PendingScore(
      index: index, examCode: exam, student: student, classCode: "CL1a", schoolCode: "S1",
      classPath: "/P34/C3401/K1/S1/CL1a/", item: item, score: score, choice: choice)
  }

  /// One line per exported row, for comparing exports.
  static func lines(_ rows: [ExportedScore]) -> [String] {
    rows.map { "\($0.student) \($0.item) \($0.score) \($0.attendance) \($0.reason) \($0.choice)" }
  }

  /// The whole export in pages of `limit` rows, each page starting after the last row of the
  /// one before, as ExportScores pages.
  static func export(_ store: any AssessmentStoring, limit: Int) async throws -> [ExportedScore] {
    let record = try #require(try await store.exam(code: exam, counts: false))
    var all: [ExportedScore] = []
    var after: (String, Int32)? = nil
    while true {
      let page = try await store.exportScores(exam: record, after: after, limit: limit)
      #expect(page.count <= limit)
      all += page
      guard page.count == limit, let last = page.last else { return all }
      after = (last.student, last.item)
    }
  }

  /// Writes 300 students (4 items, options chosen on items 1 and 2, some items left out, two
  /// students marked ABSENT), then re-imports a third of them with new scores, choices
  /// changed or cleared and left-out items added. Returns the rows an export must give.
  static func writeScores(_ store: any AssessmentStoring) async throws -> [String] {
    var rng = SeededGenerator(seed: 27)
    // student → item → (score, choice); students marked ABSENT.
    var model: [String: [Int32: (Double, String)]] = [:]
    var absent: Set<String> = []
    var rows: [PendingScore] = []
    for n in 0..<300 {
      let student = String(format: "stu%03d", n)
      if n % 17 == 5 {
        var mark = score(rows.count, student, 0, 0)
        mark.attendance = AttendanceCode.absent
        rows.append(mark)
        absent.insert(student)
        continue
      }
      for item: Int32 in 1...4 where !(item == 3 && n % 4 == 1) {
        let value = Double(Int.random(in: 0...10, using: &rng))
        let choice = item <= 2 && n % 5 != 0 ? options.randomElement(using: &rng)! : ""
        rows.append(score(rows.count, student, item, value, choice))
        model[student, default: [:]][item] = (value, choice)
      }
    }
    let first = try await store.writeScores(rows)
    #expect(first.rejections.isEmpty)
    #expect(first.created == rows.count)
    rows = []
    var added = 0
    for n in stride(from: 0, to: 300, by: 3) where n % 17 != 5 {
      let student = String(format: "stu%03d", n)
      for item: Int32 in [1, 3] {
        let value = Double(Int.random(in: 0...10, using: &rng))
        // Item 1's choice changes or clears; item 3 (no options) is added where it was left.
        let choice = item == 1 && n % 2 == 0 ? options.randomElement(using: &rng)! : ""
        if model[student]?[item] == nil { added += 1 }
        rows.append(score(rows.count, student, item, value, choice))
        model[student, default: [:]][item] = (value, choice)
      }
    }
    let second = try await store.writeScores(rows)
    #expect(second.rejections.isEmpty)
    #expect(second.created == added && added > 0)
    #expect(second.updated == rows.count - added)
    var expected: [String] = []
    for student in Set(model.keys).union(absent).sorted() {
      if absent.contains(student) { expected.append("\(student) 0 0.0 2  ") }
      for (item, (value, choice)) in (model[student] ?? [:]).sorted(by: { $0.key < $1.key }) {
        expected.append("\(student) \(item) \(value) 0  \(choice)")
      }
    }
    return expected
  }

  /// Checks the store's exports (whole and paged), chosen options and score count against
  /// `expected`.
  static func check(_ store: any AssessmentStoring, _ expected: [String]) async throws {
    #expect(lines(try await export(store, limit: 10_000)) == expected)
    // Pages that end inside a student, and pages of more students than PostgreSQL's export
    // reads at a time.
    for limit in [7, 1000] {
      #expect(lines(try await export(store, limit: limit)) == expected, "pages of \(limit)")
    }
    let record = try #require(try await store.exam(code: exam, counts: true))
    let scored = expected.filter { !$0.contains(" 0 0.0 2 ") }
    #expect(record.exam.scoreCount == Int64(scored.count))
    var chosen: [String: [Int32: String]] = [:]
    for line in scored {
      let parts = line.split(separator: " ", omittingEmptySubsequences: false)
      if let choice = parts.last, !choice.isEmpty {
        chosen[String(parts[0]), default: [:]][Int32(parts[1])!] = String(choice)
      }
    }
    #expect(!chosen.isEmpty)
    #expect(try await store.choices(exam: record, scopePath: nil) == chosen)
    #expect(try await store.choices(exam: record, scopePath: "/P34/C3401/K2/").isEmpty)
  }

  @Test func scoresAndChoicesLiveInTheStudentRows() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try await Self.open(dir)
    try await Self.createExam(store)
    let expected = try await Self.writeScores(store)
    try await Self.check(store, expected)
    await store.storage.close()
  }

  /// A batch is grouped against its exam's items before its write (while the batch before it
  /// commits); items replaced in between are the ones the write checks the rows against.
  @Test func aBatchStagedBeforeItsItemsChangedIsCheckedAgainstTheNewItems() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let store = try await Self.open(dir)
    try await Self.createExam(store)
    let staged = try await store.stageScores([
      Self.score(0, "stu001", 4, 9), Self.score(1, "stu001", 1, 10),
      Self.score(2, "stu002", 2, 3),
    ])
    // Meanwhile item 4 goes and item 1's maximum falls to 5.
    _ = try await store.replaceItems(
      code: Self.exam, items: [item(1, 5, ["KP-A"]), item(2, 10, ["KP-B"])], fullMarks: 15,
      time: 2)
    let result = try await store.writeScores(staged)
    #expect(result.rejections.map(\.index) == [0, 1])
    #expect(result.rejections.map(\.field) == ["item_number", "score"])
    #expect(result.created == 1)
    #expect(Self.lines(try await Self.export(store, limit: 100)) == ["stu002 2 3.0 0  "])
    await store.storage.close()
  }

  /// The store is taken back to the layout before the move (a table of one row per score,
  /// holding the chosen options; no `choices` column; the move's migration not applied),
  /// then opened again: the migration moves every choice back into the student rows.
  @Test func aDatabaseWithScoreRowsUpgradesKeepingEverything() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    var store = try await Self.open(dir)
    try await Self.createExam(store)
    let expected = try await Self.writeScores(store)
    let exported = try await Self.export(store, limit: 10_000).filter { $0.item > 0 }
    await store.storage.close()
    if let database = try await TestStore.database(named: "assessment_" + dir.path) {
      var logger = Logger(label: "downgrade")
      logger.logLevel = .critical
      let old = try await PostgresStore(
        settings: database, migrations: AssessmentMigrations.postgres, logger: logger)
      try await old.write { tx in
        try await tx.execute(
          """
          CREATE TABLE asm_scores (exam bigint NOT NULL, sid bigint NOT NULL,
            item integer NOT NULL, score double precision NOT NULL CHECK (score >= 0),
            choice text COLLATE "C" NOT NULL DEFAULT '', PRIMARY KEY (exam, sid, item))
          """)
        for s in exported {
          try await tx.execute(
            """
            INSERT INTO asm_scores (exam, sid, item, score, choice)
            SELECT exam, sid, \(Int(s.item)), \(s.score), \(s.choice) FROM asm_students
            WHERE student = \(s.student)
            """)
        }
        try await tx.execute("ALTER TABLE asm_students DROP COLUMN choices")
        try await tx.execute(
          "DELETE FROM runtime_migrations WHERE id = 'assessment.13.scores-in-students'")
      }
      await old.close()
    } else {
      let old = try DatabaseQueue(path: dir.path + "/assessment.sqlite")
      try await old.write { db in
        try db.execute(
          sql: """
            CREATE TABLE asm_scores (sid INTEGER NOT NULL REFERENCES asm_students(sid),
              item INTEGER NOT NULL, score REAL NOT NULL CHECK (score >= 0),
              choice TEXT NOT NULL DEFAULT '', PRIMARY KEY (sid, item)) WITHOUT ROWID;
            ALTER TABLE asm_students DROP COLUMN choices;
            DELETE FROM grdb_migrations WHERE identifier = 'assessment.11.scores-in-students';
            """)
        for s in exported {
          try db.execute(
            sql: """
              INSERT INTO asm_scores (sid, item, score, choice)
              SELECT sid, ?, ?, ? FROM asm_students WHERE student = ?
              """, arguments: [s.item, s.score, s.choice, s.student])
        }
      }
      try old.close()
    }
    store = try await Self.open(dir)
    try await Self.check(store, expected)
    await store.storage.close()
  }
}
