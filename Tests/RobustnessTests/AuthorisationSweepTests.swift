import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf
import TestSupport
import Testing

/// How the sweep treats one RPC. Every RPC of every service needs an entry, so a new RPC
/// cannot slip past the sweep unconsidered.
enum SweepEntry {
  /// Aimed at WEST9 data through the request's fields (named org_code, school_code, id, …);
  /// an answer must never carry WEST9 data.
  case aimed
  /// Answers without a token (login and friends); still aimed, still checked.
  case open
  /// A streamed import: its summary quotes the rows sent (their WEST9 keys), so instead no row
  /// aimed at WEST9 may be accepted.
  case importing
}

/// The sweep table: every RPC of the suite.
let sweepTable: [String: SweepEntry] = {
  var table: [String: SweepEntry] = [:]
  let open: Set<String> = [
    "smartschool.identity.v1.IdentityService/Login",
    "smartschool.identity.v1.IdentityService/Refresh",
    "smartschool.identity.v1.IdentityService/ExchangeClientCredentials",
    "smartschool.identity.v1.IdentityService/ActivateAccount",
    "smartschool.identity.v1.IdentityService/ListSigningKeys",
    "smartschool.identity.v1.IdentityService/LoginSecondFactor",
  ]
  let all = [
    "smartschool.identity.v1.IdentityService": [
      "CreateOrg", "GetOrg", "UpdateOrg", "DeactivateOrg", "ListOrgs", "ImportOrgs",
      "CreateUser", "GetUser", "UpdateUser", "DeactivateUser", "ListUsers", "ImportUsers",
      "IssueActivationCode", "ActivateAccount", "ChangePassword", "LinkGuardian",
      "UnlinkGuardian", "ListChildren", "ListGuardians", "ImportGuardians", "GrantRole",
      "RevokeRole", "ListRoleBindings", "Login", "Refresh", "Logout", "Introspect",
      "ListSigningKeys", "RotateSigningKey", "CreateServiceAccount",
      "ExchangeClientCredentials", "WhoAmI", "ListAuditEvents", "ListChanges",
      "ReactivateUser", "RotateServiceAccountSecret", "UnlockAccount",
      "BeginTotpEnrolment", "ConfirmTotpEnrolment", "DisableTotp", "ResetUserTotp",
      "LoginSecondFactor", "CreateOIDCClient", "UpdateOIDCClient", "ListOIDCClients",
      "DisableOIDCClient", "RotateOIDCClientSecret",
    ],
    "smartschool.catalogue.v1.CatalogueService": [
      "CreateResource", "GetResource", "UpdateResource", "DeleteResource", "ListResources",
      "TransitionResource", "ListTransitions", "SearchResources", "UploadContent",
      "DownloadContent", "ImportCurriculum", "ListCurriculum", "ListKnowledgePoints",
      "GetCaseCoverage", "RecordUsage", "GetResourceStats", "ListPopular",
      "RecommendResources", "ListChanges",
    ],
    "smartschool.supervision.v1.SupervisionService": [
      "CreateTerm", "GetTerm", "ListTerms", "UpdateTerm", "CreateClassroom", "GetClassroom",
      "ListClassrooms", "UpdateClassroom", "ImportLessons", "ImportLessonBatches", "ListLessons",
      "GetComplianceReport", "GetWeeklyNotice", "GetTeacherTargets", "CreateTrainingRecord",
      "GetTrainingReport", "PutFacilityReport", "GetFacilityReport", "GetCoverageReport",
      "CreateInspection", "ListInspections", "GetInspectionSummary", "ListChanges",
      "UpdateInspectionFollowUp", "ListWarnings", "GetRanking", "GetTrends",
    ],
    "smartschool.assessment.v1.AssessmentService": [
      "CreateExam", "GetExam", "ListExams", "UpdateExamItems", "ImportScores",
      "ImportScoreBatches", "ExportScores",
      "GetExamStatistics", "GetStudentReport", "GetClassDiagnosis", "RecordQualityEntry",
      "ImportQualityEntries", "GetQualityProfile", "ListChanges",
      "ListExamRanks", "ListBorderlineStudents", "GetSessionReport", "ListSessionRanks",
      "GetProgress", "GetKnowledgePointReport", "GetOptionAnalysis",
    ],
  ]
  for (service, methods) in all {
    for method in methods {
      let name = service + "/" + method
      table[name] =
        open.contains(name) ? .open : method.hasPrefix("Import") ? .importing : .aimed
    }
  }
  return table
}()

