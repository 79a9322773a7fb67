import ArgumentParser
import Foundation
import SmartSchoolClient
import SmartSchoolModel

/// `smartschool oidc-client create|list|disable`.
struct OIDCClientCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "oidc-client",
    abstract: "Manage OpenID Connect clients (apps that sign users in through identity).",
    subcommands: [Create.self, List.self, Disable.self])

  struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "create",
      abstract: "Register an app; a confidential app's secret is shown once.",
      discussion: """
        Prints CLIENT_ID=… and CLIENT_SECRET=… lines (the secret is never shown again; empty
        for a --public app, which must use PKCE), or writes them to --out, a file only you can
        read (mode 0600). Redirect URIs are matched exactly: https, or http on 127.0.0.1,
        [::1] or localhost.

        Example:
          smartschool oidc-client create --name "教师云 Teacher cloud" \\
            --redirect-uri https://teacher.example.edu.cn/callback \\
            --post-logout-uri https://teacher.example.edu.cn/ \\
            --scope openid --scope profile --scope catalogue --service catalogue \\
            --org P34 --out ./teacher-cloud.env
        """)

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The app's name, shown on the login page.")
    var name: String

    @Option(help: "Redirect URI (repeatable), matched exactly.")
    var redirectUri: [String]

    @Option(help: "URI allowed after logout (repeatable), matched exactly.")
    var postLogoutUri: [String] = []

    @Flag(help: "A public app (mobile, single-page): no secret, PKCE required.")
    var `public` = false

    @Option(
      help: """
        Scope the app may ask for (repeatable): openid profile email offline_access, or a \
        service it may call (default: openid profile email).
        """)
    var scope: [String] = []

    @Option(
      help: "Service its tokens may call (repeatable): identity catalogue assessment supervision.")
    var service: [String] = []

    @Option(help: "Code of the org whose admins manage the app (default: the root).")
    var org: String?

    @Option(help: "Write CLIENT_ID/CLIENT_SECRET to this file (mode 0600) instead of stdout.")
    var out: String?

    func run() async throws {
      try await withCLIClient(connection) { client in
        let created = try await client.identity.createOIDCClient(
          .with {
            $0.client = .with {
              $0.name = name
              $0.publicClient = `public`
              $0.redirectUris = redirectUri
              $0.postLogoutRedirectUris = postLogoutUri
              $0.scopes = scope
              $0.services = service
            }
            $0.orgCode = org ?? ""
          })
        let text = "CLIENT_ID=\(created.client.clientID)\nCLIENT_SECRET=\(created.clientSecret)\n"
        guard let out else {
          writeOut(text)
          return
        }
        try writeSecretFile(text, to: out)
        writeOut("OIDC client \(created.client.clientID) created; credentials written to \(out)\n")
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "list", abstract: "List the apps of your scope.")

    @OptionGroup var connection: ConnectionOptions

    @Flag(help: "Include disabled apps.")
    var all = false

    func run() async throws {
      try await withCLIClient(connection) { client in
        var table = ReportTable(
          title: "OIDC 客户端 OIDC clients",
          columns: [
            ("编号", "Client ID"), ("名称", "Name"), ("类型", "Type"), ("范围", "Scopes"),
            ("服务", "Services"), ("回调地址", "Redirect URIs"), ("状态", "State"),
          ])
        var token = ""
        repeat {
          let page = try await client.identity.listOIDCClients(
            .with {
              $0.pageSize = 1000
              $0.pageToken = token
              $0.includeDisabled = all
            })
          for c in page.clients {
            table.rows.append([
              c.clientID, c.name, c.publicClient ? "public" : "confidential",
              c.scopes.joined(separator: " "), c.services.joined(separator: " "),
              c.redirectUris.joined(separator: " "), c.disabled ? "disabled" : "active",
            ])
          }
          token = page.nextPageToken
        } while !token.isEmpty
        writeOut(table.text())
      }
    }
  }

  struct Disable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "disable", abstract: "Disable an app for good: it signs nobody in.")

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The app's client id.")
    var clientID: String

    func run() async throws {
      try await withCLIClient(connection) { client in
        let disabled = try await client.identity.disableOIDCClient(
          .with { $0.clientID = clientID })
        writeOut("OIDC client \(disabled.clientID) (\(disabled.name)) disabled\n")
      }
    }
  }
}

/// Writes `text` (credentials) to a new file at `path` that only its owner can read (0600);
/// an existing file is not overwritten.
func writeSecretFile(_ text: String, to path: String) throws {
  let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
  guard fd >= 0 else {
    throw CLIError("cannot create \(path): \(String(cString: strerror(errno)))")
  }
  defer { close(fd) }
  let bytes = Array(text.utf8)
  guard write(fd, bytes, bytes.count) == bytes.count else {
    throw CLIError("cannot write \(path)")
  }
}
