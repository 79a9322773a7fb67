import Crypto
import Foundation
import GRPCCore
import SmartSchoolClient
import SmartSchoolModel
import SwiftProtobuf
import Synchronization

/// The result of importing one file.
public struct ImportOutcome: Sendable {
  /// The kind imported.
  public var kind: ImportKind
  /// Data rows read from the file.
  public var rows = 0
  /// Rows accepted by the service (new, replaced or already present).
  public var accepted = 0
  /// Rejected rows: line number and reason, in line order (the first 10,000).
  public var rejections: [(line: Int, reason: String)] = []
  /// How many rows were rejected in all.
  public var rejectedCount = 0

  init(kind: ImportKind) { self.kind = kind }
}

/// Where import progress and rejections go: rejections one line each on stderr, progress as a
/// rows/s bar on a terminal and as plain lines otherwise. Silent when `quiet`.
public final class ImportConsole: Sendable {
  let quiet: Bool
  let terminal: Bool
  private let state = Mutex<(last: Date, started: Date, lines: [String])>(
    (Date.distantPast, Date(), []))
  /// Also keeps every line it prints (tests read them).
  public var printed: [String] { state.withLock { $0.lines } }

  /// A console; `quiet` suppresses progress (rejections are still kept and printed).
  public init(quiet: Bool = false) {
    self.quiet = quiet
    terminal = isatty(2) == 1
  }

  func reject(_ file: String, line: Int, _ reason: String) {
    let text = "\(file):\(line): \(reason)"
    state.withLock { $0.lines.append(text) }
    writeErr((terminal && !quiet ? "\r\u{1B}[K" : "") + text + "\n")
  }

  func started() { state.withLock { $0.started = Date() } }

  func progress(_ kind: ImportKind, rows: Int, final: Bool = false) {
    guard !quiet else { return }
    let now = Date()
    let (due, rate): (Bool, Double) = state.withLock {
      let elapsed = max(0.001, now.timeIntervalSince($0.started))
      let due = final || now.timeIntervalSince($0.last) >= (terminal ? 0.2 : 5)
      if due { $0.last = now }
      return (due, Double(rows) / elapsed)
    }
    guard due else { return }
    let text = "\(kind.rawValue): \(rows) rows, \(Int(rate)) rows/s"
    if terminal {
      let bar = String(repeating: "█", count: min(30, rows / 1000 % 31))
      writeErr("\r\u{1B}[K\(text) \(bar)" + (final ? "\n" : ""))
    } else {
      writeErr(text + "\n")
    }
  }
}

/// Writes to standard error unbuffered.
func writeErr(_ text: String) {
  FileHandle.standardError.write(Data(text.utf8))
}

/// Writes to standard output unbuffered.
func writeOut(_ text: String) {
  FileHandle.standardOutput.write(Data(text.utf8))
}

/// Maps 0-based stream indexes back to CSV lines, keeping one entry per break in the
/// "one message per line, lines consecutive" pattern, so memory stays small.
final class LineMap: Sendable {
  private let runs = Mutex<[(index: Int, line: Int)]>([])
  private let lastLine = Mutex<(index: Int, line: Int)>((-1, -1))

  func record(index: Int, line: Int) {
    let previous = lastLine.withLock { old in
      defer { old = (index, line) }
      return old
    }
    if previous.index + 1 != index || previous.line + 1 != line {
      runs.withLock { $0.append((index, line)) }
    }
  }

  func line(of index: Int) -> Int {
    runs.withLock { runs in
      var low = 0
      var high = runs.count - 1
      var best = 0
      while low <= high {
        let mid = (low + high) / 2
        if runs[mid].index <= index {
          best = mid
          low = mid + 1
        } else {
          high = mid - 1
        }
      }
      guard !runs.isEmpty else { return index + 2 }
      let run = runs[best]
      // Within a run lines advance with indexes, but repeated lines start new runs.
      return run.line + (index - run.index)
    }
  }
}

/// A value behind a lock, shareable between tasks and closures.
final class Locked<Value: Sendable>: Sendable {
  private let mutex: Mutex<Value>
  init(_ value: Value) { mutex = Mutex(value) }
  func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
    try mutex.withLock { try body(&$0) }
  }
}

/// Imports CSV files through a ``SmartSchoolClient``: every kind maps to its service's bulk
/// RPC, or to per-row calls made idempotent by natural key where no bulk RPC exists.
public struct Importer: Sendable {
  let client: SmartSchoolClient
  let console: ImportConsole

