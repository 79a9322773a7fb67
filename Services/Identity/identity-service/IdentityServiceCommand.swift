import ArgumentParser
import Foundation
import IdentityService
import ServiceRuntime
import SmartSchoolModel

/// identity-service: unified authentication (统一身份认证) for the SmartSchool suite.
@main
struct IdentityServiceCommand: ServiceCommand {
  static let service = "identity"

  static let configuration = CommandConfiguration(
    commandName: "identity-service",
    abstract: "SmartSchool identity: org tree, users, roles, one login for every service.",
    discussion: """
      Serves smartschool.identity.v1.IdentityService on --port (default 50051) with health,
      reflection and Prometheus metrics on --metrics-port (default 9401).

      On first start with an empty store it creates the system admin 'admin' with the password
      read from --admin-password-file or SMARTSCHOOL_ADMIN_PASSWORD.

      Example:
        SMARTSCHOOL_ADMIN_PASSWORD='change-me-42' identity-service --data-dir ./data/identity

      \(HostOptions.environmentHelp(
        service: "identity",
        extraFlags: [
          "admin-password-file", "access-token-ttl", "refresh-token-ttl", "scrypt-log-n",
          "max-concurrent-hashes", "lockout-threshold", "lockout-seconds",
          "account-cache-entries", "login-attempts-per-account", "login-attempts-per-address",
          "login-hashes-per-address", "trusted-proxies", "min-password-length", "http-port",
          "issuer-url", "require-totp-for",
        ]))
        (the bootstrap password may also come from SMARTSCHOOL_ADMIN_PASSWORD)
      """,
    subcommands: [BackupCommand<IdentityBackup>.self])

  /// What `identity-service backup` copies: the store alone.
  enum IdentityBackup: BackupTarget {
    static let service = "identity"
    static let storeName = "identity"
    static let alsoCopy: [String] = []
  }

  @OptionGroup var host: HostOptions

  @Option(help: "File holding the bootstrap admin's password (first start only).")
  var adminPasswordFile: String?

  @Option(help: "Access-token lifetime in seconds. [default: 900]")
  var accessTokenTtl: Int?

  @Option(help: "Refresh-token (session) lifetime in seconds. [default: 2592000]")
  var refreshTokenTtl: Int?

  @Option(help: "scrypt cost as log2(N) for new password hashes (r=8, p=1). [default: 17]")
  var scryptLogN: Int?

  @Option(help: "Password hashes computed at once; excess logins get RESOURCE_EXHAUSTED. [default: cores, at least 2]")
  var maxConcurrentHashes: Int?

  @Option(help: "Failed logins in a row that lock an account. [default: 5]")
  var lockoutThreshold: Int?

  @Option(help: "Seconds an account stays locked. [default: 900]")
  var lockoutSeconds: Int?

  @Option(
    help: "Accounts kept in memory for WhoAmI and Introspect; 0 turns this off. [default: 8192]")
  var accountCacheEntries: Int?

  @Option(
    help: """
      Login attempts a minute for one username, refused before any hashing; 0 turns this off. \
      [default: 10]
      """)
  var loginAttemptsPerAccount: Int?

  @Option(
    help: "Login attempts a minute from one client address; 0 turns this off. [default: 300]")
  var loginAttemptsPerAddress: Int?

  @Option(
    help: """
      Password checks one client address may have running at once; 0 turns this off. \
      [default: half of --max-concurrent-hashes, at least 1]
      """)
  var loginHashesPerAddress: Int?

  @Option(
    help: """
      Comma-separated proxy addresses or CIDR ranges whose x-forwarded-for header names the \
      client address for login limits; other peers' headers are ignored. [default: none]
      """)
  var trustedProxies: String?

  @Option(help: "Fewest characters a new password may have (8-128). [default: 8]")
  var minPasswordLength: Int?

  @Option(
    help: """
      Port of the OpenID Connect HTTP server (TLS with --tls-cert/--tls-key); 0 picks a free \
      port (logged). [default: off]
      """)
  var httpPort: Int?

  @Option(
    help: """
      Public issuer URL of the OpenID Connect provider, for a deployment behind a proxy. \
      [default: http(s)://<host>:<http port>]
      """)
  var issuerUrl: String?

  @Option(
    help: """
      Seconds an OpenID Connect authorization code waits for its app to redeem it (1-600). \
      [default: 60]
      """)
  var authorizationCodeTtl: Int?

  @Option(
    help: """
      Roles that must log in with TOTP (two-factor), comma-separated ROLE or ROLE@LEVEL (held \
      at that level or above: province, city, county, school, class), e.g. \
      system_admin,province_admin,city_admin,county_admin. A covered user without TOTP \
      enrols at their next login. [default: none]
      """)
  var requireTotpFor: String?

