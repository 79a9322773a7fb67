import Foundation
import SmartSchoolModel

/// One role binding as an access token carries it: the role and the org it is held at.
public struct RoleGrant: Hashable, Sendable {
  /// The role.
  public var role: Role
  /// Id of the org the role is held at (empty for the system admin's root binding).
  public var orgID: String
  /// Path of that org; the binding's scope is every org under it.
  public var orgPath: OrgPath
  /// Paths of the teaching points the org manages as their central school (一体化管理): the
  /// binding's scope takes in every org under them too. Empty for most bindings.
  public var managedPaths: [OrgPath]

  /// A binding of `role` at the org `orgID` whose path is `orgPath`, reaching also the
  /// teaching points at `managedPaths`.
  public init(role: Role, orgID: String, orgPath: OrgPath, managedPaths: [OrgPath] = []) {
    self.role = role
    self.orgID = orgID
    self.orgPath = orgPath
    self.managedPaths = managedPaths
  }

  /// True when the binding's scope (its org's subtree and those of the teaching points the
  /// org manages) takes in `path`.
  public func covers(_ path: OrgPath) -> Bool {
    orgPath.covers(path) || managedPaths.contains { $0.covers(path) }
  }
}

/// Who is calling: the verified claims of the caller's access token.
public struct Principal: Hashable, Sendable {
  /// The user's id.
  public var userID: String
  /// The user's login name.
  public var username: String
  /// The user's kind: teacher, student, parent, staff or service_account.
  public var kind: String
  /// The user's role bindings.
  public var bindings: [RoleGrant]
  /// The session the token belongs to: a login, or one service-account client-credentials
  /// exchange (empty only in service-account tokens issued before those had sessions).
  public var sessionID: String
  /// When the token was issued and expires.
  public var issuedAt: Date
  /// When the token expires.
  public var expiresAt: Date
  /// The services the token may be used at; `nil` (a first-party token) means every service.
  public var audience: [String]?
  /// The OAuth scopes of a token issued to an OpenID Connect client, space separated.
  public var scope: String?
  /// The OpenID Connect client the token was issued to; `nil` for first-party tokens.
  public var clientID: String?

  /// A principal with the given claims.
  public init(
    userID: String, username: String, kind: String, bindings: [RoleGrant], sessionID: String,
    issuedAt: Date, expiresAt: Date, audience: [String]? = nil, scope: String? = nil,
    clientID: String? = nil
  ) {
    self.userID = userID
    self.username = username
    self.kind = kind
    self.bindings = bindings
    self.sessionID = sessionID
    self.issuedAt = issuedAt
    self.expiresAt = expiresAt
    self.audience = audience
    self.scope = scope
    self.clientID = clientID
  }

  /// Whether the token may be used at `service`: a first-party token (no audience) may be
  /// used everywhere, a client's token only at the services its audience names.
  public func mayBeUsed(at service: String) -> Bool {
    audience?.contains(service) ?? true
  }

  /// The principal of the RPC being served, set by ``CallInterceptor`` for the whole call
  /// (including a server-streaming response). `nil` on open methods.
  @TaskLocal public static var current: Principal?

  /// The current principal, or UNAUTHENTICATED.
  public static func require() throws(ServiceError) -> Principal {
    guard let current else { throw .unauthenticated("this method requires an access token") }
    return current
  }

  /// True when a binding whose role grants `permission` covers `path` (see
  /// ``RoleGrant/covers(_:)``).
  public func allows(_ permission: Permission, at path: OrgPath) -> Bool {
    bindings.contains {
      PermissionTable.permissions(of: $0.role).contains(permission) && $0.covers(path)
    }
  }

  /// True when a binding whose role grants `permission` covers the path text `path`.
  public func allows(_ permission: Permission, atPath path: String) -> Bool {
    guard let parsed = OrgPath(path) else { return false }
    return allows(permission, at: parsed)
  }

  /// Throws PERMISSION_DENIED unless ``allows(_:at:)``.
  public func require(_ permission: Permission, at path: OrgPath) throws(ServiceError) {
    if !allows(permission, at: path) {
      throw .permissionDenied("\(permission.rawValue) is not granted at this org to the caller")
    }
  }

  /// The scopes (org paths) over which the principal holds `permission`, minimal: a scope
  /// covered by another is dropped. Empty when the permission is held nowhere. A binding at a
  /// central school gives its managed teaching points' paths as scopes too.
  public func scopes(for permission: Permission) -> [OrgPath] {
    // Asked on nearly every call, of a handful of bindings: an array, and no set or sort for
    // the usual one scope.
    var paths: [OrgPath] = []
    for b in bindings where PermissionTable.permissions(of: b.role).contains(permission) {
      if !paths.contains(b.orgPath) { paths.append(b.orgPath) }
      for m in b.managedPaths where !paths.contains(m) { paths.append(m) }
    }
    if paths.count < 2 { return paths }
    return paths.filter { p in !paths.contains { $0 != p && $0.covers(p) } }.sorted()
  }

  /// True when the principal holds `role` at an org covering `path`.
  public func holds(_ role: Role, covering path: OrgPath) -> Bool {
    bindings.contains { $0.role == role && $0.covers(path) }
  }

  /// True when some binding lets the principal grant `role` at `path`.
  public func mayGrant(_ role: Role, at path: OrgPath) -> Bool {
    bindings.contains {
      $0.role.grantableRoles.contains(role)
        && PermissionTable.permissions(of: $0.role).contains(.rolesGrant)
        && $0.covers(path)
    }
  }
}