  /// An importer using `client`.
  public init(client: SmartSchoolClient, console: ImportConsole) {
    self.client = client
    self.console = console
  }

  /// Imports `path` as `kind`. Throws for a file-level problem (header, unreadable file) and
  /// for a failed connection; row problems are in the outcome.
  public func run(_ kind: ImportKind, path: String) async throws -> ImportOutcome {
    // Header problems stop the import before anything is sent.
    _ = try CSVTable(
      reader: CSVReader(path: path), expected: kind.headers, optional: kind.optionalHeaders)
    console.started()
    let c = client
    switch kind {
    case .orgs:
      return try await stream(
        kind, path, { row in [try .with { $0.org = try RowConversion.org(row) }] }
      ) {
        try await c.identity.importOrgs(requestProducer: $0)
      }
    case .users:
      return try await stream(
        kind, path, { row in [try RowConversion.user(row)] },
        pack: { users in [.with { $0.users = users }] }
      ) {
        try await c.identity.importUsers(requestProducer: $0)
      }
    case .guardians:
      return try await stream(kind, path, { try [RowConversion.guardian($0)] }) {
        try await c.identity.importGuardians(requestProducer: $0)
      }
    case .lessons:
      return try await stream(
        kind, path, { try [RowConversion.lesson($0)] },
        pack: { lessons in [.with { $0.lessons = lessons }] }
      ) {
        try await c.supervision.importLessonBatches(requestProducer: $0)
      }
    case .scores:
      return try await stream(
        kind, path, { try [RowConversion.score($0)] },
        pack: { rows in [.with { $0.rows = rows }] }
      ) {
        try await c.assessment.importScoreBatches(requestProducer: $0)
      }
    case .curriculum:
      let seen = Locked<Set<String>>([])
      return try await stream(
        kind, path,
        { row in
          try RowConversion.curriculum(row).filter { node in
            node.kind == .chapter || seen.withLock { $0.insert(node.code).inserted }
          }.map { node in .with { $0.node = node } }
        }
      ) { try await c.catalogue.importCurriculum(requestProducer: $0) }
    case .terms:
      return try await perRow(kind, path, RowConversion.term) { term in
        do {
          _ = try await c.supervision.createTerm(.with { $0.term = term })
        } catch let error as RPCError where error.code == .alreadyExists {
          _ = try await c.supervision.updateTerm(.with { $0.term = term })
        }
      }
    case .classrooms:
      return try await perRow(kind, path, RowConversion.classroom) { room in
        do {
          _ = try await c.supervision.createClassroom(.with { $0.classroom = room })
        } catch let error as RPCError where error.code == .alreadyExists {
          _ = try await c.supervision.updateClassroom(.with { $0.classroom = room })
        }
      }
    case .facilities:
      return try await perRow(kind, path, RowConversion.facility) { report in
        _ = try await c.supervision.putFacilityReport(.with { $0.report = report })
      }
    case .training:
      let existing = Locked(try await existingTraining())
      return try await perRow(kind, path, RowConversion.training) { record in
        let key = Self.trainingKey(record)
        if existing.withLock({ $0.contains(key) }) { return }
        _ = try await c.supervision.createTrainingRecord(.with { $0.record = record })
        existing.withLock { _ = $0.insert(key) }
      }
    case .inspections:
      let existing = Locked<[String: Set<String>]>([:])
      return try await perRow(kind, path, RowConversion.inspection) { inspection in
        let key = Self.inspectionKey(inspection)
        let year = Int32(inspection.date.prefix(4)) ?? 0
        let known = try await existingInspections(
          school: inspection.schoolCode, year: year, cache: existing)
        if known.contains(key) { return }
        _ = try await c.supervision.createInspection(.with { $0.inspection = inspection })
        existing.withLock { _ = $0["\(inspection.schoolCode)/\(year)", default: []].insert(key) }
      }
    case .exams:
      return try await perRow(kind, path, RowConversion.exam) { exam in
        do {
          _ = try await c.assessment.createExam(.with { $0.exam = exam })
        } catch let error as RPCError where error.code == .alreadyExists {
          // Idempotent by code: the exam is there already.
        }
      }
    case .items:
      return try await importItems(path)
    case .resources:
      return try await importResources(path)
    }
  }

  static func trainingKey(_ r: Smartschool_Supervision_V1_TrainingRecord) -> String {
    [r.teacherExternalID, r.course, r.completedDate, "\(r.hours)"].joined(separator: "\u{1F}")
  }

