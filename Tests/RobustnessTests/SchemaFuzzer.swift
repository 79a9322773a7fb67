import Foundation
import SmartSchoolModel
import SwiftProtobuf
import TestSupport

/// One RPC of the suite as the descriptor set describes it.
struct FuzzMethod: Sendable {
  var service: String
  var name: String
  var inputType: String
  var clientStreaming: Bool
  var serverStreaming: Bool
  var fullName: String { service + "/" + name }
}

/// Builds protobuf wire bytes for any message of the suite from the embedded descriptor set:
/// schema-shaped (so decoding succeeds and validation, scope checks and storage are reached)
/// but full of hostile values — SQL metacharacters, path traversal, huge and empty strings,
/// invalid UTF-8, negative, extreme and NaN numbers, unknown enum values, deep and repeated
/// fields — and sometimes plain garbage.
struct SchemaFuzzer {
  typealias Message = Google_Protobuf_DescriptorProto
  typealias Field = Google_Protobuf_FieldDescriptorProto

  private(set) var messages: [String: Message] = [:]
  private(set) var methods: [FuzzMethod] = []

  init() throws {
    let data = Data(
      base64Encoded: smartSchoolDescriptorSetBase64, options: .ignoreUnknownCharacters)!
    let set = try Google_Protobuf_FileDescriptorSet(serializedBytes: data)
    for file in set.file {
      let prefix = file.package.isEmpty ? "" : "." + file.package
      for message in file.messageType { register(message, prefix: prefix) }
      for service in file.service where file.package.hasPrefix("smartschool.") {
        for m in service.method {
          methods.append(
            FuzzMethod(
              service: file.package + "." + service.name, name: m.name, inputType: m.inputType,
              clientStreaming: m.clientStreaming, serverStreaming: m.serverStreaming))
        }
      }
    }
  }

  private mutating func register(_ message: Message, prefix: String) {
    let name = prefix + "." + message.name
    messages[name] = message
    for nested in message.nestedType { register(nested, prefix: name) }
  }

  static let hostileStrings: [String] = [
    "", " ", "'; DROP TABLE users; --", "\" OR 1=1 --", "') OR ('1'='1", "%", "_", "*",
    "../../../../etc/passwd", "..\\..\\windows\\win.ini", "/etc/shadow", "a/../../b", ".",
    "..", "\u{0}", "line\nbreak", "\u{202E}evil", "𝟘🎓", "二次函数", "数", "P", "K1", "2025-09-01",
    "2025-02-30", "9999-99-99", "-1", "NaN", "1e309", "<script>alert(1)</script>",
    "${jndi:ldap://x}", "SELECT * FROM sqlite_master", "MATCH", "\"", "NEAR(", "*)(",
    "admin", "type.googleapis.com/x",
  ]

  /// Wire bytes of a message of type `typeName`.
  func message(_ typeName: String, depth: Int = 0, rng: inout SeededGenerator) -> [UInt8] {
    guard let message = messages[typeName] else { return [] }
    var out: [UInt8] = []
    for field in message.field {
      // Each field is present about two times in three; repeated ones 0–4 times, rarely many.
      let count: Int
      if field.label == .repeated {
        count = Int.random(in: 0...20, using: &rng) == 0 ? 300 : Int.random(in: 0...4, using: &rng)
      } else {
        count = Int.random(in: 0...2, using: &rng) == 0 ? 0 : 1
      }
      for _ in 0..<count { encode(field, depth: depth, into: &out, rng: &rng) }
    }
    if Int.random(in: 0..<16, using: &rng) == 0 {
      // An unknown field, which decoders must skip.
      Self.tag(900 + Int.random(in: 0..<50, using: &rng), 2, into: &out)
      Self.lengthDelimited(randomBytes(8, rng: &rng), into: &out)
    }
    return out
  }

  /// A request for `method`: usually schema-shaped, sometimes garbage or truncated.
  func request(for method: FuzzMethod, rng: inout SeededGenerator) -> [UInt8] {
    switch Int.random(in: 0..<20, using: &rng) {
    case 0: return randomBytes(Int.random(in: 0...64, using: &rng), rng: &rng)
    case 1:
      let bytes = message(method.inputType, rng: &rng)
      return Array(bytes.prefix(Int.random(in: 0...max(0, bytes.count), using: &rng)))
    default: return message(method.inputType, rng: &rng)
    }
  }

