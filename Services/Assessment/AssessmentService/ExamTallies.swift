// An exam's tallies (asm_tallies): per exam, per scope (each org path from the exam's running
// org down to a class) and per stored total, how many students sat with that total, plus how
// many are absent, exempt and incomplete. The exam's own path also keeps, per total, the item
// scores' sums and sums of squares, from which item analysis comes. Score batches keep them in
// the transaction that writes the scores (a student's old state taken out, its new state put
// in), so a report reads a few hundred tally rows instead of every student's scores.
// Pure: the stores apply the changes computed here.

import Foundation

/// What a tally row counts.
public enum TallyKind {
  /// Students who sat, by stored total.
  public static let sat: Int32 = 0
  /// Absent students (total 0).
  public static let absent: Int32 = 1
  /// Exempt students (total 0).
  public static let exempt: Int32 = 2
  /// Students who sat without a stored score for every item (total 0).
  public static let incomplete: Int32 = 3
}

/// One stored tally row.
public struct TallyRow: Sendable, Equatable {
  public var path: String
  public var kind: Int32
  public var total: Double
  public var count: Int
  /// Per item (in item order) the sum of the students' scores (a missing score 0); only on the
  /// exam's own path and `TallyKind.sat`, else empty.
  public var sums: [Double] = []
  /// Per item the sum of the scores' squares, as `sums`.
  public var squares: [Double] = []
}

/// The key of a tally row within its exam.
struct TallyKey: Hashable, Comparable {
  var path: String
  var kind: Int32
  var total: Double

  /// Byte order of the path (as both stores compare it), then kind, then total.
  static func < (a: TallyKey, b: TallyKey) -> Bool {
    if a.path != b.path { return bytesPrecede(a.path, b.path) }
    if a.kind != b.kind { return a.kind < b.kind }
    return a.total < b.total
  }
}

/// Whether `a`'s UTF-8 bytes sort before `b`'s (memcmp on the contiguous bytes: comparing
/// through `utf8.lexicographicallyPrecedes` cost a batch's sort of its tally keys a fortieth of
/// the import).
func bytesPrecede(_ a: String, _ b: String) -> Bool {
  var a = a
  var b = b
  return a.withUTF8 { x in
    b.withUTF8 { y in
      let n = min(x.count, y.count)
      if n > 0, let p = x.baseAddress, let q = y.baseAddress {
        let c = memcmp(p, q, n)
        if c != 0 { return c < 0 }
      }
      return x.count < y.count
    }
  }
}

/// A change to one tally row.
struct TallyDelta {
  var count = 0
  var sums: [Double] = []
  var squares: [Double] = []

  /// Whether the change only lowers (or keeps) the count, so the row may have emptied.
  var mayEmpty: Bool { count <= 0 }
}

/// One student's state as the tallies see it.
struct TallyState {
  var orgPath: String
  var attendance: Int32
  /// The stored total.
  var total: Double
  /// Scores in item order, 0 where missing.
  var scores: [Double]
  /// Whether some item has no stored score.
  var incomplete: Bool

  /// The state of a sheet with `total` on an exam whose items are `items` (ascending).
  init(sheet: SheetState, total: Double, items: [Int32]) {
    orgPath = sheet.orgPath
    attendance = sheet.attendance
    self.total = total
    var column: [Int32: Int] = [:]
    for (c, n) in items.enumerated() { column[n] = c }
    scores = Array(repeating: 0, count: items.count)
    var stored = 0
    for (item, score) in zip(sheet.items, sheet.scores) {
      if let c = column[item] {
        scores[c] = score
        stored += 1
      }
    }
    incomplete = stored < items.count
  }

  init(orgPath: String, attendance: Int32, total: Double, scores: [Double], incomplete: Bool) {
    self.orgPath = orgPath
    self.attendance = attendance
    self.total = total
    self.scores = scores
    self.incomplete = incomplete
  }
}

/// The tally changes of one exam in one score batch.
struct TallyChanges {
  /// The path of the org running the exam.
  var examPath: String
  var deltas: [TallyKey: TallyDelta] = [:]

  init(examPath: String) {
    self.examPath = examPath
  }

  /// The scopes a student under `orgPath` counts in: every path from the exam's down to
  /// `orgPath` itself (a path outside the exam's counts in none).
  static func scopes(of orgPath: String, examPath: String) -> [String] {
    guard orgPath.hasPrefix(examPath) else { return [] }
    var scopes = [examPath]
    let bytes = Array(orgPath.utf8)
    var i = examPath.utf8.count
    while i < bytes.count {
      if bytes[i] == UInt8(ascii: "/") {
        scopes.append(String(decoding: bytes[0...i], as: UTF8.self))
      }
      i += 1
    }
    return scopes
  }

