import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf

typealias Exam = Smartschool_Assessment_V1_Exam
typealias ExamItem = Smartschool_Assessment_V1_ExamItem
typealias Org = Smartschool_Identity_V1_Org

/// The assessment service's RPC handlers: decode, authorize, validate, compute, respond.
public struct AssessmentAPI: Sendable {
  let store: any AssessmentStoring
  let directory: OrgDirectory
  let now: @Sendable () -> Date
  /// Exams by code as reports read them (no score count), kept until a write to `asm_exams`:
  /// every report reads its exam first, and on PostgreSQL that read was a round trip of its
  /// own. Items change only together with their exam's row (a creation inserts it, a
  /// replacement updates its full marks in the same transaction), so that table's version
  /// covers them; SQLite cannot watch `asm_items` itself (WITHOUT ROWID).
  let exams: StoreCache<String, ExamRecord>

  /// Handlers over `store`, resolving orgs, students and guardians through `directory`;
  /// `examVersion` moves on every write to `asm_exams` (``ServiceStorage/watch(_:)``).
  public init(
    store: any AssessmentStoring, directory: OrgDirectory, examVersion: TableVersion,
    now: @escaping @Sendable () -> Date = { Date() }
  ) {
    self.store = store
    self.directory = directory
    self.exams = StoreCache(version: examVersion, capacity: 1024)
    self.now = now
  }

  /// Rows per import transaction; the stream is never held in memory as a whole. Large enough
  /// that a batch's fixed costs (the tally rows it rewrites, the pages its commit writes, the
  /// hand-offs between reading and committing) are spread thin: 10,000 rows imported a county
  /// exam in about two thirds of the time 2,000 took, and 20,000 at 1.1-1.3 times the rate of
  /// 10,000 (the exam's own tally rows are rewritten once a batch); the service then peaks at
  /// about 90 MB during the import.
  public static let importBatch = 20_000
  /// Rows per store read while exporting.
  static let exportPage = 2000
  /// The most items an exam may have.
  static let maxItems = 200

  // MARK: helpers

  func org(code: String, field: String) throws(ServiceError) -> Org {
    var v = Validator()
    v.code(code, field)
    try v.throwIfInvalid()
    guard let org = directory.org(code: code), org.active else {
      throw .notFound("no org has code \(code)")
    }
    return org
  }

  static func path(_ text: String) throws(ServiceError) -> OrgPath {
    guard let p = OrgPath(text) else { throw .internalError("malformed org path \(text)") }
    return p
  }

  func exam(code: String, field: String, counts: Bool = false) async throws -> ExamRecord {
    var v = Validator()
    v.code(code, field)
    try v.throwIfInvalid()
    let found =
      try await counts
      ? store.exam(code: code, counts: true)
      : exams.value(for: code) { try await store.exam(code: code, counts: false) }
    guard let record = found else {
      throw ServiceError.notFound("no exam has code \(code)")
    }
    return record
  }

  /// Exams are visible to readers at, above or below the running org: a county's unified
  /// exam concerns every school of the county.
  static func mayRead(_ principal: Principal, examPath: OrgPath) -> Bool {
    principal.scopes(for: .examsRead).contains { $0.covers(examPath) || examPath.covers($0) }
  }

  /// True when the caller is the student, a guardian of the student, or holds `permission`
  /// at `path` (the student's org).
  func mayReadStudent(
    _ principal: Principal, student: String, path: OrgPath?, permission: Permission = .resultsRead
  ) async throws -> Bool {
    if let path, principal.allows(permission, at: path) { return true }
    if let me = try await directory.user(id: principal.userID), me.externalID == student,
      me.kind == .student
    {
      return true
    }
    if let child = try await directory.user(externalID: student),
      try await directory.children(ofParent: principal.userID).contains(child.id)
    {
      return true
    }
    return false
  }

  static func schoolYear(_ text: String, _ field: String, _ v: inout Validator) {
    let parts = text.split(separator: "-", omittingEmptySubsequences: false)
    guard parts.count == 2, parts.allSatisfy({ $0.count == 4 }), let a = Int(parts[0]),
      let b = Int(parts[1]), b == a + 1, (2000...2100).contains(a)
    else {
      v.add(field, "must be a school year written YYYY-YYYY, e.g. 2025-2026")
      return
    }
  }

  static func validateItems(_ items: [ExamItem], _ field: String, _ v: inout Validator) {
    v.check(items.count <= maxItems, field, "an exam has at most \(maxItems) items")
    var seen = Set<Int32>()
    for (i, item) in items.enumerated() {
      let f = "\(field)[\(i)]"
      if item.number < 1 {
        v.add(f + ".number", "must be at least 1")
      } else if !seen.insert(item.number).inserted {
        v.add(f + ".number", "duplicates item number \(item.number)")
      }
      v.check(
        item.maxScore.isFinite && item.maxScore > 0 && item.maxScore <= 1000, f + ".max_score",
        "must be greater than 0 and at most 1000")
      v.check(item.knowledgePoints.count <= 20, f + ".knowledge_points", "at most 20 codes")
      for (j, code) in item.knowledgePoints.enumerated() {
        v.code(code, f + ".knowledge_points[\(j)]")
      }
      validateOptions(item, f, &v)
    }
  }

  /// An item's options: objective only, 2–10 distinct labels of 1–8 letters or digits, and an
  /// answer key among them.
  static func validateOptions(_ item: ExamItem, _ field: String, _ v: inout Validator) {
    if item.options.isEmpty {
      v.check(item.answerKey.isEmpty, field + ".answer_key", "needs the item's options")
      return
    }
    v.check(item.objective, field + ".options", "only an objective item has options")
    v.check(
      (2...10).contains(item.options.count), field + ".options", "must list 2 to 10 options")
    var seen = Set<String>()
    for (j, label) in item.options.enumerated() {
      let f = field + ".options[\(j)]"
      if !isOptionLabel(label) {
        v.add(f, "must be 1-8 ASCII letters or digits")
      } else if !seen.insert(label).inserted {
        v.add(f, "duplicates option \(label)")
      }
    }
    v.check(
      item.answerKey.isEmpty || item.options.contains(item.answerKey), field + ".answer_key",
      "must be one of the item's options")
  }

  /// Whether `label` may name an option (and so a chosen option): 1–8 ASCII letters or digits.
  static func isOptionLabel(_ label: String) -> Bool {
    (1...8).contains(label.utf8.count)
      && label.utf8.allSatisfy { (48...57).contains($0) || (65...90).contains($0)
        || (97...122).contains($0) }
  }

