@testable import CatalogueService
import Foundation
import GRPCCore
import Logging
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel
import TestSupport
import Testing

extension World {
  /// Runs `body` on this world's catalogue database, or returns nil on SQLite.
  func withCatalogueDatabase<T>(_ body: (PostgresStore) async throws -> T) async throws -> T? {
    guard let database = try await TestStore.database(named: "catalogue_" + dataDirectory) else {
      return nil
    }
    var quiet = Logger(label: "catalogue")
    quiet.logLevel = .critical
    let store = try await PostgresStore(
      settings: database, migrations: CatalogueMigrations.postgres, logger: quiet)
    do {
      let value = try await body(store)
      await store.close()
      return value
    } catch {
      await store.close()
      throw error
    }
  }

  /// What the first replica's content store holds, on either store: the SHA-256 of every
  /// stored blob (sorted), then "upload:<id>" for every upload in progress (a temporary file,
  /// or a `content_uploads` row) and "chunks:<id>" for chunks no published blob owns.
  func storedContent() async throws -> [String] {
    if let rows = try await withCatalogueDatabase({ store in
      let blobs = try await store.query("SELECT sha256 FROM content_blobs ORDER BY sha256")
        .map { try $0["sha256"].decode(String.self) }
      let uploads = try await store.query("SELECT id FROM content_uploads ORDER BY id")
        .map { "upload:" + (try $0["id"].decode(String.self)) }
      let chunks = try await store.query(
        """
        SELECT DISTINCT blob_id FROM content_chunks
        WHERE blob_id NOT IN (SELECT blob_id FROM content_blobs) ORDER BY blob_id
        """
      ).map { "chunks:" + (try $0["blob_id"].decode(String.self)) }
      return blobs + uploads + chunks
    }) {
      return rows
    }
    let root = dataDirectory + "/blobs"
    var blobs: [String] = []
    var uploads: [String] = []
    let enumerator = FileManager.default.enumerator(atPath: root)
    while let name = enumerator?.nextObject() as? String {
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: root + "/" + name, isDirectory: &isDirectory),
        !isDirectory.boolValue
      else { continue }
      if name.hasPrefix("tmp/") {
        uploads.append("upload:" + name.dropFirst(4))
      } else {
        // "<2 hex>/<sha256>": the name must match its folder.
        let parts = name.split(separator: "/")
        blobs.append(parts.count == 2 && parts[1].hasPrefix(parts[0]) ? String(parts[1]) : name)
      }
    }
    return blobs.sorted() + uploads.sorted()
  }

  /// The stored bytes of blob `sha256` (nil when it is not stored), read around the API.
  func storedBytes(_ sha256: String) async throws -> Data? {
    if let bytes = try await withCatalogueDatabase({ store -> Data? in
      let rows = try await store.query(
        """
        SELECT c.data FROM content_blobs b JOIN content_chunks c ON c.blob_id = b.blob_id
        WHERE b.sha256 = \(sha256) ORDER BY c.seq
        """)
      return rows.isEmpty ? nil : try rows.reduce(into: Data()) {
        $0.append(try $1["data"].decode(Data.self))
      }
    }) {
      return bytes
    }
    return FileManager.default.contents(
      atPath: dataDirectory + "/blobs/" + String(sha256.prefix(2)) + "/" + sha256)
  }
}

/// An upload through `client` that sends `data` in 1000-byte messages but stops after
/// `pauseAfter` bytes until `gate` yields (or finishes).
func pausedUpload(
  _ w: World, via client: CatalogueClient, _ user: String, _ id: String, _ data: Data,
  pauseAfter: Int, gate: AsyncStream<Void>
) async throws -> Resource {
  try await client.uploadContent(
    metadata: w.auth(user),
    requestProducer: { writer in
      try await writer.write(
        .with {
          $0.resourceID = id
          $0.header = .with {
            $0.sha256 = sha256Hex(data)
            $0.sizeBytes = Int64(data.count)
          }
        })
      var offset = 0
      var paused = false
      while offset < data.count {
        if !paused && offset >= pauseAfter {
          paused = true
          for await _ in gate { break }
        }
        let end = min(offset + 1000, data.count)
        try await writer.write(
          .with {
            $0.resourceID = id
            $0.data = data.subdata(in: offset..<end)
          })
        offset = end
      }
    })
}

