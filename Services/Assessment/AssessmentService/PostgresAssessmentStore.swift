import Foundation
import Logging
import NIOCore
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf

/// The PostgreSQL store of the assessment service, with the SQLite one's semantics; any number
/// of replicas may share its database. What differs:
/// - exam items are frozen under row locks: UpdateExamItems locks the exam row FOR UPDATE and a
///   score batch FOR SHARE before it reads the items, so a batch either commits before the
///   replacement looks for scores, or reads the replaced items;
/// - a score batch upserts its students in one statement over arrays, in key order so that
///   overlapping batches of two streams do not deadlock; the scores of students it created go
///   in by COPY, those of students that existed by one upsert;
/// - quality entries are upserted on their natural key (ON CONFLICT), not select-then-insert;
/// - scores carry their exam first in their key, so a report reads an exam's scores as one
///   index range, aggregated into arrays per student.
final class PostgresAssessmentStore: AssessmentStoring {
  let store: PostgresStore
  var storage: any ServiceStorage { store }
  /// Vacuums and analyses the students and tallies once a score import goes quiet (the
  /// statistics' boundary students were read through the wrong index until then).
  private let upkeep: PostgresUpkeep

  init(store: PostgresStore, logger: Logger = Logger(label: "assessment")) {
    self.store = store
    upkeep = PostgresUpkeep(store: store, tables: ["asm_students", "asm_tallies"], logger: logger)
  }

  private static let examColumns = """
    number, id, code, name, school_year, term, subject, stage, grade, org_code, org_path,
    full_marks, pass_fraction, excellent_fraction, low_fraction, missing_items, good_fraction,
    cut_lines, session_code
    """

  private static func decodeExam(_ row: PostgresRandomAccessRow) throws -> ExamRecord {
    var exam = Smartschool_Assessment_V1_Exam()
    exam.code = try row["code"].decode(String.self)
    exam.name = try row["name"].decode(String.self)
    exam.schoolYear = try row["school_year"].decode(String.self)
    exam.term = Int32(try row["term"].decode(Int.self))
    exam.subject = .init(rawValue: try row["subject"].decode(Int.self)) ?? .unspecified
    exam.stage = .init(rawValue: try row["stage"].decode(Int.self)) ?? .unspecified
    exam.grade = Int32(try row["grade"].decode(Int.self))
    exam.orgCode = try row["org_code"].decode(String.self)
    exam.fullMarks = try row["full_marks"].decode(Double.self)
    exam.passFraction = try row["pass_fraction"].decode(Double.self)
    exam.excellentFraction = try row["excellent_fraction"].decode(Double.self)
    exam.lowFraction = try row["low_fraction"].decode(Double.self)
    exam.missingItems = .init(rawValue: try row["missing_items"].decode(Int.self)) ?? .report
    exam.goodFraction = try row["good_fraction"].decode(Double.self)
    exam.cutLines = try .init(
      serializedBytes: Array(buffer: try row["cut_lines"].decode(ByteBuffer.self)))
    exam.sessionCode = try row["session_code"].decode(String.self)
    return ExamRecord(
      number: try row["number"].decode(Int64.self), id: try row["id"].decode(String.self),
      exam: exam, orgPath: try row["org_path"].decode(String.self))
  }

  /// Fills items (and, with `counts`, score counts) of `records` in two statements.
  private static func complete(
    _ tx: PostgresTransaction, _ records: inout [ExamRecord], counts: Bool
  ) async throws {
    guard !records.isEmpty else { return }
    let numbers = records.map(\.number)
    var items: [Int64: [Smartschool_Assessment_V1_ExamItem]] = [:]
    for r in try await tx.query(
      """
      SELECT exam, number, max_score, objective, knowledge_points, options, answer_key
      FROM asm_items WHERE exam = ANY(\(numbers)) ORDER BY exam, number
      """)
    {
      var item = Smartschool_Assessment_V1_ExamItem()
      item.number = Int32(try r["number"].decode(Int.self))
      item.maxScore = try r["max_score"].decode(Double.self)
      item.objective = try r["objective"].decode(Int.self) != 0
      item.knowledgePoints = ExamRecord.list(try r["knowledge_points"].decode(String.self))
      item.options = ExamRecord.list(try r["options"].decode(String.self))
      item.answerKey = try r["answer_key"].decode(String.self)
      items[try r["exam"].decode(Int64.self), default: []].append(item)
    }
    var scored: [Int64: Int64] = [:]
    if counts {
      for r in try await tx.query(
        """
        SELECT exam, sum(octet_length(scores)) / \(PackedScores.width) AS n FROM asm_students
        WHERE exam = ANY(\(numbers)) GROUP BY exam
        """)
      {
        scored[try r["exam"].decode(Int64.self)] = try r["n"].decode(Int64.self)
      }
    }
    for i in records.indices {
      records[i].exam.items = items[records[i].number] ?? []
      if counts {
        records[i].exam.scoreCount = scored[records[i].number] ?? 0
        records[i].exam.frozen = records[i].exam.scoreCount > 0
      }
    }
  }

  private static func insertItems(
    _ tx: PostgresTransaction, exam: Int64, items: [Smartschool_Assessment_V1_ExamItem]
  ) async throws {
    guard !items.isEmpty else { return }
    let numbers = items.map(\.number)
    let maxScores = items.map(\.maxScore)
    let objective = items.map { $0.objective ? Int32(1) : 0 }
    let points = items.map { $0.knowledgePoints.joined(separator: ",") }
    let options = items.map { $0.options.joined(separator: ",") }
    let keys = items.map(\.answerKey)
    try await tx.execute(
      """
      INSERT INTO asm_items (exam, number, max_score, objective, knowledge_points, options,
        answer_key)
      SELECT \(exam), * FROM unnest(\(numbers)::int4[], \(maxScores)::float8[],
        \(objective)::int4[], \(points)::text[], \(options)::text[], \(keys)::text[])
      """)
  }

  func createExam(_ record: ExamRecord, time: Double) async throws {
    let e = record.exam
    let cutLines = ByteBuffer(bytes: try e.cutLines.serializedBytes() as [UInt8])
    try await store.write { tx in
      guard
        let row = try await tx.one(
          """
          INSERT INTO asm_exams (id, code, name, school_year, term, subject, stage, grade,
            org_code, org_path, full_marks, pass_fraction, excellent_fraction, low_fraction,
            create_time, update_time, missing_items, good_fraction, cut_lines, session_code)
          VALUES (\(record.id), \(e.code), \(e.name), \(e.schoolYear), \(Int(e.term)),
            \(e.subject.rawValue), \(e.stage.rawValue), \(Int(e.grade)), \(e.orgCode),
            \(record.orgPath), \(e.fullMarks), \(e.passFraction), \(e.excellentFraction),
            \(e.lowFraction), \(time), \(time), \(e.missingItems.rawValue),
            \(e.goodFraction), \(cutLines), \(e.sessionCode))
          RETURNING number
          """)
      else { throw ServiceError.internalError("exam insert returned nothing") }
      try await Self.insertItems(tx, exam: try row["number"].decode(Int64.self), items: e.items)
      try tx.recordChange(
        entity: "exam", id: record.id, naturalKey: e.code, op: .upsert, orgPath: record.orgPath,
        payload: e)
    }
  }

