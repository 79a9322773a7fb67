import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf

/// The supervision service's RPC handlers: decode, authorize, validate, compute, respond.
public struct SupervisionAPI: Sendable {
  let store: any SupervisionStoring
  let directory: OrgDirectory
  let now: @Sendable () -> Date
  /// Lessons per import transaction; the stream is never held in memory as a whole.
  let lessonBatch: Int
  /// Lessons by teachers identity does not know: held or rejected.
  let unknownTeachers: UnknownTeacherLessons
  /// The default N of early warning's "below standard N teaching weeks running".
  let warningWeeks: Int
  /// Whether the reports read the kept usage counts (always, in service) or the lessons.
  let usageReads: UsageReads

  /// Handlers over `store`, resolving orgs and teachers through `directory`; a lesson import
  /// commits every `lessonBatch` accepted rows.
  public init(
    store: any SupervisionStoring, directory: OrgDirectory,
    now: @escaping @Sendable () -> Date = { Date() }, lessonBatch: Int = 2_000,
    unknownTeachers: UnknownTeacherLessons = .hold, warningWeeks: Int = Warnings.defaultWeeks,
    usageReads: UsageReads = UsageReads()
  ) {
    self.store = store
    self.directory = directory
    self.now = now
    self.lessonBatch = max(1, lessonBatch)
    self.unknownTeachers = unknownTeachers
    self.warningWeeks = min(20, max(1, warningWeeks))
    self.usageReads = usageReads
  }

  /// The usage of each classroom under `path` in the weeks whose Mondays are in `weeks`.
  func usage(under path: String, weeks: ClosedRange<Int>) async throws -> UsageTable {
    usageReads.fromLessons
      ? try await store.lessonUsage(under: path, weeks: weeks)
      : try await store.weekUsage(under: path, weeks: weeks)
  }

  /// Verified lessons under `path` per teacher and week of `weeks` (Mondays, in order),
  /// counting only lessons on `days` (a term's dates): whole weeks from the kept counts, a
  /// week that `days` cuts (a term starting or ending mid-week) from its lessons on those days.
  func teacherLessons(under path: String, weeks: [CalendarDate], days: ClosedRange<Int>)
    async throws -> [String: [Int: Int]]
  {
    guard let first = weeks.first, let last = weeks.last else { return [:] }
    var out: [String: [Int: Int]] = [:]
    func add(_ counts: [String: [Int: Int]], weeks wanted: Set<Int>) {
      // The common case, a term of whole weeks read at once: taken as it is, not copied.
      if out.isEmpty,
        counts.values.allSatisfy({
          !$0.isEmpty && $0.allSatisfy { $0.value > 0 && wanted.contains($0.key) }
        })
      {
        out = counts
        return
      }
      for (teacher, perWeek) in counts {
        for (week, n) in perWeek where n > 0 && wanted.contains(week) {
          out[teacher, default: [:]][week, default: 0] += n
        }
      }
    }
    if usageReads.fromLessons {
      let clipped =
        max(first.dayNumber, days.lowerBound)...min(last.dayNumber + 6, days.upperBound)
      guard clipped.lowerBound <= clipped.upperBound else { return [:] }
      add(
        try await store.teacherWeeklyLessonCounts(under: path, days: clipped),
        weeks: Set(weeks.map(\.dayNumber)))
      return out
    }
    let whole = weeks.filter {
      $0.dayNumber >= days.lowerBound && $0.dayNumber + 6 <= days.upperBound
    }
    if let a = whole.first, let b = whole.last {
      add(
        try await store.teacherWeekCounts(under: path, weeks: a.dayNumber...b.dayNumber),
        weeks: Set(whole.map(\.dayNumber)))
    }
    for week in weeks {
      let lo = max(week.dayNumber, days.lowerBound)
      let hi = min(week.dayNumber + 6, days.upperBound)
      // Whole weeks were read above; a week wholly outside `days` counts nothing.
      guard lo <= hi, lo != week.dayNumber || hi != week.dayNumber + 6 else { continue }
      add(
        try await store.teacherWeeklyLessonCounts(under: path, days: lo...hi),
        weeks: [week.dayNumber])
    }
    return out
  }

  /// For each of `externalIDs`, whether it names an active teacher in identity's directory
  /// (all read together).
  func knownTeachers(_ externalIDs: some Collection<String>) async throws -> [String: Bool] {
    let users = try await directory.users(externalIDs: externalIDs)
    var out: [String: Bool] = [:]
    for id in externalIDs {
      out[id] = users[id].map { $0.active && $0.kind == .teacher } ?? false
    }
    return out
  }

  /// Lesson batches of one import stream written at once. Three since the feed's events go in
  /// blocks: with less of the server's time a batch, a city import on PostgreSQL ran 11-56%
  /// faster than with two (three A/B pairs), where a third had not helped before.
  static let lessonWritesInFlight = 3

  /// Row errors listed in an import summary (the counts stay exact beyond it).
  static let maxRowErrors = 1000

  // MARK: helpers

  func org(code: String, field: String) throws(ServiceError) -> Smartschool_Identity_V1_Org {
    var v = Validator()
    v.code(code, field)
    try v.throwIfInvalid()
    guard let org = directory.org(code: code), org.active else {
      throw .notFound("no org has code \(code)")
    }
    return org
  }

  func school(code: String, field: String) throws(ServiceError) -> Smartschool_Identity_V1_Org {
    let org = try org(code: code, field: field)
    guard org.kind == .school else { throw .invalid(field, "must name a school") }
    return org
  }

  func path(_ org: Smartschool_Identity_V1_Org) throws(ServiceError) -> OrgPath {
    guard let p = OrgPath(org.path) else { throw .internalError("org \(org.code) has no path") }
    return p
  }

  /// The org named by `code`, checked for `permission` of the caller.
  func scope(
    code: String, field: String = "org_code", permission: Permission = .supervisionRead
  ) throws(ServiceError) -> Smartschool_Identity_V1_Org {
    let principal = try Principal.require()
    let org = try org(code: code, field: field)
    try principal.require(permission, at: try path(org))
    return org
  }

  func term(code: String, field: String = "term_code") async throws -> TermRecord {
    var v = Validator()
    v.code(code, field)
    try v.throwIfInvalid()
    guard let term = try await store.term(code: code) else {
      throw ServiceError.notFound("no term has code \(code)")
    }
    return term
  }

