import AssessmentService
import CatalogueService
import Foundation
import Logging
import ServiceRuntime
import SupervisionService
import TestSupport
import Testing

/// The composition roots of the services that have no PostgreSQL store yet.
@Suite("Composition roots")
struct BootstrapTests {
  /// Given --database-url, a service whose store is not ported yet (the catalogue) refuses to
  /// start and creates no SQLite store in its place.
  @Test(
    "a service without a PostgreSQL store refuses --database-url",
    arguments: ["catalogue"])
  func refusesDatabase(service: String) async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    var config = HostConfig.ephemeral(service: service, dataDirectory: dir.path + "/data")
    config.database = try DatabaseSettings(
      url: "postgres://\(service)@127.0.0.1:5432/\(service)", poolSize: 2)
    // Never called: the refusal comes before the org directory reads identity's feed.
    let link = try IdentityLink(address: PeerAddress(host: "127.0.0.1", port: 1), credentials: nil)
    defer { link.close() }
    let verifier = link.makeVerifier()
    let error = await #expect(throws: ServiceError.self) {
      switch service {
      case "catalogue":
        _ = try await buildCatalogueService(
          config: config, settings: CatalogueSettings(), verifier: verifier, identity: link,
          logger: Logger(label: "bootstrap-test"))
      case "assessment":
        _ = try await buildAssessmentService(
          config: config, settings: AssessmentSettings(), verifier: verifier, identity: link)
      default:
        _ = try await buildSupervisionService(
          config: config, settings: SupervisionSettings(), verifier: verifier, identity: link)
      }
    }
    #expect(
      error
        == .failedPrecondition("\(service) does not run on PostgreSQL yet; omit --database-url"))
    #expect(!FileManager.default.fileExists(atPath: config.dataDirectory))
  }
}