  static func fullMarks(
    of items: [ExamItem], given: Double, _ field: String, _ v: inout Validator
  ) -> Double {
    guard !items.isEmpty else {
      v.check(
        given.isFinite && given > 0 && given <= 10_000, field,
        "must be greater than 0 when no items are given")
      return given
    }
    let sum = items.reduce(0) { $0 + $1.maxScore }
    if given != 0 && abs(given - sum) > 1e-6 {
      v.add(field, "must equal the sum of the items' max scores (\(sum)) or be 0")
    }
    return sum
  }

  /// The exam of a CreateExam request, validated and completed with defaults.
  func validatedExam(_ e: Exam) throws(ServiceError) -> (Exam, Org) {
    var v = Validator()
    v.code(e.code, "exam.code")
    v.text(e.name, "exam.name", maxLength: 200)
    Self.schoolYear(e.schoolYear, "exam.school_year", &v)
    v.check(e.term == 1 || e.term == 2, "exam.term", "must be 1 or 2")
    v.check(
      Smartschool_Common_V1_Subject.known.contains(e.subject), "exam.subject",
      "must name a subject")
    if !Smartschool_Common_V1_Stage.known.contains(e.stage) {
      v.add("exam.stage", "must name a stage")
    } else if !e.stage.grades.contains(Int(e.grade)) {
      v.add("exam.grade", "must be a grade of the stage (\(e.stage.grades))")
    }
    v.code(e.orgCode, "exam.org_code")
    if !e.sessionCode.isEmpty { v.code(e.sessionCode, "exam.session_code") }
    var exam = e
    exam.frozen = false
    exam.scoreCount = 0
    exam.items.sort { $0.number < $1.number }
    Self.validateItems(exam.items, "exam.items", &v)
    exam.fullMarks = Self.fullMarks(of: exam.items, given: e.fullMarks, "exam.full_marks", &v)
    if exam.passFraction == 0 { exam.passFraction = 0.60 }
    if exam.excellentFraction == 0 { exam.excellentFraction = 0.85 }
    if exam.lowFraction == 0 { exam.lowFraction = 0.40 }
    if exam.missingItems == .unspecified { exam.missingItems = .report }
    if exam.goodFraction == 0 {
      exam.goodFraction = Swift.min(Swift.max(0.70, exam.passFraction), exam.excellentFraction)
    }
    for (value, field) in [
      (exam.passFraction, "exam.pass_fraction"),
      (exam.excellentFraction, "exam.excellent_fraction"),
      (exam.lowFraction, "exam.low_fraction"), (exam.goodFraction, "exam.good_fraction"),
    ] {
      v.check(value > 0 && value <= 1, field, "must be a fraction in (0, 1]")
    }
    v.check(
      exam.lowFraction < exam.passFraction && exam.passFraction <= exam.excellentFraction,
      "exam.pass_fraction", "thresholds must satisfy low < pass <= excellent")
    v.check(
      exam.passFraction <= exam.goodFraction && exam.goodFraction <= exam.excellentFraction,
      "exam.good_fraction", "must lie between pass_fraction and excellent_fraction")
    Self.validateCutLines(exam, &v)
    try v.throwIfInvalid()
    let org = try org(code: e.orgCode, field: "exam.org_code")
    guard [.province, .city, .county, .school].contains(org.kind) else {
      throw .invalid("exam.org_code", "must name a province, city, county or school")
    }
    return (exam, org)
  }

  /// Checks the exam's cut lines: scores within full marks, shares within (0, 1), none for
  /// the low line, and the lines known without the scores in order.
  static func validateCutLines(_ exam: Exam, _ v: inout Validator) {
    let c = exam.cutLines
    let full = exam.fullMarks
    // Each rate's line where it does not depend on the scores (nil: a top share).
    var known: [(name: String, line: Double?, cut: Bool)] = []
    for (name, set, line, fraction) in [
      ("low", c.hasLow, c.low, exam.lowFraction), ("pass", c.hasPass, c.pass, exam.passFraction),
      ("good", c.hasGood, c.good, exam.goodFraction),
      ("excellent", c.hasExcellent, c.excellent, exam.excellentFraction),
    ] {
      let field = "exam.cut_lines.\(name)"
      guard set else {
        known.append((name, fraction * full, false))
        continue
      }
      switch line.line {
      case .score(let s):
        let valid = s.isFinite && s > 0 && s <= full
        v.check(valid, field + ".score", "must be in (0, full marks]")
        known.append((name, valid ? s : nil, true))
      case .topShare(let share):
        if name == "low" {
          v.add(field + ".top_share", "the low line takes a score, not a share")
        } else {
          v.check(share > 0 && share < 1, field + ".top_share", "must be a fraction in (0, 1)")
        }
        known.append((name, nil, true))
      case nil:
        v.add(field, "must give a score or a top_share")
        known.append((name, nil, true))
      }
    }
    // Fractions were checked among themselves: a pair is compared when it holds a cut line.
    let lines = known.compactMap { k in k.line.map { (k.name, $0, k.cut) } }
    for (i, a) in lines.enumerated() {
      for b in lines[(i + 1)...] where a.2 || b.2 {
        let ordered = a.0 == "low" ? a.1 < b.1 : a.1 <= b.1
        if !ordered {
          v.add(
            "exam.cut_lines", "the \(a.0) line (\(a.1)) must lie below the \(b.0) line (\(b.1))")
        }
      }
    }
  }

  func timestamp() -> Double { now().timeIntervalSince1970 }

  /// Whether a row's class/school pair may take scores: the class path, or why not.
  enum ClassVerdict {
    case accept(String)
    case reject(FieldViolation)
  }
}

extension AssessmentAPI: Smartschool_Assessment_V1_AssessmentService.SimpleServiceProtocol {
  // MARK: exams

