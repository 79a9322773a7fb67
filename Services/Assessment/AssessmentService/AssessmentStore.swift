import Foundation
import GRDB
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf

/// An exam as the store keeps it: the definition plus where it lives in the org tree.
public struct ExamRecord: Sendable {
  public var number: Int64
  public var id: String
  /// The definition; `frozen` and `scoreCount` are filled on read.
  public var exam: Smartschool_Assessment_V1_Exam
  /// Path of the running org.
  public var orgPath: String

  /// Whether a missing item score of a student who sat is an error (REPORT), not a 0 by intent.
  public var reportsMissingItems: Bool { exam.missingItems != .zero }

  public var thresholds: Thresholds {
    Thresholds(
      fullMarks: exam.fullMarks, pass: exam.passFraction, excellent: exam.excellentFraction,
      low: exam.lowFraction, good: exam.goodFraction)
  }

  /// The rates' line rules: the exam's cut lines where given, else its fractions.
  public var lineRules: LineRules {
    func rule(_ set: Bool, _ line: Smartschool_Assessment_V1_CutLine, _ fraction: Double)
      -> LineRule
    {
      switch set ? line.line : nil {
      case .score(let s): .score(s)
      case .topShare(let share): .topShare(share)
      case nil: .fraction(fraction)
      }
    }
    let c = exam.cutLines
    return LineRules(
      pass: rule(c.hasPass, c.pass, exam.passFraction),
      good: rule(c.hasGood, c.good, exam.goodFraction),
      excellent: rule(c.hasExcellent, c.excellent, exam.excellentFraction),
      low: rule(c.hasLow, c.low, exam.lowFraction))
  }

  /// A list the stores keep joined by commas (codes and option labels have none).
  static func list(_ joined: String) -> [String] {
    joined.isEmpty ? [] : joined.split(separator: ",").map(String.init)
  }

  /// Item numbers in ascending order (the column order of ``StudentResult/scores``).
  public var itemNumbers: [Int32] { exam.items.map(\.number) }
}

/// One validated score row waiting to be written.
public struct PendingScore: Sendable {
  public var index: Int
  public var examCode: String
  public var student: String
  public var classCode: String
  public var schoolCode: String
  public var classPath: String
  public var item: Int32
  public var score: Double
  /// The row's `Attendance` raw value: 0 for a score row; SAT (1), ABSENT (2) or EXEMPT (3)
  /// for a row that marks (or clears the mark of) the student for the whole paper (item 0).
  public var attendance: Int32 = 0
  /// EXEMPT's reason.
  public var reason: String = ""
  /// The option chosen on an item with options ("" none).
  public var choice: String = ""

  /// Whether the row marks attendance instead of giving an item's score.
  public var isMark: Bool { attendance != 0 }

  /// The natural key, exam/student/item.
  public var key: String { "\(examCode)/\(student)/\(item)" }
}

/// Attendance raw values as the stores keep them (`asm_students.attendance`), the proto's.
public enum AttendanceCode {
  /// Sat the paper (a stored student without a mark).
  public static let sat: Int32 = 1
  /// 缺考.
  public static let absent: Int32 = 2
  /// 免考.
  public static let exempt: Int32 = 3
}

/// A row the store refused while writing a batch.
public struct ScoreRejection: Sendable {
  public var index: Int
  /// The row's natural key, exam/student/item.
  public var key: String
  public var field: String
  public var reason: String
}

/// What writing one batch of scores did.
public struct ScoreBatchResult: Sendable {
  public var created = 0
  public var updated = 0
  public var rejections: [ScoreRejection] = []
}

/// A score batch grouped by student ahead of its write (``AssessmentStoring/stageScores(_:)``),
/// against the exams as they were read then. The write reads them again in its transaction
/// and groups the rows anew only if they changed meanwhile, so a batch is grouped while the
/// one before it commits.
public struct StagedScores: Sendable {
  let rows: [PendingScore]
  /// The exam codes the rows name.
  let codes: Set<String>
  let targets: [String: ScoreTarget]
  let batch: (students: [StudentScores], accepted: Int, rejections: [ScoreRejection])

  /// The exam codes `rows` name.
  static func codes(_ rows: [PendingScore]) -> Set<String> { Set(rows.map { $0.examCode }) }

  /// Groups `rows`, which name `codes`, against `targets` (the exams by code, as read now).
  init(_ rows: [PendingScore], codes: Set<String>, targets: [String: ScoreTarget]) {
    self.rows = rows
    self.codes = codes
    self.targets = targets
    batch = StudentScores.group(rows, targets: targets)
  }

  /// The grouping against `current`, the exams as the write transaction reads them: this
  /// one's when they are unchanged.
  func grouped(against current: [String: ScoreTarget])
    -> (students: [StudentScores], accepted: Int, rejections: [ScoreRejection])
  {
    current == targets ? batch : StudentScores.group(rows, targets: current)
  }
}

/// An exam as a score batch sees it, read inside the batch's write transaction.
struct ScoreTarget: Equatable {
  var number: Int64
  /// The path text; a class lies under it when its path text starts with it.
  var orgPath: String
  var maxScores: [Int32: Double] = [:]
  /// The declared options of the items that have them.
  var options: [Int32: [String]] = [:]

  /// The item numbers ascending (the tallies' column order).
  var itemNumbers: [Int32] { maxScores.keys.sorted() }

  /// Why `row` may not be written to `target` (nil: the exam does not exist), or nil when
  /// it may. Both stores check rows alike.
  static func rejection(_ row: PendingScore, _ target: ScoreTarget?) -> ScoreRejection? {
    func reject(_ field: String, _ reason: String) -> ScoreRejection {
      ScoreRejection(index: row.index, key: row.key, field: field, reason: reason)
    }
    guard let target else { return reject("exam_code", "no exam has code \(row.examCode)") }
    if row.isMark {
      return row.classPath.hasPrefix(target.orgPath)
        ? nil
        : reject(
          "class_code", "class \(row.classCode) is outside the org running exam \(row.examCode)")
    }
    guard let maxScore = target.maxScores[row.item] else {
      return reject("item_number", "exam \(row.examCode) has no item \(row.item)")
    }
    if row.score > maxScore + 1e-9 {
      return reject(
        "score", "score \(row.score) is above item \(row.item)'s maximum \(maxScore)")
    }
    if !row.classPath.hasPrefix(target.orgPath) {
      return reject(
        "class_code", "class \(row.classCode) is outside the org running exam \(row.examCode)")
    }
    if !row.choice.isEmpty {
      guard let options = target.options[row.item], !options.isEmpty else {
        return reject(
          "chosen_option", "item \(row.item) of exam \(row.examCode) declares no options")
      }
      if !options.contains(row.choice) {
        return reject(
          "chosen_option",
          "must be one of item \(row.item)'s options (\(options.joined(separator: ", ")))")
      }
    }
    return nil
  }
}

/// One student's results on one paper as stored, what the change feed's "score_sheet" event
/// carries (the proto's ScoreSheet); both stores build it alike to compare before and after.
struct SheetState: Equatable {
  var classCode: String
  var schoolCode: String
  var orgPath: String
  var attendance: Int32
  var reason: String
  /// Item numbers ascending, with their scores and chosen options.
  var items: [Int32] = []
  var scores: [Double] = []
  var choices: [String] = []