  /// An exam and its items (and its score count when `counts`) by code, `$1`. Two statements,
  /// not a `CASE` over a parameter: the server would plan that one anew on every call.
  private static func examSQL(counts: Bool) -> String {
    let scored =
      counts
      ? "(SELECT COALESCE(sum(octet_length(scores)), 0) / \(PackedScores.width)"
        + " FROM asm_students WHERE exam = e.number)"
      : "NULL::bigint"
    return """
    SELECT \(examColumns), i.numbers, i.max_scores, i.objectives,
      i.knowledge_points, i.options, i.answer_keys, \(scored) AS scored
    FROM asm_exams e LEFT JOIN LATERAL (
      SELECT array_agg(number ORDER BY number) AS numbers,
        array_agg(max_score ORDER BY number) AS max_scores,
        array_agg(objective ORDER BY number) AS objectives,
        array_agg(knowledge_points ORDER BY number) AS knowledge_points,
        array_agg(options ORDER BY number) AS options,
        array_agg(answer_key ORDER BY number) AS answer_keys
      FROM asm_items WHERE exam = e.number) i ON true
    WHERE e.code = $1
    """
  }

  fileprivate protocol ExamByCode: PostgresRowStatement {
    var code: String { get }
  }

  private struct ExamStatement: ExamByCode {
    static let name = "asm_exam"
    static let sql = examSQL(counts: false)
    var code: String
  }

  private struct CountedExamStatement: ExamByCode {
    static let name = "asm_exam_counted"
    static let sql = examSQL(counts: true)
    var code: String
  }

  func exam(code: String, counts: Bool) async throws -> ExamRecord? {
    // The exam, its items and (asked for) its score count in one prepared statement outside a
    // transaction: one round trip, where a read transaction took four, and no parsing or
    // planning after a connection's first call (every report reads its exam first).
    guard
      let row =
        try await counts
        ? store.query(prepared: CountedExamStatement(code: code)).first
        : store.query(prepared: ExamStatement(code: code)).first
    else { return nil }
    var record = try Self.decodeExam(row)
    let numbers = try Self.ints(row["numbers"])
    let maxScores = try Self.doubles(row["max_scores"])
    let objectives = try Self.ints(row["objectives"])
    let points = try Self.strings(row["knowledge_points"])
    let options = try Self.strings(row["options"])
    let keys = try Self.strings(row["answer_keys"])
    guard
      [maxScores.count, objectives.count, points.count, options.count, keys.count]
        .allSatisfy({ $0 == numbers.count })
    else { throw ServiceError.internalError("malformed items of exam \(code)") }
    record.exam.items = numbers.indices.map { i in
      var item = Smartschool_Assessment_V1_ExamItem()
      item.number = Int32(numbers[i])
      item.maxScore = maxScores[i]
      item.objective = objectives[i] != 0
      item.knowledgePoints = ExamRecord.list(points[i])
      item.options = ExamRecord.list(options[i])
      item.answerKey = keys[i]
      return item
    }
    if counts {
      record.exam.scoreCount = try row["scored"].decode(Int64.self)
      record.exam.frozen = record.exam.scoreCount > 0
    }
    return record
  }

  func exams(after code: String?, orgCode: String?, limit: Int) async throws -> [ExamRecord] {
    try await store.read { tx in
      let rows: [PostgresRandomAccessRow]
      if let orgCode {
        rows = try await tx.query(
          """
          SELECT \(unescaped: Self.examColumns) FROM asm_exams
          WHERE code > \(code ?? "") AND org_code = \(orgCode) ORDER BY code LIMIT \(limit)
          """)
      } else {
        rows = try await tx.query(
          """
          SELECT \(unescaped: Self.examColumns) FROM asm_exams
          WHERE code > \(code ?? "") ORDER BY code LIMIT \(limit)
          """)
      }
      var records = try rows.map(Self.decodeExam)
      try await Self.complete(tx, &records, counts: true)
      return records
    }
  }

  func exams(session: String) async throws -> [ExamRecord] {
    try await store.read { tx in
      var records = try await tx.query(
        """
        SELECT \(unescaped: Self.examColumns) FROM asm_exams WHERE session_code = \(session)
        ORDER BY subject, code
        """
      ).map(Self.decodeExam)
      try await Self.complete(tx, &records, counts: false)
      return records
    }
  }

  func replaceItems(
    code: String, items: [Smartschool_Assessment_V1_ExamItem], fullMarks: Double, time: Double
  ) async throws -> ExamRecord {
    try await store.write { tx in
      // The exam row's lock orders this against every score batch of the exam (FOR SHARE):
      // a batch that committed first is seen below, a later one reads the new items.
      guard
        let row = try await tx.one(
          "SELECT \(unescaped: Self.examColumns) FROM asm_exams WHERE code = \(code) FOR UPDATE")
      else { throw ServiceError.notFound("no exam has code \(code)") }
      let number = try row["number"].decode(Int64.self)
      if try await tx.one("SELECT 1 FROM asm_students WHERE exam = \(number) LIMIT 1") != nil {
        throw ServiceError.failedPrecondition("exam \(code) has scores: its items are frozen")
      }
      try await tx.execute("DELETE FROM asm_items WHERE exam = \(number)")
      try await Self.insertItems(tx, exam: number, items: items)
      guard
        let updatedRow = try await tx.one(
          """
          UPDATE asm_exams SET full_marks = \(fullMarks), update_time = \(time)
          WHERE number = \(number) RETURNING \(unescaped: Self.examColumns)
          """)
      else { throw ServiceError.notFound("no exam has code \(code)") }
      var records = [try Self.decodeExam(updatedRow)]
      try await Self.complete(tx, &records, counts: true)
      let updated = records[0]
      try tx.recordChange(
        entity: "exam", id: updated.id, naturalKey: code, op: .upsert, orgPath: updated.orgPath,
        payload: updated.exam)
      return updated
    }
  }

