import ArgumentParser
import Foundation
import Logging
import SmartSchoolModel

/// The root command of a service executable: `@main struct … : ServiceCommand`.
///
/// Its `main` parses the command line and runs the command. Every failure before the service
/// stops — a flag ArgumentParser refuses, a value ``HostOptions`` or ``IdentityLinkOptions``
/// refuses, a store that cannot be opened, a ``ServiceError`` from the composition root —
/// ends in ``ServiceStartup/fail(_:error:)``: one critical log line on standard error and a
/// non-zero exit. `--help` prints as ArgumentParser prints it; a subcommand (`backup`) reports
/// its own failures the ArgumentParser way.
public protocol ServiceCommand: AsyncParsableCommand {
  /// The service's name: the logger's label and the environment variables' infix
  /// (`SMARTSCHOOL_<SERVICE>_…`), e.g. "catalogue".
  static var service: String { get }
}

extension ServiceCommand {
  /// Parses the command line and runs the command; failures go to ``ServiceStartup``.
  public static func main() async {
    var command: any ParsableCommand
    do {
      command = try parseAsRoot()
    } catch {
      // --help and the like print to standard output and exit 0; a subcommand's bad flags
      // get ArgumentParser's message with that subcommand's usage. (The root command takes
      // no positional arguments, so a word naming a subcommand is that subcommand.)
      let subcommands = configuration.subcommands.compactMap { $0.configuration.commandName }
      if exitCode(for: error) == .success
        || CommandLine.arguments.dropFirst().contains(where: subcommands.contains)
      {
        exit(withError: error)
      }
      ServiceStartup.fail(self, error: error)
    }
    do {
      if var asyncCommand = command as? any AsyncParsableCommand {
        try await asyncCommand.run()
      } else {
        try command.run()
      }
    } catch {
      guard command is Self else { exit(withError: error) }
      ServiceStartup.fail(self, error: error)
    }
  }
}

/// The start-up path every service executable shares: serving a built service, and the one
/// way a failed start is reported.
public enum ServiceStartup {
  /// Builds the service with the executable's logger (JSON lines off a terminal, at
  /// `config.logLevel`), hosts it, lets `prepare` attach to the host (e.g. extra metrics),
  /// and serves until SIGTERM. Errors are thrown to ``ServiceCommand``'s `main`.
  public static func serve(
    config: HostConfig, build: (Logger) async throws -> ServiceDefinition,
    prepare: (ServiceHost) -> Void = { _ in }
  ) async throws {
    let logger = ServiceLogging.makeLogger(service: config.service, level: config.logLevel)
    let definition = try await build(logger)
    let host = try ServiceHost(config: config, definition: definition, logger: logger)
    prepare(host)
    try await host.run()
  }

  /// The one-line reason `error` gives for a failed start: a ``ServiceError``'s message, a
  /// store's description, a flag's problem as ArgumentParser words it for `command` — line
  /// breaks folded into spaces.
  public static func reason(for error: any Error, command: any ParsableCommand.Type) -> String {
    let text: String
    switch error {
    case let error as ServiceError: text = error.message
    case let error as StoreOpenError: text = error.description
    case let error as CocoaError: text = fileProblem(error)
    default: text = command.message(for: error)
    }
    let parts = text.split(whereSeparator: \.isNewline)
      .map { $0.trimmingSpaces() }.filter { !$0.isEmpty }
    return parts.isEmpty ? String(describing: error) : parts.joined(separator: " ")
  }

  /// A Foundation file error as "<path>: <the system's reason>" (e.g. a data directory under
  /// a regular file: "Not a directory"), not NSError's dump of its user info.
  private static func fileProblem(_ error: CocoaError) -> String {
    let underlying = (error.userInfo[NSUnderlyingErrorKey] as? any Error).map { $0 as NSError }
    let posix = underlying.flatMap { $0.domain == NSPOSIXErrorDomain ? Int32($0.code) : nil }
    let reason = posix.map { String(cString: strerror($0)) } ?? error.localizedDescription
    guard let path = error.filePath else { return reason }
    return "\(path): \(reason)"
  }

  /// Reports a failed start of `command`'s service and exits: one critical line
  /// `cannot start: <reason>` on standard error (a JSON object off a terminal, where log
  /// shippers read it), then exit status 64 for a command-line problem (as ArgumentParser
  /// exits) and 1 for anything else. An ``ExitCode`` exits with its code and no line.
  public static func fail<Command: ServiceCommand>(_ command: Command.Type, error: any Error)
    -> Never
  {
    let code = command.exitCode(for: error)
    if error is ExitCode { command.exit(withError: error) }
    var reason = reason(for: error, command: command)
    if code == .validationFailure {
      let name = command.configuration.commandName ?? "\(command.service)-service"
      reason += " (see \(name) --help)"
    }
    let logger = ServiceLogging.makeLogger(service: command.service, level: .critical)
    logger.critical("cannot start: \(reason)")
    LogSink.standardError.flush(timeout: .seconds(2))
    Foundation.exit(code == .success ? ExitCode.failure.rawValue : code.rawValue)
  }
}
