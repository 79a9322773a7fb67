import ArgumentParser
import Foundation
import ServiceRuntime
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
}