  /// The exams (with their items) of `codes` that exist; `share` locks them FOR SHARE.
  private static func scoreTargets(_ tx: PostgresTransaction, codes: Set<String>, share: Bool)
    async throws -> [String: ScoreTarget]
  {
    var exams: [String: ScoreTarget] = [:]
    var byNumber: [Int64: String] = [:]
    for r in try await tx.query(
      PostgresQuery(
        unsafeSQL: "SELECT number, code, org_path FROM asm_exams WHERE code = ANY($1)"
          + " ORDER BY number" + (share ? " FOR SHARE" : ""),
        binds: { var b = PostgresBindings(); b.append(codes.sorted()); return b }()))
    {
      let code = try r["code"].decode(String.self)
      let number = try r["number"].decode(Int64.self)
      exams[code] = ScoreTarget(number: number, orgPath: try r["org_path"].decode(String.self))
      byNumber[number] = code
    }
    if !byNumber.isEmpty {
      for r in try await tx.query(
        """
        SELECT exam, number, max_score, options FROM asm_items
        WHERE exam = ANY(\(Array(byNumber.keys)))
        """)
      {
        let code = byNumber[try r["exam"].decode(Int64.self)]!
        let number = Int32(try r["number"].decode(Int.self))
        exams[code]!.maxScores[number] = try r["max_score"].decode(Double.self)
        exams[code]!.options[number] = ExamRecord.list(try r["options"].decode(String.self))
      }
    }
    return exams
  }

  var scoreWritesInFlight: Int { 2 }

  func stageScores(_ rows: [PendingScore]) async throws -> StagedScores {
    let codes = StagedScores.codes(rows)
    let targets = try await store.read { tx in
      try await Self.scoreTargets(tx, codes: codes, share: false)
    }
    return StagedScores(rows, codes: codes, targets: targets)
  }

  func writeScores(_ staged: StagedScores) async throws -> ScoreBatchResult {
    let result = try await writeBatch(staged)
    upkeep.wrote(result.created + result.updated)
    return result
  }

