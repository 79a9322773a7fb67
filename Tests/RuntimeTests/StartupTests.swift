import ArgumentParser
import Foundation
import ServiceRuntime
import TestSupport
import Testing

/// A command with the shared option groups, parsed as a service executable's would be.
private struct ProbeCommand: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "probe-service")
  @OptionGroup var host: HostOptions
  @OptionGroup var identity: IdentityLinkOptions
}

/// The long flags a `--help` screen lists (the lines that start with one), without `--help`.
private func helpFlags(_ help: String) -> [String] {
  help.split(separator: "\n").map { $0.drop(while: { $0 == " " }) }
    .filter { $0.hasPrefix("--") }
    .map { String($0.dropFirst(2).prefix(while: { $0 != " " })) }
    .filter { $0 != "help" }
}

@Suite("Service start-up: shared options and the one failure path")
struct StartupTests {
  @Test("the environment help lists every HostOptions and IdentityLinkOptions flag")
  func environmentHelpListsEveryFlag() {
    #expect(HostOptions.flags == helpFlags(HostOptions.helpMessage()))
    #expect(HostOptions.flags.contains("database-pool-size"))
    #expect(IdentityLinkOptions.flags == ["identity-addr", "client-id", "client-secret"])
    let help = HostOptions.environmentHelp(
      service: "probe", extraFlags: IdentityLinkOptions.flags)
    for flag in HostOptions.flags + IdentityLinkOptions.flags {
      let variable = EnvironmentReader.variable(service: "probe", flag: flag)
      #expect(help.contains("--\(flag)  ←  \(variable)"), "\(flag) missing from:\n\(help)")
    }
  }

  @Test("identity link: flags, then environment, then the default address")
  func identityLinkResolves() throws {
    let config = HostConfig.ephemeral(service: "probe", dataDirectory: "/nowhere")
    let defaults = try ProbeCommand.parse([]).identity.resolve(config: config, environment: [:])
    #expect(defaults.address.description == "127.0.0.1:50051")
    #expect(defaults.credentials == nil)

    let environment = [
      "SMARTSCHOOL_PROBE_IDENTITY_ADDR": "id.example:7000",
      "SMARTSCHOOL_PROBE_CLIENT_ID": "env-id", "SMARTSCHOOL_PROBE_CLIENT_SECRET": "env-secret",
    ]
    let fromEnvironment = try ProbeCommand.parse([]).identity.resolve(
      config: config, environment: environment)
    #expect(fromEnvironment.address.description == "id.example:7000")
    #expect(fromEnvironment.credentials?.clientID == "env-id")
    #expect(fromEnvironment.credentials?.clientSecret == "env-secret")

    let fromFlags = try ProbeCommand.parse([
      "--identity-addr", "10.0.0.9:50051", "--client-id", "flag-id", "--client-secret", "s",
    ]).identity.resolve(config: config, environment: environment)
    #expect(fromFlags.address.description == "10.0.0.9:50051")
    #expect(fromFlags.credentials?.clientID == "flag-id")
  }

  @Test("identity link: a bad address or half the credentials is a validation error")
  func identityLinkRefusesBadFlags() throws {
    let config = HostConfig.ephemeral(service: "probe", dataDirectory: "/nowhere")
    for (arguments, message) in [
      (["--identity-addr", "no-port"], "--identity-addr must be HOST:PORT[,HOST:PORT…]: 'no-port': 'no-port' is not HOST:PORT"),
      (["--client-id", "x"], "--client-id and --client-secret go together"),
      (["--client-secret", "x"], "--client-id and --client-secret go together"),
    ] {
      let options = try ProbeCommand.parse(arguments).identity
      let error = #expect(throws: ValidationError.self) {
        try options.resolve(config: config, environment: [:])
      }
      #expect(error?.message == message)
    }
  }

  @Test("identity link over mTLS presents the service's own certificate; plain TLS does not")
  func identityLinkTLS() throws {
    var config = HostConfig.ephemeral(service: "probe", dataDirectory: "/nowhere")
    config.clientCA = "/etc/ca.pem"
    config.tls = .init(certificate: "/etc/cert.pem", key: "/etc/key.pem", clientCA: "/etc/ca.pem")
    let options = try ProbeCommand.parse([]).identity
    let mutual = try options.resolve(config: config, environment: [:]).address
    #expect(mutual.caBundle == "/etc/ca.pem")
    #expect(mutual.clientCertificate == "/etc/cert.pem")
    #expect(mutual.clientKey == "/etc/key.pem")

    config.tls?.clientCA = nil
    let serverOnly = try options.resolve(config: config, environment: [:]).address
    #expect(serverOnly.caBundle == "/etc/ca.pem")
    #expect(serverOnly.clientCertificate == nil)
    #expect(serverOnly.clientKey == nil)
  }

  @Test("a failed start is one line naming the reason")
  func failureReasons() throws {
    let parseError = #expect(throws: (any Error).self) {
      try ProbeCommand.parseAsRoot(["--port", "abc"])
    }
    let parsed = try #require(parseError)
    #expect(
      ServiceStartup.reason(for: parsed, command: ProbeCommand.self)
        == "The value 'abc' is invalid for '--port <port>'")
    #expect(ProbeCommand.exitCode(for: parsed) == .validationFailure)

    #expect(
      ServiceStartup.reason(
        for: ValidationError("first line\n  second line\n"), command: ProbeCommand.self)
        == "first line second line")
    #expect(
      ServiceStartup.reason(
        for: ServiceError.failedPrecondition("probe does not run on PostgreSQL yet"),
        command: ProbeCommand.self) == "probe does not run on PostgreSQL yet")
    #expect(
      ServiceStartup.reason(
        for: StoreOpenError.newerSchema("store x was written by a newer release"),
        command: ProbeCommand.self) == "store x was written by a newer release")

    // A data directory under a regular file: the path and the system's reason, not a dump.
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let file = dir.path + "/file"
    #expect(FileManager.default.createFile(atPath: file, contents: Data()))
    let fileError = #expect(throws: (any Error).self) {
      try FileManager.default.createDirectory(
        atPath: file + "/data", withIntermediateDirectories: true)
    }
    #expect(
      ServiceStartup.reason(for: try #require(fileError), command: ProbeCommand.self)
        == "\(file)/data: Not a directory")
  }
}
