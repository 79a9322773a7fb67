import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import IdentityService
import ServiceRuntime
import SmartSchoolModel
import TestSupport

typealias IdentityClient = Smartschool_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix>
typealias Org = Smartschool_Identity_V1_Org
typealias User = Smartschool_Identity_V1_User

/// A small tree: province P → city C → counties A and B → schools SA1, SA2 (in A), SB1 (in B)
/// → classes. Built through the API as the bootstrap admin.
struct Tree {
  var province: Org
  var city: Org
  var countyA: Org
  var countyB: Org
  var schoolA1: Org
  var schoolA2: Org
  var schoolB1: Org
  var classA1: Org
  var classB1: Org
}

func org(
  _ code: String, _ name: String, _ kind: Smartschool_Common_V1_OrgKind, parent: String = "",
  schoolKind: Smartschool_Common_V1_SchoolKind = .unspecified, grade: Int32 = 0,
  year: String = ""
) -> Org {
  .with {
    $0.code = code
    $0.name = name
    $0.kind = kind
    $0.parentCode = parent
    $0.schoolKind = schoolKind
    $0.grade = grade
    $0.schoolYear = year
    if kind == .school { $0.stages = [.primary] }
  }
}

func buildTree(_ identity: IdentityClient, admin: String) async throws -> Tree {
  func create(_ o: Org) async throws -> Org {
    try await identity.createOrg(.with { $0.org = o }, metadata: bearer(admin))
  }
  let p = try await create(org("P34", "安徽省", .province))
  let c = try await create(org("C3401", "合肥市", .city, parent: "P34"))
  let a = try await create(org("K340121", "长丰县", .county, parent: "C3401"))
  let b = try await create(org("K340122", "肥东县", .county, parent: "C3401"))
  let sa1 = try await create(org("S-A1", "长丰县第一小学", .school, parent: "K340121", schoolKind: .urban))
  let sa2 = try await create(org("S-A2", "岗集镇中心校", .school, parent: "K340121", schoolKind: .rural))
  let sb1 = try await create(org("S-B1", "肥东县第一小学", .school, parent: "K340122", schoolKind: .urban))
  let ca1 = try await create(org("CL-A1-3-1", "三年级1班", .`class`, parent: "S-A1", grade: 3, year: "2020-2021"))
  let cb1 = try await create(org("CL-B1-3-1", "三年级1班", .`class`, parent: "S-B1", grade: 3, year: "2020-2021"))
  return Tree(
    province: p, city: c, countyA: a, countyB: b, schoolA1: sa1, schoolA2: sa2, schoolB1: sb1,
    classA1: ca1, classB1: cb1)
}

func newUser(
  _ identity: IdentityClient, admin: String, externalID: String, username: String,
  kind: Smartschool_Identity_V1_UserKind, org: String, password: String = "Secret-pass-1",
  birthYear: Int32 = 0
) async throws -> User {
  // Created with an admin-set password, which the first login replaces with `password`.
  let user = try await identity.createUser(
    .with {
      $0.user = .with {
        $0.externalID = externalID
        $0.username = username
        $0.displayName = username
        $0.kind = kind
        $0.orgCode = org
        $0.birthYear = birthYear
      }
      $0.initialPassword = initialPassword(for: password)
    }, metadata: bearer(admin))
  // That login's session ends at once, so tests see only the sessions they open.
  let token = try await firstLogin(identity, username, password)
  _ = try await identity.logout(.init(), metadata: bearer(token))
  return user
}

func grant(
  _ identity: IdentityClient, token: String, user: String, role: Smartschool_Identity_V1_Role,
  org: String
) async throws -> Smartschool_Identity_V1_RoleBinding {
  try await identity.grantRole(
    .with {
      $0.userID = user
      $0.role = role
      $0.orgCode = org
    }, metadata: bearer(token))
}

/// Runs `body` against a fresh identity with the tree built and the admin logged in.
func withTree(
  settings: IdentitySettings = .forTests(),
  _ body: (IdentityClient, String, Tree) async throws -> Void
) async throws {
  try await withIdentity(settings: settings) { port, _ in
    try await withClient(port: port) { client in
      let identity = IdentityClient(wrapping: client)
      let admin = try await login(identity, "admin", testAdminPassword)
      let tree = try await buildTree(identity, admin: admin)
      try await body(identity, admin, tree)
    }
  }
}

/// The field violations an INVALID_ARGUMENT carries in google.rpc.BadRequest.
func fieldViolations(_ error: RPCError?) -> [String] {
  guard let error, let status = try? error.unpackGoogleRPCStatus() else { return [] }
  return status.details.compactMap(\.badRequest).flatMap { $0.violations.map(\.field) }
}
