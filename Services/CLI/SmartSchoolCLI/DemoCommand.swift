import ArgumentParser
import Foundation
import GRPCCore
import SmartSchoolClient
import SmartSchoolModel

extension ImportKind {
  /// The service a kind is imported into.
  public var service: SmartSchoolService {
    switch self {
    case .orgs, .users, .guardians: .identity
    case .terms, .classrooms, .lessons, .facilities, .training, .inspections: .supervision
    case .exams, .items, .scores: .assessment
    case .curriculum, .resources: .catalogue
    }
  }
}

/// Loads a generated county through the importers, kind by kind; a service that cannot be
/// reached is skipped (with one line saying so) and the rest still load.
public struct DemoLoader: Sendable {
  let importer: Importer

  /// A loader importing with `importer`.
  public init(importer: Importer) { self.importer = importer }

  /// Imports every file in load order; returns the outcomes and the services skipped.
  public func load(_ paths: [ImportKind: String]) async throws -> (
    outcomes: [ImportOutcome], skipped: Set<SmartSchoolService>
  ) {
    var outcomes: [ImportOutcome] = []
    var skipped: Set<SmartSchoolService> = []
    var waited = false
    for kind in ImportKind.loadOrder {
      guard let path = paths[kind], !skipped.contains(kind.service) else { continue }
      if kind.service != .identity && !waited {
        // The other services learn orgs and users from identity's change feed, which they poll
        // every two seconds: give them time to catch up before rows that name them arrive.
        waited = true
        try await Task.sleep(for: .seconds(5))
      }
      do {
        var outcome = try await importer.run(kind, path: path)
        if outcome.rejectedCount > 0 && kind.service != .identity {
          // A slow follower may still miss a few: imports are idempotent, so send the file
          // again once it has had time.
          writeErr("retrying \(kind.rawValue) once the services have caught up with identity\n")
          try await Task.sleep(for: .seconds(5))
          outcome = try await importer.run(kind, path: path)
        }
        outcomes.append(outcome)
      } catch let error as RPCError
        where error.code == .unavailable || error.code == .unimplemented
      {
        skipped.insert(kind.service)
        writeErr("skipped \(kind.service.rawValue) data: \(error.message)\n")
      }
    }
    return (outcomes, skipped)
  }

  /// Publishes the resources waiting for review under `org` (the demo's teaching cases must be
  /// published to count for coverage and recommendations). A reviewer may not approve their
  /// own work, so a `demo-reviewer` account holding the resource-reviewer role at `org` is
  /// created (or found), given a fresh random password through an activation code, and
  /// approves each submitted resource. Returns how many were published.
  public func publishSubmittedResources(org: String) async throws -> Int {
    let admin = importer.client
    let reviewer: Smartschool_Identity_V1_User
    do {
      reviewer = try await admin.identity.createUser(
        .with {
          $0.user = .with {
            $0.externalID = "demo-reviewer-" + org
            $0.username = "demo-reviewer-" + org.lowercased()
            $0.displayName = "示范资源审核员"
            $0.kind = .staff
            $0.orgCode = org
          }
        })
    } catch let error as RPCError where error.code == .alreadyExists {
      reviewer = try await admin.identity.getUser(.with { $0.externalID = "demo-reviewer-" + org })
    }
    let bindings = try await admin.identity.listRoleBindings(.with { $0.userID = reviewer.id })
    if !bindings.bindings.contains(where: { $0.role == .resourceReviewer }) {
      _ = try await admin.identity.grantRole(
        .with {
          $0.userID = reviewer.id
          $0.role = .resourceReviewer
          $0.orgCode = org
        })
    }
    let code = try await admin.identity.issueActivationCode(.with { $0.userID = reviewer.id })
    var random = SystemRandomNumberGenerator()
    let alphabet = Array("abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")
    let password = "Rv-" + String((0..<24).map { _ in alphabet.randomElement(using: &random)! })
    _ = try await admin.identity.activateAccount(
      .with {
        $0.username = reviewer.username
        $0.activationCode = code.activationCode
        $0.newPassword = password
      })
    let client = try SmartSchoolClient(
      addresses: admin.addresses,
      credentials: .password(username: reviewer.username, password: password))
    defer { client.close() }
    var published = 0
    try await eachPage { token in
      let page = try await admin.catalogue.listResources(
        .with {
          $0.filter.ownerOrgCode = org
          $0.filter.status = .submitted
          $0.pageSize = 1000
          $0.pageToken = token
        })
      for resource in page.resources {
        _ = try await client.catalogue.transitionResource(
          .with {
            $0.id = resource.id
            $0.action = .approve
          })
        published += 1
      }
      return page.nextPageToken
    }
    return published
  }
}

