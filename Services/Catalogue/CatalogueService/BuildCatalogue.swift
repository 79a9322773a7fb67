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
  /// How often the org directory polls identity's change feed.
  public var directoryPollInterval: Duration = .seconds(2)

  /// The defaults.
  public init() {}
}

/// The catalogue's composition root, used by the executable, the tests and the benchmark:
/// opens the store (PostgreSQL when `config.database` is set, else SQLite under
/// `config.dataDirectory`) and the blob folder under `config.dataDirectory`, keeps a copy of
/// identity's org tree from `identity`'s change feed, and returns the service ready for a
/// ``ServiceHost``. The ``OrgDirectory`` is the definition's first background service.
public func buildCatalogueService(
  config: HostConfig, settings: CatalogueSettings, verifier: TokenVerifier,
  identity: any IdentityChangeSource, logger: Logger
) async throws -> ServiceDefinition {
  let store: any CatalogueStore
  if let database = config.database {
    store = PostgresCatalogueStore(
      store: try await PostgresStore(
        settings: database, migrations: CatalogueMigrations.postgres, logger: logger))
  } else {
    store = try SQLiteCatalogueStore(directory: config.dataDirectory)
  }
  let blobs: BlobStore
  let directory: OrgDirectory
  do {
    blobs = try BlobStore(dataDirectory: config.dataDirectory)
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
