import Foundation
import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore
import ServiceLifecycle
import ServiceRuntime
import Synchronization

/// Identity's HTTP port, where it speaks OpenID Connect (off unless a port is given).
public struct IdentityHTTPSettings: Sendable {
  /// HTTP port; 0 picks a free port (logged like the gRPC port); `nil` = no HTTP server.
  public var port: Int?
  /// The public issuer URL (a deployment behind a proxy); `nil` = `http(s)://<host>:<port>`.
  public var issuerURL: String?
  /// How long an authorization code may wait for its redemption (tests shorten it).
  public var codeTTL: TimeInterval = 60
  /// How long a device authorization (RFC 8628) waits for its user (tests shorten it).
  public var deviceCodeTTL: TimeInterval = 600
  /// The least number of seconds between a device's polls, to begin with.
  public var deviceInterval = 5

  public init() {}
}

/// Identity's HTTP server (Hummingbird), a lifecycle service beside gRPC in one service
/// group: it starts with the host and drains on SIGTERM as gRPC does. TLS uses the gRPC
/// port's certificate and key; client certificates are not asked for, since browsers sign in
/// here.
public final class IdentityHTTPServer: Service, Sendable {
  private struct Listening {
    var port: Int?
    var stopped = false
    var waiters: [CheckedContinuation<Int?, Never>] = []
  }
  private let listening = Mutex(Listening())
  private let configuredIssuer: String?
  private let host: String
  private let tls: Bool
  private let logger: Logger
  private let application: @Sendable (IdentityHTTPServer) throws -> any ApplicationProtocol

  /// The RS256 keys of ID tokens.
  let keys: OIDCKeys

  init(
    config: HostConfig, settings: IdentityHTTPSettings, keys: OIDCKeys, logger: Logger,
    routes: @escaping @Sendable (Router<OIDCRequestContext>, IdentityHTTPServer) -> Void
  ) throws {
    guard let port = settings.port, (0...65535).contains(port) else {
      throw ServiceError.invalid("http-port", "must be 0-65535")
    }
    if let issuer = settings.issuerURL {
      // The issuer is compared byte for byte by clients: https (or http for a test on
      // loopback), no query or fragment, no trailing slash.
      guard let url = URL(string: issuer), let scheme = url.scheme, url.host != nil,
        scheme == "https" || scheme == "http", url.query == nil, url.fragment == nil,
        !issuer.hasSuffix("/")
      else {
        throw ServiceError.invalid(
          "issuer-url", "must be an http(s) URL without query, fragment or trailing slash")
      }
    }
    self.keys = keys
    self.configuredIssuer = settings.issuerURL
    self.host = config.host
    self.tls = config.tls != nil
    self.logger = logger
    let tlsFiles = config.tls
    let address = BindAddress.hostname(config.host, port: port)
    self.application = { server in
      let router = Router(context: OIDCRequestContext.self)
      routes(router, server)
      var quiet = logger
      quiet.logLevel = max(logger.logLevel, .warning)
      let configuration = ApplicationConfiguration(address: address, serverName: nil)
      let onRunning: @Sendable (any Channel) async -> Void = { channel in
        server.running(port: channel.localAddress?.port)
      }
      guard let tlsFiles else {
        return Application(
          router: router, server: .http1(), configuration: configuration,
          onServerRunning: onRunning, logger: quiet)
      }
      let tlsConfig = TLSConfiguration.makeServerConfiguration(
        certificateChain: try NIOSSLCertificate.fromPEMFile(tlsFiles.certificate).map {
          .certificate($0)
        },
        privateKey: .privateKey(try NIOSSLPrivateKey(file: tlsFiles.key, format: .pem)))
      return Application(
        router: router, server: try .tls(.http1(), tlsConfiguration: tlsConfig),
        configuration: configuration, onServerRunning: onRunning, logger: quiet)
    }
  }

  private func running(port bound: Int?) {
    guard let bound else { return }
    settle(bound)
    logger.notice(
      "listening", metadata: ["http_port": "\(bound)", "issuer": "\(issuer ?? "")", "tls": "\(tls)"])
  }

  /// Serves until the graceful shutdown.
  public func run() async throws {
    defer { settle(nil) }
    try await application(self).run()
  }

  /// Records the bound port (or that the server stopped) and wakes who waits for it.
  private func settle(_ bound: Int?) {
    let waiters = listening.withLock { state -> [CheckedContinuation<Int?, Never>] in
      if let bound { state.port = bound } else { state.stopped = true }
      defer { state.waiters = [] }
      return state.waiters
    }
    for waiter in waiters { waiter.resume(returning: bound) }
  }

  /// The bound HTTP port, once listening.
  public func boundPort() async throws -> Int {
    let port = await withCheckedContinuation { continuation in
      let now = listening.withLock { state -> Int?? in
        if let port = state.port { return .some(port) }
        if state.stopped { return .some(nil) }
        state.waiters.append(continuation)
        return .none
      }
      if let now { continuation.resume(returning: now) }
    }
    guard let port else { throw ServiceError.unavailable("the HTTP server is not listening") }
    return port
  }

  /// The issuer: the configured public URL, or this server's own address once bound.
  public var issuer: String? {
    if let configuredIssuer { return configuredIssuer }
    guard let port = listening.withLock({ $0.port }) else { return nil }
    let name = host == "0.0.0.0" || host == "::" ? ProcessInfo.processInfo.hostName : host
    let shown = name.contains(":") ? "[\(name)]" : name
    return "\(tls ? "https" : "http")://\(shown):\(port)"
  }
}

extension ServiceDefinition {
  /// Identity's HTTP server among the background services, when one is configured.
  public var identityHTTPServer: IdentityHTTPServer? {
    background.lazy.compactMap { $0 as? IdentityHTTPServer }.first
  }
}

/// Identity's HTTP server when `--http-port` is set (none otherwise), with its routes: the
/// OpenID Connect provider in front of `api` (whose Login checks the passwords).
func openIDServices(
  config: HostConfig, settings: IdentitySettings, api: IdentityAPI, keys: KeyRing,
  logger: Logger
) throws -> [any Service] {
  guard settings.http.port != nil else { return [] }
  let store = try oidcStore(api.store)
  let oidcKeys = OIDCKeys(store: store, keys: keys, shared: api.store is PostgresIdentityStore)
  // Behind a proxy that terminates TLS the port itself speaks plain HTTP, but browsers reach
  // the https issuer URL: its cookies must be Secure all the same.
  let tls = config.tls != nil || settings.http.issuerURL?.hasPrefix("https://") == true
  return [
    try IdentityHTTPServer(
      config: config, settings: settings.http, keys: oidcKeys, logger: logger
    ) { router, server in
      router.get("/.well-known/jwks.json") { _, _ in
        try await jsonResponse(oidcKeys.jwks(), cache: "public, max-age=300")
      }
      OIDCProvider(
        api: api, clients: store, keys: oidcKeys, server: server, settings: settings.http,
        tls: tls
      ).register(router)
    }
  ]
}

/// A JSON response; `cache` is its Cache-Control (`no-store` for anything secret).
func jsonResponse(_ body: Data, status: HTTPResponse.Status = .ok, cache: String = "no-store")
  -> Response
{
  var headers = HTTPFields()
  headers[.contentType] = "application/json"
  headers[.cacheControl] = cache
  return Response(
    status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
}
