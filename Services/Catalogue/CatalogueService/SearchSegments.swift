import Foundation
import GRDB
import ServiceRuntime

// SQLite keeps the merged text postings in segments, as FTS5 does: a merge of the recent
// documents (``SQLiteCatalogueStore/mergeRecent(_:)``) writes one new segment, a row per token
// whose blob holds the postings of every merged document with that token, in sequence order
// (``SQLiteCatalogueStore/segmentEntrySize`` bytes each: sequence, counts, lengths). The rows
// are keyed by (segment, token), so a new segment's rows go after every other row: the merge
// fills new pages instead of dirtying a page per token all over a B-tree of a row per posting
// (what made it the most of a create's writes). Once `segmentFanout` segments share a level,
// they are merged into one of the next level, so a search reads a few segments per token,
// and a posting is copied once per level (a handful of times in the index's life).
//
// A document's postings are in one segment, or in its own text while it is listed recent.
// Removing a merged document rewrites the blobs of its tokens in its segment without its
// entry. Facet (edition) postings stay a row each in `search_postings`, where the edition
// filter looks a candidate up by sequence.

extension SQLiteCatalogueStore {
  /// Segments of a level merged into one of the next level once this many are stored.
  static let segmentFanout = 8

  /// Bytes of one posting in a segment's blob: its sequence, ``SearchIndex/counts(_:)`` and
  /// ``SearchIndex/packLengths(_:)``, each a little-endian 64-bit integer.
  static let segmentEntrySize = 24

  /// One posting of a segment.
  struct SegmentEntry: Equatable {
    var seq: Int64
    var counts: Int64
    var lengths: Int64
  }

  /// Appends `entry` to a segment blob's bytes.
  static func append(_ entry: SegmentEntry, to bytes: inout [UInt8]) {
    withUnsafeBytes(of: entry.seq.littleEndian) { bytes.append(contentsOf: $0) }
    withUnsafeBytes(of: entry.counts.littleEndian) { bytes.append(contentsOf: $0) }
    withUnsafeBytes(of: entry.lengths.littleEndian) { bytes.append(contentsOf: $0) }
  }

