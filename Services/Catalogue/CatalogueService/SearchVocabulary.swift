import SmartSchoolModel

/// Stage, grade, subject, resource type and textbook edition values named in a query.
struct SearchFacets: Hashable, Sendable {
  var stages: Set<Int> = []
  var grades: Set<Int> = []
  var subjects: Set<Int> = []
  var types: Set<Int> = []
  /// Canonical edition names, e.g. "人教版".
  var editions: Set<String> = []

  var isEmpty: Bool {
    stages.isEmpty && grades.isEmpty && subjects.isEmpty && types.isEmpty && editions.isEmpty
  }

  mutating func add(_ facet: SearchVocabulary.Facet) {
    switch facet {
    case .stage(let v): stages.insert(v)
    case .grade(let v): grades.insert(v)
    case .subject(let v): subjects.insert(v)
    case .type(let v): types.insert(v)
    case .edition(let v): editions.insert(v)
    }
  }

  /// A stable text form (page-token fingerprints).
  var description: String {
    func list(_ s: Set<Int>) -> String { s.sorted().map(String.init).joined(separator: ",") }
    return "s\(list(stages))g\(list(grades))j\(list(subjects))t\(list(types))e"
      + editions.sorted().joined(separator: ",")
  }
}

/// Words that name a stage, grade, subject, resource type or textbook edition (小学, 八年级,
/// 数学, 教案, 人教版 …), in normalised (simplified, lower-case) form.
enum SearchVocabulary {
  enum Facet: Hashable, Sendable {
    case stage(Int)
    case grade(Int)
    case subject(Int)
    case type(Int)
    case edition(String)
  }

  /// Textbook editions: canonical name and the other names it goes by.
  static let editions: [(name: String, aliases: [String])] = [
    ("人教版", ["人教", "人民教育出版社"]), ("北师大版", ["北师版"]), ("苏教版", []), ("沪科版", []),
    ("沪教版", []), ("统编版", ["部编版", "部编"]), ("湘教版", []), ("外研版", []), ("译林版", []),
    ("浙教版", []), ("华师大版", []), ("冀教版", []), ("鲁教版", []), ("青岛版", []), ("粤教版", []),
    ("北京版", []), ("教科版", []), ("科粤版", []), ("仁爱版", []), ("牛津版", []),
  ]

  static let words: [String: Facet] = {
    var w: [String: Facet] = [:]
    for stage in Smartschool_Common_V1_Stage.known {
      w[stage.chineseName] = .stage(stage.rawValue)
    }
    for grade in 1...12 { w[CatalogueNames.grade(grade)] = .grade(grade) }
    for (i, name) in ["初一", "初二", "初三"].enumerated() { w[name] = .grade(7 + i) }
    for (i, name) in ["高一年级", "高二年级", "高三年级"].enumerated() { w[name] = .grade(10 + i) }
    for subject in Smartschool_Common_V1_Subject.known {
      w[subject.chineseName] = .subject(subject.rawValue)
    }
    let subjectAliases: [(String, Smartschool_Common_V1_Subject)] = [
      ("体育", .physicalEducation), ("道法", .moralityAndLaw), ("思想政治", .moralityAndLaw),
      ("政治", .moralityAndLaw), ("信息科技", .informationTechnology),
      ("it", .informationTechnology),
    ]
    for (name, subject) in subjectAliases { w[name] = .subject(subject.rawValue) }
    let types: [(String, Smartschool_Catalogue_V1_ResourceType)] = [
      ("课件", .courseware), ("微课", .microLesson), ("教案", .lessonPlan),
      ("教学设计", .lessonPlan), ("习题", .exerciseSet), ("练习", .exerciseSet),
      ("练习题", .exerciseSet), ("试题", .exerciseSet), ("试卷", .exerciseSet),
      ("测试卷", .exerciseSet), ("作业", .exerciseSet), ("智慧课堂教学案例", .teachingCase),
      ("教学案例", .teachingCase), ("资源包", .resourcePackage), ("优课", .awardWinningLesson),
    ]
    for (name, type) in types { w[name] = .type(type.rawValue) }
    for edition in editions {
      for name in [edition.name] + edition.aliases { w[name] = .edition(edition.name) }
    }
    return w
  }()

  /// Longest vocabulary word, in characters.
  static let maxLength = words.keys.map(\.unicodeScalars.count).max() ?? 0

  /// The facet a whole word names.
  static func facet(_ word: String) -> Facet? { words[word] }

  /// The editions named anywhere in normalised text (an edition's name or alias contained in
  /// it): what an indexed resource carries as its edition facet.
  static func editions(in text: String) -> Set<String> {
    // Compared as UTF-8 bytes by a plain loop (a byte match is a match of whole scalars: no
    // scalar's encoding starts inside another's; the text and the names are both normalised):
    // Foundation's locale-aware `contains` took a tenth of a create's analysis, and its
    // generic `firstRange(of:)` over the bytes 30%.
    var found: Set<String> = []
    var text = text
    text.withUTF8 { bytes in
      for edition in editionNames
      where edition.names.contains(where: { contains(bytes, $0) }) {
        found.insert(edition.name)
      }
    }
    return found
  }

  /// True when `needle` occurs in `bytes` (an empty needle occurs everywhere).
  static func contains(_ bytes: UnsafeBufferPointer<UInt8>, _ needle: [UInt8]) -> Bool {
    guard let first = needle.first else { return true }
    guard bytes.count >= needle.count else { return false }
    return needle.withUnsafeBufferPointer { needle in
      var i = 0
      while i <= bytes.count - needle.count {
        if bytes[i] == first {
          var j = 1
          while j < needle.count && bytes[i + j] == needle[j] { j += 1 }
          if j == needle.count { return true }
        }
        i += 1
      }
      return false
    }
  }

  /// Each edition's canonical name and its names (canonical first, then aliases) as UTF-8.
  static let editionNames: [(name: String, names: [[UInt8]])] = editions.map { edition in
    (edition.name, ([edition.name] + edition.aliases).map { Array($0.utf8) })
  }

  /// Splits a Han run into the vocabulary words it starts and ends with and what lies between:
  /// "八年级数学" → ([八年级, 数学], ""), "勾股定理教案" → ([教案], "勾股定理"). Longest words first.
  static func peel(_ run: [Unicode.Scalar]) -> (facets: [Facet], prefix: Int, suffix: Int) {
    var facets: [Facet] = []
    var start = 0
    var end = run.count
    func word(_ range: Range<Int>) -> Facet? {
      facet(String(String.UnicodeScalarView(run[range])))
    }
    var progress = true
    while progress && start < end {
      progress = false
      for l in stride(from: min(maxLength, end - start), through: 2, by: -1) {
        if let f = word(start..<(start + l)) {
          facets.append(f)
          start += l
          progress = true
          break
        }
      }
    }
    progress = true
    while progress && start < end {
      progress = false
      for l in stride(from: min(maxLength, end - start), through: 2, by: -1) {
        if let f = word((end - l)..<end) {
          facets.append(f)
          end -= l
          progress = true
          break
        }
      }
    }
    return (facets, start, run.count - end)
  }
}
