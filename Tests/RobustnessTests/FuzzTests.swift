import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import ServiceRuntime
import SmartSchoolModel
import Synchronization
import TestSupport
import Testing

/// Raw bytes in and out: the fuzzer writes the wire format itself.
struct RawSerializer: MessageSerializer {
  func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
}

struct RawDeserializer: MessageDeserializer {
  func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> [UInt8] {
    bytes.withUnsafeBytes { Array($0) }
  }
}

/// Codes that mean the server lost control of a request: an unmapped error, a crash of the
/// handler, storage trouble leaking out, or a dropped stream or connection (UNAVAILABLE: nothing
/// here is overloaded or down). Hostile input must never produce them.
let uncontrolledCodes: Set<RPCError.Code> = [.internalError, .unknown, .dataLoss, .unavailable]

/// Calls `method` with raw request messages and returns the status code (nil = OK).
func callRaw(
  _ client: GRPCClient<HTTP2ClientTransport.Posix>, _ method: FuzzMethod, messages: [[UInt8]],
  metadata: Metadata
) async -> (code: RPCError.Code?, message: String) {
  var options = CallOptions.defaults
  options.timeout = .seconds(20)
  let request = StreamingClientRequest<[UInt8]>(metadata: metadata) { writer in
    try await writer.write(contentsOf: messages)
  }
  do {
    try await client.bidirectionalStreaming(
      request: request,
      descriptor: MethodDescriptor(fullyQualifiedService: method.service, method: method.name),
      serializer: RawSerializer(), deserializer: RawDeserializer(), options: options
    ) { response in
      for try await _ in response.messages {}
    }
    return (nil, "")
  } catch let error as RPCError {
    return (error.code, error.message)
  } catch {
    return (.unknown, "\(error)")
  }
}

@Suite("Hostile input: every RPC of every service, fuzzed from the schema")
struct FuzzTests {
  /// Cases per RPC; SMARTSCHOOL_FUZZ_CASES raises it for a longer run outside CI.
  static let casesPerMethod = FuzzSettings.cases(default: 12)

  @Test func hostileRequestsGetAClearStatusAndNeverBreakAService() async throws {
    let fuzzer = try SchemaFuzzer()
    let seed = FuzzSettings.seed
    try await withSuite { world in
      var covered = Set<String>()
      var codes: [String: Int] = [:]
      for (name, (port, definition)) in world.services.sorted(by: { $0.key < $1.key }) {
        let methods = fuzzer.methods.filter { $0.service == definition.grpcServiceName }
        #expect(!methods.isEmpty, "no methods found for \(name)")
        try await withClient(port: port) { client in
          for method in methods {
            covered.insert(method.fullName)
            // Each RPC's cases depend only on the seed and its name, so one can be replayed.
            var rng = SeededGenerator(
              seed: seed ^ method.fullName.utf8.reduce(5381) { ($0 << 5) &+ $0 &+ UInt64($1) })
            let token = try await world.adminToken()
            for index in 0..<Self.casesPerMethod {
              let count = method.clientStreaming ? Int.random(in: 0...3, using: &rng) : 1
              let messages = (0..<count).map { _ in fuzzer.request(for: method, rng: &rng) }
              let result = await callRaw(
                client, method, messages: messages, metadata: bearer(token))
              codes[result.code.map { "\($0)" } ?? "ok", default: 0] += 1
              #expect(
                result.code.map { !uncontrolledCodes.contains($0) } ?? true,
                "\(method.fullName) case \(index) (seed \(seed)): \(result.code!) \(result.message)"
              )
            }
          }
          // Still serving, and still answering correctly.
          let health = Grpc_Health_V1_Health.Client(wrapping: client)
          #expect(try await health.check(.init()).status == .serving, "\(name) stopped serving")
        }
      }
      #expect(covered.count == fuzzer.methods.count(where: { m in
        world.services.values.contains { $0.definition.grpcServiceName == m.service }
      }))
      // The fuzzer reached the handlers: some requests passed validation, some were refused.
      #expect(codes["ok", default: 0] > 0, "\(codes)")
      #expect(codes["invalidArgument", default: 0] > 0, "\(codes)")
      let seeded = try await world.identity.getOrg(
        .with { $0.code = "WEST9-S-C1" }, metadata: bearer(try await world.adminToken()))
      #expect(seeded.kind == .class)
      print("fuzz: \(covered.count) RPCs, status codes \(codes.sorted { $0.key < $1.key })")
    }
  }

  @Test func everyRPCRefusesCallersWithoutAValidToken() async throws {
    let fuzzer = try SchemaFuzzer()
    try await withSuite { world in
      for (_, (port, definition)) in world.services {
        try await withClient(port: port) { client in
          for method in fuzzer.methods where method.service == definition.grpcServiceName {
            if definition.openMethods.contains(method.fullName) { continue }
            for metadata: Metadata in [[:], bearer("x.y.z"), ["authorization": "Basic YTpi"]] {
              let result = await callRaw(client, method, messages: [[]], metadata: metadata)
              #expect(
                result.code == .unauthenticated,
                "\(method.fullName): \(String(describing: result.code))")
            }
          }
        }
      }
    }
  }
}