  /// A student who sat without any score has nothing a follower keeps.
  var isEmpty: Bool {
    attendance != AttendanceCode.absent && attendance != AttendanceCode.exempt && items.isEmpty
  }

  /// The feed's payload for the student on the exam.
  func payload(exam: String, student: String) -> Smartschool_Assessment_V1_ScoreSheet {
    .with {
      $0.examCode = exam
      $0.studentExternalID = student
      $0.classCode = classCode
      $0.schoolCode = schoolCode
      $0.attendance = .init(rawValue: Int(attendance)) ?? .sat
      $0.reasonNotTested = reason
      $0.scores = items.indices.map { i in
        .with {
          $0.itemNumber = items[i]
          $0.score = scores[i]
          $0.chosenOption = choices[i]
        }
      }
    }
  }

  /// One change-feed event of a sheet.
  struct Event {
    var op: Smartschool_Common_V1_ChangeOp
    var orgPath: String
    var payload: Smartschool_Assessment_V1_ScoreSheet?
  }

  /// The events that take a follower from `old` to `new` (nil or empty: nothing stored):
  /// none when nothing changed; a delete when the sheet emptied, or at the old path before
  /// the upsert when the student moved to another path; else an upsert.
  static func events(exam: String, student: String, old: SheetState?, new: SheetState?)
    -> [Event]
  {
    let before = old.flatMap { $0.isEmpty ? nil : $0 }
    let after = new.flatMap { $0.isEmpty ? nil : $0 }
    if before == after { return [] }
    var events: [Event] = []
    if let before, before.orgPath != after?.orgPath {
      events.append(Event(op: .delete, orgPath: before.orgPath, payload: nil))
    }
    if let after {
      let payload = after.payload(exam: exam, student: student)
      events.append(Event(op: .upsert, orgPath: after.orgPath, payload: payload))
    }
    return events
  }

  /// The natural key (and id) of a sheet's events.
  static func key(exam: String, student: String) -> String { "\(exam)/\(student)" }
}

/// One student's accepted rows of a score batch, as both stores write them: the student once,
/// with the class, school and path of its last row (what a row-by-row upsert leaves), and its
/// scores in item order, an item given twice keeping its last score.
struct StudentScores {
  var exam: Int64
  var student: String
  var last: PendingScore
  var scores: [(item: Int32, score: Double)]
  /// The chosen option of each item given ("" none), the last row's for an item given twice.
  var choices: [Int32: String] = [:]
  /// The student's score rows of the batch (for rejecting them together).
  var scoreRows: [PendingScore] = []
  /// The student's attendance rows of the batch, in row order; the last one is its mark.
  var markRows: [PendingScore] = []
  /// The last accepted row of the student (its class, school and path).
  var lastAccepted: PendingScore?

  /// The scores' sum in item order, as SQL's `sum(score)` over the student's score rows adds
  /// them (and as a recomputation from the exported scores does).
  var total: Double { scores.reduce(0) { $0 + $1.score } }

  private struct Key: Hashable {
    var exam: Int64
    var student: String
  }

  /// The accepted rows of `rows` grouped by student, students in the order of their first
  /// row; `targets` holds the batch's exams by code (a code missing there has no exam). Also
  /// the number of accepted rows (an item given twice counts twice) and the rejections, in
  /// row order.
  static func group(_ rows: [PendingScore], targets: [String: ScoreTarget])
    -> (students: [StudentScores], accepted: Int, rejections: [ScoreRejection])
  {
    var students: [StudentScores] = []
    var rejections: [ScoreRejection] = []
    var position: [Key: Int] = [:]
    var accepted = 0
    var current = -1
    for row in rows {
      let target = targets[row.examCode]
      if let rejection = ScoreTarget.rejection(row, target) {
        rejections.append(rejection)
        continue
      }
      let exam = target!.number
      accepted += 1
      // Rows of one student usually arrive together: no dictionary for a repeat.
      if current < 0 || students[current].exam != exam || students[current].student != row.student
      {
        let key = Key(exam: exam, student: row.student)
        if let known = position[key] {
          current = known
        } else {
          current = students.count
          position[key] = current
          students.append(StudentScores(exam: exam, student: row.student, last: row, scores: []))
        }
      }
      students[current].last = row
      if row.isMark {
        students[current].markRows.append(row)
      } else {
        students[current].scores.append((row.item, row.score))
        students[current].choices[row.item] = row.choice
        students[current].scoreRows.append(row)
      }
    }
    for s in students.indices {
      students[s].settle()
      // A student with scores in the batch sat: its ABSENT or EXEMPT rows are refused here.
      if !students[s].scores.isEmpty {
        let refused = students[s].markRows.filter { $0.attendance != AttendanceCode.sat }
        for row in refused {
          rejections.append(
            ScoreRejection(
              index: row.index, key: row.key, field: "attendance",
              reason:
                "student \(row.student) has item scores in the same import batch: a student "
                + "who sat cannot be marked absent or exempt"))
        }
        accepted -= refused.count
        students[s].markRows.removeAll { $0.attendance != AttendanceCode.sat }
      }
      students[s].lastAccepted = (students[s].scoreRows + students[s].markRows)
        .max { $0.index < $1.index }
    }
    rejections.sort { $0.index < $1.index }
    return (students, accepted, rejections)
  }

  /// The sheet of a student this batch creates, with `mark` as its attendance.
  func createdSheet(mark: (code: Int32, reason: String)) -> SheetState? {
    guard let row = lastAccepted else { return nil }
    return SheetState(
      classCode: row.classCode, schoolCode: row.schoolCode, orgPath: row.classPath,
      attendance: mark.code, reason: mark.reason, items: scores.map { $0.item },
      scores: scores.map { $0.score }, choices: scores.map { choices[$0.item] ?? "" })
  }

  /// What a batch does to one student, given the student's stored state (nil: not stored).
  struct Decision {
    /// Rows refused, with the stored data left untouched.
    var rejections: [ScoreRejection] = []
    /// Whether the batch's scores are written.
    var writesScores = false
    /// The attendance to store (0 or SAT: none), when the batch changes it.
    var attendance: (code: Int32, reason: String)?
    /// Whether anything of the student is written (a row to insert, or to update).
    var writes: Bool { writesScores || attendance != nil || keeps }
    /// An accepted row that changes nothing stored (a clear of a student without a mark).
    var keeps = false
  }

  /// The decision for this student, the same on both stores: an ABSENT or EXEMPT mark is
  /// refused for a student with stored scores; scores are refused for a marked student unless
  /// the batch clears the mark first (SAT); a clear needs a stored student.
  func decide(stored: (attendance: Int32, hasScores: Bool)?) -> Decision {
    var d = Decision()
    func refuse(_ rows: [PendingScore], _ field: String, _ reason: String) {
      d.rejections += rows.map {
        ScoreRejection(index: $0.index, key: $0.key, field: field, reason: reason)
      }
    }
    let marked = stored.map { $0.attendance == AttendanceCode.absent
      || $0.attendance == AttendanceCode.exempt } ?? false
    if let mark = markRows.last {
      if mark.attendance == AttendanceCode.sat {
        if stored == nil && scores.isEmpty {
          refuse(
            markRows, "attendance",
            "student \(student) has no absence or exemption mark on exam \(mark.examCode) to clear")
          return d
        }
        if marked { d.attendance = (AttendanceCode.sat, "") } else { d.keeps = true }
        d.writesScores = !scores.isEmpty
        return d
      }
      // ABSENT or EXEMPT (the batch has no scores of the student: group refused them).
      if stored?.hasScores == true {
        refuse(
          markRows, "attendance",
          "student \(student) has item scores on exam \(mark.examCode): a student who sat "
            + "cannot be marked absent or exempt")
        return d
      }
      d.attendance = (mark.attendance, mark.reason)
      return d
    }
    if marked, let code = stored?.attendance {
      refuse(
        scoreRows, "attendance",
        "student \(student) is marked \(code == AttendanceCode.absent ? "absent" : "exempt") "
          + "on exam \(scoreRows.first?.examCode ?? ""): send a row with attendance SAT and "
          + "item_number 0 to clear the mark first")
      return d
    }
    d.writesScores = !scores.isEmpty
    return d
  }

