import ServiceRuntime
import SmartSchoolModel

/// Field rules of resources, curriculum rows and filters (pure).
enum ResourceRules {
  static let maxTitle = 200
  static let maxDescription = 4000
  static let maxKeywords = 20
  static let maxKeyword = 32
  static let maxKnowledgePoints = 50
  static let maxLicence = 64
  static let defaultLicence = "all-rights-reserved"

  /// Known values of the enums a request may carry (0 = unspecified is checked separately).
  static func isKnown(_ type: Smartschool_Catalogue_V1_ResourceType) -> Bool {
    (1...7).contains(type.rawValue)
  }

  static func isKnown(_ stage: Smartschool_Common_V1_Stage) -> Bool {
    Smartschool_Common_V1_Stage.known.contains(stage)
  }

  static func isKnown(_ subject: Smartschool_Common_V1_Subject) -> Bool {
    Smartschool_Common_V1_Subject.known.contains(subject)
  }

  static func isKnown(_ scope: Smartschool_Catalogue_V1_SharingScope) -> Bool {
    (1...4).contains(scope.rawValue)
  }

  static func isKnown(_ status: ResourceStatus) -> Bool {
    (1...4).contains(status.rawValue)
  }

  /// Text that may span lines: no control characters other than newline and tab.
  static func isCleanMultiline(_ text: String) -> Bool {
    !text.unicodeScalars.contains {
      $0.properties.generalCategory == .control && $0 != "\n" && $0 != "\t" && $0 != "\r"
    }
  }

  /// Normalizes a resource as given on create or update (trims, de-duplicates keywords,
  /// default licence and sharing scope).
  static func normalize(_ r: Resource) -> Resource {
    var r = r
    r.title = r.title.trimmingWhitespace()
    r.externalID = r.externalID.trimmingSpaces()
    r.licence = r.licence.trimmingSpaces()
    if r.licence.isEmpty { r.licence = defaultLicence }
    if r.sharingScope == .unspecified { r.sharingScope = .school }
    var seen: Set<String> = []
    r.keywords = r.keywords.map { $0.trimmingSpaces() }
      .filter { !$0.isEmpty && seen.insert($0).inserted }
    var seenCodes: Set<String> = []
    r.knowledgePointCodes = r.knowledgePointCodes.map { $0.trimmingSpaces() }
      .filter { seenCodes.insert($0).inserted }
    r.editionCode = r.editionCode.trimmingSpaces()
    r.chapterCode = r.chapterCode.trimmingSpaces()
    return r
  }

  /// Field violations of a normalized resource whose curriculum references are resolved
  /// (stage, grade and subject filled from the chapter).
  static func violations(_ r: Resource, prefix: String = "resource.") -> [FieldViolation] {
    var v = Validator()
    v.text(r.title, prefix + "title", maxLength: maxTitle)
    if r.description_p.count > maxDescription {
      v.add(prefix + "description", "must have at most \(maxDescription) characters")
    } else if !isCleanMultiline(r.description_p) {
      v.add(prefix + "description", "must not contain control characters")
    }
    if r.keywords.count > maxKeywords {
      v.add(prefix + "keywords", "must have at most \(maxKeywords) keywords")
    }
    for (i, k) in r.keywords.enumerated() {
      v.text(k, prefix + "keywords[\(i)]", maxLength: maxKeyword)
    }
    if !isKnown(r.type) { v.add(prefix + "type", "must be a known resource type") }
    if !isKnown(r.stage) {
      v.add(prefix + "stage", "must be a known stage (or come from the chapter)")
    }
    if !isKnown(r.subject) {
      v.add(prefix + "subject", "must be a known subject (or come from the chapter)")
    }
    if r.grade != 0 && (!isKnown(r.stage) || !r.stage.grades.contains(Int(r.grade))) {
      v.add(prefix + "grade", "must be a grade of the stage, or 0 for any")
    }
    if !isKnown(r.sharingScope) { v.add(prefix + "sharing_scope", "must be a known sharing scope") }
    v.text(r.licence, prefix + "licence", maxLength: maxLicence)
    if !r.externalID.isEmpty { v.code(r.externalID, prefix + "external_id") }
    if !r.editionCode.isEmpty { v.code(r.editionCode, prefix + "edition_code") }
    if !r.chapterCode.isEmpty { v.code(r.chapterCode, prefix + "chapter_code") }
    if r.knowledgePointCodes.count > maxKnowledgePoints {
      v.add(prefix + "knowledge_point_codes", "must have at most \(maxKnowledgePoints) codes")
    }
    for (i, code) in r.knowledgePointCodes.enumerated() {
      v.code(code, prefix + "knowledge_point_codes[\(i)]")
    }
    return v.violations
  }

  /// Field violations of a curriculum node row (parent rules are checked by the store).
  static func violations(_ n: CurriculumNode) -> [FieldViolation] {
    var v = Validator()
    v.code(n.code, "node.code")
    v.text(n.name, "node.name", maxLength: 200)
    if !(1...4).contains(n.kind.rawValue) { v.add("node.kind", "must be a known node kind") }
    if n.kind == .edition {
      if !isKnown(n.stage) { v.add("node.stage", "an edition needs a known stage") }
      if !isKnown(n.subject) { v.add("node.subject", "an edition needs a known subject") }
    } else {
      if n.stage != .unspecified && !isKnown(n.stage) { v.add("node.stage", "unknown stage") }
      if n.subject != .unspecified && !isKnown(n.subject) {
        v.add("node.subject", "unknown subject")
      }
      v.code(n.parentCode, "node.parent_code")
    }
    if !(0...12).contains(n.grade) { v.add("node.grade", "must be 1-12 (0 = inherited)") }
    return v.violations
  }

  /// Field violations of a knowledge point row.
  static func violations(_ k: KnowledgePoint) -> [FieldViolation] {
    var v = Validator()
    v.code(k.code, "knowledge_point.code")
    v.text(k.name, "knowledge_point.name", maxLength: 200)
    if !isKnown(k.stage) { v.add("knowledge_point.stage", "must be a known stage") }
    if !isKnown(k.subject) { v.add("knowledge_point.subject", "must be a known subject") }
    if !k.chapterCode.isEmpty { v.code(k.chapterCode, "knowledge_point.chapter_code") }
    return v.violations
  }
}