  /// Adds (`sign` 1) or takes out (`sign` -1) a student's state.
  mutating func add(_ state: TallyState, sign: Int) {
    let scopes = Self.scopes(of: state.orgPath, examPath: examPath)
    // The delta is changed where it lies: taken out and put back, its sums were copied.
    func bump(_ key: TallyKey, scores: [Double]? = nil) {
      Self.bump(&deltas[key, default: TallyDelta()], sign: sign, scores: scores)
    }
    switch state.attendance {
    case AttendanceCode.absent, AttendanceCode.exempt:
      let kind = state.attendance == AttendanceCode.absent ? TallyKind.absent : TallyKind.exempt
      for path in scopes { bump(TallyKey(path: path, kind: kind, total: 0)) }
    default:
      for path in scopes {
        bump(
          TallyKey(path: path, kind: TallyKind.sat, total: state.total),
          scores: path == examPath ? state.scores : nil)
        if state.incomplete { bump(TallyKey(path: path, kind: TallyKind.incomplete, total: 0)) }
      }
    }
  }

  private static func bump(_ d: inout TallyDelta, sign: Int, scores: [Double]?) {
    d.count += sign
    guard let scores else { return }
    if d.sums.isEmpty {
      d.sums = Array(repeating: 0, count: scores.count)
      d.squares = Array(repeating: 0, count: scores.count)
    }
    let s = Double(sign)
    for c in scores.indices {
      d.sums[c] += s * scores[c]
      d.squares[c] += s * scores[c] * scores[c]
    }
  }

  /// The changes that change something, in key order (both stores write them in this order,
  /// so that two batches lock shared rows alike). A row whose count is unchanged but whose sums
  /// moved (a student's scores changed, not its total) is kept.
  var ordered: [(key: TallyKey, delta: TallyDelta)] {
    deltas.filter { $0.value.count != 0 || $0.value.sums.contains { $0 != 0 } }
      .map { (key: $0.key, delta: $0.value) }
      .sorted { $0.key < $1.key }
  }

  /// `stored` (nil: no row) after `delta`: nil when the row empties.
  static func apply(_ delta: TallyDelta, to stored: TallyRow?, key: TallyKey) -> TallyRow? {
    var row = stored ?? TallyRow(path: key.path, kind: key.kind, total: key.total, count: 0)
    row.count += delta.count
    if row.count <= 0 { return nil }
    if !delta.sums.isEmpty {
      if row.sums.count != delta.sums.count {
        row.sums = Array(repeating: 0, count: delta.sums.count)
        row.squares = row.sums
      }
      for c in delta.sums.indices {
        row.sums[c] += delta.sums[c]
        row.squares[c] += delta.squares[c]
      }
    }
    return row
  }
}

/// Doubles packed big-endian, 8 bytes each (the SQLite store's `sums` and `squares`).
enum PackedDoubles {
  static func pack(_ values: [Double]) -> Data {
    var data = Data(count: values.count * 8)
    data.withUnsafeMutableBytes { raw in
      for (i, v) in values.enumerated() {
        raw.storeBytes(of: v.bitPattern.bigEndian, toByteOffset: i * 8, as: UInt64.self)
      }
    }
    return data
  }

  static func unpack(_ data: Data) -> [Double] {
    data.withUnsafeBytes { raw in
      (0..<raw.count / 8).map {
        let bits = raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)
        return Double(bitPattern: UInt64(bigEndian: bits))
      }
    }
  }
}

/// A scope's tallies as a report reads them.
public struct ScopeTally: Sendable {
  /// Totals of those who sat, ascending, one per student.
  public var totals: [Double] = []
  public var sat = 0
  public var absent = 0
  public var exempt = 0
  public var incomplete = 0

  public init() {}

  mutating func add(_ row: TallyRow) {
    switch row.kind {
    case TallyKind.sat:
      sat += row.count
      totals.append(contentsOf: repeatElement(row.total, count: row.count))
    case TallyKind.absent: absent += row.count
    case TallyKind.exempt: exempt += row.count
    case TallyKind.incomplete: incomplete += row.count
    default: break
    }
  }

  /// The tally of the rows of `path` among `rows`.
  public static func of(_ rows: [TallyRow], path: String) -> ScopeTally {
    var tally = ScopeTally()
    for row in rows where row.path == path { tally.add(row) }
    tally.totals.sort()
    return tally
  }

  /// The tallies of `children` (by id) from `rows`: a scope's row counts for the first child
  /// on its path (as a student counts for the first child on its class's path), when that
  /// child is the scope's own org.
  public static func byChild(_ rows: [TallyRow], childIDs: Set<String>) -> [String: ScopeTally] {
    var tallies: [String: ScopeTally] = [:]
    var childOfPath: [String: String?] = [:]
    for row in rows {
      let child: String?
      if let known = childOfPath[row.path] {
        child = known
      } else {
        let ids = OrgPathIDs.ids(row.path)
        let first = ids.first { childIDs.contains($0) }
        child = first != nil && first == ids.last ? first : nil
        childOfPath[row.path] = .some(child)
      }
      guard let child else { continue }
      tallies[child, default: ScopeTally()].add(row)
    }
    for key in tallies.keys { tallies[key]!.totals.sort() }
    return tallies
  }
}

