import Foundation
import NIOCore
import PostgresNIO

/// One value of a row for ``PostgresTransaction/copy(into:columns:rows:)``, written in
/// `COPY`'s text format.
public enum PostgresCopyValue: Sendable {
  case text(String)
  case int(Int)
  case double(Double)
  /// Bytes for a `bytea` column, written as hex (`\\x…`).
  case bytes(Data)
  case null
}

/// Rows encoded beforehand in `COPY`'s text format, for
/// ``PostgresTransaction/copy(into:columns:encoded:)``: a bulk writer can encode them on
/// another task (ahead of its transaction, say), and the copy then only sends them.
public struct PostgresCopyRows: Sendable {
  /// The encoded rows, in pieces of about 32 KiB.
  let pieces: [ByteBuffer]
  /// How many rows the pieces hold.
  public let count: Int

  /// Encodes `rows`, each a value per column of a copy of `columns` columns.
  public init(columns: Int, rows: [[PostgresCopyValue]]) {
    var pieces: [ByteBuffer] = []
    var buffer = ByteBuffer()
    buffer.reserveCapacity(Self.piece + 1024)
    for row in rows {
      Self.encode(row, columns: columns, to: &buffer)
      if buffer.readableBytes >= Self.piece {
        pieces.append(buffer)
        buffer = ByteBuffer()
        buffer.reserveCapacity(Self.piece + 1024)
      }
    }
    if buffer.readableBytes > 0 { pieces.append(buffer) }
    self.pieces = pieces
    count = rows.count
  }

  /// Rows are sent in pieces of about 32 KiB: a large batch is not one huge message, and the
  /// server parses and inserts the first rows while the later ones are still encoded or sent.
  static let piece = 32 * 1024

  /// Appends `row` to `buffer`: its values tab-separated, then a newline.
  static func encode(_ row: [PostgresCopyValue], columns: Int, to buffer: inout ByteBuffer) {
    precondition(row.count == columns, "a COPY row needs one value per column")
    for (i, value) in row.enumerated() {
      if i > 0 { buffer.writeInteger(UInt8(ascii: "\t")) }
      writeCopyText(value, to: &buffer)
    }
    buffer.writeInteger(UInt8(ascii: "\n"))
  }

  /// `value` in `COPY`'s text format: `\N` for NULL; in text, the backslash and the
  /// characters that end a field or row escaped.
  private static func writeCopyText(_ value: PostgresCopyValue, to buffer: inout ByteBuffer) {
    switch value {
    case .null:
      buffer.writeStaticString("\\N")
    case .int(let n):
      writeDecimal(n, to: &buffer)
    case .double(let x):
      writeDouble(x, to: &buffer)
    case .bytes(let bytes):
      writeHex(bytes, to: &buffer)
    case .text(let text):
      writeText(text, to: &buffer)
    }
  }

