import ServiceRuntime
import SmartSchoolModel

/// Who is looking, as visibility needs it.
struct Viewer: Sendable, Hashable {
  /// The caller's user id ("" for a scope view such as a coverage report).
  var userID: String
  /// Scopes where the caller may read resources.
  var readScopes: [OrgPath]
  /// Scopes where the caller reviews resources.
  var reviewScopes: [OrgPath]

  /// The viewer of a principal.
  init(_ p: Principal) {
    self.userID = p.userID
    self.readScopes = p.scopes(for: .resourcesRead)
    self.reviewScopes = p.scopes(for: .resourcesReview)
  }

  /// What is visible *at an org*: published resources shared into it or owned within it.
  init(scope: OrgPath) {
    self.userID = ""
    self.readScopes = [scope]
    self.reviewScopes = []
  }

  init(userID: String, readScopes: [OrgPath], reviewScopes: [OrgPath]) {
    self.userID = userID
    self.readScopes = readScopes
    self.reviewScopes = reviewScopes
  }
}

/// Who sees a resource.
///
/// A published resource is shared to its *reach*: the owner's ancestor at the sharing level
/// (the owner itself when the level is below the owner). A caller sees it when the reach
/// covers one of their read scopes (it is shared into their scope) or one of their read
/// scopes covers the owner (it is owned within their scope: a county official sees what the
/// county's schools publish). Reviewers whose scope covers the owner also see submitted and
/// rejected resources; authors see everything they wrote. Deleted resources are seen by none.
enum Visibility {
  /// Depth in the org tree of each sharing level (province 0 … school 3).
  static func depth(_ scope: Smartschool_Catalogue_V1_SharingScope) -> Int {
    switch scope {
    case .province: 0
    case .city: 1
    case .county: 2
    default: 3
    }
  }

  /// The reach of a resource owned at `owner` and shared at `scope`. Org paths list the ids
  /// from the province down, one per level, so the ancestor at a level is a path prefix.
  static func reach(owner: OrgPath, scope: Smartschool_Catalogue_V1_SharingScope) -> OrgPath {
    OrgPath(ids: Array(owner.ids.prefix(depth(scope) + 1)))
  }

  /// True when `viewer` sees a resource of this status, author, owner and reach.
  static func canSee(
    status: ResourceStatus, authorID: String, owner: OrgPath, reach: OrgPath, viewer: Viewer
  ) -> Bool {
    if !viewer.userID.isEmpty && authorID == viewer.userID { return true }
    if status == .published
      && viewer.readScopes.contains(where: { reach.covers($0) || $0.covers(owner) })
    {
      return true
    }
    if status == .submitted || status == .published || status == .rejected {
      return isReviewer(viewer, owner: owner)
    }
    return false
  }

  /// True when one of the viewer's review scopes covers the owner.
  static func isReviewer(_ viewer: Viewer, owner: OrgPath) -> Bool {
    viewer.reviewScopes.contains { $0.covers(owner) }
  }

  /// True when one of the viewer's review scopes covers the reach: publishing shares a
  /// resource over its whole reach, so a school's reviewer publishes only what stays in the
  /// school, a county's reviewer what stays in the county, and so on up.
  static func canPublish(_ viewer: Viewer, reach: OrgPath) -> Bool {
    viewer.reviewScopes.contains { $0.covers(reach) }
  }

  /// Every prefix of a path, root excluded: the reaches that cover it.
  static func prefixes(of path: OrgPath) -> [OrgPath] {
    (1...max(1, path.ids.count)).compactMap { n in
      n <= path.ids.count ? OrgPath(ids: Array(path.ids.prefix(n))) : nil
    }
  }

  /// The half-open text range of the paths a path covers: "/a/b/" ..< "/a/b0" ('0' follows
  /// '/'), usable with an index on a path column.
  static func range(of path: OrgPath) -> (lower: String, upper: String) {
    let text = path.description
    return (text, String(text.dropLast()) + "0")
  }
}
