import Foundation
import GRPCCore
import Logging
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf

typealias API = Smartschool_Identity_V1_IdentityService

/// The identity service's RPC handlers: decode, authorize, validate, call the store, map.
struct IdentityAPI: Smartschool_Identity_V1_IdentityService.SimpleServiceProtocol {
  let store: any IdentityStore
  let keys: KeyRing
  let verifier: TokenVerifier
  let settings: IdentitySettings
  let hashes: HashLimiter
  let throttle: LoginThrottle
  let logger: Logger

  /// Methods callable without a token: the login family and key publication.
  static let openMethods: Set<String> = [
    API.Method.Login.descriptor.fullyQualifiedMethod,
    API.Method.LoginSecondFactor.descriptor.fullyQualifiedMethod,
    API.Method.Refresh.descriptor.fullyQualifiedMethod,
    API.Method.ExchangeClientCredentials.descriptor.fullyQualifiedMethod,
    API.Method.ActivateAccount.descriptor.fullyQualifiedMethod,
    API.Method.ListSigningKeys.descriptor.fullyQualifiedMethod,
  ]

  // MARK: Helpers

  private func path(_ org: Org) -> OrgPath { OrgPath(org.path) ?? .root }

  func userPath(_ user: User) -> OrgPath { OrgPath(user.orgPath) ?? .root }

  /// Resolves an org named by id or code (one of them set), or NOT_FOUND / INVALID_ARGUMENT.
  private func resolveOrg(id: String, code: String, field: String) async throws -> Org {
    if id.isEmpty && code.isEmpty { throw ServiceError.invalid(field, "name an org by id or code") }
    let org = id.isEmpty ? try await store.org(code: code) : try await store.org(id: id)
    guard let org else {
      throw ServiceError.notFound("org '\(id.isEmpty ? code : id)' not found")
    }
    return org
  }

  func resolveUser(id: String, externalID: String = "", username: String = "",
                           field: String) async throws -> User {
    let user: User?
    if !id.isEmpty {
      user = try await store.user(id: id)
    } else if !externalID.isEmpty {
      user = try await store.user(externalID: externalID)
    } else if !username.isEmpty {
      user = try await store.user(username: username)
    } else {
      throw ServiceError.invalid(field, "name a user by id, external_id or username")
    }
    guard let user else { throw ServiceError.notFound("user not found") }
    return user
  }

  /// Orgs are readable within orgsRead scope, and every caller may read the orgs on the path
  /// to their own bindings (their school, its county…).
  private func mayRead(_ org: Org, _ p: Principal) -> Bool {
    let orgPath = path(org)
    return p.allows(.orgsRead, at: orgPath) || p.bindings.contains { orgPath.covers($0.orgPath) }
  }

  private func mayRead(_ user: User, _ p: Principal) async throws -> Bool {
    if user.id == p.userID || p.allows(.usersRead, at: userPath(user)) { return true }
    if user.kind == .student && p.kind == "parent" {
      return try await store.children(ofParent: p.userID).contains { $0.id == user.id }
    }
    return false
  }

  func audit(_ action: String, actor: String, target: String, orgID: String = "",
                     orgPath: String = "", detail: String = "") async {
    do {
      try await store.audit(
        AuditEntry(actorID: actor, action: action, target: target, orgID: orgID, orgPath: orgPath,
                   detail: detail))
    } catch {
      logger.error("audit write failed", metadata: ["action": "\(action)", "error": "\(error)"])
    }
  }

  private func claims(
    for user: User, bindings: [Binding], managed: [String: [String]], sessionID: String
  ) -> AccessTokenClaims {
    let now = Int64(Date().timeIntervalSince1970)
    return AccessTokenClaims(
      iss: smartSchoolTokenIssuer, sub: user.id, usr: user.username,
      knd: KindNames.name(user.kind), sid: sessionID, iat: now,
      exp: now + Int64(settings.accessTokenTTL),
      rol: bindings.compactMap { b in
        Role(b.role).map { .init(r: $0.rawValue, o: b.orgID, p: b.orgPath, m: managed[b.orgID]) }
      })
  }

  /// The tokens of a session that ends at `sessionEnds` (by default `refreshExpires`): no access
  /// token outlives its session. A token for an OpenID Connect client carries its `client`
  /// claims (audience, scope, client id).
  func tokenResponse(user: User, sessionID: String, refreshToken: String?,
                             refreshExpires: Date?, sessionEnds: Date? = nil,
                             client: ClientTokenClaims? = nil) async throws
    -> Smartschool_Identity_V1_TokenResponse
  {
    let bindings = try await store.bindings(userID: user.id)
    // A role held at a central school reaches the teaching points it manages (一体化管理). The
    // token carries their ids, rather than each service asking identity or its own org
    // directory: every service (identity too, which keeps no directory) then decides with the
    // principal alone, its scope queries take the extra paths like any other scope, and the
    // answer is as fresh as the bindings beside it (a new managing school shows at the next
    // token, as a revoked role does).
    let schoolDepth = Smartschool_Common_V1_OrgKind.school.depth + 1
    let managed = try await store.managedTeachingPoints(
      schoolIDs: bindings.filter { OrgPath($0.orgPath)?.ids.count == schoolDepth }.map(\.orgID))
    let c = claims(for: user, bindings: bindings, managed: managed, sessionID: sessionID)
    var signed = c
    if let client {
      signed.aud = client.audience
      signed.scope = client.scope
      signed.azp = client.clientID
    }
    if let ends = sessionEnds ?? refreshExpires {
      signed.exp = min(c.exp, Self.sessionEnd(ends))
    }
    let token = try keys.signer.sign(signed)
    return .with {
      $0.accessToken = token
      $0.tokenType = "Bearer"
      $0.accessTokenExpireTime = .init(
        date: Date(timeIntervalSince1970: TimeInterval(signed.exp)))
      if let refreshToken, let refreshExpires {
        $0.refreshToken = refreshToken
        $0.refreshTokenExpireTime = .init(date: refreshExpires)
      }
      $0.sessionID = sessionID
      $0.userID = user.id
    }
  }

  // MARK: Orgs

  func createOrg(request: Smartschool_Identity_V1_CreateOrgRequest, context: ServerContext)
    async throws -> Org
  {
    let p = try Principal.require()
    var v = Validator()
    for violation in OrgRules.validate(request.org) { v.add(violation.field, violation.description) }
    try v.throwIfInvalid()
    var parent: Org? = nil
    if request.org.kind != .province {
      parent = try await resolveOrg(
        id: request.org.parentID, code: request.org.parentCode, field: "org.parent_code")
    }
    try p.require(.orgsWrite, at: parent.map(path) ?? .root)
    try OrgRules.checkParent(child: request.org.kind, parent: parent?.kind, field: "org.parent_code")
    guard parent?.active ?? true else {
      throw ServiceError.failedPrecondition("the parent org is deactivated")
    }
    var managing: Org? = nil
    if !request.org.managingSchoolCode.isEmpty || !request.org.managingSchoolID.isEmpty {
      let m = try await resolveOrg(
        id: request.org.managingSchoolID, code: request.org.managingSchoolCode,
        field: "org.managing_school_code")
      guard m.kind == .school, m.schoolKind != .teachingPoint else {
        throw ServiceError.invalid("org.managing_school_code", "must name a central school")
      }
      managing = m
    }
    let org = try await store.insertOrg(request.org, parent: parent, managingSchool: managing)
    await audit("org.create", actor: p.userID, target: org.id, orgID: org.id, orgPath: org.path)
    return org
  }