  static func inspectionKey(_ i: Smartschool_Supervision_V1_Inspection) -> String {
    [i.schoolCode, i.inspector, i.date, i.classroomCode, i.teacherExternalID].joined(
      separator: "\u{1F}")
  }

  /// Training records already stored, from supervision's change feed (records have no
  /// natural key of their own: teacher, course, date and hours stand in for one).
  func existingTraining() async throws -> Set<String> {
    var keys: Set<String> = []
    var after: Int64 = 0
    while true {
      let page = try await client.supervision.listChanges(
        .with {
          $0.afterSequence = after
          $0.pageSize = 1000
        })
      for change in page.changes where change.entity == "training_record" {
        if let record = try? Smartschool_Supervision_V1_TrainingRecord(
          unpackingAny: change.payload)
        {
          keys.insert(Self.trainingKey(record))
        }
      }
      after = page.lastSequence
      if !page.moreAvailable || page.changes.isEmpty { return keys }
    }
  }

  func existingInspections(
    school: String, year: Int32, cache: Locked<[String: Set<String>]>
  ) async throws -> Set<String> {
    let cacheKey = "\(school)/\(year)"
    if let known = cache.withLock({ $0[cacheKey] }) { return known }
    var keys: Set<String> = []
    try await eachPage { token in
      let page = try await client.supervision.listInspections(
        .with {
          $0.orgCode = school
          $0.year = year
          $0.pageSize = 1000
          $0.pageToken = token
        })
      for inspection in page.inspections { keys.insert(Self.inspectionKey(inspection)) }
      return page.nextPageToken
    }
    cache.withLock { $0[cacheKey] = keys }
    return keys
  }

  /// Streams the converted rows into a client-streaming RPC; CSV-level problems are rejected
  /// here with their line, the service's per-row rejections are mapped back to lines.
  func stream<M: Sendable>(
    _ kind: ImportKind, _ path: String,
    _ convert: @escaping @Sendable (CSVRow) throws -> [M],
    call: (@escaping @Sendable (RPCWriter<M>) async throws -> Void) async throws
      -> Smartschool_Common_V1_ImportSummary
  ) async throws -> ImportOutcome {
    try await stream(kind, path, convert, pack: { $0 }, rowsPerWrite: 256, call: call)
  }

  /// Streams the converted rows, `rowsPerWrite` at a time, each group packed into messages by
  /// `pack`: one message per row for the single-row RPCs, one message of many rows for the
  /// batched ones (the service numbers rows across the stream either way, so its row indexes
  /// map back to lines the same way).
  func stream<Row: Sendable, M: Sendable>(
    _ kind: ImportKind, _ path: String,
    _ convert: @escaping @Sendable (CSVRow) throws -> [Row],
    pack: @escaping @Sendable ([Row]) -> [M], rowsPerWrite: Int = 1000,
    call: (@escaping @Sendable (RPCWriter<M>) async throws -> Void) async throws
      -> Smartschool_Common_V1_ImportSummary
  ) async throws -> ImportOutcome {
    let outcome = Locked(ImportOutcome(kind: kind))
    let lines = LineMap()
    let console = self.console
    let file = (path as NSString).lastPathComponent
    let summary = try await call { writer in
      let table = try CSVTable(
      reader: CSVReader(path: path), expected: kind.headers, optional: kind.optionalHeaders)
      var index = 0
      var batch: [Row] = []
      while let (line, row) = try table.next() {
        let rows = outcome.withLock {
          $0.rows += 1
          return $0.rows
        }
        do {
          for converted in try convert(row.get()) {
            lines.record(index: index, line: line)
            index += 1
            batch.append(converted)
          }
        } catch let problem as RowProblem {
          console.reject(file, line: line, problem.description)
          outcome.withLock {
            $0.rejectedCount += 1
            if $0.rejections.count < 10_000 { $0.rejections.append((line, problem.description)) }
          }
        }
        if batch.count >= rowsPerWrite {
          try await writer.write(contentsOf: pack(batch))
          batch.removeAll(keepingCapacity: true)
          console.progress(kind, rows: rows)
        }
      }
      if !batch.isEmpty { try await writer.write(contentsOf: pack(batch)) }
    }
    var seenLines: Set<Int> = []
    for error in summary.errors {
      let line = lines.line(of: Int(error.index))
      guard seenLines.insert(line).inserted else { continue }
      let reason =
        (error.field.isEmpty || error.reason.hasPrefix(error.field) ? "" : error.field + ": ")
        + error.reason
      console.reject(file, line: line, reason)
      outcome.withLock {
        $0.rejectedCount += 1
        if $0.rejections.count < 10_000 { $0.rejections.append((line, reason)) }
      }
    }
    // Rejections beyond those listed (the service lists at most 1,000) still count.
    let unlisted = Int(summary.rejected) - summary.errors.count
    return outcome.withLock {
      $0.rejectedCount += max(0, unlisted)
      $0.rejections.sort { $0.line < $1.line }
      $0.accepted = $0.rows - $0.rejectedCount
      console.progress(kind, rows: $0.rows, final: true)
      return $0
    }
  }

