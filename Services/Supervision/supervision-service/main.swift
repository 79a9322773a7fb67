import ArgumentParser
import Foundation
import ServiceRuntime
import SupervisionService

@main
struct SupervisionServiceCommand: ServiceCommand {
  static let service = "supervision"

  static let configuration = CommandConfiguration(
    commandName: "supervision-service",
    abstract: "SmartSchool supervision service (智慧学校应用建设监管平台, 督导).",
    discussion: HostOptions.environmentHelp(
      service: "supervision", extraFlags: IdentityLinkOptions.flags),
    subcommands: [BackupCommand<SupervisionBackup>.self])

  /// What `supervision-service backup` copies: the store alone.
  enum SupervisionBackup: BackupTarget {
    static let service = "supervision"
    static let storeName = "supervision"
    static let alsoCopy: [String] = []
  }

  @OptionGroup var host: HostOptions

  @OptionGroup var identity: IdentityLinkOptions

  func run() async throws {
    let config = try host.resolve(
      service: Self.service, defaultPort: 50054, defaultMetricsPort: 9404)
    let link = try identity.open(config: config)
    defer { link.close() }
    try await ServiceStartup.serve(config: config) { logger in
      try await buildSupervisionService(
        config: config, settings: SupervisionSettings(), verifier: link.makeVerifier(),
        identity: link, logger: logger)
    }
  }
}
