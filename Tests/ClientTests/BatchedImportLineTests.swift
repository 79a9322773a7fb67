import Foundation
import SmartSchoolCLI
import SmartSchoolClient
import TestSupport
import Testing

/// The CLI sends users in messages of 1,000 rows (ImportUsersRequest.users): the service's row
/// indexes, counted across the stream, must still map back to the right CSV lines when rows
/// the CLI itself rejected (never sent) sit in the middle of a message.
@Suite struct BatchedImportLineTests {
  @Test func rejectedLinesInTheMiddleOfABatchKeepTheirLineNumbers() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let orgs = try writeFile(
      dir, "orgs.csv",
      """
      code,name,kind,school_kind,parent_code,managing_school_code,grade,school_year
      P7,省,province,,,,,
      C7,市,city,,P7,,,
      K7,县,county,,C7,,,
      S7,中学,school,urban,K7,,,
      CL7,七年级1班,class,,S7,,7,2025-2026

      """)
    // Line k + 2 holds row k. Bad in the CSV itself (never sent): lines 500 and 1500. Bad at
    // the service: line 1201 (unknown org) and line 2400 (row 5's username, taken).
    var text = "external_id,username,display_name,kind,org_code,birth_year\n"
    for k in 0..<2600 {
      let line = k + 2
      let org = line == 1201 ? "NOWHERE" : "CL7"
      let username = line == 2400 ? "usr5" : "usr\(k)"
      let year = line == 500 || line == 1500 ? "nineteen" : "2012"
      text += "E\(k),\(username),学生\(k),student,\(org),\(year)\n"
    }
    let users = try writeFile(dir, "users.csv", text)
    try await withIdentity { port, _ in
      let client = try SmartSchoolClient(
        addresses: addresses(identity: port), credentials: adminCredentials)
      defer { client.close() }
      let importer = Importer(client: client, console: ImportConsole(quiet: true))
      _ = try await importer.run(.orgs, path: orgs)
      let outcome = try await importer.run(.users, path: users)
      #expect(outcome.rows == 2600)
      #expect(outcome.accepted == 2596)
      #expect(outcome.rejections.map(\.line) == [500, 1201, 1500, 2400])
      #expect(outcome.rejections[1].reason.contains("org_code"))
      #expect(outcome.rejections[3].reason.contains("username"))
      let last = try await client.identity.getUser(.with { $0.externalID = "E2599" })
      #expect(last.username == "usr2599" && last.birthYear == 2012)
      // Again: nothing new, the same lines.
      let again = try await importer.run(.users, path: users)
      #expect(again.rejections.map(\.line) == [500, 1201, 1500, 2400])
    }
  }
}