  /// Puts the scores in item order, an item given twice keeping its last score.
  private mutating func settle() {
    if zip(scores, scores.dropFirst()).allSatisfy({ $0.item < $1.item }) { return }
    let order = scores.indices.sorted { (scores[$0].item, $0) < (scores[$1].item, $1) }
    var settled: [(item: Int32, score: Double)] = []
    settled.reserveCapacity(order.count)
    for i in order {
      if settled.last?.item == scores[i].item {
        settled[settled.count - 1] = scores[i]
      } else {
        settled.append(scores[i])
      }
    }
    scores = settled
  }
}

/// One student's results on an exam: item scores in the exam's item order (0 when missing).
public struct StudentResult: Sendable {
  public var externalID: String
  public var classCode: String
  public var schoolCode: String
  public var orgPath: String
  public var scores: [Double]
  /// The stored attendance: SAT (or 0) for a student who sat, ABSENT or EXEMPT.
  public var attendance: Int32 = AttendanceCode.sat
  /// EXEMPT's reason.
  public var reason: String = ""
  /// Columns (in item order) without a stored score, ascending; none for a marked student.
  public var missing: [Int] = []

  public var total: Double { scores.reduce(0, +) }

  /// Whether the student sat the paper (is in the figures).
  public var sat: Bool {
    attendance != AttendanceCode.absent && attendance != AttendanceCode.exempt
  }

  /// Sets `scores` from `packed`, a column without a score left 0 and listed in `missing`.
  mutating func fill(_ packed: UnsafeRawBufferPointer, column: [Int]) {
    scores = Array(repeating: -1, count: scores.count)
    PackedScores.unpack(packed, column: column, into: &scores)
    missing = []
    for c in scores.indices where scores[c] < 0 {
      scores[c] = 0
      if sat { missing.append(c) }
    }
  }
}

/// Where one student stands on an exam, from the stored totals of the exam's students (each
/// the SQL sum of the student's item scores, kept by the score batches).
public struct StudentStanding: Sendable {
  /// The student; when it did not sit (ABSENT, EXEMPT) the figures below are of those who did.
  public var result: StudentResult
  /// The student's stored total: the same sum as everyone else's, so equal totals compare equal.
  public var total: Double
  /// Every total on the exam of a student who sat, ascending (from the exam's tallies).
  public var totals: [Double]
  public var classSize: Int
  /// Students of the class with a higher total.
  public var classAbove: Int
  public var schoolSize: Int
  public var schoolAbove: Int
}

/// A student's item scores as stored in its row (`asm_students.scores`): (item int32, score
/// float64) pairs in item order, big-endian, 12 bytes a pair (PostgreSQL's `int4send(item) ||
/// float8send(score)`); and its chosen options (`asm_students.choices`): (item int32, length
/// int16, UTF-8 bytes) in item order, only the items with a choice. A student's scores live
/// there alone: one row a student instead of one a score (a score row, with its key and index
/// entry, was a third of an import's writing), and a report reads an exam's scores from its
/// student rows.
enum PackedScores {
  /// The bytes of one packed score.
  static let width = 12

  /// The (item, score) pairs of a packed column.
  static func pairs(_ data: Data) -> [(item: Int32, score: Double)] {
    data.withUnsafeBytes { raw in
      var pairs: [(item: Int32, score: Double)] = []
      pairs.reserveCapacity(raw.count / width)
      var offset = 0
      while offset + width <= raw.count {
        let item = Int32(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int32.self))
        let bits = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt64.self))
        pairs.append((item, Double(bitPattern: bits)))
        offset += width
      }
      return pairs
    }
  }

  /// Packs the non-empty `choices` (item, chosen option), which must be in item order.
  static func packChoices(_ choices: some Sequence<(item: Int32, choice: String)>) -> Data {
    var data = Data()
    for (item, choice) in choices where !choice.isEmpty {
      let bytes = Array(choice.utf8.prefix(Int(Int16.max)))
      withUnsafeBytes(of: item.bigEndian) { data.append(contentsOf: $0) }
      withUnsafeBytes(of: Int16(bytes.count).bigEndian) { data.append(contentsOf: $0) }
      data.append(contentsOf: bytes)
    }
    return data
  }

  /// The chosen options of a packed column, by item.
  static func choices(_ data: Data) -> [Int32: String] {
    data.withUnsafeBytes { raw in
      var choices: [Int32: String] = [:]
      var offset = 0
      while offset + 6 <= raw.count {
        let item = Int32(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int32.self))
        let length = Int(
          Int16(bigEndian: raw.loadUnaligned(fromByteOffset: offset + 4, as: Int16.self)))
        let end = min(offset + 6 + max(length, 0), raw.count)
        choices[item] = String(decoding: raw[(offset + 6)..<end], as: UTF8.self)
        offset = end
      }
      return choices
    }
  }

  /// A stored student's scores and choices with a batch's `scores` and `choices` written over
  /// them, as upserting each score row would leave them: an item the batch gives takes its
  /// score and choice ("" none), the others stay. Also the total (summed in item order, as
  /// for a new student) and how many items the batch added.
  static func merge(
    stored: SheetState, scores: [(item: Int32, score: Double)], choices: [Int32: String]
  ) -> (scores: Data, choices: Data, total: Double, added: Int) {
    var score: [Int32: Double] = [:]
    var choice: [Int32: String] = [:]
    for i in stored.items.indices {
      score[stored.items[i]] = stored.scores[i]
      choice[stored.items[i]] = stored.choices[i]
    }
    var added = 0
    for (item, value) in scores {
      if score.updateValue(value, forKey: item) == nil { added += 1 }
      choice[item] = choices[item] ?? ""
    }
    let items = score.keys.sorted()
    let pairs = items.map { (item: $0, score: score[$0]!) }
    return (
      pack(pairs), packChoices(items.map { (item: $0, choice: choice[$0] ?? "") }),
      pairs.reduce(0) { $0 + $1.score }, added
    )
  }

  /// Fills `sheet`'s items, scores and choices from a student row's packed columns.
  static func fill(_ sheet: inout SheetState, scores: Data, choices: Data) {
    let chosen = self.choices(choices)
    for (item, score) in pairs(scores) {
      sheet.items.append(item)
      sheet.scores.append(score)
      sheet.choices.append(chosen[item] ?? "")
    }
  }

  /// Packs `scores`, which must be in item order.
  static func pack(_ scores: some Collection<(item: Int32, score: Double)>) -> Data {
    var data = Data(count: scores.count * 12)
    data.withUnsafeMutableBytes { raw in
      var offset = 0
      for (item, score) in scores {
        raw.storeBytes(of: item.bigEndian, toByteOffset: offset, as: Int32.self)
        raw.storeBytes(of: score.bitPattern.bigEndian, toByteOffset: offset + 4, as: UInt64.self)
        offset += 12
      }
    }
    return data
  }

  /// Puts each packed score into `scores` at the column of its item (`column[item]`, -1 for
  /// an item the exam does not have).
  static func unpack(_ raw: UnsafeRawBufferPointer, column: [Int], into scores: inout [Double]) {
    var offset = 0
    while offset + 12 <= raw.count {
      let item = Int(Int32(bigEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int32.self)))
      let bits = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt64.self))
      if item >= 0, item < column.count, column[item] >= 0 {
        scores[column[item]] = Double(bitPattern: bits)
      }
      offset += 12
    }
  }

  /// The column of each item number of `exam`, as an array indexed by item number.
  static func columns(_ exam: ExamRecord) -> [Int] {
    let numbers = exam.itemNumbers
    var column = Array(repeating: -1, count: Int(numbers.max() ?? 0) + 1)
    for (c, n) in numbers.enumerated() { column[Int(n)] = c }
    return column
  }
}