  func getOrg(request: Smartschool_Identity_V1_GetOrgRequest, context: ServerContext)
    async throws -> Org
  {
    let p = try Principal.require()
    let org = try await resolveOrg(id: request.id, code: request.code, field: "id")
    guard mayRead(org, p) else { throw ServiceError.permissionDenied("org is outside your scope") }
    return org
  }

  func updateOrg(request: Smartschool_Identity_V1_UpdateOrgRequest, context: ServerContext)
    async throws -> Org
  {
    let p = try Principal.require()
    let current = try await resolveOrg(id: request.org.id, code: request.org.code, field: "org.id")
    try p.require(.orgsWrite, at: path(current))
    let editable: Set<String> = [
      "name", "parent_code", "school_kind", "stages", "managing_school_code", "grade",
      "school_year",
    ]
    var paths = Set(request.updateMask.paths)
    if paths.isEmpty { paths = editable }
    if let bad = paths.first(where: { !editable.contains($0) }) {
      throw ServiceError.invalid("update_mask", "field '\(bad)' cannot be updated")
    }
    var next = current
    if paths.contains("name") { next.name = request.org.name }
    if paths.contains("school_kind") { next.schoolKind = request.org.schoolKind }
    if paths.contains("stages") { next.stages = request.org.stages }
    if paths.contains("grade") { next.grade = request.org.grade }
    if paths.contains("school_year") { next.schoolYear = request.org.schoolYear }
    var newParent: Org? = nil
    if paths.contains("parent_code") && request.org.parentCode != current.parentCode {
      guard current.kind != .province else {
        throw ServiceError.invalid("org.parent_code", "a province has no parent")
      }
      let parent = try await resolveOrg(id: "", code: request.org.parentCode, field: "org.parent_code")
      try OrgRules.checkParent(child: current.kind, parent: parent.kind, field: "org.parent_code")
      if OrgRules.wouldCycle(orgPath: path(current), newParentPath: path(parent)) {
        throw ServiceError.invalid("org.parent_code", "would make the org its own ancestor")
      }
      try p.require(.orgsWrite, at: path(parent))
      newParent = parent
      next.parentCode = parent.code
      next.parentID = parent.id
    }
    var managing: Org?? = nil
    if paths.contains("managing_school_code") {
      next.managingSchoolCode = request.org.managingSchoolCode
      if request.org.managingSchoolCode.isEmpty {
        managing = .some(nil)
      } else {
        let m = try await resolveOrg(
          id: "", code: request.org.managingSchoolCode, field: "org.managing_school_code")
        guard m.kind == .school, m.schoolKind != .teachingPoint else {
          throw ServiceError.invalid("org.managing_school_code", "must name a central school")
        }
        managing = .some(m)
      }
    }
    let violations = OrgRules.validate(next)
    if !violations.isEmpty { throw ServiceError.invalidArgument(violations) }
    let updated = try await store.updateOrg(next, newParent: newParent, managingSchool: managing)
    await audit("org.update", actor: p.userID, target: updated.id, orgID: updated.id,
                orgPath: updated.path, detail: paths.sorted().joined(separator: ","))
    return updated
  }

  func deactivateOrg(request: Smartschool_Identity_V1_DeactivateOrgRequest, context: ServerContext)
    async throws -> Org
  {
    let p = try Principal.require()
    let org = try await resolveOrg(id: request.id, code: request.code, field: "id")
    try p.require(.orgsWrite, at: path(org))
    if try await store.activeChildCount(of: org.id) > 0 {
      throw ServiceError.failedPrecondition("the org still has active child orgs")
    }
    let updated = try await store.deactivateOrg(id: org.id)
    await audit("org.deactivate", actor: p.userID, target: org.id, orgID: org.id, orgPath: org.path)
    return updated
  }

  func listOrgs(request: Smartschool_Identity_V1_ListOrgsRequest, context: ServerContext)
    async throws -> Smartschool_Identity_V1_ListOrgsResponse
  {
    let p = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    var parent: Org? = nil
    if !request.parentID.isEmpty || !request.parentCode.isEmpty {
      parent = try await resolveOrg(id: request.parentID, code: request.parentCode, field: "parent_id")
    }
    if request.kind != .unspecified && !OrgKind.known.contains(request.kind) {
      throw ServiceError.invalid("kind", "unknown org kind")
    }
    let scopes = p.scopes(for: .orgsRead)
    if let parent, !scopes.contains(where: { $0.covers(path(parent)) }),
      !scopes.contains(where: { path(parent).covers($0) })
    {
      throw ServiceError.permissionDenied("org is outside your scope")
    }
    let query = "\(parent?.id ?? "")|\(request.subtree)|\(request.kind.rawValue)|\(request.includeInactive)"
    let token = try PageToken.decode(request.pageToken, query: query)
    // Without a parent: the caller's scope roots (or, with subtree, everything in scope).
    let roots = parent == nil && !request.subtree
    var orgs: [Org]
    if roots {
      var found: [Org] = []
      for scope in scopes {
        if scope == .root {
          found += try await store.listOrgs(
            under: nil, parentID: nil, kind: .province, includeInactive: request.includeInactive,
            scopes: scopes, afterCode: nil, limit: PageSize.maximum)
        } else if let id = scope.leaf, let org = try await store.org(id: id) {
          found.append(org)
        }
      }
      orgs = found.filter { request.kind == .unspecified || $0.kind == request.kind }
        .sorted { $0.code < $1.code }
        .filter { o in token.map { o.code > ($0.after.first ?? "") } ?? true }
      orgs = Array(orgs.prefix(limit + 1))
    } else {
      orgs = try await store.listOrgs(
        under: request.subtree ? parent.map(path) ?? .root : nil,
        parentID: request.subtree ? nil : parent?.id,
        kind: request.kind == .unspecified ? nil : request.kind,
        includeInactive: request.includeInactive, scopes: scopes,
        afterCode: token?.after.first, limit: limit + 1)
    }
    return .with {
      $0.orgs = Array(orgs.prefix(limit))
      if orgs.count > limit, let last = $0.orgs.last {
        $0.nextPageToken = PageToken(after: [last.code]).encode(query: query)
      }
    }
  }

