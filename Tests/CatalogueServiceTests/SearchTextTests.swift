@testable import CatalogueService
import ServiceRuntime
import SmartSchoolModel
import Testing

@Suite("Search text analysis")
struct SearchTextTests {
  func tokens(_ text: String, characters: Bool = false) -> [String] {
    SearchText.occurrences(text).filter { characters || !$0.isCharacter }.map(\.token)
  }

  @Test func normalisesWidthCaseAndTraditionalCharacters() {
    #expect(SearchText.normalized("ＰＰＴ　Ｕｎｉｔ１") == "ppt unit1")
    #expect(SearchText.normalized("二次函數的圖像") == "二次函数的图像")
    #expect(SearchText.normalized("勾股定理") == "勾股定理")
    #expect(tokens("ＰＰＴ") == tokens("ppt"))
  }

  @Test func splitsHanIntoBigramsAndOtherTextIntoWords() {
    #expect(tokens("勾股定理") == ["勾股", "股定", "定理"])
    #expect(tokens("Unit 1 Hello问候语") == ["unit", "1", "hello", "问候", "候语"])
    #expect(tokens("圆") == ["圆"])
    #expect(tokens("圆的面积", characters: true).suffix(4) == ["圆", "的", "面", "积"])
    // IT is a word of its own: "unit" has no token "it".
    #expect(!tokens("Unit 3").contains("it"))
  }

  @Test func marksOccurrencesThatStraddleDictionaryWords() {
    let data = SearchText.occurrences("部分数据")
    #expect(data.first { $0.token == "分数" }?.aligned == false)
    #expect(SearchText.occurrences("分数的意义").first { $0.token == "分数" }?.aligned == true)
    let park = SearchText.occurrences("圆明园的毁灭").first { $0.token == "圆" }
    #expect(park?.aligned == false)
    let circle = SearchText.occurrences("圆的面积").first { $0.token == "圆" }
    #expect(circle?.aligned == true)
  }

  /// Tokens made from their bytes equal the scalars' own string, for any width of scalar
  /// (three-byte Han, four-byte extension B, mixed), and a dictionary word four wide.
  @Test func tokensAreTheirScalarsStrings() {
    for text in ["勾股定理", "𠀀𠀁𠀂𠀃", "a𠀀ü中", "人民教育出版社"] {
      let scalars = Array(text.unicodeScalars)
      for width in 1...4 where width <= scalars.count {
        for start in 0...(scalars.count - width) {
          let slice = scalars[start..<(start + width)]
          #expect(SearchText.string(slice) == String(String.UnicodeScalarView(slice)))
        }
      }
    }
    #expect(SearchText.occurrences("𠀀𠀁").map(\.token).first == "𠀀𠀁")
  }

  /// An edition is named by its name or an alias anywhere in the text, and only then.
  @Test func editionsNamedInText() {
    let found = { (text: String) in SearchVocabulary.editions(in: SearchText.normalized(text)) }
    #expect(found("人民教育出版社八年级数学") == ["人教版"])
    #expect(found("部编语文与北师大版数学") == ["统编版", "北师大版"])
    #expect(found("华师大版") == ["华师大版"])
    #expect(found("北师数学 人民教育") == [])
  }

  /// Foundation's NFKC, lower-casing and the fold: what `normalize` gives for any text.
  static func normalizedByFoundation(_ text: String) -> [Unicode.Scalar] {
    text.precomposedStringWithCompatibilityMapping.lowercased().unicodeScalars.map(SearchText.fold)
  }

