import SmartSchoolModel

/// Display names of the catalogue's vocabulary (facets, messages).
enum CatalogueNames {
  /// Chinese name of a resource type, e.g. "微课".
  static func chinese(_ type: Smartschool_Catalogue_V1_ResourceType) -> String {
    switch type {
    case .courseware: "课件"
    case .microLesson: "微课"
    case .lessonPlan: "教案"
    case .exerciseSet: "习题"
    case .teachingCase: "智慧课堂教学案例"
    case .resourcePackage: "资源包"
    case .awardWinningLesson: "优课"
    default: "未指定"
    }
  }

  /// Chinese name of a grade: 一年级 … 九年级, 高一 … 高三.
  static func grade(_ grade: Int) -> String {
    let digits = ["一", "二", "三", "四", "五", "六", "七", "八", "九"]
    switch grade {
    case 1...9: return digits[grade - 1] + "年级"
    case 10...12: return "高" + digits[grade - 10]
    default: return "未指定"
    }
  }

  /// Lower-case English name of a sharing scope, e.g. "county".
  static func name(_ scope: Smartschool_Catalogue_V1_SharingScope) -> String {
    switch scope {
    case .school: "school"
    case .county: "county"
    case .city: "city"
    case .province: "province"
    default: "unspecified scope"
    }
  }

  /// Lower-case English name of a curriculum node kind.
  static func name(_ kind: Smartschool_Catalogue_V1_CurriculumNodeKind) -> String {
    switch kind {
    case .edition: "edition"
    case .volume: "volume"
    case .chapter: "chapter"
    case .section: "section"
    default: "unspecified node"
    }
  }
}