  func importOrgs(
    request: RPCAsyncSequence<Smartschool_Identity_V1_ImportOrgsRequest, any Error>,
    context: ServerContext
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    let p = try Principal.require()
    let authorize: @Sendable (OrgPath) -> Bool = { p.allows(.orgsWrite, at: $0) }
    var pending: [(index: Int, row: Org)] = []
    var seenCodes: Set<String> = []
    let summary = try await BulkImport.run(
      request, batchSize: 500,
      prepare: { (message, index) -> PreparedRow<Org> in
        var row = message.org
        row.code = row.code.trimmingSpaces()
        let violations = OrgRules.validate(row)
        if let first = violations.first {
          return .reject(.row(
            index, key: row.code, field: first.field,
            violations.map(\.description).joined(separator: "; ")))
        }
        guard seenCodes.insert(row.code).inserted else {
          return .reject(.row(index, key: row.code, field: "org.code", "duplicate code in this stream"))
        }
        return .accept(row)
      },
      commit: { batch in
        let (outcome, deferred) = try await store.importOrgs(batch, authorize: authorize)
        pending += deferred
        return outcome
      },
      finish: {
        // Rows whose parent came later in the stream: retry until no progress.
        var outcome = BatchOutcome()
        while !pending.isEmpty {
          let before = pending.count
          let (result, deferred) = try await store.importOrgs(pending, authorize: authorize)
          outcome.created += result.created
          outcome.updated += result.updated
          outcome.errors += result.errors
          pending = deferred
          if pending.count == before { break }
        }
        for (index, row) in pending {
          let missing = row.parentCode.isEmpty ? "managing_school_code" : "parent_code"
          let code = row.parentCode.isEmpty ? row.managingSchoolCode : row.parentCode
          outcome.errors.append(.row(index, key: row.code, field: "org.\(missing)", "unknown org '\(code)'"))
        }
        return outcome
      })
    await audit("org.import", actor: p.userID, target: "",
                detail: "received=\(summary.received) accepted=\(summary.accepted)")
    return summary
  }

  // MARK: Users

  func createUser(request: Smartschool_Identity_V1_CreateUserRequest, context: ServerContext)
    async throws -> User
  {
    let p = try Principal.require()
    let violations = OrgRules.validate(request.user)
    if !violations.isEmpty { throw ServiceError.invalidArgument(violations) }
    if !request.initialPassword.isEmpty {
      try settings.passwordPolicy.check(
        request.initialPassword, username: request.user.username, field: "initial_password")
    }
    let org = try await resolveOrg(id: request.user.orgID, code: request.user.orgCode, field: "user.org_code")
    try p.require(.usersWrite, at: path(org))
    guard org.active else { throw ServiceError.failedPrecondition("the home org is deactivated") }
    guard OrgRules.allowedHomeKinds(for: request.user.kind).contains(org.kind) else {
      throw ServiceError.invalid(
        "user.org_code", "a \(KindNames.name(request.user.kind)) cannot have a \(org.kind.englishName) as home org")
    }
    var hash: String? = nil
    if !request.initialPassword.isEmpty {
      let password = request.initialPassword
      let params = settings.scrypt
      hash = try await hashes.run { try Passwords.hash(password, parameters: params) }
    }
    // The admin knows an initial password: the user must replace it at first login.
    let user = try await store.insertUser(
      request.user, org: org, passwordHash: hash, mustChangePassword: hash != nil, clientID: nil,
      clientSecretHash: nil)
    await audit("user.create", actor: p.userID, target: user.id, orgID: org.id, orgPath: org.path)
    return user
  }

  func getUser(request: Smartschool_Identity_V1_GetUserRequest, context: ServerContext)
    async throws -> User
  {
    let p = try Principal.require()
    let user = try await resolveUser(
      id: request.id, externalID: request.externalID, username: request.username, field: "id")
    guard try await mayRead(user, p) else {
      throw ServiceError.permissionDenied("user is outside your scope")
    }
    return user
  }

  func updateUser(request: Smartschool_Identity_V1_UpdateUserRequest, context: ServerContext)
    async throws -> User
  {
    let p = try Principal.require()
    let current = try await resolveUser(
      id: request.user.id, externalID: request.user.externalID, field: "user.id")
    try p.require(.usersWrite, at: userPath(current))
    let editable: Set<String> = ["display_name", "org_code", "birth_year", "username"]
    var paths = Set(request.updateMask.paths)
    if paths.isEmpty { paths = editable }
    if let bad = paths.first(where: { !editable.contains($0) }) {
      throw ServiceError.invalid("update_mask", "field '\(bad)' cannot be updated")
    }
    var next = current
    if paths.contains("display_name") { next.displayName = request.user.displayName }
    if paths.contains("birth_year") { next.birthYear = request.user.birthYear }
    if paths.contains("username") { next.username = request.user.username }
    var org: Org? = nil
    if paths.contains("org_code") && request.user.orgCode != current.orgCode {
      let o = try await resolveOrg(id: "", code: request.user.orgCode, field: "user.org_code")
      try p.require(.usersWrite, at: path(o))
      guard OrgRules.allowedHomeKinds(for: current.kind).contains(o.kind) else {
        throw ServiceError.invalid("user.org_code", "not a valid home org for this user")
      }
      org = o
      next.orgCode = o.code
    }
    let violations = OrgRules.validate(next, requireOrg: current.kind != .serviceAccount)
      .filter { !(current.kind == .serviceAccount && $0.field == "user.kind") }
    if !violations.isEmpty { throw ServiceError.invalidArgument(violations) }
    let updated = try await store.updateUser(next, org: org)
    await audit("user.update", actor: p.userID, target: updated.id, orgID: updated.orgID,
                orgPath: updated.orgPath, detail: paths.sorted().joined(separator: ","))
    return updated
  }

  func deactivateUser(request: Smartschool_Identity_V1_DeactivateUserRequest, context: ServerContext)
    async throws -> User
  {
    let p = try Principal.require()
    let user = try await resolveUser(id: request.id, externalID: request.externalID, field: "id")
    try p.require(.usersWrite, at: userPath(user))
    guard user.id != p.userID else {
      throw ServiceError.failedPrecondition("you cannot deactivate your own account")
    }
    let started = Date().addingTimeInterval(-1)
    let updated = try await store.deactivateUser(id: user.id)
    try await refuseRevokedSessions(since: started)
    await audit("user.deactivate", actor: p.userID, target: user.id, orgID: user.orgID,
                orgPath: user.orgPath)
    return updated
  }

  func reactivateUser(
    request: Smartschool_Identity_V1_ReactivateUserRequest, context: ServerContext
  ) async throws -> User {
    let p = try Principal.require()
    let user = try await resolveUser(id: request.id, externalID: request.externalID, field: "id")
    try p.require(.usersWrite, at: userPath(user))
    guard user.status == .deactivated else {
      throw ServiceError.failedPrecondition("the user is not deactivated")
    }
    if !user.orgID.isEmpty, let org = try await store.org(id: user.orgID), !org.active {
      throw ServiceError.failedPrecondition("the home org is deactivated")
    }
    guard let updated = try await store.reactivateUser(id: user.id) else {
      throw ServiceError.failedPrecondition("the user is not deactivated")
    }
    await audit("user.reactivate", actor: p.userID, target: user.id, orgID: user.orgID,
                orgPath: user.orgPath)
    return updated
  }

  func listUsers(request: Smartschool_Identity_V1_ListUsersRequest, context: ServerContext)
    async throws -> Smartschool_Identity_V1_ListUsersResponse
  {
    let p = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    var v = Validator()
    v.check(request.namePrefix.count <= 64, "name_prefix", "must have at most 64 characters")
    try v.throwIfInvalid()
    var scopes = p.scopes(for: .usersRead)
    if !request.orgID.isEmpty || !request.orgCode.isEmpty {
      let org = try await resolveOrg(id: request.orgID, code: request.orgCode, field: "org_id")
      let orgPath = path(org)
      guard scopes.contains(where: { $0.covers(orgPath) }) else {
        throw ServiceError.permissionDenied("org is outside your scope")
      }
      scopes = [orgPath]
    }
    if scopes.isEmpty { throw ServiceError.permissionDenied("you may not list users") }
    let query = "\(scopes)|\(request.kind.rawValue)|\(request.namePrefix)|\(request.includeInactive)"
    let token = try PageToken.decode(request.pageToken, query: query)
    let users = try await store.listUsers(
      scopes: scopes, kind: request.kind == .unspecified ? nil : request.kind,
      namePrefix: request.namePrefix, includeInactive: request.includeInactive,
      afterUsername: token?.after.first, limit: limit + 1)
    return .with {
      $0.users = Array(users.prefix(limit))
      if users.count > limit, let last = $0.users.last {
        $0.nextPageToken = PageToken(after: [last.username]).encode(query: query)
      }
    }
  }

