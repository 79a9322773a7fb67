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

  /// The production default: N = 2^15, r = 8, p = 1 (32 MiB, tens of milliseconds a hash).
  public static let standard = ScryptParameters(logN: 15, r: 8, p: 1)

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

  /// Checks a new password's strength: 8–128 characters, not only digits or only letters.
  public static func validateNew(_ password: String, field: String) throws(ServiceError) {
    var v = Validator()
    if password.count < 8 {
      v.add(field, "must have at least 8 characters")
    } else if password.count > 128 {
      v.add(field, "must have at most 128 characters")
    } else if password.allSatisfy(\.isNumber) || password.allSatisfy(\.isLetter) {
      v.add(field, "must mix letters with digits or symbols")
    }
    try v.throwIfInvalid()
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
    let acquired = running.withLock { n -> Bool in
      guard n < limit else { return false }
      n += 1
      return true
    }
    guard acquired else {
      throw ServiceError.resourceExhausted("too many password checks in progress; retry shortly")
    }
    defer { running.withLock { $0 -= 1 } }
    // scrypt is CPU- and memory-bound: keep it off the Swift concurrency pool.
    return try await withCheckedThrowingContinuation { continuation in
      DispatchQueue.global(qos: .userInitiated).async {
        continuation.resume(with: Result { try work() })
      }
    }
  }
}
