import Crypto
import Foundation
import ServiceRuntime

/// Where resource content lives: blobs named by their SHA-256, written by streaming uploads
/// that become visible only once their size and hash are checked, and read back in pieces.
/// Identical content is stored once.
///
/// ``buildCatalogueService`` picks the implementation with the store: ``FileContentStore``
/// (files under `<data dir>/blobs`) beside SQLite, which is one process, and
/// ``PostgresContentStore`` beside PostgreSQL, where several replicas share one database.
///
/// Why PostgreSQL rather than a shared filesystem for replicas: the database is already the
/// one thing the replicas share, so it stays the one thing to operate and back up (a dump
/// holds the resources and the bytes they name at one instant); replicas need no shared
/// volume (no NFS mount to provision, whose rename and locking semantics vary); and a
/// transaction makes publishing atomic for every replica at once — two replicas publishing
/// the same content meet on one primary key, and an upload in progress is a row of its own
/// that no other replica's start-up touches.
protocol ContentStore: Sendable {
  /// Starts an upload.
  func beginUpload() async throws -> any ContentUpload

  /// Reads the blob of `sha256` from `offset` in pieces of `pieceSize` bytes (the last may be
  /// shorter), calling `body` with each piece and its offset.
  /// INTERNAL when the blob is missing.
  func read(
    sha256: String, from offset: Int64, pieceSize: Int,
    _ body: (Data, Int64) async throws -> Void
  ) async throws

  /// Undoes `published` when the resource update that was to refer to it failed: removes the
  /// blob if this upload created it and nothing else may refer to it.
  func forget(_ published: PublishedContent) async
}

/// What a committed upload stored.
struct PublishedContent: Sendable {
  /// Lower-case hex SHA-256 of the bytes.
  var sha256: String
  /// False when identical content was already stored.
  var isNew: Bool
}

/// One upload in progress: bytes stream in while their SHA-256 is computed. Either
/// ``commit(expectedSHA256:expectedSize:)`` or ``discard()`` ends it.
protocol ContentUpload: AnyObject {
  /// Bytes written so far.
  var size: Int64 { get }
  /// Appends bytes.
  func write(_ data: Data) async throws
  /// Checks size and hash and publishes the bytes under their hash. INVALID_ARGUMENT (and
  /// nothing kept) on a mismatch.
  func commit(expectedSHA256: String, expectedSize: Int64) async throws -> PublishedContent
  /// Drops what was written.
  func discard() async
}

/// Helpers both content stores share.
enum ContentDigest {
  /// True for 64 lower-case hex characters.
  static func isSHA256(_ text: String) -> Bool {
    text.utf8.count == 64
      && text.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
  }

  /// Finishes `hasher` as lower-case hex and checks the declared size and hash: the
  /// INVALID_ARGUMENT an upload fails with when its bytes are not what its header said.
  static func verify(
    _ hasher: SHA256, size: Int64, expectedSHA256: String, expectedSize: Int64
  ) throws -> String {
    let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
    guard size == expectedSize else {
      throw ServiceError.invalid(
        "header.size_bytes", "declared \(expectedSize) bytes but \(size) arrived")
    }
    guard digest == expectedSHA256 else {
      throw ServiceError.invalid(
        "header.sha256", "does not match the uploaded bytes (their SHA-256 is \(digest))")
    }
    return digest
  }
}
