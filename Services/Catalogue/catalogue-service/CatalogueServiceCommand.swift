import ArgumentParser
import CatalogueService
import Foundation
import ServiceRuntime

/// catalogue-service: the resource catalogue (统一资源管理) of the SmartSchool suite.
@main
struct CatalogueServiceCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "catalogue-service",
    abstract: "SmartSchool catalogue: resources, review, Chinese search, content, coverage.",
    discussion: """
      Serves smartschool.catalogue.v1.CatalogueService on --port (default 50052) with health,
      reflection and Prometheus metrics on --metrics-port (default 9402). Verifies tokens with
      the keys identity publishes and follows identity's org tree with a service account
      (role data_exchange at the province) given by --client-id and --client-secret.
      Content blobs live under <data-dir>/blobs/.

      Example:
        catalogue-service --data-dir ./data/catalogue --identity-addr 127.0.0.1:50051 \\
          --client-id "$ID" --client-secret "$SECRET"

      \(HostOptions.environmentHelp(
        service: "catalogue",
        extraFlags: ["identity-addr", "client-id", "client-secret", "max-upload-bytes"]))
      """,
    subcommands: [BackupCommand<CatalogueBackup>.self])

  /// What `catalogue-service backup` copies: the store, then the content blobs (immutable and
  /// content-addressed, so every blob the snapshot refers to is already on disk).
  enum CatalogueBackup: BackupTarget {
    static let service = "catalogue"
    static let storeName = "catalogue"
    static let alsoCopy = ["blobs"]
  }

  @OptionGroup var host: HostOptions

  @Option(help: "Identity service address HOST:PORT. [default: 127.0.0.1:50051]")
  var identityAddr: String?

  @Option(help: "Client id of the service account that reads identity's change feed.")
  var clientId: String?

  @Option(help: "Client secret of that service account.")
  var clientSecret: String?

  @Option(help: "Largest content upload accepted, in bytes. [default: 536870912]")
  var maxUploadBytes: Int?

  func run() async throws {
    let config = try host.resolve(
      service: "catalogue", defaultPort: 50052, defaultMetricsPort: 9402)
    let env = EnvironmentReader(service: "catalogue")
    let logger = ServiceLogging.makeLogger(service: "catalogue", level: config.logLevel)
    let addressText = identityAddr ?? env["identity-addr"] ?? "127.0.0.1:50051"
    guard var address = PeerAddress(addressText) else {
      throw ValidationError("--identity-addr must be HOST:PORT, not '\(addressText)'")
    }
    address.caBundle = config.clientCA
    if config.tls?.clientCA != nil {
      // mTLS: present this service's own certificate when calling identity.
      address.clientCertificate = config.tls?.certificate
      address.clientKey = config.tls?.key
    }
    let id = clientId ?? env["client-id"]
    let secret = clientSecret ?? env["client-secret"]
    if (id == nil) != (secret == nil) {
      throw ValidationError("--client-id and --client-secret go together")
    }
    var settings = CatalogueSettings()
    if let limit = try maxUploadBytes ?? env.int("max-upload-bytes") {
      guard limit > 0 else { throw ValidationError("--max-upload-bytes must be positive") }
      settings.maxUploadBytes = Int64(limit)
    }
    let link = try IdentityLink(address: address, credentials: id.map { ($0, secret!) })
    defer { link.close() }
    do {
      let definition = try await buildCatalogueService(
        config: config, settings: settings, verifier: link.makeVerifier(), identity: link,
        logger: logger)
      let server = try ServiceHost(config: config, definition: definition, logger: logger)
      try await server.run()
    } catch let error as ServiceError {
      logger.critical("cannot start: \(error.message)")
      throw ExitCode(1)
    } catch let error as StoreOpenError {
      logger.critical("cannot start: \(error.description)")
      throw ExitCode(1)
    }
  }
}
