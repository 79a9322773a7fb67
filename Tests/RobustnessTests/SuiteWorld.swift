import AssessmentService
import CatalogueService
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import IdentityService
import Logging
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import TestSupport

typealias IdentityClient = Smartschool_Identity_V1_IdentityService.Client<
  HTTP2ClientTransport.Posix
>

/// The services under test, all in-process on ephemeral ports: a real identity with two
/// sibling counties under one city, EAST1 and WEST9, each with a school `<county>-S`, a class
/// `<county>-S-C1`, a teacher `<county>-T1`, a student `<county>-ST1` and a parent
/// `<county>-PA1` linked to them; EAST1 also has a holder of every role (user names
/// `east1-<role>`, password ``sweepPassword``). The other services follow the tree with a
/// province data-exchange service account; the WEST9 side has data in each of them.
struct SuiteWorld: Sendable {
  /// Service name ("identity", …) → its gRPC port and definition.
  let services: [String: (port: Int, definition: ServiceDefinition)]
  let identity: IdentityClient
  /// Identity's ids of the WEST9 entities (org ids by code, user ids by external id) and the
  /// ids the other services gave WEST9 data ("resource", "inspection").
  let west: [String: String]
  /// The data-exchange service account held at EAST1.
  let eastExchange: (clientID: String, clientSecret: String)

  /// A fresh admin token (a fuzzed Logout may end the previous session).
  func adminToken() async throws -> String {
    try await login(identity, "admin", testAdminPassword)
  }
}

let sweepPassword = "Sweep-pass-1"

/// The roles held on the EAST1 side, and the org each is held at.
let eastRoles: [(role: Smartschool_Identity_V1_Role, name: String, org: String)] = [
  (.countyAdmin, "county_admin", "EAST1"), (.schoolAdmin, "school_admin", "EAST1-S"),
  (.teacher, "teacher", "EAST1-S"), (.student, "student", "EAST1-S-C1"),
  (.parent, "parent", "EAST1-S-C1"), (.inspector, "inspector", "EAST1"),
  (.resourceReviewer, "resource_reviewer", "EAST1"),
]

