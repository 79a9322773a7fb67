import Foundation

/// A vocabulary value that has a Chinese name (as the people running the platform say it)
/// and a lower-case English enum name (as CSV files and flags spell it).
public protocol NamedVocabulary: CaseIterable, Hashable, Sendable {
  /// The Chinese name, e.g. "数学".
  var chineseName: String { get }
  /// The lower-case English name, e.g. "mathematics".
  var englishName: String { get }
}

extension NamedVocabulary {
  /// Parses a Chinese name or a lower-case English name (case-insensitive, surrounding spaces
  /// ignored); `nil` when the text names no value.
  public static func parse(_ text: String) -> Self? {
    let trimmed = text.trimmingSpaces()
    let lower = trimmed.lowercased()
    return allCases.first { $0.chineseName == trimmed || $0.englishName == lower }
  }
}

/// Chinese and English names of the "unspecified" zero value of every vocabulary enum.
private let unspecifiedNames = ("未指定", "unspecified")

extension Smartschool_Common_V1_OrgKind: NamedVocabulary {
  /// The org kinds that exist (without the unspecified zero value).
  public static let known: [Self] = [.province, .city, .county, .school, .`class`]

  /// The Chinese name: 省, 市, 县/区, 学校, 班级.
  public var chineseName: String {
    switch self {
    case .province: "省"
    case .city: "市"
    case .county: "县/区"
    case .school: "学校"
    case .`class`: "班级"
    default: unspecifiedNames.0
    }
  }

  /// The English name: province, city, county, school, class.
  public var englishName: String {
    switch self {
    case .province: "province"
    case .city: "city"
    case .county: "county"
    case .school: "school"
    case .`class`: "class"
    default: unspecifiedNames.1
    }
  }

  /// The kind a parent of this kind must have; `nil` for a province, which is a root.
  public var requiredParentKind: Self? {
    switch self {
    case .city: .province
    case .county: .city
    case .school: .county
    case .`class`: .school
    default: nil
    }
  }

  /// Depth in the tree: province 0 … class 4.
  public var depth: Int {
    switch self {
    case .province: 0
    case .city: 1
    case .county: 2
    case .school: 3
    case .`class`: 4
    default: -1
    }
  }
}

extension Smartschool_Common_V1_SchoolKind: NamedVocabulary {
  /// The school kinds that exist (without the unspecified zero value).
  public static let known: [Self] = [.teachingPoint, .rural, .urban]

  /// The Chinese name: 教学点, 乡村学校, 城镇学校.
  public var chineseName: String {
    switch self {
    case .teachingPoint: "教学点"
    case .rural: "乡村学校"
    case .urban: "城镇学校"
    default: unspecifiedNames.0
    }
  }

  /// The English name: teaching_point, rural, urban.
  public var englishName: String {
    switch self {
    case .teachingPoint: "teaching_point"
    case .rural: "rural"
    case .urban: "urban"
    default: unspecifiedNames.1
    }
  }
}

extension Smartschool_Common_V1_Stage: NamedVocabulary {
  /// The stages that exist (without the unspecified zero value).
  public static let known: [Self] = [.primary, .junior, .senior]

  /// The Chinese name: 小学, 初中, 高中.
  public var chineseName: String {
    switch self {
    case .primary: "小学"
    case .junior: "初中"
    case .senior: "高中"
    default: unspecifiedNames.0
    }
  }

  /// The English name: primary, junior, senior.
  public var englishName: String {
    switch self {
    case .primary: "primary"
    case .junior: "junior"
    case .senior: "senior"
    default: unspecifiedNames.1
    }
  }

  /// The grades the stage spans: primary 1–6, junior 7–9, senior 10–12.
  public var grades: ClosedRange<Int> {
    switch self {
    case .primary: 1...6
    case .junior: 7...9
    case .senior: 10...12
    default: 0...0
    }
  }

  /// The stage a grade (1–12) belongs to; `nil` outside 1–12.
  public static func of(grade: Int) -> Self? {
    known.first { $0.grades.contains(grade) }
  }
}

extension Smartschool_Common_V1_Subject: NamedVocabulary {
  /// The subjects that exist (without the unspecified zero value).
  public static let known: [Self] = allCases.filter { $0 != .unspecified }

  /// The Chinese name, e.g. 语文, 数学, 道德与法治.
  public var chineseName: String {
    switch self {
    case .chinese: "语文"
    case .mathematics: "数学"
    case .english: "英语"
    case .physics: "物理"
    case .chemistry: "化学"
    case .biology: "生物"
    case .history: "历史"
    case .geography: "地理"
    case .moralityAndLaw: "道德与法治"
    case .science: "科学"
    case .informationTechnology: "信息技术"
    case .music: "音乐"
    case .fineArts: "美术"
    case .physicalEducation: "体育与健康"
    case .labour: "劳动"
    case .integratedPractice: "综合实践"
    default: unspecifiedNames.0
    }
  }

  /// The English name, e.g. chinese, mathematics, morality_and_law.
  public var englishName: String {
    switch self {
    case .chinese: "chinese"
    case .mathematics: "mathematics"
    case .english: "english"
    case .physics: "physics"
    case .chemistry: "chemistry"
    case .biology: "biology"
    case .history: "history"
    case .geography: "geography"
    case .moralityAndLaw: "morality_and_law"
    case .science: "science"
    case .informationTechnology: "information_technology"
    case .music: "music"
    case .fineArts: "fine_arts"
    case .physicalEducation: "physical_education"
    case .labour: "labour"
    case .integratedPractice: "integrated_practice"
    default: unspecifiedNames.1
    }
  }
}