  /// The fast path agrees with Foundation's normaliser on every scalar it takes and on text
  /// mixing them, and leaves every other text to Foundation.
  @Test func commonTextNormalisesAsFoundationDoes() {
    let ranges: [ClosedRange<UInt32>] = [
      0...0x7F, 0x3000...0x3002, 0x3008...0x3011, 0x4E00...0x9FFF, 0xFF01...0xFF5E,
    ]
    var taken = 0
    for range in ranges {
      for value in range {
        let text = String(Unicode.Scalar(value)!)
        #expect(SearchText.normalizeCommon(text) == Self.normalizedByFoundation(text))
        taken += 1
      }
    }
    #expect(taken == 128 + 3 + 10 + 20_992 + 94)
    for text in [
      "ＰＰＴ　Ｕｎｉｔ１：勾股定理《数学》【人教版】，練習。", "Unit 3 Hello，问候語！ABC xyz 123",
      "二次函數的圖像\n本资源为八年级数学\t", "",
    ] {
      #expect(SearchText.normalizeCommon(text) != nil)
      #expect(SearchText.normalize(text) == Self.normalizedByFoundation(text))
    }
    // Outside the ranges: decomposed accents, Roman numerals, half-width katakana, compatibility
    // ideographs, extension B, a circled digit.
    for text in ["cafe\u{301}", "第Ⅻ章", "ｶﾀｶﾅ", "\u{F900}", "𠀀𠀁", "①", "caf\u{E9}"] {
      #expect(SearchText.normalizeCommon(text) == nil)
      #expect(SearchText.normalize(text) == Self.normalizedByFoundation(text))
    }
  }

