import ArgumentParser
import Foundation
import GRPCCore
import SmartSchoolClient
import SmartSchoolModel

/// The root of the `smartschool` command tree.
public struct SmartSchoolCommand: AsyncParsableCommand {
  public static let configuration = CommandConfiguration(
    commandName: "smartschool",
    abstract: "Operate the SmartSchool suite: login, import, export, reports, change feeds, demo.",
    discussion: """
      Services are found at 127.0.0.1:50051-50054 unless --identity-addr, --catalogue-addr,
      --assessment-addr, --supervision-addr or SMARTSCHOOL_IDENTITY_ADDR,
      SMARTSCHOOL_CATALOGUE_ADDR, SMARTSCHOOL_ASSESSMENT_ADDR, SMARTSCHOOL_SUPERVISION_ADDR say
      otherwise: host:port, or several replicas' host:port separated by commas, over which
      calls are balanced round robin (a replica that is down is skipped). Commands
      authenticate with SMARTSCHOOL_USERNAME and SMARTSCHOOL_PASSWORD when set, else with the
      session saved by `smartschool login`.

      Example:
        smartschool login --username admin --password-stdin < admin-password
        smartschool import orgs orgs.csv
        smartschool report compliance --org K341523 --term 2025-2026-1
      """,
    subcommands: [
      LoginCommand.self, ImportCommand.self, ReportCommand.self, ExportCommand.self,
      ChangesCommand.self, DemoCommand.self, ServiceAccountCommand.self, OIDCClientCommand.self,
      TOTPCommand.self,
    ])

  public init() {}
}

/// Options every command that calls the services takes.
struct ConnectionOptions: ParsableArguments {
  @Option(
    help: "PEM CA bundle to verify the services' TLS certificates (env SMARTSCHOOL_CA_BUNDLE).")
  var caBundle: String?

  @Option(help: "Session file (env SMARTSCHOOL_SESSION; default ~/.smartschool/session.json).")
  var session: String?

  @Option(
    help: "Identity HOST:PORT[,HOST:PORT…] (env SMARTSCHOOL_IDENTITY_ADDR; 127.0.0.1:50051).")
  var identityAddr: String?

  @Option(
    help: "Catalogue HOST:PORT[,HOST:PORT…] (env SMARTSCHOOL_CATALOGUE_ADDR; 127.0.0.1:50052).")
  var catalogueAddr: String?

  @Option(
    help: "Assessment HOST:PORT[,HOST:PORT…] (env SMARTSCHOOL_ASSESSMENT_ADDR; 127.0.0.1:50053).")
  var assessmentAddr: String?

  @Option(
    help:
      "Supervision HOST:PORT[,HOST:PORT…] (env SMARTSCHOOL_SUPERVISION_ADDR; 127.0.0.1:50054).")
  var supervisionAddr: String?

  var environment: [String: String] { ProcessInfo.processInfo.environment }

  var sessionPath: String { session ?? SessionFile.defaultPath(environment) }

  /// The address flags given, by service.
  var addressFlags: [SmartSchoolService: String] {
    var flags: [SmartSchoolService: String] = [:]
    flags[.identity] = identityAddr
    flags[.catalogue] = catalogueAddr
    flags[.assessment] = assessmentAddr
    flags[.supervision] = supervisionAddr
    return flags
  }

  func addresses() throws -> ServiceAddresses {
    try ServiceAddresses.fromEnvironment(
      environment, flags: addressFlags, caBundle: caBundle ?? environment["SMARTSCHOOL_CA_BUNDLE"])
  }