  /// `n` in decimal, written straight into `buffer` (a `String` a number cost an allocation
  /// check and a copy per value, and a lesson row has nine).
  static func writeDecimal(_ n: Int, to buffer: inout ByteBuffer) {
    var magnitude = n.magnitude
    if n >= 0 && magnitude < 10 {
      buffer.writeInteger(UInt8(truncatingIfNeeded: 0x30 + magnitude))
      return
    }
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 20) { out in
      // Digits from the right end of a 20-byte scratch, then moved to the front.
      var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)
      return withUnsafeMutableBytes(of: &scratch) { digits in
        var start = 24
        repeat {
          start -= 1
          digits[start] = UInt8(truncatingIfNeeded: 0x30 + magnitude % 10)
          magnitude /= 10
        } while magnitude > 0
        if n < 0 {
          start -= 1
          digits[start] = UInt8(ascii: "-")
        }
        let count = 24 - start
        out.baseAddress!.copyMemory(from: digits.baseAddress! + start, byteCount: count)
        return count
      }
    }
  }

  /// `x` as the shortest text that reads back as the same double (Swift's own printing), or
  /// `NaN` / `Infinity` / `-Infinity`.
  static func writeDouble(_ x: Double, to buffer: inout ByteBuffer) {
    if x.isFinite {
      buffer.writeString(x.description)
    } else {
      buffer.writeString(x.isNaN ? "NaN" : (x > 0 ? "Infinity" : "-Infinity"))
    }
  }

  /// `bytes` for a `bytea` column: `\x` then two hex digits a byte, the backslash doubled
  /// as COPY's text wants.
  static func writeHex(_ bytes: Data, to buffer: inout ByteBuffer) {
    let digits: StaticString = "0123456789abcdef"
    buffer.writeStaticString("\\\\x")
    // Through raw pointers: `Data`'s own iterator costs more than the hex digits.
    buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: bytes.count * 2) { out in
      digits.withUTF8Buffer { hex in
        bytes.withUnsafeBytes { input in
          var i = 0
          for byte in input {
            out[i] = hex[Int(byte >> 4)]
            out[i + 1] = hex[Int(byte & 0x0F)]
            i += 2
          }
        }
      }
      return bytes.count * 2
    }
  }

  /// `text` with the backslash and the characters that end a field or row escaped.
  static func writeText(_ text: String, to buffer: inout ByteBuffer) {
    var text = text
    // Scanned as contiguous bytes: the UTF-8 view's iterator costs several times more.
    text.withUTF8 { utf8 in
      guard utf8.contains(where: { $0 == 0x5C || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D })
      else {
        buffer.writeBytes(utf8)
        return
      }
      for byte in utf8 {
        switch byte {
        case 0x5C: buffer.writeStaticString("\\\\")
        case 0x09: buffer.writeStaticString("\\t")
        case 0x0A: buffer.writeStaticString("\\n")
        case 0x0D: buffer.writeStaticString("\\r")
        default: buffer.writeInteger(byte)
        }
      }
    }
  }
}

extension PostgresTransaction {
  /// Loads `rows` (each a value per column of `columns`) into `table` with one
  /// `COPY … FROM STDIN` inside this transaction: PostgreSQL's bulk path, several times cheaper
  /// per row than an INSERT of the same rows. All or nothing: a row that breaks a constraint
  /// fails the whole copy (run it under ``savepoint(_:)`` to go on after that), and there is no
  /// `ON CONFLICT`. `table` and `columns` are pasted as SQL identifiers: pass only constants.
  public func copy(into table: String, columns: [String], rows: [[PostgresCopyValue]])
    async throws
  {
    guard !rows.isEmpty else { return }
    try await copy(into: table, columns: columns) { writer in
      var buffer = ByteBuffer()
      buffer.reserveCapacity(PostgresCopyRows.piece + 1024)
      for row in rows {
        PostgresCopyRows.encode(row, columns: columns.count, to: &buffer)
        if buffer.readableBytes >= PostgresCopyRows.piece {
          try await writer.write(buffer)
          buffer.clear()
        }
      }
      if buffer.readableBytes > 0 { try await writer.write(buffer) }
    }
  }

  /// ``copy(into:columns:rows:)`` of rows encoded beforehand: the transaction only sends them.
  public func copy(into table: String, columns: [String], encoded: PostgresCopyRows)
    async throws
  {
    guard encoded.count > 0 else { return }
    try await copy(into: table, columns: columns) { writer in
      for piece in encoded.pieces { try await writer.write(piece) }
    }
  }

  /// The one COPY both forms run: `send` writes the data, and errors map as every
  /// statement's do.
  private func copy(
    into table: String, columns: [String],
    send: (PostgresCopyFromWriter) async throws -> Void
  ) async throws {
    do {
      try await connection.copyFrom(
        table: table, columns: columns, logger: logger, writeData: send)
    } catch {
      throw PostgresStore.map(error)
    }
  }
}
