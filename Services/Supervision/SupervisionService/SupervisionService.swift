import Foundation
import Logging
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
  /// Lessons per import transaction. Larger batches cost the database less per lesson (one
  /// statement, copy and commit for more rows); a broken stream keeps the batches it
  /// completed, and the stream being imported holds at most two batches in memory.
  public var lessonBatch = 2_000
  /// What a lesson import does with a row whose teacher identity does not know.
  public var unknownTeacherLessons = UnknownTeacherLessons.hold
  /// Early warning's default N of "below standard N teaching weeks running" (1–20).
  public var warningWeeks = Warnings.defaultWeeks
  /// Where the reports read usage from: the kept counts, unless a test switches it to the
  /// lessons to check the counts (``UsageReads``).
  public var usageReads = UsageReads()

  /// The defaults.
  public init() {}
}

/// What a lesson import does with a row whose teacher is not an active teacher identity knows
/// (flag `--unknown-teacher-lessons`). Either way such a lesson never counts as use.
public enum UnknownTeacherLessons: String, Sendable, CaseIterable {
  /// Store it as unverified: listed, counted in no report; a re-import once identity knows the
  /// teacher verifies it.
  case hold
  /// Reject the row (field teacher_external_id).
  case reject
}

/// The composition root of the supervision service, used by the executable, the tests and the
/// benchmark: opens the store (PostgreSQL when `config.database` names one, else SQLite under
/// `config.dataDirectory`), keeps a copy of identity's org tree and users (teachers' birth
/// years) from `identity`'s change feed, and returns the service ready to host. The
/// ``OrgDirectory`` is the definition's first background service.
public func buildSupervisionService(
  config: HostConfig, settings: SupervisionSettings, verifier: TokenVerifier,
  identity: any IdentityChangeSource, logger: Logger = Logger(label: "supervision")
) async throws -> ServiceDefinition {
  let storage: any ServiceStorage
  let store: any SupervisionStoring
  if let database = config.database {
    let postgres = try await PostgresStore(
      settings: database, migrations: SupervisionMigrations.postgres, logger: logger)
    storage = postgres
    store = PostgresSupervisionStore(store: postgres, logger: logger)
  } else {
    let sqlite = try SQLiteSupervisionStore(directory: config.dataDirectory)
    storage = sqlite.storage
    store = sqlite
  }
  let directory: OrgDirectory
  do {
    directory = try await OrgDirectory(
      source: identity, store: storage, trackUsers: true,
      pollInterval: settings.directoryPollInterval)
  } catch {
    if storage.backend == .postgresql { await storage.close() }
    throw error
  }
  let api = SupervisionAPI(
    store: store, directory: directory, now: settings.now, lessonBatch: settings.lessonBatch,
    unknownTeachers: settings.unknownTeacherLessons, warningWeeks: settings.warningWeeks,
    usageReads: settings.usageReads)
  return ServiceDefinition(
    name: "supervision", grpcServiceName: supervisionGRPCServiceName, services: [api],
    verifier: verifier, store: storage, background: [directory])
}
