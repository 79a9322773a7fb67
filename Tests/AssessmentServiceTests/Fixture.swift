import AssessmentService
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import IdentityService
import Logging
import ServiceRuntime
import SmartSchoolModel
import TestSupport
import Testing

typealias IdentityClient = Smartschool_Identity_V1_IdentityService.Client<
  HTTP2ClientTransport.Posix
>
typealias AssessmentClient = Smartschool_Assessment_V1_AssessmentService.Client<
  HTTP2ClientTransport.Posix
>
typealias ScoreRow = Smartschool_Assessment_V1_ScoreRow

/// The test world: a real identity and a real assessment service, both in-process.
///
/// Org tree (built through identity's API): province P34 → city C3401 → county K1 with schools
/// S1 (classes CL1a, CL1b) and S2 (class CL2), and county K2 with school S3 (class CL3).
/// Users (password "Secret-pass-1"): teachers tS1 (S1) and tS3 (S3), school admin aS1 (S1),
/// county admin aK1 (K1), students stu1 and stu2 (CL1a; external ids "ext-stu1", "ext-stu2"),
/// parent par1 (CL1a) linked to stu1. "exchange" is a data-exchange service account at P34,
/// which the assessment service also uses to follow identity.
struct World: Sendable {
  let identity: IdentityClient
  /// A client of every assessment replica (one unless the world was made with more), all on
  /// one store.
  let replicas: [AssessmentClient]
  let directory: OrgDirectory
  let tokens: [String: String]

  /// The first replica.
  var assessment: AssessmentClient { replicas[0] }

  func auth(_ user: String) -> Metadata { bearer(tokens[user]!) }
}

let testPassword = "Secret-pass-1"

/// Runs `body` against a fresh world whose assessment store is the run's (SQLite, or
/// PostgreSQL with SMARTSCHOOL_TEST_DATABASE_URL) with `replicas` assessment services on it.
func withWorld(replicas: Int = 1, _ body: @Sendable (World) async throws -> Void) async throws {
  let dir = try TemporaryDirectory()
  defer { dir.remove() }
  try await withIdentity { identityPort, _ in
    try await withClient(port: identityPort) { identityClient in
      let identity = IdentityClient(wrapping: identityClient)
      let admin = try await login(identity, "admin", testAdminPassword)
      let auth = bearer(admin)
      func org(
        _ code: String, _ kind: Smartschool_Common_V1_OrgKind, _ parent: String
      ) async throws {
        _ = try await identity.createOrg(
          .with {
            $0.org = .with {
              $0.code = code
              $0.name = "Org " + code
              $0.kind = kind
              $0.parentCode = parent
              if kind == .school {
                $0.schoolKind = .urban
                $0.stages = [.junior]
              }
              if kind == .class {
                $0.grade = 7
                $0.schoolYear = "2025-2026"
              }
            }
          }, metadata: auth)
      }
      try await org("P34", .province, "")
      try await org("C3401", .city, "P34")
      try await org("K1", .county, "C3401")
      try await org("K2", .county, "C3401")
      try await org("S1", .school, "K1")
      try await org("S2", .school, "K1")
      try await org("S3", .school, "K2")
      try await org("CL1a", .class, "S1")
      try await org("CL1b", .class, "S1")
      try await org("CL2", .class, "S2")
      try await org("CL3", .class, "S3")

      let people:
        [(String, Smartschool_Identity_V1_UserKind, String, Smartschool_Identity_V1_Role)] = [
          ("tS1", .teacher, "S1", .teacher), ("tS3", .teacher, "S3", .teacher),
          ("aS1", .staff, "S1", .schoolAdmin), ("aK1", .staff, "K1", .countyAdmin),
          ("stu1", .student, "CL1a", .student), ("stu2", .student, "CL1a", .student),
          ("par1", .parent, "CL1a", .parent),
        ]
      var tokens: [String: String] = ["admin": admin]
      var ids: [String: String] = [:]
      for (name, kind, orgCode, role) in people {
        let user = try await identity.createUser(
          .with {
            $0.user = .with {
              $0.externalID = "ext-" + name
              $0.username = name
              $0.displayName = name
              $0.kind = kind
              $0.orgCode = orgCode
            }
            $0.initialPassword = initialPassword(for: testPassword)
          }, metadata: auth)
        _ = try await identity.grantRole(
          .with {
            $0.userID = user.id
            $0.role = role
            $0.orgCode = orgCode
          }, metadata: auth)
        ids[name] = user.id
        tokens[name] = try await firstLogin(identity, name, testPassword)
      }
      _ = try await identity.linkGuardian(
        .with {
          $0.parentID = ids["par1"]!
          $0.studentID = ids["stu1"]!
        }, metadata: auth)
      let account = try await identity.createServiceAccount(
        .with {
          $0.name = "assessment-sync"
          $0.orgCode = "P34"
          $0.roles = [.dataExchange]
        }, metadata: auth)
      tokens["exchange"] = try await identity.exchangeClientCredentials(
        .with {
          $0.clientID = account.clientID
          $0.clientSecret = account.clientSecret
        }
      ).accessToken

      let link = try IdentityLink(
        address: PeerAddress(host: "127.0.0.1", port: identityPort),
        credentials: (account.clientID, account.clientSecret))
      defer { link.close() }
      let config = try await TestStore.config(service: "assessment", directory: dir)
      var settings = AssessmentSettings()
      settings.directoryPollInterval = .seconds(3600)
      var quiet = Logger(label: "assessment")
      quiet.logLevel = .critical
      var definitions: [ServiceDefinition] = []
      for _ in 0..<replicas {
        let definition = try await buildAssessmentService(
          config: config, settings: settings, verifier: link.makeVerifier(), identity: link,
          logger: quiet)
        try await (definition.background.first as! OrgDirectory).sync()
        definitions.append(definition)
      }
      let directory = definitions[0].background.first as! OrgDirectory
      let frozenTokens = tokens
      func serve(_ rest: ArraySlice<ServiceDefinition>, _ clients: [AssessmentClient])
        async throws
      {
        guard let definition = rest.first else {
          return try await body(
            World(
              identity: identity, replicas: clients, directory: directory, tokens: frozenTokens))
        }
        try await withHost(definition, config: config) { port, _ in
          try await withClient(port: port) { client in
            try await serve(rest.dropFirst(), clients + [AssessmentClient(wrapping: client)])
          }
        }
      }
      try await serve(definitions[...], [])
    }
  }
}

