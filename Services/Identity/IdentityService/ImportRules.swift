import ServiceRuntime
import SmartSchoolModel

/// The per-row decisions of identity's imports, without I/O: both stores read the rows a
/// decision needs and ask here, so that SQLite and PostgreSQL refuse the same rows alike.
extension OrgRules {
  /// A refusal: the field and the reason.
  typealias Refusal = (field: String, reason: String)

  /// Why an imported org row may not be placed under `parent` (its parent found or nil for
  /// none), or nil.
  static func importPlacementRefusal(
    _ row: Org, parent: Org?, authorize: (OrgPath) -> Bool
  ) -> Refusal? {
    do {
      try checkParent(child: row.kind, parent: parent?.kind, field: "org.parent_code")
    } catch {
      return ("org.parent_code", error.message)
    }
    guard authorize(parent.flatMap { OrgPath($0.path) } ?? .root) else {
      return ("org.parent_code", "outside the caller's scope")
    }
    return nil
  }

  /// Why `managing` may not be an imported org row's managing school, or nil.
  static func importManagingRefusal(_ managing: Org) -> Refusal? {
    if managing.kind != .school || managing.schoolKind == .teachingPoint {
      return ("org.managing_school_code", "must name a central school (not a teaching point)")
    }
    return nil
  }

  /// Why an imported org row may not update `existing`, the org of its code, or nil.
  static func importUpdateRefusal(
    _ row: Org, existing: Org, parent: Org?, authorize: (OrgPath) -> Bool
  ) -> Refusal? {
    guard existing.kind == row.kind else {
      return ("org.kind", "org '\(row.code)' exists with kind \(existing.kind.englishName)")
    }
    guard authorize(OrgPath(existing.path)!) else { return ("org.code", "outside the caller's scope") }
    if let parent, let p = OrgPath(parent.path),
      wouldCycle(orgPath: OrgPath(existing.path)!, newParentPath: p)
    {
      return ("org.parent_code", "would make the org its own ancestor")
    }
    return nil
  }

  /// Whether an imported org row would change nothing of `existing`.
  static func importChanges(_ row: Org, existing: Org) -> Bool {
    !(existing.name == row.name && existing.schoolKind == row.schoolKind
      && existing.stages == row.stages && existing.grade == row.grade
      && existing.schoolYear == row.schoolYear && existing.parentCode == row.parentCode
      && existing.managingSchoolCode == row.managingSchoolCode)
  }

  /// Why an imported user row may not have `org` (the active org of its code) as home, or nil.
  static func importHomeRefusal(_ row: User, org: Org, authorize: (OrgPath) -> Bool)
    -> Refusal?
  {
    guard allowedHomeKinds(for: row.kind).contains(org.kind) else {
      return ("user.org_code", "a \(row.kind) cannot have a \(org.kind.englishName) as home org")
    }
    guard authorize(OrgPath(org.path)!) else { return ("user.org_code", "outside the caller's scope") }
    return nil
  }

  /// Whether an imported user row, homed at `orgID`, would change `existing`.
  static func importChanges(_ row: User, existing: User, orgID: String) -> Bool {
    !(existing.username.lowercased() == row.username.lowercased()
      && existing.displayName == row.displayName && existing.orgID == orgID
      && existing.birthYear == row.birthYear && existing.kind == row.kind)
  }
}
