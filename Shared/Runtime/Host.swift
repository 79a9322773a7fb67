import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceLifecycle
import SmartSchoolModel
import Synchronization

/// What a service hands to the ``ServiceHost``: its gRPC service and how to guard it.
public struct ServiceDefinition: Sendable {
  /// Short name, e.g. "identity" (logs, metrics, env variables).
  public var name: String
  /// Fully qualified gRPC service name, e.g. "smartschool.identity.v1.IdentityService".
  public var grpcServiceName: String
  /// The generated-protocol implementations to serve.
  public var services: [any RegistrableRPCService]
  /// Fully qualified methods callable without a token.
  public var openMethods: Set<String>
  /// Verifies access tokens.
  public var verifier: TokenVerifier
  /// The service's store, for metrics (size, change-feed head).
  public var store: (any ServiceStorage)?
  /// Long-running companions (e.g. an org-tree sync), stopped with the host.
  public var background: [any Service]

  /// A definition of a service to host.
  public init(
    name: String, grpcServiceName: String, services: [any RegistrableRPCService],
    openMethods: Set<String> = [], verifier: TokenVerifier, store: (any ServiceStorage)?,
    background: [any Service] = []
  ) {
    self.name = name
    self.grpcServiceName = grpcServiceName
    self.services = services
    self.openMethods = openMethods
    self.verifier = verifier
    self.store = store
    self.background = background
  }
}

/// Serves one SmartSchool service the way every service is served: gRPC over HTTP/2
/// (plaintext, TLS or mTLS), health and reflection, authentication, one log line and metrics
/// per RPC, a Prometheus endpoint, and a graceful drain on SIGTERM/SIGINT.
public final class ServiceHost: Sendable {
  /// The resolved configuration.
  public let config: HostConfig
  /// The health service; NOT_SERVING until listening and again while draining.
  public let health: HealthService
  /// The metrics of this host.
  public let metrics: ServiceMetrics
  /// The logger.
  public let logger: Logger
  /// What it serves.
  public let definition: ServiceDefinition
  private let transport: HTTP2ServerTransport.Posix
  private let server: GRPCServer<MessageSizeLimitedTransport>
  private let metricsServer: MetricsHTTPServer?
  private let group = Mutex<ServiceGroup?>(nil)

  /// Builds the server (nothing listens until ``run(handleSignals:)``).
  public init(config: HostConfig, definition: ServiceDefinition, logger: Logger) throws {
    self.config = config
    self.definition = definition
    self.logger = logger
    let metrics = ServiceMetrics(service: definition.name)
    self.metrics = metrics
    let health = HealthService(services: [definition.grpcServiceName])
    self.health = health
    let index = try ReflectionIndex(
      services: [
        definition.grpcServiceName, "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
      ])

    var transportConfig = HTTP2ServerTransport.Posix.Config.defaults
    MessageSizeLimitedTransport.installGuards(on: &transportConfig, limit: config.maxMessageBytes)
    RequestHeaderLimit.installGuard(on: &transportConfig)
    transportConfig.http2.maxConcurrentStreams = config.maxConcurrentStreams
    self.transport = HTTP2ServerTransport.Posix(
      address: .ipv4(host: config.host, port: config.port),
      transportSecurity: ServiceHost.security(config.tls),
      config: transportConfig)
    self.server = GRPCServer(
      transport: MessageSizeLimitedTransport(transport, limit: config.maxMessageBytes),
      services: definition.services + [
        health, ReflectionServiceV1(index: index), ReflectionServiceV1Alpha(index: index),
      ],
      interceptors: [
        CallInterceptor(
          logger: logger, metrics: metrics,
          authenticator: Authenticator(
            verifier: definition.verifier, openMethods: definition.openMethods,
            audience: definition.name))
      ])
    if config.metricsPort >= 0 {
      self.metricsServer = MetricsHTTPServer(host: config.host, port: config.metricsPort) {
        metrics.render()
      }
    } else {
      self.metricsServer = nil
    }
  }