  private func writeBatch(_ staged: StagedScores) async throws -> ScoreBatchResult {
    try await store.write { tx in
      // FOR SHARE: score batches of one exam run side by side; UpdateExamItems (FOR UPDATE)
      // waits for them, and they for it, so the items read next cannot change under the batch.
      let exams = try await Self.scoreTargets(tx, codes: staged.codes, share: true)
      let batch = staged.grouped(against: exams)
      var result = ScoreBatchResult()
      result.rejections = batch.rejections
      guard batch.accepted > 0 else { return result }

      // One upsert for the batch's students, in key order (two streams lock alike). A student
      // it creates has no scores but this batch's, so its total, packed scores and mark go in
      // with it. A student that exists is only locked and read here (its stored mark and
      // whether it has scores decide what the batch may do); what changes is written below.
      let students = batch.students.filter { $0.lastAccepted != nil }.sorted { a, b in
        a.exam != b.exam
          ? a.exam < b.exam : a.student.utf8.lexicographicallyPrecedes(b.student.utf8)
      }
      var position: [String: Int] = [:]
      position.reserveCapacity(students.count)
      for (i, s) in students.enumerated() { position["\(s.exam)/\(s.student)"] = i }
      let newMarks = students.map { s -> (Int32, String) in
        guard let mark = s.markRows.last, mark.attendance != AttendanceCode.sat else {
          return (AttendanceCode.sat, "")
        }
        return (mark.attendance, mark.reason)
      }
      let last = students.map { $0.lastAccepted! }
      var written:
        [(sid: Int64, student: Int, inserted: Bool, attendance: Int32, hasScores: Bool)] = []
      // The stored sheets of the students that existed (their scores are read below), and
      // their stored totals, before and after the batch.
      var before: [Int64: SheetState] = [:]
      var totalBefore: [Int64: Double] = [:]
      var totalAfter: [Int64: Double] = [:]
      written.reserveCapacity(students.count)
      for r in try await tx.query(
        """
        INSERT INTO asm_students (exam, student, class_code, school_code, org_path, total,
          scores, choices, attendance, reason)
        SELECT * FROM unnest(\(students.map(\.exam))::int8[], \(students.map(\.student))::text[],
          \(last.map(\.classCode))::text[], \(last.map(\.schoolCode))::text[],
          \(last.map(\.classPath))::text[], \(students.map(\.total))::float8[],
          \(students.map { ByteBuffer(bytes: PackedScores.pack($0.scores)) })::bytea[],
          \(students.map { s in
            ByteBuffer(bytes: PackedScores.packChoices(
              s.scores.map { ($0.item, s.choices[$0.item] ?? "") }))
          })::bytea[],
          \(newMarks.map(\.0))::int4[], \(newMarks.map(\.1))::text[])
        ON CONFLICT (exam, student) DO UPDATE SET class_code = asm_students.class_code
        RETURNING sid, exam, student, xmax = 0 AS inserted, attendance,
          octet_length(scores) > 0 AS has_scores, class_code, school_code, org_path, reason,
          total
        """)
      {
        let key = "\(try r["exam"].decode(Int64.self))/\(try r["student"].decode(String.self))"
        guard let i = position[key] else {
          throw ServiceError.internalError("student \(key) was written but not sent")
        }
        if try !r["inserted"].decode(Bool.self) {
          before[try r["sid"].decode(Int64.self)] = try Self.sheetRow(r)
          totalBefore[try r["sid"].decode(Int64.self)] = try r["total"].decode(Double.self)
        }
        written.append(
          (
            try r["sid"].decode(Int64.self), i, try r["inserted"].decode(Bool.self),
            Int32(try r["attendance"].decode(Int.self)), try r["has_scores"].decode(Bool.self)
          ))
      }
      guard written.count == students.count else {
        throw ServiceError.internalError("a score batch's students were not all written")
      }
      written.sort { $0.sid < $1.sid }

      // What the batch may do to each student, as on SQLite.
      var decisions: [StudentScores.Decision] = []
      decisions.reserveCapacity(written.count)
      var refused = 0
      var dropped: [Int64] = []
      for w in written {
        let d = students[w.student].decide(
          stored: w.inserted ? nil : (attendance: w.attendance, hasScores: w.hasScores))
        result.rejections += d.rejections
        refused += d.rejections.count
        // A student this batch created for rows all refused (a clear without a mark) goes.
        if w.inserted && !d.writes { dropped.append(w.sid) }
        decisions.append(d)
      }
      if !dropped.isEmpty {
        try await tx.execute("DELETE FROM asm_students WHERE sid = ANY(\(dropped))")
      }
      // The scores (and chosen options) of the students that existed and take rows, before.
      let changing = zip(written, decisions).filter { !$0.0.inserted && $0.1.writes }.map(\.0)
      try await Self.fillScores(tx, &before, sids: changing.map(\.sid))

      var created = 0
      for (w, d) in zip(written, decisions) where w.inserted && d.writes {
        // A new student's mark creates it; its scores are new.
        let count = students[w.student].scores.count
        created += count == 0 ? 1 : count
      }

      // Students that existed and take rows: class, school, path and any new mark first.
      let moved = zip(written, decisions).filter { !$0.0.inserted && $0.1.writes }
      if !moved.isEmpty {
        let sids = moved.map(\.0.sid)
        let rows = moved.map { students[$0.0.student].lastAccepted! }
        // -1: the mark stays.
        let marks = moved.map { $0.1.attendance?.code ?? -1 }
        let reasons = moved.map { $0.1.attendance?.reason ?? "" }
        try await tx.execute(
          """
          UPDATE asm_students st SET class_code = u.class_code, school_code = u.school_code,
            org_path = u.org_path,
            attendance = CASE WHEN u.mark < 0 THEN st.attendance ELSE u.mark END,
            reason = CASE WHEN u.mark < 0 THEN st.reason ELSE u.reason END
          FROM unnest(\(sids)::int8[], \(rows.map(\.classCode))::text[],
            \(rows.map(\.schoolCode))::text[], \(rows.map(\.classPath))::text[],
            \(marks)::int4[], \(reasons)::text[])
            AS u(sid, class_code, school_code, org_path, mark, reason)
          WHERE st.sid = u.sid
          """)
      }

      // Students that existed and take scores: the batch's written over their stored scores
      // and choices, with the new total (this batch holds their rows since its upsert, so no
      // other batch changes their scores meanwhile).
      let existing = zip(written, decisions).filter { !$0.0.inserted && $0.1.writesScores }
        .map(\.0)
      if !existing.isEmpty {
        let merged = existing.map { w in
          let s = students[w.student]
          return PackedScores.merge(
            stored: before[w.sid] ?? SheetState(
              classCode: "", schoolCode: "", orgPath: "", attendance: 0, reason: ""),
            scores: s.scores, choices: s.choices)
        }
        created += merged.reduce(0) { $0 + $1.added }
        try await tx.execute(
          """
          UPDATE asm_students st SET total = u.total, scores = u.scores, choices = u.choices
          FROM unnest(\(existing.map(\.sid))::int8[], \(merged.map(\.total))::float8[],
            \(merged.map { ByteBuffer(bytes: $0.scores) })::bytea[],
            \(merged.map { ByteBuffer(bytes: $0.choices) })::bytea[])
            AS u(sid, total, scores, choices)
          WHERE st.sid = u.sid
          """)
      }

      // Feed events of the sheets that changed: created students from the batch, those that
      // existed from their rows as now stored.
      var after: [Int64: SheetState] = [:]
      if !changing.isEmpty {
        for r in try await tx.query(
          """
          SELECT sid, class_code, school_code, org_path, attendance, reason, total
          FROM asm_students WHERE sid = ANY(\(changing.map(\.sid)))
          """)
        {
          after[try r["sid"].decode(Int64.self)] = try Self.sheetRow(r)
          totalAfter[try r["sid"].decode(Int64.self)] = try r["total"].decode(Double.self)
        }
        try await Self.fillScores(tx, &after, sids: changing.map(\.sid))
      }
      // Each changed student's old state leaves the exam's tallies and its new state enters.
      var tallies: [Int64: TallyChanges] = [:]
      var sheets: [SheetChange] = []
      sheets.reserveCapacity(written.count)
      let itemNumbers = exams.mapValues { $0.itemNumbers }
      for (w, d) in zip(written, decisions) where d.writes {
        let s = students[w.student]
        let code = s.lastAccepted!.examCode
        let key = SheetState.key(exam: code, student: s.student)
        let new =
          w.inserted ? s.createdSheet(mark: d.attendance ?? (AttendanceCode.sat, "")) : after[w.sid]
        let target = exams[code]!
        let items = itemNumbers[code]!
        // Changed in place (a copy taken out and put back copied every delta per student).
        if !w.inserted, let old = before[w.sid], let total = totalBefore[w.sid] {
          tallies[s.exam, default: TallyChanges(examPath: target.orgPath)].add(
            TallyState(sheet: old, total: total, items: items), sign: -1)
        }
        if let new, let total = w.inserted ? s.total : totalAfter[w.sid] {
          tallies[s.exam, default: TallyChanges(examPath: target.orgPath)].add(
            TallyState(sheet: new, total: total, items: items), sign: 1)
        }
        sheets.append(
          SheetChange(
            key: key, exam: code, student: s.student, old: w.inserted ? nil : before[w.sid],
            new: new))
      }
      // The feed events (a sheet's payload built and serialized each) are made on another
      // core while the tallies are written, not between the transaction's statements.
      let events = Task { try sheets.flatMap { try $0.events() } }
      try await Self.writeTallies(tx, tallies)
      tx.recordChanges(try await events.value)
      result.rejections.sort { $0.index < $1.index }
      result.created = created
      result.updated = batch.accepted - refused - created
      return result
    }
  }

  /// A score sheet a batch changed: its key, its state before (nil when new) and after.
  private struct SheetChange: Sendable {
    var key: String
    var exam: String
    var student: String
    var old: SheetState?
    var new: SheetState?

    /// Its feed events.
    func events() throws -> [ChangeEvent] {
      try SheetState.events(exam: exam, student: student, old: old, new: new).map {
        try ChangeEvent(
          entity: "score_sheet", id: key, naturalKey: key, op: $0.op, orgPath: $0.orgPath,
          payload: $0.payload)
      }
    }
  }

