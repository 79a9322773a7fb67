import ArgumentParser
import Foundation
import SmartSchoolClient
import SmartSchoolModel

/// `smartschool totp enrol|confirm|disable|reset`: two-factor login with an authenticator app.
struct TOTPCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "totp",
    abstract: "Two-factor login: add an authenticator app (TOTP) to your account, or remove it.",
    discussion: """
      Example:
        smartschool totp enrol                 # prints the secret and an otpauth:// URI
        smartschool totp confirm --code 123456 # activates it; prints ten recovery codes
        smartschool login --username u --password-stdin --totp 654321 < pw
        smartschool totp disable --code 654321
        smartschool totp reset --user teacher1 # an admin, for a user who lost the phone
      """,
    subcommands: [Enrol.self, Confirm.self, Disable.self, Reset.self])

  struct Enrol: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "enrol",
      abstract: "Start adding an authenticator app: prints the secret and its otpauth:// URI.",
      discussion: """
        Add the URI (as a QR code, e.g. `qrencode -t ansiutf8 URI`) or the secret to the app,
        then run `smartschool totp confirm --code CODE` with the code it shows. Running this
        again before confirming replaces the secret.
        """)

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
      try await withCLIClient(connection) { client in
        let enrolment = try await client.identity.beginTotpEnrolment(.init())
        writeOut(TOTPCommand.describe(enrolment))
      }
    }
  }

  struct Confirm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "confirm",
      abstract: "Activate the app added by `totp enrol` with its current code.",
      discussion: "Prints ten single-use recovery codes, shown only this once: keep them safe.")

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The app's current 6-digit code.")
    var code: String

    func run() async throws {
      try await withCLIClient(connection) { client in
        let done = try await client.identity.confirmTotpEnrolment(.with { $0.code = code })
        writeOut(TOTPCommand.recoveryCodes(done.recoveryCodes))
      }
    }
  }

  struct Disable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "disable",
      abstract: "Remove your authenticator app, given its current code or a recovery code.")

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The app's current code, or an unused recovery code.")
    var code: String

    func run() async throws {
      try await withCLIClient(connection) { client in
        _ = try await client.identity.disableTotp(.with { $0.code = code })
        writeOut("two-factor login is off for your account\n")
      }
    }
  }

  struct Reset: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "reset",
      abstract:
        "Remove a user's authenticator app (admins of the user's scope); ends their sessions.")

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The user's username.")
    var user: String

    func run() async throws {
      try await withCLIClient(connection) { client in
        let reset = try await client.identity.resetUserTotp(.with { $0.username = user })
        writeOut(
          reset.hadTotp
            ? "two-factor login of \(user) removed; their sessions ended\n"
            : "\(user) had no two-factor login\n")
      }
    }
  }

  /// The lines that let a person add the secret to an app.
  static func describe(_ enrolment: Smartschool_Identity_V1_TotpEnrolment) -> String {
    """
    Add this account to your authenticator app (scan the URI as a QR code, or type the secret):
      secret: \(enrolment.secret)
      uri:    \(enrolment.otpauthUri)
      (\(enrolment.algorithm), \(enrolment.digits) digits, every \(enrolment.periodSeconds) s)

    """
  }

  static func recoveryCodes(_ codes: [String]) -> String {
    "Two-factor login is on. Recovery codes (each works once; shown only now, keep them safe):\n"
      + codes.map { "  \($0)\n" }.joined()
  }
}