/// Downloads the whole content of `id` through `client` as tA1.
func download(_ w: World, via client: CatalogueClient, _ id: String) async throws -> Data {
  try await client.downloadContent(.with { $0.resourceID = id }, metadata: w.auth("tA1")) {
    response in
    var data = Data()
    for try await message in response.messages { data.append(message.data) }
    return data
  }
}

/// Waits (up to 10 s) until `condition` holds for the world's stored content.
func waitForContent(_ w: World, _ condition: ([String]) -> Bool) async throws -> [String] {
  let deadline = ContinuousClock.now + .seconds(10)
  while true {
    let stored = try await w.storedContent()
    if condition(stored) || ContinuousClock.now > deadline { return stored }
    try await Task.sleep(for: .milliseconds(20))
  }
}

@Suite("Content stores: streaming, chunks and identical content")
struct ContentStoreTests {
  @Test func largeContentRoundTripsInChunksFromAnyOffset() async throws {
    try await withWorld { w in
      let r = try await w.create("tA1", "长视频")
      let bytes = sampleBytes(60_000, seed: 3)
      _ = try await w.upload("tA1", r.id, bytes, chunk: 4096)
      #expect(try await w.storedContent() == [sha256Hex(bytes)])
      #expect(try await w.storedBytes(sha256Hex(bytes)) == bytes)
      // Offsets on, just before and just after a stored chunk's edge (1536 in tests).
      for offset in [0, 1, 1535, 1536, 1537, 3072, 59_999, 60_000] {
        let part = try await w.download("tA1", r.id, offset: Int64(offset))
        #expect(part.data == bytes.subdata(in: offset..<bytes.count), "from \(offset)")
        let expected = stride(from: offset, to: max(bytes.count, offset + 1), by: 1000)
          .map(Int64.init)
        #expect(part.offsets == expected, "from \(offset)")
      }
    }
  }

