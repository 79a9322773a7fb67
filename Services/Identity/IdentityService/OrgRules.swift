import ServiceRuntime
import SmartSchoolModel

/// The rules of the org tree and of user records, without I/O.
enum OrgRules {
  typealias Org = Smartschool_Identity_V1_Org
  typealias User = Smartschool_Identity_V1_User

  /// Field checks of an org as created or imported (`prefix` names the message field).
  static func validate(_ org: Org, prefix: String = "org") -> [FieldViolation] {
    var v = Validator()
    v.code(org.code, "\(prefix).code")
    v.text(org.name, "\(prefix).name", maxLength: 100)
    guard OrgKind.known.contains(org.kind) else {
      v.add("\(prefix).kind", "must be one of province, city, county, school, class")
      return v.violations
    }
    if org.kind == .province {
      v.check(org.parentCode.isEmpty && org.parentID.isEmpty, "\(prefix).parent_code",
              "a province has no parent")
    } else {
      v.check(!org.parentCode.isEmpty || !org.parentID.isEmpty, "\(prefix).parent_code",
              "a \(org.kind.englishName) needs a parent \(org.kind.requiredParentKind!.englishName)")
    }
    if org.kind == .school {
      v.check(SchoolKindSet.known.contains(org.schoolKind), "\(prefix).school_kind",
              "a school needs a school kind: teaching_point, rural or urban")
    } else {
      v.check(org.schoolKind == .unspecified, "\(prefix).school_kind", "only schools have a school kind")
      v.check(org.stages.isEmpty, "\(prefix).stages", "only schools have stages")
    }
    for (i, s) in org.stages.enumerated() where !StageSet.known.contains(s) {
      v.add("\(prefix).stages[\(i)]", "unknown stage")
    }
    if !org.managingSchoolCode.isEmpty || !org.managingSchoolID.isEmpty {
      v.check(org.kind == .school && org.schoolKind == .teachingPoint,
              "\(prefix).managing_school_code", "only a teaching point has a managing school")
    }
    if org.kind == .`class` {
      v.check((1...12).contains(Int(org.grade)), "\(prefix).grade", "must be 1-12 for a class")
      v.check(SchoolYear(org.schoolYear) != nil, "\(prefix).school_year",
              "must be a school year such as 2020-2021")
    } else {
      v.check(org.grade == 0, "\(prefix).grade", "only classes have a grade")
      v.check(org.schoolYear.isEmpty, "\(prefix).school_year", "only classes have a school year")
    }
    return v.violations
  }

  /// The parent's kind must be the one above the child's.
  static func checkParent(child: Smartschool_Common_V1_OrgKind, parent: Smartschool_Common_V1_OrgKind?,
                          field: String) throws(ServiceError) {
    guard let required = child.requiredParentKind else {
      if parent != nil { throw .invalid(field, "a province has no parent") }
      return
    }
    guard parent == required else {
      throw .invalid(field, "the parent of a \(child.englishName) must be a \(required.englishName)")
    }
  }

  /// A teaching point's managing school must be a school of the teaching point's own county
  /// (whose id is `parentID`): its roles reach the teaching point (一体化管理), and a county
  /// may not hand its teaching points to a school of another county.
  static func checkSameCounty(_ managing: Org, parentID: String, field: String)
    throws(ServiceError)
  {
    guard managing.parentID == parentID else {
      throw .invalid(
        field, "the managing school '\(managing.code)' is not in the teaching point's county")
    }
  }

  /// The most teaching points one central school may manage. Every token of a role held at the
  /// school names them (about 30 bytes each), and a token must stay well below the 16 KiB a
  /// verifier accepts; real central schools manage a handful.
  static let maxManagedTeachingPoints = 100

  /// True when moving the org at `orgPath` under `newParentPath` would make it its own ancestor.
  static func wouldCycle(orgPath: OrgPath, newParentPath: OrgPath) -> Bool {
    orgPath.covers(newParentPath)
  }

  /// Field checks of a user as created or imported.
  static func validate(_ user: User, prefix: String = "user", requireOrg: Bool = true)
    -> [FieldViolation]
  {
    var v = Validator()
    v.code(user.externalID, "\(prefix).external_id")
    if !TextRules.isUsername(user.username) {
      v.add("\(prefix).username", "must be 3-64 characters of letters, digits, '.', '_', '-' or '@'")
    }
    v.text(user.displayName, "\(prefix).display_name", maxLength: 100)
    switch user.kind {
    case .teacher, .student, .parent, .staff: break
    case .serviceAccount: v.add("\(prefix).kind", "create service accounts with CreateServiceAccount")
    default: v.add("\(prefix).kind", "must be teacher, student, parent or staff")
    }
    if requireOrg {
      v.check(!user.orgCode.isEmpty || !user.orgID.isEmpty, "\(prefix).org_code",
              "a user needs a home org")
    }
    if user.birthYear != 0 {
      v.check((1900...2100).contains(Int(user.birthYear)), "\(prefix).birth_year",
              "must be a year between 1900 and 2100 (0 = unknown)")
    }
    return v.violations
  }

  /// The home-org kinds a user kind may have.
  static func allowedHomeKinds(for kind: Smartschool_Identity_V1_UserKind)
    -> Set<Smartschool_Common_V1_OrgKind>
  {
    switch kind {
    case .student: [.`class`]
    case .teacher: [.school, .`class`]
    case .parent: [.school, .`class`]
    default: [.province, .city, .county, .school, .`class`]
    }
  }
}

/// Org kinds that exist, for validation.
enum OrgKind {
  static let known: Set<Smartschool_Common_V1_OrgKind> = [.province, .city, .county, .school, .`class`]
}

/// School kinds that exist, for validation.
enum SchoolKindSet {
  static let known: Set<Smartschool_Common_V1_SchoolKind> = [.teachingPoint, .rural, .urban]
}

/// Stages that exist, for validation.
enum StageSet {
  static let known: Set<Smartschool_Common_V1_Stage> = [.primary, .junior, .senior]
}
