import ArgumentParser
import Testing

@testable import SmartSchoolCLI

/// The assessment report commands parse (ArgumentParser refuses a command whose options
/// clash, e.g. with the connection options, only when it is run).
@Suite struct AssessmentCommandTests {
  @Test func reportCommandsParseTheirOptions() throws {
    let session = try SmartSchoolCommand.parseAsRoot(
      ["report", "session", "--exam-session", "S-K1", "--org", "S1", "--classes"])
    let parsed = try #require(session as? ReportCommand.Session)
    #expect(parsed.session == "S-K1" && parsed.org == "S1" && parsed.classes)
    let ranks = try SmartSchoolCommand.parseAsRoot(
      ["report", "session-ranks", "--exam-session", "S-K1", "--format", "csv"])
    #expect((ranks as? ReportCommand.SessionRanks)?.common.format == .csv)
    let progress = try SmartSchoolCommand.parseAsRoot(
      ["report", "progress", "--earlier", "M-1", "--later", "M-2"])
    #expect((progress as? ReportCommand.Progress)?.later == "M-2")
    #expect(throws: (any Error).self) {
      try SmartSchoolCommand.parseAsRoot(["report", "progress", "--earlier", "M-1"])
    }
  }
}