  static func date(_ text: String, _ field: String, _ v: inout Validator, required: Bool = true)
    -> CalendarDate?
  {
    if text.isEmpty {
      if required { v.add(field, "must not be empty") }
      return nil
    }
    guard let d = CalendarDate(text) else {
      v.add(field, "must be a date written YYYY-MM-DD")
      return nil
    }
    return d
  }

  static func year(_ year: Int32, _ field: String, _ v: inout Validator) {
    v.check((2000...2100).contains(year), field, "must be a year between 2000 and 2100")
  }

  func timestamp() -> Double { now().timeIntervalSince1970 }

  /// Terms are province-wide calendars: only a province-level (or root) writer may define them.
  func requireTermWriter() throws(ServiceError) {
    let principal = try Principal.require()
    let allowed = principal.bindings.contains {
      PermissionTable.permissions(of: $0.role).contains(.supervisionWrite)
        && $0.orgPath.ids.count <= 1
    }
    if !allowed {
      throw .permissionDenied("terms are defined by province-level supervision writers")
    }
  }

  func requireReaderAnywhere() throws(ServiceError) {
    let principal = try Principal.require()
    if principal.scopes(for: .supervisionRead).isEmpty {
      throw .permissionDenied("supervision.read is not granted to the caller")
    }
  }

  func validatedTerm(_ t: Smartschool_Supervision_V1_Term, id: String, createTime: Double)
    throws(ServiceError) -> TermRecord
  {
    var v = Validator()
    v.code(t.code, "term.code")
    v.text(t.name, "term.name", maxLength: 100)
    let start = Self.date(t.startDate, "term.start_date", &v)
    let end = Self.date(t.endDate, "term.end_date", &v)
    var excluded: [CalendarDate] = []
    for (i, text) in t.excludedWeeks.enumerated() {
      if let d = Self.date(text, "term.excluded_weeks[\(i)]", &v) { excluded.append(d.monday) }
    }
    if let start, let end {
      if end < start {
        v.add("term.end_date", "must not be before start_date")
      } else if end.dayNumber - start.dayNumber > 366 {
        v.add("term.end_date", "a term lasts at most a year")
      }
      for (i, w) in excluded.enumerated() where w < start.monday || w > end {
        v.add("term.excluded_weeks[\(i)]", "must name a week of the term")
      }
    }
    try v.throwIfInvalid()
    let unique = Array(Set(excluded)).sorted()
    return TermRecord(
      id: id, code: t.code, name: t.name, start: start!, end: end!, excluded: unique,
      createTime: createTime, updateTime: timestamp())
  }
}

extension SupervisionAPI: Smartschool_Supervision_V1_SupervisionService.SimpleServiceProtocol {
  // MARK: terms

