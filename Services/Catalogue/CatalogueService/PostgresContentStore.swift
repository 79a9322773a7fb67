import Crypto
import Foundation
import PostgresNIO
import ServiceRuntime

/// Content in the catalogue's PostgreSQL database, for replicas that share it (see
/// ``ContentStore`` for why the database and not a shared filesystem).
///
/// Tables (migration catalogue.2.content): `content_uploads` holds one row per upload in
/// progress, keyed by a random id, with the replica that runs it and when it last wrote;
/// `content_chunks (blob_id, seq, data)` holds the bytes in chunks of ``chunkBytes`` (one
/// chunk is written while the next arrives);
/// `content_blobs (sha256 PK, blob_id, size, chunk_bytes, chunk_count)` names published
/// content. An upload streams its chunks under its own id (each chunk one short
/// transaction, so nothing holds a whole file: not this process, not one transaction), then
/// publishes in ONE transaction: it deletes its upload row and inserts the `content_blobs`
/// row pointing at its chunks — the bytes are never copied. Identical content published
/// meanwhile wins the primary key (the second insert waits for the first and then does
/// nothing), and the later upload drops its chunks: content is stored once and both uploads
/// succeed. A refused upload (wrong size or hash) deletes its chunks before it answers.
///
/// No replica touches another's upload in progress: clean-up removes only uploads idle for
/// ``abandonedAfter`` seconds by the database's clock (a replica that crashed mid-upload),
/// and an upload's every chunk moves its `touched_at` in the statement that writes the chunk.
/// A download reads the chunks it needs in batches of about 4 MiB.
final class PostgresContentStore: ContentStore {
  let store: PostgresStore
  /// Size of every stored chunk but a blob's last.
  let chunkBytes: Int
  /// Seconds without a written chunk after which an upload counts as abandoned.
  let abandonedAfter: Double
  /// Names this process in `content_uploads.replica` (for operators).
  let replica: String

  /// Uses `store` (migrated with ``CatalogueMigrations/postgres``) and removes uploads
  /// abandoned for `abandonedAfter` (never one another replica is still writing).
  init(store: PostgresStore, chunkBytes: Int, abandonedAfter: Duration) async throws {
    self.store = store
    self.chunkBytes = max(1, chunkBytes)
    let parts = abandonedAfter.components
    self.abandonedAfter = Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    replica =
      ProcessInfo.processInfo.hostName + "/" + String(ProcessInfo.processInfo.processIdentifier)
      + "/" + UUID().uuidString.prefix(8)
    try await removeAbandonedUploads()
  }

  /// Deletes uploads idle for longer than ``abandonedAfter`` and their chunks. A chunk written
  /// concurrently locks and touches its upload row first, and DELETE rechecks the age of a
  /// row it had to wait for, so a live upload is never taken.
  func removeAbandonedUploads() async throws {
    _ = try await store.query(
      """
      WITH stale AS (
        DELETE FROM content_uploads
        WHERE touched_at < extract(epoch FROM clock_timestamp()) - \(abandonedAfter)
        RETURNING id)
      DELETE FROM content_chunks WHERE blob_id IN (SELECT id FROM stale)
      """)
  }

  func beginUpload() async throws -> any ContentUpload {
    try await removeAbandonedUploads()
    let id = UUID().uuidString.lowercased()
    _ = try await store.query(
      """
      INSERT INTO content_uploads (id, replica, started_at, touched_at)
      VALUES (\(id), \(replica), extract(epoch FROM clock_timestamp()),
        extract(epoch FROM clock_timestamp()))
      """)
    return PostgresUpload(store: self, id: id)
  }

  func read(
    sha256: String, from offset: Int64, pieceSize: Int,
    _ body: (Data, Int64) async throws -> Void
  ) async throws {
    guard
      let blob = try await store.query(
        "SELECT blob_id, chunk_bytes, chunk_count FROM content_blobs WHERE sha256 = \(sha256)"
      ).first
    else {
      throw ServiceError.internalError("the blob of this resource is missing from the store")
    }
    let blobID = try blob["blob_id"].decode(String.self)
    let stride = try blob["chunk_bytes"].decode(Int.self)
    let count = try blob["chunk_count"].decode(Int.self)
    let batch = max(1, (4 << 20) / stride)
    var seq = Int(offset / Int64(stride))
    var skip = Int(offset % Int64(stride))
    var position = offset
    var pending = Data()
    while seq < count {
      let rows = try await store.query(
        """
        SELECT seq, data FROM content_chunks
        WHERE blob_id = \(blobID) AND seq >= \(seq) AND seq < \(seq + batch) ORDER BY seq
        """)
      for row in rows {
        guard try row["seq"].decode(Int.self) == seq else {
          throw ServiceError.internalError("chunk \(seq) of this resource's blob is missing")
        }
        let data = try row["data"].decode(Data.self)
        var start = data.startIndex + skip
        skip = 0
        seq += 1
        // Pieces of exactly `pieceSize` bytes from `offset`, whatever the chunk size.
        if !pending.isEmpty {
          let take = min(pieceSize - pending.count, data.endIndex - start)
          pending.append(data[start..<start + take])
          start += take
          guard pending.count == pieceSize else { continue }
          try await body(pending, position)
          position += Int64(pending.count)
          pending = Data()
        }
        while data.endIndex - start >= pieceSize {
          try await body(Data(data[start..<start + pieceSize]), position)
          position += Int64(pieceSize)
          start += pieceSize
        }
        if start < data.endIndex { pending = Data(data[start...]) }
      }
      if rows.isEmpty {
        throw ServiceError.internalError("chunk \(seq) of this resource's blob is missing")
      }
    }
    if !pending.isEmpty { try await body(pending, position) }
  }

