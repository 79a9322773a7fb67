import Foundation
import ServiceRuntime
import SmartSchoolModel

/// The fully qualified gRPC service name of assessment.
public let assessmentGRPCServiceName = "smartschool.assessment.v1.AssessmentService"

/// The assessment service's composition root, used by the executable, the tests and the
/// benchmark: opens the store under `dataDirectory`, keeps a copy of identity's org tree,
/// users and guardian links from `identity`'s change feed, and returns the service ready for
/// a ``ServiceHost``. The ``OrgDirectory`` is the definition's first background service.
public func buildAssessmentService(
  dataDirectory: String, verifier: TokenVerifier, identity: any IdentityChangeSource,
  pollInterval: Duration = .seconds(2), now: @escaping @Sendable () -> Date = { Date() }
) async throws -> ServiceDefinition {
  let store = try SQLiteAssessmentStore(directory: dataDirectory)
  let directory = try await OrgDirectory(
    source: identity, store: store.store, trackUsers: true, pollInterval: pollInterval)
  let api = AssessmentAPI(store: store, directory: directory, now: now)
  return ServiceDefinition(
    name: "assessment", grpcServiceName: assessmentGRPCServiceName, services: [api],
    verifier: verifier, store: store.store, background: [directory])
}
