import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf
import Testing

@Suite("EnumValueCheck: unknown enum values found by proto field path")
struct EnumValueCheckTests {
  let check = EnumValueCheck.suite

  @Test func walksOnlyTypesThatCanHoldAnEnum() {
    #expect(check.walks(Smartschool_Identity_V1_ListRoleBindingsRequest.self))
    #expect(check.walks(Smartschool_Identity_V1_CreateOrgRequest.self))
    #expect(check.walks(Smartschool_Catalogue_V1_ImportCurriculumRequest.self))
    #expect(check.walks(Smartschool_Common_V1_ListChangesResponse.self))
    #expect(!check.walks(Smartschool_Identity_V1_GetOrgRequest.self))
    #expect(!check.walks(Smartschool_Assessment_V1_GetExamRequest.self))
    #expect(!check.walks(Grpc_Health_V1_HealthCheckRequest.self))
    #expect(!check.walks(String.self))
  }

  @Test func namesTopLevelNestedRepeatedAndOneofFields() {
    let top = check.violations(
      in: Smartschool_Identity_V1_ListRoleBindingsRequest.with { $0.role = .UNRECOGNIZED(99) })
    #expect(top.map(\.field) == ["role"])
    #expect(top.first?.description == "unknown value 99 of enum smartschool.identity.v1.Role")

    let nested = check.violations(
      in: Smartschool_Identity_V1_CreateOrgRequest.with {
        $0.org.kind = .school
        $0.org.schoolKind = .UNRECOGNIZED(-3)
        $0.org.stages = [.junior, .UNRECOGNIZED(7), .senior, .UNRECOGNIZED(8)]
      })
    #expect(nested.map(\.field) == ["org.school_kind", "org.stages[1]", "org.stages[3]"])

    let repeatedMessages = check.violations(
      in: Smartschool_Common_V1_ListChangesResponse.with {
        $0.changes = [.with { $0.op = .upsert }, .with { $0.op = .upsert }, .with {
          $0.op = .UNRECOGNIZED(5)
        }]
      })
    #expect(repeatedMessages.map(\.field) == ["changes[2].op"])

    let oneof = check.violations(
      in: Smartschool_Catalogue_V1_ImportCurriculumRequest.with {
        $0.node = .with {
          $0.kind = .UNRECOGNIZED(50)
          $0.subject = .UNRECOGNIZED(51)
        }
      }, streamIndex: 4)
    #expect(oneof.map(\.field) == ["node.kind", "node.subject"])
    #expect(oneof.allSatisfy { $0.description.hasSuffix("(in message 4 of the stream)") })
  }

  @Test func knownValuesAndUnsetFieldsPass() {
    #expect(
      check.violations(
        in: Smartschool_Identity_V1_CreateOrgRequest.with {
          $0.org.kind = .school
          $0.org.schoolKind = .urban
          $0.org.stages = [.primary, .junior, .senior]
        }
      ).isEmpty)
    #expect(check.violations(in: Smartschool_Identity_V1_CreateOrgRequest()).isEmpty)
    // A value decoded from the wire: what the services see.
    let wire: [UInt8] = [0x18, 0x63]  // field 3 (role), varint 99
    let decoded = try? Smartschool_Identity_V1_ListRoleBindingsRequest(serializedBytes: wire)
    #expect(decoded.map { check.violations(in: $0).map(\.field) } == ["role"])
  }

  @Test func aHugeRepeatedFieldReportsTenAtMost() {
    let found = check.violations(
      in: Smartschool_Identity_V1_CreateOrgRequest.with {
        $0.org.stages = Array(repeating: .UNRECOGNIZED(1234), count: 500_000)
      })
    #expect(found.count == EnumValueCheck.reportLimit)
    #expect(found.prefix(9).map(\.field) == (0..<9).map { "org.stages[\($0)]" })
    #expect(found.last?.field == "…")
  }

  /// google.protobuf.Struct, described by hand: a map whose message values can hold an enum
  /// (Value.null_value), through recursive types (Value → ListValue → Value, Value → Struct).
  static let structCheck = EnumValueCheck(
    descriptorSet: .with {
      $0.file = [
        .with {
          $0.name = "google/protobuf/struct.proto"
          $0.package = "google.protobuf"
          $0.enumType = [
            .with {
              $0.name = "NullValue"
              $0.value = [.with { $0.name = "NULL_VALUE" }]
            }
          ]
          $0.messageType = [
            .with {
              $0.name = "Struct"
              $0.field = [field("fields", 1, .message, ".google.protobuf.Struct.FieldsEntry")]
              $0.nestedType = [
                .with {
                  $0.name = "FieldsEntry"
                  $0.options.mapEntry = true
                  $0.field = [
                    field("key", 1, .string), field("value", 2, .message, ".google.protobuf.Value"),
                  ]
                }
              ]
            },
            .with {
              $0.name = "Value"
              $0.field = [
                field("null_value", 1, .enum, ".google.protobuf.NullValue"),
                field("number_value", 2, .double), field("string_value", 3, .string),
                field("bool_value", 4, .bool),
                field("struct_value", 5, .message, ".google.protobuf.Struct"),
                field("list_value", 6, .message, ".google.protobuf.ListValue"),
              ]
            },
            .with {
              $0.name = "ListValue"
              $0.field = [field("values", 1, .message, ".google.protobuf.Value")]
            },
          ]
        }
      ]
    })

  static func field(
    _ name: String, _ number: Int32, _ type: Google_Protobuf_FieldDescriptorProto.TypeEnum,
    _ typeName: String = ""
  ) -> Google_Protobuf_FieldDescriptorProto {
    .with {
      $0.name = name
      $0.number = number
      $0.type = type
      $0.typeName = typeName
    }
  }

  @Test func mapValuesAndRecursiveTypes() {
    let check = Self.structCheck
    #expect(check.walks(Google_Protobuf_Struct.self))
    #expect(check.walks(Google_Protobuf_ListValue.self))
    let value = Google_Protobuf_Struct.with {
      $0.fields["ok"] = .with { $0.nullValue = .nullValue }
      $0.fields["list"] = .with {
        $0.listValue.values = [.with { $0.numberValue = 1 }, .with { $0.nullValue = .UNRECOGNIZED(3) }]
      }
      $0.fields["deep"] = .with {
        $0.structValue.fields["inner"] = .with { $0.nullValue = .UNRECOGNIZED(4) }
      }
    }
    let found = check.violations(in: value).map(\.field).sorted()
    #expect(
      found == [
        #"fields["deep"].struct_value.fields["inner"].null_value"#,
        #"fields["list"].list_value.values[1].null_value"#,
      ])
    #expect(check.violations(in: Google_Protobuf_Struct.with { $0.fields["a"] = .init() }).isEmpty)
  }
}