  func run() async throws {
    let config = try host.resolve(
      service: Self.service, defaultPort: 50051, defaultMetricsPort: 9401)
    let env = EnvironmentReader(service: Self.service)
    var settings = IdentitySettings()
    if let ttl = try accessTokenTtl ?? env.int("access-token-ttl") { settings.accessTokenTTL = TimeInterval(ttl) }
    if let ttl = try refreshTokenTtl ?? env.int("refresh-token-ttl") { settings.refreshTokenTTL = TimeInterval(ttl) }
    if let n = try scryptLogN ?? env.int("scrypt-log-n") {
      guard (10...20).contains(n) else { throw ValidationError("--scrypt-log-n must be 10-20") }
      settings.scrypt = ScryptParameters(logN: n, r: 8, p: 1)
    }
    if let n = try maxConcurrentHashes ?? env.int("max-concurrent-hashes") { settings.maxConcurrentHashes = n }
    if let n = try lockoutThreshold ?? env.int("lockout-threshold") { settings.lockoutThreshold = n }
    if let n = try lockoutSeconds ?? env.int("lockout-seconds") { settings.lockoutDuration = TimeInterval(n) }
    if let n = try accountCacheEntries ?? env.int("account-cache-entries") {
      guard n >= 0 else { throw ValidationError("--account-cache-entries must not be negative") }
      settings.accountCacheEntries = n
    }
    if let n = try loginAttemptsPerAccount ?? env.int("login-attempts-per-account") {
      guard n >= 0 else {
        throw ValidationError("--login-attempts-per-account must not be negative")
      }
      settings.loginAttemptsPerAccount = n
    }
    if let n = try loginAttemptsPerAddress ?? env.int("login-attempts-per-address") {
      guard n >= 0 else {
        throw ValidationError("--login-attempts-per-address must not be negative")
      }
      settings.loginAttemptsPerAddress = n
    }
    if let n = try loginHashesPerAddress ?? env.int("login-hashes-per-address") {
      guard n >= 0 else {
        throw ValidationError("--login-hashes-per-address must not be negative")
      }
      settings.loginHashesPerAddress = n
    }
    if let list = trustedProxies ?? env["trusted-proxies"] {
      do {
        settings.trustedProxies = try IPRange.list(list)
      } catch {
        throw ValidationError("--trusted-proxies: \(error.message)")
      }
    }
    if let n = try minPasswordLength ?? env.int("min-password-length") {
      guard (8...PasswordPolicy.maxLength).contains(n) else {
        throw ValidationError("--min-password-length must be 8-\(PasswordPolicy.maxLength)")
      }
      settings.passwordPolicy.minLength = n
    }
    if let port = try httpPort ?? env.int("http-port") {
      guard (0...65535).contains(port) else { throw ValidationError("--http-port must be 0-65535") }
      settings.http.port = port
    }
    settings.http.issuerURL = issuerUrl ?? env["issuer-url"]
    if settings.http.issuerURL != nil, settings.http.port == nil {
      throw ValidationError("--issuer-url needs --http-port")
    }
    if let ttl = try authorizationCodeTtl ?? env.int("authorization-code-ttl") {
      guard (1...600).contains(ttl) else {
        throw ValidationError("--authorization-code-ttl must be 1-600 seconds")
      }
      settings.http.codeTTL = TimeInterval(ttl)
    }
    if let list = requireTotpFor ?? env["require-totp-for"] {
      do {
        settings.twoFactor.policy = try TOTPPolicy(list)
      } catch {
        throw ValidationError("--require-totp-for: \(error.message)")
      }
    }
    if let file = adminPasswordFile ?? env["admin-password-file"] {
      guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
        throw ValidationError("--admin-password-file: cannot read \(file)")
      }
      settings.adminPassword = text.trimmingWhitespace()
    } else {
      settings.adminPassword = ProcessInfo.processInfo.environment["SMARTSCHOOL_ADMIN_PASSWORD"]
    }
    let keyCreated = TimestampGauge(
      metricName: "signing_key_created",
      helpText: "Creation time of the current token-signing key (rotate with RotateSigningKey)")
    settings.onSigningKeyChange = { keyCreated.set($0) }
    try await ServiceStartup.serve(config: config) { logger in
      try await buildIdentityService(config: config, settings: settings, logger: logger)
    } prepare: { server in
      keyCreated.attach(to: server.metrics, service: Self.service)
    }
  }
}
