import Crypto
import Foundation
import ServiceRuntime
import SmartSchoolModel

/// Two-factor login settings.
public struct TwoFactorSettings: Sendable {
  /// Who must use TOTP (`--require-totp-for`); empty: nobody (TOTP stays optional).
  public var policy = TOTPPolicy()
  /// How long a login challenge (between the password and the second step) lives.
  public var challengeTTL: TimeInterval = 5 * 60

  public init() {}
}

/// Who must log in with TOTP: role bindings named `ROLE` (anywhere) or `ROLE@LEVEL` (held at
/// that level of the org tree or above: province, city, county, school, class), for example
/// `system_admin,province_admin,city_admin,county_admin,inspector@county`.
public struct TOTPPolicy: Sendable, Equatable, CustomStringConvertible {
  struct Rule: Sendable, Equatable {
    var role: Role
    /// Deepest org-path length a binding may have to be covered (root 0, province 1, …); nil
    /// for any.
    var maxDepth: Int?
  }
  var rules: [Rule] = []

  public init() {}

  /// Parses the comma-separated list; throws naming the first entry that is not one.
  public init(_ text: String) throws(ServiceError) {
    let levels: [String: Smartschool_Common_V1_OrgKind] = [
      "province": .province, "city": .city, "county": .county, "school": .school,
      "class": .class,
    ]
    for item in text.split(separator: ",") {
      let entry = item.trimmingSpaces()
      if entry.isEmpty { continue }
      let parts = entry.split(separator: "@", omittingEmptySubsequences: false).map(String.init)
      guard parts.count <= 2, let role = Role(rawValue: parts[0]) else {
        throw ServiceError.invalid(
          "require-totp-for", "'\(entry)' is not ROLE or ROLE@LEVEL (a role such as county_admin)")
      }
      var maxDepth: Int? = nil
      if parts.count == 2 {
        guard let kind = levels[parts[1]] else {
          throw ServiceError.invalid(
            "require-totp-for",
            "'\(entry)': the level must be province, city, county, school or class")
        }
        maxDepth = kind.depth + 1
      }
      rules.append(Rule(role: role, maxDepth: maxDepth))
    }
  }

  /// True when no role needs TOTP.
  public var isEmpty: Bool { rules.isEmpty }

  /// True when one of `bindings` falls under the policy.
  func covers(_ bindings: [Binding]) -> Bool {
    bindings.contains { b in
      guard let role = Role(b.role) else { return false }
      let depth = OrgPath(b.orgPath)?.ids.count ?? 0
      return rules.contains { $0.role == role && depth <= ($0.maxDepth ?? Int.max) }
    }
  }

  public var description: String {
    let names = ["province", "city", "county", "school", "class"]
    return rules.map { r in
      r.maxDepth.map { "\(r.role.rawValue)@\(names[min(max($0 - 1, 0), 4)])" } ?? r.role.rawValue
    }.joined(separator: ",")
  }
}

/// Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP): HMAC-SHA1, 6 digits,
/// 30-second steps from the Unix epoch — what every authenticator app reads from an
/// `otpauth://totp/` URI.
enum TOTP {
  static let digits = 6
  static let period: TimeInterval = 30
  static let issuer = "SmartSchool"
  /// Secret length in bytes (RFC 4226 recommends 160 bits).
  static let secretBytes = 20

  /// A new random secret.
  static func newSecret() -> Data {
    var rng = SystemRandomNumberGenerator()
    return Data((0..<secretBytes).map { _ in UInt8.random(in: 0...255, using: &rng) })
  }

  /// The time step of `date`.
  static func step(at date: Date) -> Int64 {
    Int64((date.timeIntervalSince1970 / period).rounded(.down))
  }

  /// The code of `step` (RFC 4226 §5.3 dynamic truncation), as `digits` decimal digits.
  static func code(secret: Data, step: Int64) -> String {
    var counter = UInt64(bitPattern: step).bigEndian
    let message = withUnsafeBytes(of: &counter) { Data($0) }
    let mac = Array(
      HMAC<Insecure.SHA1>.authenticationCode(for: message, using: SymmetricKey(data: secret)))
    let offset = Int(mac[mac.count - 1] & 0x0F)
    let binary = (UInt32(mac[offset] & 0x7F) << 24) | (UInt32(mac[offset + 1]) << 16)
      | (UInt32(mac[offset + 2]) << 8) | UInt32(mac[offset + 3])
    let value = binary % 1_000_000
    let text = String(value)
    return String(repeating: "0", count: digits - text.count) + text
  }

  /// The step among the current one and one either side (clock skew) whose code is `code`,
  /// preferring the latest; nil when none matches. Compared in constant time per step.
  static func matchingStep(secret: Data, code: String, at date: Date = Date()) -> Int64? {
    let now = step(at: date)
    var found: Int64? = nil
    for s in [now - 1, now, now + 1]
    where constantTimeEqual(self.code(secret: secret, step: s), code) {
      found = s
    }
    return found
  }

  /// True when `code` has the shape of a TOTP code.
  static func isCodeShaped(_ code: String) -> Bool {
    code.utf8.count == digits && code.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
  }

  private static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8)
    let y = Array(b.utf8)
    guard x.count == y.count else { return false }
    return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
  }

  /// What an authenticator app needs to add the account.
  static func enrolment(secret: Data, username: String) -> Smartschool_Identity_V1_TotpEnrolment {
    let encoded = Base32.encode(secret)
    // The label is "issuer:account"; both parts percent-encoded (Key Uri Format).
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~@")
    let account = username.addingPercentEncoding(withAllowedCharacters: allowed) ?? username
    return .with {
      $0.secret = encoded
      $0.issuer = issuer
      $0.accountName = username
      $0.algorithm = "SHA1"
      $0.digits = Int32(digits)
      $0.periodSeconds = Int32(period)
      $0.otpauthUri = "otpauth://totp/\(issuer):\(account)?secret=\(encoded)&issuer=\(issuer)"
        + "&algorithm=SHA1&digits=\(digits)&period=\(Int(period))"
    }
  }
}

/// RFC 4648 base32 (the alphabet A-Z 2-7), unpadded, as authenticator apps take secrets.
enum Base32 {
  private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

  static func encode(_ data: Data) -> String {
    var out: [UInt8] = []
    var buffer = 0
    var bits = 0
    for byte in data {
      buffer = (buffer << 8) | Int(byte)
      bits += 8
      while bits >= 5 {
        out.append(alphabet[(buffer >> (bits - 5)) & 31])
        bits -= 5
      }
    }
    if bits > 0 { out.append(alphabet[(buffer << (5 - bits)) & 31]) }
    return String(decoding: out, as: UTF8.self)
  }
}

/// Single-use recovery codes: ten of `XXXXX-XXXXX` (the activation-code alphabet, about 49 bits
/// each), stored as SHA-256 digests like other random secrets.
enum RecoveryCodes {
  static let count = 10

  static func make() -> [String] {
    (0..<count).map { _ in
      let code = Secrets.activationCode()
      return String(code.prefix(5)) + "-" + String(code.dropFirst(5))
    }
  }

  /// The stored form of a code as a person may type it (any case, with or without the dash
  /// or spaces).
  static func digest(_ typed: String) -> String {
    Secrets.digest(normalized(typed))
  }

  static func normalized(_ typed: String) -> String {
    typed.uppercased().filter { $0 != "-" && $0 != " " }
  }

  /// True when `typed` has the shape of a recovery code.
  static func isCodeShaped(_ typed: String) -> Bool {
    let n = normalized(typed)
    return n.count == 10 && n.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) }
  }
}