  /// The entry at `index` of a segment blob.
  @inline(__always)
  static func entry(_ raw: UnsafeRawBufferPointer, _ index: Int) -> SegmentEntry {
    let o = index * segmentEntrySize
    return SegmentEntry(
      seq: Int64(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: Int64.self)),
      counts: Int64(littleEndian: raw.loadUnaligned(fromByteOffset: o + 8, as: Int64.self)),
      lengths: Int64(littleEndian: raw.loadUnaligned(fromByteOffset: o + 16, as: Int64.self)))
  }

  /// Calls `body` with every entry of a segment blob, in order.
  static func forEachEntry(_ blob: Data, _ body: (SegmentEntry) -> Void) {
    blob.withUnsafeBytes { raw in
      for i in 0..<(raw.count / segmentEntrySize) { body(entry(raw, i)) }
    }
  }

  /// Every entry of a segment blob.
  static func entries(_ blob: Data) -> [SegmentEntry] {
    var entries: [SegmentEntry] = []
    entries.reserveCapacity(blob.count / segmentEntrySize)
    forEachEntry(blob) { entries.append($0) }
    return entries
  }

  /// The index of the entry of `seq` in a segment blob (sorted by sequence), if any.
  static func entryIndex(_ blob: Data, seq: Int64) -> Int? {
    blob.withUnsafeBytes { raw in
      var (low, high) = (0, raw.count / segmentEntrySize)
      while low < high {
        let middle = (low + high) / 2
        let found = entry(raw, middle).seq
        if found == seq { return middle }
        if found < seq { low = middle + 1 } else { high = middle }
      }
      return nil
    }
  }

  /// The stored segments, oldest first.
  static func segmentIDs(_ db: Database) throws -> [Int64] {
    try Int64.fetchAll(
      db.cachedStatement(sql: "SELECT segment FROM search_segment_levels ORDER BY segment"))
  }

  static let insertSegmentRows = MultiRowStatement(
    "INSERT INTO search_segments (segment, token, postings)", columns: 3, rowsPerStatement: 100)

  /// Stores `postings` (per token, a blob's bytes in sequence order) as a new segment of
  /// `level`, then merges every level that reached ``segmentFanout`` segments.
  static func addSegment(
    _ db: Database, _ postings: [SearchIndex.TokenKey: [UInt8]], level: Int
  ) throws {
    if postings.isEmpty { return }
    let id =
      (try Int64.fetchOne(
        db.cachedStatement(sql: "SELECT max(segment) FROM search_segment_levels")) ?? 0) + 1
    // In byte order: the rows fill the new segment's pages in key order.
    let rows = postings.map { (SearchIndex.TokenOrder($0.key.token), $0.value) }
      .sorted { $0.0 < $1.0 }
    try insertSegmentRows.run(db, count: rows.count) { i, row in
      row.bind(id)
      row.bind(rows[i].0.token)
      row.bind(Data(rows[i].1))
    }
    try db.cachedStatement(
      sql: "INSERT INTO search_segment_levels (segment, level) VALUES (?, ?)"
    ).execute(arguments: [id, level])
    let sameLevel = try Int64.fetchAll(
      db.cachedStatement(
        sql: "SELECT segment FROM search_segment_levels WHERE level = ? ORDER BY segment"),
      arguments: [level])
    if sameLevel.count >= segmentFanout { try mergeSegments(db, sameLevel, level: level + 1) }
  }

  /// Replaces segments `ids` with one of `level` holding all their postings.
  static func mergeSegments(_ db: Database, _ ids: [Int64], level: Int) throws {
    var pieces: [SearchIndex.TokenKey: [Data]] = [:]
    let list = placeholders(ids.count)
    let rows = try Row.fetchCursor(
      db, sql: "SELECT token, postings FROM search_segments WHERE segment IN (\(list))",
      arguments: StatementArguments(ids))
    while let row = try rows.next() {
      pieces[SearchIndex.TokenKey(row[0]), default: []].append(row[1])
    }
    var merged: [SearchIndex.TokenKey: [UInt8]] = [:]
    merged.reserveCapacity(pieces.count)
    for (token, blobs) in pieces {
      var bytes: [UInt8] = []
      bytes.reserveCapacity(blobs.reduce(0) { $0 + $1.count })
      for blob in blobs { bytes.append(contentsOf: blob) }
      if blobs.count > 1 {
        // A document re-indexed after its first merge has a sequence below the others of its
        // segment, so the segments' ranges can interleave.
        var all = entries(Data(bytes))
        if !zip(all, all.dropFirst()).allSatisfy({ $0.seq < $1.seq }) {
          all.sort { $0.seq < $1.seq }
          bytes.removeAll(keepingCapacity: true)
          for entry in all { append(entry, to: &bytes) }
        }
      }
      merged[token] = bytes
    }
    try db.execute(
      sql: "DELETE FROM search_segments WHERE segment IN (\(list))",
      arguments: StatementArguments(ids))
    try db.execute(
      sql: "DELETE FROM search_segment_levels WHERE segment IN (\(list))",
      arguments: StatementArguments(ids))
    if merged.isEmpty { return }
    try addSegment(db, merged, level: level)
  }

  /// Removes a merged document's entries from its segment; `tokens` are its text tokens.
  static func removeFromSegments(_ db: Database, seq: Int64, tokens: [String]) throws {
    guard let first = tokens.first else { return }
    let find = try db.cachedStatement(
      sql: "SELECT postings FROM search_segments WHERE segment = ? AND token = ?")
    var segment: Int64?
    for id in try segmentIDs(db).reversed() {
      if let blob = try Data.fetchOne(find, arguments: [id, first]),
        entryIndex(blob, seq: seq) != nil
      {
        segment = id
        break
      }
    }
    guard let segment else { return }
    let update = try db.cachedStatement(
      sql: "UPDATE search_segments SET postings = ? WHERE segment = ? AND token = ?")
    let delete = try db.cachedStatement(
      sql: "DELETE FROM search_segments WHERE segment = ? AND token = ?")
    for token in tokens {
      guard var blob = try Data.fetchOne(find, arguments: [segment, token]),
        let i = entryIndex(blob, seq: seq)
      else { continue }
      blob.removeSubrange((i * segmentEntrySize)..<((i + 1) * segmentEntrySize))
      if blob.isEmpty {
        try delete.execute(arguments: [segment, token])
      } else {
        try update.execute(arguments: [blob, segment, token])
      }
    }
  }

  /// A merged document one of a search's tokens matched (``segmentMatches``).
  struct SegmentMatch {
    var sequence: Int64
    /// Per token, its posting's counts, −1 when absent.
    var counts: [Int64]
    var lengths: Int64
  }

  /// The merged documents with one of `tokens` (distinct text tokens), and per token how many
  /// documents of the segments have it.
  static func segmentMatches(_ db: Database, tokens: [String]) throws
    -> (matches: [SegmentMatch], frequencies: [String: Int])
  {
    var matches: [SegmentMatch] = []
    var frequencies: [String: Int] = [:]
    if tokens.isEmpty { return (matches, frequencies) }
    var index: [String: Int] = [:]
    for (i, token) in tokens.enumerated() { index[token] = i }
    var bySeq: [Int64: Int] = [:]
    let statement = try db.cachedStatement(
      sql: """
        SELECT token, postings FROM search_segments
        WHERE segment = ? AND token IN (\(placeholders(tokens.count)))
        """)
    for id in try segmentIDs(db) {
      let rows = try Row.fetchCursor(
        statement, arguments: StatementArguments([id as any DatabaseValueConvertible] + tokens))
      while let row = try rows.next() {
        guard let t = index[row[0]] else { continue }
        try row.withUnsafeData(atIndex: 1) { blob in
          guard let blob else { return }
          frequencies[tokens[t], default: 0] += blob.count / segmentEntrySize
          forEachEntry(blob) { e in
            if let m = bySeq[e.seq] {
              matches[m].counts[t] = e.counts
            } else {
              var counts = Array(repeating: Int64(-1), count: tokens.count)
              counts[t] = e.counts
              bySeq[e.seq] = matches.count
              matches.append(SegmentMatch(sequence: e.seq, counts: counts, lengths: e.lengths))
            }
          }
        }
      }
    }
    return (matches, frequencies)
  }

  /// Every posting the index has merged, as (token, sequence, counts, lengths): the rows of
  /// `search_postings` and the entries of every segment (for tests and checks).
  static func mergedPostings(_ db: Database) throws
    -> [(token: String, seq: Int64, counts: Int64, lengths: Int64)]
  {
    var postings: [(token: String, seq: Int64, counts: Int64, lengths: Int64)] = []
    for row in try Row.fetchAll(
      db, sql: "SELECT token, resource_seq, counts, lengths FROM search_postings")
    {
      postings.append((row[0], row[1], row[2], row[3]))
    }
    for row in try Row.fetchAll(db, sql: "SELECT token, postings FROM search_segments") {
      let token: String = row[0]
      forEachEntry(row[1]) { postings.append((token, $0.seq, $0.counts, $0.lengths)) }
    }
    return postings
  }

  /// Moves every text posting of `search_postings` into one segment (the migration that
  /// makes segments; facet postings stay).
  static func segmentPostings(_ db: Database) throws {
    var postings: [SearchIndex.TokenKey: [UInt8]] = [:]
    let rows = try Row.fetchCursor(
      db,
      sql: """
        SELECT token, resource_seq, counts, lengths FROM search_postings
        WHERE substr(token, 1, 1) <> '~' ORDER BY token, resource_seq
        """)
    while let row = try rows.next() {
      append(
        SegmentEntry(seq: row[1], counts: row[2], lengths: row[3]),
        to: &postings[SearchIndex.TokenKey(row[0]), default: []])
    }
    try db.execute(sql: "DELETE FROM search_postings WHERE substr(token, 1, 1) <> '~'")
    // Its level: that of a segment merged from as many documents' worth of merges.
    let documents = try Int.fetchOne(db, sql: "SELECT count(*) FROM search_documents") ?? 0
    var level = 0
    var size = defaultRecentLimit
    while size < documents {
      size *= segmentFanout
      level += 1
    }
    try addSegment(db, postings, level: level)
  }
}