/// One exported score, or (item 0) a student's ABSENT or EXEMPT mark.
public struct ExportedScore: Sendable {
  public var student: String
  public var classCode: String
  public var schoolCode: String
  public var item: Int32
  public var score: Double
  /// 0 for a score; ABSENT or EXEMPT for a mark.
  public var attendance: Int32 = 0
  public var reason: String = ""
  /// The chosen option ("" none).
  public var choice: String = ""
}

extension ExportedScore {
  /// Appends to `page`, up to `limit` rows, the export rows of one stored student that come
  /// after `after` (student, item): its mark as item 0 when it did not sit, then its scores
  /// in item order. A page that ended inside the student goes on with its next item.
  static func append(
    to page: inout [ExportedScore], limit: Int, after: (student: String, item: Int32),
    student: String, classCode: String, schoolCode: String, attendance: Int32, reason: String,
    scores: Data, choices: Data
  ) {
    let started = student == after.student
    if !started && attendance != AttendanceCode.sat && page.count < limit {
      page.append(
        ExportedScore(
          student: student, classCode: classCode, schoolCode: schoolCode, item: 0, score: 0,
          attendance: attendance, reason: reason))
    }
    let chosen = PackedScores.choices(choices)
    for (number, score) in PackedScores.pairs(scores) where !started || number > after.item {
      guard page.count < limit else { return }
      page.append(
        ExportedScore(
          student: student, classCode: classCode, schoolCode: schoolCode, item: number,
          score: score, choice: chosen[number] ?? ""))
    }
  }
}

/// A quality entry with the path of its school.
public struct QualityRecord: Sendable {
  public var id: String
  public var entry: Smartschool_Assessment_V1_QualityEntry
  public var orgPath: String

  public var naturalKey: String {
    "\(entry.studentExternalID)/\(entry.schoolYear)/\(entry.term)/\(entry.dimension.rawValue)/"
      + entry.title
  }
}

extension AssessmentStoring {
  /// Stages and writes a score batch.
  public func writeScores(_ rows: [PendingScore]) async throws -> ScoreBatchResult {
    try await writeScores(try await stageScores(rows))
  }
}

/// Every SQL statement of the assessment service, behind a protocol so that another store
/// (e.g. PostgreSQL) can stand beside the SQLite one.
public protocol AssessmentStoring: Sendable {
  /// The store as the Runtime sees it (feed head, org directory, metrics), whichever backend.
  var storage: any ServiceStorage { get }
  func createExam(_ record: ExamRecord, time: Double) async throws
  /// The exam with this code; `counts` fills `score_count` and `frozen` (a scan of its scores).
  func exam(code: String, counts: Bool) async throws -> ExamRecord?
  func exams(after code: String?, orgCode: String?, limit: Int) async throws -> [ExamRecord]
  /// The exams of a joint exam session, by subject then code.
  func exams(session: String) async throws -> [ExamRecord]
  func replaceItems(
    code: String, items: [Smartschool_Assessment_V1_ExamItem], fullMarks: Double, time: Double
  ) async throws -> ExamRecord
  /// Reads the exams `rows` name and groups the rows by student, outside any write: the
  /// write of ``writeScores(_:)`` then only checks the exams.
  func stageScores(_ rows: [PendingScore]) async throws -> StagedScores
  /// Writes a staged score batch in one transaction.
  func writeScores(_ staged: StagedScores) async throws -> ScoreBatchResult
  /// Score batches of one stream this store writes at once when they share no student: 2 on
  /// PostgreSQL (each on a connection of its own, where one batch's statements left a core
  /// idle about a third of the import), 1 on SQLite (its one writer runs them in turn anyway).
  var scoreWritesInFlight: Int { get }
  func results(exam: ExamRecord, scopePath: String?) async throws -> [StudentResult]
  /// The students of the exam who sat without a stored score for every item.
  func incompleteStudents(exam: ExamRecord) async throws -> [StudentResult]
  /// The student's results and standing; nil when the student has no scores on the exam.
  func standing(exam: ExamRecord, student: String) async throws -> StudentStanding?
  /// The tallies of `scopePath` (nil: the exam's org) and every path under it, with what a
  /// statistics report reads beside them (``ScopeTallies``), in one read.
  func scopeTallies(exam: ExamRecord, scopePath: String?) async throws -> ScopeTallies
  func exportScores(exam: ExamRecord, after: (String, Int32)?, limit: Int) async throws
    -> [ExportedScore]
  /// The chosen options recorded on the exam (under `scopePath` when given), by student then
  /// item number.
  func choices(exam: ExamRecord, scopePath: String?) async throws -> [String: [Int32: String]]
  func upsertQuality(_ records: [QualityRecord], time: Double) async throws -> [Bool]
  func qualityEntries(student: String, schoolYear: String, term: Int32) async throws
    -> [QualityRecord]
  func changes(after: Int64, limit: Int, scopes: [OrgPath]) async throws
    -> (changes: [Smartschool_Common_V1_Change], hasMore: Bool)
}

/// The SQLite store of the assessment service (`assessment.sqlite`).
public final class SQLiteAssessmentStore: AssessmentStoring {
  let store: Store
  /// The SQLite store.
  public var storage: any ServiceStorage { store }

  /// Opens (and migrates) `<directory>/assessment.sqlite`.
  public init(directory: String) throws {
    store = try Store(directory: directory, name: "assessment") {
      AssessmentMigrations.register(&$0)
    }
  }

  public func createExam(_ record: ExamRecord, time: Double) async throws {
    try await store.write { db in
      let e = record.exam
      try db.execute(
        sql: """
          INSERT INTO asm_exams (id, code, name, school_year, term, subject, stage, grade,
            org_code, org_path, full_marks, pass_fraction, excellent_fraction, low_fraction,
            create_time, update_time, missing_items, good_fraction, cut_lines, session_code)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
          """,
        arguments: [
          record.id, e.code, e.name, e.schoolYear, e.term, e.subject.rawValue, e.stage.rawValue,
          e.grade, e.orgCode, record.orgPath, e.fullMarks, e.passFraction, e.excellentFraction,
          e.lowFraction, time, time, e.missingItems.rawValue, e.goodFraction,
          try e.cutLines.serializedBytes() as Data, e.sessionCode,
        ])
      let number = db.lastInsertedRowID
      try Self.insertItems(db, exam: number, items: e.items)
      try ChangeFeed.record(
        db, entity: "exam", id: record.id, naturalKey: e.code, op: .upsert,
        orgPath: record.orgPath, payload: e)
    }
  }

