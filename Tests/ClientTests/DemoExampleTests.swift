import ArgumentParser
import AssessmentService
import Foundation
import IdentityService
import Logging
import ServiceRuntime
import SmartSchoolClient
import SmartSchoolModel
import SupervisionService
import TestSupport
import Testing

@testable import SmartSchoolCLI

/// The demo's closing message (issue 26, point 7): every command it suggests names codes the
/// demo county has, and runs against the loaded county with something to show.
@Suite(.serialized) struct DemoExampleTests {
  @Test func closingMessageCommandsRunAgainstTheLoadedDemo() async throws {
    let files = try TemporaryDirectory()
    defer { files.remove() }
    let county = DemoCounty(seed: 5, size: .small)
    let paths = try county.write(to: files.path)
    let message = county.closingMessage()
    for example in county.exampleCommands {
      #expect(message.contains("smartschool " + example.arguments.joined(separator: " ")))
    }
    #expect(message.contains(county.countyCode) && message.contains(county.examCode))
    // The codes the examples name are the generated files' codes.
    let orgs = try String(contentsOfFile: paths[.orgs]!, encoding: .utf8)
    #expect(orgs.contains("\n\(county.countyCode),") && orgs.contains("\n\(county.schoolCode),"))
    let terms = try String(contentsOfFile: paths[.terms]!, encoding: .utf8)
    #expect(terms.contains("\n\(county.termCode),"))
    let exams = try String(contentsOfFile: paths[.exams]!, encoding: .utf8)
    #expect(exams.contains("\n\(county.examCode),"))

    try await withIdentity { identityPort, _ in
      let admin = try SmartSchoolClient(
        addresses: addresses(identity: identityPort), credentials: adminCredentials)
      defer { admin.close() }
      let importer = Importer(client: admin, console: ImportConsole(quiet: true))
      for kind in [ImportKind.orgs, .users, .guardians] {
        let outcome = try await importer.run(kind, path: paths[kind]!)
        #expect(outcome.rejectedCount == 0, "\(kind): \(outcome.rejections.prefix(3))")
      }
      let account = try await admin.identity.createServiceAccount(
        .with {
          $0.name = "demo-examples"
          $0.orgCode = "P34"
          $0.roles = [.dataExchange]
        })
      let link = try IdentityLink(
        address: PeerAddress(host: "127.0.0.1", port: identityPort),
        credentials: (account.clientID, account.clientSecret))
      defer { link.close() }
      var logger = Logger(label: "demo-examples")
      logger.logLevel = .critical
      let data = [try TemporaryDirectory(), try TemporaryDirectory()]
      defer { data.forEach { $0.remove() } }
      /// A service on this run's store following identity's tree through `link`.
      func linked(
        _ name: String, in directory: TemporaryDirectory,
        _ build: (HostConfig) async throws -> ServiceDefinition
      ) async throws -> (ServiceDefinition, HostConfig) {
        let config = try await TestStore.config(service: name, directory: directory)
        let definition = try await build(config)
        try await (definition.background.first as! OrgDirectory).sync()
        return (definition, config)
      }
      let (supervision, supervisionConfig) = try await linked("supervision", in: data[0]) {
        config in
        var settings = SupervisionSettings()
        settings.directoryPollInterval = .seconds(3600)
        return try await buildSupervisionService(
          config: config, settings: settings, verifier: link.makeVerifier(), identity: link,
          logger: logger)
      }
      let (assessment, assessmentConfig) = try await linked("assessment", in: data[1]) {
        config in
        var settings = AssessmentSettings()
        settings.directoryPollInterval = .seconds(3600)
        return try await buildAssessmentService(
          config: config, settings: settings, verifier: link.makeVerifier(), identity: link,
          logger: logger)
      }
      try await withHost(supervision, config: supervisionConfig) { supervisionPort, _ in
        try await withHost(assessment, config: assessmentConfig) { assessmentPort, _ in
          var settings = ClientSettings()
          settings.callTimeout = .seconds(30)
          var where_ = addresses(identity: identityPort, supervision: supervisionPort)
          where_.assessment = PeerAddress(host: "127.0.0.1", port: assessmentPort)
          let client = try SmartSchoolClient(
            addresses: where_, credentials: adminCredentials, settings: settings)
          defer { client.close() }
          let loader = DemoLoader(
            importer: Importer(client: client, console: ImportConsole(quiet: true)))
          let loaded = try await loader.load(paths.filter { $0.key.service != .identity })
          #expect(loaded.skipped == [.catalogue])
          for outcome in loaded.outcomes {
            #expect(outcome.rejectedCount == 0, "\(outcome.kind): \(outcome.rejections.prefix(3))")
          }
          // The commands run as a user runs them: parsed by the CLI, logged in by a session
          // file, each writing its report to a file.
          let session = files.path + "/session.json"
          try SessionFile(tokens: try await client.login()).save(session)
          let connection = [
            "--identity-addr", "127.0.0.1:\(identityPort)",
            "--supervision-addr", "127.0.0.1:\(supervisionPort)",
            "--assessment-addr", "127.0.0.1:\(assessmentPort)", "--session", session,
          ]
          for (n, example) in county.exampleCommands.enumerated() {
            let out = files.path + "/example-\(n).txt"
            let parsed = try SmartSchoolCommand.parseAsRoot(
              example.arguments + connection + ["--out", out])
            var command = try #require(parsed as? any AsyncParsableCommand)
            try await command.run()
            let text = try String(contentsOfFile: out, encoding: .utf8)
            let shown = example.arguments.joined(separator: " ")
            #expect(!text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(shown)")
            #expect(text.contains(county.countyCode) || text.contains(county.examCode), "\(shown)")
            if example.arguments[1] == "progress" {
              // Students matched across the two exams: the movers are listed.
              #expect(text.contains("S0"), "\(shown): \(text)")
            }
            // None of them is the empty report of a week, period or range without data.
            for empty in [
              "无智慧课堂数据", "本期无教学周", "范围内无学期", "本年无督导记录", "无带选项的客观题",
            ] {
              #expect(!text.contains(empty), "\(shown): \(text)")
            }
          }
          // `export scores` writes what `import scores` reads, the chosen options included;
          // importing the export back changes nothing and rejects nothing.
          let exported = files.path + "/scores-export.csv"
          let exportCommand = try SmartSchoolCommand.parseAsRoot(
            ["export", "scores", "--exam", county.examCode, "--out", exported] + connection)
          var export = try #require(exportCommand as? any AsyncParsableCommand)
          try await export.run()
          let lines = try String(contentsOfFile: exported, encoding: .utf8)
            .split(separator: "\n").map(String.init)
          let header = try CSVTable(
            reader: CSVReader(data: Data(((lines.first ?? "") + "\n").utf8)),
            expected: ImportKind.scores.headers, optional: ImportKind.scores.optionalHeaders)
          #expect(header.columns["chosen_option"] == 8)
          let sheets = county.counts["students"]! * county.counts["items"]!
          #expect(lines.count == 1 + sheets)
          // Objective items (1–12) carry the choice the demo generated for the row.
          let generated = Set(
            county.files[.scores]!.split(separator: "\n").dropFirst()
              .filter { $0.hasPrefix(county.examCode + ",") && !$0.hasSuffix(",") }
              .map { $0.split(separator: ",").map(String.init) }
              .map { [$0[1], $0[4], $0[6]].joined(separator: "/") })
          let chosen = Set(
            lines.dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false) }
              .filter { !$0[8].isEmpty }.map { [$0[1], $0[4], $0[8]].joined(separator: "/") })
          #expect(!generated.isEmpty && chosen == generated)
          let reimport = try await Importer(client: client, console: ImportConsole(quiet: true))
            .run(.scores, path: exported)
          #expect(reimport.rows == sheets && reimport.rejectedCount == 0)
        }
      }
    }
  }
}
