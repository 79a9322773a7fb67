import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel

/// The OpenID Connect provider's store on the same storage as `identity`'s.
func oidcStore(_ identity: any IdentityStore) throws -> any OIDCStore {
  if let postgres = identity as? PostgresIdentityStore {
    return PostgresOIDCStore(store: postgres.store)
  }
  if let sqlite = identity as? SQLiteIdentityStore { return SQLiteOIDCStore(store: sqlite.store) }
  throw ServiceError.internalError("identity's store is neither SQLite nor PostgreSQL")
}

/// The OIDC client RPCs: a client belongs to an org, and the admins whose scope covers that
/// org manage it. Admins are those who may grant roles: an app that signs users in is theirs
/// to register, not the data-exchange account's (which may write users but grants nothing).
extension IdentityAPI {
  private func clientAudit(
    _ action: String, _ p: Principal, _ client: OIDCClient, detail: String = ""
  ) async {
    do {
      try await store.audit(
        AuditEntry(
          actorID: p.userID, action: action, target: client.clientID, orgID: client.orgID,
          orgPath: client.orgPath, detail: detail))
    } catch {
      logger.error("audit write failed", metadata: ["action": "\(action)", "error": "\(error)"])
    }
  }

  /// The client named by `id`, once the caller may manage it: NOT_FOUND for an unknown
  /// client, PERMISSION_DENIED outside the caller's scope.
  private func managedClient(_ id: String, _ p: Principal, _ clients: any OIDCStore)
    async throws -> StoredOIDCClient
  {
    var v = Validator()
    v.check(!id.isEmpty, "client_id", "must not be empty")
    v.check(id.count <= 64, "client_id", "must have at most 64 characters")
    try v.throwIfInvalid()
    guard let stored = try await clients.client(id: id) else {
      throw ServiceError.notFound("OIDC client '\(id)' not found")
    }
    try p.require(.rolesGrant, at: OrgPath(stored.client.orgPath) ?? .root)
    return stored
  }

  func createOIDCClient(
    request: Smartschool_Identity_V1_CreateOIDCClientRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_CreateOIDCClientResponse {
    let p = try Principal.require()
    var client = request.client
    if client.scopes.isEmpty { client.scopes = OIDCClientRules.defaultScopes }
    var v = Validator()
    OIDCClientRules.validate(client, &v, prefix: "client.")
    v.check(
      request.orgID.isEmpty || request.orgCode.isEmpty, "org_id", "name the org by id or code")
    try v.throwIfInvalid()
    var orgPath = OrgPath.root
    client.orgID = ""
    if !request.orgID.isEmpty || !request.orgCode.isEmpty {
      let found = request.orgID.isEmpty
        ? try await store.org(code: request.orgCode) : try await store.org(id: request.orgID)
      guard let org = found else { throw ServiceError.notFound("org not found") }
      client.orgID = org.id
      orgPath = OrgPath(org.path) ?? .root
    }
    try p.require(.rolesGrant, at: orgPath)
    client.clientID = OIDCClientRules.makeClientID()
    let secret = client.publicClient ? "" : OIDCClientRules.makeSecret()
    let created = try await oidcStore(store).insertClient(
      client, secretHash: client.publicClient ? nil : Secrets.digest(secret))
    await clientAudit(
      "oidc_client.create", p, created,
      detail: "\(created.publicClient ? "public" : "confidential"); "
        + "scopes \(created.scopes.joined(separator: " "))")
    return .with {
      $0.client = created
      $0.clientSecret = secret
    }
  }

  func updateOIDCClient(
    request: Smartschool_Identity_V1_UpdateOIDCClientRequest, context: ServerContext
  ) async throws -> OIDCClient {
    let p = try Principal.require()
    let clients = try oidcStore(store)
    let editable = ["name", "redirect_uris", "post_logout_redirect_uris", "scopes", "services"]
    let paths = request.updateMask.paths
    if paths.isEmpty { throw ServiceError.invalid("update_mask", "name the fields to change") }
    if let bad = paths.first(where: { !editable.contains($0) }) {
      throw ServiceError.invalid("update_mask", "field '\(bad)' cannot be updated")
    }
    let current = try await managedClient(request.client.clientID, p, clients).client
    var next = current
    if paths.contains("name") { next.name = request.client.name }
    if paths.contains("redirect_uris") { next.redirectUris = request.client.redirectUris }
    if paths.contains("post_logout_redirect_uris") {
      next.postLogoutRedirectUris = request.client.postLogoutRedirectUris
    }
    if paths.contains("scopes") { next.scopes = request.client.scopes }
    if paths.contains("services") { next.services = request.client.services }
    var v = Validator()
    OIDCClientRules.validate(next, &v, prefix: "client.")
    try v.throwIfInvalid()
    guard !current.disabled, let updated = try await clients.updateClient(next) else {
      throw ServiceError.failedPrecondition("the OIDC client is disabled")
    }
    await clientAudit(
      "oidc_client.update", p, updated, detail: paths.sorted().joined(separator: ","))
    return updated
  }

  func listOIDCClients(
    request: Smartschool_Identity_V1_ListOIDCClientsRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_ListOIDCClientsResponse {
    let p = try Principal.require()
    let limit = try PageSize.resolve(request.pageSize)
    let query = "oidc-clients|\(request.includeDisabled)"
    let after = try PageToken.decode(request.pageToken, query: query)?.after.first
    let scopes = p.scopes(for: .rolesGrant)
    if scopes.isEmpty { throw ServiceError.permissionDenied("you may not manage OIDC clients") }
    let page = try await oidcStore(store).clients(
      after: after, limit: limit + 1, scopes: scopes, includeDisabled: request.includeDisabled)
    return .with {
      $0.clients = Array(page.prefix(limit))
      if page.count > limit, let last = page.prefix(limit).last {
        $0.nextPageToken = PageToken(after: [last.clientID]).encode(query: query)
      }
    }
  }

  func disableOIDCClient(
    request: Smartschool_Identity_V1_DisableOIDCClientRequest, context: ServerContext
  ) async throws -> OIDCClient {
    let p = try Principal.require()
    let clients = try oidcStore(store)
    let current = try await managedClient(request.clientID, p, clients).client
    guard let disabled = try await clients.disableClient(id: current.clientID) else {
      throw ServiceError.notFound("OIDC client '\(current.clientID)' not found")
    }
    if !current.disabled { await clientAudit("oidc_client.disable", p, disabled) }
    // Its tokens stop working too, at every service.
    _ = try await endGrants(ofClient: disabled.clientID)
    return disabled
  }

  func rotateOIDCClientSecret(
    request: Smartschool_Identity_V1_RotateOIDCClientSecretRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_RotateOIDCClientSecretResponse {
    let p = try Principal.require()
    let clients = try oidcStore(store)
    let current = try await managedClient(request.clientID, p, clients).client
    guard !current.publicClient else {
      throw ServiceError.failedPrecondition("a public client has no secret")
    }
    let secret = OIDCClientRules.makeSecret()
    guard
      let rotated = try await clients.setClientSecret(
        id: current.clientID, hash: Secrets.digest(secret))
    else { throw ServiceError.failedPrecondition("the OIDC client is disabled") }
    await clientAudit("oidc_client.rotate_secret", p, rotated)
    return .with {
      $0.client = rotated
      $0.clientSecret = secret
    }
  }
}
