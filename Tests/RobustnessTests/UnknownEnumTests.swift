import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SmartSchoolModel
import TestSupport
import Testing

/// The field violations (path, description) of the INVALID_ARGUMENT `body` throws; empty when it
/// throws anything else or succeeds.
private func violations(
  _ body: () async throws -> Void
) async -> [(field: String, description: String)] {
  guard let error = await rpcError(body), error.code == .invalidArgument,
    let status = try? error.unpackGoogleRPCStatus()
  else { return [] }
  return status.details.compactMap(\.badRequest).flatMap {
    $0.violations.map { ($0.field, $0.violationDescription) }
  }
}

private func fields(_ body: () async throws -> Void) async -> [String] {
  await violations(body).map(\.field)
}

// The streamed imports are in functions of their own: written inline as closures beside the
// unary calls' closures, the Swift 6.3 debug build ran another of the test's closures in their
// place (it also crashed on a variant with a "function type mismatch" between two closures).
private func importOrgsWithABadSecondRow(
  _ identity: IdentityClient, _ auth: Metadata
) async -> [(field: String, description: String)] {
  await violations {
    _ = try await identity.importOrgs(metadata: auth) { writer in
      try await writer.write(
        .with {
          $0.org = .with {
            $0.code = "ENUM-OK"
            $0.name = "有效"
            $0.kind = .school
            $0.parentCode = "EAST1"
            $0.schoolKind = .urban
            $0.stages = [.junior]
          }
        })
      try await writer.write(.with { $0.org.kind = .UNRECOGNIZED(77) })
    }
  }
}

private func importLessonsWithABadThirdRow(
  _ supervision: Smartschool_Supervision_V1_SupervisionService.Client<HTTP2ClientTransport.Posix>,
  _ auth: Metadata
) async -> [(field: String, description: String)] {
  await violations {
    _ = try await supervision.importLessons(metadata: auth) { writer in
      for period in 1...3 {
        try await writer.write(
          .with {
            $0.classroomCode = "WEST9-R1"
            $0.teacherExternalID = "WEST9-T1"
            $0.subject = .mathematics
            $0.date = "2025-09-03"
            $0.period = Int32(period)
            $0.durationMinutes = 40
            $0.source = period == 3 ? .UNRECOGNIZED(9) : .platform
          })
      }
    }
  }
}

@Suite("Unknown enum values: INVALID_ARGUMENT naming the field, in every service")
struct UnknownEnumTests {
  @Test func everyServiceRefusesUnknownEnumValuesWhereverTheyAre() async throws {
    try await withSuite { world in
      let auth = bearer(try await world.adminToken())

      // Identity: a filter, a nested and a repeated field, and an import row.
      let identity = world.identity
      let teachers = try await identity.listRoleBindings(
        .with { $0.role = .teacher }, metadata: auth)
      #expect(!teachers.bindings.isEmpty)
      #expect(
        await fields {
          _ = try await identity.listRoleBindings(
            .with { $0.role = .UNRECOGNIZED(99) }, metadata: auth)
        } == ["role"])
      #expect(
        await fields {
          _ = try await identity.createOrg(
            .with {
              $0.org = .with {
                $0.code = "ENUM-S"
                $0.name = "枚举学校"
                $0.kind = .school
                $0.parentCode = "EAST1"
                $0.schoolKind = .UNRECOGNIZED(99)
                $0.stages = [.junior, .UNRECOGNIZED(42)]
              }
            }, metadata: auth)
        } == ["org.school_kind", "org.stages[1]"])
      let orgImport = await importOrgsWithABadSecondRow(identity, auth)
      #expect(orgImport.map(\.field) == ["org.kind"])
      #expect(orgImport.first?.description.contains("77") == true)
      #expect(orgImport.first?.description.contains("message 1 of the stream") == true)

