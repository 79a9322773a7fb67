import Foundation
import Logging
import ServiceRuntime
import SmartSchoolModel

/// The fully qualified gRPC service name of assessment.
public let assessmentGRPCServiceName = "smartschool.assessment.v1.AssessmentService"

/// Settings of the assessment service beyond the host's.
public struct AssessmentSettings: Sendable {
  /// How often the org directory polls identity's change feed.
  public var directoryPollInterval: Duration = .seconds(2)
  /// The clock that stamps records' create and update times (tests set it).
  public var now: @Sendable () -> Date = { Date() }

  /// The defaults.
  public init() {}
}

/// The assessment service's composition root, used by the executable, the tests and the
/// benchmark: opens the store (PostgreSQL when `config.database` is set, else SQLite under
/// `config.dataDirectory`), keeps a copy of identity's org tree, users and guardian links from
/// `identity`'s change feed, and returns the service ready for a ``ServiceHost``. The
/// ``OrgDirectory`` is the definition's first background service.
public func buildAssessmentService(
  config: HostConfig, settings: AssessmentSettings, verifier: TokenVerifier,
  identity: any IdentityChangeSource, logger: Logger = Logger(label: "assessment")
) async throws -> ServiceDefinition {
  let store: any AssessmentStoring
  if let database = config.database {
    store = PostgresAssessmentStore(
      store: try await PostgresStore(
        settings: database, migrations: AssessmentMigrations.postgres, logger: logger),
      logger: logger)
  } else {
    store = try SQLiteAssessmentStore(directory: config.dataDirectory)
  }
  let directory: OrgDirectory
  let examVersion: TableVersion
  do {
    examVersion = try await store.storage.watch(["asm_exams"])
    directory = try await OrgDirectory(
      source: identity, store: store.storage, trackUsers: true,
      pollInterval: settings.directoryPollInterval)
  } catch {
    await store.storage.close()
    throw error
  }
  let api = AssessmentAPI(
    store: store, directory: directory, examVersion: examVersion, now: settings.now)
  return ServiceDefinition(
    name: "assessment", grpcServiceName: assessmentGRPCServiceName, services: [api],
    verifier: verifier, store: store.storage, background: [directory])
}