/// The ids of a path's text (`/a/b/` → a, b).
enum OrgPathIDs {
  static func ids(_ path: String) -> [String] {
    path.split(separator: "/").map(String.init)
  }
}

/// What a statistics report reads of a scope, in one read transaction.
public struct ScopeTallies: Sendable {
  /// The tally rows of the scope's path and every path under it.
  public var rows: [TallyRow] = []
  /// When the scope is the exam's own path: the item scores of the students who sat with each
  /// total where an extreme 27% group ends inside the total, by external id ascending.
  public var boundary: [Double: [[Double]]] = [:]
  /// The scope's absent and exempt students (read only when the tallies count some).
  public var marked: [StudentResult] = []
  /// The scope's students who sat without every item's score (read only when counted).
  public var incomplete: [StudentResult] = []

  public init() {}

  /// The totals where the upper or lower 27% group of `levels` (sat rows of one path) ends
  /// inside a total's students.
  static func boundaryTotals(_ levels: [TallyRow]) -> [Double] {
    let n = levels.reduce(0) { $0 + $1.count }
    guard n > 0 else { return [] }
    let g = min(ItemAnalysis.groupSize(n), n)
    let descending = levels.sorted { $0.total > $1.total }
    var found: [Double] = []
    for order in [descending, descending.reversed()] {
      var left = g
      for level in order where left > 0 {
        if level.count > left { found.append(level.total) }
        left -= min(left, level.count)
      }
    }
    return Array(Set(found)).sorted()
  }
}

extension ItemAnalysis {
  /// Item analysis from an exam's tallies: `levels` are the sat rows of the exam's own path
  /// (with sums and squares); `boundary` the item scores of the students of each total where an
  /// extreme 27% group ends inside the total, by external id ascending
  /// (``ScopeTallies/boundaryTotals(_:)``). The figures of ``compute(_:maxScores:)`` over the
  /// same students, the sums taken in another order.
  public static func compute(
    levels: [TallyRow], maxScores: [Double], boundary: [Double: [[Double]]]
  ) -> ItemAnalysis {
    let k = maxScores.count
    let n = levels.reduce(0) { $0 + $1.count }
    guard n > 0 else { return compute([], maxScores: maxScores) }
    let descending = levels.sorted { $0.total > $1.total }
    let g = min(groupSize(n), n)
    /// The item sums of the first `g` students in (total descending, id ascending) order, or
    /// (`fromEnd`) of the last `g`.
    func group(fromEnd: Bool) -> [Double] {
      var sums = Array(repeating: 0.0, count: k)
      var left = g
      for level in fromEnd ? descending.reversed() : descending where left > 0 {
        if level.count <= left {
          for c in 0..<k where c < level.sums.count { sums[c] += level.sums[c] }
          left -= level.count
        } else {
          let students = boundary[level.total] ?? []
          let taken = fromEnd ? students.suffix(left) : students.prefix(left)
          for scores in taken {
            for c in 0..<k where c < scores.count { sums[c] += scores[c] }
          }
          left = 0
        }
      }
      return sums
    }
    let upper = group(fromEnd: false)
    let lower = group(fromEnd: true)
    let count = Double(n)
    var sumT = 0.0, sumT2 = 0.0
    for level in levels {
      sumT += Double(level.count) * level.total
      sumT2 += Double(level.count) * level.total * level.total
    }
    let meanT = sumT / count
    var totalVariance = 0.0
    for level in levels {
      totalVariance += Double(level.count) * (level.total - meanT) * (level.total - meanT)
    }
    totalVariance /= count
    let totalSD = totalVariance > 0 ? totalVariance.squareRoot() : 0
    var items: [ItemFigures] = []
    var varianceSum = 0.0
    for c in 0..<k {
      var sumX = 0.0, sumX2 = 0.0, sumXT = 0.0
      for level in levels where c < level.sums.count {
        sumX += level.sums[c]
        sumX2 += level.squares[c]
        sumXT += level.total * level.sums[c]
      }
      let mean = sumX / count
      let variance = max(0, sumX2 / count - mean * mean)
      let sd = variance > 0 ? variance.squareRoot() : 0
      varianceSum += sd * sd
      let maxScore = maxScores[c]
      // Pearson of the item against the rest of the total (T − x), from the sums.
      let sumR = sumT - sumX
      let sumR2 = sumT2 - 2 * sumXT + sumX2
      let sumXR = sumXT - sumX2
      let sxx = sumX2 - sumX * sumX / count
      let syy = sumR2 - sumR * sumR / count
      let sxy = sumXR - sumX * sumR / count
      let r: Double? = sxx > 1e-9 && syy > 1e-9 ? sxy / (sxx * syy).squareRoot() : nil
      items.append(
        ItemFigures(
          mean: mean, difficulty: mean / maxScore,
          discrimination: upper[c] / Double(g) / maxScore - lower[c] / Double(g) / maxScore,
          pointBiserial: r))
    }
    return ItemAnalysis(items: items, varianceSum: varianceSum, totalSD: totalSD)
  }
}
