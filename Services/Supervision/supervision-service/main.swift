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
      service: "supervision", extraFlags: IdentityLinkOptions.flags + SupervisionOptions.flags),
    subcommands: [BackupCommand<SupervisionBackup>.self])

  /// What `supervision-service backup` copies: the store alone.
  enum SupervisionBackup: BackupTarget {
    static let service = "supervision"
    static let storeName = "supervision"
    static let alsoCopy: [String] = []
  }

  @OptionGroup var host: HostOptions

  @OptionGroup var identity: IdentityLinkOptions

  @OptionGroup var supervision: SupervisionOptions

  func run() async throws {
    let config = try host.resolve(
      service: Self.service, defaultPort: 50054, defaultMetricsPort: 9404)
    let link = try identity.open(config: config)
    defer { link.close() }
    try await ServiceStartup.serve(config: config) { logger in
      try await buildSupervisionService(
        config: config, settings: try supervision.resolve(config: config),
        verifier: link.makeVerifier(),
        identity: link, logger: logger)
    }
  }
}

/// The supervision service's own flags.
struct SupervisionOptions: ParsableArguments {
  @Option(
    help: """
      What a lesson import does with a row whose teacher is not an active teacher identity \
      knows: hold (store it as unverified, listed but counted in no report) or reject it \
      (default: hold).
      """)
  var unknownTeacherLessons: String?

  @Option(
    help: """
      Early warning's default N: a classroom or school below standard N teaching weeks \
      running is warned of (1-20; default: 3).
      """)
  var warningWeeks: Int?

  static var flags: [String] { ["unknown-teacher-lessons", "warning-weeks"] }

  /// Flags, then environment, then defaults.
  func resolve(config: HostConfig) throws -> SupervisionSettings {
    let env = EnvironmentReader(service: config.service)
    var settings = SupervisionSettings()
    let policy = unknownTeacherLessons ?? env["unknown-teacher-lessons"] ?? "hold"
    guard let value = UnknownTeacherLessons(rawValue: policy) else {
      throw ValidationError("--unknown-teacher-lessons must be hold or reject")
    }
    settings.unknownTeacherLessons = value
    let weeks = try warningWeeks ?? env.int("warning-weeks") ?? Warnings.defaultWeeks
    guard (1...20).contains(weeks) else {
      throw ValidationError("--warning-weeks must be 1-20")
    }
    settings.warningWeeks = weeks
    return settings
  }
}