  /// Keeps the blob: another replica may have just found the same content stored and be
  /// about to refer to it, so deleting it here could lose a resource's bytes. An
  /// unreferenced blob costs only its space.
  func forget(_ published: PublishedContent) async {}

  /// Deletes upload `id` and its chunks (never a published blob's), away from the caller's
  /// cancellation: a cancelled RPC still cleans up.
  fileprivate func drop(upload id: String) async {
    await Task {
      _ = try? await store.write { tx in
        try await tx.execute(
          """
          DELETE FROM content_chunks WHERE blob_id = \(id)
            AND NOT EXISTS (SELECT 1 FROM content_blobs WHERE blob_id = \(id))
          """)
        try await tx.execute("DELETE FROM content_uploads WHERE id = \(id)")
      }
    }.value
  }

  /// Writes chunk `seq` of upload `id`, touching the upload row in the same statement; false
  /// when the row is gone (the upload was removed as abandoned).
  fileprivate func writeChunk(upload id: String, seq: Int, data: Data) async throws -> Bool {
    try await !store.query(
      """
      WITH upload AS (
        UPDATE content_uploads SET touched_at = extract(epoch FROM clock_timestamp())
        WHERE id = \(id) RETURNING id)
      INSERT INTO content_chunks (blob_id, seq, data)
      SELECT id, \(seq), \(data) FROM upload RETURNING seq
      """
    ).isEmpty
  }

  /// Publishes upload `id` under `sha256` in one transaction; false when identical content
  /// was already there (this upload's chunks are then dropped).
  fileprivate func publish(upload id: String, sha256: String, size: Int64, chunks: Int)
    async throws -> Bool
  {
    try await store.write { tx in
      // Taking the upload row first also makes a concurrent clean-up wait and then skip it.
      guard try await tx.one("DELETE FROM content_uploads WHERE id = \(id) RETURNING id") != nil
      else { throw PostgresContentStore.abandoned }
      let inserted = try await tx.one(
        """
        INSERT INTO content_blobs (sha256, blob_id, size, chunk_bytes, chunk_count, created_at)
        VALUES (\(sha256), \(id), \(size), \(chunkBytes), \(chunks),
          extract(epoch FROM clock_timestamp()))
        ON CONFLICT (sha256) DO NOTHING RETURNING sha256
        """)
      if inserted == nil {
        try await tx.execute("DELETE FROM content_chunks WHERE blob_id = \(id)")
      }
      return inserted != nil
    }
  }

  fileprivate static let abandoned = ServiceError.aborted(
    "the upload was idle too long and was removed; upload the content again")
}

/// An upload streaming into `content_chunks` under its own id.
private final class PostgresUpload: ContentUpload {
  private let store: PostgresContentStore
  private let id: String
  private var hasher = SHA256()
  private var buffer = Data()
  private var chunks = 0
  /// The chunk being written while the next one fills (at most one: two chunks in memory).
  private var writing: Task<Bool, any Error>?
  private var open = true
  private(set) var size: Int64 = 0

  init(store: PostgresContentStore, id: String) {
    self.store = store
    self.id = id
    buffer.reserveCapacity(store.chunkBytes)
  }

  func write(_ data: Data) async throws {
    hasher.update(data: data)
    size += Int64(data.count)
    var start = data.startIndex
    while start < data.endIndex {
      let take = min(store.chunkBytes - buffer.count, data.endIndex - start)
      buffer.append(data[start..<start + take])
      start += take
      if buffer.count == store.chunkBytes { try await flush() }
    }
  }

  /// Starts writing the buffer as the next chunk once the previous chunk is written, so the
  /// database writes one chunk while the next arrives.
  private func flush() async throws {
    try await settle()
    let (store, id, seq, data) = (store, id, chunks, buffer)
    writing = Task { try await store.writeChunk(upload: id, seq: seq, data: data) }
    chunks += 1
    buffer = Data()
    buffer.reserveCapacity(store.chunkBytes)
  }

  /// Waits for the chunk being written; ABORTED when the upload was removed meanwhile.
  private func settle() async throws {
    guard let task = writing else { return }
    writing = nil
    guard try await task.value else { throw PostgresContentStore.abandoned }
  }

  func commit(expectedSHA256: String, expectedSize: Int64) async throws -> PublishedContent {
    do {
      let digest = try ContentDigest.verify(
        hasher, size: size, expectedSHA256: expectedSHA256, expectedSize: expectedSize)
      if !buffer.isEmpty { try await flush() }
      try await settle()
      buffer = Data()
      let isNew = try await store.publish(
        upload: id, sha256: digest, size: size, chunks: chunks)
      open = false
      return PublishedContent(sha256: digest, isNew: isNew)
    } catch {
      await discard()
      throw error
    }
  }

  func discard() async {
    guard open else { return }
    open = false
    _ = try? await writing?.value
    await store.drop(upload: id)
  }
}
