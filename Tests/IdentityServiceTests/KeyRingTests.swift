import Foundation
@testable import IdentityService
import ServiceRuntime
import Synchronization
import Testing
import TestSupport

/// The signing keys of one replica against a key reload that read the store just before a
/// rotation on the same replica and finishes after it (the replica follower's reload, once a
/// second on PostgreSQL).
@Suite("Identity signing keys: a rotation racing a reload")
struct KeyRingTests {
  /// The store's keys, with one read that can be held after it has read: the next read after
  /// ``arm()`` signals `read` once it has the keys and waits for ``release()``.
  final class HeldKeys: SigningKeyStore {
    let inner: any SigningKeyStore
    let armed = Mutex(false)
    let read = AsyncStream<Void>.makeStream()
    let gate = AsyncStream<Void>.makeStream()

    init(_ inner: any SigningKeyStore) { self.inner = inner }

    func arm() { armed.withLock { $0 = true } }
    func release() { gate.continuation.yield() }

    func signingKeys() async throws -> [StoredKey] {
      let keys = try await inner.signingKeys()
      if armed.withLock({ a in defer { a = false }; return a }) {
        read.continuation.yield()
        var released = gate.stream.makeAsyncIterator()
        _ = await released.next()
      }
      return keys
    }

    func addSigningKey(_ key: StoredKey, retireOthersAt: Date?) async throws {
      try await inner.addSigningKey(key, retireOthersAt: retireOthersAt)
    }
  }

  @Test func aReloadThatReadBeforeARotationDoesNotUndoIt() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let storage = try Store(
      directory: dir.path, name: "identity", migrations: IdentityMigrations.register)
    let keys = HeldKeys(try SQLiteIdentityStore(store: storage, accountCacheEntries: 10))
    let ring = try await KeyRing.load(store: keys, storage: storage, accessTokenTTL: 900)
    let first = ring.signer.keyID

    keys.arm()
    async let reloaded = ring.reload()
    var read = keys.read.stream.makeAsyncIterator()
    _ = await read.next()  // the reload holds the keys as they were before the rotation
    let rotated = try await ring.rotate()
    keys.release()
    #expect(try await reloaded == false)

    #expect(rotated.keyID != first)
    #expect(ring.signer.keyID == rotated.keyID)
    #expect(ring.publishedMessages.first(where: \.current)?.keyID == rotated.keyID)
    #expect(Set(ring.publishedKeys.map(\.keyID)) == [first, rotated.keyID])
    // A reload now reads the rotation and keeps it.
    _ = try await ring.reload()
    #expect(ring.signer.keyID == rotated.keyID)
  }
}