  private static func security(_ tls: HostConfig.TLSFiles?)
    -> HTTP2ServerTransport.Posix
    .TransportSecurity
  {
    guard let tls else { return .plaintext }
    let chain: [TLSConfig.CertificateSource] = [.file(path: tls.certificate, format: .pem)]
    let key: TLSConfig.PrivateKeySource = .file(path: tls.key, format: .pem)
    if let ca = tls.clientCA {
      return .mTLS(certificateChain: chain, privateKey: key) {
        $0.trustRoots = .certificates([.file(path: ca, format: .pem)])
        $0.clientCertificateVerification = .noHostnameVerification
      }
    }
    return .tls(certificateChain: chain, privateKey: key)
  }

  /// The bound gRPC port, once listening.
  public func boundPort() async throws -> Int {
    guard let ipv4 = try await transport.listeningAddress.ipv4 else {
      throw ServiceError.internalError("server is not listening on IPv4")
    }
    return ipv4.port
  }

  /// The bound metrics port, once listening (`nil` when disabled).
  public func boundMetricsPort() async -> Int? {
    await metricsServer?.boundPort()
  }

  /// Serves until a graceful shutdown: SIGTERM/SIGINT when `handleSignals`, or
  /// ``shutdown()``. In-flight RPCs get ``HostConfig/drainTimeout`` to finish.
  public func run(handleSignals: Bool = true) async throws {
    var services: [any Service] = [GRPCServerService(host: self)]
    if let metricsServer {
      services.append(metricsServer)
      if let store = definition.store {
        let metrics = self.metrics
        // Reading the gauges may take a database round trip, which a scrape must not wait on.
        services.append(
          Periodic("store gauges", every: .seconds(5), logger: logger) {
            await metrics.updateStore(store)
          })
      }
    }
    services += definition.background
    var groupConfig = ServiceGroupConfiguration(
      services: services.map { .init(service: $0) },
      gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [],
      logger: logger)
    groupConfig.maximumGracefulShutdownDuration = config.drainTimeout
    let group = ServiceGroup(configuration: groupConfig)
    self.group.withLock { $0 = group }
    try await group.run()
  }

  /// Starts a graceful shutdown (what SIGTERM does).
  public func shutdown() async {
    let group = self.group.withLock { $0 }
    await group?.triggerGracefulShutdown()
  }

  fileprivate func serve() async throws {
    try await withGracefulShutdownHandler {
      try await withThrowingDiscardingTaskGroup { tasks in
        tasks.addTask { try await self.server.serve() }
        let port = try await self.boundPort()
        let metricsPort = await self.boundMetricsPort()
        self.health.setAll(.serving)
        self.logger.notice(
          "listening",
          metadata: [
            "grpc_port": "\(port)", "metrics_port": "\(metricsPort.map(String.init) ?? "off")",
            "host": "\(self.config.host)", "tls": "\(self.config.tls != nil)",
            "data_dir": "\(self.config.dataDirectory)",
          ])
      }
    } onGracefulShutdown: {
      self.logger.notice("draining", metadata: ["timeout": "\(self.config.drainTimeout)"])
      self.health.setAll(.notServing)
      self.health.finishWatchers()
      self.server.beginGracefulShutdown()
    }
  }
}

/// Work repeated every `interval` for as long as the host runs (a lifecycle service that
/// stops at the graceful shutdown): refreshing gauges, following what other replicas wrote.
/// A failing round is logged and the next one runs on time.
public struct Periodic: Service {
  let name: String
  let interval: Duration
  let logger: Logger
  let body: @Sendable () async throws -> Void

  /// Runs `body` now and then every `interval`, logging failures as `name`.
  public init(
    _ name: String, every interval: Duration, logger: Logger,
    _ body: @escaping @Sendable () async throws -> Void
  ) {
    self.name = name
    self.interval = interval
    self.logger = logger
    self.body = body
  }

  /// Loops until cancelled or the graceful shutdown, then returns normally (a thrown
  /// cancellation would make the service group cancel the other services' drain).
  public func run() async {
    await cancelWhenGracefulShutdown {
      while !Task.isCancelled {
        do {
          try await body()
        } catch {
          if Task.isCancelled { return }
          logger.warning("\(name) failed", metadata: ["error": "\(error)"])
        }
        try? await Task.sleep(for: interval)
      }
    }
  }
}

private struct GRPCServerService: Service {
  let host: ServiceHost
  func run() async throws { try await host.serve() }
}