  /// Sends one call per row (kinds without a bulk RPC). A call the service refuses rejects
  /// the row; losing the connection or the session stops the import.
  func perRow<M: Sendable>(
    _ kind: ImportKind, _ path: String,
    _ convert: (CSVRow) throws(RowProblem) -> M,
    perform: (M) async throws -> Void
  ) async throws -> ImportOutcome {
    var outcome = ImportOutcome(kind: kind)
    let file = (path as NSString).lastPathComponent
    let table = try CSVTable(
      reader: CSVReader(path: path), expected: kind.headers, optional: kind.optionalHeaders)
    while let (line, row) = try table.next() {
      outcome.rows += 1
      do {
        let message = try convert(row.get())
        try await perform(message)
        outcome.accepted += 1
      } catch let problem as RowProblem {
        reject(&outcome, file, line, problem.description)
      } catch let error as RPCError where Self.isRowError(error) {
        reject(&outcome, file, line, "\(error.code): \(error.message)")
      }
      console.progress(kind, rows: outcome.rows)
    }
    console.progress(kind, rows: outcome.rows, final: true)
    return outcome
  }

  func reject(_ outcome: inout ImportOutcome, _ file: String, _ line: Int, _ reason: String) {
    console.reject(file, line: line, reason)
    outcome.rejectedCount += 1
    if outcome.rejections.count < 10_000 { outcome.rejections.append((line, reason)) }
  }

  /// Errors that concern the row rather than the connection or the session.
  static func isRowError(_ error: RPCError) -> Bool {
    [
      .invalidArgument, .notFound, .alreadyExists, .failedPrecondition, .permissionDenied,
      .outOfRange,
    ].contains(error.code)
  }

  /// `items`: rows are grouped by exam (an exam's items are replaced together); an exam whose
  /// scores froze its items is left alone when the items already match.
  func importItems(_ path: String) async throws -> ImportOutcome {
    var outcome = ImportOutcome(kind: .items)
    let file = (path as NSString).lastPathComponent
    let table = try CSVTable(
      reader: CSVReader(path: path), expected: ImportKind.items.headers,
      optional: ImportKind.items.optionalHeaders)
    var exams: [String: [(line: Int, item: Smartschool_Assessment_V1_ExamItem)]] = [:]
    var order: [String] = []
    while let (line, row) = try table.next() {
      outcome.rows += 1
      do {
        let (exam, item) = try RowConversion.item(row.get())
        if exams[exam] == nil { order.append(exam) }
        if exams[exam, default: []].contains(where: { $0.item.number == item.number }) {
          throw RowProblem("item_no", "item \(item.number) of \(exam) appears twice")
        }
        exams[exam, default: []].append((line, item))
      } catch let problem as RowProblem {
        reject(&outcome, file, line, problem.description)
      }
    }
    for code in order {
      let rows = exams[code]!
      let items = rows.map(\.item).sorted { $0.number < $1.number }
      do {
        do {
          _ = try await client.assessment.updateExamItems(
            .with {
              $0.code = code
              $0.items = items
            })
        } catch let error as RPCError where error.code == .failedPrecondition {
          let stored = try await client.assessment.getExam(.with { $0.code = code }).items
          if stored.sorted(by: { $0.number < $1.number }) != items { throw error }
        }
        outcome.accepted += rows.count
      } catch let error as RPCError where Self.isRowError(error) {
        for row in rows { reject(&outcome, file, row.line, "\(error.code): \(error.message)") }
      }
    }
    outcome.rejections.sort { $0.line < $1.line }
    console.progress(.items, rows: outcome.rows, final: true)
    return outcome
  }