/// `smartschool demo`.
struct DemoCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "demo",
    abstract: "Generate the demo county, load it into the running services, print its reports.",
    discussion: """
      The county (62 schools: 28 teaching points, 19 rural, 15 urban; 1,017 teachers; 13,047
      students with parents; a term of smart-classroom lessons; facilities, training,
      inspections; a county maths exam with 20 items, 12 of them four-option choice items, and
      every student's scores and choices, and the same cohort's 10-item midterm; a maths
      curriculum and its resources) is generated from a fixed seed, written as CSV files to
      --out, and loaded with the same code as `smartschool import`. Loading again changes
      nothing: every import is idempotent by natural key.

      Example:
        SMARTSCHOOL_USERNAME=admin SMARTSCHOOL_PASSWORD=… smartschool demo
        smartschool demo --out /tmp/county --small --no-load
      """)

  @OptionGroup var connection: ConnectionOptions
  @Option(help: "Directory for the CSV files.") var out = "./data/demo"
  @Flag(help: "A small county (6 schools, 240 students) for tests.") var small = false
  @Option(help: "Generator seed.") var seed: UInt64 = 20_251_123
  @Flag(help: "Only write the files.") var noLoad = false
  @Flag(help: "No progress output.") var quiet = false

  func run() async throws {
    let county = DemoCounty(seed: seed, size: small ? .small : .full)
    let paths: [ImportKind: String]
    do {
      paths = try county.write(to: out)
    } catch {
      throw oneLine(error)
    }
    let summary = county.counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
    writeOut("demo county written to \(out): \(summary.joined(separator: ", "))\n")
    if noLoad { return }
    try await withCLIClient(connection) { client in
      let importer = Importer(client: client, console: ImportConsole(quiet: quiet))
      let loader = DemoLoader(importer: importer)
      let (outcomes, skipped) = try await loader.load(paths)
      if !skipped.contains(.catalogue) {
        let published = try await loader.publishSubmittedResources(org: county.countyCode)
        writeOut("resources: \(published) published by the demo reviewer\n")
      }
      for o in outcomes {
        writeOut(
          "\(o.kind.rawValue): \(o.rows) rows, \(o.accepted) accepted, "
            + "\(o.rejectedCount) rejected\n"
        )
      }
      var reports: [(SmartSchoolService, () async throws -> Report)] = [
        (
          .supervision,
          {
            try await Reports.compliance(
              client, org: county.countyCode, term: county.termCode, week: nil)
          }
        ),
        (
          .supervision,
          { try await Reports.coverage(client, org: county.countyCode, year: county.year) }
        ),
      ]
      reports.append(
        (
          .assessment,
          {
            try await Reports.exam(client, exam: county.examCode, org: county.countyCode)
          }
        ))
      reports.append((.assessment, { try await Reports.items(client, exam: county.examCode) }))
      reports.append((.catalogue, { try await Reports.caseCoverage(client, org: county.countyCode) }))
      for (service, make) in reports where !skipped.contains(service) {
        do {
          writeOut("\n" + (try await make()).render(.text))
        } catch {
          _ = oneLine(error)
        }
      }
      writeOut(county.closingMessage(skipping: skipped))
      if outcomes.contains(where: { $0.rejectedCount > 0 }) || !skipped.isEmpty {
        throw ExitCode(1)
      }
    }
  }
}

extension DemoCounty {
  /// What the demo prints last: the county's codes and report commands to try with them (those
  /// of services that were skipped left out).
  public func closingMessage(skipping skipped: Set<SmartSchoolService> = []) -> String {
    let commands = exampleCommands.filter { !skipped.contains($0.service) }.map {
      "  smartschool " + $0.arguments.joined(separator: " ") + "\n"
    }
    return "\nThe demo county is loaded: 舒城县 \(countyCode), term \(termCode), "
      + "exam \(examCode), school \(schoolCode), year \(year). Try:\n" + commands.joined()
  }
}
