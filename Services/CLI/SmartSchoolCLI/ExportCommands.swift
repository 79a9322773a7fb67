import ArgumentParser
import Foundation
import SmartSchoolClient
import SmartSchoolModel

/// `smartschool export KIND`: bulk data out as CSV in the import format.
struct ExportCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "export",
    abstract: "Stream bulk data out as CSV, in the same format `import` reads.",
    discussion: """
      Kinds: orgs and users (--org, the subtree), terms, classrooms (--org), lessons (--org,
      --from, --to), scores (--exam).

      Example:
        smartschool export users --org K341523 > users.csv
        smartschool export scores --exam K341523-2025-1-MATH7 --out scores.csv
      """)

  enum Kind: String, ExpressibleByArgument, CaseIterable {
    case orgs, users, terms, classrooms, lessons, scores
  }

  @OptionGroup var connection: ConnectionOptions
  @Argument(help: "orgs, users, terms, classrooms, lessons or scores.") var kind: Kind
  @Option(help: "Org code whose subtree to export.") var org: String?
  @Option(help: "Exam code (scores).") var exam: String?
  @Option(help: "First date (lessons).") var from: String?
  @Option(help: "Last date (lessons).") var to: String?
  @Option(help: "Write the CSV to this file instead of standard output.") var out: String?

  func require(_ value: String?, _ flag: String) throws -> String {
    guard let value, !value.isEmpty else {
      throw oneLine(CLIError("\(kind.rawValue) needs \(flag)"))
    }
    return value
  }

  func run() async throws {
    let org = self.org ?? ""
    switch kind {
    case .lessons:
      _ = try require(self.org, "--org")
      _ = try require(from, "--from")
      _ = try require(to, "--to")
    case .scores: _ = try require(exam, "--exam")
    default: break
    }
    let sink: FileHandle
    if let out {
      guard FileManager.default.createFile(atPath: out, contents: nil),
        let file = FileHandle(forWritingAtPath: out)
      else { throw oneLine(CLIError("cannot write --out \(out)")) }
      sink = file
    } else {
      sink = .standardOutput
    }
    defer { if out != nil { try? sink.close() } }
    @Sendable func emit(_ text: String) { sink.write(Data(text.utf8)) }
    try await withCLIClient(connection) { client in
      let importKind = ImportKind(rawValue: kind.rawValue)!
      // Scores carry the marks of absent and exempt students (item 0) and the options chosen
      // in their own columns.
      let headers =
        importKind.headers + (importKind == .scores ? importKind.optionalHeaders : [])
      emit(csvLine(headers))
      switch kind {
      case .orgs:
        try await eachPage { token in
          let page = try await client.identity.listOrgs(
            .with {
              $0.parentCode = org
              $0.subtree = true
              $0.pageSize = 1000
              $0.pageToken = token
            })
          emit(
            page.orgs.map {
              csvLine([
                $0.code, $0.name, $0.kind.englishName,
                $0.schoolKind == .unspecified ? "" : $0.schoolKind.englishName, $0.parentCode,
                $0.managingSchoolCode, $0.grade == 0 ? "" : "\($0.grade)", $0.schoolYear,
              ])
            }.joined())
          return page.nextPageToken
        }
      case .users:
        try await eachPage { token in
          let page = try await client.identity.listUsers(
            .with {
              $0.orgCode = org
              $0.pageSize = 1000
              $0.pageToken = token
            })
          emit(
            page.users.filter { $0.kind != .serviceAccount }.map {
              csvLine([
                $0.externalID, $0.username, $0.displayName,
                String(describing: $0.kind).lowercased(), $0.orgCode,
                $0.birthYear == 0 ? "" : "\($0.birthYear)",
              ])
            }.joined())
          return page.nextPageToken
        }
      case .terms:
        try await eachPage { token in
          let page = try await client.supervision.listTerms(
            .with {
              $0.pageSize = 1000
              $0.pageToken = token
            })
          emit(
            page.terms.map {
              csvLine([
                $0.code, $0.name, $0.startDate, $0.endDate,
                $0.excludedWeeks.joined(separator: ";"),
              ])
            }.joined())
          return page.nextPageToken
        }
      case .classrooms:
        try await eachPage { token in
          let page = try await client.supervision.listClassrooms(
            .with {
              $0.orgCode = org
              $0.pageSize = 1000
              $0.pageToken = token
            })
          emit(
            page.classrooms.map {
              csvLine([$0.code, $0.schoolCode, $0.classCode, $0.equippedDate, $0.retiredDate])
            }.joined())
          return page.nextPageToken
        }
      case .lessons:
        try await client.supervision.listLessons(
          .with {
            $0.orgCode = org
            $0.fromDate = from ?? ""
            $0.toDate = to ?? ""
          }
        ) { response in
          for try await l in response.messages {
            emit(
              csvLine([
                l.classroomCode, l.teacherExternalID, l.subject.englishName, l.date,
                "\(l.period)", "\(l.durationMinutes)",
              ]))
          }
        }
      case .scores:
        try await client.assessment.exportScores(.with { $0.examCode = exam ?? "" }) {
          response in
          for try await s in response.messages {
            emit(
              csvLine([
                s.examCode, s.studentExternalID, s.classCode, s.schoolCode, "\(s.itemNumber)",
                "\(s.score)", s.attendance == .unspecified ? "" : "\(s.attendance)",
                s.reasonNotTested, s.chosenOption,
              ]))
          }
        }
      }
    }
  }
}

/// `smartschool changes SERVICE --after N`: follows a service's change feed.
struct ChangesCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "changes",
    abstract: "Print a service's change feed after a sequence number, one line per change.",
    discussion: """
      Each line: sequence, entity, op, natural key, org path, time (tab-separated). With
      --follow it keeps polling for new changes until interrupted.

      Example:
        smartschool changes identity --after 0
        smartschool changes supervision --after 1200 --follow
      """)

  @OptionGroup var connection: ConnectionOptions
  @Argument(help: "identity, catalogue, assessment or supervision.") var service: String
  @Option(help: "Print changes after this sequence number.") var after: Int64 = 0
  @Flag(help: "Keep polling for new changes.") var follow = false
  @Option(help: "Seconds between polls with --follow.") var interval: Int = 2

  func run() async throws {
    guard let service = SmartSchoolService(rawValue: service) else {
      throw oneLine(CLIError("unknown service \(self.service)"))
    }
    try await withCLIClient(connection) { client in
      var after = self.after
      while true {
        let request = Smartschool_Common_V1_ListChangesRequest.with {
          $0.afterSequence = after
          $0.pageSize = 1000
        }
        let page: Smartschool_Common_V1_ListChangesResponse
        switch service {
        case .identity: page = try await client.identity.listChanges(request)
        case .catalogue: page = try await client.catalogue.listChanges(request)
        case .assessment: page = try await client.assessment.listChanges(request)
        case .supervision: page = try await client.supervision.listChanges(request)
        }
        for c in page.changes {
          let op = c.op == .delete ? "delete" : "upsert"
          let time = ISO8601DateFormatter().string(from: c.time.date)
          writeOut("\(c.sequence)\t\(c.entity)\t\(op)\t\(c.naturalKey)\t\(c.orgPath)\t\(time)\n")
        }
        after = max(after, page.lastSequence)
        if page.moreAvailable { continue }
        if !follow { return }
        try await Task.sleep(for: .seconds(interval))
      }
    }
  }
}

/// Calls `fetch` with each page token, starting from none, until it returns an empty next one.
func eachPage(_ fetch: (_ token: String) async throws -> String) async throws {
  var token = ""
  repeat { token = try await fetch(token) } while !token.isEmpty
}
