import Foundation
import ServiceRuntime
import SmartSchoolModel

/// The gRPC service name of supervision.
public let supervisionGRPCServiceName = "smartschool.supervision.v1.SupervisionService"

/// Settings of the supervision service beyond the host's.
public struct SupervisionSettings: Sendable {
  /// How often the org directory polls identity's change feed.
  public var directoryPollInterval: Duration = .seconds(2)
  /// The clock that stamps records' create and update times (tests set it).
  public var now: @Sendable () -> Date = { Date() }

  /// The defaults.
  public init() {}
}

/// The composition root of the supervision service, used by the executable, the tests and the
/// benchmark: opens the store under `config.dataDirectory`, keeps a copy of identity's org tree
/// and users (teachers' birth years) from `identity`'s change feed, and returns the service
/// ready to host. The ``OrgDirectory`` is the definition's first background service.
/// Refuses `config.database`: the supervision store is SQLite only for now.
public func buildSupervisionService(
  config: HostConfig, settings: SupervisionSettings, verifier: TokenVerifier,
  identity: any IdentityChangeSource
) async throws -> ServiceDefinition {
  try config.requireSQLite()
  let store = try SQLiteSupervisionStore(directory: config.dataDirectory)
  let directory = try await OrgDirectory(
    source: identity, store: store.store, trackUsers: true,
    pollInterval: settings.directoryPollInterval)
  let api = SupervisionAPI(store: store, directory: directory, now: settings.now)
  return ServiceDefinition(
    name: "supervision", grpcServiceName: supervisionGRPCServiceName, services: [api],
    verifier: verifier, store: store.store, background: [directory])
}
