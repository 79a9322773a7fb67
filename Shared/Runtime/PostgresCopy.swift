import Foundation
import NIOCore
import PostgresNIO

/// One value of a row for ``PostgresTransaction/copy(into:columns:rows:)``, written in
/// `COPY`'s text format.
public enum PostgresCopyValue: Sendable {
  case text(String)
  case int(Int)
  case double(Double)
  case null
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
    var buffer = ByteBuffer()
    buffer.reserveCapacity(rows.count * columns.count * 16)
    do {
      try await connection.copyFrom(table: table, columns: columns, logger: logger) { writer in
        for row in rows {
          precondition(row.count == columns.count, "a COPY row needs one value per column")
          for (i, value) in row.enumerated() {
            if i > 0 { buffer.writeInteger(UInt8(ascii: "\t")) }
            Self.writeCopyText(value, to: &buffer)
          }
          buffer.writeInteger(UInt8(ascii: "\n"))
          // Sent in pieces of about 32 KiB: a large batch is not one huge message, and the
          // server parses and inserts the first rows while the later ones are still encoded.
          if buffer.readableBytes >= 32 * 1024 {
            try await writer.write(buffer)
            buffer.clear()
          }
        }
        if buffer.readableBytes > 0 { try await writer.write(buffer) }
      }
    } catch {
      throw PostgresStore.map(error)
    }
  }

  /// `value` in `COPY`'s text format: `\N` for NULL; in text, the backslash and the
  /// characters that end a field or row escaped.
  private static func writeCopyText(_ value: PostgresCopyValue, to buffer: inout ByteBuffer) {
    switch value {
    case .null:
      buffer.writeStaticString("\\N")
    case .int(let n):
      buffer.writeString(String(n))
    case .double(let x):
      // Swift prints the shortest text that reads back as the same double.
      if x.isFinite {
        buffer.writeString("\(x)")
      } else {
        buffer.writeString(x.isNaN ? "NaN" : (x > 0 ? "Infinity" : "-Infinity"))
      }
    case .text(let text):
      let special: (UInt8) -> Bool = { $0 == 0x5C || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
      guard text.utf8.contains(where: special) else {
        buffer.writeString(text)
        return
      }
      for byte in text.utf8 {
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
