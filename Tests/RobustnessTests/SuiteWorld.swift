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

/// The services under test, all in-process on ephemeral ports: a real identity with a small
/// tree (province P → city C → counties K1, K2, each with a school and a class, a student in
/// each class), and the other services following it with a data-exchange service account.
struct SuiteWorld: Sendable {
  /// Service name ("identity", …) → its gRPC port and definition.
  let services: [String: (port: Int, definition: ServiceDefinition)]
  let identity: IdentityClient

  /// A fresh admin token (a fuzzed Logout may end the previous session).
  func adminToken() async throws -> String {
    try await login(identity, "admin", testAdminPassword)
  }
}

func withSuite(_ body: @Sendable (SuiteWorld) async throws -> Void) async throws {
  let dir = try TemporaryDirectory()
  defer { dir.remove() }
  try await withIdentity { identityPort, identityHost in
    try await withClient(port: identityPort) { client in
      let identity = IdentityClient(wrapping: client)
      let auth = bearer(try await login(identity, "admin", testAdminPassword))
      func org(
        _ code: String, _ kind: Smartschool_Common_V1_OrgKind, _ parent: String
      ) -> Smartschool_Identity_V1_ImportOrgsRequest {
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
        }
      }
      var rows = [org("P", .province, ""), org("C", .city, "P")]
      for county in ["K1", "K2"] {
        rows += [
          org(county, .county, "C"), org(county + "-S", .school, county),
          org(county + "-S-C1", .class, county + "-S"),
        ]
      }
      let frozenRows = rows
      _ = try await identity.importOrgs(
        metadata: auth, requestProducer: { try await $0.write(contentsOf: frozenRows) })
      _ = try await identity.importUsers(
        metadata: auth,
        requestProducer: { writer in
          for county in ["K1", "K2"] {
            try await writer.write(
              .with {
                $0.user = .with {
                  $0.externalID = county + "-ST1"
                  $0.username = county.lowercased() + "-st1"
                  $0.displayName = "学生"
                  $0.kind = .student
                  $0.orgCode = county + "-S-C1"
                }
              })
          }
        })
      let account = try await identity.createServiceAccount(
        .with {
          $0.name = "suite-sync"
          $0.orgCode = "P"
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
      let catalogue = try buildCatalogueService(
        config: catalogueConfig, settings: catalogueSettings, verifier: link.makeVerifier(),
        identity: link, logger: logger)
      let supervisionConfig = HostConfig.ephemeral(
        service: "supervision", dataDirectory: dir.path + "/supervision")
      let supervision = try buildSupervisionService(
        dataDirectory: supervisionConfig.dataDirectory, verifier: link.makeVerifier(),
        identity: link)
      for definition in [catalogue, supervision] {
        for case let directory as OrgDirectory in definition.background {
          try await directory.sync()
        }
      }
      let identityDefinition = identityHost.definition
      try await withHost(catalogue, config: catalogueConfig) { cataloguePort, _ in
        try await withHost(supervision, config: supervisionConfig) { supervisionPort, _ in
          try await body(
            SuiteWorld(
              services: [
                "identity": (identityPort, identityDefinition),
                "catalogue": (cataloguePort, catalogue),
                "supervision": (supervisionPort, supervision),
              ], identity: identity))
        }
      }
    }
  }
}