  func importUsers(
    request: RPCAsyncSequence<Smartschool_Identity_V1_ImportUsersRequest, any Error>,
    context: ServerContext
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    let p = try Principal.require()
    let authorize: @Sendable (OrgPath) -> Bool = { p.allows(.usersWrite, at: $0) }
    let store = self.store
    // A message carries `user` (the single-row form; a message with no rows at all is still
    // one empty row, as it always was) or `users`, after `user` when both are set.
    let rows = StreamRows(request, field: "users") { message in
      message.users.isEmpty ? [message.user] : message.hasUser ? [message.user] + message.users
        : message.users
    }
    // A batch commits while the next one is read, validated and staged (read and decided
    // ahead, checked again at its commit); on PostgreSQL two commit at once when they share
    // no key (see userWritesInFlight). A batch sharing a key with the one before it is staged
    // without a guess, and so waits for that one's commit: a user's later row must win.
    var previousKeys = Set<String>()
    let summary = try await BulkImport.runOverlapped(
      rows, batchSize: settings.userImportBatchRows, inFlight: store.userWritesInFlight,
      followsPrevious: { $0.guess == nil },
      prepare: { (user, index) -> PreparedRow<User> in
        let violations = OrgRules.validate(user)
        guard let first = violations.first else { return .accept(user) }
        return .reject(.row(
          index, key: user.externalID, field: first.field,
          violations.map { "\($0.field): \($0.description)" }.joined(separator: "; ")))
      },
      stage: { batch in
        var staged = try await store.stageUserImport(batch, authorize: authorize)
        // The batch before may commit after this stage read: a batch sharing a key with it
        // is decided at its commit.
        if !staged.keys.isDisjoint(with: previousKeys) { staged.guess = nil }
        previousKeys = staged.keys
        return staged
      },
      commit: { staged in try await store.importUsers(staged, authorize: authorize) })
    await audit("user.import", actor: p.userID, target: "",
                detail: "received=\(summary.received) accepted=\(summary.accepted)")
    return summary
  }

