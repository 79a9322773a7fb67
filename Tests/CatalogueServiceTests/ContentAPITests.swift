import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

typealias ContentInfo = Smartschool_Catalogue_V1_ContentInfo

/// Deterministic test bytes.
func sampleBytes(_ count: Int, seed: UInt8 = 7) -> Data {
  Data((0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) })
}

extension World {
  /// Uploads `data` in chunks through `client` (the first replica by default); `chunkOwner`
  /// names the resource of chunks after the first.
  func upload(
    _ user: String, _ id: String, _ data: Data, sha256: String? = nil, size: Int64? = nil,
    chunk: Int = 1000, chunkOwner: String? = nil, header: Bool = true,
    via client: CatalogueClient? = nil
  ) async throws -> Resource {
    try await (client ?? catalogue).uploadContent(
      metadata: auth(user),
      requestProducer: { writer in
        if header {
          try await writer.write(
            .with {
              $0.resourceID = id
              $0.header = .with {
                $0.sha256 = sha256 ?? sha256Hex(data)
                $0.sizeBytes = size ?? Int64(data.count)
                $0.mimeType = "application/pdf"
                $0.fileName = "教案.pdf"
              }
            })
        }
        var offset = 0
        while offset < data.count {
          let end = min(offset + chunk, data.count)
          let piece = data.subdata(in: offset..<end)
          try await writer.write(
            .with {
              $0.resourceID = offset > 0 ? (chunkOwner ?? id) : id
              $0.data = piece
            })
          offset = end
        }
      })
  }

  /// Downloads from `offset`: the content info of the first message, the bytes, and the
  /// offset of every message.
  func download(_ user: String, _ id: String, offset: Int64 = 0) async throws
    -> (info: ContentInfo?, data: Data, offsets: [Int64])
  {
    try await catalogue.downloadContent(
      .with {
        $0.resourceID = id
        $0.offset = offset
      }, metadata: auth(user)
    ) { response in
      var info: ContentInfo? = nil
      var data = Data()
      var offsets: [Int64] = []
      for try await message in response.messages {
        if offsets.isEmpty && message.hasContent { info = message.content }
        offsets.append(message.offset)
        data.append(message.data)
      }
      return (info, data, offsets)
    }
  }

}

@Suite("Content upload and download through a real server")
struct ContentAPITests {
  @Test func roundTripWithResume() async throws {
    try await withWorld { w in
      let r = try await w.create("tA1", "二次函数 教案", type: .lessonPlan)
      let bytes = sampleBytes(5500)
      let sha = sha256Hex(bytes)
      let uploaded = try await w.upload("tA1", r.id, bytes, chunk: 700)
      #expect(uploaded.content.sizeBytes == 5500 && uploaded.content.sha256 == sha)
      #expect(
        uploaded.content.mimeType == "application/pdf" && uploaded.content.fileName == "教案.pdf")
      #expect(uploaded.content.hasUploadTime)
      // Content-addressed in the store; nothing of the upload left behind.
      #expect(try await w.storedContent() == [sha])
      #expect(try await w.storedBytes(sha) == bytes)

      let whole = try await w.download("tA1", r.id)
      #expect(whole.data == bytes)
      #expect(whole.info?.sha256 == sha && whole.info?.sizeBytes == 5500)
      #expect(whole.offsets == [0, 1000, 2000, 3000, 4000, 5000])
      // Resume from an offset.
      let rest = try await w.download("tA1", r.id, offset: 1234)
      #expect(rest.data == bytes.subdata(in: 1234..<5500))
      #expect(rest.offsets.first == 1234 && rest.info?.sha256 == sha)
      let end = try await w.download("tA1", r.id, offset: 5500)
      #expect(end.data.isEmpty && end.offsets == [5500] && end.info != nil)
      await expectCode(.invalidArgument) { try await w.download("tA1", r.id, offset: 5501) }
      await expectCode(.invalidArgument) { try await w.download("tA1", r.id, offset: -1) }
      // Only downloads from the start count.
      let stats = try await w.catalogue.getResourceStats(
        .with { $0.resourceID = r.id }, metadata: w.auth("tA1"))
      #expect(stats.downloads == 1)

      // A new upload replaces the content; identical content is stored once.
      let other = try await w.create("tA1", "副本")
      _ = try await w.upload("tA1", other.id, bytes)
      #expect(try await w.storedContent() == [sha])
      let smaller = sampleBytes(10, seed: 9)
      let replaced = try await w.upload("tA1", r.id, smaller)
      #expect(replaced.content.sizeBytes == 10)
      #expect(try await w.download("tA1", r.id).data == smaller)

      // Others: invisible while draft; readable once published in their scope.
      await expectCode(.notFound) { try await w.download("tA1b", r.id) }
      await expectCode(.notFound) { try await w.upload("tA1b", r.id, bytes) }
      try await w.publish(r, author: "tA1", reviewer: "revA")
      #expect(try await w.download("tA1b", r.id).data == smaller)
      await expectCode(.notFound) { try await w.download("tB1", r.id) }
      // Published content is frozen.
      await expectCode(.failedPrecondition) { try await w.upload("tA1", r.id, bytes) }
      // No content yet.
      let empty = try await w.create("tA1", "空")
      await expectCode(.notFound) { try await w.download("tA1", empty.id) }
    }
  }

  @Test func badUploadsKeepNothing() async throws {
    try await withWorld { w in
      let r = try await w.create("tA1", "课件")
      let other = try await w.create("tA1", "另一个")
      let bytes = sampleBytes(3000)
      // Hash mismatch.
      #expect(
        await fieldViolations {
          _ = try await w.upload("tA1", r.id, bytes, sha256: sha256Hex(sampleBytes(3000, seed: 1)))
        } == ["header.sha256"])
      // Fewer or more bytes than declared.
      #expect(
        await fieldViolations {
          _ = try await w.upload("tA1", r.id, bytes, size: 3001)
        } == ["header.size_bytes"])
      await expectCode(.invalidArgument) { try await w.upload("tA1", r.id, bytes, size: 2999) }
      // Over the limit (64 KiB in tests), declared or not.
      await expectCode(.resourceExhausted) {
        try await w.upload("tA1", r.id, sampleBytes(64 * 1024 + 1))
      }
      // A chunk for another resource.
      #expect(
        await fieldViolations {
          _ = try await w.upload("tA1", r.id, bytes, chunkOwner: other.id)
        } == ["resource_id"])
      // No header, an empty stream, a malformed hash.
      await expectCode(.invalidArgument) { try await w.upload("tA1", r.id, bytes, header: false) }
      await expectCode(.invalidArgument) {
        try await w.upload("tA1", r.id, Data(), header: false)
      }
      await expectCode(.invalidArgument) { try await w.upload("tA1", r.id, bytes, sha256: "abc") }
      await expectCode(.notFound) { try await w.upload("tA1", "no-such-id", bytes) }

      #expect(try await w.storedContent().isEmpty)
      let after = try await w.catalogue.getResource(.with { $0.id = r.id }, metadata: w.auth("tA1"))
      #expect(!after.hasContent)
      // A good upload still works afterwards.
      _ = try await w.upload("tA1", r.id, bytes)
      #expect(try await w.storedContent() == [sha256Hex(bytes)])
    }
  }
}
