import Foundation
import SmartSchoolModel
import SwiftProtobuf

// A bulk import writes a feed event for every row it stores (a user, a lesson, a score sheet),
// and as a row of its own each event cost the database about as much again as the imported
// row: a heap tuple of nine columns, a primary-key entry, a text type URL, the entity's id and
// key and org path each spelled out. From ``ChangeBlock/threshold`` events a transaction packs
// them, ``ChangeBlock/size`` a row, into the same `runtime_changes` table: the row's
// `sequence` is its last event's and `first_sequence` its first's (null on an event's own
// row), `entity` lists its events' kinds as `,kind,kind,`, `org_path` is the longest common
// prefix of their paths, and `payload` holds the events in the compact form below (each
// distinct kind, type and path once). The numbering is unchanged: a block takes its numbers
// where its events would have, so the feed stays commit-ordered on both stores, and a reader
// sees the same events, numbers and pages as from single rows (``FeedListing``). A listing's
// statement leaves blocks' bodies out and reads those the page reaches by key, a few at a
// time. What it costs: a follower decodes a whole block to start inside it (at most 255 events
// too many).

/// The packed form of a run of change-feed events: see the comment at the top of this file.
public enum ChangeBlock {
  /// From this many events in one write, they are packed.
  public static let threshold = 256
  /// The most events in one block: bounds what a follower starting inside a block decodes.
  public static let size = 256
  /// The format's version, the body's first byte.
  static let version: UInt8 = 1

  /// One block ready to store: `count` events, numbered on from wherever the store puts it.
  public struct Packed: Sendable, Equatable {
    /// The events the block holds.
    public var count: Int
    /// The encoded events (the row's `payload`).
    public var body: Data
    /// The longest common prefix of the events' org paths (the row's `org_path`).
    public var scope: String
    /// The events' kinds, each once, as `,kind,kind,` (the row's `entity`).
    public var entities: String
    /// The last event's time (the row's `time`).
    public var time: Double
  }

  /// `events` in blocks of at most ``size``, in order.
  public static func pack(_ events: some Collection<ChangeEvent>) -> [Packed] {
    var blocks: [Packed] = []
    var start = events.startIndex
    while start != events.endIndex {
      let end = events.index(start, offsetBy: size, limitedBy: events.endIndex) ?? events.endIndex
      blocks.append(packOne(events[start..<end]))
      start = end
    }
    return blocks
  }

  /// One block of `events` (at most ``size``, at least one).
  static func packOne(_ events: some Collection<ChangeEvent>) -> Packed {
    var strings: [String: Int] = [:]
    var table: [String] = []
    func index(_ s: String) -> Int {
      if let i = strings[s] { return i }
      strings[s] = table.count
      table.append(s)
      return table.count - 1
    }
    // A block's events mostly share their kind and type, and a few paths: the last of each is
    // kept so that most events hash no string, and the common prefix takes each path once.
    var paths: [String: Int] = [:]
    var entity = (name: "", at: -1, type: String?.none, typeAt: UInt64(0))
    var path = (name: "", at: -1)
    var kinds: [String] = []
    var scope: [UInt8]? = nil
    var records = Writer()
    records.bytes.reserveCapacity(events.count * 96)
    var lastTime: Double? = nil
    for e in events {
      if entity.at < 0 || entity.name != e.entity || entity.type != e.payloadType {
        if !kinds.contains(e.entity) { kinds.append(e.entity) }
        entity = (
          e.entity, index(e.entity), e.payloadType,
          e.payloadType.map { UInt64(index($0)) + 1 } ?? 0
        )
      }
      if path.at < 0 || path.name != e.orgPath {
        if let at = paths[e.orgPath] {
          path = (e.orgPath, at)
        } else {
          path = (e.orgPath, index(e.orgPath))
          paths[e.orgPath] = path.at
          scope = commonPrefix(scope, e.orgPath)
        }
      }
      records.varint(UInt64(entity.at))
      records.varint(UInt64(path.at))
      records.varint(entity.typeAt)
      records.varint(UInt64(UInt32(truncatingIfNeeded: e.op)))
      var flags: UInt8 = 0
      if let lastTime, lastTime.bitPattern == e.time.bitPattern { flags |= 1 }
      if e.naturalKey == e.id { flags |= 2 }
      if e.payload != nil { flags |= 4 }
      records.bytes.append(flags)
      if flags & 1 == 0 { records.fixed64(e.time.bitPattern) }
      lastTime = e.time
      records.string(e.id)
      if flags & 2 == 0 { records.string(e.naturalKey) }
      if let payload = e.payload { records.data(payload) }
    }
    var body = Writer()
    body.bytes.reserveCapacity(records.bytes.count + table.count * 40 + 16)
    body.bytes.append(version)
    body.varint(UInt64(events.count))
    body.varint(UInt64(table.count))
    for s in table { body.string(s) }
    body.bytes.append(contentsOf: records.bytes)
    return Packed(
      count: events.count, body: Data(body.bytes),
      scope: String(decoding: scope ?? [], as: UTF8.self),
      entities: "," + kinds.sorted().joined(separator: ",") + ",",
      time: lastTime ?? 0)
  }

