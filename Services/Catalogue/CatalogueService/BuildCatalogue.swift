import Foundation
import Logging
import ServiceRuntime
import SmartSchoolModel

/// The fully qualified gRPC service name.
public let catalogueGRPCServiceName = "smartschool.catalogue.v1.CatalogueService"

/// Settings of the catalogue beyond the host's.
public struct CatalogueSettings: Sendable {
  /// Largest content accepted by UploadContent, in bytes.
  public var maxUploadBytes: Int64 = 512 * 1024 * 1024
  /// Size of the chunks DownloadContent sends.
  public var downloadChunkBytes = 256 * 1024
  /// Size of the chunks content is stored in on PostgreSQL (one row each).
  public var contentChunkBytes = 1024 * 1024
  /// How long an upload may go without a chunk before any replica may remove it as
  /// abandoned (PostgreSQL; a replica that crashed mid-upload leaves one behind).
  public var abandonedUploadAge: Duration = .seconds(3600)
  /// How often the org directory polls identity's change feed.
  public var directoryPollInterval: Duration = .seconds(2)

  /// The defaults.
  public init() {}
}

/// The catalogue's composition root, used by the executable, the tests and the benchmark:
/// opens the store (PostgreSQL when `config.database` is set, else SQLite under
/// `config.dataDirectory`) and the content store beside it (content in the same PostgreSQL
/// database, else files under `config.dataDirectory`/blobs), keeps a copy of
/// identity's org tree from `identity`'s change feed, and returns the service ready for a
/// ``ServiceHost``. The ``OrgDirectory`` is the definition's first background service.
public func buildCatalogueService(
  config: HostConfig, settings: CatalogueSettings, verifier: TokenVerifier,
  identity: any IdentityChangeSource, logger: Logger
) async throws -> ServiceDefinition {
  let store: any CatalogueStore
  let postgres: PostgresStore?
  if let database = config.database {
    let opened = try await PostgresStore(
      settings: database, migrations: CatalogueMigrations.postgres, logger: logger)
    store = PostgresCatalogueStore(store: opened)
    postgres = opened
  } else {
    store = try SQLiteCatalogueStore(directory: config.dataDirectory)
    postgres = nil
  }
  let blobs: any ContentStore
  let directory: OrgDirectory
  do {
    if let postgres {
      blobs = try await PostgresContentStore(
        store: postgres, chunkBytes: settings.contentChunkBytes,
        abandonedAfter: settings.abandonedUploadAge)
    } else {
      blobs = try FileContentStore(dataDirectory: config.dataDirectory)
    }
    directory = try await OrgDirectory(
      source: identity, store: store.storage, pollInterval: settings.directoryPollInterval)
  } catch {
    await store.storage.close()
    throw error
  }
  let api = CatalogueAPI(
    store: store, blobs: blobs, directory: directory, settings: settings, logger: logger)
  return ServiceDefinition(
    name: "catalogue", grpcServiceName: catalogueGRPCServiceName, services: [api],
    verifier: verifier, store: store.storage, background: [directory])
}
