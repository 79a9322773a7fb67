import CryptoExtras
import Foundation
import ServiceRuntime
import Synchronization

/// scrypt parameters; stored with every hash so they can change without breaking old ones.
public struct ScryptParameters: Hashable, Sendable {
  /// log2 of N (CPU/memory cost).
  public var logN: Int
  /// Block size r.
  public var r: Int
  /// Parallelism p.
  public var p: Int

  /// The production default: N = 2^17, r = 8, p = 1 (OWASP's recommendation: 128 MiB and
  /// a few hundred milliseconds a hash on one core).
  public static let standard = ScryptParameters(logN: 17, r: 8, p: 1)

  public init(logN: Int, r: Int, p: Int) {
    self.logN = logN
    self.r = r
    self.p = p
  }
}

/// Password hashing with scrypt, in a self-describing format:
/// `$scrypt$ln=15,r=8,p=1$<salt b64>$<hash b64>`.
public enum Passwords {
  static let hashLength = 32

  /// Hashes `password` with a fresh 16-byte salt.
  public static func hash(_ password: String, parameters: ScryptParameters) throws -> String {
    var salt = [UInt8](repeating: 0, count: 16)
    var rng = SystemRandomNumberGenerator()
    for i in salt.indices { salt[i] = UInt8.random(in: 0...255, using: &rng) }
    let derived = try derive(password, salt: salt, parameters: parameters)
    return "$scrypt$ln=\(parameters.logN),r=\(parameters.r),p=\(parameters.p)$"
      + Data(salt).base64EncodedString() + "$" + Data(derived).base64EncodedString()
  }

  /// The parameters a stored hash was made with; `nil` for a malformed hash.
  public static func parameters(of stored: String) -> ScryptParameters? {
    parse(stored)?.parameters
  }

  /// True when `password` matches the stored hash (constant-time comparison).
  public static func verify(_ password: String, against stored: String) throws -> Bool {
    guard let parsed = parse(stored) else { return false }
    let derived = try derive(password, salt: parsed.salt, parameters: parsed.parameters)
    guard derived.count == parsed.hash.count else { return false }
    var diff: UInt8 = 0
    for (a, b) in zip(derived, parsed.hash) { diff |= a ^ b }
    return diff == 0
  }

  /// True when the stored hash was made with other parameters than `current` (it is then
  /// rehashed at the next successful login).
  public static func needsRehash(_ stored: String, current: ScryptParameters) -> Bool {
    parameters(of: stored) != current
  }

  private static func parse(_ stored: String) -> (parameters: ScryptParameters, salt: [UInt8], hash: [UInt8])? {
    let parts = stored.split(separator: "$", omittingEmptySubsequences: true)
    guard parts.count == 4, parts[0] == "scrypt" else { return nil }
    var values: [String: Int] = [:]
    for item in parts[1].split(separator: ",") {
      let kv = item.split(separator: "=")
      guard kv.count == 2, let n = Int(kv[1]) else { return nil }
      values[String(kv[0])] = n
    }
    guard let ln = values["ln"], let r = values["r"], let p = values["p"], (1...22).contains(ln),
      (1...32).contains(r), (1...16).contains(p),
      let salt = Data(base64Encoded: String(parts[2])),
      let hash = Data(base64Encoded: String(parts[3]))
    else { return nil }
    return (ScryptParameters(logN: ln, r: r, p: p), Array(salt), Array(hash))
  }

  private static func derive(_ password: String, salt: [UInt8], parameters: ScryptParameters)
    throws -> [UInt8]
  {
    let key = try KDF.Scrypt.deriveKey(
      from: Array(password.utf8), salt: salt, outputByteCount: hashLength,
      rounds: 1 << parameters.logN, blockSize: parameters.r, parallelism: parameters.p,
      maxMemory: 256 * 1024 * 1024)
    return key.withUnsafeBytes { Array($0) }
  }
}

/// What a new password must be: long enough, not a common password or word (with digits or
/// symbols around it, or in leetspeak), not one character or short sequence repeated, and not
/// containing the username. The common passwords and words come from zxcvbn's frequency
/// lists (``CommonPasswords``, written by `Services/Identity/make-common-passwords.py`).
public struct PasswordPolicy: Sendable {
  /// Fewest characters a new password may have.
  public var minLength: Int
  /// Most characters a new password may have (scrypt takes any length; this bounds the work).
  public static let maxLength = 128

  /// A policy requiring at least `minLength` characters.
  public init(minLength: Int = 8) {
    self.minLength = minLength
  }

  /// The common passwords and words, loaded once on first use.
  static let common: Set<Substring> = Set(CommonPasswords.text.split(separator: "\n"))

