import ArgumentParser
import AssessmentService
import Foundation
import ServiceRuntime

/// assessment-service: academic evaluation (学业评价) of the SmartSchool suite.
@main
struct AssessmentServiceCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "assessment-service",
    abstract: "SmartSchool assessment: exams, score import, statistics, 综合素质评价.",
    discussion: """
      Serves smartschool.assessment.v1.AssessmentService on --port (default 50053) with
      health, reflection and Prometheus metrics on --metrics-port (default 9403). Verifies
      tokens with the keys identity publishes and follows identity's org tree, users and
      guardian links with a service account (role data_exchange at the province) given by
      --client-id and --client-secret.

      Example:
        assessment-service --data-dir ./data/assessment --identity-addr 127.0.0.1:50051 \\
          --client-id "$ID" --client-secret "$SECRET"

      \(HostOptions.environmentHelp(
        service: "assessment", extraFlags: ["identity-addr", "client-id", "client-secret"]))
      """,
    subcommands: [BackupCommand<AssessmentBackup>.self])

  /// What `assessment-service backup` copies: the store alone.
  enum AssessmentBackup: BackupTarget {
    static let service = "assessment"
    static let storeName = "assessment"
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
      service: "assessment", defaultPort: 50053, defaultMetricsPort: 9403)
    let env = EnvironmentReader(service: "assessment")
    let logger = ServiceLogging.makeLogger(service: "assessment", level: config.logLevel)
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
    let link = try IdentityLink(address: address, credentials: id.map { ($0, secret!) })
    defer { link.close() }
    do {
      let definition = try await buildAssessmentService(
        dataDirectory: config.dataDirectory, verifier: link.makeVerifier(), identity: link)
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