  /// The longest common prefix of `prefix` (nil: none yet) and `path`, cut back to a whole
  /// character so that it is valid UTF-8 and SQL's `substr` and `starts_with` agree with it.
  static func commonPrefix(_ prefix: [UInt8]?, _ path: String) -> [UInt8] {
    guard var prefix else { return Array(path.utf8) }
    var path = path
    // Over contiguous bytes: the UTF-8 view's iterator cost more than the rest of a block.
    var n = path.withUTF8 { utf8 in
      prefix.withUnsafeBufferPointer { bytes in
        let common = min(bytes.count, utf8.count)
        var n = 0
        while n < common && bytes[n] == utf8[n] { n += 1 }
        return n
      }
    }
    // Back to the first byte of the character the prefix ends inside, if any.
    if n < prefix.count {
      while n > 0 && prefix[n] & 0xC0 == 0x80 { n -= 1 }
    }
    prefix.removeSubrange(n...)
    return prefix
  }

  /// The events of a block stored at numbers `first...last`, in order, each with its number.
  /// Throws on a body this build cannot read (a corrupt row, a newer format).
  public static func unpack(_ body: some Collection<UInt8>, first: Int64, last: Int64)
    throws -> [Smartschool_Common_V1_Change]
  {
    var changes: [Smartschool_Common_V1_Change] = []
    try unpack(body, first: first, last: last) { change in
      changes.append(change)
      return true
    }
    return changes
  }

  /// Calls `each` with the block's events in order until it returns false.
  static func unpack(
    _ body: some Collection<UInt8>, first: Int64, last: Int64,
    _ each: (Smartschool_Common_V1_Change) throws -> Bool
  ) throws {
    let bytes = Array(body)
    var r = Reader(bytes: bytes)
    guard try r.byte() == version else { throw corrupt("unknown block format") }
    let count = try r.count()
    guard Int64(count) == last - first + 1 else {
      throw corrupt("\(count) events numbered \(first)...\(last)")
    }
    let strings = try (0..<r.count()).map { _ in try r.string() }
    func string(_ i: Int) throws -> String {
      guard i < strings.count else { throw corrupt("string \(i) of \(strings.count)") }
      return strings[i]
    }
    var time = 0.0
    for n in 0..<count {
      var c = Smartschool_Common_V1_Change()
      c.sequence = first + Int64(n)
      c.entity = try string(r.count())
      c.orgPath = try string(r.count())
      let type = try r.count()
      let op = Int(Int32(truncatingIfNeeded: try r.varint()))
      c.op = Smartschool_Common_V1_ChangeOp(rawValue: op) ?? .unspecified
      let flags = try r.byte()
      if flags & 1 == 0 {
        time = Double(bitPattern: try r.fixed64())
        // Timestamp's own range (years 1 to 9999); anything else traps in its conversion.
        guard time >= -62_135_596_800, time < 253_402_300_800 else {
          throw corrupt("time \(time)")
        }
      }
      c.time = Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: time))
      c.id = try r.string()
      c.naturalKey = flags & 2 == 0 ? try r.string() : c.id
      if flags & 4 != 0 {
        let payload = try r.data()
        if type > 0 {
          c.payload = Google_Protobuf_Any()
          c.payload.typeURL = try string(type - 1)
          c.payload.value = payload
        }
      }
      if try !each(c) { return }
    }
    guard r.atEnd else { throw corrupt("bytes after the last event") }
  }

  static func corrupt(_ what: String) -> ServiceError {
    .internalError("a change-feed block is unreadable: \(what)")
  }

  /// Appends the block's encodings.
  struct Writer {
    var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
      var v = value
      while v >= 0x80 {
        bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
        v >>= 7
      }
      bytes.append(UInt8(v))
    }

    mutating func fixed64(_ value: UInt64) {
      for shift in stride(from: 0, to: 64, by: 8) {
        bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
      }
    }

    mutating func string(_ s: String) {
      var s = s
      s.withUTF8 { utf8 in
        varint(UInt64(utf8.count))
        bytes.append(contentsOf: utf8)
      }
    }

    mutating func data(_ d: Data) {
      varint(UInt64(d.count))
      bytes.append(contentsOf: d)
    }
  }

  /// Reads a block's encodings, refusing to read past its end.
  struct Reader {
    let bytes: [UInt8]
    var at = 0

    var atEnd: Bool { at == bytes.count }

    mutating func byte() throws -> UInt8 {
      guard at < bytes.count else { throw corrupt("truncated") }
      at += 1
      return bytes[at - 1]
    }

    mutating func varint() throws -> UInt64 {
      var value: UInt64 = 0
      for shift in stride(from: 0, to: 64, by: 7) {
        let b = try byte()
        value |= UInt64(b & 0x7F) << UInt64(shift)
        if b < 0x80 { return value }
      }
      throw corrupt("varint too long")
    }

    /// A varint that counts or indexes something in this block, which cannot exceed its size.
    mutating func count() throws -> Int {
      let v = try varint()
      guard v <= UInt64(bytes.count) else { throw corrupt("count \(v) past the block") }
      return Int(v)
    }

    mutating func fixed64() throws -> UInt64 {
      guard bytes.count - at >= 8 else { throw corrupt("truncated") }
      var value: UInt64 = 0
      for i in 0..<8 { value |= UInt64(bytes[at + i]) << UInt64(8 * i) }
      at += 8
      return value
    }

    mutating func slice() throws -> ArraySlice<UInt8> {
      let n = try count()
      guard bytes.count - at >= n else { throw corrupt("truncated") }
      at += n
      return bytes[(at - n)..<at]
    }

    mutating func string() throws -> String {
      String(decoding: try slice(), as: UTF8.self)
    }

    mutating func data() throws -> Data { Data(try slice()) }
  }
}