  public func createExam(
    request: Smartschool_Assessment_V1_CreateExamRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_Exam {
    let principal = try Principal.require()
    let (exam, org) = try validatedExam(request.exam)
    try principal.require(.examsWrite, at: try Self.path(org.path))
    if !exam.sessionCode.isEmpty {
      // A session is one sitting: same running org, year, term and grade; a paper a subject.
      // The exam itself, re-sent, is not another paper: the store answers ALREADY_EXISTS as
      // for any re-sent exam, which an idempotent import takes as done.
      for paper in try await store.exams(session: exam.sessionCode).map(\.exam)
      where paper.code != exam.code {
        let fits =
          paper.orgCode == exam.orgCode && paper.schoolYear == exam.schoolYear
          && paper.term == exam.term && paper.grade == exam.grade
        if !fits {
          throw ServiceError.invalid(
            "exam.session_code",
            "session \(exam.sessionCode) is run by \(paper.orgCode) for grade \(paper.grade), "
              + "term \(paper.schoolYear)/\(paper.term): this exam does not fit it")
        }
        if paper.subject == exam.subject {
          throw ServiceError.invalid(
            "exam.session_code",
            "session \(exam.sessionCode) already has a paper of this subject (\(paper.code))")
        }
      }
    }
    let record = ExamRecord(number: 0, id: EntityID.make(), exam: exam, orgPath: org.path)
    do {
      try await store.createExam(record, time: timestamp())
    } catch ServiceError.alreadyExists {
      throw ServiceError.alreadyExists(
        "an exam with code \(exam.code) already exists, or its session a paper of its subject")
    }
    return exam
  }

  public func getExam(request: Smartschool_Assessment_V1_GetExamRequest, context: ServerContext)
    async throws -> Smartschool_Assessment_V1_Exam
  {
    let principal = try Principal.require()
    let record = try await exam(code: request.code, field: "code", counts: true)
    guard Self.mayRead(principal, examPath: try Self.path(record.orgPath)) else {
      throw ServiceError.permissionDenied("assessment.exams.read is not granted for this exam")
    }
    return record.exam
  }

  public func listExams(
    request: Smartschool_Assessment_V1_ListExamsRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_ListExamsResponse {
    let principal = try Principal.require()
    let size = try PageSize.resolve(request.pageSize)
    if !request.orgCode.isEmpty {
      var v = Validator()
      v.code(request.orgCode, "org_code")
      try v.throwIfInvalid()
    }
    let query = "exams|\(request.orgCode)"
    var after = try PageToken.decode(request.pageToken, query: query)?.after.first
    let orgFilter = request.orgCode.isEmpty ? nil : request.orgCode
    var page: [Exam] = []
    var more = false
    // Visibility is decided per exam from its path, so read in chunks until the page is full.
    scan: while true {
      let chunk = try await store.exams(after: after, orgCode: orgFilter, limit: size + 1)
      for record in chunk {
        guard let p = OrgPath(record.orgPath), Self.mayRead(principal, examPath: p) else {
          continue
        }
        if page.count == size {
          more = true
          break scan
        }
        page.append(record.exam)
      }
      if chunk.count < size + 1 { break }
      after = chunk.last?.exam.code
    }
    var response = Smartschool_Assessment_V1_ListExamsResponse()
    response.exams = page
    if more, let last = page.last {
      response.nextPageToken = PageToken(after: [last.code]).encode(query: query)
    }
    return response
  }

  public func updateExamItems(
    request: Smartschool_Assessment_V1_UpdateExamItemsRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_Exam {
    let principal = try Principal.require()
    var items = request.items
    items.sort { $0.number < $1.number }
    var v = Validator()
    v.code(request.code, "code")
    v.check(!items.isEmpty, "items", "must not be empty")
    Self.validateItems(items, "items", &v)
    try v.throwIfInvalid()
    let record = try await exam(code: request.code, field: "code")
    try principal.require(.examsWrite, at: try Self.path(record.orgPath))
    let fullMarks = items.reduce(0) { $0 + $1.maxScore }
    return try await store.replaceItems(
      code: request.code, items: items, fullMarks: fullMarks, time: timestamp()
    ).exam
  }

  // MARK: scores

  public func importScores(
    request: RPCAsyncSequence<Smartschool_Assessment_V1_ScoreRow, any Error>,
    context: ServerContext
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    try await importScoreRows(request)
  }

  public func importScoreBatches(
    request: RPCAsyncSequence<Smartschool_Assessment_V1_ScoreRowBatch, any Error>,
    context: ServerContext
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    try await importScoreRows(StreamRows(request, field: "rows") { $0.rows })
  }

  /// Both score imports: the rows numbered in stream order, however many each message held.
  func importScoreRows(
    _ request: some AsyncSequence<Smartschool_Assessment_V1_ScoreRow, any Error>
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    let principal = try Principal.require()
    if principal.scopes(for: .scoresImport).isEmpty {
      throw ServiceError.permissionDenied("assessment.scores.import is not granted to the caller")
    }
    // Class/school pairs seen in this stream: bounded by the org tree, not the stream.
    var classes: [String: ClassVerdict] = [:]
    var lastClass: (classCode: String, schoolCode: String, verdict: ClassVerdict)?
    func resolveClass(_ classCode: String, _ schoolCode: String) -> ClassVerdict
    {
      // Rows of one class arrive together: skip even the dictionary for a repeat.
      if let last = lastClass, last.classCode == classCode, last.schoolCode == schoolCode {
        return last.verdict
      }
      let key = classCode + "|" + schoolCode
      if let known = classes[key] {
        lastClass = (classCode, schoolCode, known)
        return known
      }
      let verdict: ClassVerdict
      if let c = directory.org(code: classCode), c.active, c.kind == .class {
        if let s = directory.org(code: schoolCode), s.kind == .school {
          if c.parentID != s.id {
            verdict = .reject(
              FieldViolation("class_code", "class \(classCode) is not in school \(schoolCode)"))
          } else if !principal.allows(.scoresImport, atPath: c.path) {
            verdict = .reject(
              FieldViolation("class_code", "class \(classCode) is outside the caller's scope"))
          } else {
            verdict = .accept(c.path)
          }
        } else {
          verdict = .reject(FieldViolation("school_code", "no school has code \(schoolCode)"))
        }
      } else {
        verdict = .reject(FieldViolation("class_code", "no class has code \(classCode)"))
      }
      classes[key] = verdict
      lastClass = (classCode, schoolCode, verdict)
      return verdict
    }
    // The last row index of each student given a score, by exam: after the stream, those
    // still missing items are told (bounded by the students of the stream, not its rows).
    var scored: [String: [String: Int]] = [:]
    // Batches are written while the next one is read, validated and grouped by student; on
    // PostgreSQL two at a time when they share no student (see scoreWritesInFlight): the two
    // may take their locks in either order, and a student's later rows must win, so a batch
    // holding a student of the one before it (a student's rows split by the batch boundary,
    // or sent again) waits for it to commit.
    let store = self.store
    var previousStudents = Set<String>()
    var summary = try await BulkImport.runOverlapped(
      request, batchSize: Self.importBatch, inFlight: store.scoreWritesInFlight,
      followsPrevious: { (staged: (rows: StagedScores, students: Set<String>)) in
        defer { previousStudents = staged.students }
        return !staged.students.isDisjoint(with: previousStudents)
      },
      prepare: { (row: Smartschool_Assessment_V1_ScoreRow, index: Int) in
        func reject(_ field: String, _ reason: String) -> PreparedRow<PendingScore> {
          let key = "\(row.examCode)/\(row.studentExternalID)/\(row.itemNumber)"
          return .reject(.row(index, key: key, field: field, reason))
        }
        if !TextRules.isCode(row.examCode) { return reject("exam_code", "must be a code") }
        if !TextRules.isCode(row.studentExternalID) {
          return reject("student_external_id", "must be 1-64 letters, digits, '-', '_' or '.'")
        }
        if !row.score.isFinite || row.score < 0 {
          return reject("score", "must be a number of at least 0")
        }
        switch row.attendance {
        case .unspecified:
          if row.itemNumber < 1 { return reject("item_number", "must be at least 1") }
          if !row.reasonNotTested.isEmpty {
            return reject("reason_not_tested", "only an EXEMPT row has a reason")
          }
          if !row.chosenOption.isEmpty && !Self.isOptionLabel(row.chosenOption) {
            return reject("chosen_option", "must be 1-8 ASCII letters or digits")
          }
        case .sat, .absent, .exempt:
          if !row.chosenOption.isEmpty {
            return reject("chosen_option", "must be empty on a row that marks attendance")
          }
          if row.itemNumber != 0 {
            return reject("item_number", "must be 0 on a row that marks attendance")
          }
          if row.score != 0 { return reject("score", "must be 0 on a row that marks attendance") }
          if row.attendance == .exempt {
            var v = Validator()
            v.text(row.reasonNotTested, "reason_not_tested", maxLength: 200)
            if let violation = v.violations.first {
              return reject(violation.field, violation.description)
            }
          } else if !row.reasonNotTested.isEmpty {
            return reject("reason_not_tested", "only an EXEMPT row has a reason")
          }
        case .UNRECOGNIZED:
          return reject("attendance", "must name an attendance")
        }
        switch resolveClass(row.classCode, row.schoolCode) {
        case .reject(let violation): return reject(violation.field, violation.description)
        case .accept(let path):
          if row.attendance == .unspecified {
            scored[row.examCode, default: [:]][row.studentExternalID] = index
          }
          return .accept(
            PendingScore(
              index: index, examCode: row.examCode, student: row.studentExternalID,
              classCode: row.classCode, schoolCode: row.schoolCode, classPath: path,
              item: row.itemNumber, score: row.score, attendance: Int32(row.attendance.rawValue),
              reason: row.reasonNotTested, choice: row.chosenOption))
        }
      },
      stage: { batch in
        // A student's rows mostly come together: a key made once per run of them.
        var students = Set<String>()
        var last: (exam: String, student: String)? = nil
        for (_, row) in batch where last?.student != row.student || last?.exam != row.examCode {
          students.insert(row.examCode + "/" + row.student)
          last = (row.examCode, row.student)
        }
        return (try await store.stageScores(batch.map(\.row)), students)
      },
      commit: { staged in
        let result = try await store.writeScores(staged.rows)
        var outcome = BatchOutcome()
        outcome.created = result.created
        outcome.updated = result.updated
        outcome.errors = result.rejections.map {
          .row($0.index, key: $0.key, field: $0.field, $0.reason)
        }
        return outcome
      })
    // Students the stream left without some item's score, on exams where that is an error:
    // told after the rows, which stay written and counted accepted.
    var notices: [Smartschool_Common_V1_RowError] = []
    for code in scored.keys.sorted() {
      guard let sent = scored[code], let exam = try await store.exam(code: code, counts: false),
        exam.reportsMissingItems
      else { continue }
      let numbers = exam.itemNumbers
      for student in try await store.incompleteStudents(exam: exam) {
        guard let index = sent[student.externalID] else { continue }
        let items = student.missing.map { String(numbers[$0]) }.joined(separator: ", ")
        notices.append(
          .row(
            index, key: "\(code)/\(student.externalID)", field: "item_number",
            "student \(student.externalID) sat exam \(code) without a score for item(s) "
              + "\(items): the rows sent are kept, and reports list the student as incomplete "
              + "until those items arrive (an exam whose missing_items is ZERO counts them 0)"))
      }
    }
    if !notices.isEmpty {
      summary.errors = (summary.errors + notices).sorted { $0.index < $1.index }
    }
    return summary
  }

  public func exportScores(
    request: Smartschool_Assessment_V1_ExportScoresRequest,
    response: RPCWriter<Smartschool_Assessment_V1_ScoreRow>, context: ServerContext
  ) async throws {
    let principal = try Principal.require()
    let record = try await exam(code: request.examCode, field: "exam_code")
    try principal.require(.resultsRead, at: try Self.path(record.orgPath))
    var after: (String, Int32)?
    while true {
      let page = try await store.exportScores(exam: record, after: after, limit: Self.exportPage)
      try await response.write(
        contentsOf: page.map { s in
          .with {
            $0.examCode = record.exam.code
            $0.studentExternalID = s.student
            $0.classCode = s.classCode
            $0.schoolCode = s.schoolCode
            $0.itemNumber = s.item
            $0.score = s.score
            $0.chosenOption = s.choice
            if s.attendance != 0 {
              $0.attendance = .init(rawValue: Int(s.attendance)) ?? .unspecified
              $0.reasonNotTested = s.reason
            }
          }
        })
      guard page.count == Self.exportPage, let last = page.last else { return }
      after = (last.student, last.item)
    }
  }

  // MARK: statistics and reports

  static func scopeFigures(
    _ totals: [Double], org: Org?, lines: ScoreLineFigures, fullMarks: Double, bins: Int
  ) -> Smartschool_Assessment_V1_ScopeStatistics {
    let f = SummaryFigures.compute(totals, lines: lines, fullMarks: fullMarks, binCount: bins)
    return .with {
      $0.orgCode = org?.code ?? ""
      $0.orgName = org?.name ?? ""
      $0.count = Int64(f.count)
      $0.mean = f.mean
      $0.standardDeviation = f.standardDeviation
      $0.min = f.min
      $0.max = f.max
      $0.median = f.median
      $0.passRate = f.passRate
      $0.excellentRate = f.excellentRate
      $0.lowRate = f.lowRate
      $0.goodRate = f.goodRate
      $0.bins = f.bins.map { b in
        .with {
          $0.lower = b.lower
          $0.upper = b.upper
          $0.count = Int64(b.count)
          $0.percent = b.percent
        }
      }
    }
  }

  /// Sets the attendance counts (应考/实考/缺考) of `figures` from the scope's tallies.
  static func countAttendance(
    _ figures: inout Smartschool_Assessment_V1_ScopeStatistics, _ tally: ScopeTally,
    reportsMissing: Bool
  ) {
    figures.expectedCount = Int64(tally.sat + tally.absent)
    figures.satCount = Int64(tally.sat)
    figures.absentCount = Int64(tally.absent)
    figures.exemptCount = Int64(tally.exempt)
    figures.incompleteCount = Int64(reportsMissing ? tally.incomplete : 0)
  }

  /// Sets the attendance counts (应考/实考/缺考) of `figures` from the scope's students.
  static func countAttendance(
    _ figures: inout Smartschool_Assessment_V1_ScopeStatistics, _ students: [StudentResult],
    reportsMissing: Bool
  ) {
    var sat = 0, absent = 0, exempt = 0, incomplete = 0
    for s in students {
      switch s.attendance {
      case AttendanceCode.absent: absent += 1
      case AttendanceCode.exempt: exempt += 1
      default:
        sat += 1
        if reportsMissing && !s.missing.isEmpty { incomplete += 1 }
      }
    }
    figures.expectedCount = Int64(sat + absent)
    figures.satCount = Int64(sat)
    figures.absentCount = Int64(absent)
    figures.exemptCount = Int64(exempt)
    figures.incompleteCount = Int64(incomplete)
  }

  /// The students of `students` who did not sit, by class code then student.
  static func notTested(_ students: [StudentResult]) -> [Smartschool_Assessment_V1_NotTestedStudent]
  {
    students.filter { !$0.sat }
      .sorted { ($0.classCode, $0.externalID) < ($1.classCode, $1.externalID) }
      .map { s in
        .with {
          $0.studentExternalID = s.externalID
          $0.classCode = s.classCode
          $0.schoolCode = s.schoolCode
          $0.attendance = .init(rawValue: Int(s.attendance)) ?? .unspecified
          $0.reasonNotTested = s.reason
        }
      }
  }

  /// The scope of a report on `record`: the org named by `code` (under the exam's running
  /// org), or nil with the exam's path when `code` is empty.
  func scope(of record: ExamRecord, code: String) throws(ServiceError) -> (Org?, OrgPath) {
    let examPath = try Self.path(record.orgPath)
    if code.isEmpty { return (nil, examPath) }
    let org = try org(code: code, field: "scope_org_code")
    let path = try Self.path(org.path)
    guard examPath.covers(path) else {
      throw ServiceError.invalid(
        "scope_org_code", "must name the org running the exam or an org under it")
    }
    return (org, path)
  }

  /// The children of a report's scope: its direct children, or every org of `kind` (SCHOOL or
  /// CLASS) under it; a kind not below the scope's is INVALID_ARGUMENT.
  func children(
    of scopeOrg: Org?, path: OrgPath, exam: ExamRecord, kind: Smartschool_Common_V1_OrgKind
  ) throws(ServiceError) -> [Org] {
    if kind == .unspecified { return directory.children(of: path.leaf ?? "") }
    let scopeKind = scopeOrg?.kind ?? directory.org(code: exam.exam.orgCode)?.kind
    guard let scopeKind, kind.rawValue > scopeKind.rawValue else {
      throw ServiceError.invalid("children_kind", "must be a kind below the scope's")
    }
    return directory.orgs(under: path, kind: kind).filter { $0.path != path.description }
  }

  /// `students` grouped by the child (of `children`, by id) on their class path; a student
  /// under none is left out.
  static func byChild(_ students: [StudentResult], children: [Org]) -> [String: [StudentResult]] {
    let childIDs = Set(children.map(\.id))
    var grouped: [String: [StudentResult]] = [:]
    // A class's students share one path: each path is parsed once.
    var childOfPath: [String: String?] = [:]
    for s in students {
      let child: String?
      if let known = childOfPath[s.orgPath] {
        child = known
      } else {
        child = OrgPath(s.orgPath)?.ids.first { childIDs.contains($0) }
        childOfPath[s.orgPath] = .some(child)
      }
      guard let child else { continue }
      grouped[child, default: []].append(s)
    }
    return grouped
  }

  /// What a report on a scope and its children reads: the exam, the scope's org (nil: the
  /// whole exam) after checking the caller's resultsRead there, its children (`kind` as
  /// ``children(of:path:exam:kind:)``) and the scope's students, sat or not.
  func scopedResults(
    _ principal: Principal, exam code: String, scope: String, kind: Smartschool_Common_V1_OrgKind
  ) async throws -> (ExamRecord, Org?, [Org], [StudentResult]) {
    let record = try await exam(code: code, field: "exam_code")
    let (scopeOrg, scopePath) = try self.scope(of: record, code: scope)
    let children = try children(of: scopeOrg, path: scopePath, exam: record, kind: kind)
    try principal.require(.resultsRead, at: scopePath)
    let students = try await store.results(
      exam: record, scopePath: scopeOrg == nil ? nil : scopePath.description)
    return (record, scopeOrg, children, students)
  }

  /// Ranks sibling figures by mean and by each rate (the lowest low rate best); only those
  /// with results take part, the others keep 0.
  static func rankSiblings(_ figures: inout [Smartschool_Assessment_V1_ScopeStatistics]) {
    let ranked = figures.indices.filter { figures[$0].count > 0 }
    let means = ranksByMean(ranked.map { figures[$0].mean })
    let pass = competitionRanks(ranked.map { figures[$0].passRate })
    let good = competitionRanks(ranked.map { figures[$0].goodRate })
    let excellent = competitionRanks(ranked.map { figures[$0].excellentRate })
    let low = competitionRanks(ranked.map { figures[$0].lowRate }, lowerIsBetter: true)
    for (k, i) in ranked.enumerated() {
      figures[i].rank = Int32(means[k])
      figures[i].passRateRank = Int32(pass[k])
      figures[i].goodRateRank = Int32(good[k])
      figures[i].excellentRateRank = Int32(excellent[k])
      figures[i].lowRateRank = Int32(low[k])
    }
  }

  /// A report's bin count (0: 10), after checking it and the children kind.
  static func binCount(_ count: Int32, childrenKind: Smartschool_Common_V1_OrgKind)
    throws(ServiceError) -> Int
  {
    var v = Validator()
    v.check((0...100).contains(count), "bin_count", "must be between 1 and 100 (0: 10)")
    v.check(
      [.unspecified, .school, .class].contains(childrenKind), "children_kind",
      "must be SCHOOL, CLASS or unspecified")
    try v.throwIfInvalid()
    return count == 0 ? 10 : Int(count)
  }

  public func getExamStatistics(
    request: Smartschool_Assessment_V1_GetExamStatisticsRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_ExamStatistics {
    let principal = try Principal.require()
    let bins = try Self.binCount(request.binCount, childrenKind: request.childrenKind)
    let record = try await exam(code: request.examCode, field: "exam_code")
    let (scopeOrg, scopePath) = try scope(of: record, code: request.scopeOrgCode)
    let children = try children(
      of: scopeOrg, path: scopePath, exam: record, kind: request.childrenKind)
    try principal.require(.resultsRead, at: scopePath)
    // The exam's tallies (kept by the score batches), not its students' scores.
    let path = scopeOrg == nil ? record.orgPath : scopePath.description
    let tallies = try await store.scopeTallies(exam: record, scopePath: path)
    let scope = ScopeTally.of(tallies.rows, path: path)
    let reportsMissing = record.reportsMissingItems
    let fullMarks = record.exam.fullMarks
    // The scope's lines serve its children too (a top share is of the scope).
    let lines = record.lineRules.lines(fullMarks: fullMarks, totals: scope.totals)
    var stats = Smartschool_Assessment_V1_ExamStatistics()
    stats.examCode = record.exam.code
    stats.lines = .with {
      $0.pass = lines.pass
      $0.good = lines.good
      $0.excellent = lines.excellent
      $0.low = lines.low
    }
    stats.scope = Self.scopeFigures(
      scope.totals, org: scopeOrg, lines: lines, fullMarks: fullMarks, bins: bins)
    Self.countAttendance(&stats.scope, scope, reportsMissing: reportsMissing)
    // Absent and exempt students are counted and listed, in no figure.
    stats.notTested = Self.notTested(tallies.marked)
    if reportsMissing {
      let numbers = record.itemNumbers
      stats.incomplete = tallies.incomplete
        .sorted { ($0.classCode, $0.externalID) < ($1.classCode, $1.externalID) }
        .map { s in
          .with {
            $0.studentExternalID = s.externalID
            $0.classCode = s.classCode
            $0.schoolCode = s.schoolCode
            $0.missingItems = s.missing.map { numbers[$0] }
          }
        }
    }

    let byChild = ScopeTally.byChild(tallies.rows, childIDs: Set(children.map(\.id)))
    var childStats = children.map {
      let tally = byChild[$0.id] ?? ScopeTally()
      var figures = Self.scopeFigures(
        tally.totals, org: $0, lines: lines, fullMarks: fullMarks, bins: bins)
      Self.countAttendance(&figures, tally, reportsMissing: reportsMissing)
      return figures
    }
    Self.rankSiblings(&childStats)
    stats.children = childStats

    let maxScores = record.exam.items.map(\.maxScore)
    let analysis: ItemAnalysis
    if path == record.orgPath {
      analysis = ItemAnalysis.compute(
        levels: tallies.rows.filter { $0.path == path && $0.kind == TallyKind.sat },
        maxScores: maxScores, boundary: tallies.boundary)
    } else {
      // A scope below the exam's org: its own students' scores (the tallies keep item sums
      // for the exam's org only).
      let students = try await store.results(exam: record, scopePath: path).filter(\.sat)
      analysis = ItemAnalysis.compute(
        students.map { StudentItemScores(externalID: $0.externalID, scores: $0.scores) },
        maxScores: maxScores)
    }
    stats.items = zip(record.exam.items, analysis.items).map { item, f in
      .with {
        $0.number = item.number
        $0.maxScore = item.maxScore
        $0.mean = f.mean
        $0.difficulty = f.difficulty
        $0.discrimination = f.discrimination
        if let r = f.pointBiserial { $0.pointBiserial = .init(r) }
        $0.flagLowDiscrimination = f.lowDiscrimination
        $0.flagTooHard = f.tooHard
        $0.flagTooEasy = f.tooEasy
      }
    }
    if let alpha = analysis.alpha { stats.cronbachAlpha = .init(alpha) }
    if let sem = analysis.sem { stats.sem = .init(sem) }
    return stats
  }

  public func listExamRanks(
    request: Smartschool_Assessment_V1_ListExamRanksRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_ListExamRanksResponse {
    let principal = try Principal.require()
    let size = try PageSize.resolve(request.pageSize)
    let record = try await exam(code: request.examCode, field: "exam_code")
    let (scopeOrg, scopePath) = try scope(of: record, code: request.scopeOrgCode)
    try principal.require(.resultsRead, at: scopePath)
    let query = "ranks|\(record.exam.code)|\(request.scopeOrgCode)"
    let after = try Self.rankCursor(request.pageToken, query: query)
    // Ranks in class, school, county and exam are among the whole exam's students who sat.
    let students = try await store.results(exam: record, scopePath: nil).filter(\.sat)
    let totals = students.map(\.total)
    let ids = students.map(\.externalID)
    let table = rankTable(
      totals: totals, ids: ids, classes: students.map(\.classCode),
      schools: students.map(\.schoolCode), paths: students.map(\.orgPath),
      scope: scopeOrg == nil ? nil : scopePath)
    let (positions, more) = table.page(after: after, size: size, totals: totals, ids: ids)
    let numbers = record.itemNumbers
    var response = Smartschool_Assessment_V1_ListExamRanksResponse()
    response.totalCount = Int64(table.members.count)
    response.students = positions.map { k in
      let i = table.members[k]
      let s = students[i]
      return .with {
        $0.studentExternalID = s.externalID
        $0.classCode = s.classCode
        $0.schoolCode = s.schoolCode
        $0.total = s.total
        $0.scopeRank = Int32(table.scopeRanks[k])
        $0.classRank = Int32(table.classRanks[i])
        $0.schoolRank = Int32(table.schoolRanks[i])
        $0.countyRank = Int32(table.countyRanks[i])
        $0.examRank = Int32(table.allRanks[i])
        $0.percentileRank = roundTo2(table.percentiles[i])
        if record.reportsMissingItems { $0.missingItems = s.missing.map { numbers[$0] } }
      }
    }
    response.nextPageToken = table.token(
      after: positions, more: more, totals: totals, ids: ids, query: query)
    return response
  }

  public func listBorderlineStudents(
    request: Smartschool_Assessment_V1_ListBorderlineStudentsRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_BorderlineStudents {
    let principal = try Principal.require()
    var v = Validator()
    v.check(
      [.pass, .good, .excellent].contains(request.line), "line", "must be PASS, GOOD or EXCELLENT")
    v.check(request.margin.isFinite && request.margin > 0, "margin", "must be above 0")
    try v.throwIfInvalid()
    let record = try await exam(code: request.examCode, field: "exam_code")
    if request.margin > record.exam.fullMarks {
      throw ServiceError.invalid("margin", "must be at most the exam's full marks")
    }
    let (_, scopePath) = try scope(of: record, code: request.scopeOrgCode)
    try principal.require(.resultsRead, at: scopePath)
    let students = try await store.results(
      exam: record, scopePath: request.scopeOrgCode.isEmpty ? nil : scopePath.description
    ).filter(\.sat)
    let rules = record.lineRules
    let rule =
      request.line == .pass ? rules.pass : request.line == .good ? rules.good : rules.excellent
    let line = rule.line(fullMarks: record.exam.fullMarks, totals: students.map(\.total))
    var byClass: [String: [StudentResult]] = [:]
    if let line {
      for s in students where s.total < line && line - s.total <= request.margin {
        byClass[s.classCode, default: []].append(s)
      }
    }
    return .with {
      $0.examCode = record.exam.code
      $0.line = line ?? 0
      $0.classes = byClass.keys.sorted().map { code in
        let members = byClass[code]!.sorted {
          $0.total != $1.total ? $0.total > $1.total : $0.externalID < $1.externalID
        }
        return .with {
          $0.classCode = code
          $0.schoolCode = members[0].schoolCode
          $0.students = members.map { s in
            .with {
              $0.studentExternalID = s.externalID
              $0.total = s.total
              $0.gap = (line ?? 0) - s.total
            }
          }
        }
      }
    }
  }

  static func mastery(_ m: MasteryFigure) -> Smartschool_Assessment_V1_KnowledgePointMastery {
    .with {
      $0.code = m.code
      $0.earned = m.earned
      $0.possible = m.possible
      $0.mastery = roundTo4(m.mastery)
    }
  }

  public func getStudentReport(
    request: Smartschool_Assessment_V1_GetStudentReportRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_StudentReport {
    let principal = try Principal.require()
    var v = Validator()
    v.code(request.examCode, "exam_code")
    v.code(request.studentExternalID, "student_external_id")
    try v.throwIfInvalid()
    let record = try await exam(code: request.examCode, field: "exam_code")
    guard
      let standing = try await store.standing(exam: record, student: request.studentExternalID)
    else {
      if try await mayReadStudent(
        principal, student: request.studentExternalID, path: try Self.path(record.orgPath))
      {
        throw ServiceError.notFound(
          "student \(request.studentExternalID) has no scores on exam \(record.exam.code)")
      }
      throw ServiceError.permissionDenied("the caller may not read this student's results")
    }
    let me = standing.result
    guard try await mayReadStudent(principal, student: me.externalID, path: OrgPath(me.orgPath))
    else {
      throw ServiceError.permissionDenied("the caller may not read this student's results")
    }
    guard me.sat else {
      // Not sat: no figure of the student's own; the sizes are of those who sat.
      return .with {
        $0.examCode = record.exam.code
        $0.studentExternalID = me.externalID
        $0.classCode = me.classCode
        $0.schoolCode = me.schoolCode
        $0.classSize = Int32(standing.classSize)
        $0.schoolSize = Int32(standing.schoolSize)
        $0.examSize = Int32(standing.totals.count)
        $0.attendance = .init(rawValue: Int(me.attendance)) ?? .unspecified
        $0.reasonNotTested = me.reason
      }
    }
    let totals = standing.totals
    let total = standing.total
    let mean = totals.reduce(0, +) / Double(totals.count)
    let sd = populationSD(totals, mean: mean)
    let figures = knowledgePointMastery(
      scores: me.scores, maxScores: record.exam.items.map(\.maxScore),
      itemPoints: record.exam.items.map(\.knowledgePoints))
    return .with {
      $0.examCode = record.exam.code
      $0.studentExternalID = me.externalID
      $0.classCode = me.classCode
      $0.schoolCode = me.schoolCode
      $0.total = total
      $0.classRank = Int32(1 + standing.classAbove)
      $0.schoolRank = Int32(1 + standing.schoolAbove)
      $0.examRank = Int32(competitionRank(of: total, in: totals))
      $0.classSize = Int32(standing.classSize)
      $0.schoolSize = Int32(standing.schoolSize)
      $0.examSize = Int32(totals.count)
      $0.percentileRank = roundTo2(percentileRank(of: total, in: totals))
      if let z = zScore(of: total, mean: mean, sd: sd) {
        $0.zScore = .init(z)
        $0.tScore = .init(tScore(z: z))
      }
      $0.mastery = figures.map(Self.mastery)
      $0.weakPoints = weakPoints(figures, passFraction: record.exam.passFraction).map(Self.mastery)
      $0.attendance = .sat
      if record.reportsMissingItems {
        $0.missingItems = me.missing.map { record.itemNumbers[$0] }
      }
    }
  }

  public func getClassDiagnosis(
    request: Smartschool_Assessment_V1_GetClassDiagnosisRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_ClassDiagnosis {
    let principal = try Principal.require()
    var v = Validator()
    v.code(request.examCode, "exam_code")
    v.code(request.classCode, "class_code")
    try v.throwIfInvalid()
    let record = try await exam(code: request.examCode, field: "exam_code")
    let org = try org(code: request.classCode, field: "class_code")
    guard org.kind == .class else { throw ServiceError.invalid("class_code", "must name a class") }
    try principal.require(.resultsRead, at: try Self.path(org.path))
    let everyone = try await store.results(exam: record, scopePath: org.path)
    let students = everyone.filter(\.sat)
    let totals = students.map(\.total)
    let passLine = record.lineRules.pass.line(fullMarks: record.exam.fullMarks, totals: totals) ?? 0
    let points = classKnowledgePoints(
      students: students.map(\.scores), maxScores: record.exam.items.map(\.maxScore),
      itemPoints: record.exam.items.map(\.knowledgePoints),
      passFraction: record.exam.passFraction)
    let above = try await ratesAbove(class: org, exam: record)
    return .with {
      $0.examCode = record.exam.code
      $0.classCode = org.code
      $0.count = Int64(students.count)
      $0.mean = totals.isEmpty ? 0 : totals.reduce(0, +) / Double(totals.count)
      $0.knowledgePoints = points.map { p in
        .with {
          $0.code = p.code
          $0.mastery = roundTo4(p.mastery)
          $0.shareBelowPass = p.shareBelowPass
          $0.schoolMastery = roundTo4(above.school[p.code] ?? 0)
          if let county = above.county { $0.countyMastery = .init(roundTo4(county[p.code] ?? 0)) }
          $0.examMastery = roundTo4(above.exam[p.code] ?? 0)
        }
      }
      $0.studentsBelowPass = students.filter { $0.total < passLine }
        .sorted { $0.total != $1.total ? $0.total < $1.total : $0.externalID < $1.externalID }
        .map { s in
          .with {
            $0.studentExternalID = s.externalID
            $0.total = s.total
          }
        }
      $0.notTested = Self.notTested(everyone)
    }
  }

  // MARK: quality evaluation

  /// A quality entry validated against the org tree; `prefix` names the fields.
  func validatedQuality(_ e: Smartschool_Assessment_V1_QualityEntry, prefix: String)
    async throws -> Result<QualityRecord, ServiceError>
  {
    var v = Validator()
    v.code(e.studentExternalID, prefix + "student_external_id")
    v.code(e.schoolCode, prefix + "school_code")
    Self.schoolYear(e.schoolYear, prefix + "school_year", &v)
    v.check(e.term == 1 || e.term == 2, prefix + "term", "must be 1 or 2")
    v.check(
      (1...5).contains(e.dimension.rawValue), prefix + "dimension", "must name a dimension")
    v.text(e.title, prefix + "title", maxLength: 100)
    v.text(e.description_p, prefix + "description", maxLength: 2000)
    v.text(e.evidenceRef, prefix + "evidence_ref", required: false, maxLength: 500)
    v.check((1...4).contains(e.grade.rawValue), prefix + "grade", "must be a grade A-D")
    if !v.violations.isEmpty { return .failure(.invalidArgument(v.violations)) }
    guard let school = directory.org(code: e.schoolCode), school.active, school.kind == .school
    else {
      return .failure(.notFound("no school has code \(e.schoolCode)"))
    }
    if let student = try await directory.user(externalID: e.studentExternalID),
      let home = directory.org(id: student.orgID),
      OrgPath(school.path)?.covers(home.path) == false
    {
      return .failure(
        .invalid(
          prefix + "school_code", "student \(e.studentExternalID) is not in school \(e.schoolCode)"
        ))
    }
    guard let principal = Principal.current,
      principal.allows(.qualityWrite, atPath: school.path)
    else {
      return .failure(.permissionDenied("assessment.quality.write is not granted at this school"))
    }
    return .success(QualityRecord(id: EntityID.make(), entry: e, orgPath: school.path))
  }

  public func recordQualityEntry(
    request: Smartschool_Assessment_V1_QualityEntry, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_QualityEntry {
    _ = try Principal.require()
    let record = try await validatedQuality(request, prefix: "").get()
    _ = try await store.upsertQuality([record], time: timestamp())
    return request
  }

  public func importQualityEntries(
    request: RPCAsyncSequence<Smartschool_Assessment_V1_QualityEntry, any Error>,
    context: ServerContext
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    let principal = try Principal.require()
    if principal.scopes(for: .qualityWrite).isEmpty {
      throw ServiceError.permissionDenied("assessment.quality.write is not granted to the caller")
    }
    return try await BulkImport.run(
      request, batchSize: 500,
      prepare: { (entry: Smartschool_Assessment_V1_QualityEntry, index: Int) in
        switch try await validatedQuality(entry, prefix: "") {
        case .success(let record): return .accept(record)
        case .failure(let error):
          var field = "school_code"
          if case .invalidArgument(let violations) = error {
            field = violations.first?.field ?? ""
          }
          return .reject(
            .row(
              index, key: "\(entry.studentExternalID)/\(entry.schoolYear)/\(entry.term)",
              field: field, error.message))
        }
      },
      commit: { batch in
        let created = try await store.upsertQuality(batch.map(\.row), time: timestamp())
        var outcome = BatchOutcome()
        outcome.created = created.filter { $0 }.count
        outcome.updated = created.count - outcome.created
        return outcome
      })
  }

  public func getQualityProfile(
    request: Smartschool_Assessment_V1_GetQualityProfileRequest, context: ServerContext
  ) async throws -> Smartschool_Assessment_V1_QualityProfile {
    let principal = try Principal.require()
    var v = Validator()
    v.code(request.studentExternalID, "student_external_id")
    Self.schoolYear(request.schoolYear, "school_year", &v)
    v.check(request.term == 1 || request.term == 2, "term", "must be 1 or 2")
    try v.throwIfInvalid()
    let entries = try await store.qualityEntries(
      student: request.studentExternalID, schoolYear: request.schoolYear, term: request.term)
    // The student's school: from identity when known, else from the entries themselves.
    var paths = entries.compactMap { OrgPath($0.orgPath) }
    if let user = try await directory.user(externalID: request.studentExternalID),
      let home = directory.org(id: user.orgID), let p = OrgPath(home.path)
    {
      paths.append(p)
    }
    guard !paths.isEmpty else {
      throw ServiceError.notFound("no quality entries for student \(request.studentExternalID)")
    }
    let allowed =
      try await paths.contains { principal.allows(.resultsRead, at: $0) }
      ? true : mayReadStudent(principal, student: request.studentExternalID, path: nil)
    guard allowed else {
      throw ServiceError.permissionDenied("the caller may not read this student's profile")
    }
    return .with {
      $0.studentExternalID = request.studentExternalID
      $0.schoolYear = request.schoolYear
      $0.term = request.term
      $0.dimensions = (1...5).map { raw in
        let dimension = Smartschool_Assessment_V1_QualityDimension(rawValue: raw) ?? .unspecified
        let mine = entries.filter { $0.entry.dimension == dimension }.map(\.entry)
        return .with {
          $0.dimension = dimension
          $0.entries = mine
          if let g = overallGrade(mine.map(\.grade.rawValue)) {
            $0.overall = Smartschool_Assessment_V1_QualityGrade(rawValue: g) ?? .unspecified
          }
        }
      }
    }
  }

  // MARK: changes

  public func listChanges(
    request: Smartschool_Common_V1_ListChangesRequest, context: ServerContext
  ) async throws -> Smartschool_Common_V1_ListChangesResponse {
    let size = try PageSize.resolve(request.pageSize)
    if request.afterSequence < 0 {
      throw ServiceError.invalid("after_sequence", "must not be negative")
    }
    let scopes = try Principal.require().scopes(for: .changesRead)
    if scopes.isEmpty {
      throw ServiceError.permissionDenied("changes.read is not granted to the caller")
    }
    let page = try await store.changes(after: request.afterSequence, limit: size, scopes: scopes)
    var response = Smartschool_Common_V1_ListChangesResponse()
    response.changes = page.changes
    response.lastSequence = page.changes.last?.sequence ?? request.afterSequence
    response.moreAvailable = page.hasMore
    return response
  }
}
