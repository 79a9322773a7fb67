import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import IdentityService
import Logging
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

/// A throwaway CA with a server and a client certificate for 127.0.0.1, made with openssl.
struct TestPKI {
  let dir: String
  var ca: String { dir + "/ca.pem" }
  var serverCert: String { dir + "/server.pem" }
  var serverKey: String { dir + "/server.key" }
  var clientCert: String { dir + "/client.pem" }
  var clientKey: String { dir + "/client.key" }

  init(in dir: String) throws {
    self.dir = dir
    let ext = dir + "/san.ext"
    try "subjectAltName=IP:127.0.0.1,DNS:localhost\n".write(toFile: ext, atomically: true, encoding: .utf8)
    try TestPKI.openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-nodes", "-keyout", dir + "/ca.key", "-out", dir + "/ca.pem", "-days", "2",
                         "-subj", "/CN=SmartSchool Test CA"])
    for name in ["server", "client"] {
      try TestPKI.openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                           "-keyout", "\(dir)/\(name).key", "-out", "\(dir)/\(name).csr",
                           "-subj", "/CN=\(name)"])
      try TestPKI.openssl(["x509", "-req", "-in", "\(dir)/\(name).csr", "-CA", dir + "/ca.pem",
                           "-CAkey", dir + "/ca.key", "-CAcreateserial", "-out", "\(dir)/\(name).pem",
                           "-days", "2", "-extfile", ext])
    }
  }

  static func openssl(_ args: [String]) throws {
    let p = try ChildProcess(
      executable: "/usr/bin/openssl", arguments: args,
      environment: ProcessInfo.processInfo.environment)
    guard p.exitedNormally, p.terminationStatus == 0 else {
      throw ServiceError.internalError("openssl \(args.first ?? "") failed")
    }
  }
}

@Suite("TLS and mTLS")
struct TLSTests {
  func withTLSIdentity(
    pki: TestPKI, mutual: Bool, _ body: (Int) async throws -> Void
  ) async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    var config = HostConfig.ephemeral(service: "identity", dataDirectory: dir.path)
    config.tls = .init(certificate: pki.serverCert, key: pki.serverKey, clientCA: mutual ? pki.ca : nil)
    var logger = Logger(label: "identity")
    logger.logLevel = .critical
    let definition = try await buildIdentityService(config: config, settings: .forTests(), logger: logger)
    try await withHost(definition, config: config) { port, _ in try await body(port) }
  }

  func healthCheck(port: Int, peer: PeerAddress) async throws -> Grpc_Health_V1_HealthCheckResponse.ServingStatus {
    let connection = try PeerConnection(address: peer)
    defer { connection.close() }
    var options = CallOptions.defaults
    // A TLS handshake of a debug build on a loaded 2-core machine can take seconds.
    options.timeout = .seconds(30)
    return try await Grpc_Health_V1_Health.Client(wrapping: connection.client)
      .check(.init(), options: options).status
  }

  @Test func tlsServesClientsThatTrustTheCA() async throws {
    let tmp = try TemporaryDirectory()
    defer { tmp.remove() }
    let pki = try TestPKI(in: tmp.path)
    try await withTLSIdentity(pki: pki, mutual: false) { port in
      let status = try await healthCheck(
        port: port, peer: PeerAddress(host: "127.0.0.1", port: port, caBundle: pki.ca))
      #expect(status == .serving)
      // A plaintext client gets nowhere.
      await #expect(throws: (any Error).self) {
        _ = try await healthCheck(port: port, peer: PeerAddress(host: "127.0.0.1", port: port))
      }
    }
  }

  @Test func mutualTLSRefusesClientsWithoutACertificate() async throws {
    let tmp = try TemporaryDirectory()
    defer { tmp.remove() }
    let pki = try TestPKI(in: tmp.path)
    try await withTLSIdentity(pki: pki, mutual: true) { port in
      let withCert = try await healthCheck(
        port: port,
        peer: PeerAddress(host: "127.0.0.1", port: port, caBundle: pki.ca,
                          clientCertificate: pki.clientCert, clientKey: pki.clientKey))
      #expect(withCert == .serving)
      await #expect(throws: (any Error).self) {
        _ = try await healthCheck(
          port: port, peer: PeerAddress(host: "127.0.0.1", port: port, caBundle: pki.ca))
      }
    }
  }
}