      // Catalogue: a filter, a repeated field, and an import row inside a oneof.
      try await withClient(port: world.services["catalogue"]!.port) { client in
        let catalogue = Smartschool_Catalogue_V1_CatalogueService.Client(wrapping: client)
        _ = try await catalogue.listResources(
          .with { $0.filter.type = .courseware }, metadata: auth)
        #expect(
          await fields {
            _ = try await catalogue.listResources(
              .with { $0.filter.type = .UNRECOGNIZED(99) }, metadata: auth)
          } == ["filter.type"])
        #expect(
          await fields {
            _ = try await catalogue.recommendResources(
              .with {
                $0.knowledgePointCodes = ["KP-1"]
                $0.types = [.courseware, .UNRECOGNIZED(99)]
              }, metadata: auth)
          } == ["types[1]"])
        let curriculum = await violations {
          _ = try await catalogue.importCurriculum(metadata: auth) { writer in
            try await writer.write(
              .with {
                $0.node = .with {
                  $0.code = "ENUM-ED"
                  $0.name = "版本"
                  $0.kind = .UNRECOGNIZED(50)
                }
              })
          }
        }
        #expect(curriculum.map(\.field) == ["node.kind"])
        #expect(curriculum.first?.description.contains("message 0 of the stream") == true)
      }

      // Assessment: a nested field, and both enums of an import row.
      try await withClient(port: world.services["assessment"]!.port) { client in
        let assessment = Smartschool_Assessment_V1_AssessmentService.Client(wrapping: client)
        #expect(
          await fields {
            _ = try await assessment.createExam(
              .with {
                $0.exam = .with {
                  $0.code = "ENUM-E"
                  $0.name = "枚举"
                  $0.subject = .UNRECOGNIZED(99)
                  $0.stage = .junior
                }
              }, metadata: auth)
          } == ["exam.subject"])
        #expect(
          await fields {
            _ = try await assessment.importQualityEntries(metadata: auth) { writer in
              try await writer.write(
                .with {
                  $0.studentExternalID = "WEST9-ST1"
                  $0.dimension = .UNRECOGNIZED(9)
                  $0.grade = .UNRECOGNIZED(8)
                })
            }
          } == ["dimension", "grade"])
      }

      // Supervision: a nested field, and the third row of a lesson import.
      try await withClient(port: world.services["supervision"]!.port) { client in
        let supervision = Smartschool_Supervision_V1_SupervisionService.Client(wrapping: client)
        #expect(
          await fields {
            _ = try await supervision.createInspection(
              .with {
                $0.inspection = .with {
                  $0.schoolCode = "WEST9-S"
                  $0.date = "2025-10-11"
                  $0.rating = .UNRECOGNIZED(99)
                }
              }, metadata: auth)
          } == ["inspection.rating"])
        let lessons = await importLessonsWithABadThirdRow(supervision, auth)
        #expect(lessons.map(\.field) == ["source"])
        #expect(lessons.first?.description.contains("message 2 of the stream") == true)
      }
    }
  }

  @Test func manyBadCallsAtOnceAndHugeRepeatedFieldsGetAShortClearAnswer() async throws {
    try await withSuite { world in
      let auth = bearer(try await world.adminToken())
      // 64 bad calls and 16 good ones multiplexed on one channel: each bad one is refused on
      // its own, the good ones answer.
      let outcomes = await withTaskGroup(of: (Bool, RPCError.Code?, [String]).self) { group in
        for i in 0..<80 {
          group.addTask {
            let bad = i % 5 != 0
            let request = Smartschool_Identity_V1_ListRoleBindingsRequest.with {
              $0.role = bad ? .UNRECOGNIZED(1000 + i) : .teacher
            }
            let error = await rpcError {
              _ = try await world.identity.listRoleBindings(request, metadata: auth)
            }
            let found = await fields { if let error { throw error } }
            return (bad, error?.code, found)
          }
        }
        return await group.reduce(into: []) { $0.append($1) }
      }
      #expect(outcomes.count == 80)
      for (bad, code, found) in outcomes {
        #expect(code == (bad ? .invalidArgument : nil))
        #expect(found == (bad ? ["role"] : []))
      }

      // 200,000 unknown values in one repeated field (about 600 KB): the answer lists a few
      // and says that more were left out.
      try await withClient(port: world.services["catalogue"]!.port) { client in
        let catalogue = Smartschool_Catalogue_V1_CatalogueService.Client(wrapping: client)
        let found = await violations {
          _ = try await catalogue.recommendResources(
            .with {
              $0.knowledgePointCodes = ["KP-1"]
              $0.types = Array(repeating: .UNRECOGNIZED(123_456), count: 200_000)
            }, metadata: auth)
        }
        #expect(found.count == 10)
        #expect(found.prefix(9).map(\.field) == (0..<9).map { "types[\($0)]" })
        #expect(found.last?.field == "…")
      }
    }
  }
}