// MARK: the standard exam

/// County K1's unified mathematics exam "M-K1": items 1 (10, KP-A), 2 (10, KP-A and KP-B),
/// 3 (20, KP-B), 4 (10, KP-C); full marks 50.
func standardExam(code: String = "M-K1", org: String = "K1") -> Smartschool_Assessment_V1_Exam {
  .with {
    $0.code = code
    $0.name = "七年级数学期末统考"
    $0.schoolYear = "2025-2026"
    $0.term = 1
    $0.subject = .mathematics
    $0.stage = .junior
    $0.grade = 7
    $0.orgCode = org
    $0.items = [
      item(1, 10, ["KP-A"]), item(2, 10, ["KP-A", "KP-B"]), item(3, 20, ["KP-B"]),
      item(4, 10, ["KP-C"]),
    ]
  }
}

func item(_ number: Int32, _ max: Double, _ points: [String]) -> Smartschool_Assessment_V1_ExamItem
{
  .with {
    $0.number = number
    $0.maxScore = max
    $0.objective = number == 1
    $0.knowledgePoints = points
  }
}

/// The standard results: (student, class, school, item scores). Totals 38, 20, 45, 25, 50.
let standardResults: [(String, String, String, [Double])] = [
  ("ext-stu1", "CL1a", "S1", [10, 8, 15, 5]),
  ("ext-stu2", "CL1a", "S1", [6, 4, 8, 2]),
  ("ext-s3", "CL1b", "S1", [9, 9, 18, 9]),
  ("ext-s4", "CL2", "S2", [5, 5, 10, 5]),
  ("ext-s5", "CL2", "S2", [10, 10, 20, 10]),
]

func rows(
  exam: String = "M-K1", _ results: [(String, String, String, [Double])] = standardResults
) -> [ScoreRow] {
  results.flatMap { student, classCode, school, scores in
    scores.enumerated().map { i, score in
      row(exam, student, classCode, school, Int32(i + 1), score)
    }
  }
}

func row(
  _ exam: String, _ student: String, _ classCode: String, _ school: String, _ item: Int32,
  _ score: Double
) -> ScoreRow {
  .with {
    $0.examCode = exam
    $0.studentExternalID = student
    $0.classCode = classCode
    $0.schoolCode = school
    $0.itemNumber = item
    $0.score = score
  }
}

extension World {
  /// Creates the standard exam as the county admin.
  @discardableResult
  func createStandardExam(_ exam: Smartschool_Assessment_V1_Exam = standardExam()) async throws
    -> Smartschool_Assessment_V1_Exam
  {
    try await assessment.createExam(.with { $0.exam = exam }, metadata: auth("aK1"))
  }

  /// Imports `rows` as `user`.
  func importScores(_ rows: [ScoreRow], as user: String = "aK1") async throws
    -> Smartschool_Common_V1_ImportSummary
  {
    try await assessment.importScores(
      metadata: auth(user), requestProducer: { writer in try await writer.write(contentsOf: rows) })
  }

  /// The standard exam with the standard results imported.
  func scoredExam() async throws {
    try await createStandardExam()
    let summary = try await importScores(rows())
    #expect(summary.accepted == 20 && summary.rejected == 0)
  }

  /// Every exported row of an exam, as "student/item=score".
  func exported(_ exam: String, as user: String = "aK1") async throws -> [String] {
    try await assessment.exportScores(.with { $0.examCode = exam }, metadata: auth(user)) {
      response in
      var lines: [String] = []
      for try await r in response.messages {
        lines.append("\(r.studentExternalID)/\(r.classCode)/\(r.itemNumber)=\(r.score)")
      }
      return lines
    }
  }
}

/// Expects `body` to fail with the gRPC status `code`.
func expectCode<T>(
  _ code: RPCError.Code, sourceLocation: SourceLocation = #_sourceLocation,
  _ body: () async throws -> T
) async {
  do {
    _ = try await body()
    Issue.record("expected \(code), got success", sourceLocation: sourceLocation)
  } catch let error as RPCError {
    #expect(error.code == code, "\(error.message)", sourceLocation: sourceLocation)
  } catch {
    Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
  }
}

/// The field violations an INVALID_ARGUMENT carries in google.rpc.BadRequest.
func fieldViolations(_ body: () async throws -> Void) async -> [String] {
  guard let error = await rpcError(body), error.code == .invalidArgument,
    let status = try? error.unpackGoogleRPCStatus()
  else { return [] }
  return status.details.compactMap(\.badRequest).flatMap { $0.violations.map(\.field) }
}

func near(_ a: Double?, _ b: Double, _ eps: Double = 1e-6) -> Bool {
  guard let a else { return false }
  return abs(a - b) < eps
}
