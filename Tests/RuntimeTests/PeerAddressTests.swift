import ArgumentParser
import Foundation
import GRPCCore
import IdentityService
import Logging
import ServiceRuntime
import SmartSchoolModel
import TestSupport
import Testing

/// Several replicas per peer: the `host:port[,host:port…]` lists of the services'
/// `--identity-addr` and the client SDK's addresses.
@Suite("Peer address lists")
struct PeerAddressTests {
  @Test func aListNamesEveryReplicaInOrder() throws {
    let address = try PeerAddress(
      parsing: "10.0.0.1:50051, identity-2.school.example:50061 ,[::1]:50071")
    #expect(
      address.endpoints == [
        PeerEndpoint(host: "10.0.0.1", port: 50051),
        PeerEndpoint(host: "identity-2.school.example", port: 50061),
        PeerEndpoint(host: "::1", port: 50071),
      ])
    #expect(address.description == "10.0.0.1:50051,identity-2.school.example:50061,[::1]:50071")
    #expect(address.host == "10.0.0.1" && address.port == 50051)
    let one = try #require(PeerAddress("localhost:7000"))
    #expect(one.endpoints == [PeerEndpoint(host: "localhost", port: 7000)])
    #expect(one == PeerAddress(host: "localhost", port: 7000))
  }

  @Test(arguments: [
    ("", "no address"),
    (" , ", "no address"),
    ("a:1,,b:2", "address 2 of 3 is empty"),
    ("a:1,", "address 2 of 2 is empty"),
    ("a:1,b", "'b' is not HOST:PORT"),
    (":50051", "has no host"),
    ("a:0", "port '0' is not a number from 1 to 65535"),
    ("a:65536", "port '65536'"),
    ("a:http", "port 'http'"),
    ("a:", "port ''"),
    ("a:+80", "port '+80'"),
    ("a:1,A:1", "A:1 is listed twice"),
    ("10.0.0.1:5,10.0.0.2:5,10.0.0.1:5", "10.0.0.1:5 is listed twice"),
    ("::1:50051", "write an IPv6 address as [ADDRESS]:PORT"),
    ("[::1]50051", "is not [IPV6]:PORT"),
    ("[abc]:1", "is not IPv6"),
    ("my host:1", "is not a host name or address"),
  ])
  func aMalformedListIsRefusedWithTheReason(text: String, reason: String) {
    do {
      let address = try PeerAddress(parsing: text)
      Issue.record("'\(text)' parsed as \(address)")
    } catch {
      #expect(error.text == text)
      #expect(error.reason.contains(reason), "\(error)")
    }
    #expect(PeerAddress(text) == nil)
  }

  @Test func identityAddrTakesSeveralReplicasAndRefusesABadListAtStartUp() throws {
    let config = HostConfig.ephemeral(service: "catalogue", dataDirectory: "/nonexistent")
    let options = try IdentityLinkOptions.parse([
      "--identity-addr", "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
    ])
    let resolved = try options.resolve(config: config, environment: [:])
    #expect(resolved.address.endpoints.map(\.port) == [7001, 7002, 7003])
    let fromEnvironment = try IdentityLinkOptions.parse([]).resolve(
      config: config,
      environment: ["SMARTSCHOOL_CATALOGUE_IDENTITY_ADDR": "h1:1,h2:2"])
    #expect(fromEnvironment.address.description == "h1:1,h2:2")
    for bad in ["127.0.0.1:7001,", "127.0.0.1:7001,127.0.0.1:7001", "127.0.0.1:99999"] {
      let options = try IdentityLinkOptions.parse(["--identity-addr", bad])
      #expect {
        _ = try options.resolve(config: config, environment: [:])
      } throws: { error in
        "\(error)".contains("--identity-addr must be HOST:PORT[,HOST:PORT…]: '\(bad)'")
      }
    }
  }

  /// Two TLS replicas, named by address (each verified against its address), then one by
  /// address and one by host name (resolved through DNS; the host name is every call's TLS
  /// name): both are verified with the CA and both serve calls.
  @Test func tlsReplicasAreVerifiedAndBothServe() async throws {
    let tmp = try TemporaryDirectory()
    defer { tmp.remove() }
    let pki = try TestPKI(in: tmp.path)
    func tlsIdentity(_ body: (Int, ServiceHost) async throws -> Void) async throws {
      let dir = try TemporaryDirectory()
      defer { dir.remove() }
      var config = HostConfig.ephemeral(service: "identity", dataDirectory: dir.path)
      config.tls = .init(certificate: pki.serverCert, key: pki.serverKey, clientCA: nil)
      var logger = Logger(label: "identity")
      logger.logLevel = .critical
      let definition = try await buildIdentityService(
        config: config, settings: .forTests(), logger: logger)
      try await withHost(definition, config: config, body)
    }
    try await tlsIdentity { p1, h1 in
      try await tlsIdentity { p2, h2 in
        for second in ["127.0.0.1", "localhost"] {
          let address = PeerAddress(
            endpoints: [
              PeerEndpoint(host: "127.0.0.1", port: p1), PeerEndpoint(host: second, port: p2),
            ], caBundle: pki.ca)
          let before = [h1, h2].map { servedCalls($0, method: "ListSigningKeys") }
          let connection = try PeerConnection(address: address)
          defer { connection.close() }
          let identity = Smartschool_Identity_V1_IdentityService.Client(
            wrapping: connection.client)
          var options = CallOptions.defaults
          options.timeout = .seconds(30)
          // Round robin uses the replicas whose connection is ready: on a loaded machine the
          // second TLS handshake may finish after the first calls went out, so calls go on
          // (briefly paced, at most 15 s) until both replicas have served.
          var served = [0, 0]
          let deadline = ContinuousClock.now + .seconds(15)
          for call in 0..<300 {
            _ = try await identity.listSigningKeys(.init(), options: options)
            served = zip([h1, h2], before).map {
              servedCalls($0, method: "ListSigningKeys") - $1
            }
            if call >= 19 && served.allSatisfy({ $0 > 0 }) || ContinuousClock.now > deadline {
              break
            }
            if call >= 19 { try await Task.sleep(for: .milliseconds(50)) }
          }
          #expect(served.allSatisfy { $0 > 0 }, "\(second): \(served)")
        }
      }
    }
  }
}
