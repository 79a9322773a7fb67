import ArgumentParser
import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolClient
import SmartSchoolModel

/// `smartschool service-account create`.
struct ServiceAccountCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "service-account",
    abstract: "Manage service accounts (machine clients such as the other services).",
    subcommands: [Create.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "create",
      abstract: "Create a service account holding roles at an org; its secret is shown once.",
      discussion: """
        Prints CLIENT_ID=… and CLIENT_SECRET=… lines (the secret is never shown again), or
        writes them to --out, a file only you can read (mode 0600). The catalogue, assessment
        and supervision services follow identity's org tree with such an account holding
        data_exchange at the province.

        Example:
          smartschool service-account create --name smartschool-services --org P34 \\
            --role data_exchange --out ./data/service-account.env
        """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Account name (its username), unique.")
    var name: String

    @Option(help: "Code of the org the roles are held at.")
    var org: String

    @Option(help: "Role to hold (repeatable), e.g. data_exchange, inspector.")
    var role: [String] = ["data_exchange"]

    @Option(help: "Write CLIENT_ID/CLIENT_SECRET to this file (mode 0600) instead of stdout.")
    var out: String?

    func run() async throws {
      var roles: [Smartschool_Identity_V1_Role] = []
      for text in role {
        guard let r = Role(rawValue: text) else {
          let known = Role.allCases.map(\.rawValue).joined(separator: ", ")
          throw oneLine(CLIError("unknown role '\(text)' (one of: \(known))"))
        }
        roles.append(r.proto)
      }
      try await withCLIClient(connection) { client in
        let account = try await client.identity.createServiceAccount(
          .with {
            $0.name = name
            $0.orgCode = org
            $0.roles = roles
          })
        let text = "CLIENT_ID=\(account.clientID)\nCLIENT_SECRET=\(account.clientSecret)\n"
        guard let out else {
          writeOut(text)
          return
        }
        try writeSecretFile(text, to: out)
        writeOut("service account \(name) created; credentials written to \(out)\n")
      }
    }
  }
}