/// Who sees which feed events: those under one of `scopes` (nil: all), and those of the
/// `unscoped` kinds whatever their path.
struct FeedFilter {
  let scopes: [String]?
  let unscoped: Set<String>

  /// nil when `scopes` is empty (nothing is visible).
  init?(scopes: [OrgPath]?, unscoped: [String]) {
    if let scopes {
      if scopes.isEmpty { return nil }
      self.scopes = scopes.contains(.root) ? nil : scopes.map(\.description)
    } else {
      self.scopes = nil
    }
    self.unscoped = Set(unscoped)
  }

  func admits(_ c: Smartschool_Common_V1_Change) -> Bool {
    guard let scopes else { return true }
    if unscoped.contains(c.entity) { return true }
    return scopes.contains { c.orgPath.utf8.starts(with: $0.utf8) }
  }
}

/// A page of the feed built from its rows in order: an event's own row as SQL filtered it, a
/// block's events decoded, filtered and those at or before `after` left out.
struct FeedListing {
  let after: Int64
  let limit: Int
  let filter: FeedFilter
  private(set) var changes: [Smartschool_Common_V1_Change] = []

  init(after: Int64, limit: Int, filter: FeedFilter) {
    self.after = after
    self.limit = limit
    self.filter = filter
  }

  /// One event more than the page holds: the page is done and more follow.
  var full: Bool { changes.count > limit }

  /// How many blocks the page may still take events from (at least one): a listing reads
  /// the bodies of that many of the blocks ahead together, not every block its statement
  /// found (a page of 1,000 over blocks would otherwise fetch a thousand bodies to use four).
  var blocksWanted: Int {
    max(1, (limit + 1 - changes.count + ChangeBlock.size - 1) / ChangeBlock.size)
  }

  /// A row of one event, which the statement's filter already admitted.
  mutating func add(_ change: Smartschool_Common_V1_Change) {
    if !full { changes.append(change) }
  }

  /// A block's row.
  mutating func addBlock(_ body: some Collection<UInt8>, first: Int64, last: Int64) throws {
    try ChangeBlock.unpack(body, first: first, last: last) { c in
      if c.sequence > after && filter.admits(c) { changes.append(c) }
      return !full
    }
  }

  /// The page and whether more follow.
  var result: (changes: [Smartschool_Common_V1_Change], hasMore: Bool) {
    (Array(changes.prefix(limit)), changes.count > limit)
  }
}
