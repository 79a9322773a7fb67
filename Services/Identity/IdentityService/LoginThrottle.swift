import Foundation
import ServiceRuntime
import SmartSchoolModel
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// An IPv4 or IPv6 address range (`10.0.0.0/8`, `fd00::/8`, or one address), for
/// `--trusted-proxies`.
public struct IPRange: Hashable, Sendable, CustomStringConvertible {
  /// The network's address bytes (4 or 16).
  let bytes: [UInt8]
  /// Leading bits that must match.
  let prefix: Int

  /// Parses `address` or `address/prefix`; nil when it is neither.
  public init?(_ text: String) {
    let parts = text.trimmingSpaces().split(
      separator: "/", omittingEmptySubsequences: false)
    guard parts.count <= 2, let bytes = IPRange.parse(String(parts[0])) else { return nil }
    let bits = bytes.count * 8
    var prefix = bits
    if parts.count == 2 {
      guard let p = Int(parts[1]), (0...bits).contains(p) else { return nil }
      prefix = p
    }
    self.bytes = bytes
    self.prefix = prefix
  }

  /// The bytes of an IPv4 or IPv6 address, or nil.
  static func parse(_ address: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, address, &v4) == 1 {
      return withUnsafeBytes(of: &v4) { Array($0) }
    }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, address, &v6) == 1 {
      return withUnsafeBytes(of: &v6) { Array($0) }
    }
    return nil
  }

  /// True when `address` (text) lies in the range.
  public func contains(_ address: String) -> Bool {
    guard let other = IPRange.parse(address), other.count == bytes.count else { return false }
    var remaining = prefix
    for (a, b) in zip(bytes, other) where remaining > 0 {
      let mask: UInt8 = remaining >= 8 ? 0xFF : ~(0xFF >> UInt8(remaining))
      if a & mask != b & mask { return false }
      remaining -= 8
    }
    return true
  }

  public var description: String {
    let family = bytes.count == 4 ? AF_INET : AF_INET6
    var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
    _ = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &text, socklen_t(text.count)) }
    let address = String(
      decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return prefix == bytes.count * 8 ? address : "\(address)/\(prefix)"
  }

  /// Parses a comma-separated list; throws naming the first entry that is not a range.
  public static func list(_ text: String) throws(ServiceError) -> [IPRange] {
    var ranges: [IPRange] = []
    for item in text.split(separator: ",") {
      guard let range = IPRange(String(item)) else {
        throw ServiceError.invalid(
          "trusted-proxies", "'\(item)' is not an IP address or CIDR range")
      }
      ranges.append(range)
    }
    return ranges
  }
}

/// Who is logging in, as far as the server can tell.
enum ClientAddress {
  /// The host part of a gRPC peer (`ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678`, `unix:/path`).
  static func host(ofPeer peer: String) -> String {
    if peer.hasPrefix("ipv4:") {
      let rest = peer.dropFirst(5)
      return String(rest[..<(rest.lastIndex(of: ":") ?? rest.endIndex)])
    }
    if peer.hasPrefix("ipv6:["), let close = peer.firstIndex(of: "]") {
      return String(peer[peer.index(peer.startIndex, offsetBy: 6)..<close])
    }
    return peer
  }

  /// The client's address: the peer's, or, when the peer is a trusted proxy, the rightmost
  /// address of `x-forwarded-for` that is not itself a trusted proxy (entries further left
  /// were written by the client and prove nothing).
  static func resolve(peer: String, forwardedFor: [String], trusted: [IPRange]) -> String {
    let immediate = host(ofPeer: peer)
    func isTrusted(_ address: String) -> Bool { trusted.contains { $0.contains(address) } }
    guard !trusted.isEmpty, isTrusted(immediate) else { return immediate }
    let hops = forwardedFor.joined(separator: ",").split(separator: ",").suffix(32)
      .map { $0.trimmingSpaces() }
    for hop in hops.reversed() where !isTrusted(hop) {
      // A hop that is not an address (garbage, or an obfuscated name) ends the chain there.
      return IPRange.parse(hop) != nil ? hop : immediate
    }
    return immediate
  }
}

/// Per-account and per-address login limits, checked before any password is hashed so that a
/// flood is refused cheaply: a token bucket of attempts a minute for each username and each
/// client address, and a bound on the hashes one address may have running at once (so one
/// address never holds every slot of the ``HashLimiter``). State is per replica; the lockout
/// in the store is what holds across replicas.
final class LoginThrottle: Sendable {
  private struct Bucket {
    var tokens: Double
    var updated: ContinuousClock.Instant
    var hashing = 0
  }
  private struct State {
    var accounts: [String: Bucket] = [:]
    var addresses: [String: Bucket] = [:]
    var guesses: [String: Bucket] = [:]
  }

  private let perAccount: Int
  private let perAddress: Int
  private let hashesPerAddress: Int
  private let guessesPerAddress: Int
  private let capacity: Int
  private let state = Mutex(State())

  /// Limits of `perAccount` and `perAddress` attempts a minute, `hashesPerAddress`
  /// concurrent hashes per address and `guessesPerAddress` wrong codes a minute per address
  /// (each 0 = off), remembering up to `capacity` keys of each kind (idle ones are forgotten
  /// first).
  init(
    perAccount: Int, perAddress: Int, hashesPerAddress: Int, guessesPerAddress: Int = 0,
    capacity: Int = 100_000
  ) {
    self.perAccount = perAccount
    self.perAddress = perAddress
    self.hashesPerAddress = hashesPerAddress
    self.guessesPerAddress = guessesPerAddress
    self.capacity = capacity
  }

