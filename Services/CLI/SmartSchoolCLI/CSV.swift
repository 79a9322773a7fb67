import Foundation
import SmartSchoolModel

/// One CSV record and the (1-based) line it starts on.
public struct CSVRecord: Sendable, Equatable {
  /// The line the record starts on.
  public let line: Int
  /// Its fields, unquoted.
  public let fields: [String]

  /// A record of `fields` starting on `line`.
  public init(line: Int, fields: [String]) {
    self.line = line
    self.fields = fields
  }
}

/// A problem with the file as a whole (bad header, unterminated quote).
public struct CSVError: Error, CustomStringConvertible, Equatable {
  /// The line of the problem.
  public let line: Int
  /// What is wrong.
  public let message: String

  public var description: String { "line \(line): \(message)" }
}

/// Reads RFC 4180 CSV (quoted fields, doubled quotes, CRLF or LF, a UTF-8 BOM) record by
/// record from a file in 64 KiB chunks, so a file of any size is read in bounded memory.
/// Blank lines are skipped.
public final class CSVReader {
  private let handle: FileHandle?
  private var buffer: [UInt8]
  private var position = 0
  private var line = 1
  private var atStart = true
  private var exhausted: Bool
  private let chunkSize: Int

  /// A reader of the file at `path`, read `chunkSize` bytes at a time.
  public init(path: String, chunkSize: Int = 65536) throws {
    guard let handle = FileHandle(forReadingAtPath: path) else {
      throw CSVError(line: 0, message: "cannot open \(path)")
    }
    self.handle = handle
    self.chunkSize = max(1, chunkSize)
    buffer = []
    exhausted = false
  }

  /// A reader of bytes in memory.
  public init(data: Data) {
    handle = nil
    chunkSize = 0
    buffer = Array(data)
    exhausted = true
  }

  deinit { try? handle?.close() }

  /// Makes sure `count` bytes from `position` are buffered (fewer only at the end of input).
  private func ensure(_ count: Int) -> Bool {
    while buffer.count - position < count {
      guard !exhausted, let handle else { return false }
      let chunk = handle.readData(ofLength: chunkSize)
      if chunk.isEmpty {
        exhausted = true
        return false
      }
      buffer = Array(buffer[position...]) + chunk
      position = 0
    }
    return true
  }

  private func peek() -> UInt8? {
    ensure(1) ? buffer[position] : nil
  }

  private func advance() { position += 1 }

  /// The next record, `nil` at the end; throws for an unterminated quoted field.
  public func next() throws -> CSVRecord? {
    if atStart {
      atStart = false
      if ensure(3), buffer[position] == 0xEF, buffer[position + 1] == 0xBB,
        buffer[position + 2] == 0xBF
      {
        position += 3
      }
    }
    while true {
      guard peek() != nil else { return nil }
      let start = line
      var fields: [String] = []
      var field: [UInt8] = []
      var inQuotes = false
      var quoted = false
      func finishField() {
        fields.append(String(decoding: field, as: UTF8.self))
        field.removeAll(keepingCapacity: true)
        quoted = false
      }
      while let byte = peek() {
        advance()
        if inQuotes {
          if byte == UInt8(ascii: "\"") {
            if peek() == UInt8(ascii: "\"") {
              advance()
              field.append(byte)
            } else {
              inQuotes = false
            }
          } else {
            if byte == UInt8(ascii: "\n") { line += 1 }
            field.append(byte)
          }
          continue
        }
        switch byte {
        case UInt8(ascii: ","): finishField()
        case UInt8(ascii: "\"") where field.isEmpty && !quoted:
          inQuotes = true
          quoted = true
        case UInt8(ascii: "\r"): continue
        case UInt8(ascii: "\n"):
          line += 1
          finishField()
          if fields == [""] { fields = [] }
          if fields.isEmpty { break }
          return CSVRecord(line: start, fields: fields)
        default: field.append(byte)
        }
        if byte == UInt8(ascii: "\n") { break }
      }
      if inQuotes { throw CSVError(line: start, message: "unterminated quoted field") }
      if peek() == nil {
        if !field.isEmpty || !fields.isEmpty || quoted {
          finishField()
          return CSVRecord(line: start, fields: fields)
        }
        return nil
      }
    }
  }
}

/// A row's problem: the column to blame and why. Reported with the row's line number.
public struct RowProblem: Error, CustomStringConvertible, Equatable {
  /// The column, when one is to blame.
  public let column: String
  /// Why the row is rejected.
  public let reason: String

  /// A problem with `column`.
  public init(_ column: String, _ reason: String) {
    self.column = column
    self.reason = reason
  }

  public var description: String { column.isEmpty ? reason : "\(column): \(reason)" }
}

/// A CSV file whose header must name exactly the expected columns (in any order).
public struct CSVTable {
  /// Column index by name.
  public let columns: [String: Int]
  /// The reader, positioned after the header.
  public let reader: CSVReader