  private func encode(_ field: Field, depth: Int, into out: inout [UInt8], rng: inout SeededGenerator)
  {
    let n = Int(field.number)
    switch field.type {
    case .string:
      Self.tag(n, 2, into: &out)
      Self.lengthDelimited(string(rng: &rng), into: &out)
    case .bytes:
      Self.tag(n, 2, into: &out)
      Self.lengthDelimited(randomBytes(Int.random(in: 0...64, using: &rng), rng: &rng), into: &out)
    case .message, .group:
      guard depth < 4 else { return }
      Self.tag(n, 2, into: &out)
      Self.lengthDelimited(message(field.typeName, depth: depth + 1, rng: &rng), into: &out)
    case .double:
      Self.tag(n, 1, into: &out)
      Self.fixed64(double(rng: &rng).bitPattern, into: &out)
    case .float:
      Self.tag(n, 5, into: &out)
      Self.fixed32(Float(double(rng: &rng)).bitPattern, into: &out)
    case .fixed64, .sfixed64:
      Self.tag(n, 1, into: &out)
      Self.fixed64(UInt64(bitPattern: integer(rng: &rng)), into: &out)
    case .fixed32, .sfixed32:
      Self.tag(n, 5, into: &out)
      Self.fixed32(UInt32(truncatingIfNeeded: integer(rng: &rng)), into: &out)
    case .sint32, .sint64:
      let v = integer(rng: &rng)
      Self.tag(n, 0, into: &out)
      Self.varint(UInt64(bitPattern: (v << 1) ^ (v >> 63)), into: &out)
    case .enum:
      Self.tag(n, 0, into: &out)
      let v: Int64 = [0, 1, 2, 3, 5, 17, 999, -1].randomElement(using: &rng)!
      Self.varint(UInt64(bitPattern: v), into: &out)
    case .bool:
      Self.tag(n, 0, into: &out)
      Self.varint(UInt64.random(in: 0...2, using: &rng), into: &out)
    default:  // int32, int64, uint32, uint64
      Self.tag(n, 0, into: &out)
      Self.varint(UInt64(bitPattern: integer(rng: &rng)), into: &out)
    }
  }

  private func string(rng: inout SeededGenerator) -> [UInt8] {
    switch Int.random(in: 0..<12, using: &rng) {
    case 0: return [0xC3, 0x28, 0xFF, 0xFE]  // invalid UTF-8
    case 1:
      return Array(String(repeating: "数", count: Int.random(in: 100...40_000, using: &rng)).utf8)
    case 2:
      return Array(
        String((0..<Int.random(in: 1...40, using: &rng)).map { _ in
          Character(UnicodeScalar(UInt8.random(in: 0x20...0x7E, using: &rng)))
        }).utf8)
    default: return Array(Self.hostileStrings.randomElement(using: &rng)!.utf8)
    }
  }

  private func integer(rng: inout SeededGenerator) -> Int64 {
    [0, 1, -1, 7, 13, 100, 1_000_000, Int64(Int32.max), Int64(Int32.min), .max, .min,
     Int64.random(in: -1000...1000, using: &rng)].randomElement(using: &rng)!
  }

  private func double(rng: inout SeededGenerator) -> Double {
    [0, -0.0, 1, -1, 0.5, 100, 1e308, -1e308, .nan, .infinity, -.infinity,
     .leastNonzeroMagnitude, Double.random(in: -200...200, using: &rng)].randomElement(using: &rng)!
  }

  private func randomBytes(_ count: Int, rng: inout SeededGenerator) -> [UInt8] {
    (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
  }

  static func tag(_ number: Int, _ wireType: UInt64, into out: inout [UInt8]) {
    varint(UInt64(number) << 3 | wireType, into: &out)
  }

  static func varint(_ value: UInt64, into out: inout [UInt8]) {
    var v = value
    while v >= 0x80 {
      out.append(UInt8(v & 0x7F) | 0x80)
      v >>= 7
    }
    out.append(UInt8(v))
  }

  static func lengthDelimited(_ bytes: [UInt8], into out: inout [UInt8]) {
    varint(UInt64(bytes.count), into: &out)
    out += bytes
  }

  static func fixed64(_ v: UInt64, into out: inout [UInt8]) {
    for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
  }

  static func fixed32(_ v: UInt32, into out: inout [UInt8]) {
    for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
  }
}
