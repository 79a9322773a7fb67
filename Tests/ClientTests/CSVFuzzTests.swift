import Foundation
import SmartSchoolCLI
import SmartSchoolModel
import TestSupport
import Testing

/// What reading a whole input gave: its records, or the error that stopped it.
private enum Reading: Equatable {
  case records([CSVRecord])
  case failed(CSVError)
}

private func read(_ reader: CSVReader) -> Reading {
  var out: [CSVRecord] = []
  do {
    while let record = try reader.next() { out.append(record) }
    return .records(out)
  } catch let error as CSVError {
    return .failed(error)
  } catch {
    Issue.record("the reader threw something other than a CSVError: \(error)")
    return .records(out)
  }
}

/// Bounded property tests of the CSV reader and the row conversions behind
/// `smartschool import`. SMARTSCHOOL_FUZZ_CASES scales the run, SMARTSCHOOL_FUZZ_SEED replays one
/// (a failure prints its case's seed).
@Suite("CSV reader and row conversions, fuzzed")
struct CSVFuzzTests {
  static let cases = FuzzSettings.cases(default: 12) * 25
  /// Chunk sizes that put chunk boundaries inside BOMs, CRLFs, quotes and UTF-8 sequences.
  static let chunkSizes = [1, 2, 3, 5, 64, 65536]

  /// Characters fields are made of: CSV syntax, CJK, multi-byte and control characters.
  static let alphabet: [String] = [
    "a", "Z", "0", "9", " ", ",", "\"", "\n", "\r", "数", "学", "；", ";", "-", "é", "\t", "'",
    "\\", "%", "_", "😀", "\u{0}",
  ]

  static func field(_ rng: inout SeededGenerator) -> String {
    let length = Int.random(in: 0...12, using: &rng)
    return (0..<length).map { _ in alphabet.randomElement(using: &rng)! }.joined()
  }