  /// A client authenticated by SMARTSCHOOL_USERNAME/PASSWORD, SMARTSCHOOL_CLIENT_ID/SECRET, or
  /// the saved session (whose renewed tokens are saved back).
  func client() throws -> SmartSchoolClient {
    let env = environment
    if let user = env["SMARTSCHOOL_USERNAME"], let password = env["SMARTSCHOOL_PASSWORD"],
      !user.isEmpty
    {
      return try SmartSchoolClient(
        addresses: addresses(), credentials: .password(username: user, password: password))
    }
    if let id = env["SMARTSCHOOL_CLIENT_ID"], let secret = env["SMARTSCHOOL_CLIENT_SECRET"],
      !id.isEmpty
    {
      return try SmartSchoolClient(
        addresses: addresses(), credentials: .clientCredentials(clientID: id, clientSecret: secret))
    }
    let path = sessionPath
    guard let saved = try SessionFile.load(path) else { throw ClientError.notLoggedIn }
    let credentials: Credentials? = saved.clientID.flatMap { id in
      saved.clientSecret.map { .clientCredentials(clientID: id, clientSecret: $0) }
    }
    return try SmartSchoolClient(
      addresses: addresses(), credentials: credentials, tokens: saved.tokens,
      onTokens: { tokens in
        var updated = saved
        updated.tokens = tokens
        try? updated.save(path)
      })
  }
}

/// Runs `body` with a client, closing it afterwards and turning failures into one line on
/// stderr and a non-zero exit status.
func withCLIClient(
  _ options: ConnectionOptions, _ body: (SmartSchoolClient) async throws -> Void
) async throws {
  let client: SmartSchoolClient
  do {
    client = try options.client()
  } catch {
    throw oneLine(error)
  }
  defer { client.close() }
  do {
    try await body(client)
  } catch let error as ExitCode {
    throw error
  } catch {
    throw oneLine(error)
  }
}

/// Prints `error` as one line and gives the exit code to leave with.
func oneLine(_ error: any Error) -> ExitCode {
  let text: String
  switch error {
  case let error as RPCError:
    text = "\(error.code): \(error.message)"
  case let error as CustomStringConvertible:
    text = error.description
  default:
    text = "\(error)"
  }
  writeErr("smartschool: " + text.replacingOccurrences(of: "\n", with: " ") + "\n")
  return ExitCode(1)
}

/// `smartschool login`.
struct LoginCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "login",
    abstract: "Log in and keep the session in a file only you can read (mode 0600).",
    discussion: """
      With --username, the password comes from --password-stdin or SMARTSCHOOL_PASSWORD.
      A service account logs in with --client-id and --client-secret (or
      SMARTSCHOOL_CLIENT_SECRET).

      An account with two-factor login (TOTP) needs the authenticator's current code (or a
      recovery code): from --totp, else from the line after the password with
      --password-stdin, else asked for on the terminal. An account that must use TOTP but has
      none yet is shown a new secret to add to the app first; its code completes the login.

      Example:
        echo "$PW" | smartschool login --username admin --password-stdin
        printf '%s\n%s\n' "$PW" 123456 | smartschool login --username admin --password-stdin
        smartschool login --client-id datacenter-1 --client-secret "$SECRET"
      """)

  @OptionGroup var connection: ConnectionOptions

  @Option(help: "Username.")
  var username: String?

  @Flag(help: "Read the password from the first line of standard input.")
  var passwordStdin = false

  @Option(help: "Service-account client id.")
  var clientID: String?

  @Option(help: "Service-account client secret (or env SMARTSCHOOL_CLIENT_SECRET).")
  var clientSecret: String?

  @Option(help: "Two-factor code (the authenticator's current code, or a recovery code).")
  var totp: String?

  func run() async throws {
    let env = connection.environment
    let credentials: Credentials
    if let username {
      var password = env["SMARTSCHOOL_PASSWORD"]
      if passwordStdin { password = readLine(strippingNewline: true) }
      guard let password, !password.isEmpty else {
        throw oneLine(CLIError("no password: use --password-stdin or SMARTSCHOOL_PASSWORD"))
      }
      credentials = .password(username: username, password: password)
    } else if let clientID {
      guard let secret = clientSecret ?? env["SMARTSCHOOL_CLIENT_SECRET"] else {
        throw oneLine(CLIError("no client secret: use --client-secret"))
      }
      credentials = .clientCredentials(clientID: clientID, clientSecret: secret)
    } else {
      throw oneLine(CLIError("give --username or --client-id"))
    }
    let client: SmartSchoolClient
    do {
      client = try SmartSchoolClient(addresses: connection.addresses(), credentials: credentials)
    } catch {
      throw oneLine(error)
    }
    defer { client.close() }
    do {
      let tokens: TokenSet
      if case .password(let username, let password) = credentials {
        tokens = try await passwordLogin(client, username: username, password: password)
      } else {
        tokens = try await client.login()
      }
      var file = SessionFile(tokens: tokens)
      if case .clientCredentials(let id, let secret) = credentials {
        file.clientID = id
        file.clientSecret = secret
      }
      try file.save(connection.sessionPath)
      let session = try SmartSchoolClient(
        addresses: connection.addresses(), credentials: nil, tokens: tokens)
      defer { session.close() }
      let me = try await session.identity.whoAmI(.init())
      writeOut(
        "logged in as \(me.user.username) (\(me.bindings.count) role binding(s)); "
          + "session saved to \(connection.sessionPath)\n")
    } catch {
      throw oneLine(error)
    }
  }
}