  /// Reverse maximum matching over the packed dictionary keys segments as it did over the
  /// words' strings, on runs built from dictionary words, their pieces and rare characters.
  @Test func segmentsAsOverTheWordsStrings() {
    func reference(_ run: [Unicode.Scalar]) -> [Int] {
      var segment = Array(repeating: 0, count: run.count)
      var end = run.count
      var number = 0
      while end > 0 {
        var length = 1
        for l in stride(from: min(SearchText.maxDictionaryWordLength, end), through: 2, by: -1) {
          if SearchText.dictionary.contains(String(String.UnicodeScalarView(run[(end - l)..<end])))
          {
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
    let words = SearchText.dictionary.sorted()
    #expect(SearchText.dictionaryKeys.count > 1_000)
    var rng = SystemRandomNumberGenerator()
    let extras = Array("的了𠀀𠀁圆园明分数据部".unicodeScalars)
    var segmented = 0
    for _ in 0..<3_000 {
      var run: [Unicode.Scalar] = []
      for _ in 0..<Int.random(in: 1...6, using: &rng) {
        if Bool.random(using: &rng) {
          run += Array(words.randomElement(using: &rng)!.unicodeScalars)
        } else {
          run.append(extras.randomElement(using: &rng)!)
        }
      }
      let expected = reference(run)
      #expect(SearchText.segments(run) == expected)
      if Set(expected).count < run.count { segmented += 1 }
    }
    #expect(segmented > 1_000)
  }

  /// A document's postings are in the order `<` gives their tokens, and their positions are
  /// written as numbers joined by commas, tabs and newlines (negative ones too).
  @Test func analysedPostingsSortAndEncodeAsStrings() {
    var resource = Resource()
    resource.title = "人教版八年级数学上册《勾股定理》PPT课件 Unit 10"
    resource.keywords = ["勾股定理", "數學", "ｐｐｔ", "部分数据"]
    let sentence = "本资源为八年级数学勾股定理的课件，配合人教版教材使用。"
    resource.description_p = String(repeating: sentence, count: 40)
    let analysed = AnalysedResource(resource: resource, editionName: "人民教育出版社")
    #expect(analysed.postings.count > 50)
    // The analysis equals the plain one: each occurrence's position appended to its token's
    // posting as found, field by field, and the edition tokens with none.
    var expected: [String: SearchIndex.Posting] = [:]
    var lengths = [0, 0, 0]
    let keywords = resource.keywords.joined(separator: "\n")
    for (field, text) in [resource.title, keywords, resource.description_p].enumerated() {
      for o in SearchText.occurrences(text) {
        if !o.isCharacter { lengths[field] += 1 }
        expected[o.token, default: .init()].positions[field].append(
          o.aligned ? o.position : -(o.position + 1))
      }
    }
    let editions = SearchVocabulary.editions(
      in: SearchText.normalized(resource.title + "\n" + keywords)
    ).union(SearchVocabulary.editions(in: SearchText.normalized("人民教育出版社")))
    for edition in editions { expected[SearchIndex.editionToken(edition)] = .init() }
    #expect(!editions.isEmpty && analysed.lengths == lengths)
    #expect(Dictionary(uniqueKeysWithValues: analysed.postings) == expected)
    #expect(analysed.postings.map(\.key) == expected.keys.sorted())
    let written = analysed.postings.map { token, posting in
      ([token] + posting.positions.map { $0.map(String.init).joined(separator: ",") })
        .joined(separator: "\t")
    }.joined(separator: "\n")
    #expect(analysed.positions == written)
    #expect(written.contains(",-"))
    #expect(written.contains(",\(sentence.unicodeScalars.count * 38),"))
    for value in [0, 7, -1, 1_048_575, Int.max, Int.min] {
      var bytes: [UInt8] = []
      SearchIndex.appendDecimal(value, to: &bytes)
      #expect(String(decoding: bytes, as: UTF8.self) == String(value))
    }
  }

  /// A document's positions text gives back its postings: every token's counts (what SQLite's
  /// merge writes, and its search reads for a recent document) and the positions of the tokens
  /// asked for, matched whole (a token's prefix, or a longer token, is another token).
  @Test func positionsTextDecodesToItsPostings() {
    var rng = SystemRandomNumberGenerator()
    let alphabet = Array("ab勾股定理数学𠀀~:é1")
    for round in 0..<300 {
      var document: [String: SearchIndex.Posting] = [:]
      for _ in 0..<Int.random(in: 0...12, using: &rng) {
        let token = String((0..<Int.random(in: 1...4, using: &rng)).map { _ in
          alphabet.randomElement(using: &rng)!
        })
        var posting = SearchIndex.Posting()
        for field in 0..<SearchIndex.fieldCount where Bool.random(using: &rng) {
          // Now and then more occurrences than a count keeps (1023).
          let many = round % 50 == 0 && field == 2 ? 1_100 : Int.random(in: 1...5, using: &rng)
          posting.positions[field] = (0..<many).map { _ in
            [0, -1, 7, -8, 123_456, Int.max, Int.min + 1].randomElement(using: &rng)!
          }
        }
        document[token] = posting
      }
      let postings = document.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
      let text = SearchIndex.encodePositions(postings)
      let decoded = SearchIndex.decodeCounts(text)
      #expect(decoded.map(\.token) == postings.map(\.key), "\(text)")
      #expect(decoded.map(\.counts) == postings.map { SearchIndex.counts($0.value) }, "\(text)")
      var wanted: [String: Int] = ["ab": 100, "b": 101, "~:": 102, "勾股定理数学": 103]
      for (i, token) in document.keys.enumerated() where i % 2 == 0 { wanted[token] = i }
      var expected: [Int: SearchIndex.Posting] = [:]
      for (token, index) in wanted { expected[index] = document[token] }
      #expect(SearchIndex.decodePositions(text, wanted: wanted) == expected, "\(text)")
    }
    #expect(SearchIndex.decodeCounts("").isEmpty)
  }

  /// Tokens sort by their bytes, as the stores keep them: short and long ones, one the prefix
  /// of another within and past the 16 bytes kept as integers, four-byte scalars.
  @Test func tokenOrderIsByteOrder() {
    var rng = SystemRandomNumberGenerator()
    let pieces = ["a", "z", "0", "~edition:", "人民教育出版社", "勾股", "𠀀", "é", "abcdefghijklmnop"]
    let tokens = (0..<2_000).map { _ in
      (0..<Int.random(in: 1...5, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }
        .joined()
    }
    let bytes = tokens.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    #expect(tokens.map(SearchIndex.TokenOrder.init).sorted().map(\.token) == bytes)
    #expect(tokens.sorted() == bytes)
    for _ in 0..<2_000 {
      let (a, b) = (tokens.randomElement(using: &rng)!, tokens.randomElement(using: &rng)!)
      #expect((SearchIndex.TokenOrder(a) == SearchIndex.TokenOrder(b)) == (a == b))
    }
  }
}

@Suite("Search query parsing")
struct SearchQueryTests {
  @Test func wordsBecomeGroupsOfTokens() throws {
    let q = try SearchQuery.parse("  二次函数，图像 PPT!  ")
    #expect(q.tokens == ["二次", "次函", "函数", "图像", "ppt"])
    #expect(q.required == [2, 1, 1])
    #expect(try SearchQuery.parse("勾股定理证明").required == [3])
    #expect(try SearchQuery.parse("勾股定里").required == [2])
    #expect(SearchQuery.required(of: 2) == 1)
    #expect(try SearchQuery.parse("").isEmpty)
    #expect(try SearchQuery.parse("   ").isEmpty)
  }

  @Test func vocabularyFiltersOrBoosts() throws {
    let both = try SearchQuery.parse("八年级 数学")
    #expect(!both.hasText && both.filters.grades == [8] && both.filters.subjects == [2])
    #expect(try SearchQuery.parse("八年级数学").filters == both.filters)
    let plan = try SearchQuery.parse("勾股定理 教案")
    #expect(plan.filters.types == [3] && plan.required == [2])
    let edge = try SearchQuery.parse("勾股定理教案")
    #expect(edge.filters.isEmpty && edge.boosts.types == [3])
    // Required: the topic's bigrams; the vocabulary's and the straddling one only score.
    #expect(edge.terms.filter { $0.group != nil }.map(\.token) == ["勾股", "股定", "定理"])
    #expect(edge.terms.filter { $0.group == nil }.map(\.token) == ["理教", "教案"])
    let edition = try SearchQuery.parse("人教版 七年级")
    #expect(edition.filters.editions == ["人教版"] && edition.filters.grades == [7])
    #expect(try SearchQuery.parse("部编版").filters.editions == ["统编版"])
  }

  @Test func syntaxNeverReachesSQL() throws {
    #expect(try SearchQuery.parse("\"二次\"函数").tokens == ["二次", "函数"])
    #expect(
      try SearchQuery.parse("title:函数 OR NEAR(a b)*").tokens
        == ["title", "函数", "or", "near", "a", "b"])
    for bad in ["!!!", "\"", "*", "（）。，", "-- ;", "^"] {
      #expect(throws: ServiceError.self) { try SearchQuery.parse(bad) }
    }
    #expect(throws: ServiceError.self) { try SearchQuery.parse(String(repeating: "数", count: 101)) }
    #expect(throws: ServiceError.self) { try SearchQuery.parse("a b c d e f g h i") }
  }
}

@Suite("Search relevance")
struct SearchRelevanceTests {
  func score(
    _ query: String, title: String, keywords: [String] = [], description: String = "",
    stats: SearchIndex.Stats = .init(documents: 100, lengths: [600, 300, 3000])
  ) throws -> Double? {
    let q = try SearchQuery.parse(query)
    let doc = SearchIndex.document(
      title: title, keywords: keywords, description: description, editionName: nil)
    return Ranking.relevance(
      query: q, document: doc, stats: stats,
      frequencies: Dictionary(uniqueKeysWithValues: q.tokens.map { ($0, 5) }),
      facets: SearchFacets())
  }

  @Test func titleOutweighsKeywordsOutweighsDescription() throws {
    let title = try #require(try score("函数", title: "二次函数的图像"))
    let keyword = try #require(try score("函数", title: "图像", keywords: ["函数"]))
    let description = try #require(try score("函数", title: "图像", description: "讲解函数"))
    #expect(title > keyword && keyword > description && description > 0)
    #expect(try score("方程", title: "函数") == nil)
    #expect(try score("ppt", title: "函数 PPT") != nil)
    #expect(try score("its", title: "Unit 3") == nil)
    #expect(try score("3", title: "Unit 3") != nil)
  }

  @Test func proximityAndWholeWordsCount() throws {
    let phrase = try #require(try score("勾股定理证明", title: "勾股定理的证明方法"))
    let apart = try #require(try score("勾股定理证明", title: "定理证明与勾股数"))
    #expect(phrase > apart)
    let fraction = try #require(try score("分数", title: "分数的意义"))
    let data = try #require(try score("分数", title: "收集部分数据"))
    #expect(fraction > data)
    #expect(try score("勾股定里", title: "勾股定理") != nil)
    #expect(try score("勾股定理", title: "勾股数") == nil)
  }
}