/// Builds a request aimed at WEST9: every field whose name says what it refers to gets the
/// WEST9 entity of that kind; dates and years get values inside the term.
struct AimedRequests {
  let fuzzer: SchemaFuzzer
  let west: [String: String]

  func request(for method: FuzzMethod) -> [UInt8] {
    message(method.inputType, service: method.service, depth: 0)
  }

  private func message(_ typeName: String, service: String, depth: Int) -> [UInt8] {
    guard let message = fuzzer.messages[typeName] else { return [] }
    var out: [UInt8] = []
    for field in message.field {
      let n = Int(field.number)
      switch field.type {
      case .string:
        guard let value = stringValue(field.name, service: service) else { continue }
        SchemaFuzzer.tag(n, 2, into: &out)
        SchemaFuzzer.lengthDelimited(Array(value.utf8), into: &out)
      case .int32, .int64:
        guard let value = intValue(field.name) else { continue }
        SchemaFuzzer.tag(n, 0, into: &out)
        SchemaFuzzer.varint(UInt64(value), into: &out)
      case .message where depth < 2 && !field.typeName.hasPrefix(".google."):
        SchemaFuzzer.tag(n, 2, into: &out)
        SchemaFuzzer.lengthDelimited(
          self.message(field.typeName, service: service, depth: depth + 1), into: &out)
      default:
        continue
      }
    }
    return out
  }

  private func stringValue(_ name: String, service: String) -> String? {
    switch name {
    case "org_code", "scope_org_code", "owner_org_code", "parent_code": "WEST9"
    case "school_code": "WEST9-S"
    case "class_code": "WEST9-S-C1"
    case "classroom_code": "WEST9-R1"
    case "student_external_id", "external_id": "WEST9-ST1"
    case "teacher_external_id": "WEST9-T1"
    case "username": "west9-st1"
    case "org_id", "owner_org_id": west["WEST9"]
    case "parent_id": west["WEST9-PA1"]
    case "user_id", "student_id": west["WEST9-ST1"]
    case "resource_id": west["resource"]
    case "inspection_id": west["inspection"]
    case "id":
      service.contains("catalogue")
        ? west["resource"]
        : service.contains("supervision") ? west["inspection"] : west["WEST9-ST1"]
    case "code":
      service.contains("supervision")
        ? "WEST9-R1" : service.contains("assessment") ? "WEST9-E" : "WEST9-S"
    case "exam_code": "WEST9-E"
    case "term_code", "from_term_code", "to_term_code": "T1"
    case "from_date", "start_date", "from_week", "week", "date": "2025-09-01"
    case "to_date", "end_date", "to_week": "2026-01-30"
    case "school_year": "2025-2026"
    default: nil
    }
  }

  private func intValue(_ name: String) -> Int? {
    switch name {
    case "year": 2025
    case "grade": 7
    case "term": 1
    default: nil
    }
  }
}

@Suite("Authorisation sweep: every RPC as every role of a sibling county")
struct AuthorisationSweepTests {
  @Test func theSweepTableCoversEveryRPC() throws {
    let fuzzer = try SchemaFuzzer()
    let swept = Set(
      ["identity", "catalogue", "supervision", "assessment"].map { "smartschool.\($0).v1." })
    let methods = Set(
      fuzzer.methods.filter { m in swept.contains { m.service.hasPrefix($0) } }.map(\.fullName))
    #expect(methods.subtracting(sweepTable.keys).isEmpty, "RPCs without a sweep entry")
    #expect(Set(sweepTable.keys).subtracting(methods).isEmpty, "entries for no RPC")
  }

