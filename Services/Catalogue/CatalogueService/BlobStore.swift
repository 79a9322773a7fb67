import Crypto
import Foundation
import ServiceRuntime

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Content blobs on disk, named by their SHA-256: `<data dir>/blobs/<first 2 hex>/<sha256>`.
///
/// An upload writes to `<data dir>/blobs/tmp/` and becomes visible only by an atomic rename
/// once its size and hash are checked, so an interrupted or refused upload never leaves a
/// half-file under a blob name. Identical content is stored once.
final class BlobStore: Sendable {
  /// `<data dir>/blobs`.
  let root: String
  private var temporary: String { root + "/tmp" }

  /// Opens (creating) the blob folder and clears temporary files a crash left behind.
  init(dataDirectory: String) throws {
    root = (dataDirectory as NSString).appendingPathComponent("blobs")
    let fm = FileManager.default
    try fm.createDirectory(atPath: root + "/tmp", withIntermediateDirectories: true)
    for name in (try? fm.contentsOfDirectory(atPath: root + "/tmp")) ?? [] {
      try? fm.removeItem(atPath: root + "/tmp/" + name)
    }
  }

  /// True for 64 lower-case hex characters.
  static func isSHA256(_ text: String) -> Bool {
    text.utf8.count == 64
      && text.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
  }

  /// Where the blob of `sha256` lives.
  func path(sha256: String) -> String {
    root + "/" + String(sha256.prefix(2)) + "/" + sha256
  }

  /// True when the blob exists.
  func exists(sha256: String) -> Bool {
    FileManager.default.fileExists(atPath: path(sha256: sha256))
  }

  /// Files under the blob folder (temporary ones included), for tests and checks.
  func allFiles() -> [String] {
    let fm = FileManager.default
    guard let e = fm.enumerator(atPath: root) else { return [] }
    var files: [String] = []
    while let name = e.nextObject() as? String {
      var isDirectory: ObjCBool = false
      if fm.fileExists(atPath: root + "/" + name, isDirectory: &isDirectory), !isDirectory.boolValue
      {
        files.append(name)
      }
    }
    return files.sorted()
  }

  /// Starts an upload into a new temporary file.
  func beginUpload() throws -> BlobUpload {
    let path = temporary + "/" + UUID().uuidString + ".part"
    guard FileManager.default.createFile(atPath: path, contents: nil) else {
      throw ServiceError.unavailable("cannot create a temporary file for the upload")
    }
    guard let handle = FileHandle(forWritingAtPath: path) else {
      try? FileManager.default.removeItem(atPath: path)
      throw ServiceError.unavailable("cannot open a temporary file for the upload")
    }
    return BlobUpload(store: self, temporaryPath: path, handle: handle)
  }

  /// Reads the blob from `offset` in chunks of at most `chunkSize` bytes, calling `body` for
  /// each.
  func read(
    sha256: String, from offset: Int64, chunkSize: Int,
    _ body: (Data, Int64) async throws -> Void
  ) async throws {
    guard let handle = FileHandle(forReadingAtPath: path(sha256: sha256)) else {
      throw ServiceError.internalError("the blob of this resource is missing on disk")
    }
    defer { try? handle.close() }
    try handle.seek(toOffset: UInt64(offset))
    var position = offset
    while true {
      guard let data = try handle.read(upToCount: chunkSize), !data.isEmpty else { return }
      try await body(data, position)
      position += Int64(data.count)
    }
  }

  fileprivate func commit(temporaryPath: String, sha256: String) throws {
    let target = path(sha256: sha256)
    try FileManager.default.createDirectory(
      atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    // rename(2) is atomic and replaces an existing file of the same (identical) content.
    guard rename(temporaryPath, target) == 0 else {
      try? FileManager.default.removeItem(atPath: temporaryPath)
      throw ServiceError.unavailable("cannot store the blob (rename failed: errno \(errno))")
    }
  }
}

/// One upload in progress: bytes go to a temporary file while their SHA-256 is computed.
/// Either ``commit(expectedSHA256:expectedSize:)`` or ``discard()`` ends it.
final class BlobUpload {
  private let store: BlobStore
  private let temporaryPath: String
  private let handle: FileHandle
  private var hasher = SHA256()
  private var open = true
  /// Bytes written so far.
  private(set) var size: Int64 = 0

  fileprivate init(store: BlobStore, temporaryPath: String, handle: FileHandle) {
    self.store = store
    self.temporaryPath = temporaryPath
    self.handle = handle
  }

  /// Appends bytes.
  func write(_ data: Data) throws {
    hasher.update(data: data)
    do {
      try handle.write(contentsOf: data)
    } catch {
      throw ServiceError.resourceExhausted("cannot write the upload to disk: \(error)")
    }
    size += Int64(data.count)
  }

  /// Checks size and hash, flushes to disk and renames the file to its blob name; returns the
  /// hex SHA-256. INVALID_ARGUMENT (and nothing kept) on a mismatch.
  func commit(expectedSHA256: String, expectedSize: Int64) throws -> String {
    let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
    guard size == expectedSize else {
      discard()
      throw ServiceError.invalid(
        "header.size_bytes", "declared \(expectedSize) bytes but \(size) arrived")
    }
    guard digest == expectedSHA256 else {
      discard()
      throw ServiceError.invalid(
        "header.sha256", "does not match the uploaded bytes (their SHA-256 is \(digest))")
    }
    do {
      try handle.synchronize()
      try handle.close()
    } catch {
      discard()
      throw ServiceError.unavailable("cannot flush the upload to disk: \(error)")
    }
    open = false
    try store.commit(temporaryPath: temporaryPath, sha256: digest)
    return digest
  }

  /// Closes and removes the temporary file.
  func discard() {
    if open {
      try? handle.close()
      open = false
    }
    try? FileManager.default.removeItem(atPath: temporaryPath)
  }
}
