import SmartSchoolModel

/// A role, always held at an org (统一身份认证). The names are the token claim values.
public enum Role: String, CaseIterable, Codable, Hashable, Sendable {
  case systemAdmin = "system_admin"
  case provinceAdmin = "province_admin"
  case cityAdmin = "city_admin"
  case countyAdmin = "county_admin"
  case schoolAdmin = "school_admin"
  case teacher
  case student
  case parent
  case inspector
  case resourceReviewer = "resource_reviewer"
  case dataExchange = "data_exchange"

  /// The role of a proto enum value; `nil` for unspecified or unknown values.
  public init?(_ proto: Smartschool_Identity_V1_Role) {
    switch proto {
    case .systemAdmin: self = .systemAdmin
    case .provinceAdmin: self = .provinceAdmin
    case .cityAdmin: self = .cityAdmin
    case .countyAdmin: self = .countyAdmin
    case .schoolAdmin: self = .schoolAdmin
    case .teacher: self = .teacher
    case .student: self = .student
    case .parent: self = .parent
    case .inspector: self = .inspector
    case .resourceReviewer: self = .resourceReviewer
    case .dataExchange: self = .dataExchange
    default: return nil
    }
  }

  /// The proto enum value.
  public var proto: Smartschool_Identity_V1_Role {
    switch self {
    case .systemAdmin: .systemAdmin
    case .provinceAdmin: .provinceAdmin
    case .cityAdmin: .cityAdmin
    case .countyAdmin: .countyAdmin
    case .schoolAdmin: .schoolAdmin
    case .teacher: .teacher
    case .student: .student
    case .parent: .parent
    case .inspector: .inspector
    case .resourceReviewer: .resourceReviewer
    case .dataExchange: .dataExchange
    }
  }

  /// The org kinds a role may be held at. The system admin holds its role at the root
  /// (no org at all).
  public var allowedOrgKinds: Set<Smartschool_Common_V1_OrgKind> {
    switch self {
    case .systemAdmin: []
    case .provinceAdmin: [.province]
    case .cityAdmin: [.city]
    case .countyAdmin: [.county]
    case .schoolAdmin: [.school]
    case .teacher: [.school, .class]
    case .student: [.class, .school]
    case .parent: [.class, .school]
    case .inspector: [.province, .city, .county]
    case .resourceReviewer: [.province, .city, .county, .school]
    case .dataExchange: [.province, .city, .county]
    }
  }

  /// The roles a holder of this role may grant (always within its own scope).
  public var grantableRoles: Set<Role> {
    switch self {
    case .systemAdmin: Set(Role.allCases)
    case .provinceAdmin: Set(Role.allCases).subtracting([.systemAdmin])
    case .cityAdmin:
      [.cityAdmin, .countyAdmin, .schoolAdmin, .teacher, .student, .parent, .inspector,
       .resourceReviewer]
    case .countyAdmin:
      [.countyAdmin, .schoolAdmin, .teacher, .student, .parent, .inspector, .resourceReviewer]
    case .schoolAdmin: [.schoolAdmin, .teacher, .student, .parent, .resourceReviewer]
    default: []
    }
  }
}

/// What a caller may do, per service. Checked at an org path: a binding grants its role's
/// permissions over the subtree of the org it is held at.
public enum Permission: String, CaseIterable, Hashable, Sendable {
  // identity
  case orgsRead = "identity.orgs.read"
  case orgsWrite = "identity.orgs.write"
  case usersRead = "identity.users.read"
  case usersWrite = "identity.users.write"
  case rolesGrant = "identity.roles.grant"
  case auditRead = "identity.audit.read"
  case keysRotate = "identity.keys.rotate"
  // catalogue
  case resourcesRead = "catalogue.resources.read"
  case resourcesWrite = "catalogue.resources.write"
  case resourcesReview = "catalogue.resources.review"
  case curriculumWrite = "catalogue.curriculum.write"
  // assessment
  case examsRead = "assessment.exams.read"
  case examsWrite = "assessment.exams.write"
  case scoresImport = "assessment.scores.import"
  case resultsRead = "assessment.results.read"
  case qualityWrite = "assessment.quality.write"
  // supervision
  case supervisionRead = "supervision.read"
  case supervisionWrite = "supervision.write"
  case lessonsImport = "supervision.lessons.import"
  case inspectionsWrite = "supervision.inspections.write"
  // every service
  case changesRead = "changes.read"
}

/// The permission table: what each role may do in each service. Every service reads this
/// one table, so a role means the same thing everywhere.
public enum PermissionTable {
  /// The permissions a role grants over its scope.
  public static func permissions(of role: Role) -> Set<Permission> {
    // Looked up for every binding on every authorised call: built once.
    table[role] ?? []
  }

  private static let table: [Role: Set<Permission>] = Dictionary(
    uniqueKeysWithValues: Role.allCases.map { ($0, grants(of: $0)) })

  private static func grants(of role: Role) -> Set<Permission> {
    switch role {
    case .systemAdmin:
      return Set(Permission.allCases)
    case .provinceAdmin, .cityAdmin, .countyAdmin:
      return Set(Permission.allCases).subtracting([.keysRotate])
    case .schoolAdmin:
      return [
        .orgsRead, .orgsWrite, .usersRead, .usersWrite, .rolesGrant, .auditRead,
        .resourcesRead, .resourcesWrite, .curriculumWrite, .examsRead, .examsWrite,
        .scoresImport, .resultsRead, .qualityWrite, .supervisionRead, .supervisionWrite,
        .lessonsImport,
      ]
    case .teacher:
      return [
        .orgsRead, .usersRead, .resourcesRead, .resourcesWrite, .examsRead, .resultsRead,
        .qualityWrite, .supervisionRead,
      ]
    case .student, .parent:
      return [.orgsRead, .resourcesRead]
    case .inspector:
      return [
        .orgsRead, .usersRead, .resourcesRead, .examsRead, .resultsRead, .supervisionRead,
        .inspectionsWrite,
      ]
    case .resourceReviewer:
      return [.orgsRead, .resourcesRead, .resourcesReview]
    case .dataExchange:
      return [
        .orgsRead, .orgsWrite, .usersRead, .usersWrite, .resourcesRead, .resourcesWrite,
        .curriculumWrite, .examsRead, .examsWrite, .scoresImport, .resultsRead, .qualityWrite,
        .supervisionRead, .supervisionWrite, .lessonsImport, .changesRead,
      ]
    }
  }
}
