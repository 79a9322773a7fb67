import GRPCCore
import GRPCNIOTransportHTTP2
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

/// Oversize requests, the way a municipal gateway multiplexes users on one connection: the
/// oversize call fails alone with RESOURCE_EXHAUSTED, whatever its size, and the calls beside
/// it on the same connection succeed.
@Suite("Transport limits: oversize messages and metadata")
struct TransportLimitTests {
  /// Good calls on `client` while `bad` runs on the same connection; returns `bad`'s error.
  private func alongsideGoodCalls(
    _ client: GRPCClient<HTTP2ClientTransport.Posix>, token: String,
    _ bad: @escaping @Sendable () async throws -> Void
  ) async throws -> RPCError? {
    let identity = Smartschool_Identity_V1_IdentityService.Client(wrapping: client)
    return try await withThrowingTaskGroup(of: RPCError?.self) { group in
      for _ in 0..<4 {
        group.addTask {
          for _ in 0..<10 {
            let me = try await identity.whoAmI(.init(), metadata: bearer(token))
            #expect(me.user.username == "admin")
          }
          return nil
        }
      }
      group.addTask { await rpcError(bad) }
      var refused: RPCError?
      for try await error in group { if let error { refused = error } }
      return refused
    }
  }

  @Test func oversizeMessagesOfAnySizeAreResourceExhausted() async throws {
    try await withIdentity { port, _ in
      try await withClient(port: port) { client in
        let identity = Smartschool_Identity_V1_IdentityService.Client(wrapping: client)
        let token = try await login(identity, "admin", testAdminPassword)
        let limit = 4 * 1024 * 1024
        for size in [limit + 1, 8 << 20, 16 << 20, 64 << 20] {
          let name = String(repeating: "x", count: size)
          let refused = try await alongsideGoodCalls(client, token: token) {
            _ = try await identity.login(.with {
              $0.username = name
              $0.password = "whatever-1"
            })
          }
          #expect(refused?.code == .resourceExhausted, "\(size) bytes: \(String(describing: refused))")
          #expect(refused?.message.contains("limit of \(limit) bytes") == true)
        }
        // A client-streaming import: one good row, then one far past the limit.
        let admin = bearer(token)
        let streamed = await rpcError {
          _ = try await identity.importOrgs(
            metadata: admin,
            requestProducer: { writer in
              try await writer.write(.with { $0.org.code = "P1" })
              try await writer.write(.with { $0.org.name = String(repeating: "省", count: 6 << 20) })
            })
        }
        #expect(streamed?.code == .resourceExhausted)
        // The connection still serves.
        _ = try await identity.whoAmI(.init(), metadata: admin)
      }
    }
  }

  @Test func oversizeMetadataFailsOnlyItsOwnCall() async throws {
    try await withIdentity { port, _ in
      try await withClient(port: port) { client in
        let identity = Smartschool_Identity_V1_IdentityService.Client(wrapping: client)
        let token = try await login(identity, "admin", testAdminPassword)
        // grpc-swift's own client resets its connection when it sends header blocks of more than
        // a few frames; the interop suite sends larger ones from grpcio (200 KB, and 900 KB by hand).
        for size in [17_000, 20_000] {
          let refused = try await alongsideGoodCalls(client, token: token) {
            let metadata = bearer(String(repeating: "a", count: size))
            _ = try await identity.whoAmI(.init(), metadata: metadata)
          }
          #expect(refused?.code == .resourceExhausted, "\(size) bytes: \(String(describing: refused))")
          #expect(refused?.message.contains("limit of 16384 bytes") == true)
        }
        // Many custom entries rather than one long one; then an ordinary call.
        var many: Metadata = bearer(token)
        for i in 0..<200 { many.addString(String(repeating: "v", count: 60), forKey: "x-note-\(i)") }
        let refused = await rpcError { _ = try await identity.whoAmI(.init(), metadata: many) }
        #expect(refused?.code == .resourceExhausted)
        _ = try await identity.whoAmI(.init(), metadata: bearer(token))
      }
    }
  }
}