func withSuite(_ body: @Sendable (SuiteWorld) async throws -> Void) async throws {
  let dir = try TemporaryDirectory()
  defer { dir.remove() }
  try await withIdentity { identityPort, identityHost in
    try await withClient(port: identityPort) { client in
      let identity = IdentityClient(wrapping: client)
      let auth = bearer(try await login(identity, "admin", testAdminPassword))
      var west: [String: String] = [:]
      func org(
        _ code: String, _ kind: Smartschool_Common_V1_OrgKind, _ parent: String
      ) async throws {
        let created = try await identity.createOrg(
          .with {
            $0.org = .with {
              $0.code = code
              $0.name = "机构" + code
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
        if code.hasPrefix("WEST9") { west[code] = created.id }
      }
      func user(
        _ externalID: String, _ kind: Smartschool_Identity_V1_UserKind, _ orgCode: String,
        role: Smartschool_Identity_V1_Role? = nil, username: String? = nil
      ) async throws -> String {
        let created = try await identity.createUser(
          .with {
            $0.user = .with {
              $0.externalID = externalID
              $0.username = username ?? externalID.lowercased()
              $0.displayName = "用户" + externalID
              $0.kind = kind
              $0.orgCode = orgCode
            }
            $0.initialPassword = initialPassword(for: sweepPassword)
          }, metadata: auth)
        _ = try await firstLogin(identity, created.username, sweepPassword)
        if let role {
          _ = try await identity.grantRole(
            .with {
              $0.userID = created.id
              $0.role = role
              $0.orgCode = orgCode
            }, metadata: auth)
        }
        if externalID.hasPrefix("WEST9") { west[externalID] = created.id }
        return created.id
      }
      try await org("P", .province, "")
      try await org("C", .city, "P")
      for county in ["EAST1", "WEST9"] {
        try await org(county, .county, "C")
        try await org(county + "-S", .school, county)
        try await org(county + "-S-C1", .class, county + "-S")
        _ = try await user(county + "-T1", .teacher, county + "-S", role: .teacher)
        let student = try await user(
          county + "-ST1", .student, county + "-S-C1", role: .student)
        let parent = try await user(county + "-PA1", .parent, county + "-S-C1", role: .parent)
        _ = try await identity.linkGuardian(
          .with {
            $0.parentID = parent
            $0.studentID = student
          }, metadata: auth)
      }
      _ = try await user("WEST9-REV", .staff, "WEST9", role: .resourceReviewer)
      for holder in eastRoles {
        let kind: Smartschool_Identity_V1_UserKind =
          holder.role == .student ? .student : holder.role == .parent ? .parent
          : holder.role == .teacher ? .teacher : .staff
        _ = try await user(
          "EAST1-" + holder.name, kind, holder.org, role: holder.role,
          username: "east1-" + holder.name.replacingOccurrences(of: "_", with: "-"))
      }
      let account = try await identity.createServiceAccount(
        .with {
          $0.name = "suite-sync"
          $0.orgCode = "P"
          $0.roles = [.dataExchange]
        }, metadata: auth)
      let east = try await identity.createServiceAccount(
        .with {
          $0.name = "east1-exchange"
          $0.orgCode = "EAST1"
          $0.roles = [.dataExchange]
        }, metadata: auth)
      let link = try IdentityLink(
        address: PeerAddress(host: "127.0.0.1", port: identityPort),
        credentials: (account.clientID, account.clientSecret))
      defer { link.close() }
      var logger = Logger(label: "suite-test")
      logger.logLevel = .critical

      var catalogueSettings = CatalogueSettings()
      catalogueSettings.maxUploadBytes = 64 * 1024
      let catalogueConfig = HostConfig.ephemeral(
        service: "catalogue", dataDirectory: dir.path + "/catalogue")
      let catalogue = try await buildCatalogueService(
        config: catalogueConfig, settings: catalogueSettings, verifier: link.makeVerifier(),
        identity: link, logger: logger)
      let supervisionConfig = HostConfig.ephemeral(
        service: "supervision", dataDirectory: dir.path + "/supervision")
      let supervision = try await buildSupervisionService(
        config: supervisionConfig, settings: SupervisionSettings(),
        verifier: link.makeVerifier(), identity: link)
      let assessmentConfig = HostConfig.ephemeral(
        service: "assessment", dataDirectory: dir.path + "/assessment")
      let assessment = try await buildAssessmentService(
        config: assessmentConfig, settings: AssessmentSettings(),
        verifier: link.makeVerifier(), identity: link)
      for definition in [catalogue, supervision, assessment] {
        for case let directory as OrgDirectory in definition.background {
          try await directory.sync()
        }
      }
      let identityDefinition = identityHost.definition
      try await withHost(catalogue, config: catalogueConfig) { cataloguePort, _ in
        try await withHost(supervision, config: supervisionConfig) { supervisionPort, _ in
          try await withHost(assessment, config: assessmentConfig) { assessmentPort, _ in
            try await seedWest(
              &west, identity: identity, cataloguePort: cataloguePort,
              supervisionPort: supervisionPort, assessmentPort: assessmentPort, admin: auth)
            try await body(
              SuiteWorld(
                services: [
                  "identity": (identityPort, identityDefinition),
                  "catalogue": (cataloguePort, catalogue),
                  "supervision": (supervisionPort, supervision),
                  "assessment": (assessmentPort, assessment),
                ], identity: identity, west: west,
                eastExchange: (east.clientID, east.clientSecret)))
          }
        }
      }
    }
  }
}

/// WEST9 data in the other services: a county-shared published resource and a draft, a
/// classroom with a lesson, a facility report, a training record and an inspection, an exam
/// run by the county with its student's scores, and a quality-evaluation entry.
func seedWest(
  _ west: inout [String: String], identity: IdentityClient, cataloguePort: Int,
  supervisionPort: Int, assessmentPort: Int, admin: Metadata
) async throws {
  try await withClient(port: assessmentPort) { client in
    let assessment = Smartschool_Assessment_V1_AssessmentService.Client(wrapping: client)
    _ = try await assessment.createExam(
      .with {
        $0.exam = .with {
          $0.code = "WEST9-E"
          $0.name = "WEST9 期中数学"
          $0.schoolYear = "2025-2026"
          $0.term = 1
          $0.subject = .mathematics
          $0.stage = .junior
          $0.grade = 7
          $0.orgCode = "WEST9"
          $0.items = [1, 2].map { n in
            .with {
              $0.number = Int32(n)
              $0.maxScore = 10
              $0.objective = n == 1
              $0.knowledgePoints = ["KP-WEST9-\(n)"]
            }
          }
        }
      }, metadata: admin)
    let summary = try await assessment.importScores(
      metadata: admin,
      requestProducer: { writer in
        for item in [1, 2] {
          try await writer.write(
            .with {
              $0.examCode = "WEST9-E"
              $0.studentExternalID = "WEST9-ST1"
              $0.classCode = "WEST9-S-C1"
              $0.schoolCode = "WEST9-S"
              $0.itemNumber = Int32(item)
              $0.score = 7
            })
        }
      })
    guard summary.accepted == 2 else { throw RPCError(code: .internalError, message: "\(summary)") }
    _ = try await assessment.recordQualityEntry(
      .with {
        $0.studentExternalID = "WEST9-ST1"
        $0.schoolCode = "WEST9-S"
        $0.schoolYear = "2025-2026"
        $0.term = 1
        $0.dimension = .init(rawValue: 1) ?? .unspecified
        $0.title = "WEST9 志愿服务"
        $0.description_p = "WEST9 社区志愿服务"
        $0.grade = .init(rawValue: 1) ?? .unspecified
      }, metadata: admin)
  }
  let teacher = bearer(try await login(identity, "west9-t1", sweepPassword))
  let reviewer = bearer(try await login(identity, "west9-rev", sweepPassword))
  west["resource"] = try await withClient(port: cataloguePort) { client in
    let catalogue = Smartschool_Catalogue_V1_CatalogueService.Client(wrapping: client)
    var published = ""
    for (title, scope) in [("WEST9 县级共享课件", 2), ("WEST9 草稿", 1)] {
      let resource = try await catalogue.createResource(
        .with {
          $0.resource = .with {
            $0.title = title
            $0.type = .courseware
            $0.stage = .junior
            $0.grade = 7
            $0.subject = .mathematics
            $0.sharingScope = .init(rawValue: scope) ?? .school
          }
        }, metadata: teacher)
      if scope == 2 {
        // Only a resource with content is submitted.
        let content = Data("WEST9 课件内容".utf8)
        _ = try await catalogue.uploadContent(metadata: teacher) { writer in
          try await writer.write(
            .with {
              $0.resourceID = resource.id
              $0.header = .with {
                $0.sha256 = sha256Hex(content)
                $0.sizeBytes = Int64(content.count)
              }
            })
          try await writer.write(
            .with {
              $0.resourceID = resource.id
              $0.data = content
            })
        }
        _ = try await catalogue.transitionResource(
          .with {
            $0.id = resource.id
            $0.action = .submit
          }, metadata: teacher)
        _ = try await catalogue.transitionResource(
          .with {
            $0.id = resource.id
            $0.action = .approve
          }, metadata: reviewer)
        published = resource.id
      }
    }
    return published
  }
  west["inspection"] = try await withClient(port: supervisionPort) { client in
    let supervision = Smartschool_Supervision_V1_SupervisionService.Client(wrapping: client)
    _ = try await supervision.createTerm(
      .with {
        $0.term = .with {
          $0.code = "T1"
          $0.name = "第一学期"
          $0.startDate = "2025-09-01"
          $0.endDate = "2026-01-30"
        }
      }, metadata: admin)
    _ = try await supervision.createClassroom(
      .with {
        $0.classroom = .with {
          $0.code = "WEST9-R1"
          $0.name = "WEST9 智慧教室"
          $0.schoolCode = "WEST9-S"
          $0.equippedDate = "2025-08-25"
        }
      }, metadata: admin)
    _ = try await supervision.importLessons(
      metadata: admin,
      requestProducer: { writer in
        try await writer.write(
          .with {
            $0.classroomCode = "WEST9-R1"
            $0.teacherExternalID = "WEST9-T1"
            $0.subject = .mathematics
            $0.date = "2025-09-02"
            $0.period = 1
            $0.durationMinutes = 40
            $0.source = .platform
          })
      })
    _ = try await supervision.putFacilityReport(
      .with {
        $0.report = .with {
          $0.schoolCode = "WEST9-S"
          $0.year = 2025
          $0.students = 500
          $0.teachers = 40
        }
      }, metadata: admin)
    _ = try await supervision.createTrainingRecord(
      .with {
        $0.record = .with {
          $0.teacherExternalID = "WEST9-T1"
          $0.course = "WEST9 信息技术培训"
          $0.hours = 10
          $0.completedDate = "2025-10-01"
        }
      }, metadata: admin)
    let inspection = try await supervision.createInspection(
      .with {
        $0.inspection = .with {
          $0.schoolCode = "WEST9-S"
          $0.inspector = "督导员"
          $0.date = "2025-10-10"
          $0.classroomCode = "WEST9-R1"
          $0.teacherExternalID = "WEST9-T1"
          $0.subject = .mathematics
          $0.findings = "WEST9 课堂记录"
          $0.rating = .init(rawValue: 1) ?? .unspecified
        }
      }, metadata: admin)
    return inspection.id
  }
}
