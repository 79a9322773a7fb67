import ArgumentParser
import CatalogueService
import Foundation
import ServiceRuntime

/// catalogue-service: the resource catalogue (统一资源管理) of the SmartSchool suite.
@main
struct CatalogueServiceCommand: ServiceCommand {
  static let service = "catalogue"

  static let configuration = CommandConfiguration(
    commandName: "catalogue-service",
    abstract: "SmartSchool catalogue: resources, review, Chinese search, content, coverage.",
    discussion: """
      Serves smartschool.catalogue.v1.CatalogueService on --port (default 50052) with health,
      reflection and Prometheus metrics on --metrics-port (default 9402). Verifies tokens with
      the keys identity publishes and follows identity's org tree with a service account
      (role data_exchange at the province) given by --client-id and --client-secret.
      Content blobs live under <data-dir>/blobs/, or with --database-url in the PostgreSQL
      database (tables content_*), where every replica reads them.

      Example:
        catalogue-service --data-dir ./data/catalogue --identity-addr 127.0.0.1:50051 \\
          --client-id "$ID" --client-secret "$SECRET"

      \(HostOptions.environmentHelp(
        service: "catalogue",
        extraFlags: IdentityLinkOptions.flags + ["max-upload-bytes"]))
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

  @OptionGroup var identity: IdentityLinkOptions

  @Option(help: "Largest content upload accepted, in bytes. [default: 536870912]")
  var maxUploadBytes: Int?

  func run() async throws {
    let config = try host.resolve(
      service: Self.service, defaultPort: 50052, defaultMetricsPort: 9402)
    var settings = CatalogueSettings()
    if let limit = try maxUploadBytes ?? EnvironmentReader(service: Self.service)
      .int("max-upload-bytes")
    {
      guard limit > 0 else { throw ValidationError("--max-upload-bytes must be positive") }
      settings.maxUploadBytes = Int64(limit)
    }
    let link = try identity.open(config: config)
    defer { link.close() }
    try await ServiceStartup.serve(config: config) { logger in
      try await buildCatalogueService(
        config: config, settings: settings, verifier: link.makeVerifier(), identity: link,
        logger: logger)
    }
  }
}