  /// Opens `reader` and checks its header against `expected`: a missing, unknown (extra) or
  /// repeated column is an error; the `optional` columns may be there or not.
  public init(reader: CSVReader, expected: [String], optional: [String] = []) throws {
    guard let header = try reader.next() else {
      throw CSVError(
        line: 1, message: "empty file: expected the header \(expected.joined(separator: ","))")
    }
    var columns: [String: Int] = [:]
    for (index, raw) in header.fields.enumerated() {
      let name = raw.trimmingSpaces()
      if columns[name] != nil {
        throw CSVError(line: header.line, message: "column \(name) appears twice")
      }
      columns[name] = index
    }
    let extra = header.fields.map { $0.trimmingSpaces() }
      .filter { !expected.contains($0) && !optional.contains($0) }
    if !extra.isEmpty {
      throw CSVError(
        line: header.line,
        message: "unknown column(s) \(extra.joined(separator: ", ")); expected "
          + expected.joined(separator: ","))
    }
    let missing = expected.filter { columns[$0] == nil }
    if !missing.isEmpty {
      throw CSVError(
        line: header.line,
        message: "missing column(s) \(missing.joined(separator: ", ")); expected "
          + expected.joined(separator: ","))
    }
    self.columns = columns
    self.reader = reader
  }

  /// The next row, or `nil` at the end. A row with the wrong number of fields comes back as a
  /// ``RowProblem`` in `.failure`.
  public func next() throws -> (line: Int, row: Result<CSVRow, RowProblem>)? {
    guard let record = try reader.next() else { return nil }
    guard record.fields.count == columns.count else {
      return (
        record.line,
        .failure(
          RowProblem("", "has \(record.fields.count) fields, the header has \(columns.count)"))
      )
    }
    return (record.line, .success(CSVRow(columns: columns, fields: record.fields)))
  }
}

/// One row, read by column name, with typed accessors that throw ``RowProblem``.
public struct CSVRow: Sendable {
  let columns: [String: Int]
  let fields: [String]

  /// A row from a header mapping and fields.
  public init(columns: [String: Int], fields: [String]) {
    self.columns = columns
    self.fields = fields
  }

  /// A row given as name → value pairs (tests, generators).
  public init(_ values: KeyValuePairs<String, String>) {
    var columns: [String: Int] = [:]
    var fields: [String] = []
    for (name, value) in values {
      columns[name] = fields.count
      fields.append(value)
    }
    self.init(columns: columns, fields: fields)
  }

  /// The trimmed text of a column ("" when empty).
  public func text(_ name: String) -> String {
    guard let index = columns[name], index < fields.count else { return "" }
    return fields[index].trimmingSpaces()
  }

  /// Non-empty text.
  public func required(_ name: String) throws(RowProblem) -> String {
    let value = text(name)
    if value.isEmpty { throw RowProblem(name, "is required") }
    return value
  }

  /// An integer in `range`; `0` when empty and `optional`.
  public func int(_ name: String, _ range: ClosedRange<Int>, optional: Bool = false)
    throws(RowProblem) -> Int
  {
    let value = text(name)
    if value.isEmpty && optional { return 0 }
    guard let number = Int(value) else { throw RowProblem(name, "\"\(value)\" is not a number") }
    guard range.contains(number) else {
      throw RowProblem(name, "\(number) is outside \(range.lowerBound)–\(range.upperBound)")
    }
    return number
  }

  /// A finite decimal number ≥ 0.
  public func decimal(_ name: String) throws(RowProblem) -> Double {
    let value = text(name)
    guard let number = Double(value), number.isFinite, number >= 0 else {
      throw RowProblem(name, "\"\(value)\" is not a number ≥ 0")
    }
    return number
  }

  /// A date `YYYY-MM-DD`; `nil` when empty and `optional`.
  public func date(_ name: String, optional: Bool = false) throws(RowProblem) -> CalendarDate? {
    let value = text(name)
    if value.isEmpty && optional { return nil }
    guard let date = CalendarDate(value) else {
      throw RowProblem(name, "\"\(value)\" is not a date YYYY-MM-DD")
    }
    return date
  }

  /// true/false/1/0/是/否.
  public func bool(_ name: String) throws(RowProblem) -> Bool {
    let value = text(name)
    guard let result = parseBool(value) else {
      throw RowProblem(name, "\"\(value)\" is not true/false/1/0/是/否")
    }
    return result
  }

  /// A vocabulary value by Chinese or lower-case English name; `unspecified` fallback when
  /// empty and `optional`.
  public func vocabulary<V: NamedVocabulary>(
    _ name: String, _ type: V.Type, optional: Bool = false, empty: V? = nil
  ) throws(RowProblem) -> V {
    let value = text(name)
    if value.isEmpty, optional, let empty { return empty }
    guard let parsed = V.parse(value), parsed.englishName != "unspecified" else {
      let known = V.allCases.filter { $0.englishName != "unspecified" }
        .map { "\($0.englishName)/\($0.chineseName)" }.joined(separator: ", ")
      throw RowProblem(name, "unknown value \"\(value)\" (one of \(known))")
    }
    return parsed
  }

  /// A semicolon-separated list (empty items dropped).
  public func list(_ name: String) -> [String] {
    text(name).split(separator: ";").map { $0.trimmingSpaces() }
      .filter { !$0.isEmpty }
  }
}

/// Parses true/false/1/0/是/否 (case-insensitive); `nil` for anything else.
public func parseBool(_ text: String) -> Bool? {
  switch text.trimmingSpaces().lowercased() {
  case "true", "1", "是": true
  case "false", "0", "否": false
  default: nil
  }
}

/// Quotes a field for CSV output when it needs it.
public func csvField(_ text: String) -> String {
  if text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) {
    return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
  }
  return text
}

/// One CSV line (with a trailing newline).
public func csvLine(_ fields: [String]) -> String {
  fields.map(csvField).joined(separator: ",") + "\n"
}