  private static func insertItems(
    _ db: Database, exam: Int64, items: [Smartschool_Assessment_V1_ExamItem]
  ) throws {
    for item in items {
      try db.execute(
        sql: """
          INSERT INTO asm_items (exam, number, max_score, objective, knowledge_points, options,
            answer_key)
          VALUES (?, ?, ?, ?, ?, ?, ?)
          """,
        arguments: [
          exam, item.number, item.maxScore, item.objective,
          item.knowledgePoints.joined(separator: ","), item.options.joined(separator: ","),
          item.answerKey,
        ])
    }
  }

  private static let examColumns = """
    number, id, code, name, school_year, term, subject, stage, grade, org_code, org_path,
    full_marks, pass_fraction, excellent_fraction, low_fraction, missing_items, good_fraction,
    cut_lines, session_code
    """

  private static func decodeExam(_ db: Database, _ row: Row, counts: Bool) throws -> ExamRecord {
    let number: Int64 = row["number"]
    var exam = Smartschool_Assessment_V1_Exam()
    exam.code = row["code"]
    exam.name = row["name"]
    exam.schoolYear = row["school_year"]
    exam.term = row["term"]
    exam.subject = Smartschool_Common_V1_Subject(rawValue: row["subject"]) ?? .unspecified
    exam.stage = Smartschool_Common_V1_Stage(rawValue: row["stage"]) ?? .unspecified
    exam.grade = row["grade"]
    exam.orgCode = row["org_code"]
    exam.fullMarks = row["full_marks"]
    exam.passFraction = row["pass_fraction"]
    exam.excellentFraction = row["excellent_fraction"]
    exam.lowFraction = row["low_fraction"]
    exam.missingItems = .init(rawValue: row["missing_items"]) ?? .report
    exam.goodFraction = row["good_fraction"]
    exam.cutLines = try .init(serializedBytes: row["cut_lines"] as Data)
    exam.sessionCode = row["session_code"]
    exam.items = try db.cachedStatement(
      sql: """
        SELECT number, max_score, objective, knowledge_points, options, answer_key
        FROM asm_items WHERE exam = ? ORDER BY number
        """
    ).decodeAll(arguments: [number]) { r in
      Smartschool_Assessment_V1_ExamItem.with {
        $0.number = r["number"]
        $0.maxScore = r["max_score"]
        $0.objective = r["objective"]
        $0.knowledgePoints = ExamRecord.list(r["knowledge_points"])
        $0.options = ExamRecord.list(r["options"])
        $0.answerKey = r["answer_key"]
      }
    }
    if counts {
      exam.scoreCount =
        try Int64.fetchOne(
          db.cachedStatement(
            sql: """
              SELECT COALESCE(SUM(length(scores)), 0) / \(PackedScores.width) FROM asm_students
              WHERE exam = ?
              """), arguments: [number]) ?? 0
      exam.frozen = exam.scoreCount > 0
    }
    return ExamRecord(number: number, id: row["id"], exam: exam, orgPath: row["org_path"])
  }

  public func exam(code: String, counts: Bool) async throws -> ExamRecord? {
    try await store.read { db in
      guard
        let row = try Row.fetchOne(
          db.cachedStatement(sql: "SELECT \(Self.examColumns) FROM asm_exams WHERE code = ?"),
          arguments: [code])
      else { return nil }
      return try Self.decodeExam(db, row, counts: counts)
    }
  }

  public func exams(after code: String?, orgCode: String?, limit: Int) async throws
    -> [ExamRecord]
  {
    try await store.read { db in
      var sql = "SELECT \(Self.examColumns) FROM asm_exams WHERE code > ?"
      var args: [any DatabaseValueConvertible] = [code ?? ""]
      if let orgCode {
        sql += " AND org_code = ?"
        args.append(orgCode)
      }
      sql += " ORDER BY code LIMIT ?"
      args.append(limit)
      return try db.cachedStatement(sql: sql).decodeAll(arguments: StatementArguments(args)) {
        try Self.decodeExam(db, $0, counts: true)
      }
    }
  }

  public func exams(session: String) async throws -> [ExamRecord] {
    try await store.read { db in
      try db.cachedStatement(
        sql: """
          SELECT \(Self.examColumns) FROM asm_exams WHERE session_code = ?
          ORDER BY subject, code
          """
      ).decodeAll(arguments: [session]) { try Self.decodeExam(db, $0, counts: false) }
    }
  }