  /// Applies a batch's tally changes (by exam) as increments in one upsert, in key order so
  /// that replicas importing into one exam at once lock shared rows alike; rows a decrease
  /// emptied go after it. The rows stay locked to the batch's commit.
  private static func writeTallies(_ tx: PostgresTransaction, _ tallies: [Int64: TallyChanges])
    async throws
  {
    var exam: [Int64] = [], path: [String] = [], kind: [Int32] = [], total: [Double] = []
    var count: [Int64] = [], start: [Int32] = [], width: [Int32] = []
    var sums: [Double] = [], squares: [Double] = []
    var emptied: [Int] = []
    for (number, changes) in tallies.sorted(by: { $0.key < $1.key }) {
      for (key, delta) in changes.ordered {
        if delta.mayEmpty { emptied.append(exam.count) }
        exam.append(number)
        path.append(key.path)
        kind.append(key.kind)
        total.append(key.total)
        count.append(Int64(delta.count))
        start.append(Int32(sums.count + 1))
        width.append(Int32(delta.sums.count))
        sums += delta.sums
        squares += delta.squares
      }
    }
    guard !exam.isEmpty else { return }
    try await tx.execute(
      """
      INSERT INTO asm_tallies AS t (exam, path, kind, total, count, sums, squares)
      SELECT u.exam, u.path, u.kind, u.total, u.count,
        COALESCE((\(sums)::float8[])[u.start:u.start + u.width - 1], '{}'),
        COALESCE((\(squares)::float8[])[u.start:u.start + u.width - 1], '{}')
      FROM unnest(\(exam)::int8[], \(path)::text[], \(kind)::int4[], \(total)::float8[],
        \(count)::int8[], \(start)::int4[], \(width)::int4[])
        AS u(exam, path, kind, total, count, start, width)
      ORDER BY u.exam, u.path, u.kind, u.total
      ON CONFLICT (exam, path, kind, total) DO UPDATE SET count = t.count + excluded.count,
        sums = CASE WHEN cardinality(excluded.sums) = 0 THEN t.sums
          WHEN cardinality(t.sums) = 0 THEN excluded.sums
          ELSE ARRAY(SELECT a + b FROM unnest(t.sums, excluded.sums) AS x(a, b)) END,
        squares = CASE WHEN cardinality(excluded.squares) = 0 THEN t.squares
          WHEN cardinality(t.squares) = 0 THEN excluded.squares
          ELSE ARRAY(SELECT a + b FROM unnest(t.squares, excluded.squares) AS x(a, b)) END
      """)
    if !emptied.isEmpty {
      try await tx.execute(
        """
        DELETE FROM asm_tallies t
        USING unnest(\(emptied.map { exam[$0] })::int8[], \(emptied.map { path[$0] })::text[],
          \(emptied.map { kind[$0] })::int4[], \(emptied.map { total[$0] })::float8[])
          AS u(exam, path, kind, total)
        WHERE t.exam = u.exam AND t.path = u.path AND t.kind = u.kind AND t.total = u.total
          AND t.count <= 0
        """)
    }
  }

  /// A sheet without its scores from a student row's class, school, path, mark and reason.
  private static func sheetRow(_ r: PostgresRandomAccessRow) throws -> SheetState {
    SheetState(
      classCode: try r["class_code"].decode(String.self),
      schoolCode: try r["school_code"].decode(String.self),
      orgPath: try r["org_path"].decode(String.self),
      attendance: Int32(try r["attendance"].decode(Int.self)),
      reason: try r["reason"].decode(String.self))
  }

  /// Fills the scores and chosen options of `sheets` (by sid) from the students' rows.
  private static func fillScores(
    _ tx: PostgresTransaction, _ sheets: inout [Int64: SheetState], sids: [Int64]
  ) async throws {
    guard !sids.isEmpty else { return }
    for r in try await tx.query(
      "SELECT sid, scores, choices FROM asm_students WHERE sid = ANY(\(sids))")
    {
      let sid = try r["sid"].decode(Int64.self)
      guard sheets[sid] != nil else { continue }
      PackedScores.fill(
        &sheets[sid]!, scores: try Self.bytes(r["scores"]), choices: try Self.bytes(r["choices"]))
    }
  }


  /// A scope's filter on `asm_students`: a range of the (exam, org_path) index (paths are ASCII
  /// and compare bytewise, so every path under the scope sorts below it followed by the highest
  /// code point). Every student lies under the org running the exam: that scope is no filter.
  private static func scopeFilter(_ exam: ExamRecord, _ scopePath: String?) -> String? {
    scopePath == exam.orgPath ? nil : scopePath
  }

  /// The elements of a one-dimensional binary array cell (NULL, from an aggregate over no
  /// rows: none), each handed to `read` as (bytes, offset, length). postgres-nio's generic
  /// array decoding costs about a microsecond an element; a report reads hundreds of thousands.
  private static func elements<T>(
    _ cell: PostgresCell, width: Int?, _ read: (UnsafeRawBufferPointer, Int, Int) -> T
  ) throws -> [T] {
    guard let bytes = cell.bytes else { return [] }
    let malformed = ServiceError.internalError("malformed array column \(cell.columnName)")
    guard cell.format == .binary else { throw malformed }
    return try bytes.withUnsafeReadableBytes { raw -> [T] in
      func int32(_ at: Int) -> Int {
        Int(Int32(bigEndian: raw.loadUnaligned(fromByteOffset: at, as: Int32.self)))
      }
      guard raw.count >= 12 else { throw malformed }
      if int32(0) == 0 { return [] }
      guard int32(0) == 1, raw.count >= 20, int32(12) >= 0 else { throw malformed }
      let count = int32(12)
      var out: [T] = []
      out.reserveCapacity(count)
      var offset = 20
      for _ in 0..<count {
        guard offset + 4 <= raw.count else { throw malformed }
        let length = int32(offset)
        offset += 4
        guard length >= 0, offset + length <= raw.count, width == nil || length == width
        else { throw malformed }
        out.append(read(raw, offset, length))
        offset += length
      }
      return out
    }
  }

  private static func int64s(_ cell: PostgresCell) throws -> [Int64] {
    try elements(cell, width: 8) { raw, at, _ in
      Int64(bigEndian: raw.loadUnaligned(fromByteOffset: at, as: Int64.self))
    }
  }

  private static func ints(_ cell: PostgresCell) throws -> [Int] {
    try elements(cell, width: 4) { raw, at, _ in
      Int(Int32(bigEndian: raw.loadUnaligned(fromByteOffset: at, as: Int32.self)))
    }
  }

