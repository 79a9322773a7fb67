import Foundation
import Logging
import ServiceRuntime
import SmartSchoolModel
import Synchronization

/// The fully qualified gRPC service name.
public let identityGRPCServiceName = "smartschool.identity.v1.IdentityService"

/// Identity's composition root: opens the store, loads (or creates) the signing keys,
/// bootstraps the `admin` account on an empty store, and returns the service ready for a
/// ``ServiceHost``. The executable and the tests call this same function.
public func buildIdentityService(
  config: HostConfig, settings: IdentitySettings, logger: Logger
) async throws -> ServiceDefinition {
  let store: any ServiceStorage
  let identityStore: any IdentityStore
  if let database = config.database {
    let postgres = try await PostgresStore(
      settings: database, migrations: IdentityMigrations.postgres, logger: logger)
    store = postgres
    identityStore = try await PostgresIdentityStore(
      store: postgres, accountCacheEntries: settings.accountCacheEntries)
  } else {
    let sqlite = try Store(
      directory: config.dataDirectory, name: "identity", migrations: IdentityMigrations.register)
    store = sqlite
    identityStore = try SQLiteIdentityStore(
      store: sqlite, accountCacheEntries: settings.accountCacheEntries)
  }
  guard settings.accessTokenTTL > 0, settings.accessTokenTTL < TokenVerifier.revocationMemory else {
    // Other services forget a revoked session after revocationMemory; a token must not
    // outlive that.
    throw ServiceError.invalid("access-token-ttl", "must be between 1 second and 24 hours")
  }
  let keys = try await KeyRing.load(
    store: identityStore, storage: store, accessTokenTTL: settings.accessTokenTTL,
    onChange: settings.onSigningKeyChange)
  // No leeway: identity checks the tokens it signed by its own clock, so a token dies here
  // exactly when its session ends (Refresh, WhoAmI and Introspect agree to the second).
  // A token naming a key this replica has not seen yet (another replica rotated) rereads the
  // keys from the store before it is refused.
  let shared = store.backend == .postgresql
  let verifier = TokenVerifier(
    keySource: {
      if shared { try await keys.reload() }
      return keys.publishedKeys
    }, leeway: 0)
  try await verifier.refresh()
  verifier.revokeSessions(
    try await identityStore.revokedSessions(
      since: Date().addingTimeInterval(-TokenVerifier.revocationMemory)))
  try await store.exclusively("identity.bootstrap") {
    try await bootstrapAdmin(store: identityStore, settings: settings, logger: logger)
  }
  let api = IdentityAPI(
    store: identityStore, keys: keys, verifier: verifier, settings: settings,
    hashes: HashLimiter(limit: settings.maxConcurrentHashes),
    throttle: LoginThrottle(
      perAccount: settings.loginAttemptsPerAccount, perAddress: settings.loginAttemptsPerAddress,
      hashesPerAddress: settings.loginHashesPerAddress
        ?? max(1, settings.maxConcurrentHashes / 2),
      guessesPerAddress: settings.deviceCodeGuessesPerAddress),
    logger: logger)
  return ServiceDefinition(
    name: "identity", grpcServiceName: identityGRPCServiceName, services: [api],
    openMethods: IdentityAPI.openMethods, verifier: verifier, store: store,
    background: (shared
      ? [replicaFollower(store: identityStore, keys: keys, verifier: verifier, logger: logger)]
      : [])
      + (try openIDServices(config: config, settings: settings, api: api, keys: keys,
                            logger: logger)))
}

/// With several replicas on one database: what another replica wrote that this one keeps in
/// memory. Every second it adopts a rotated signing key and refuses the sessions revoked
/// since the last round (by time, with a margin for commits that took their time and for
/// clock differences between replicas; revoking twice is harmless). The account cache needs
/// nothing here: the store's table versions follow other replicas' writes.
func replicaFollower(
  store: any IdentityStore, keys: KeyRing, verifier: TokenVerifier, logger: Logger
) -> Periodic {
  let since = Mutex(Date())
  return Periodic("replica follower", every: .seconds(1), logger: logger) {
    let now = Date()
    let from = since.withLock { $0 }.addingTimeInterval(-30)
    verifier.revokeSessions(try await store.revokedSessions(since: from))
    since.withLock { $0 = now }
    if try await keys.reload() { try await verifier.refresh() }
  }
}

/// On first start with an empty store, creates the system admin `admin` with the configured
/// password. Without a password the store stays empty and the service refuses to start, since
/// nobody could ever log in.
func bootstrapAdmin(store: any IdentityStore, settings: IdentitySettings, logger: Logger)
  async throws
{
  guard try await store.isEmpty() else { return }
  guard let password = settings.adminPassword, !password.isEmpty else {
    throw ServiceError.failedPrecondition(
      "empty store: give the bootstrap admin password with --admin-password-file or SMARTSCHOOL_ADMIN_PASSWORD")
  }
  // The operator chose it for the well-known name 'admin', so the username rule is left out.
  try settings.passwordPolicy.check(password, username: nil, field: "admin password")
  var admin = Smartschool_Identity_V1_User()
  admin.externalID = "admin"
  admin.username = "admin"
  admin.displayName = "System administrator"
  admin.kind = .staff
  let user = try await store.insertUser(
    admin, org: nil, passwordHash: try Passwords.hash(password, parameters: settings.scrypt),
    mustChangePassword: false, clientID: nil, clientSecretHash: nil)
  _ = try await store.insertBinding(userID: user.id, role: .systemAdmin, org: nil, grantedBy: "bootstrap")
  try await store.audit(AuditEntry(actorID: "bootstrap", action: "user.create", target: user.id,
                                   detail: "bootstrap system admin"))
  logger.notice("created bootstrap system admin 'admin'")
}
