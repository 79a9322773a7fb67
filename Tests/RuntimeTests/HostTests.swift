#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif
import Foundation
import SwiftProtobuf
import GRPCCore
import GRPCNIOTransportHTTP2
import IdentityService
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

@Suite("Service host: health, reflection, metrics, errors")
struct HostTests {
  @Test func healthCheckAndWatchUntilDrain() async throws {
    try await withIdentity { port, host in
      try await withClient(port: port) { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        let whole = try await health.check(.init())
        #expect(whole.status == .serving)
        let named = try await health.check(.with { $0.service = identityGRPCServiceName })
        #expect(named.status == .serving)
        #expect(await statusCode {
          _ = try await health.check(.with { $0.service = "no.such.Service" })
        } == .notFound)
        // Watch sees SERVING, then NOT_SERVING when the host starts draining.
        let seen = try await health.watch(.init()) { response in
          var statuses: [Grpc_Health_V1_HealthCheckResponse.ServingStatus] = []
          for try await message in response.messages {
            statuses.append(message.status)
            if statuses.count == 1 { Task { await host.shutdown() } }
          }
          return statuses
        }
        #expect(seen == [.serving, .notServing])
      }
    }
  }

  @Test func reflectionListsServicesAndServesDescriptors() async throws {
    try await withIdentity { port, _ in
      try await withClient(port: port) { client in
        let reflection = Grpc_Reflection_V1_ServerReflection.Client(wrapping: client)
        let answers = try await reflection.serverReflectionInfo(
          requestProducer: { writer in
            try await writer.write(.with { $0.listServices = "" })
            try await writer.write(.with {
              $0.fileContainingSymbol = "smartschool.identity.v1.IdentityService.Login"
            })
            try await writer.write(.with { $0.fileByFilename = "no/such.proto" })
          },
          onResponse: { response in
            var all: [Grpc_Reflection_V1_ServerReflectionResponse] = []
            for try await m in response.messages { all.append(m) }
            return all
          })
        #expect(answers.count == 3)
        let names = answers[0].listServicesResponse.service.map(\.name)
        #expect(names.contains(identityGRPCServiceName))
        #expect(names.contains("grpc.health.v1.Health"))
        let files = try answers[1].fileDescriptorResponse.fileDescriptorProto.map {
          try Google_Protobuf_FileDescriptorProto(serializedBytes: $0)
        }
        #expect(files.first?.name == "smartschool/identity/v1/identity_service.proto")
        #expect(files.contains { $0.name == "smartschool/common/v1/common.proto" })
        #expect(files.contains { $0.name == "google/protobuf/timestamp.proto" })
        #expect(answers[2].errorResponse.errorCode == Int32(RPCError.Code.notFound.rawValue))
        // v1alpha answers the same.
        let alpha = Grpc_Reflection_V1alpha_ServerReflection.Client(wrapping: client)
        let listed = try await alpha.serverReflectionInfo(
          requestProducer: { writer in try await writer.write(.with { $0.listServices = "" }) },
          onResponse: { response in
            var all: [String] = []
            for try await m in response.messages { all += m.listServicesResponse.service.map(\.name) }
            return all
          })
        #expect(listed.contains(identityGRPCServiceName))
      }
    }
  }

  @Test func metricsMoveAfterCalls() async throws {
    try await withIdentity { port, host in
      let metricsPort = try #require(await host.boundMetricsPort())
      func scrape() async throws -> String {
        let url = URL(string: "http://127.0.0.1:\(metricsPort)/metrics")!
        return String(decoding: try await fetch(url), as: UTF8.self)
      }
      try await withClient(port: port) { client in
        let identity = Smartschool_Identity_V1_IdentityService.Client(wrapping: client)
        _ = try await login(identity, "admin", testAdminPassword)
        _ = try? await login(identity, "admin", "Wrong-pass-1")
        // Refused before any handler runs, and still counted (and logged) under its method.
        await #expect(throws: RPCError.self) { _ = try await identity.whoAmI(.init()) }
      }
      let text = try await scrape()
      let refused = text.split(separator: "\n").first {
        $0.hasPrefix("smartschool_rpc_requests_total")
          && $0.contains("IdentityService/WhoAmI") && $0.contains("code=\"unauthenticated\"")
      }
      #expect(refused?.hasSuffix(" 1") == true)
      let loginOK = text.split(separator: "\n").first {
        $0.hasPrefix("smartschool_rpc_requests_total")
          && $0.contains("IdentityService/Login") && $0.contains("code=\"ok\"")
      }
      #expect(loginOK?.hasSuffix(" 1") == true)
      #expect(text.contains("code=\"unauthenticated\""))
      #expect(text.contains("smartschool_rpc_duration_seconds_bucket"))
      #expect(text.contains("smartschool_store_size_bytes"))
      #expect(text.contains("smartschool_change_feed_head"))
    }
  }
}

/// GET over plain HTTP (the metrics endpoint).
func fetch(_ url: URL) async throws -> Data {
  #if canImport(FoundationNetworking)
    return try await withCheckedThrowingContinuation { c in
      let task = URLSession.shared.dataTask(with: url) { data, _, error in
        if let error { c.resume(throwing: error) } else { c.resume(returning: data ?? Data()) }
      }
      task.resume()
    }
  #else
    return try await URLSession.shared.data(from: url).0
  #endif
}