  public func replaceItems(
    code: String, items: [Smartschool_Assessment_V1_ExamItem], fullMarks: Double, time: Double
  ) async throws -> ExamRecord {
    try await store.write { db in
      guard
        let row = try Row.fetchOne(
          db.cachedStatement(sql: "SELECT \(Self.examColumns) FROM asm_exams WHERE code = ?"),
          arguments: [code])
      else { throw ServiceError.notFound("no exam has code \(code)") }
      let number: Int64 = row["number"]
      // Checked inside the write transaction so that no import can slip scores in between.
      let scored = try Bool.fetchOne(
        db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM asm_students WHERE exam = ?)"),
        arguments: [number])
      if scored == true {
        throw ServiceError.failedPrecondition(
          "exam \(code) has scores: its items are frozen")
      }
      try db.execute(sql: "DELETE FROM asm_items WHERE exam = ?", arguments: [number])
      try Self.insertItems(db, exam: number, items: items)
      try db.execute(
        sql: "UPDATE asm_exams SET full_marks = ?, update_time = ? WHERE number = ?",
        arguments: [fullMarks, time, number])
      let updated = try Self.decodeExam(
        db,
        try Row.fetchOne(
          db.cachedStatement(sql: "SELECT \(Self.examColumns) FROM asm_exams WHERE number = ?"),
          arguments: [number])!, counts: true)
      try ChangeFeed.record(
        db, entity: "exam", id: updated.id, naturalKey: code, op: .upsert,
        orgPath: updated.orgPath, payload: updated.exam)
      return updated
    }
  }

  /// The exams (with their items) of `codes` that exist.
  private static func scoreTargets(_ db: Database, codes: Set<String>) throws
    -> [String: ScoreTarget]
  {
    var targets: [String: ScoreTarget] = [:]
    for code in codes {
      guard
        let row = try Row.fetchOne(
          db.cachedStatement(sql: "SELECT number, org_path FROM asm_exams WHERE code = ?"),
          arguments: [code])
      else { continue }
      let number: Int64 = row["number"]
      var target = ScoreTarget(number: number, orgPath: row["org_path"])
      for r in try Row.fetchAll(
        db.cachedStatement(sql: "SELECT number, max_score, options FROM asm_items WHERE exam = ?"),
        arguments: [number])
      {
        target.maxScores[r["number"]] = r["max_score"]
        target.options[r["number"]] = ExamRecord.list(r["options"])
      }
      targets[code] = target
    }
    return targets
  }

  public var scoreWritesInFlight: Int { 1 }

  public func stageScores(_ rows: [PendingScore]) async throws -> StagedScores {
    let codes = StagedScores.codes(rows)
    let targets = try await store.read { db in try Self.scoreTargets(db, codes: codes) }
    return StagedScores(rows, codes: codes, targets: targets)
  }

  public func writeScores(_ staged: StagedScores) async throws -> ScoreBatchResult {
    try await store.write { db in
      // Items are read again inside the write transaction, so they cannot change under the
      // batch.
      let targets = try Self.scoreTargets(db, codes: staged.codes)
      let batch = staged.grouped(against: targets)
      var result = ScoreBatchResult()
      result.rejections = batch.rejections
      let find = try db.cachedStatement(
        sql: """
          SELECT sid, attendance, length(scores) > 0, total FROM asm_students
          WHERE exam = ? AND student = ?
          """)
      // A student not yet written has no scores but this batch's: it goes in with its total,
      // packed scores and choices.
      let insertStudent = try db.cachedStatement(
        sql: """
          INSERT INTO asm_students (exam, student, class_code, school_code, org_path, total,
            scores, choices, attendance, reason)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
          ON CONFLICT (exam, student) DO NOTHING
          """)
      let moveStudent = try db.cachedStatement(
        sql: "UPDATE asm_students SET class_code = ?, school_code = ?, org_path = ? WHERE sid = ?")
      let markStudent = try db.cachedStatement(
        sql: "UPDATE asm_students SET attendance = ?, reason = ? WHERE sid = ?")
      let keep = try db.cachedStatement(
        sql: "UPDATE asm_students SET scores = ?, choices = ?, total = ? WHERE sid = ?")
      var created = 0
      var refused = 0
      // The feed's sheets: of the students that existed, before and (below) after the batch.
      var sheets:
        [(s: StudentScores, sid: Int64, old: SheetState?, new: SheetState?, oldTotal: Double)] =
          []
      for s in batch.students {
        guard let row = s.lastAccepted else { continue }
        // A student the batch would create is inserted at once; only when it is stored already
        // (the insert does nothing) is it read, and decided on as stored. A first import reads
        // nothing.
        let fresh = s.decide(stored: nil)
        if fresh.writes {
          let mark = fresh.attendance ?? (AttendanceCode.sat, "")
          try insertStudent.execute(
            arguments: [
              s.exam, s.student, row.classCode, row.schoolCode, row.classPath, s.total,
              PackedScores.pack(s.scores),
              PackedScores.packChoices(s.scores.map { ($0.item, s.choices[$0.item] ?? "") }),
              mark.code, mark.reason,
            ])
          if db.changesCount > 0 {
            result.rejections += fresh.rejections
            refused += fresh.rejections.count
            sheets.append((s, db.lastInsertedRowID, nil, s.createdSheet(mark: mark), 0))
            // A new student's mark creates it; its scores are new rows.
            created += s.scores.isEmpty ? 1 : s.scores.count
            continue
          }
        }
        let stored = try Row.fetchOne(find, arguments: [s.exam, s.student])
        let decision = stored.map { s.decide(stored: (attendance: $0[1], hasScores: $0[2])) }
          ?? fresh
        result.rejections += decision.rejections
        refused += decision.rejections.count
        guard decision.writes, let stored else { continue }
        let sid: Int64 = stored[0]
        let old = try Self.sheet(db, sid: sid)
        sheets.append((s, sid, old, nil, stored[3]))
        try moveStudent.execute(arguments: [row.classCode, row.schoolCode, row.classPath, sid])
        if let mark = decision.attendance {
          try markStudent.execute(arguments: [mark.code, mark.reason, sid])
        }
        guard decision.writesScores, let old else { continue }
        let merged = PackedScores.merge(stored: old, scores: s.scores, choices: s.choices)
        try keep.execute(arguments: [merged.scores, merged.choices, merged.total, sid])
        created += merged.added
      }
      // Each changed student's old state leaves the exam's tallies and its new state enters.
      var tallies: [Int64: TallyChanges] = [:]
      let itemNumbers = targets.mapValues { $0.itemNumbers }
      let totalOf = try db.cachedStatement(sql: "SELECT total FROM asm_students WHERE sid = ?")
      // Recorded together at the end: a batch's sheets go on the feed in blocks.
      var events: [ChangeEvent] = []
      events.reserveCapacity(sheets.count)
      for (s, sid, old, new, oldTotal) in sheets {
        let code = s.lastAccepted!.examCode
        let after = old == nil ? new : try Self.sheet(db, sid: sid)
        let target = targets[code]!
        let items = itemNumbers[code]!
        // Changed in place: a copy taken out of the dictionary and put back copied every
        // delta of the batch once per student.
        if let old {
          tallies[s.exam, default: TallyChanges(examPath: target.orgPath)].add(
            TallyState(sheet: old, total: oldTotal, items: items), sign: -1)
        }
        if let after {
          let total = old == nil ? s.total : try Double.fetchOne(totalOf, arguments: [sid]) ?? 0
          tallies[s.exam, default: TallyChanges(examPath: target.orgPath)].add(
            TallyState(sheet: after, total: total, items: items), sign: 1)
        }
        let key = SheetState.key(exam: code, student: s.student)
        for event in SheetState.events(exam: code, student: s.student, old: old, new: after) {
          events.append(
            try ChangeEvent(
              entity: "score_sheet", id: key, naturalKey: key, op: event.op,
              orgPath: event.orgPath, payload: event.payload))
        }
      }
      try ChangeFeed.record(db, events: events)
      for (exam, changes) in tallies.sorted(by: { $0.key < $1.key }) {
        try Self.writeTallies(db, exam: exam, changes)
      }
      result.rejections.sort { $0.index < $1.index }
      result.created = created
      result.updated = batch.accepted - refused - created
      return result
    }
  }

  /// Applies `changes` to the tallies of exam `exam` (row by row: the single writer makes the
  /// read and the write one step).
  static func writeTallies(_ db: Database, exam: Int64, _ changes: TallyChanges) throws {
    let read = try db.cachedStatement(
      sql: """
        SELECT count, sums, squares FROM asm_tallies
        WHERE exam = ? AND path = ? AND kind = ? AND total = ?
        """)
    let insert = try db.cachedStatement(
      sql: """
        INSERT INTO asm_tallies (exam, path, kind, total, count, sums, squares)
        VALUES (?, ?, ?, ?, ?, ?, ?)
        """)
    let update = try db.cachedStatement(
      sql: """
        UPDATE asm_tallies SET count = ?, sums = ?, squares = ?
        WHERE exam = ? AND path = ? AND kind = ? AND total = ?
        """)
    let delete = try db.cachedStatement(
      sql: "DELETE FROM asm_tallies WHERE exam = ? AND path = ? AND kind = ? AND total = ?")
    // A count that only grows is one statement.
    let add = try db.cachedStatement(
      sql: """
        INSERT INTO asm_tallies (exam, path, kind, total, count, sums, squares)
        VALUES (?, ?, ?, ?, ?, x'', x'')
        ON CONFLICT (exam, path, kind, total) DO UPDATE SET count = count + excluded.count
        """)
    for (key, delta) in changes.ordered {
      let keyArguments: StatementArguments = [exam, key.path, key.kind, key.total]
      if delta.sums.isEmpty && delta.count > 0 {
        try add.execute(arguments: keyArguments + [delta.count])
        continue
      }
      let stored = try Row.fetchOne(read, arguments: keyArguments).map {
        TallyRow(
          path: key.path, kind: key.kind, total: key.total, count: $0[0],
          sums: PackedDoubles.unpack($0[1]), squares: PackedDoubles.unpack($0[2]))
      }
      guard let row = TallyChanges.apply(delta, to: stored, key: key) else {
        if stored != nil { try delete.execute(arguments: keyArguments) }
        continue
      }
      let values: StatementArguments = [
        row.count, PackedDoubles.pack(row.sums), PackedDoubles.pack(row.squares),
      ]
      if stored == nil {
        try insert.execute(arguments: [exam, key.path, key.kind, key.total] + values)
      } else {
        try update.execute(arguments: values + keyArguments)
      }
    }
  }

  /// Makes every exam's tallies again from its student rows (the migration that adds them).
  static func rebuildTallies(_ db: Database) throws {
    try db.execute(sql: "DELETE FROM asm_tallies")
    for exam in try Row.fetchAll(db, sql: "SELECT number, org_path FROM asm_exams") {
      let number: Int64 = exam[0]
      let items = try Int32.fetchAll(
        db, sql: "SELECT number FROM asm_items WHERE exam = ? ORDER BY number",
        arguments: [number])
      var column = Array(repeating: -1, count: Int(items.max() ?? 0) + 1)
      for (c, n) in items.enumerated() { column[Int(n)] = c }
      var changes = TallyChanges(examPath: exam[1])
      let students = try Row.fetchCursor(
        db, sql: "SELECT org_path, attendance, total, scores FROM asm_students WHERE exam = ?",
        arguments: [number])
      while let row = try students.next() {
        var result = StudentResult(
          externalID: "", classCode: "", schoolCode: "", orgPath: row[0],
          scores: Array(repeating: 0, count: items.count), attendance: row[1])
        try row.withUnsafeData(atIndex: 3) { data in
          (data ?? Data()).withUnsafeBytes { result.fill($0, column: column) }
        }
        changes.add(
          TallyState(
            orgPath: result.orgPath, attendance: result.attendance, total: row[2],
            scores: result.scores, incomplete: !result.missing.isEmpty), sign: 1)
      }
      try writeTallies(db, exam: number, changes)
    }
  }

  /// The stored sheet of student row `sid`.
  private static func sheet(_ db: Database, sid: Int64) throws -> SheetState? {
    guard
      let row = try Row.fetchOne(
        db.cachedStatement(
          sql: """
            SELECT class_code, school_code, org_path, attendance, reason, scores, choices
            FROM asm_students WHERE sid = ?
            """), arguments: [sid])
    else { return nil }
    var sheet = SheetState(
      classCode: row[0], schoolCode: row[1], orgPath: row[2], attendance: row[3], reason: row[4])
    PackedScores.fill(&sheet, scores: row[5], choices: row[6])
    return sheet
  }

  public func results(exam: ExamRecord, scopePath: String?) async throws -> [StudentResult] {
    let column = PackedScores.columns(exam)
    let width = exam.itemNumbers.count
    return try await store.scan { db in
      var filter = ""
      var args: [any DatabaseValueConvertible] = [exam.number]
      if let scopePath {
        filter = " AND substr(org_path, 1, ?) = ?"
        args += [scopePath.count, scopePath]
      }
      var students: [StudentResult] = []
      // Each student's scores come packed in its row: one row per student, none per score.
      let rows = try Row.fetchCursor(
        db.cachedStatement(
          sql: """
            SELECT student, class_code, school_code, org_path, scores, attendance, reason
            FROM asm_students WHERE exam = ?\(filter) ORDER BY sid
            """), arguments: StatementArguments(args))
      while let row = try rows.next() {
        var student = StudentResult(
          externalID: row[0], classCode: row[1], schoolCode: row[2], orgPath: row[3],
          scores: Array(repeating: 0, count: width), attendance: row[5], reason: row[6])
        try row.withUnsafeData(atIndex: 4) { data in
          (data ?? Data()).withUnsafeBytes { student.fill($0, column: column) }
        }
        students.append(student)
      }
      return students
    }
  }

  public func incompleteStudents(exam: ExamRecord) async throws -> [StudentResult] {
    try await store.read { db in try Self.incomplete(db, exam: exam) }
  }

  /// The students of the exam who sat without a stored score for every item.
  private static func incomplete(_ db: Database, exam: ExamRecord) throws -> [StudentResult] {
    let column = PackedScores.columns(exam)
    let width = exam.itemNumbers.count
    return try db.cachedStatement(
      sql: """
        SELECT student, class_code, school_code, org_path, scores FROM asm_students
        WHERE exam = ? AND attendance = ? AND length(scores) < ? ORDER BY sid
        """
    ).decodeAll(arguments: [exam.number, AttendanceCode.sat, 12 * width]) { row in
      var student = StudentResult(
        externalID: row[0], classCode: row[1], schoolCode: row[2], orgPath: row[3],
        scores: Array(repeating: 0, count: width))
      try row.withUnsafeData(atIndex: 4) { data in
        (data ?? Data()).withUnsafeBytes { student.fill($0, column: column) }
      }
      return student
    }
  }

  public func standing(exam: ExamRecord, student: String) async throws -> StudentStanding? {
    let column = PackedScores.columns(exam)
    return try await store.read { db in
      guard
        let row = try Row.fetchOne(
          db.cachedStatement(
            sql: """
              SELECT sid, class_code, school_code, org_path, total, attendance, reason, scores
              FROM asm_students WHERE exam = ? AND student = ?
              """), arguments: [exam.number, student])
      else { return nil }
      var result = StudentResult(
        externalID: student, classCode: row[1], schoolCode: row[2], orgPath: row[3],
        scores: Array(repeating: 0, count: exam.itemNumbers.count), attendance: row[5],
        reason: row[6])
      let total: Double = row[4]
      try row.withUnsafeData(atIndex: 7) { data in
        (data ?? Data()).withUnsafeBytes { result.fill($0, column: column) }
      }
      // Class and school: a counted range of their (exam, code, attendance, total) index.
      func count(_ column: String, _ code: String) throws -> (size: Int, above: Int) {
        let r = try Row.fetchOne(
          db.cachedStatement(
            sql: """
              SELECT COUNT(*), COUNT(*) FILTER (WHERE total > ?) FROM asm_students
              WHERE exam = ? AND \(column) = ? AND attendance = ?
              """), arguments: [total, exam.number, code, AttendanceCode.sat])
        return (r?[0] ?? 0, r?[1] ?? 0)
      }
      let inClass = try count("class_code", result.classCode)
      let inSchool = try count("school_code", result.schoolCode)
      // The exam: its tallies, one row per distinct total.
      var totals: [Double] = []
      let levels = try Row.fetchCursor(
        db.cachedStatement(
          sql: """
            SELECT total, count FROM asm_tallies WHERE exam = ? AND path = ? AND kind = ?
            ORDER BY total
            """), arguments: [exam.number, exam.orgPath, TallyKind.sat])
      while let level = try levels.next() {
        totals.append(contentsOf: repeatElement(level[0] as Double, count: level[1]))
      }
      return StudentStanding(
        result: result, total: total, totals: totals, classSize: inClass.size,
        classAbove: inClass.above, schoolSize: inSchool.size, schoolAbove: inSchool.above)
    }
  }

  public func scopeTallies(exam: ExamRecord, scopePath: String?) async throws -> ScopeTallies {
    let path = scopePath ?? exam.orgPath
    let column = PackedScores.columns(exam)
    let width = exam.itemNumbers.count
    return try await store.read { db in
      var tallies = ScopeTallies()
      // Every path under the scope's (which ends in "/") sorts before it with "0" for "/".
      let rows = try Row.fetchCursor(
        db.cachedStatement(
          sql: """
            SELECT path, kind, total, count, sums, squares FROM asm_tallies
            WHERE exam = ? AND path >= ? AND path < ? ORDER BY path, kind, total
            """), arguments: [exam.number, path, String(path.dropLast()) + "0"])
      while let row = try rows.next() {
        tallies.rows.append(
          TallyRow(
            path: row[0], kind: row[1], total: row[2], count: row[3],
            sums: PackedDoubles.unpack(row[4]), squares: PackedDoubles.unpack(row[5])))
      }
      let scope = ScopeTally.of(tallies.rows, path: path)
      if path == exam.orgPath {
        let levels = tallies.rows.filter { $0.path == path && $0.kind == TallyKind.sat }
        for total in ScopeTallies.boundaryTotals(levels) {
          var students: [(String, [Double])] = []
          let found = try Row.fetchCursor(
            db.cachedStatement(
              sql: """
                SELECT student, scores FROM asm_students
                WHERE exam = ? AND attendance = ? AND total = ?
                """), arguments: [exam.number, AttendanceCode.sat, total])
          while let row = try found.next() {
            var student = StudentResult(
              externalID: row[0], classCode: "", schoolCode: "", orgPath: "",
              scores: Array(repeating: 0, count: width))
            try row.withUnsafeData(atIndex: 1) { data in
              (data ?? Data()).withUnsafeBytes { student.fill($0, column: column) }
            }
            students.append((student.externalID, student.scores))
          }
          tallies.boundary[total] = students.sorted { $0.0 < $1.0 }.map(\.1)
        }
      }
      if scope.absent + scope.exempt > 0 {
        tallies.marked = try db.cachedStatement(
          sql: """
            SELECT student, class_code, school_code, org_path, attendance, reason
            FROM asm_students WHERE exam = ? AND attendance <> 1 ORDER BY sid
            """
        ).decodeAll(arguments: [exam.number]) {
          StudentResult(
            externalID: $0[0], classCode: $0[1], schoolCode: $0[2], orgPath: $0[3],
            scores: Array(repeating: 0, count: width), attendance: $0[4], reason: $0[5])
        }.filter { $0.orgPath.hasPrefix(path) }
      }
      if scope.incomplete > 0 {
        tallies.incomplete = try Self.incomplete(db, exam: exam).filter {
          $0.orgPath.hasPrefix(path)
        }
      }
      return tallies
    }
  }

  public func exportScores(exam: ExamRecord, after: (String, Int32)?, limit: Int) async throws
    -> [ExportedScore]
  {
    try await store.read { db in
      let (student, item) = after ?? ("", 0)
      // A page starts in the student the last one ended in.
      let rows = try Row.fetchCursor(
        db.cachedStatement(
          sql: """
            SELECT student, class_code, school_code, attendance, reason, scores, choices
            FROM asm_students WHERE exam = ? AND student >= ? ORDER BY student
            """), arguments: [exam.number, student])
      var scores: [ExportedScore] = []
      while scores.count < limit, let row = try rows.next() {
        ExportedScore.append(
          to: &scores, limit: limit, after: (student, item), student: row[0], classCode: row[1],
          schoolCode: row[2], attendance: row[3], reason: row[4], scores: row[5],
          choices: row[6])
      }
      return scores
    }
  }

  public func choices(exam: ExamRecord, scopePath: String?) async throws
    -> [String: [Int32: String]]
  {
    try await store.read { db in
      var filter = ""
      var args: [any DatabaseValueConvertible] = [exam.number]
      if let scopePath {
        filter = " AND substr(org_path, 1, ?) = ?"
        args += [scopePath.count, scopePath]
      }
      var choices: [String: [Int32: String]] = [:]
      let rows = try Row.fetchCursor(
        db.cachedStatement(
          sql: """
            SELECT student, choices FROM asm_students
            WHERE exam = ? AND length(choices) > 0\(filter)
            """), arguments: StatementArguments(args))
      while let row = try rows.next() {
        choices[row[0]] = PackedScores.choices(row[1])
      }
      return choices
    }
  }

  public func upsertQuality(_ records: [QualityRecord], time: Double) async throws -> [Bool] {
    try await store.write { db in
      var created: [Bool] = []
      for record in records {
        let e = record.entry
        let existing = try String.fetchOne(
          db.cachedStatement(
            sql: """
              SELECT id FROM asm_quality
              WHERE student = ? AND school_year = ? AND term = ? AND dimension = ? AND title = ?
              """),
          arguments: [e.studentExternalID, e.schoolYear, e.term, e.dimension.rawValue, e.title])
        let id = existing ?? record.id
        try db.execute(
          sql: """
            INSERT INTO asm_quality (id, student, school_code, org_path, school_year, term,
              dimension, title, description, evidence_ref, grade, update_time)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET school_code = excluded.school_code,
              org_path = excluded.org_path, description = excluded.description,
              evidence_ref = excluded.evidence_ref, grade = excluded.grade,
              update_time = excluded.update_time
            """,
          arguments: [
            id, e.studentExternalID, e.schoolCode, record.orgPath, e.schoolYear, e.term,
            e.dimension.rawValue, e.title, e.description_p, e.evidenceRef, e.grade.rawValue, time,
          ])
        try ChangeFeed.record(
          db, entity: "quality_entry", id: id, naturalKey: record.naturalKey, op: .upsert,
          orgPath: record.orgPath, payload: e)
        created.append(existing == nil)
      }
      return created
    }
  }

  public func qualityEntries(student: String, schoolYear: String, term: Int32) async throws
    -> [QualityRecord]
  {
    try await store.read { db in
      try db.cachedStatement(
        sql: """
          SELECT id, student, school_code, org_path, school_year, term, dimension, title,
            description, evidence_ref, grade
          FROM asm_quality WHERE student = ? AND school_year = ? AND term = ?
          ORDER BY dimension, title
          """
      ).decodeAll(arguments: [student, schoolYear, term]) { row in
        QualityRecord(
          id: row["id"],
          entry: .with {
            $0.studentExternalID = row["student"]
            $0.schoolCode = row["school_code"]
            $0.schoolYear = row["school_year"]
            $0.term = row["term"]
            $0.dimension =
              Smartschool_Assessment_V1_QualityDimension(rawValue: row["dimension"])
              ?? .unspecified
            $0.title = row["title"]
            $0.description_p = row["description"]
            $0.evidenceRef = row["evidence_ref"]
            $0.grade =
              Smartschool_Assessment_V1_QualityGrade(rawValue: row["grade"]) ?? .unspecified
          }, orgPath: row["org_path"])
      }
    }
  }

  public func changes(after: Int64, limit: Int, scopes: [OrgPath]) async throws
    -> (changes: [Smartschool_Common_V1_Change], hasMore: Bool)
  {
    try await store.read { db in
      try ChangeFeed.list(db, after: after, limit: limit, scopes: scopes)
    }
  }
}