  /// `resources`: the knowledge points the file names are registered first (curriculum
  /// import, idempotent by code), then each resource is created by its derived external id,
  /// its `file` (relative to the CSV file) uploaded as its content, and it is submitted for
  /// review. An existing resource is left as it is, unless an earlier import stopped before
  /// submitting it: that draft is completed.
  func importResources(_ path: String) async throws -> ImportOutcome {
    var points: [String: Smartschool_Catalogue_V1_KnowledgePoint] = [:]
    let scan = try CSVTable(reader: CSVReader(path: path), expected: ImportKind.resources.headers)
    while let (_, row) = try scan.next() {
      guard case .success(let r) = row, let resource = try? RowConversion.resource(r) else {
        continue
      }
      for code in resource.knowledgePointCodes where points[code] == nil {
        points[code] = .with {
          $0.code = code
          $0.name = code
          $0.stage = resource.stage
          $0.subject = resource.subject
          $0.chapterCode = resource.chapterCode
        }
      }
    }
    if !points.isEmpty {
      let rows = points.keys.sorted().map { code in
        Smartschool_Catalogue_V1_ImportCurriculumRequest.with { $0.knowledgePoint = points[code]! }
      }
      _ = try await client.catalogue.importCurriculum { writer in
        try await writer.write(contentsOf: rows)
      }
    }
    let c = client
    let folder = (path as NSString).deletingLastPathComponent
    func row(_ r: CSVRow) throws(RowProblem) -> (Smartschool_Catalogue_V1_Resource, String) {
      let resource = try RowConversion.resource(r)
      let file = try r.required("file")
      let full = file.hasPrefix("/") ? file : (folder as NSString).appendingPathComponent(file)
      guard FileManager.default.isReadableFile(atPath: full) else {
        throw RowProblem("file", "cannot read \(full)")
      }
      return (resource, full)
    }
    return try await perRow(.resources, path, row) { item in
      let (resource, file) = item
      var current: Smartschool_Catalogue_V1_Resource
      do {
        current = try await c.catalogue.createResource(.with { $0.resource = resource })
      } catch let error as RPCError where error.code == .alreadyExists {
        // Imported before (idempotent by the derived external id): left alone unless an
        // import stopped before submitting it.
        current = try await c.catalogue.getResource(.with { $0.externalID = resource.externalID })
        guard current.status == .draft else { return }
      }
      if current.content.sizeBytes == 0 {
        current = try await Self.upload(file, to: current.id, c)
      }
      _ = try await c.catalogue.transitionResource(
        .with {
          $0.id = current.id
          $0.action = .submit
        })
    }
  }

  /// Uploads the file at `path` as the content of resource `id`: hashed in a first pass,
  /// then streamed in 1 MiB messages.
  static func upload(_ path: String, to id: String, _ client: SmartSchoolClient) async throws
    -> Smartschool_Catalogue_V1_Resource
  {
    var hasher = SHA256()
    var counted: Int64 = 0
    try await eachChunk(of: path) { data in
      hasher.update(data: data)
      counted += Int64(data.count)
    }
    let sha256 = hasher.finalize().map { String(format: "%02x", $0) }.joined()
    let size = counted
    let name = (path as NSString).lastPathComponent
    return try await client.catalogue.uploadContent { writer in
      try await writer.write(
        .with {
          $0.resourceID = id
          $0.header = .with {
            $0.sha256 = sha256
            $0.sizeBytes = size
            $0.mimeType = mimeTypes[(name as NSString).pathExtension.lowercased()] ?? ""
            $0.fileName = name
          }
        })
      try await eachChunk(of: path) { data in
        try await writer.write(
          .with {
            $0.resourceID = id
            $0.data = data
          })
      }
    }
  }

  /// Calls `body` with the file at `path` in 1 MiB pieces.
  static func eachChunk(of path: String, _ body: (Data) async throws -> Void) async throws {
    guard let handle = FileHandle(forReadingAtPath: path) else {
      throw RowProblem("file", "cannot read \(path)")
    }
    defer { try? handle.close() }
    while let data = try handle.read(upToCount: 1 << 20), !data.isEmpty { try await body(data) }
  }

  /// Content types of the file kinds teaching resources usually come in; others are sent
  /// without one (the catalogue stores application/octet-stream).
  static let mimeTypes: [String: String] = [
    "md": "text/markdown", "txt": "text/plain", "pdf": "application/pdf",
    "doc": "application/msword", "ppt": "application/vnd.ms-powerpoint",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "mp4": "video/mp4", "mp3": "audio/mpeg", "png": "image/png", "jpg": "image/jpeg",
    "zip": "application/zip",
  ]
}