  /// Throws INVALID_ARGUMENT on `field` unless `password` is acceptable for `username` (nil:
  /// skip the username rule).
  public func check(_ password: String, username: String?, field: String) throws(ServiceError) {
    if let problem = problem(password, username: username) {
      throw ServiceError.invalid(field, problem)
    }
  }

  /// Why `password` is refused, or nil when it is acceptable.
  public func problem(_ password: String, username: String?) -> String? {
    if password.count < minLength { return "must have at least \(minLength) characters" }
    if password.count > Self.maxLength {
      return "must have at most \(Self.maxLength) characters"
    }
    if password.allSatisfy(\.isNumber) || password.allSatisfy(\.isLetter) {
      return "must mix letters with digits or symbols"
    }
    let lower = password.lowercased()
    if Set(lower).count < 4 || Self.isRepetition(lower) {
      return "repeats too few characters to be hard to guess"
    }
    if let username = username?.lowercased(), username.count >= 3 {
      let local = username.split(separator: "@").first.map(String.init) ?? username
      if lower.contains(username) || (local.count >= 3 && lower.contains(local)) {
        return "must not contain the username"
      }
    }
    // The password itself, and its core without the digits and symbols around it (a common
    // word + "1!" is as guessable as the word), as typed and with leetspeak undone.
    let core = lower.trimmingCharacters(in: CharacterSet.letters.inverted)
    for candidate in [lower, core] + Self.unleet(lower) + Self.unleet(core).map({
      $0.trimmingCharacters(in: CharacterSet.letters.inverted)
    }) where candidate.count >= 3 {
      if Self.common.contains(Substring(candidate)) || Self.isRepetition(candidate)
        || Set(candidate).count < 3
      {
        return "is a common password or word, easy to guess"
      }
    }
    return nil
  }

  /// True when `text` is one shorter sequence written out twice or more ("abcabcabc").
  static func isRepetition(_ text: String) -> Bool {
    let chars = Array(text)
    guard chars.count >= 2 else { return false }
    for period in 1...(chars.count / 2) where chars.count % period == 0 {
      if (period..<chars.count).allSatisfy({ chars[$0] == chars[$0 - period] }) { return true }
    }
    return false
  }

  /// `text` with common leetspeak substitutions undone (both readings of "1"), when it has any.
  static func unleet(_ text: String) -> [String] {
    let map: [Character: Character] = [
      "@": "a", "4": "a", "0": "o", "3": "e", "$": "s", "5": "s", "7": "t", "!": "i", "+": "t",
    ]
    guard text.contains(where: { map[$0] != nil || $0 == "1" }) else { return [] }
    let base = String(text.map { map[$0] ?? $0 })
    return [base.replacingOccurrences(of: "1", with: "i"),
            base.replacingOccurrences(of: "1", with: "l")]
  }
}

/// Bounds the number of password hashes computed at once. A call beyond the bound is refused
/// at once with RESOURCE_EXHAUSTED instead of queueing, so a login flood cannot pile up work
/// (or memory: each scrypt hash holds 128·r·N bytes) while other RPCs stay served.
public final class HashLimiter: Sendable {
  private let limit: Int
  private let running = Mutex(0)

  /// A limiter allowing `limit` concurrent hashes.
  public init(limit: Int) {
    self.limit = max(1, limit)
  }

  /// How many hashes are being computed now.
  public var inUse: Int { running.withLock { $0 } }

  /// Runs `work` off the cooperative thread pool if a slot is free; RESOURCE_EXHAUSTED if not.
  public func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await holding { try await HashLimiter.offload(work) }
  }

  /// Runs `body` holding a slot if one is free (RESOURCE_EXHAUSTED if not): for work that must
  /// happen only once a hash is sure to run, such as reserving a login attempt; `body` hashes
  /// through ``offload(_:)``.
  public func holding<T>(_ body: () async throws -> T) async throws -> T {
    let acquired = running.withLock { n -> Bool in
      guard n < limit else { return false }
      n += 1
      return true
    }
    guard acquired else {
      throw ServiceError.resourceExhausted("too many password checks in progress; retry shortly")
    }
    defer { running.withLock { $0 -= 1 } }
    return try await body()
  }

  /// Runs `work` on a dispatch queue: scrypt is CPU- and memory-bound, so it stays off the
  /// Swift concurrency pool.
  public static func offload<T: Sendable>(_ work: @escaping @Sendable () throws -> T)
    async throws -> T
  {
    try await withCheckedThrowingContinuation { continuation in
      DispatchQueue.global(qos: .userInitiated).async {
        continuation.resume(with: Result { try work() })
      }
    }
  }
}
