import Foundation
import ServiceRuntime
import SmartSchoolModel

/// The gRPC service name of supervision.
public let supervisionGRPCServiceName = "smartschool.supervision.v1.SupervisionService"

/// The composition root of the supervision service, used by the executable and by tests:
/// opens the store under `dataDirectory`, keeps a copy of identity's org tree and users
/// (teachers' birth years) from `identity`'s change feed, and returns the service ready to host.
/// The ``OrgDirectory`` is the definition's first background service.
public func buildSupervisionService(
  dataDirectory: String, verifier: TokenVerifier, identity: any IdentityChangeSource,
  pollInterval: Duration = .seconds(2), now: @escaping @Sendable () -> Date = { Date() }
) async throws -> ServiceDefinition {
  let store = try SQLiteSupervisionStore(directory: dataDirectory)
  let directory = try await OrgDirectory(
    source: identity, store: store.store, trackUsers: true, pollInterval: pollInterval)
  let api = SupervisionAPI(store: store, directory: directory, now: now)
  return ServiceDefinition(
    name: "supervision", grpcServiceName: supervisionGRPCServiceName, services: [api],
    verifier: verifier, store: store.store, background: [directory])
}