  func issueActivationCode(
    request: Smartschool_Identity_V1_IssueActivationCodeRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_IssueActivationCodeResponse {
    let p = try Principal.require()
    let user = try await resolveUser(id: request.userID, field: "user_id")
    try p.require(.usersWrite, at: userPath(user))
    guard user.status != .deactivated, user.kind != .serviceAccount else {
      throw ServiceError.failedPrecondition("the account cannot be activated")
    }
    let code = Secrets.activationCode()
    let expires = Date().addingTimeInterval(settings.activationCodeTTL)
    try await store.setActivation(userID: user.id, codeHash: Secrets.digest(code), expires: expires)
    await audit("user.activation_code", actor: p.userID, target: user.id, orgID: user.orgID,
                orgPath: user.orgPath)
    return .with {
      $0.activationCode = code
      $0.expireTime = .init(date: expires)
    }
  }

  func activateAccount(
    request: Smartschool_Identity_V1_ActivateAccountRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_ActivateAccountResponse {
    var v = Validator()
    v.check(!request.username.isEmpty && request.username.count <= 64, "username", "must be 1-64 characters")
    v.check(!request.activationCode.isEmpty && request.activationCode.count <= 64,
            "activation_code", "must be 1-64 characters")
    try v.throwIfInvalid()
    try settings.passwordPolicy.check(
      request.newPassword, username: request.username, field: "new_password")
    let password = request.newPassword
    let params = settings.scrypt
    let hash = try await hashes.run { try Passwords.hash(password, parameters: params) }
    let code = request.activationCode.uppercased().replacingOccurrences(of: "-", with: "")
    guard
      let user = try await store.activate(
        username: request.username, codeHash: Secrets.digest(code), passwordHash: hash)
    else {
      throw ServiceError.unauthenticated("invalid username or activation code")
    }
    // Whoever held the old password may hold sessions too.
    let ended = try await endSessions(of: user.id, except: nil, reason: "account activated")
    await audit("user.activate", actor: user.id, target: user.id, orgID: user.orgID,
                orgPath: user.orgPath, detail: "ended \(ended) sessions")
    return .init()
  }

  func changePassword(
    request: Smartschool_Identity_V1_ChangePasswordRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_ChangePasswordResponse {
    let p = try Principal.require()
    try settings.passwordPolicy.check(
      request.newPassword, username: p.username, field: "new_password")
    guard let creds = try await store.credentials(username: p.username),
      let stored = creds.passwordHash
    else { throw ServiceError.unauthenticated("the current password is wrong") }
    let current = request.currentPassword
    let new = request.newPassword
    let params = settings.scrypt
    let hash = try await hashes.run { () throws -> String? in
      guard try Passwords.verify(current, against: stored) else { return nil }
      return try Passwords.hash(new, parameters: params)
    }
    guard let hash else { throw ServiceError.unauthenticated("the current password is wrong") }
    try await store.setPassword(userID: p.userID, hash: hash)
    let kept = p.sessionID.isEmpty ? nil : p.sessionID
    let ended = try await endSessions(of: p.userID, except: kept, reason: "password changed")
    await audit("user.password_change", actor: p.userID, target: p.userID,
                orgID: creds.user.orgID, orgPath: creds.user.orgPath,
                detail: "ended \(ended) other sessions")
    return .with {
      $0.keptSessionID = kept ?? ""
      $0.endedSessions = Int32(ended)
    }
  }

  // MARK: Guardians

  private func linkPair(parentID: String, studentID: String, _ p: Principal) async throws
    -> (User, User)
  {
    var v = Validator()
    v.check(!parentID.isEmpty, "parent_id", "must not be empty")
    v.check(!studentID.isEmpty, "student_id", "must not be empty")
    try v.throwIfInvalid()
    let parent = try await resolveUser(id: parentID, field: "parent_id")
    let student = try await resolveUser(id: studentID, field: "student_id")
    guard parent.kind == .parent else { throw ServiceError.invalid("parent_id", "is not a parent") }
    guard student.kind == .student else { throw ServiceError.invalid("student_id", "is not a student") }
    try p.require(.usersWrite, at: userPath(student))
    return (parent, student)
  }

  func linkGuardian(request: Smartschool_Identity_V1_LinkGuardianRequest, context: ServerContext)
    async throws -> Smartschool_Identity_V1_LinkGuardianResponse
  {
    let p = try Principal.require()
    let (parent, student) = try await linkPair(
      parentID: request.parentID, studentID: request.studentID, p)
    _ = try await store.link(parentID: parent.id, studentID: student.id)
    await audit("guardian.link", actor: p.userID, target: "\(parent.id):\(student.id)",
                orgID: student.orgID, orgPath: student.orgPath)
    return .init()
  }

  func unlinkGuardian(request: Smartschool_Identity_V1_UnlinkGuardianRequest, context: ServerContext)
    async throws -> Smartschool_Identity_V1_UnlinkGuardianResponse
  {
    let p = try Principal.require()
    let (parent, student) = try await linkPair(
      parentID: request.parentID, studentID: request.studentID, p)
    guard try await store.unlink(parentID: parent.id, studentID: student.id) else {
      throw ServiceError.notFound("the parent is not linked to the student")
    }
    await audit("guardian.unlink", actor: p.userID, target: "\(parent.id):\(student.id)",
                orgID: student.orgID, orgPath: student.orgPath)
    return .init()
  }

  func listChildren(request: Smartschool_Identity_V1_ListChildrenRequest, context: ServerContext)
    async throws -> Smartschool_Identity_V1_ListChildrenResponse
  {
    let p = try Principal.require()
    let parentID = request.parentID.isEmpty ? p.userID : request.parentID
    let children = try await store.children(ofParent: parentID)
    if parentID != p.userID {
      let parent = try await resolveUser(id: parentID, field: "parent_id")
      guard p.allows(.usersRead, at: userPath(parent))
        || children.contains(where: { p.allows(.usersRead, at: userPath($0)) })
      else { throw ServiceError.permissionDenied("user is outside your scope") }
    }
    return .with {
      $0.children = parentID == p.userID
        ? children : children.filter { p.allows(.usersRead, at: userPath($0)) }
    }
  }

  func listGuardians(request: Smartschool_Identity_V1_ListGuardiansRequest, context: ServerContext)
    async throws -> Smartschool_Identity_V1_ListGuardiansResponse
  {
    let p = try Principal.require()
    let student = try await resolveUser(id: request.studentID, field: "student_id")
    guard student.id == p.userID || p.allows(.usersRead, at: userPath(student)) else {
      throw ServiceError.permissionDenied("user is outside your scope")
    }
    return .with { $0.guardians = [] }.with(try await store.guardians(ofStudent: student.id))
  }

  func importGuardians(
    request: RPCAsyncSequence<Smartschool_Identity_V1_ImportGuardiansRequest, any Error>,
    context: ServerContext
  ) async throws -> Smartschool_Common_V1_ImportSummary {
    let p = try Principal.require()
    let authorize: @Sendable (OrgPath) -> Bool = { p.allows(.usersWrite, at: $0) }
    return try await BulkImport.run(
      request,
      prepare: { (row, index) -> PreparedRow<(parent: String, student: String)> in
        let key = "\(row.parentExternalID):\(row.studentExternalID)"
        if !TextRules.isCode(row.parentExternalID) {
          return .reject(.row(index, key: key, field: "parent_external_id", "is not a valid external id"))
        }
        if !TextRules.isCode(row.studentExternalID) {
          return .reject(.row(index, key: key, field: "student_external_id", "is not a valid external id"))
        }
        return .accept((parent: row.parentExternalID, student: row.studentExternalID))
      },
      commit: { batch in
        try await store.importGuardians(
          batch.map { ($0.index, $0.row.parent, $0.row.student) }, authorize: authorize)
      })
  }

  // MARK: Roles

  func grantRole(request: Smartschool_Identity_V1_GrantRoleRequest, context: ServerContext)
    async throws -> Binding
  {
    let p = try Principal.require()
    guard let role = Role(request.role) else { throw ServiceError.invalid("role", "unknown role") }
    let user = try await resolveUser(id: request.userID, field: "user_id")
    var org: Org? = nil
    if role == .systemAdmin {
      guard request.orgID.isEmpty && request.orgCode.isEmpty else {
        throw ServiceError.invalid("org_id", "the system admin role is held at the root, without an org")
      }
    } else {
      let o = try await resolveOrg(id: request.orgID, code: request.orgCode, field: "org_id")
      guard role.allowedOrgKinds.contains(o.kind) else {
        throw ServiceError.invalid(
          "org_id", "\(role.rawValue) cannot be held at a \(o.kind.englishName)")
      }
      guard o.active else { throw ServiceError.failedPrecondition("the org is deactivated") }
      org = o
    }
    let target = org.map(path) ?? .root
    guard p.mayGrant(role, at: target) else {
      throw ServiceError.permissionDenied("you may not grant \(role.rawValue) at this org")
    }
    guard p.allows(.usersRead, at: userPath(user)) || user.orgPath.isEmpty else {
      throw ServiceError.permissionDenied("user is outside your scope")
    }
    guard user.status != .deactivated else {
      throw ServiceError.failedPrecondition("the user is deactivated")
    }
    let binding = try await store.insertBinding(
      userID: user.id, role: role, org: org, grantedBy: p.userID)
    await audit("role.grant", actor: p.userID, target: binding.id, orgID: binding.orgID,
                orgPath: binding.orgPath, detail: "\(role.rawValue) to \(user.id)")
    return binding
  }

  func revokeRole(request: Smartschool_Identity_V1_RevokeRoleRequest, context: ServerContext)
    async throws -> Smartschool_Identity_V1_RevokeRoleResponse
  {
    let p = try Principal.require()
    guard !request.bindingID.isEmpty else { throw ServiceError.invalid("binding_id", "must not be empty") }
    guard let binding = try await store.binding(id: request.bindingID) else {
      throw ServiceError.notFound("role binding not found")
    }
    let role = Role(binding.role) ?? .student
    guard p.mayGrant(role, at: OrgPath(binding.orgPath) ?? .root) else {
      throw ServiceError.permissionDenied("you may not revoke \(role.rawValue) at this org")
    }
    try await store.deleteBinding(id: binding.id)
    await audit("role.revoke", actor: p.userID, target: binding.id, orgID: binding.orgID,
                orgPath: binding.orgPath, detail: "\(role.rawValue) from \(binding.userID)")
    return .init()
  }

  func listRoleBindings(
    request: Smartschool_Identity_V1_ListRoleBindingsRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_ListRoleBindingsResponse {
    let p = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    var under: OrgPath? = nil
    if !request.orgID.isEmpty {
      under = path(try await resolveOrg(id: request.orgID, code: "", field: "org_id"))
    }
    var scopes = p.scopes(for: .usersRead)
    // Everyone may list their own bindings.
    if request.userID == p.userID { scopes = [.root] }
    if scopes.isEmpty { throw ServiceError.permissionDenied("you may not list role bindings") }
    let role = request.role == .unspecified ? nil : Role(request.role)
    let query = "\(request.userID)|\(under?.description ?? "")|\(request.role.rawValue)"
    let token = try PageToken.decode(request.pageToken, query: query)
    let bindings = try await store.listBindings(
      userID: request.userID.isEmpty ? nil : request.userID, under: under, role: role,
      scopes: scopes, afterID: token?.after.first, limit: limit + 1)
    return .with {
      $0.bindings = Array(bindings.prefix(limit))
      if bindings.count > limit, let last = $0.bindings.last {
        $0.nextPageToken = PageToken(after: [last.id]).encode(query: query)
      }
    }
  }

  // MARK: Authentication

  static let badLogin = "invalid username or password (or the account is temporarily locked)"

  func login(request: Smartschool_Identity_V1_LoginRequest, context: ServerContext) async throws
    -> Smartschool_Identity_V1_TokenResponse
  {
    try await login(request, client: ClientAddress.host(ofPeer: context.remotePeer))
  }

  /// Login with its metadata: behind a trusted proxy the client's address comes from
  /// `x-forwarded-for`, which the message alone does not carry.
  func login(
    request: ServerRequest<Smartschool_Identity_V1_LoginRequest>, context: ServerContext
  ) async throws -> ServerResponse<Smartschool_Identity_V1_TokenResponse> {
    let client = ClientAddress.resolve(
      peer: context.remotePeer,
      forwardedFor: request.metadata[stringValues: "x-forwarded-for"].map { String($0) },
      trusted: settings.trustedProxies)
    return ServerResponse(message: try await login(request.message, client: client))
  }

  private func login(_ request: Smartschool_Identity_V1_LoginRequest, client: String)
    async throws -> Smartschool_Identity_V1_TokenResponse
  {
    var v = Validator()
    v.check(!request.username.isEmpty, "username", "must not be empty")
    v.check(request.username.count <= 64, "username", "must have at most 64 characters")
    v.check(!request.password.isEmpty, "password", "must not be empty")
    v.check(request.password.count <= 1024, "password", "must have at most 1024 characters")
    try v.throwIfInvalid()
    if !request.newPassword.isEmpty {
      // Checked whether or not a change is due, so the answer says nothing about the account.
      try settings.passwordPolicy.check(
        request.newPassword, username: request.username, field: "new_password")
    }
    // Refused here, before the store or a hash: a flood costs next to nothing.
    try throttle.admit(account: request.username, address: client)
    let password = request.password
    let newPassword = request.newPassword
    let params = settings.scrypt
    let creds = try await store.credentials(username: request.username)
    guard let creds, creds.user.kind != .serviceAccount, creds.user.status == .active,
      let stored = creds.passwordHash
    else {
      // Spend the same work as a real check, so timing does not reveal which usernames exist.
      _ = try await throttle.hashing(from: client) {
        try await hashes.run { try Passwords.hash(password, parameters: params) }
      }
      await audit("login.failure", actor: "", target: String(request.username.prefix(64)),
                  orgID: creds?.user.orgID ?? "", orgPath: creds?.user.orgPath ?? "",
                  detail: creds == nil ? "unknown user" : "inactive account")
      throw ServiceError.unauthenticated(Self.badLogin)
    }
    let user = creds.user
    let mustChange = creds.mustChangePassword
    // The guess is reserved (counted) before it is hashed, and only once a hash slot is held,
    // so that neither parallel guesses nor refusals for capacity go uncounted or overcounted.
    let outcome = try await throttle.hashing(from: client) {
      try await hashes.holding { () async throws -> (attempt: Int, ok: Bool, hash: String?)? in
        guard
          let attempt = try await store.reserveLoginAttempt(
            userID: user.id, threshold: settings.lockoutThreshold,
            lockFor: settings.lockoutDuration)
        else { return nil }
        return try await HashLimiter.offload { () throws -> (Int, Bool, String?) in
          guard try Passwords.verify(password, against: stored) else { return (attempt, false, nil) }
          if mustChange {
            let changed = newPassword.isEmpty || newPassword == password
              ? nil : try Passwords.hash(newPassword, parameters: params)
            return (attempt, true, changed)
          }
          let rehash = Passwords.needsRehash(stored, current: params)
            ? try Passwords.hash(password, parameters: params) : nil
          return (attempt, true, rehash)
        }
      }
    }
    guard let outcome else {
      // Locked: no guess is evaluated, whatever the password (a right one is refused too, and
      // this event is what tells an admin that someone who may be the user was kept out).
      await audit("login.failure", actor: user.id, target: user.id, orgID: user.orgID,
                  orgPath: user.orgPath, detail: "account locked; password not checked")
      throw ServiceError.unauthenticated(Self.badLogin)
    }
    guard outcome.ok else {
      await audit("login.failure", actor: user.id, target: user.id, orgID: user.orgID,
                  orgPath: user.orgPath, detail: "wrong password (\(outcome.attempt))")
      if outcome.attempt >= settings.lockoutThreshold {
        await audit("login.lockout", actor: user.id, target: user.id, orgID: user.orgID,
                    orgPath: user.orgPath, detail: "after \(outcome.attempt) failures")
      }
      throw ServiceError.unauthenticated(Self.badLogin)
    }
    // Two-factor login (TwoFactorAPI.swift): a right password alone gives no tokens, and its
    // reserved guess stays counted until the second step succeeds.
    let factor = try await secondFactor(for: user)
    if factor != nil, !request.acceptsSecondFactor {
      await audit("login.failure", actor: user.id, target: user.id, orgID: user.orgID,
                  orgPath: user.orgPath, detail: "second factor needed; client cannot give one")
      throw ServiceError.failedPrecondition(
        "this account needs a second factor (TOTP): use a client that supports two-factor "
          + "login (Login with accepts_second_factor, then LoginSecondFactor)")
    }
    if let factor, !mustChange {
      if let rehash = outcome.hash { try await store.setPassword(userID: user.id, hash: rehash) }
      return try await secondFactorChallenge(for: user, kind: factor)
    }
    let changed = mustChange && outcome.hash != nil
    guard
      try await store.recordSuccessfulLogin(
        userID: user.id, newHash: outcome.hash, passwordChanged: changed)
    else { throw ServiceError.unauthenticated(Self.badLogin) }
    if mustChange && !changed {
      await audit("login.password_change_required", actor: user.id, target: user.id,
                  orgID: user.orgID, orgPath: user.orgPath)
      if newPassword == password {
        throw ServiceError.invalid("new_password", "must differ from the password an admin set")
      }
      throw ServiceError.failedPrecondition(
        "the password was set by an admin and must be changed: repeat Login with new_password")
    }
    if changed {
      await audit("user.password_change", actor: user.id, target: user.id, orgID: user.orgID,
                  orgPath: user.orgPath, detail: "at first login")
    }
    if let factor { return try await secondFactorChallenge(for: user, kind: factor) }
    let refresh = Secrets.random()
    let refreshExpires = Date().addingTimeInterval(settings.refreshTokenTTL)
    let session = try await store.createSession(
      userID: user.id, refreshHash: Secrets.digest(refresh), refreshExpires: refreshExpires)
    await audit("login.success", actor: user.id, target: session, orgID: user.orgID,
                orgPath: user.orgPath,
                detail: changed ? "password changed" : outcome.hash != nil ? "password rehashed" : "")
    return try await tokenResponse(
      user: user, sessionID: session, refreshToken: refresh, refreshExpires: refreshExpires)
  }

  func unlockAccount(request: Smartschool_Identity_V1_UnlockAccountRequest, context: ServerContext)
    async throws -> User
  {
    let p = try Principal.require()
    var v = Validator()
    v.check(request.userID.isEmpty != request.username.isEmpty, "user_id",
            "name the user by user_id or username (exactly one)")
    v.check(request.username.count <= 64, "username", "must have at most 64 characters")
    try v.throwIfInvalid()
    let user = try await resolveUser(
      id: request.userID, username: request.username, field: "user_id")
    try p.require(.usersWrite, at: userPath(user))
    let unlocked = try await store.unlock(userID: user.id)
    await audit("user.unlock", actor: p.userID, target: user.id, orgID: user.orgID,
                orgPath: user.orgPath,
                detail: user.hasLockedUntil ? "was locked" : "was not locked")
    return unlocked
  }

  func refresh(request: Smartschool_Identity_V1_RefreshRequest, context: ServerContext)
    async throws -> Smartschool_Identity_V1_TokenResponse
  {
    guard !request.refreshToken.isEmpty, request.refreshToken.count <= 256 else {
      throw ServiceError.invalid("refresh_token", "must be 1-256 characters")
    }
    let hash = Secrets.digest(request.refreshToken)
    guard let record = try await store.refreshRecord(hash: hash) else {
      throw ServiceError.unauthenticated("refresh token is invalid, expired or revoked")
    }
    let (user, newToken) = try await rotateRefresh(record, hash: hash)
    return try await tokenResponse(
      user: user, sessionID: record.sessionID, refreshToken: newToken,
      refreshExpires: record.sessionExpiresAt)
  }

  /// Rotates the refresh token of `record` (whose hash is `hash`): the new token and the
  /// session's user. The one rotation and reuse detection of Refresh and of the OpenID Connect
  /// refresh_token grant: a token used before (a concurrent use included) revokes its whole
  /// session. UNAUTHENTICATED, saying why, when the token may not be refreshed.
  func rotateRefresh(_ record: RefreshRecord, hash: String) async throws
    -> (user: User, token: String)
  {
    guard !record.sessionRevoked, record.expiresAt > Date() else {
      throw ServiceError.unauthenticated("refresh token is invalid, expired or revoked")
    }
    // The session's end was fixed at login; refreshing never moves it, and it ends at the
    // same whole second as its access tokens (which WhoAmI and Introspect go by).
    guard Self.sessionEnd(record.sessionExpiresAt) > Int64(Date().timeIntervalSince1970) else {
      throw ServiceError.unauthenticated("the session has ended (its lifetime is over)")
    }
    let newToken = Secrets.random()
    let expires = record.sessionExpiresAt
    let rotated =
      record.usedAt == nil
      ? try await store.rotateRefresh(
        oldHash: hash, sessionID: record.sessionID, newHash: Secrets.digest(newToken),
        expires: expires)
      : false
    guard rotated else {
      // A rotated token came back: someone holds a stolen copy. End the whole family.
      try await store.revokeSession(id: record.sessionID, reason: "refresh token reuse")
      verifier.revokeSessions([record.sessionID: Date()])
      await audit("session.reuse_revoked", actor: record.userID, target: record.sessionID)
      throw ServiceError.unauthenticated("refresh token was already used; the session is revoked")
    }
    guard let user = try await store.user(id: record.userID), user.status == .active else {
      throw ServiceError.unauthenticated("the account is not active")
    }
    return (user, newToken)
  }

  /// Refuses at once, here, the tokens of sessions revoked since `since`; the other services
  /// learn of them from the change feed.
  private func refuseRevokedSessions(since: Date) async throws {
    verifier.revokeSessions(try await store.revokedSessions(since: since))
  }

  /// Ends the user's sessions but `except` (on the change feed, so every service refuses
  /// their tokens) and refuses their tokens here at once; returns how many ended.
  func endSessions(of userID: String, except: String?, reason: String) async throws
    -> Int
  {
    let ended = try await store.revokeSessions(userID: userID, except: except, reason: reason)
    verifier.revokeSessions(ended)
    return ended.count
  }

  /// The whole second a session ending at `date` ends at: its access tokens expire then
  /// (token times are whole seconds), and Refresh refuses from then on.
  private static func sessionEnd(_ date: Date) -> Int64 {
    Int64(date.timeIntervalSince1970.rounded(.down))
  }

  func logout(request: Smartschool_Identity_V1_LogoutRequest, context: ServerContext) async throws
    -> Smartschool_Identity_V1_LogoutResponse
  {
    let p = try Principal.require()
    if !p.sessionID.isEmpty {
      try await endSession(id: p.sessionID, userID: p.userID)
    }
    return .init()
  }

  func introspect(request: Smartschool_Identity_V1_IntrospectRequest, context: ServerContext)
    async throws -> Smartschool_Identity_V1_IntrospectResponse
  {
    _ = try Principal.require()
    guard let principal = try? await verifier.verify(request.token) else { return .init() }
    if !principal.sessionID.isEmpty, !(try await store.sessionActive(id: principal.sessionID)) {
      return .init()
    }
    guard let (user, bindings) = try await store.userWithBindings(id: principal.userID),
      user.status == .active
    else { return .init() }
    let keyID = request.token.split(separator: ".").first.flatMap { Base64URL.decode($0) }
      .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }?["kid"] as? String
    return .with {
      $0.active = true
      $0.subject = user.id
      $0.username = user.username
      $0.kind = user.kind
      $0.bindings = bindings.filter { b in
        principal.bindings.contains { $0.role.proto == b.role && $0.orgID == b.orgID }
      }
      $0.issueTime = .init(date: principal.issuedAt)
      $0.expireTime = .init(date: principal.expiresAt)
      $0.keyID = keyID ?? ""
      $0.sessionID = principal.sessionID
      $0.issuer = smartSchoolTokenIssuer
    }
  }

  func listSigningKeys(request: Smartschool_Identity_V1_ListSigningKeysRequest,
                       context: ServerContext) async throws
    -> Smartschool_Identity_V1_ListSigningKeysResponse
  {
    .with { $0.keys = keys.publishedMessages }
  }

  func rotateSigningKey(request: Smartschool_Identity_V1_RotateSigningKeyRequest,
                        context: ServerContext) async throws -> Smartschool_Identity_V1_SigningKey
  {
    let p = try Principal.require()
    try p.require(.keysRotate, at: .root)
    let key = try await keys.rotate()
    try await verifier.refresh()
    await audit("key.rotate", actor: p.userID, target: key.keyID)
    return key
  }

  func createServiceAccount(
    request: Smartschool_Identity_V1_CreateServiceAccountRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_CreateServiceAccountResponse {
    let p = try Principal.require()
    var v = Validator()
    if !TextRules.isUsername(request.name) {
      v.add("name", "must be 3-64 characters of letters, digits, '.', '_', '-' or '@'")
    }
    v.text(request.displayName, "display_name", required: false, maxLength: 100)
    v.check(!request.roles.isEmpty, "roles", "grant at least one role")
    for (i, r) in request.roles.enumerated() where Role(r) == nil || Role(r) == .systemAdmin {
      v.add("roles[\(i)]", "unknown role, or not grantable to a service account")
    }
    try v.throwIfInvalid()
    let org = try await resolveOrg(id: request.orgID, code: request.orgCode, field: "org_id")
    let roles = request.roles.compactMap { Role($0) }
    for role in roles {
      guard role.allowedOrgKinds.contains(org.kind) else {
        throw ServiceError.invalid("roles", "\(role.rawValue) cannot be held at a \(org.kind.englishName)")
      }
      guard p.mayGrant(role, at: path(org)) else {
        throw ServiceError.permissionDenied("you may not grant \(role.rawValue) at this org")
      }
    }
    let clientID = "sa-" + EntityID.make()
    let secret = Secrets.clientSecret()
    var user = User()
    user.externalID = "sa." + request.name
    user.username = request.name
    user.displayName = request.displayName.isEmpty ? request.name : request.displayName
    user.kind = .serviceAccount
    let created = try await store.insertUser(
      user, org: org, passwordHash: nil, mustChangePassword: false, clientID: clientID,
      clientSecretHash: Secrets.digest(secret))
    var bindings: [Binding] = []
    for role in roles {
      bindings.append(
        try await store.insertBinding(userID: created.id, role: role, org: org, grantedBy: p.userID))
    }
    await audit("service_account.create", actor: p.userID, target: created.id, orgID: org.id,
                orgPath: org.path, detail: roles.map(\.rawValue).joined(separator: ","))
    return .with {
      $0.user = created
      $0.clientID = clientID
      $0.clientSecret = secret
      $0.bindings = bindings
    }
  }

  func exchangeClientCredentials(
    request: Smartschool_Identity_V1_ExchangeClientCredentialsRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_TokenResponse {
    guard !request.clientID.isEmpty, request.clientID.count <= 64, !request.clientSecret.isEmpty,
      request.clientSecret.count <= 256
    else { throw ServiceError.unauthenticated("invalid client credentials") }
    guard let creds = try await store.credentials(clientID: request.clientID),
      let stored = creds.clientSecretHash, creds.user.status == .active,
      Secrets.digest(request.clientSecret) == stored
    else {
      await audit("login.failure", actor: "", target: String(request.clientID.prefix(64)),
                  detail: "client credentials")
      throw ServiceError.unauthenticated("invalid client credentials")
    }
    // Each token is a session of its own, so that deactivating the account (or rotating its
    // secret with revoke_tokens) ends it at every service, as a logout does.
    let ends = Date().addingTimeInterval(settings.accessTokenTTL)
    let session = try await store.createSession(
      userID: creds.user.id, refreshHash: nil, refreshExpires: ends)
    return try await tokenResponse(
      user: creds.user, sessionID: session, refreshToken: nil, refreshExpires: nil,
      sessionEnds: ends)
  }

  func rotateServiceAccountSecret(
    request: Smartschool_Identity_V1_RotateServiceAccountSecretRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_RotateServiceAccountSecretResponse {
    let p = try Principal.require()
    var v = Validator()
    v.check(request.userID.isEmpty != request.clientID.isEmpty, "user_id",
            "name the account by user_id or client_id (exactly one)")
    v.check(request.clientID.count <= 64, "client_id", "must have at most 64 characters")
    try v.throwIfInvalid()
    let user: User
    if request.clientID.isEmpty {
      user = try await resolveUser(id: request.userID, field: "user_id")
    } else {
      guard let creds = try await store.credentials(clientID: request.clientID) else {
        throw ServiceError.notFound("service account not found")
      }
      user = creds.user
    }
    guard user.kind == .serviceAccount else {
      throw ServiceError.invalid("user_id", "is not a service account")
    }
    try p.require(.usersWrite, at: userPath(user))
    // Whoever learns the secret acts with every role the account holds.
    for b in try await store.bindings(userID: user.id) {
      guard let role = Role(b.role), p.mayGrant(role, at: OrgPath(b.orgPath) ?? .root) else {
        throw ServiceError.permissionDenied("you may not grant every role the account holds")
      }
    }
    guard user.status != .deactivated else {
      throw ServiceError.failedPrecondition("the service account is deactivated")
    }
    let secret = Secrets.clientSecret()
    guard let clientID = try await store.setClientSecret(
      userID: user.id, hash: Secrets.digest(secret))
    else { throw ServiceError.invalid("user_id", "is not a service account") }
    let revoked = request.revokeTokens
      ? try await endSessions(of: user.id, except: nil, reason: "client secret rotated") : 0
    await audit("service_account.rotate_secret", actor: p.userID, target: user.id,
                orgID: user.orgID, orgPath: user.orgPath, detail: "revoked \(revoked) sessions")
    return .with {
      $0.user = user
      $0.clientID = clientID
      $0.clientSecret = secret
      $0.revokedSessions = Int32(revoked)
    }
  }

  func whoAmI(request: Smartschool_Identity_V1_WhoAmIRequest, context: ServerContext) async throws
    -> Smartschool_Identity_V1_WhoAmIResponse
  {
    let p = try Principal.require()
    // One read transaction: a bound unary read that every client makes.
    guard let (user, bindings) = try await store.userWithBindings(id: p.userID) else {
      throw ServiceError.notFound("your account no longer exists")
    }
    // Tokens of sessions a deactivation ended are refused before this; a token issued without
    // a session (before service-account tokens had one) is refused here.
    guard user.status != .deactivated else {
      throw ServiceError.unauthenticated("the account is deactivated")
    }
    return .with {
      $0.user = user
      $0.bindings = bindings
      $0.sessionID = p.sessionID
    }
  }

  // MARK: Audit and changes

  func listAuditEvents(
    request: Smartschool_Identity_V1_ListAuditEventsRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_ListAuditEventsResponse {
    let p = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    guard request.afterSequence >= 0 else {
      throw ServiceError.invalid("after_sequence", "must not be negative")
    }
    // Filters reach the store as query parameters; PostgreSQL refuses NUL in text.
    var v = Validator()
    v.text(request.actorID, "actor_id", required: false, maxLength: 64)
    v.text(request.action, "action", required: false, maxLength: 64)
    v.text(request.orgID, "org_id", required: false, maxLength: 64)
    try v.throwIfInvalid()
    let scopes = p.scopes(for: .auditRead)
    if scopes.isEmpty { throw ServiceError.permissionDenied("you may not read the audit log") }
    var under: OrgPath? = nil
    if !request.orgID.isEmpty {
      under = path(try await resolveOrg(id: request.orgID, code: "", field: "org_id"))
    }
    let (events, more) = try await store.auditEvents(
      after: request.afterSequence, actorID: request.actorID.isEmpty ? nil : request.actorID,
      action: request.action.isEmpty ? nil : request.action, under: under, scopes: scopes,
      limit: limit)
    return .with {
      $0.events = events
      $0.lastSequence = events.last?.sequence ?? request.afterSequence
      $0.moreAvailable = more
    }
  }

  func listChanges(request: Smartschool_Common_V1_ListChangesRequest, context: ServerContext)
    async throws -> Smartschool_Common_V1_ListChangesResponse
  {
    let p = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    guard request.afterSequence >= 0 else {
      throw ServiceError.invalid("after_sequence", "must not be negative")
    }
    let scopes = p.scopes(for: .changesRead)
    if scopes.isEmpty { throw ServiceError.permissionDenied("you may not read the change feed") }
    let (changes, more) = try await store.changes(
      after: request.afterSequence, limit: limit, scopes: scopes)
    return .with {
      $0.changes = changes
      $0.lastSequence = changes.last?.sequence ?? request.afterSequence
      $0.moreAvailable = more
    }
  }
}

/// Token claim names of user kinds.
enum KindNames {
  static func name(_ kind: Smartschool_Identity_V1_UserKind) -> String {
    switch kind {
    case .teacher: "teacher"
    case .student: "student"
    case .parent: "parent"
    case .staff: "staff"
    case .serviceAccount: "service_account"
    default: "unknown"
    }
  }
}

extension Smartschool_Identity_V1_ListGuardiansResponse {
  fileprivate func with(_ guardians: [User]) -> Self {
    var copy = self
    copy.guardians = guardians
    return copy
  }
}