  @Test func identicalUploadsAtOnceBothSucceedAndStoreOnce() async throws {
    try await withWorld(replicas: TestStore.postgresServer == nil ? 1 : 2) { w in
      let bytes = sampleBytes(20_000, seed: 5)
      var ids: [String] = []
      for index in 0..<6 { ids.append(try await w.create("tA1", "同一文件 \(index)").id) }
      let frozen = ids
      try await withThrowingTaskGroup(of: Resource.self) { group in
        for (index, id) in frozen.enumerated() {
          let client = w.replicas[index % w.replicas.count]
          group.addTask { try await w.upload("tA1", id, bytes, chunk: 700, via: client) }
        }
        for try await stored in group { #expect(stored.content.sha256 == sha256Hex(bytes)) }
      }
      #expect(try await w.storedContent() == [sha256Hex(bytes)])
      for (index, id) in ids.enumerated() {
        let got = try await download(w, via: w.replicas[(index + 1) % w.replicas.count], id)
        #expect(got == bytes)
      }
    }
  }
}

/// Two catalogue replicas (and a restarted third) on one PostgreSQL database: content
/// uploaded through one is downloaded through another, and no replica's start-up removes
/// another's upload in progress.
@Suite(
  "Content on catalogue replicas sharing one PostgreSQL database", .serialized,
  .enabled(if: TestStore.postgresServer != nil))
struct ContentReplicaTests {
  @Test func uploadThroughOneDownloadThroughTheOtherWhileAThirdUploadWaits() async throws {
    try await withWorld(replicas: 2) { w in
      let waiting = try await w.create("tA1", "进行中的上传")
      let first = try await w.create("tA1", "经副本一上传")
      let second = try await w.create("tA1", "经副本二上传")
      let corrupt = try await w.create("tA1", "损坏的上传")
      let slow = sampleBytes(12_000, seed: 11)
      let (gate, open) = AsyncStream<Void>.makeStream()
      // The third upload: at replica 1, paused after 5000 bytes (three 1536-byte chunks
      // stored).
      let pending = Task {
        try await pausedUpload(
          w, via: w.replicas[1], "tA1", waiting.id, slow, pauseAfter: 5000, gate: gate)
      }
      let staged = try await waitForContent(w) {
        $0.contains { $0.hasPrefix("chunks:") } && $0.contains { $0.hasPrefix("upload:") }
      }
      #expect(staged.count == 2, "\(staged)")

      // Both ways between the replicas while it waits.
      let a = sampleBytes(9000, seed: 1)
      let b = sampleBytes(7777, seed: 2)
      _ = try await w.upload("tA1", first.id, a, chunk: 4000, via: w.replicas[0])
      #expect(try await download(w, via: w.replicas[1], first.id) == a)
      _ = try await w.upload("tA1", second.id, b, chunk: 3000, via: w.replicas[1])
      #expect(try await download(w, via: w.replicas[0], second.id) == b)
      // A corrupt upload (wrong size, then wrong hash) leaves nothing on either replica.
      await expectCode(.invalidArgument) {
        try await w.upload("tA1", corrupt.id, a, size: Int64(a.count) + 1, via: w.replicas[0])
      }
      await expectCode(.invalidArgument) {
        try await w.upload("tA1", corrupt.id, a, sha256: sha256Hex(b), via: w.replicas[1])
      }
      let during = try await w.storedContent()
      #expect(
        during.filter { !$0.contains(":") } == [sha256Hex(a), sha256Hex(b)].sorted(), "\(during)")
      #expect(during.filter { $0.contains(":") } == staged.filter { $0.contains(":") })

      // Replica 0 restarts: its start-up clean-up leaves replica 1's upload alone.
      try await w.launchReplica(.forTests()) { restarted in
        let got = try await download(w, via: restarted, second.id)
        #expect(got == b)
      }
      #expect(try await w.storedContent() == during)
      open.yield(())
      open.finish()
      let done = try await pending.value
      #expect(done.content.sha256 == sha256Hex(slow))
      #expect(try await download(w, via: w.replicas[0], waiting.id) == slow)
      #expect(
        try await w.storedContent() == [sha256Hex(a), sha256Hex(b), sha256Hex(slow)].sorted())
    }
  }

  @Test func anUploadIdleLongerThanTheAgeLimitIsRemovedByAnotherReplica() async throws {
    try await withWorld(replicas: 2) { w in
      let r = try await w.create("tA1", "中断的上传")
      let bytes = sampleBytes(8000, seed: 4)
      let (gate, open) = AsyncStream<Void>.makeStream()
      let pending = Task {
        try await pausedUpload(
          w, via: w.replicas[1], "tA1", r.id, bytes, pauseAfter: 4000, gate: gate)
      }
      _ = try await waitForContent(w) { $0.contains { $0.hasPrefix("chunks:") } }
      try await Task.sleep(for: .milliseconds(1500))
      // A replica starting with a one-second limit finds it abandoned.
      var settings = CatalogueSettings.forTests()
      settings.abandonedUploadAge = .seconds(1)
      try await w.launchReplica(settings) { restarted in
        let seen = try await restarted.getResource(
          .with { $0.id = r.id }, metadata: w.auth("tA1"))
        #expect(!seen.hasContent)
      }
      #expect(try await w.storedContent().isEmpty)
      open.yield(())
      open.finish()
      await expectCode(.aborted) { try await pending.value }
      #expect(try await w.storedContent().isEmpty)
      let r2 = try await w.catalogue.getResource(.with { $0.id = r.id }, metadata: w.auth("tA1"))
      #expect(!r2.hasContent)
    }
  }
}