  private static func doubles(_ cell: PostgresCell) throws -> [Double] {
    try elements(cell, width: 8) { raw, at, _ in
      Double(bitPattern: UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self)))
    }
  }

  private static func strings(_ cell: PostgresCell) throws -> [String] {
    try elements(cell, width: nil) { raw, at, length in
      String(decoding: UnsafeRawBufferPointer(rebasing: raw[at..<at + length]), as: UTF8.self)
    }
  }

  /// The students of the exam (under `scopePath` when given) with their scores, in one
  /// statement returning a row of arrays per class: its students' sids, ids, packed scores
  /// (kept in the student rows by the score batches), attendance and reasons, with the class
  /// code, school code and path once; the client puts the students in sid order. A row per
  /// student or per score costs the client far more than the query (postgres-nio hands rows
  /// over one by one), and so does text to split. One grouping of the exam's rows replaces a
  /// window over them sorted by class, a sort by sid and a distinct: 103-123 ms of server
  /// time for a paper of 13,047 students against 41 ms.
  func results(exam: ExamRecord, scopePath: String?) async throws -> [StudentResult] {
    let column = PackedScores.columns(exam)
    let width = exam.itemNumbers.count
    let scope = Self.scopeFilter(exam, scopePath)
    let rows = try await store.read { tx in
      try await tx.query(
        """
        SELECT class_code, school_code, org_path, array_agg(sid) AS sids,
          array_agg(student) AS students, array_agg(scores) AS scores,
          array_agg(attendance) AS marks,
          array_agg(reason) FILTER (WHERE attendance <> \(Int(AttendanceCode.sat))) AS reasons
        FROM asm_students
        WHERE exam = \(exam.number) AND (\(scope)::text IS NULL
          OR (org_path >= \(scope) AND org_path < \(scope) || chr(1114111)
            AND starts_with(org_path, \(scope))))
        GROUP BY class_code, school_code, org_path
        """)
    }
    var ordered: [(sid: Int64, student: StudentResult)] = []
    for row in rows {
      // A class's students share its three strings (one buffer each, retained).
      let classCode = try row["class_code"].decode(String.self)
      let schoolCode = try row["school_code"].decode(String.self)
      let path = try row["org_path"].decode(String.self)
      let sids = try Self.int64s(row["sids"])
      let ids = try Self.strings(row["students"])
      let marks = try Self.ints(row["marks"])
      let reasons = try Self.strings(row["reasons"])
      guard ids.count == sids.count, marks.count == sids.count,
        reasons.count == marks.lazy.filter({ $0 != Int(AttendanceCode.sat) }).count
      else { throw ServiceError.internalError("malformed students of an exam's results") }
      var s = 0
      var marked = 0
      // The packed scores go straight from the array's bytes into each student's columns.
      let packed = try Self.elements(row["scores"], width: nil) { raw, at, length in
        var student = StudentResult(
          externalID: s < ids.count ? ids[s] : "", classCode: classCode, schoolCode: schoolCode,
          orgPath: path, scores: Array(repeating: 0.0, count: width),
          attendance: s < marks.count ? Int32(marks[s]) : AttendanceCode.sat)
        if s < marks.count, marks[s] != Int(AttendanceCode.sat) {
          student.reason = reasons[marked]
          marked += 1
        }
        student.fill(UnsafeRawBufferPointer(rebasing: raw[at..<at + length]), column: column)
        s += 1
        return student
      }
      guard packed.count == sids.count else {
        throw ServiceError.internalError("malformed students of an exam's results")
      }
      for (k, student) in packed.enumerated() { ordered.append((sids[k], student)) }
    }
    ordered.sort { $0.sid < $1.sid }
    return ordered.map(\.student)
  }

  func incompleteStudents(exam: ExamRecord) async throws -> [StudentResult] {
    try await store.read { tx in try await Self.incomplete(tx, exam: exam) }
  }

  /// The students of the exam who sat without a stored score for every item.
  private static func incomplete(_ tx: PostgresTransaction, exam: ExamRecord) async throws
    -> [StudentResult]
  {
    let column = PackedScores.columns(exam)
    let width = exam.itemNumbers.count
    let rows = try await tx.query(
      """
      SELECT student, class_code, school_code, org_path, scores FROM asm_students
      WHERE exam = \(exam.number) AND attendance = \(Int(AttendanceCode.sat))
        AND octet_length(scores) < \(12 * width)
      ORDER BY sid
      """)
    return try rows.map { r in
      var student = StudentResult(
        externalID: try r["student"].decode(String.self),
        classCode: try r["class_code"].decode(String.self),
        schoolCode: try r["school_code"].decode(String.self),
        orgPath: try r["org_path"].decode(String.self),
        scores: Array(repeating: 0, count: width))
      let packed = try r["scores"].decode(ByteBuffer.self)
      packed.withUnsafeReadableBytes { student.fill($0, column: column) }
      return student
    }
  }

  /// The student's row, scores and standing; `$1` the exam's number, `$2` the student, `$3`
  /// the exam's org path.
  private struct StandingStatement: PostgresRowStatement {
    static let name = "asm_standing"
    static let sql = """
      WITH me AS (
        SELECT sid, class_code, school_code, org_path, total, attendance, reason, scores
        FROM asm_students WHERE exam = $1 AND student = $2)
      SELECT me.class_code, me.school_code, me.org_path, me.total, me.attendance, me.reason,
        me.scores, c.size AS class_size, c.above AS class_above, s.size AS school_size,
        s.above AS school_above, ev.totals, ev.counts
      FROM me,
        LATERAL (SELECT count(*) AS size, count(*) FILTER (WHERE total > me.total) AS above
          FROM asm_students WHERE exam = $1 AND class_code = me.class_code
            AND attendance = \(AttendanceCode.sat)) c,
        LATERAL (SELECT count(*) AS size, count(*) FILTER (WHERE total > me.total) AS above
          FROM asm_students WHERE exam = $1 AND school_code = me.school_code
            AND attendance = \(AttendanceCode.sat)) s,
        LATERAL (SELECT array_agg(total ORDER BY total) AS totals,
            array_agg(count ORDER BY total) AS counts
          FROM asm_tallies WHERE exam = $1 AND path = $3 AND kind = \(TallyKind.sat)) ev
      """
    var exam: Int64
    var student: String
    var path: String

    func makeBindings() -> PostgresBindings {
      var bindings = PostgresBindings()
      bindings.append(exam)
      bindings.append(student)
      bindings.append(path)
      return bindings
    }
  }

  /// The student's row, scores and standing in one prepared statement outside a transaction
  /// (one round trip instead of three): class and school counts from counted ranges of their
  /// (exam, code, attendance, total) indexes, the exam's totals from its tallies (one row per
  /// distinct total).
  func standing(exam: ExamRecord, student: String) async throws -> StudentStanding? {
    let column = PackedScores.columns(exam)
    guard
      let row = try await store.query(
        prepared: StandingStatement(exam: exam.number, student: student, path: exam.orgPath)
      ).first
    else { return nil }
    var result = StudentResult(
      externalID: student, classCode: try row["class_code"].decode(String.self),
      schoolCode: try row["school_code"].decode(String.self),
      orgPath: try row["org_path"].decode(String.self),
      scores: Array(repeating: 0, count: exam.itemNumbers.count),
      attendance: Int32(try row["attendance"].decode(Int.self)),
      reason: try row["reason"].decode(String.self))
    let packed = try row["scores"].decode(ByteBuffer.self)
    packed.withUnsafeReadableBytes { result.fill($0, column: column) }
    let levels = try Self.doubles(row["totals"])
    let counts = try Self.int64s(row["counts"])
    guard levels.count == counts.count else {
      throw ServiceError.internalError("malformed tallies of exam \(exam.exam.code)")
    }
    var totals: [Double] = []
    for (total, count) in zip(levels, counts) {
      totals.append(contentsOf: repeatElement(total, count: Int(count)))
    }
    return StudentStanding(
      result: result, total: try row["total"].decode(Double.self), totals: totals,
      classSize: try row["class_size"].decode(Int.self),
      classAbove: try row["class_above"].decode(Int.self),
      schoolSize: try row["school_size"].decode(Int.self),
      schoolAbove: try row["school_above"].decode(Int.self))
  }

  /// The scope's tally rows in one statement (arrays), then, in the same read, the students a
  /// statistics report lists or needs at a 27% group's boundary.
  func scopeTallies(exam: ExamRecord, scopePath: String?) async throws -> ScopeTallies {
    let path = scopePath ?? exam.orgPath
    let column = PackedScores.columns(exam)
    let width = exam.itemNumbers.count
    return try await store.read { tx in
      var tallies = ScopeTallies()
      // The rows in key order (the primary key's: no sort, and an index-only scan since the
      // count is in it), as arrays per path: a path's text once, not once per total. Once
      // the table is analysed the planner, costing random reads for pages that are in memory,
      // prefers a sequential scan and a sort of every row on the path text: a county's 11,530
      // rows in 17 ms against 6 ms through the key.
      try await tx.execute("SET LOCAL enable_seqscan = off")
      try await tx.execute("SET LOCAL enable_bitmapscan = off")
      for row in try await tx.query(
        """
        SELECT path, array_agg(kind) AS kinds, array_agg(total) AS totals,
          array_agg(count) AS counts
        FROM (SELECT path, kind, total, count FROM asm_tallies
          WHERE exam = \(exam.number) AND path >= \(path)
            AND path < \(String(path.dropLast()) + "0")
          ORDER BY path, kind, total) r
        GROUP BY path ORDER BY path
        """)
      {
        let rowPath = try row["path"].decode(String.self)
        let kinds = try Self.ints(row["kinds"])
        let totals = try Self.doubles(row["totals"])
        let counts = try Self.int64s(row["counts"])
        guard totals.count == kinds.count, counts.count == kinds.count else {
          throw ServiceError.internalError("malformed tallies of \(exam.exam.code)")
        }
        for i in kinds.indices {
          tallies.rows.append(
            TallyRow(
              path: rowPath, kind: Int32(kinds[i]), total: totals[i], count: Int(counts[i])))
        }
      }
      // The item sums of the exam's own path (a row per distinct total).
      if path == exam.orgPath {
        var sums: [Double: (sums: [Double], squares: [Double])] = [:]
        for r in try await tx.query(
          """
          SELECT total, sums, squares FROM asm_tallies
          WHERE exam = \(exam.number) AND path = \(path) AND kind = \(Int(TallyKind.sat))
          """)
        {
          sums[try r["total"].decode(Double.self)] = (
            try Self.doubles(r["sums"]), try Self.doubles(r["squares"])
          )
        }
        for i in tallies.rows.indices
        where tallies.rows[i].path == path && tallies.rows[i].kind == TallyKind.sat {
          guard let s = sums[tallies.rows[i].total] else { continue }
          tallies.rows[i].sums = s.sums
          tallies.rows[i].squares = s.squares
        }
      }
      let scope = ScopeTally.of(tallies.rows, path: path)
      if path == exam.orgPath {
        let levels = tallies.rows.filter { $0.path == path && $0.kind == TallyKind.sat }
        let boundary = ScopeTallies.boundaryTotals(levels)
        if !boundary.isEmpty {
          var found: [Double: [(String, [Double])]] = [:]
          for r in try await tx.query(
            """
            SELECT student, total, scores FROM asm_students
            WHERE exam = \(exam.number) AND attendance = \(Int(AttendanceCode.sat))
              AND total = ANY(\(boundary)::float8[])
            """)
          {
            var student = StudentResult(
              externalID: try r["student"].decode(String.self), classCode: "", schoolCode: "",
              orgPath: "", scores: Array(repeating: 0, count: width))
            let packed = try r["scores"].decode(ByteBuffer.self)
            packed.withUnsafeReadableBytes { student.fill($0, column: column) }
            found[try r["total"].decode(Double.self), default: []].append(
              (student.externalID, student.scores))
          }
          for (total, students) in found {
            tallies.boundary[total] = students.sorted { $0.0 < $1.0 }.map(\.1)
          }
        }
      }
      if scope.absent + scope.exempt > 0 {
        for r in try await tx.query(
          """
          SELECT student, class_code, school_code, org_path, attendance, reason
          FROM asm_students
          WHERE exam = \(exam.number) AND attendance <> 1 AND starts_with(org_path, \(path))
          ORDER BY sid
          """)
        {
          tallies.marked.append(
            StudentResult(
              externalID: try r["student"].decode(String.self),
              classCode: try r["class_code"].decode(String.self),
              schoolCode: try r["school_code"].decode(String.self),
              orgPath: try r["org_path"].decode(String.self),
              scores: Array(repeating: 0, count: width),
              attendance: Int32(try r["attendance"].decode(Int.self)),
              reason: try r["reason"].decode(String.self)))
        }
      }
      if scope.incomplete > 0 {
        tallies.incomplete = try await Self.incomplete(tx, exam: exam).filter {
          $0.orgPath.hasPrefix(path)
        }
      }
      return tallies
    }
  }

  /// Students read per query of an export page.
  private static let exportStudents = 256

  /// A bytea cell's bytes.
  private static func bytes(_ cell: PostgresCell) throws -> Data {
    Data(try cell.decode(ByteBuffer.self).readableBytesView)
  }

  /// Reads the exam's students from the one the page starts in, in the (exam, student)
  /// index's order, 256 at a time (a page of 2,000 rows is about a hundred students of 20
  /// items; a student without scores adds no row) until the page is full.
  func exportScores(exam: ExamRecord, after: (String, Int32)?, limit: Int) async throws
    -> [ExportedScore]
  {
    var (student, item) = after ?? ("", 0)
    var scores: [ExportedScore] = []
    while scores.count < limit {
      let rows = try await store.read { tx in
        try await tx.query(
          """
          SELECT student, class_code, school_code, attendance, reason, scores, choices
          FROM asm_students WHERE exam = \(exam.number) AND student >= \(student)
          ORDER BY student LIMIT \(Self.exportStudents)
          """)
      }
      for r in rows where scores.count < limit {
        ExportedScore.append(
          to: &scores, limit: limit, after: (student, item),
          student: try r["student"].decode(String.self),
          classCode: try r["class_code"].decode(String.self),
          schoolCode: try r["school_code"].decode(String.self),
          attendance: Int32(try r["attendance"].decode(Int.self)),
          reason: try r["reason"].decode(String.self), scores: try Self.bytes(r["scores"]),
          choices: try Self.bytes(r["choices"]))
      }
      guard rows.count == Self.exportStudents, let last = rows.last else { break }
      // Every row read was used: go on after the last student, whole.
      student = try last["student"].decode(String.self)
      item = .max
    }
    return scores
  }

  func choices(exam: ExamRecord, scopePath: String?) async throws -> [String: [Int32: String]] {
    let scope = Self.scopeFilter(exam, scopePath)
    let rows = try await store.read { tx in
      try await tx.query(
        """
        SELECT student, choices FROM asm_students
        WHERE exam = \(exam.number) AND octet_length(choices) > 0
          AND (\(scope)::text IS NULL OR starts_with(org_path, \(scope)))
        """)
    }
    var choices: [String: [Int32: String]] = [:]
    for r in rows {
      choices[try r["student"].decode(String.self)] = PackedScores.choices(
        try Self.bytes(r["choices"]))
    }
    return choices
  }

  /// Upserts on the natural key, one statement per round; a key given twice in one batch goes
  /// into a later round (one statement may not touch a row twice), so the first occurrence
  /// creates and the next updates, as on SQLite. Replicas importing the same entries at once
  /// wait on each other's keys instead of failing on them.
  func upsertQuality(_ records: [QualityRecord], time: Double) async throws -> [Bool] {
    var rounds: [[Int]] = []
    var seen: [String: Int] = [:]
    for (i, record) in records.enumerated() {
      let round = seen[record.naturalKey, default: 0]
      seen[record.naturalKey] = round + 1
      if round == rounds.count { rounds.append([]) }
      rounds[round].append(i)
    }
    for r in rounds.indices {
      rounds[r].sort {
        records[$0].naturalKey.utf8.lexicographicallyPrecedes(records[$1].naturalKey.utf8)
      }
    }
    return try await store.write { tx in
      var created = Array(repeating: false, count: records.count)
      var ids = Array(repeating: "", count: records.count)
      for round in rounds {
        let entries = round.map { records[$0] }
        let id = entries.map(\.id)
        let student = entries.map(\.entry.studentExternalID)
        let school = entries.map(\.entry.schoolCode)
        let path = entries.map(\.orgPath)
        let year = entries.map(\.entry.schoolYear)
        let term = entries.map(\.entry.term)
        let dimension = entries.map { Int32($0.entry.dimension.rawValue) }
        let title = entries.map(\.entry.title)
        let description = entries.map(\.entry.description_p)
        let evidence = entries.map(\.entry.evidenceRef)
        let grade = entries.map { Int32($0.entry.grade.rawValue) }
        var written: [String: (id: String, inserted: Bool)] = [:]
        for row in try await tx.query(
          """
          INSERT INTO asm_quality (id, student, school_code, org_path, school_year, term,
            dimension, title, description, evidence_ref, grade, update_time)
          SELECT i, s, sc, p, y, t, d, ti, de, ev, g, \(time)
          FROM unnest(\(id)::text[], \(student)::text[], \(school)::text[], \(path)::text[],
            \(year)::text[], \(term)::int4[], \(dimension)::int4[], \(title)::text[],
            \(description)::text[], \(evidence)::text[], \(grade)::int4[])
            AS u(i, s, sc, p, y, t, d, ti, de, ev, g)
          ON CONFLICT (student, school_year, term, dimension, title) DO UPDATE SET
            school_code = excluded.school_code, org_path = excluded.org_path,
            description = excluded.description, evidence_ref = excluded.evidence_ref,
            grade = excluded.grade, update_time = excluded.update_time
          RETURNING id, student, school_year, term, dimension, title, xmax = 0 AS inserted
          """)
        {
          let student = try row["student"].decode(String.self)
          let year = try row["school_year"].decode(String.self)
          let key =
            "\(student)/\(year)/\(try row["term"].decode(Int.self))/"
            + "\(try row["dimension"].decode(Int.self))/\(try row["title"].decode(String.self))"
          written[key] = (try row["id"].decode(String.self), try row["inserted"].decode(Bool.self))
        }
        for i in round {
          guard let w = written[records[i].naturalKey] else {
            throw ServiceError.internalError("quality entry \(records[i].naturalKey) not written")
          }
          ids[i] = w.id
          created[i] = w.inserted
        }
      }
      // Feed events in the batch's order, written in bulk at commit.
      for (i, record) in records.enumerated() {
        try tx.recordChange(
          entity: "quality_entry", id: ids[i], naturalKey: record.naturalKey, op: .upsert,
          orgPath: record.orgPath, payload: record.entry)
      }
      return created
    }
  }

  func qualityEntries(student: String, schoolYear: String, term: Int32) async throws
    -> [QualityRecord]
  {
    let rows = try await store.read { tx in
      try await tx.query(
        """
        SELECT id, student, school_code, org_path, school_year, term, dimension, title,
          description, evidence_ref, grade
        FROM asm_quality
        WHERE student = \(student) AND school_year = \(schoolYear) AND term = \(Int(term))
        ORDER BY dimension, title
        """)
    }
    return try rows.map { row in
      var e = Smartschool_Assessment_V1_QualityEntry()
      e.studentExternalID = try row["student"].decode(String.self)
      e.schoolCode = try row["school_code"].decode(String.self)
      e.schoolYear = try row["school_year"].decode(String.self)
      e.term = Int32(try row["term"].decode(Int.self))
      e.dimension = .init(rawValue: try row["dimension"].decode(Int.self)) ?? .unspecified
      e.title = try row["title"].decode(String.self)
      e.description_p = try row["description"].decode(String.self)
      e.evidenceRef = try row["evidence_ref"].decode(String.self)
      e.grade = .init(rawValue: try row["grade"].decode(Int.self)) ?? .unspecified
      return QualityRecord(
        id: try row["id"].decode(String.self), entry: e,
        orgPath: try row["org_path"].decode(String.self))
    }
  }

  func changes(after: Int64, limit: Int, scopes: [OrgPath]) async throws
    -> (changes: [Smartschool_Common_V1_Change], hasMore: Bool)
  {
    try await store.listChanges(after: after, limit: limit, scopes: scopes, unscoped: [])
  }
}

extension PostgresAssessmentStore.ExamByCode {
  func makeBindings() -> PostgresBindings {
    var bindings = PostgresBindings()
    bindings.append(code)
    return bindings
  }
}