  /// RFC 4180 encoding; fields with syntax in them are quoted, others sometimes.
  static func encode(_ field: String, _ rng: inout SeededGenerator) -> String {
    // By scalar: "\r\n" is one Character, equal to neither "\r" nor "\n".
    let special = field.unicodeScalars.contains { ",\"\n\r".unicodeScalars.contains($0) }
    if special || Bool.random(using: &rng) {
      return "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
    return field
  }

  @Test func encodedTablesReadBackExactlyWhateverTheChunking() throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    for n in 0..<Self.cases {
      let seed = FuzzSettings.seed &+ UInt64(n)
      var rng = SeededGenerator(seed: seed)
      var expected: [CSVRecord] = []
      var text = Bool.random(using: &rng) ? "\u{FEFF}" : ""
      var line = 1
      for _ in 0..<Int.random(in: 0...8, using: &rng) {
        while Int.random(in: 0..<4, using: &rng) == 0 {  // blank lines are skipped
          text += Bool.random(using: &rng) ? "\n" : "\r\n"
          line += 1
        }
        var fields = (0..<Int.random(in: 1...5, using: &rng)).map { _ in Self.field(&rng) }
        if fields == [""] { fields = ["x"] }  // a lone empty field is a blank line
        let encoded = fields.map { Self.encode($0, &rng) }.joined(separator: ",")
        expected.append(CSVRecord(line: line, fields: fields))
        text += encoded + (Bool.random(using: &rng) ? "\n" : "\r\n")
        line += encoded.utf8.filter { $0 == UInt8(ascii: "\n") }.count + 1
      }
      if !expected.isEmpty, Bool.random(using: &rng) {
        text.removeLast()  // no newline after the last record ("\r\n" is one Character)
      }
      #expect(
        read(CSVReader(data: Data(text.utf8))) == .records(expected),
        "seed \(seed): \(text.debugDescription)")
      let path = dir.path + "/case.csv"
      try Data(text.utf8).write(to: URL(fileURLWithPath: path))
      for size in Self.chunkSizes {
        #expect(
          read(try CSVReader(path: path, chunkSize: size)) == .records(expected),
          "seed \(seed), chunk \(size): \(text.debugDescription)")
      }
    }
  }

  @Test func garbageAndMutatedFilesReadTheSameWhateverTheChunkingAndNeverCrash() throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let path = dir.path + "/case.csv"
    let syntax: [UInt8] = [0x22, 0x2C, 0x0A, 0x0D, 0xEF, 0xBB, 0xBF, 0x00, 0xFF, 0xE6, 0x95]
    for n in 0..<Self.cases {
      let seed = FuzzSettings.seed &+ 1_000_000 &+ UInt64(n)
      var rng = SeededGenerator(seed: seed)
      var bytes: [UInt8]
      if Bool.random(using: &rng) {
        // Random bytes, biased toward CSV syntax, a BOM's bytes and broken UTF-8.
        bytes = (0..<Int.random(in: 0...300, using: &rng)).map { _ in
          Bool.random(using: &rng)
            ? syntax.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
        }
      } else {
        // A valid file with a few bytes flipped, inserted or deleted.
        bytes = Array(
          "\u{FEFF}code,name\n\"S1\",\"第一\"\"中学\"\"\"\r\nS2,\"two\nlines\"\nS3,三\n".utf8)
        for _ in 0..<Int.random(in: 1...6, using: &rng) {
          let at = Int.random(in: 0..<bytes.count, using: &rng)
          switch Int.random(in: 0..<3, using: &rng) {
          case 0: bytes[at] = syntax.randomElement(using: &rng)!
          case 1: bytes.insert(syntax.randomElement(using: &rng)!, at: at)
          default: if bytes.count > 1 { bytes.remove(at: at) }
          }
        }
      }
      let inMemory = read(CSVReader(data: Data(bytes)))
      if case .records(let records) = inMemory {
        // Lines only move forward, and every record has at least one field.
        #expect(
          zip(records, records.dropFirst()).allSatisfy { $0.line < $1.line }, "seed \(seed)")
        #expect(records.allSatisfy { !$0.fields.isEmpty }, "seed \(seed)")
      }
      try Data(bytes).write(to: URL(fileURLWithPath: path))
      for size in Self.chunkSizes {
        #expect(
          read(try CSVReader(path: path, chunkSize: size)) == inMemory,
          "seed \(seed), chunk \(size): \(bytes)")
      }
    }
  }

  /// Values a hostile or careless file holds in any column.
  static let hostileValues: [String] = [
    "", " ", "数学", "初中", "mathematics", "junior", "school", "teacher", "objective", "是", "否",
    "true", "0", "1", "7", "-1", "40", "2025-09-01", "2025-02-30", "2025-9-1", "NaN", "inf",
    "-0.0", "1e309", "99999999999999999999999", "3.5", "'; DROP TABLE users;--", "\" OR 1=1",
    "../../etc/passwd", "..", "/", "\u{0}", "K1-S", "S1;S2;;", ";;", "\u{202E}evil",
    String(repeating: "长", count: 10_000), "2025-2026", "2025-09-01;2025-09-08",
  ]

  static func convert(_ kind: ImportKind, _ row: CSVRow) throws(RowProblem) {
    switch kind {
    case .orgs: _ = try RowConversion.org(row)
    case .users: _ = try RowConversion.user(row)
    case .guardians: _ = try RowConversion.guardian(row)
    case .terms: _ = try RowConversion.term(row)
    case .classrooms: _ = try RowConversion.classroom(row)
    case .lessons: _ = try RowConversion.lesson(row)
    case .facilities: _ = try RowConversion.facility(row)
    case .training: _ = try RowConversion.training(row)
    case .inspections: _ = try RowConversion.inspection(row)
    case .exams: _ = try RowConversion.exam(row)
    case .items: _ = try RowConversion.item(row)
    case .scores: _ = try RowConversion.score(row)
    case .curriculum: _ = try RowConversion.curriculum(row)
    case .resources: _ = try RowConversion.resource(row)
    }
  }

  @Test func everyKindsRowsAreConvertedOrRefusedNamingTheirColumn() throws {
    var rng = SeededGenerator(seed: FuzzSettings.seed)
    var outcomes: [ImportKind: (converted: Int, refused: Int)] = [:]
    for kind in ImportKind.allCases {
      let headers = kind.headers.shuffled(using: &rng)
      var text = headers.joined(separator: ",") + "\n"
      var rows = 0
      for _ in 0..<Self.cases {
        var fields = headers.map { _ in
          Self.encode(Self.hostileValues.randomElement(using: &rng)!, &rng)
        }
        if Int.random(in: 0..<10, using: &rng) == 0 { fields.removeLast() }
        let line = fields.joined(separator: ",")
        if line != "" && line != "\"\"" { rows += 1 }  // else a blank line, skipped
        text += line + "\n"
      }
      let table = try CSVTable(reader: CSVReader(data: Data(text.utf8)), expected: kind.headers)
      var converted = 0
      var refused = 0
      while let (line, row) = try table.next() {
        switch row {
        case .failure(let problem):
          #expect(problem.column.isEmpty, "\(kind) line \(line): \(problem)")
          refused += 1
        case .success(let row):
          do {
            try Self.convert(kind, row)
            converted += 1
          } catch {
            #expect(
              kind.headers.contains(error.column), "\(kind) line \(line): \(error) names no column")
            #expect(!error.reason.isEmpty)
            refused += 1
          }
        }
      }
      #expect(converted + refused == rows, "\(kind)")
      outcomes[kind] = (converted, refused)
    }
    // The hostile values are mostly refused; some kinds accept some rows (free-text columns).
    #expect(outcomes.values.allSatisfy { $0.refused > 0 })
  }
}
