import ArgumentParser
import AssessmentService
import Foundation
import ServiceRuntime

/// assessment-service: academic evaluation (学业评价) of the SmartSchool suite.
@main
struct AssessmentServiceCommand: ServiceCommand {
  static let service = "assessment"

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
        service: "assessment", extraFlags: IdentityLinkOptions.flags))
      """,
    subcommands: [BackupCommand<AssessmentBackup>.self])

  /// What `assessment-service backup` copies: the store alone.
  enum AssessmentBackup: BackupTarget {
    static let service = "assessment"
    static let storeName = "assessment"
    static let alsoCopy: [String] = []
  }

  @OptionGroup var host: HostOptions

  @OptionGroup var identity: IdentityLinkOptions

  func run() async throws {
    let config = try host.resolve(
      service: Self.service, defaultPort: 50053, defaultMetricsPort: 9403)
    let link = try identity.open(config: config)
    defer { link.close() }
    try await ServiceStartup.serve(config: config) { logger in
      try await buildAssessmentService(
        config: config, settings: AssessmentSettings(), verifier: link.makeVerifier(),
        identity: link, logger: logger)
    }
  }
}
