import ArgumentParser
import AssessmentService
import Foundation
import IdentityService
import Logging
import ServiceRuntime
import SmartSchoolClient
import SmartSchoolModel
import TestSupport
import Testing

@testable import SmartSchoolCLI

/// `smartschool report options` against a real assessment service (SQLite, or PostgreSQL when
/// SMARTSCHOOL_TEST_DATABASE_URL is set), fed by the CLI's own CSV import: the shares it prints
/// are checked against a count made here from the CSV rows.
@Suite(.serialized) struct OptionReportTests {
  /// 12 students of two classes: item 1 (objective, A–D, key B), item 2 (subjective). Student
  /// n scores max(0, 10 − n) on item 2; on item 1 chooses the key (5 points) when n is even,
  /// else "A" or nothing (n = 7, 11) for 0.
  static func choice(_ n: Int) -> String { n % 2 == 0 ? "B" : n == 7 || n == 11 ? "" : "A" }
  static func item1(_ n: Int) -> Double { n % 2 == 0 ? 5 : 0 }
  static func item2(_ n: Int) -> Double { Double(max(0, 10 - n)) }
  static func id(_ n: Int) -> String { String(format: "ext-o%02d", n) }

  @Test func optionSharesPrintedFromImportedChoices() async throws {
    let files = try TemporaryDirectory()
    defer { files.remove() }
    let orgsPath = try writeFile(
      files, "orgs.csv",
      "code,name,kind,school_kind,parent_code,managing_school_code,grade,school_year\n"
        + "OP,省,province,,,,,\n" + "OC,市,city,,OP,,,\n" + "OK1,县,county,,OC,,,\n"
        + "OS1,中学,school,urban,OK1,,,\n" + "OC1,七年级1班,class,,OS1,,7,2025-2026\n"
        + "OC2,七年级2班,class,,OS1,,7,2025-2026\n")
    let exams = try writeFile(
      files, "exams.csv",
      "code,name,school_year,term,subject,stage,grade,org_code,full_marks\n"
        + "OPT-K1,期中,2025-2026,1,mathematics,junior,7,OK1,15\n")
    let items = try writeFile(
      files, "items.csv",
      "exam_code,item_no,max_score,kind,knowledge_points,options,answer_key\n"
        + "OPT-K1,1,5,objective,KP-1,A;B;C;D,B\n" + "OPT-K1,2,10,subjective,KP-2,,\n")
    var scores =
      "exam_code,student_external_id,class_code,school_code,item_no,score,chosen_option\n"
    for n in 0..<12 {
      let classCode = n < 6 ? "OC1" : "OC2"
      scores += "OPT-K1,\(Self.id(n)),\(classCode),OS1,1,\(Self.item1(n)),\(Self.choice(n))\n"
      scores += "OPT-K1,\(Self.id(n)),\(classCode),OS1,2,\(Self.item2(n)),\n"
    }
    // A choice the item does not offer is rejected by the service, the rest kept.
    scores += "OPT-K1,ext-o99,OC1,OS1,1,0,E\n"
    let scoresPath = try writeFile(files, "scores.csv", scores)

    try await withIdentity { identityPort, _ in
      let admin = try SmartSchoolClient(
        addresses: addresses(identity: identityPort), credentials: adminCredentials)
      defer { admin.close() }
      let orgs = try await Importer(client: admin, console: ImportConsole(quiet: true)).run(
        .orgs, path: orgsPath)
      #expect(orgs.rejectedCount == 0, "\(orgs.rejections.prefix(3))")
      let account = try await admin.identity.createServiceAccount(
        .with {
          $0.name = "options-report"
          $0.orgCode = "OP"
          $0.roles = [.dataExchange]
        })
      let link = try IdentityLink(
        address: PeerAddress(host: "127.0.0.1", port: identityPort),
        credentials: (account.clientID, account.clientSecret))
      defer { link.close() }
      var logger = Logger(label: "options-report")
      logger.logLevel = .critical
      let data = try TemporaryDirectory()
      defer { data.remove() }
      let config = try await TestStore.config(service: "assessment", directory: data)
      var settings = AssessmentSettings()
      settings.directoryPollInterval = .seconds(3600)
      let assessment = try await buildAssessmentService(
        config: config, settings: settings, verifier: link.makeVerifier(), identity: link,
        logger: logger)
      try await (assessment.background.first as! OrgDirectory).sync()
      try await withHost(assessment, config: config) { assessmentPort, _ in
        var where_ = addresses(identity: identityPort)
        where_.assessment = PeerAddress(host: "127.0.0.1", port: assessmentPort)
        let client = try SmartSchoolClient(addresses: where_, credentials: adminCredentials)
        defer { client.close() }
        let importer = Importer(client: client, console: ImportConsole(quiet: true))
        for (kind, path) in [(ImportKind.exams, exams), (.items, items)] {
          let outcome = try await importer.run(kind, path: path)
          #expect(outcome.rejectedCount == 0, "\(kind): \(outcome.rejections.prefix(3))")
        }
        let imported = try await importer.run(.scores, path: scoresPath)
        #expect(imported.rejectedCount == 1)
        #expect(imported.rejections.first.map { "\($0)".contains("chosen_option") } == true)

        let session = files.path + "/session.json"
        try SessionFile(tokens: try await client.login()).save(session)
        let connection = [
          "--identity-addr", "127.0.0.1:\(identityPort)",
          "--assessment-addr", "127.0.0.1:\(assessmentPort)", "--session", session,
        ]
        func run(_ arguments: [String]) async throws -> String {
          let out = files.path + "/out-\(UUID().uuidString).csv"
          let parsed = try SmartSchoolCommand.parseAsRoot(arguments + connection + ["--out", out])
          var command = try #require(parsed as? any AsyncParsableCommand)
          try await command.run()
          return try String(contentsOfFile: out, encoding: .utf8)
        }

        // Independent count: totals 5·[n even] + max(0, 10 − n); the 27% groups are
        // round(3.24) = 3 students, best and worst by total (ties by id).
        let order = (0..<12).sorted { a, b in
          let (ta, tb) = (Self.item1(a) + Self.item2(a), Self.item1(b) + Self.item2(b))
          return ta != tb ? ta > tb : Self.id(a) < Self.id(b)
        }
        let upper = Array(order.prefix(3))
        let lower = Array(order.suffix(3))
        func pct(_ part: Int, _ whole: Int) -> String {
          String(format: "%.2f%%", Double(part) / Double(whole) * 100)
        }
        func line(_ option: String, key: Bool) -> String {
          let chose = { (n: Int) in Self.choice(n) == option }
          let all = (0..<12).filter(chose).count
          return [
            "1", option.isEmpty ? "(未作答 none)" : option, key ? "✓" : "", "\(all)",
            pct(all, 12), pct(upper.filter(chose).count, 3), pct(lower.filter(chose).count, 3),
          ].joined(separator: ",")
        }
        let csv = try await run(["report", "options", "--exam", "OPT-K1", "--format", "csv"])
        let lines = csv.split(separator: "\n").map(String.init)
        #expect(lines.first == "Item,Option,Key,Count,Share,Upper 27%,Lower 27%")
        #expect(
          Array(lines.dropFirst()) == [
            line("A", key: false), line("B", key: true), line("C", key: false),
            line("D", key: false), line("", key: false),
          ], "\(csv)")

        // A class scope: OC2 holds students 6–11 (groups of round(1.62) = 2).
        let scoped = try await run(
          ["report", "options", "--exam", "OPT-K1", "--scope", "OC2", "--format", "csv"])
        #expect(scoped.contains("1,B,✓,3,50.00%,100.00%,0.00%"), "\(scoped)")
        let text = try await run(["report", "options", "--exam", "OPT-K1"])
        #expect(text.contains("选项分析 Option analysis — OPT-K1") && text.contains("实考 sat 12"))
      }
    }
  }
}