  @Test func nothingOfASiblingCountyIsEverReturned() async throws {
    let fuzzer = try SchemaFuzzer()
    try await withSuite { world in
      let aimed = AimedRequests(fuzzer: fuzzer, west: world.west)
      // WEST9 codes all contain "WEST9"; its entities' ids are markers too.
      let markers = [Array("WEST9".utf8)] + world.west.values.map { Array($0.utf8) }
      var callers: [(String, Metadata)] = []
      for holder in eastRoles {
        let username = "east1-" + holder.name.replacingOccurrences(of: "_", with: "-")
        let token = try await login(world.identity, username, sweepPassword)
        callers.append((holder.name, bearer(token)))
      }
      let exchange = try await world.identity.exchangeClientCredentials(
        .with {
          $0.clientID = world.eastExchange.clientID
          $0.clientSecret = world.eastExchange.clientSecret
        })
      callers.append(("data_exchange", bearer(exchange.accessToken)))
      var answered = 0
      var refused = 0
      for (_, (port, definition)) in world.services.sorted(by: { $0.key < $1.key }) {
        try await withClient(port: port) { client in
          for method in fuzzer.methods where method.service == definition.grpcServiceName {
            #expect(sweepTable[method.fullName] != nil, "no sweep entry for \(method.fullName)")
            let request = aimed.request(for: method)
            for (role, metadata) in callers {
              let (code, responses) = await callCollecting(
                client, method, messages: [request], metadata: metadata)
              guard code == nil else {
                refused += 1
                #expect(
                  !uncontrolledCodes.contains(code!), "\(method.fullName) as \(role): \(code!)")
                continue
              }
              answered += 1
              if sweepTable[method.fullName] == .importing {
                let summary = try Smartschool_Common_V1_ImportSummary(
                  serializedBytes: responses.first ?? [])
                #expect(
                  summary.accepted == 0,
                  "\(method.fullName) as EAST1 \(role) accepted rows aimed at WEST9")
                continue
              }
              for response in responses {
                for marker in markers where response.contains(marker) {
                  let found = String(decoding: marker, as: UTF8.self)
                  Issue.record("\(method.fullName) as EAST1 \(role) returned WEST9 data (\(found))")
                }
              }
            }
          }
        }
      }
      // The sweep reached the handlers: some calls were answered (within scope), most refused.
      #expect(answered > 0 && refused > 0, "answered \(answered), refused \(refused)")
      // And the WEST9 data is really there: its own county admin sees it.
      let admin = bearer(try await world.adminToken())
      let resource = try await withClient(port: world.services["catalogue"]!.port) { client in
        try await Smartschool_Catalogue_V1_CatalogueService.Client(wrapping: client)
          .getResource(.with { $0.id = world.west["resource"]! }, metadata: admin)
      }
      #expect(resource.title.contains("WEST9"))
    }
  }
}

/// Calls `method` and returns the status code (nil = OK) and the response messages.
func callCollecting(
  _ client: GRPCClient<HTTP2ClientTransport.Posix>, _ method: FuzzMethod, messages: [[UInt8]],
  metadata: Metadata
) async -> (RPCError.Code?, [[UInt8]]) {
  var options = CallOptions.defaults
  options.timeout = .seconds(20)
  let request = StreamingClientRequest<[UInt8]>(metadata: metadata) { writer in
    try await writer.write(contentsOf: messages)
  }
  do {
    let responses = try await client.bidirectionalStreaming(
      request: request,
      descriptor: MethodDescriptor(fullyQualifiedService: method.service, method: method.name),
      serializer: RawSerializer(), deserializer: RawDeserializer(), options: options
    ) { response in
      var all: [[UInt8]] = []
      for try await message in response.messages { all.append(message) }
      return all
    }
    return (nil, responses)
  } catch let error as RPCError {
    return (error.code, [])
  } catch {
    return (.unknown, [])
  }
}

extension Array where Element == UInt8 {
  /// True when `needle` occurs in these bytes.
  func contains(_ needle: [UInt8]) -> Bool {
    guard !needle.isEmpty, needle.count <= count else { return false }
    for start in 0...(count - needle.count) where self[start] == needle[0] {
      if Array(self[start..<(start + needle.count)]) == needle { return true }
    }
    return false
  }
}
