import Crypto
import Foundation
import ServiceRuntime

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Content blobs on disk, named by their SHA-256: `<data dir>/blobs/<first 2 hex>/<sha256>`
/// (the content store beside SQLite: one process owns the folder).
///
/// An upload writes to `<data dir>/blobs/tmp/` and becomes visible only by an atomic rename
/// once its size and hash are checked, so an interrupted or refused upload never leaves a
/// half-file under a blob name.
final class FileContentStore: ContentStore {
  /// `<data dir>/blobs`.
  let root: String
  private var temporary: String { root + "/tmp" }

  /// Opens (creating) the blob folder and clears temporary files a crash left behind (this
  /// process is the folder's only writer).
  init(dataDirectory: String) throws {
    root = (dataDirectory as NSString).appendingPathComponent("blobs")
    let fm = FileManager.default
    try fm.createDirectory(atPath: root + "/tmp", withIntermediateDirectories: true)
    for name in (try? fm.contentsOfDirectory(atPath: root + "/tmp")) ?? [] {
      try? fm.removeItem(atPath: root + "/tmp/" + name)
    }
  }

  /// Where the blob of `sha256` lives.
  func path(sha256: String) -> String {
    root + "/" + String(sha256.prefix(2)) + "/" + sha256
  }

  func beginUpload() async throws -> any ContentUpload {
    let path = temporary + "/" + UUID().uuidString + ".part"
    guard FileManager.default.createFile(atPath: path, contents: nil) else {
      throw ServiceError.unavailable("cannot create a temporary file for the upload")
    }
    guard let handle = FileHandle(forWritingAtPath: path) else {
      try? FileManager.default.removeItem(atPath: path)
      throw ServiceError.unavailable("cannot open a temporary file for the upload")
    }
    return FileUpload(store: self, temporaryPath: path, handle: handle)
  }

  func read(
    sha256: String, from offset: Int64, pieceSize: Int,
    _ body: (Data, Int64) async throws -> Void
  ) async throws {
    guard let handle = FileHandle(forReadingAtPath: path(sha256: sha256)) else {
      throw ServiceError.internalError("the blob of this resource is missing on disk")
    }
    defer { try? handle.close() }
    try handle.seek(toOffset: UInt64(offset))
    var position = offset
    while true {
      guard let data = try handle.read(upToCount: pieceSize), !data.isEmpty else { return }
      try await body(data, position)
      position += Int64(data.count)
    }
  }

  func forget(_ published: PublishedContent) async {
    guard published.isNew else { return }
    try? FileManager.default.removeItem(atPath: path(sha256: published.sha256))
  }

  fileprivate func publish(temporaryPath: String, sha256: String) throws -> PublishedContent {
    let target = path(sha256: sha256)
    let existed = FileManager.default.fileExists(atPath: target)
    try FileManager.default.createDirectory(
      atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    // rename(2) is atomic and replaces an existing file of the same (identical) content.
    guard rename(temporaryPath, target) == 0 else {
      try? FileManager.default.removeItem(atPath: temporaryPath)
      throw ServiceError.unavailable("cannot store the blob (rename failed: errno \(errno))")
    }
    return PublishedContent(sha256: sha256, isNew: !existed)
  }
}

/// An upload into a temporary file of a ``FileContentStore``.
private final class FileUpload: ContentUpload {
  private let store: FileContentStore
  private let temporaryPath: String
  private let handle: FileHandle
  private var hasher = SHA256()
  private var open = true
  private(set) var size: Int64 = 0

  init(store: FileContentStore, temporaryPath: String, handle: FileHandle) {
    self.store = store
    self.temporaryPath = temporaryPath
    self.handle = handle
  }

  func write(_ data: Data) async throws {
    hasher.update(data: data)
    do {
      try handle.write(contentsOf: data)
    } catch {
      throw ServiceError.resourceExhausted("cannot write the upload to disk: \(error)")
    }
    size += Int64(data.count)
  }

  /// Checks size and hash, flushes to disk and renames the file to its blob name.
  func commit(expectedSHA256: String, expectedSize: Int64) async throws -> PublishedContent {
    let digest: String
    do {
      digest = try ContentDigest.verify(
        hasher, size: size, expectedSHA256: expectedSHA256, expectedSize: expectedSize)
      try handle.synchronize()
      try handle.close()
    } catch let error as ServiceError {
      await discard()
      throw error
    } catch {
      await discard()
      throw ServiceError.unavailable("cannot flush the upload to disk: \(error)")
    }
    open = false
    return try store.publish(temporaryPath: temporaryPath, sha256: digest)
  }

  func discard() async {
    if open {
      try? handle.close()
      open = false
    }
    try? FileManager.default.removeItem(atPath: temporaryPath)
  }
}
