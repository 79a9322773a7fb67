import Foundation

/// The one text analysis of catalogue search, for indexed fields and queries alike, so that
/// every store finds the same tokens (the stores only keep and look up what this produces).
///
/// Text is normalised (NFKC: full-width → half-width, compatibility forms folded; lower-cased;
/// traditional characters folded to simplified through OpenCC's TSCharacters), then split into
/// runs: a run of Han characters gives its bigrams ("勾股定理" → 勾股 股定 定理) and, for
/// single-character queries, its characters; any other run of letters and digits is one word
/// ("unit", "ppt", "2024"). A dictionary segmentation (reverse maximum matching over jieba's
/// words) marks each occurrence as *aligned* when it lies inside one word (a bigram) or is a
/// word of its own (a character), so that 分数 in 部分数据 (部分|数据) or 圆 in 圆明园 counts less
/// than a real 分数 or 圆.
enum SearchText {
  /// One token occurrence in a field.
  struct Occurrence: Equatable, Sendable {
    var token: String
    /// Offset of the token's first character in the normalised field.
    var position: Int
    /// Inside one dictionary word (bigram), or a word of its own (character).
    var aligned: Bool
    /// A character of a longer Han run: indexed for one-character queries only, and not
    /// counted in the field length.
    var isCharacter: Bool
  }

  /// A run of Han characters or of other letters and digits in normalised text.
  struct Run: Equatable, Sendable {
    var scalars: [Unicode.Scalar]
    var isHan: Bool
    /// Offset of the run's first character in the normalised text.
    var start: Int

    var text: String { String(String.UnicodeScalarView(scalars)) }
  }

  /// Longest word token kept, in characters (longer words are cut).
  static let maxWordLength = 32
  /// Longest dictionary word tried by the segmentation.
  static let maxDictionaryWordLength = 4

  static let traditional: [Unicode.Scalar: Unicode.Scalar] = {
    var map: [Unicode.Scalar: Unicode.Scalar] = [:]
    var scalars = traditionalPairs.unicodeScalars.makeIterator()
    while let from = scalars.next(), let to = scalars.next() { map[from] = to }
    return map
  }()

  /// ``traditional`` for the Basic Multilingual Plane as a table (0: unchanged): a lookup per
  /// character of every indexed field, where hashing a scalar cost more than the rest.
  static let traditionalTable: [UInt32] = {
    var table = [UInt32](repeating: 0, count: 0x10000)
    for (from, to) in traditional where from.value < 0x10000 { table[Int(from.value)] = to.value }
    return table
  }()

  /// A scalar folded to simplified.
  @inline(__always) static func fold(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
    guard scalar.value < 0x10000 else { return traditional[scalar] ?? scalar }
    let to = traditionalTable[Int(scalar.value)]
    return to == 0 ? scalar : Unicode.Scalar(to) ?? scalar
  }

  static let dictionary: Set<String> = Set(
    dictionaryWords.split(separator: " ").map(String.init))

  /// Dictionary words of 2 to ``maxDictionaryWordLength`` characters (the lengths the
  /// segmentation tries) by their scalars: hashing a string normalises it first, which made the
  /// lookups a tenth of a create's analysis.
  static let dictionaryKeys: Set<WordKey> = Set(
    dictionary.lazy.map { Array($0.precomposedStringWithCanonicalMapping.unicodeScalars) }
      .filter { (2...maxDictionaryWordLength).contains($0.count) }
      .map { WordKey($0[...]) })

  /// Up to four scalars packed in two integers (21 bits each, and the count).
  struct WordKey: Hashable, Sendable {
    var low: UInt64 = 0
    var high: UInt64 = 0

    init(_ scalars: ArraySlice<Unicode.Scalar>) {
      precondition(scalars.count <= 4)
      for (i, scalar) in scalars.enumerated() {
        if i < 3 {
          low |= UInt64(scalar.value) << (21 * i)
        } else {
          high = UInt64(scalar.value)
        }
      }
      high |= UInt64(scalars.count) << 21
    }
  }

  /// NFKC, lower-cased, traditional folded to simplified.
  static func normalize(_ text: String) -> [Unicode.Scalar] {
    if let common = normalizeCommon(text) { return common }
    return text.precomposedStringWithCompatibilityMapping.lowercased().unicodeScalars.map(fold)
  }

