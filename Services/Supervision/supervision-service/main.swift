import ArgumentParser
import Foundation
import ServiceRuntime
import SupervisionService

@main
struct SupervisionServiceCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "supervision-service",
    abstract: "SmartSchool supervision service (智慧学校应用建设监管平台, 督导).",
    discussion: HostOptions.environmentHelp(
      service: "supervision", extraFlags: ["identity-addr", "client-id", "client-secret"]),
    subcommands: [BackupCommand<SupervisionBackup>.self])

  /// What `supervision-service backup` copies: the store alone.
  enum SupervisionBackup: BackupTarget {
    static let service = "supervision"
    static let storeName = "supervision"
    static let alsoCopy: [String] = []
  }

  @OptionGroup var host: HostOptions

  @Option(help: "Identity service address HOST:PORT. [default: 127.0.0.1:50051]")
  var identityAddr: String?

  @Option(help: "Client id of the service account that reads identity's change feed.")
  var clientId: String?

  @Option(help: "Client secret of that service account.")
  var clientSecret: String?

  func run() async throws {
    let config = try host.resolve(
      service: "supervision", defaultPort: 50054, defaultMetricsPort: 9404)
    let env = EnvironmentReader(service: "supervision")
    let logger = ServiceLogging.makeLogger(service: "supervision", level: config.logLevel)
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
    let link = try IdentityLink(
      address: address, credentials: id.map { ($0, secret!) })
    defer { link.close() }
    let definition = try await buildSupervisionService(
      dataDirectory: config.dataDirectory, verifier: link.makeVerifier(), identity: link)
    let host = try ServiceHost(config: config, definition: definition, logger: logger)
    try await host.run()
  }
}