  /// Takes one attempt from `address`'s bucket alone, for a request that names no account
  /// but makes the server keep something (a device authorization), or throws
  /// RESOURCE_EXHAUSTED.
  func admit(address: String) throws(ServiceError) {
    try take(address, from: \.addresses, limit: perAddress,
      refusal: "too many requests from your address; retry in a minute")
  }

  /// Takes one guess of a short code (a device's user code) from `address`'s wrong-guess
  /// allowance, or throws RESOURCE_EXHAUSTED when it is used up. The guess is taken before
  /// the code is looked up, so a burst of guesses at once cannot pass together; a right guess
  /// gives it back (``refundGuess(from:)``), so only wrong codes count and a school's teachers
  /// behind one address are not held up by each other.
  func admitGuess(from address: String) throws(ServiceError) {
    try take(address, from: \.guesses, limit: guessesPerAddress,
      refusal: "too many wrong codes from your address; retry in a minute")
  }

  /// Takes a token from `key`'s bucket among `buckets` (a limit of `limit` a minute; 0 = no
  /// limit), or throws RESOURCE_EXHAUSTED with `refusal`.
  private func take(
    _ key: String, from buckets: WritableKeyPath<State, [String: Bucket]>, limit: Int,
    refusal: String
  ) throws(ServiceError) {
    guard limit > 0 else { return }
    let now = ContinuousClock.now
    let capacity = capacity
    let admitted = state.withLock { s -> Bool in
      var bucket = Self.refill(s[keyPath: buckets][key], limit: limit, now: now)
      guard bucket.tokens >= 1 else { return false }
      bucket.tokens -= 1
      Self.store(bucket, at: key, in: &s[keyPath: buckets], capacity: capacity)
      return true
    }
    if !admitted { throw ServiceError.resourceExhausted(refusal) }
  }

  /// Gives back the guess ``admitGuess(from:)`` took, the code having been right.
  func refundGuess(from address: String) {
    guard guessesPerAddress > 0 else { return }
    state.withLock { s in
      guard var bucket = s.guesses[address] else { return }
      bucket.tokens = min(Double(guessesPerAddress), bucket.tokens + 1)
      s.guesses[address] = bucket
    }
  }

  /// Takes one attempt for `account` from `address`, or throws RESOURCE_EXHAUSTED.
  func admit(account: String, address: String) throws(ServiceError) {
    let now = ContinuousClock.now
    let account = account.lowercased()
    let refused: String? = state.withLock { s in
      var accountBucket = Self.refill(s.accounts[account], limit: perAccount, now: now)
      var addressBucket = Self.refill(s.addresses[address], limit: perAddress, now: now)
      if perAddress > 0, addressBucket.tokens < 1 {
        return "too many login attempts from your address; retry in a minute"
      }
      if perAccount > 0, accountBucket.tokens < 1 {
        return "too many login attempts for this account; retry in a minute"
      }
      if perAccount > 0 {
        accountBucket.tokens -= 1
        Self.store(accountBucket, at: account, in: &s.accounts, capacity: capacity)
      }
      if perAddress > 0 {
        addressBucket.tokens -= 1
        Self.store(addressBucket, at: address, in: &s.addresses, capacity: capacity)
      }
      return nil
    }
    if let refused { throw ServiceError.resourceExhausted(refused) }
  }

  /// Runs `work` (a password hash) counted against `address`'s concurrent hashes; refuses
  /// with RESOURCE_EXHAUSTED when the address already has its share running.
  func hashing<T>(from address: String, _ work: () async throws -> T) async throws -> T {
    guard hashesPerAddress > 0 else { return try await work() }
    let now = ContinuousClock.now
    let admitted = state.withLock { s -> Bool in
      var bucket = Self.refill(s.addresses[address], limit: perAddress, now: now)
      guard bucket.hashing < hashesPerAddress else { return false }
      bucket.hashing += 1
      Self.store(bucket, at: address, in: &s.addresses, capacity: capacity)
      return true
    }
    guard admitted else {
      throw ServiceError.resourceExhausted(
        "too many logins from your address are being checked at once; retry shortly")
    }
    defer {
      state.withLock { s in
        if s.addresses[address] != nil { s.addresses[address]!.hashing -= 1 }
      }
    }
    return try await work()
  }

  /// Hashes running for `address` now (for tests).
  func hashesRunning(from address: String) -> Int {
    state.withLock { $0.addresses[address]?.hashing ?? 0 }
  }

  private static func refill(_ bucket: Bucket?, limit: Int, now: ContinuousClock.Instant)
    -> Bucket
  {
    guard var bucket else { return Bucket(tokens: Double(limit), updated: now) }
    let elapsed = bucket.updated.duration(to: now)
    let seconds = Double(elapsed.components.seconds)
      + Double(elapsed.components.attoseconds) / 1e18
    bucket.tokens = min(Double(limit), bucket.tokens + seconds * Double(limit) / 60)
    bucket.updated = now
    return bucket
  }

  /// Stores `bucket`; past `capacity` keys, forgets the idle ones first (a full bucket with
  /// no hash running says nothing a fresh one would not), then any not hashing.
  private static func store(
    _ bucket: Bucket, at key: String, in map: inout [String: Bucket], capacity: Int
  ) {
    if map[key] == nil, map.count >= capacity {
      let now = ContinuousClock.now
      map = map.filter { _, b in
        b.hashing > 0 || b.updated.duration(to: now) < .seconds(60)
      }
      if map.count >= capacity { map = map.filter { $0.value.hashing > 0 } }
    }
    map[key] = bucket
  }
}