  /// ``normalize(_:)`` of text made only of scalars whose NFKC form is known without
  /// Foundation's normaliser (most of what a Chinese platform indexes): ASCII, the CJK
  /// Unified Ideographs block (no decompositions), the CJK punctuation NFKC keeps (、。 and
  /// the brackets 〈〉《》「」『』【】), the ideographic space (NFKC: a space) and the full-width
  /// forms of ASCII (NFKC: that ASCII). None of these composes with a neighbour, so each maps on
  /// its own; nil when the text holds any other scalar.
  static func normalizeCommon(_ text: String) -> [Unicode.Scalar]? {
    var result: [Unicode.Scalar] = []
    result.reserveCapacity(text.utf8.count)
    for scalar in text.unicodeScalars {
      var value = scalar.value
      switch value {
      case 0...0x7F, 0x3001...0x3002, 0x3008...0x3011, 0x4E00...0x9FFF: break
      case 0x3000: value = 0x20
      case 0xFF01...0xFF5E: value -= 0xFEE0
      default: return nil
      }
      if (0x41...0x5A).contains(value) { value += 0x20 }
      result.append(fold(Unicode.Scalar(value) ?? scalar))
    }
    return result
  }

  /// The string of a few scalars (a bigram), made from their UTF-8 in a stack buffer: up to
  /// 15 bytes it is a small string, with no array or heap storage (the analysis makes several
  /// per character of every indexed field).
  static func string(_ scalars: ArraySlice<Unicode.Scalar>) -> String {
    var buffer: (UInt64, UInt64) = (0, 0)
    return withUnsafeMutableBytes(of: &buffer) { bytes in
      var count = 0
      for scalar in scalars {
        guard count + 4 <= bytes.count else {
          return String(String.UnicodeScalarView(scalars))
        }
        UTF8.encode(scalar) { byte in
          bytes[count] = byte
          count += 1
        }
      }
      return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[..<count]), as: UTF8.self)
    }
  }

  /// Normalised text as a string.
  static func normalized(_ text: String) -> String {
    String(String.UnicodeScalarView(normalize(text)))
  }

  static func isHan(_ s: Unicode.Scalar) -> Bool {
    s.properties.isIdeographic && s.properties.generalCategory == .otherLetter
  }

  /// Letters, digits and combining marks make up words; everything else separates them.
  static func isWordScalar(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
      .decimalNumber, .letterNumber, .otherNumber, .nonspacingMark, .spacingMark,
      .enclosingMark:
      return true
    default:
      return false
    }
  }

  /// The runs of normalised text.
  static func runs(_ scalars: [Unicode.Scalar]) -> [Run] {
    var runs: [Run] = []
    var current: Run? = nil
    for (i, s) in scalars.enumerated() {
      let word = isWordScalar(s)
      let han = word && isHan(s)
      if var run = current, word, run.isHan == han {
        run.scalars.append(s)
        current = run
        continue
      }
      if let run = current { runs.append(run) }
      current = word ? Run(scalars: [s], isHan: han, start: i) : nil
    }
    if let run = current { runs.append(run) }
    return runs
  }

  /// Segment number of each character of a Han run (reverse maximum matching).
  static func segments(_ run: [Unicode.Scalar]) -> [Int] {
    var segment = Array(repeating: 0, count: run.count)
    var end = run.count
    var number = 0
    while end > 0 {
      var length = 1
      for l in stride(from: min(maxDictionaryWordLength, end), through: 2, by: -1) {
        if dictionaryKeys.contains(WordKey(run[(end - l)..<end])) {
          length = l
          break
        }
      }
      for i in (end - length)..<end { segment[i] = number }
      number += 1
      end -= length
    }
    return segment
  }

  /// The occurrences of one run.
  static func occurrences(_ run: Run) -> [Occurrence] {
    if !run.isHan {
      let word = String(String.UnicodeScalarView(run.scalars.prefix(maxWordLength)))
      return [Occurrence(token: word, position: run.start, aligned: true, isCharacter: false)]
    }
    let chars = run.scalars
    if chars.count == 1 {
      return [
        Occurrence(token: String(chars[0]), position: run.start, aligned: true, isCharacter: false)
      ]
    }
    let segment = segments(chars)
    var result: [Occurrence] = []
    result.reserveCapacity(chars.count * 2)
    for i in 0..<(chars.count - 1) {
      result.append(
        Occurrence(
          token: string(chars[i...(i + 1)]),
          position: run.start + i, aligned: segment[i] == segment[i + 1], isCharacter: false))
    }
    for i in 0..<chars.count {
      let alone =
        (i == 0 || segment[i - 1] != segment[i])
        && (i == chars.count - 1 || segment[i + 1] != segment[i])
      result.append(
        Occurrence(
          token: String(chars[i]), position: run.start + i, aligned: alone, isCharacter: true))
    }
    return result
  }

  /// Every occurrence in a field's text.
  static func occurrences(_ text: String) -> [Occurrence] {
    runs(normalize(text)).flatMap(occurrences)
  }
}