extension LoginCommand {
  /// A password login that completes a second step (TOTP) when the account needs one.
  func passwordLogin(_ client: SmartSchoolClient, username: String, password: String)
    async throws -> TokenSet
  {
    let first = try await client.identity.login(
      .with {
        $0.username = username
        $0.password = password
        $0.acceptsSecondFactor = true
      })
    guard first.hasSecondFactor else { return TokenSet(first) }
    let challenge = first.secondFactor
    if challenge.kind == .totpEnrolment {
      writeErr(
        "Your roles require two-factor login. " + TOTPCommand.describe(challenge.enrolment)
          + "Then give the code the app shows.\n")
    }
    guard let code = totp ?? readCode(), !code.isEmpty else {
      throw CLIError("this account needs a two-factor code: use --totp CODE")
    }
    let done = try await client.identity.loginSecondFactor(
      .with {
        $0.challengeID = challenge.challengeID
        $0.code = code
      })
    if !done.recoveryCodes.isEmpty { writeErr(TOTPCommand.recoveryCodes(done.recoveryCodes)) }
    if done.recoveryCodesRemaining > 0 {
      writeErr("recovery code used; \(done.recoveryCodesRemaining) left\n")
    }
    return TokenSet(done.tokens)
  }

  /// The code from the next line of standard input (after the password, with
  /// --password-stdin), or asked for on the terminal.
  private func readCode() -> String? {
    if !passwordStdin {
      guard isatty(STDIN_FILENO) != 0 else { return nil }
      writeErr("two-factor code: ")
    }
    return readLine(strippingNewline: true)?.trimmingSpaces()
  }
}

/// `smartschool import KIND FILE.csv`.
struct ImportCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "import",
    abstract: "Stream a CSV file into the matching service.",
    discussion: """
      KIND and its exact header (UTF-8, a BOM is accepted, extra columns are an error):
      \(ImportKind.allCases.map { "  \($0.rawValue): " + $0.headers.joined(separator: ",") }
        .joined(separator: "\n"))
      Enum columns take the Chinese name (数学, 初中, 教学点) or the lower-case enum name;
      booleans are true/false/1/0/是/否. Each rejected row is printed with its line number and
      reason; the exit status is 1 when any row was rejected. Imports are idempotent by
      natural key: importing a file twice does not duplicate anything.

      Example:
        smartschool import users users.csv
      """)

  @OptionGroup var connection: ConnectionOptions

  @Argument(
    help: "What the file holds: \(ImportKind.allCases.map(\.rawValue).joined(separator: ", ")).")
  var kind: String

  @Argument(help: "The CSV file.")
  var file: String

  @Flag(help: "No progress output.")
  var quiet = false

  func run() async throws {
    guard let kind = ImportKind(rawValue: kind) else {
      throw oneLine(
        CLIError(
          "unknown kind \(self.kind); one of "
            + ImportKind.allCases.map(\.rawValue).joined(separator: ", ")))
    }
    try await withCLIClient(connection) { client in
      let outcome = try await Importer(client: client, console: ImportConsole(quiet: quiet))
        .run(kind, path: file)
      writeOut(
        "\(kind.rawValue): \(outcome.rows) rows, \(outcome.accepted) accepted, "
          + "\(outcome.rejectedCount) rejected\n")
      if outcome.rejectedCount > 0 { throw ExitCode(1) }
    }
  }
}