  public func createTerm(
    request: Smartschool_Supervision_V1_CreateTermRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_Term {
    try requireTermWriter()
    let term = try validatedTerm(request.term, id: EntityID.make(), createTime: timestamp())
    do {
      try await store.createTerm(term)
    } catch ServiceError.alreadyExists {
      throw ServiceError.alreadyExists("a term with code \(term.code) already exists")
    }
    return term.proto
  }

  public func getTerm(request: Smartschool_Supervision_V1_GetTermRequest, context: ServerContext)
    async throws -> Smartschool_Supervision_V1_Term
  {
    try requireReaderAnywhere()
    return try await term(code: request.code, field: "code").proto
  }

  public func listTerms(
    request: Smartschool_Supervision_V1_ListTermsRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_ListTermsResponse {
    try requireReaderAnywhere()
    let size = try PageSize.resolve(request.pageSize)
    let token = try PageToken.decode(request.pageToken, query: "terms")
    var terms = try await store.terms()
    if let after = token?.after.first {
      guard let i = terms.firstIndex(where: { $0.code == after }) else {
        throw ServiceError.invalid("page_token", "the page it continues no longer exists")
      }
      terms = Array(terms[(i + 1)...])
    }
    var response = Smartschool_Supervision_V1_ListTermsResponse()
    response.terms = terms.prefix(size).map(\.proto)
    if terms.count > size, let last = response.terms.last {
      response.nextPageToken = PageToken(after: [last.code]).encode(query: "terms")
    }
    return response
  }

  public func updateTerm(
    request: Smartschool_Supervision_V1_UpdateTermRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_Term {
    try requireTermWriter()
    let existing = try await term(code: request.term.code, field: "term.code")
    let term = try validatedTerm(request.term, id: existing.id, createTime: existing.createTime)
    // A re-sent term that changes nothing writes nothing (no feed event).
    if (term.name, term.start, term.end, term.excluded)
      == (existing.name, existing.start, existing.end, existing.excluded)
    {
      return existing.proto
    }
    try await store.updateTerm(term)
    return term.proto
  }

  // MARK: classrooms

  public func createClassroom(
    request: Smartschool_Supervision_V1_CreateClassroomRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_Classroom {
    let c = request.classroom
    var v = Validator()
    v.code(c.code, "classroom.code")
    v.text(c.name, "classroom.name", required: false, maxLength: 100)
    let equipped = Self.date(c.equippedDate, "classroom.equipped_date", &v)
    let retired = Self.date(c.retiredDate, "classroom.retired_date", &v, required: false)
    if let equipped, let retired, retired <= equipped {
      v.add("classroom.retired_date", "must be after equipped_date")
    }
    v.code(c.schoolCode, "classroom.school_code")
    if !c.classCode.isEmpty { v.code(c.classCode, "classroom.class_code") }
    try v.throwIfInvalid()
    let school = try school(code: c.schoolCode, field: "classroom.school_code")
    try Principal.require().require(.supervisionWrite, at: try path(school))
    let orgPath = try classPath(c.classCode, school: school)
    let t = timestamp()
    let record = ClassroomRecord(
      number: 0, id: EntityID.make(), code: c.code, name: c.name.isEmpty ? c.code : c.name,
      schoolID: school.id, schoolCode: school.code, classCode: c.classCode, orgPath: orgPath,
      equipped: equipped!, retired: retired, createTime: t, updateTime: t)
    do {
      return try await store.createClassroom(record).proto
    } catch ServiceError.alreadyExists {
      throw ServiceError.alreadyExists("a classroom with code \(c.code) already exists")
    }
  }

  /// The org path of a classroom: its class's when given (which must belong to the school),
  /// else its school's.
  func classPath(_ classCode: String, school: Smartschool_Identity_V1_Org) throws(ServiceError)
    -> String
  {
    guard !classCode.isEmpty else { return school.path }
    guard let cls = directory.org(code: classCode), cls.kind == .class, cls.active else {
      throw .notFound("no class has code \(classCode)")
    }
    guard cls.parentID == school.id else {
      throw .invalid("classroom.class_code", "the class does not belong to the school")
    }
    return cls.path
  }

  func visibleClassroom(code: String, field: String, permission: Permission) async throws
    -> ClassroomRecord
  {
    var v = Validator()
    v.code(code, field)
    try v.throwIfInvalid()
    let principal = try Principal.require()
    guard let c = try await store.classroom(code: code) else {
      throw ServiceError.notFound("no classroom has code \(code)")
    }
    try principal.require(permission, at: OrgPath(c.orgPath) ?? .root)
    return c
  }

  public func getClassroom(
    request: Smartschool_Supervision_V1_GetClassroomRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_Classroom {
    try await visibleClassroom(code: request.code, field: "code", permission: .supervisionRead)
      .proto
  }

  public func listClassrooms(
    request: Smartschool_Supervision_V1_ListClassroomsRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_ListClassroomsResponse {
    let size = try PageSize.resolve(request.pageSize)
    var v = Validator()
    let inService = Self.date(request.inServiceOn, "in_service_on", &v, required: false)
    try v.throwIfInvalid()
    let org = try scope(code: request.orgCode)
    let query = "classrooms|\(org.id)|\(request.inServiceOn)"
    let token = try PageToken.decode(request.pageToken, query: query)
    let rows = try await store.classrooms(
      under: org.path, afterCode: token?.after.first, limit: size + 1, inServiceOn: inService)
    var response = Smartschool_Supervision_V1_ListClassroomsResponse()
    response.classrooms = rows.prefix(size).map(\.proto)
    if rows.count > size, let last = response.classrooms.last {
      response.nextPageToken = PageToken(after: [last.code]).encode(query: query)
    }
    return response
  }

  public func updateClassroom(
    request: Smartschool_Supervision_V1_UpdateClassroomRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_Classroom {
    let c = request.classroom
    var existing = try await visibleClassroom(
      code: c.code, field: "classroom.code", permission: .supervisionWrite)
    var v = Validator()
    v.text(c.name, "classroom.name", required: false, maxLength: 100)
    let equipped = Self.date(c.equippedDate, "classroom.equipped_date", &v)
    let retired = Self.date(c.retiredDate, "classroom.retired_date", &v, required: false)
    if let equipped, let retired, retired <= equipped {
      v.add("classroom.retired_date", "must be after equipped_date")
    }
    if !c.schoolCode.isEmpty && c.schoolCode != existing.schoolCode {
      v.add("classroom.school_code", "cannot change; register a new classroom instead")
    }
    if !c.classCode.isEmpty { v.code(c.classCode, "classroom.class_code") }
    try v.throwIfInvalid()
    guard let school = directory.org(id: existing.schoolID) else {
      throw ServiceError.failedPrecondition("the classroom's school is no longer known")
    }
    let before = existing
    existing.orgPath = try classPath(c.classCode, school: school)
    existing.classCode = c.classCode
    existing.name = c.name.isEmpty ? existing.name : c.name
    existing.equipped = equipped!
    existing.retired = retired
    // A re-sent classroom that changes nothing writes nothing (no feed event).
    if existing == before { return before.proto }
    existing.updateTime = timestamp()
    try await store.updateClassroom(existing)
    return existing.proto
  }

  // MARK: lessons

  public func importLessons(
    request: RPCAsyncSequence<Smartschool_Supervision_V1_Lesson, any Error>,
    context: ServerContext
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    try await importLessonRows(request)
  }

  public func importLessonBatches(
    request: RPCAsyncSequence<Smartschool_Supervision_V1_LessonBatch, any Error>,
    context: ServerContext
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    try await importLessonRows(StreamRows(request, field: "lessons") { $0.lessons })
  }

  /// Both lesson imports: the rows numbered in stream order, however many each message held.
  func importLessonRows(
    _ request: some AsyncSequence<Smartschool_Supervision_V1_Lesson, any Error>
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    let principal = try Principal.require()
    if principal.scopes(for: .lessonsImport).isEmpty {
      throw ServiceError.permissionDenied("supervision.lessons.import is not granted to the caller")
    }
    let terms = try await store.terms().map(\.calendar)
    var summary = Smartschool_Common_V1_ImportSummary()
    // Classrooms seen in this stream: at most the register's size, whatever the stream's.
    var classrooms: [String: (record: ClassroomRecord?, inScope: Bool)] = [:]
    var batch: [LessonRecord] = []
    batch.reserveCapacity(lessonBatch)
    var index: Int64 = -1
    // Teachers looked up in this stream, and the row each key was first accepted in: a key
    // sent twice is an error in the data, not a silent replacement.
    var teachers: [String: Bool] = [:]
    var synced = false
    var keys: [UInt64: Int64] = [:]

    // Batches are written while the next is read and checked, so the database's work and
    // this process's overlap; up to two writes are in flight (on PostgreSQL two connections,
    // each batch one transaction; with the rows waiting to be checked and the batch being
    // filled, memory stays within four batches). Two batches of one stream hold no key in
    // common (a repeated key is a row error), so the order they commit in changes nothing
    // stored; a failed write fails the call once the others in flight have ended.
    var writing: [Task<UpsertCounts, any Error>] = []
    func settle(keeping inFlight: Int = 0) async throws {
      var failure: (any Error)? = nil
      while writing.count > inFlight || (failure != nil && !writing.isEmpty) {
        do {
          let counts = try await writing.removeFirst().value
          summary.created += Int64(counts.created)
          summary.updated += Int64(counts.updated)
        } catch {
          if failure == nil { failure = error }
        }
      }
      if let failure { throw failure }
    }
    func flush() async throws {
      guard !batch.isEmpty else { return }
      // The batch's feed events are made here, while the batches before are still written.
      let staged = try StagedLessons(batch)
      batch.removeAll(keepingCapacity: true)
      try await settle(keeping: Self.lessonWritesInFlight - 1)
      writing.append(Task { [store] in try await store.upsertLessons(staged) })
    }
    // Rows wait here until a batch's worth has come; then the classrooms and teachers they
    // name that this stream has not met are read together (one read each, where a lookup per
    // new code cost a round trip each on PostgreSQL) and the rows are checked in stream order.
    var pending: [Smartschool_Supervision_V1_Lesson] = []
    pending.reserveCapacity(lessonBatch)
    func check() async throws {
      guard !pending.isEmpty else { return }
      let codes = Set(
        pending.lazy.map(\.classroomCode).filter {
          classrooms[$0] == nil && TextRules.isCode($0)
        })
      let found = codes.isEmpty ? [:] : try await store.classrooms(codes: Array(codes))
      let verdicts = pending.map { row in
        let code = row.classroomCode
        if classrooms[code] == nil {
          let record = found[code]
          let inScope =
            record.map {
              principal.allows(.lessonsImport, atPath: $0.orgPath)
            } ?? false
          classrooms[code] = (record, inScope)
        }
        let known = classrooms[code]!
        return LessonRows.validate(
          row, classroom: known.record, inScope: known.inScope, terms: terms)
      }
      var unseen = Set<String>()
      for case .success(let lesson) in verdicts where teachers[lesson.teacher] == nil {
        unseen.insert(lesson.teacher)
      }
      if !unseen.isEmpty {
        var known = try await knownTeachers(unseen)
        let unknown = known.filter { !$0.value }.map(\.key)
        if !unknown.isEmpty && !synced {
          // The directory may lag identity by a poll: catch up once per stream.
          synced = true
          try? await directory.sync()
          known.merge(try await knownTeachers(unknown)) { _, new in new }
        }
        teachers.merge(known) { _, new in new }
      }
      for (row, verdict) in zip(pending, verdicts) {
        index += 1
        var checked = verdict
        if case .success(var lesson) = verdict {
          if let first = keys[lesson.packedKey] {
            checked = .failure(
              RowRejection(
                "period", "repeats the lesson (classroom, date, period) of row \(first)"))
          } else {
            if teachers[lesson.teacher] == false {
              if unknownTeachers == .reject {
                checked = .failure(
                  RowRejection(
                    "teacher_external_id", "names no teacher known to identity"))
              } else {
                lesson.verified = false
                checked = .success(lesson)
              }
            }
            if case .success = checked { keys[lesson.packedKey] = index }
          }
        }
        switch checked {
        case .success(let lesson):
          summary.accepted += 1
          if !lesson.verified { summary.held += 1 }
          batch.append(lesson)
          if batch.count >= lessonBatch { try await flush() }
        case .failure(let rejection):
          summary.rejected += 1
          if summary.errors.count < Self.maxRowErrors {
            summary.errors.append(
              .with {
                $0.index = index
                $0.key = "\(row.classroomCode)/\(row.date)/\(row.period)"
                $0.field = rejection.field
                $0.reason = rejection.reason
              })
          }
        }
      }
      pending.removeAll(keepingCapacity: true)
    }
    do {
      for try await row in request {
        summary.received += 1
        pending.append(row)
        if pending.count >= lessonBatch { try await check() }
      }
    } catch {
      // A broken stream keeps every whole batch it sent, as before: those being written
      // commit before the call fails.
      _ = try? await settle()
      throw error
    }
    try await check()
    try await flush()
    try await settle()
    return summary
  }

  public func listLessons(
    request: Smartschool_Supervision_V1_ListLessonsRequest,
    response: RPCWriter<Smartschool_Supervision_V1_Lesson>, context: ServerContext
  ) async throws {
    var v = Validator()
    if request.classroomCode.isEmpty == request.orgCode.isEmpty {
      v.add("classroom_code", "give exactly one of classroom_code and org_code")
    }
    let from = Self.date(request.fromDate, "from_date", &v)
    let to = Self.date(request.toDate, "to_date", &v)
    if let from, let to {
      if to < from { v.add("to_date", "must not be before from_date") }
      if to.dayNumber - from.dayNumber > 400 {
        v.add("to_date", "the range spans at most 400 days")
      }
    }
    try v.throwIfInvalid()
    var path: String
    var classroom: Int64? = nil
    if !request.classroomCode.isEmpty {
      let c = try await visibleClassroom(
        code: request.classroomCode, field: "classroom_code", permission: .supervisionRead)
      path = c.orgPath
      classroom = c.number
    } else {
      path = try scope(code: request.orgCode).path
    }
    var after: (Int, Int64, Int)? = nil
    while true {
      let page = try await store.lessons(
        classroom: classroom, under: path, days: from!.dayNumber...to!.dayNumber, after: after,
        limit: 1000)
      try await response.write(contentsOf: page.map(\.proto))
      guard page.count == 1000, let last = page.last else { return }
      after = (last.date.dayNumber, last.classroom, last.period)
    }
  }

  // MARK: compliance

  public func getComplianceReport(
    request: Smartschool_Supervision_V1_GetComplianceReportRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_ComplianceReport {
    var v = Validator()
    let from = Self.date(request.fromWeek, "from_week", &v, required: false)
    let to = Self.date(request.toWeek, "to_week", &v, required: false)
    if let from, let to, to.monday < from.monday {
      v.add("to_week", "must not be before from_week")
    }
    try v.throwIfInvalid()
    let org = try scope(code: request.orgCode)
    let term = try await term(code: request.termCode)
    let calendar = term.calendar
    for (date, field) in [(from, "from_week"), (to, "to_week")] {
      if let date, date.monday < calendar.start.monday || date > calendar.end {
        throw ServiceError.invalid(field, "must name a week of term \(term.code)")
      }
    }
    let weeks = calendar.teachingWeeks.filter { w in
      (from.map { w >= $0.monday } ?? true) && (to.map { w <= $0.monday } ?? true)
    }
    // The classrooms and their usage are read side by side.
    async let rooms = store.classrooms(
      under: org.path, afterCode: nil, limit: nil, inServiceOn: nil)
    var usage: UsageTable = [:]
    if let first = weeks.first, let last = weeks.last {
      usage = try await self.usage(under: org.path, weeks: first.dayNumber...last.dayNumber)
    }
    let classrooms = try await rooms
    let scopePath = try path(org)
    let depth = scopePath.ids.count
    let children = directory.children(of: org.id)
    let result = Compliance.evaluate(classrooms: classrooms.map(\.span), weeks: weeks, usage: usage)
    { c in
      // The child org is the path segment just below the scope.
      let ids = c.orgPath.split(separator: "/")
      return ids.count > depth ? String(ids[depth]) : nil
    }
    var report = Smartschool_Supervision_V1_ComplianceReport()
    report.termCode = term.code
    report.weeks = weeks.map(\.description)
    report.scope = result.scope.figures(code: org.code, name: org.name)
    report.children = children.map { child in
      (result.groups[child.id] ?? ComplianceTally()).figures(code: child.code, name: child.name)
    }
    report.byWeek = weeks.map { w in
      (result.byWeek[w] ?? ComplianceTally()).figures(week: w.description)
    }
    report.bySchoolKind = KindSplit.figures(kindTallies(classrooms, result))
    return report
  }

  /// The tallies of `classrooms` in `result` (an evaluation of them) by the kind of each
  /// classroom's school.
  func kindTallies(_ classrooms: [ClassroomRecord], _ result: ComplianceResult)
    -> [Smartschool_Common_V1_SchoolKind: ComplianceTally]
  {
    var kindOf: [String: Smartschool_Common_V1_SchoolKind] = [:]
    var byKind: [Smartschool_Common_V1_SchoolKind: ComplianceTally] = [:]
    for c in classrooms {
      guard let tally = result.byClassroom[c.number] else { continue }
      if kindOf[c.schoolID] == nil {
        kindOf[c.schoolID] = directory.org(id: c.schoolID)?.schoolKind ?? .unspecified
      }
      byKind[kindOf[c.schoolID]!, default: ComplianceTally()].merge(tally)
    }
    return Dictionary(
      KindSplit.kinds.map { k in (k, byKind[k] ?? ComplianceTally()) },
      uniquingKeysWith: { a, _ in a })
  }

  public func getWeeklyNotice(
    request: Smartschool_Supervision_V1_GetWeeklyNoticeRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_WeeklyNotice {
    var v = Validator()
    let day = Self.date(request.week, "week", &v)
    try v.throwIfInvalid()
    let org = try scope(code: request.orgCode)
    let week = day!.monday
    let terms = try await store.terms()
    guard let term = terms.first(where: { $0.calendar.teachingWeeks.contains(week) }) else {
      throw ServiceError.failedPrecondition("week \(week) is not a teaching week of any term")
    }
    let weeks = term.calendar.teachingWeeks
    let i = weeks.firstIndex(of: week)!
    let previous = i > 0 ? weeks[i - 1] : nil
    // The classrooms and their usage are read side by side.
    async let rooms = store.classrooms(
      under: org.path, afterCode: nil, limit: nil, inServiceOn: nil)
    let usage = try await self.usage(
      under: org.path, weeks: (previous ?? week).dayNumber...week.dayNumber)
    let classrooms = try await rooms
    let schools = directory.orgs(under: try path(org), kind: .school).map {
      WeeklyNoticeBuilder.School(code: $0.code, name: $0.name, kind: $0.schoolKind)
    }
    return WeeklyNoticeBuilder.build(
      termCode: term.code, week: week, previous: previous, schools: schools,
      classrooms: classrooms, usage: usage)
  }

  // MARK: teachers

  public func getTeacherTargets(
    request: Smartschool_Supervision_V1_GetTeacherTargetsRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_TeacherTargetsReport {
    let org = try scope(code: request.orgCode)
    return try await teacherTargets(org: org, term: try await term(code: request.termCode))
  }

  /// Every active teacher of `org`'s subtree against `term`'s lesson target.
  func teacherTargets(org: Smartschool_Identity_V1_Org, term: TermRecord) async throws
    -> Smartschool_Supervision_V1_TeacherTargetsReport
  {
    // Lessons in holiday weeks count for nothing: only the term's teaching days are counted.
    var counts: [String: Int] = [:]
    for (teacher, perWeek) in try await teacherLessons(
      under: org.path, weeks: term.calendar.teachingWeeks,
      days: term.start.dayNumber...term.end.dayNumber)
    {
      counts[teacher] = perWeek.values.reduce(0, +)
    }
    var report = Smartschool_Supervision_V1_TeacherTargetsReport()
    report.termCode = term.code
    for u in try await directory.users(under: try path(org), kind: .teacher) {
      let lessons = counts[u.externalID] ?? 0
      let required = TeacherRule.requiredLessons(birthYear: u.birthYear, termStart: term.start)
      let met = lessons >= required
      let school = directory.ancestor(of: u.orgID, kind: .school)
      report.teachers.append(
        .with {
          $0.teacherExternalID = u.externalID
          $0.displayName = u.displayName
          $0.schoolCode = school?.code ?? ""
          $0.schoolKind = school?.schoolKind ?? .unspecified
          $0.birthYear = Int32(u.birthYear)
          $0.ageAtTermStart = Int32(
            TeacherRule.age(birthYear: u.birthYear, termStart: term.start) ?? -1)
          $0.lessons = Int64(lessons)
          $0.required = Int64(required)
          $0.met = met
        })
      if met { report.metCount += 1 }
    }
    report.teacherCount = Int64(report.teachers.count)
    let share = Percent(numerator: Int(report.metCount), denominator: report.teachers.count)
    report.metSharePercent = share.value
    report.metShareText = share.description
    report.bySchoolKind = KindSplit.shares(report.teachers.map { ($0.schoolKind, $0.met) })
    return report
  }

  public func createTrainingRecord(
    request: Smartschool_Supervision_V1_CreateTrainingRecordRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_TrainingRecord {
    var r = request.record
    var v = Validator()
    v.code(r.teacherExternalID, "record.teacher_external_id")
    v.text(r.course, "record.course", maxLength: 200)
    let halves = r.hours * 2
    v.check(
      r.hours >= 0.5 && r.hours <= 200 && halves == halves.rounded(), "record.hours",
      "must be 0.5-200 in steps of 0.5")
    let completed = Self.date(r.completedDate, "record.completed_date", &v)
    try v.throwIfInvalid()
    guard let teacher = try await directory.user(externalID: r.teacherExternalID),
      teacher.active, teacher.kind == .teacher, let home = directory.org(id: teacher.orgID)
    else { throw ServiceError.notFound("no teacher has external id \(r.teacherExternalID)") }
    try Principal.require().require(.supervisionWrite, at: try path(home))
    r.id = EntityID.make()
    r.orgPath = home.path
    r.createTime = Google_Protobuf_Timestamp(date: now())
    try await store.createTraining(
      r, halfHours: Int(halves), year: completed!.components.year)
    return r
  }

  public func getTrainingReport(
    request: Smartschool_Supervision_V1_GetTrainingReportRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_TrainingReport {
    var v = Validator()
    Self.year(request.year, "year", &v)
    try v.throwIfInvalid()
    let org = try scope(code: request.orgCode)
    let halves = try await store.trainingHalfHours(under: org.path, year: Int(request.year))
    var report = Smartschool_Supervision_V1_TrainingReport()
    report.year = request.year
    report.requiredHours = Double(TeacherRule.trainingHours)
    for u in try await directory.users(under: try path(org), kind: .teacher) {
      let h = halves[u.externalID] ?? 0
      let met = TeacherRule.trainingMet(halfHours: h)
      report.teachers.append(
        .with {
          $0.teacherExternalID = u.externalID
          $0.displayName = u.displayName
          $0.hours = Double(h) / 2
          $0.met = met
          $0.schoolKind =
            directory.ancestor(of: u.orgID, kind: .school)?.schoolKind ?? .unspecified
        })
      if met { report.metCount += 1 }
    }
    report.teacherCount = Int64(report.teachers.count)
    let share = Percent(numerator: Int(report.metCount), denominator: report.teachers.count)
    report.metSharePercent = share.value
    report.metShareText = share.description
    report.bySchoolKind = KindSplit.shares(report.teachers.map { ($0.schoolKind, $0.met) })
    return report
  }

  // MARK: construction

  public func putFacilityReport(
    request: Smartschool_Supervision_V1_PutFacilityReportRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_FacilityReport {
    var r = request.report
    var v = Validator()
    v.code(r.schoolCode, "report.school_code")
    Self.year(r.year, "report.year", &v)
    let counts: [(Int32, String)] = [
      (r.multimediaClassrooms, "multimedia_classrooms"), (r.studentComputers, "student_computers"),
      (r.teacherComputers, "teacher_computers"), (r.students, "students"),
      (r.teachers, "teachers"), (r.broadbandMbps, "broadband_mbps"),
      (r.classrooms, "classrooms"),
    ]
    for (value, name) in counts {
      v.check((0...10_000_000).contains(value), "report.\(name)", "must be 0-10000000")
    }
    try v.throwIfInvalid()
    let school = try school(code: r.schoolCode, field: "report.school_code")
    try Principal.require().require(.supervisionWrite, at: try path(school))
    // A re-sent report that changes nothing writes nothing (no feed event).
    if let stored = try await store.facility(schoolCode: r.schoolCode, year: Int(r.year)) {
      var old = stored
      var new = r
      old.clearUpdateTime()
      new.clearUpdateTime()
      if old == new { return stored }
    }
    r.updateTime = Google_Protobuf_Timestamp(date: now())
    try await store.putFacility(r, orgPath: school.path)
    return r
  }

  public func getFacilityReport(
    request: Smartschool_Supervision_V1_GetFacilityReportRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_FacilityReport {
    var v = Validator()
    Self.year(request.year, "year", &v)
    try v.throwIfInvalid()
    let school = try scope(code: request.schoolCode, field: "school_code")
    guard let report = try await store.facility(schoolCode: school.code, year: Int(request.year))
    else {
      throw ServiceError.notFound("no facility report for \(school.code) in \(request.year)")
    }
    return report
  }

  public func getCoverageReport(
    request: Smartschool_Supervision_V1_GetCoverageReportRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_CoverageReport {
    var v = Validator()
    Self.year(request.year, "year", &v)
    try v.throwIfInvalid()
    let org = try scope(code: request.orgCode)
    let reports = try await store.facilities(under: org.path, year: Int(request.year))
    let schools = directory.orgs(under: try path(org), kind: .school).map {
      Coverage.School(code: $0.code, kind: $0.schoolKind)
    }
    return Coverage.report(
      year: Int(request.year), schools: schools, reports: reports.mapValues(FacilityFacts.init))
  }

  // MARK: inspections

  public func createInspection(
    request: Smartschool_Supervision_V1_CreateInspectionRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_Inspection {
    let principal = try Principal.require()
    var i = request.inspection
    var v = Validator()
    v.code(i.schoolCode, "inspection.school_code")
    v.text(i.inspector, "inspection.inspector", required: false, maxLength: 100)
    let day = Self.date(i.date, "inspection.date", &v)
    if !i.classroomCode.isEmpty { v.code(i.classroomCode, "inspection.classroom_code") }
    if !i.teacherExternalID.isEmpty {
      v.code(i.teacherExternalID, "inspection.teacher_external_id")
    }
    v.check((0...16).contains(i.subject.rawValue), "inspection.subject", "must be a known subject")
    v.text(i.findings, "inspection.findings", maxLength: 4000)
    v.check((1...4).contains(i.rating.rawValue), "inspection.rating", "must be 优, 良, 中 or 差")
    v.check((0...2).contains(i.kind.rawValue), "inspection.kind", "must be a known kind")
    v.check(
      [.unspecified, .open, .notNeeded].contains(i.followUp), "inspection.follow_up",
      "must be OPEN or NOT_NEEDED on create (it moves by UpdateInspectionFollowUp)")
    if let day, day > Inspections.today(now()) {
      v.add("inspection.date", "must not be in the future")
    }
    try v.throwIfInvalid()
    let school = try school(code: i.schoolCode, field: "inspection.school_code")
    try principal.require(.inspectionsWrite, at: try path(school))
    if !i.classroomCode.isEmpty {
      guard let c = try await store.classroom(code: i.classroomCode), c.schoolID == school.id
      else {
        throw ServiceError.invalid(
          "inspection.classroom_code", "names no smart classroom of the school")
      }
    }
    i.id = EntityID.make()
    if i.inspector.isEmpty { i.inspector = principal.username }
    i.kind = Inspections.kind(i)
    if i.followUp == .unspecified { i.followUp = .open }
    i.followUpNote = ""
    i.followUpDate = ""
    i.orgPath = school.path
    i.createTime = Google_Protobuf_Timestamp(date: now())
    return try await store.putInspection(i, key: Inspections.naturalKey(i), day: day!)
  }

  public func updateInspectionFollowUp(
    request: Smartschool_Supervision_V1_UpdateInspectionFollowUpRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_Inspection {
    let principal = try Principal.require()
    var v = Validator()
    v.text(request.inspectionID, "inspection_id", maxLength: 64)
    v.check(
      [.open, .rectified, .verified].contains(request.status), "status",
      "must be RECTIFIED, VERIFIED or OPEN")
    v.text(request.note, "note", maxLength: 2000)
    try v.throwIfInvalid()
    guard let stored = try await store.inspection(id: request.inspectionID) else {
      throw ServiceError.notFound("no inspection has id \(request.inspectionID)")
    }
    let at = OrgPath(stored.orgPath) ?? .root
    // The school reports its rectification; only an inspector verifies it (or reopens it).
    let schoolReports =
      request.status == .rectified && principal.allows(.supervisionWrite, atPath: stored.orgPath)
    if !schoolReports { try principal.require(.inspectionsWrite, at: at) }
    let status = request.status
    let note = request.note
    let today = Inspections.today(now()).description
    return try await store.updateInspection(id: stored.id) { current in
      guard Inspections.allowed(from: current.followUp, to: status) else {
        throw ServiceError.failedPrecondition(
          "the follow-up cannot move from \(current.followUp) to \(status)")
      }
      var changed = current
      changed.followUp = status
      changed.followUpNote = note
      changed.followUpDate = today
      return changed
    }
  }

  public func listInspections(
    request: Smartschool_Supervision_V1_ListInspectionsRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_ListInspectionsResponse {
    let size = try PageSize.resolve(request.pageSize)
    var v = Validator()
    if request.year != 0 { Self.year(request.year, "year", &v) }
    try v.throwIfInvalid()
    let org = try scope(code: request.orgCode)
    let query = "inspections|\(org.id)|\(request.year)"
    let token = try PageToken.decode(request.pageToken, query: query)
    var after: (Int, String)? = nil
    if let t = token {
      guard t.after.count == 2, let day = Int(t.after[0]) else {
        throw ServiceError.invalid("page_token", "is not a page token this service issued")
      }
      after = (day, t.after[1])
    }
    let rows = try await store.inspections(
      under: org.path, year: request.year == 0 ? nil : Int(request.year), after: after,
      limit: size + 1)
    var response = Smartschool_Supervision_V1_ListInspectionsResponse()
    response.inspections = Array(rows.prefix(size))
    if rows.count > size, let last = response.inspections.last,
      let day = CalendarDate(last.date)
    {
      response.nextPageToken = PageToken(after: [String(day.dayNumber), last.id])
        .encode(query: query)
    }
    return response
  }

  public func getInspectionSummary(
    request: Smartschool_Supervision_V1_GetInspectionSummaryRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_InspectionSummary {
    var v = Validator()
    Self.year(request.year, "year", &v)
    try v.throwIfInvalid()
    let org = try scope(code: request.orgCode)
    let year = Int(request.year)
    let yearDays =
      CalendarDate(year: year, month: 1, day: 1)!.dayNumber
      ... CalendarDate(year: year, month: 12, day: 31)!.dayNumber
    let visits = try await store.inspections(under: org.path, days: yearDays)
    var researchTerm: String? = nil
    var researchVisits = visits
    if !request.termCode.isEmpty {
      let term = try await term(code: request.termCode)
      researchTerm = term.code
      researchVisits = try await store.inspections(
        under: org.path, days: term.start.dayNumber...term.end.dayNumber)
    }
    let schools = directory.orgs(under: try path(org), kind: .school).map {
      Inspections.School(code: $0.code, name: $0.name, kind: $0.schoolKind)
    }
    return Inspections.summary(
      year: year, schools: schools, visits: visits, researchTerm: researchTerm,
      researchVisits: researchVisits)
  }

  // MARK: rankings

  public func getRanking(
    request: Smartschool_Supervision_V1_GetRankingRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_Ranking {
    var v = Validator()
    let day = Self.date(request.date, "date", &v)
    v.check(
      (1...3).contains(request.period.rawValue), "period", "must be MONTH, HALF_YEAR or YEAR")
    try v.throwIfInvalid()
    let org = try scope(code: request.orgCode)
    let (from, to) = Rankings.bounds(request.period, day!)
    let (previousFrom, previousTo) = Rankings.bounds(request.period, from.adding(days: -1))
    let terms = try await store.terms().map(\.calendar)
    let weeks = Rankings.weeks(terms, from: from, to: to)
    let previousWeeks = Rankings.weeks(terms, from: previousFrom, to: previousTo)
    func usage(_ weeks: [CalendarDate]) async throws -> UsageTable? {
      guard let first = weeks.first, let last = weeks.last else { return nil }
      return try await self.usage(under: org.path, weeks: first.dayNumber...last.dayNumber)
    }
    // The classrooms and the two periods' usage are read side by side.
    async let rooms = store.classrooms(
      under: org.path, afterCode: nil, limit: nil, inServiceOn: nil)
    async let currentUsage = usage(weeks)
    async let previousUsage = usage(previousWeeks)
    let classrooms = try await rooms
    let schoolOf = Dictionary(
      classrooms.map { ($0.number, $0.schoolCode) }, uniquingKeysWith: { a, _ in a })
    func evaluate(_ weeks: [CalendarDate], _ usage: UsageTable?) -> ComplianceResult {
      guard let usage else { return ComplianceResult(weeks: []) }
      return Compliance.evaluate(classrooms: classrooms.map(\.span), weeks: weeks, usage: usage)
      { schoolOf[$0.number] }
    }
    let (thisUsage, lastUsage) = try await (currentUsage, previousUsage)
    // The two periods are evaluated side by side.
    async let currentResult = evaluate(weeks, thisUsage)
    async let previousResult = evaluate(previousWeeks, lastUsage)
    let (current, previous) = await (currentResult, previousResult)
    let schools = directory.orgs(under: try path(org), kind: .school).map {
      WeeklyNoticeBuilder.School(code: $0.code, name: $0.name, kind: $0.schoolKind)
    }
    var ranking = Smartschool_Supervision_V1_Ranking()
    ranking.period = request.period
    ranking.fromDate = from.description
    ranking.toDate = to.description
    ranking.previousFromDate = previousFrom.description
    ranking.previousToDate = previousTo.description
    ranking.weeks = weeks.map(\.description)
    ranking.schools = Rankings.rank(schools, current: current.groups, previous: previous.groups)
    ranking.schoolsBelowStandard = ranking.schools.filter(\.belowStandard).map(\.schoolCode)
    ranking.scope = current.scope.figures(code: org.code, name: org.name)
    ranking.previousScope = previous.scope.figures(code: org.code, name: org.name)
    var byKind: [Smartschool_Common_V1_SchoolKind: ComplianceTally] = [:]
    for s in schools {
      guard let t = current.groups[s.code] else { continue }
      byKind[s.kind, default: ComplianceTally()].merge(t)
    }
    ranking.bySchoolKind = KindSplit.figures(byKind)
    return ranking
  }

  // MARK: early warning

  public func listWarnings(
    request: Smartschool_Supervision_V1_ListWarningsRequest, context: ServerContext
  ) async throws -> Smartschool_Supervision_V1_WarningList {
    var v = Validator()
    let asOf = Self.date(request.asOf, "as_of", &v, required: false) ?? Inspections.today(now())
    let since = Self.date(request.changedSince, "changed_since", &v, required: false)
    v.check(
      (0...20).contains(request.consecutiveWeeks), "consecutive_weeks", "must be 0-20 (0: default)")
    try v.throwIfInvalid()
    let org = try scope(code: request.orgCode)
    let term = try await term(code: request.termCode)
    if asOf < term.start { throw ServiceError.invalid("as_of", "is before the term's start") }
    let n = request.consecutiveWeeks == 0 ? warningWeeks : Int(request.consecutiveWeeks)
    let allWeeks = term.calendar.teachingWeeks
    // Only teaching weeks that ended before the day judged on.
    let weeks = allWeeks.filter { $0.adding(days: 6) < asOf }
    let scopePath = try path(org)
    let schools = directory.orgs(under: scopePath, kind: .school)
    let names = Dictionary(schools.map { ($0.code, $0.name) }, uniquingKeysWith: { a, _ in a })
    var warnings: [Warnings.Warning] = []
    func add(
      _ kind: Smartschool_Supervision_V1_WarningKind, school: String, _ e: Warnings.Episode,
      reason: String, _ fill: (inout Warnings.Warning) -> Void = { _ in }
    ) {
      var w = Warnings.Warning()
      w.kind = kind
      w.schoolCode = school
      w.schoolName = names[school] ?? ""
      w.triggeredDate = e.triggered.description
      w.clearedDate = e.cleared?.description ?? ""
      w.reason = reason
      fill(&w)
      warnings.append(w)
    }

    if let first = weeks.first, let last = weeks.last {
      // The teachers' lessons and the teachers are read while the classrooms' lessons are
      // evaluated.
      async let teacherCounts = teacherLessons(
        under: org.path, weeks: weeks, days: term.start.dayNumber...term.end.dayNumber)
      async let teachers = directory.users(under: scopePath, kind: .teacher)
      async let rooms = store.classrooms(
        under: org.path, afterCode: nil, limit: nil, inServiceOn: nil)
      let usage = try await self.usage(under: org.path, weeks: first.dayNumber...last.dayNumber)
      let classrooms = try await rooms
      let zero = WeekUsage(lessons: 0, subjects: 0)
      for (school, rooms) in Dictionary(grouping: classrooms, by: \.schoolCode) {
        // Per week: the school's classrooms in service, their lessons and subjects (the
        // notice's rule).
        var sums = Array(repeating: zero, count: weeks.count)
        var inService = Array(repeating: 0, count: weeks.count)
        for c in rooms {
          let row = usage.row(of: c.number)
          let series = weeks.enumerated().map { i, week -> (week: CalendarDate, below: Bool?) in
            guard c.span.inService(weekOf: week) else { return (week, nil) }
            let u = usage.usage(row: row, classroom: c.number, week: week) ?? zero
            sums[i].lessons += u.lessons
            sums[i].subjects += u.subjects
            inService[i] += 1
            return (week, !u.compliant)
          }
          for e in Warnings.episodes(series, n: n) {
            add(.classroomBelowStandard, school: school, e, reason: Warnings.reason(e)) {
              $0.classroomCode = c.code
              $0.weeksBelow = Int32(e.weeks)
            }
          }
        }
        let series = weeks.enumerated().map { i, week -> (week: CalendarDate, below: Bool?) in
          let rooms = inService[i]
          guard rooms > 0 else { return (week, nil) }
          return (
            week,
            sums[i].lessons < Compliance.lessonStandard * rooms
              || sums[i].subjects < Compliance.subjectStandard * rooms
          )
        }
        for e in Warnings.episodes(series, n: n) {
          add(.schoolBelowStandard, school: school, e, reason: Warnings.reason(e)) {
            $0.weeksBelow = Int32(e.weeks)
          }
        }
      }

      // Teachers: lessons week by week (teaching days only), against the term's target.
      let index = Dictionary(
        weeks.enumerated().map { ($1.dayNumber, $0) }, uniquingKeysWith: { a, _ in a })
      var weekly: [String: [Int]] = [:]
      for (teacher, counts) in try await teacherCounts {
        for (week, count) in counts {
          guard let i = index[week] else { continue }
          weekly[teacher, default: Array(repeating: 0, count: weeks.count)][i] = count
        }
      }
      let left = weeks.map { w in allWeeks.filter { $0 > w }.count }
      for u in try await teachers {
        let required = TeacherRule.requiredLessons(birthYear: u.birthYear, termStart: term.start)
        let counts = weekly[u.externalID] ?? Array(repeating: 0, count: weeks.count)
        let school = directory.ancestor(of: u.orgID, kind: .school)?.code ?? ""
        for (e, lessons) in Warnings.teacherEpisodes(
          weekly: Array(zip(weeks, counts)).map { ($0.0, $0.1) }, left: left, required: required)
        {
          let weeksLeft = left[weeks.firstIndex(of: e.triggered)!]
          add(
            .teacherAtRisk, school: school, e,
            reason: "\(lessons) of \(required) lessons with \(weeksLeft) teaching weeks left"
          ) {
            $0.teacherExternalID = u.externalID
            $0.lessons = Int64(lessons)
            $0.required = Int64(required)
          }
        }
      }
    }

    // Inspections: the calendar year of the day judged on, from its last quarter.
    let year = asOf.components.year
    let lastQuarter = CalendarDate(year: year, month: 10, day: 1)!
    if asOf >= lastQuarter {
      let visits = try await store.inspections(
        under: org.path,
        days: CalendarDate(year: year, month: 1, day: 1)!.dayNumber...asOf.dayNumber)
      var firstInspection: [String: CalendarDate] = [:]
      for v in visits where Inspections.kind(v) == .inspection {
        guard let d = CalendarDate(v.date) else { continue }
        firstInspection[v.schoolCode] = min(firstInspection[v.schoolCode] ?? d, d)
      }
      for s in schools {
        let inspected = firstInspection[s.code]
        if let inspected, inspected < lastQuarter { continue }
        let e = Warnings.Episode(
          triggered: lastQuarter, cleared: inspected, from: lastQuarter, weeks: 0)
        add(.schoolNotInspected, school: s.code, e, reason: "not inspected in \(year) by October 1")
      }
    }

    var list = Smartschool_Supervision_V1_WarningList()
    list.termCode = term.code
    list.asOf = asOf.description
    list.consecutiveWeeks = Int32(n)
    list.warnings = Warnings.sorted(
      warnings.filter { w in
        (!request.activeOnly || w.clearedDate.isEmpty)
          && (since.map { w.triggeredDate >= $0.description || w.clearedDate >= $0.description }
            ?? true)
      })
    list.active = Int64(list.warnings.filter { $0.clearedDate.isEmpty }.count)
    list.cleared = Int64(list.warnings.count) - list.active
    return list
  }

  // MARK: change feed

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
