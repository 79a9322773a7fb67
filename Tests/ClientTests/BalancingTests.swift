import CatalogueService
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import IdentityService
import Logging
import ServiceRuntime
@testable import SmartSchoolCLI
import SmartSchoolClient
import SmartSchoolModel
import Synchronization
import TestSupport
import Testing

/// Addresses whose identity is `identity` (a comma-separated list); catalogue is `catalogue`,
/// the others a closed port.
private func balancedAddresses(identity: [Int], catalogue: Int = 1) throws -> ServiceAddresses {
  try ServiceAddresses.fromEnvironment(
    [:],
    flags: [
      .identity: identity.map { "127.0.0.1:\($0)" }.joined(separator: ","),
      .catalogue: "127.0.0.1:\(catalogue)", .assessment: "127.0.0.1:1",
      .supervision: "127.0.0.1:1",
    ])
}

/// What a load of repeated calls came to.
struct LoadOutcome: Sendable {
  var succeeded = 0
  var failed = 0
  var errors: [String] = []
}

/// Runs `call` from `workers` concurrent loops until `duration` has passed and together they
/// have succeeded `atLeast` times (so a loaded machine still covers the window it is meant to),
/// for at most 30 s, counting failures.
func runLoad(
  workers: Int, for duration: Duration, atLeast minimum: Int = 0,
  _ call: @escaping @Sendable () async throws -> Void
) async -> LoadOutcome {
  let clock = ContinuousClock()
  let end = clock.now + duration
  let cap = clock.now + .seconds(30)
  let successes = Counter()
  return await withTaskGroup(of: LoadOutcome.self) { group in
    for _ in 0..<workers {
      group.addTask {
        var outcome = LoadOutcome()
        while clock.now < cap, clock.now < end || successes.value < minimum {
          do {
            try await call()
            outcome.succeeded += 1
            successes.add(1)
          } catch {
            outcome.failed += 1
            if outcome.errors.count < 3 { outcome.errors.append("\(error)") }
          }
        }
        return outcome
      }
    }
    var total = LoadOutcome()
    for await outcome in group {
      total.succeeded += outcome.succeeded
      total.failed += outcome.failed
      total.errors += outcome.errors
    }
    return total
  }
}

/// A count shared by concurrent loops.
private final class Counter: Sendable {
  private let count = Mutex(0)
  var value: Int { count.withLock { $0 } }
  func add(_ n: Int) { count.withLock { $0 += n } }
}

/// Calls `call` until every host has served `method` at least once (the balancer has
/// connected to every replica), for at most 10 s.
func warmUp(
  _ hosts: [ServiceHost], method: String, _ call: @Sendable () async throws -> Void
) async throws {
  let deadline = Date().addingTimeInterval(10)
  while hosts.contains(where: { servedCalls($0, method: method) == 0 }), Date() < deadline {
    try await call()
  }
}

/// The SDK and the CLI given several addresses per service, balancing themselves (no balancer
/// in front): independent servers here, so this runs on both stores.
@Suite("Client-side balancing over several replicas")
struct BalancingTests {
  @Test func addressListsComeFromFlagsOverTheEnvironment() throws {
    let addresses = try ServiceAddresses.fromEnvironment(
      [
        "SMARTSCHOOL_IDENTITY_ADDR": "10.0.0.1:50051,10.0.0.2:50051",
        "SMARTSCHOOL_ASSESSMENT_ADDR": "a1:7000, a2:7000, a3:7000",
      ],
      flags: [.identity: "id-1:9000,id-2:9000,id-3:9000"], caBundle: "/ca.pem")
    #expect(addresses.identity.description == "id-1:9000,id-2:9000,id-3:9000")
    #expect(addresses.assessment.endpoints.map(\.host) == ["a1", "a2", "a3"])
    #expect(addresses.catalogue.description == "127.0.0.1:50052")
    #expect(addresses.identity.caBundle == "/ca.pem" && addresses.assessment.caBundle == "/ca.pem")

    #expect {
      try ServiceAddresses.fromEnvironment(["SMARTSCHOOL_CATALOGUE_ADDR": "c1:1,,c2:2"])
    } throws: { error in
      "\(error)"
        == "invalid argument: SMARTSCHOOL_CATALOGUE_ADDR must be HOST:PORT[,HOST:PORT…]: "
        + "'c1:1,,c2:2': address 2 of 3 is empty"
    }
    #expect {
      try ServiceAddresses.fromEnvironment([:], flags: [.supervision: "s:1,s:1"])
    } throws: { error in
      "\(error)".hasPrefix("invalid argument: --supervision-addr must be")
        && "\(error)".hasSuffix("'s:1,s:1': s:1 is listed twice")
    }
    #expect {
      try ServiceAddresses.fromEnvironment([:], flags: [.identity: "h:70000"])
    } throws: { error in
      "\(error)".hasSuffix("port '70000' is not a number from 1 to 65535")
    }
  }

  @Test func theCLIsAddressFlagsReachTheClient() throws {
    let options = try ConnectionOptions.parse([
      "--identity-addr", "127.0.0.1:7001,127.0.0.1:7002", "--supervision-addr", "s:7004",
    ])
    let addresses = try options.addresses()
    #expect(addresses.identity.endpoints.map(\.port) == [7001, 7002])
    #expect(addresses.supervision.description == "s:7004")
    let bad = try ConnectionOptions.parse(["--catalogue-addr", "c:1,c:x"])
    #expect {
      _ = try bad.addresses()
    } throws: { error in
      "\(error)".contains("--catalogue-addr must be HOST:PORT[,HOST:PORT…]: 'c:1,c:x'")
    }
  }

  /// Three independent identity servers: sixty reads go round robin, twenty to each; while
  /// four loops read, one replica stops, and not one read fails; after it, the stopped
  /// replica gets nothing and the other two everything.
  @Test func readsGoRoundRobinAndAStoppedReplicaIsSkipped() async throws {
    try await withIdentityReplicas(3, sharingOneStore: false) { ports, hosts in
      let client = try SmartSchoolClient(
        addresses: balancedAddresses(identity: ports), credentials: nil)
      defer { client.close() }
      let read: @Sendable () async throws -> Void = {
        _ = try await client.identity.listSigningKeys(.init())
      }
      try await warmUp(hosts, method: "ListSigningKeys", read)
      let before = hosts.map { servedCalls($0, method: "ListSigningKeys") }
      for _ in 0..<60 { try await read() }
      let spread = zip(hosts, before).map { servedCalls($0, method: "ListSigningKeys") - $1 }
      #expect(spread.reduce(0, +) == 60)
      #expect(spread.allSatisfy { (15...25).contains($0) }, "calls per replica: \(spread)")

      async let load = runLoad(workers: 4, for: .seconds(1.5), atLeast: 20, read)
      try await Task.sleep(for: .milliseconds(400))
      await hosts[1].shutdown()
      let outcome = await load
      #expect(outcome.failed == 0, "\(outcome.errors)")
      #expect(outcome.succeeded >= 20)

      let stopped = servedCalls(hosts[1], method: "ListSigningKeys")
      let alive = [0, 2].map { servedCalls(hosts[$0], method: "ListSigningKeys") }
      for _ in 0..<40 { try await read() }
      #expect(servedCalls(hosts[1], method: "ListSigningKeys") == stopped)
      let after = [0, 2].map { servedCalls(hosts[$0], method: "ListSigningKeys") }
      #expect(after[0] - alive[0] == 20 && after[1] - alive[1] == 20, "\(alive) → \(after)")
    }
  }

  /// A replica that is down from the start is skipped; with every replica down, the call
  /// fails fast as UNAVAILABLE naming where it looked: at once, not at its 30 s deadline, both
  /// for reads that may be repeated (the default) and with repeats turned off.
  @Test func aReplicaDownFromTheStartIsSkipped() async throws {
    try await withIdentityReplicas(1, sharingOneStore: false) { ports, hosts in
      let client = try SmartSchoolClient(
        addresses: balancedAddresses(identity: [1, ports[0], 2]), credentials: nil)
      defer { client.close() }
      for _ in 0..<20 { _ = try await client.identity.listSigningKeys(.init()) }
      #expect(servedCalls(hosts[0], method: "ListSigningKeys") == 20)
    }
    for attempts in [ClientSettings().readAttempts, 1] {
      var settings = ClientSettings()
      settings.readAttempts = attempts
      #expect(settings.callTimeout == .seconds(30))
      let down = try SmartSchoolClient(
        addresses: balancedAddresses(identity: [1, 2]), credentials: nil, settings: settings)
      defer { down.close() }
      let started = ContinuousClock.now
      let error = await rpcError { _ = try await down.identity.listSigningKeys(.init()) }
      #expect(error?.code == .unavailable)
      let message = error?.message ?? ""
      #expect(
        message.contains("127.0.0.1:1") || message.contains("127.0.0.1:2"),
        "\(String(describing: error))")
      let loggingIn = try SmartSchoolClient(
        addresses: balancedAddresses(identity: [1, 2]),
        credentials: .password(username: "admin", password: testAdminPassword),
        settings: settings)
      defer { loggingIn.close() }
      let login = await rpcError { _ = try await loggingIn.login() }
      #expect(login?.code == .unavailable)
      let took = ContinuousClock.now - started
      #expect(took < .seconds(10), "\(attempts) attempts: \(took)")
    }
  }
}

/// Three identity replicas on one PostgreSQL database, reached through the SDK's own
/// balancing, and a catalogue whose `--identity-addr` lists all three.
@Suite(
  "Client-side balancing over replicas on one PostgreSQL database",
  .enabled(if: TestStore.postgresServer != nil))
struct SharedStoreBalancingTests {
  /// Logins and reads spread over the three replicas; a token issued by one is accepted by
  /// every one; one replica stops under a steady load of reads and logins, and no read fails.
  @Test func readsAndLoginsSpreadAndNoReadFailsWhileAReplicaStops() async throws {
    try await withIdentityReplicas(3, sharingOneStore: true) { ports, hosts in
      let admin: Credentials = .password(username: "admin", password: testAdminPassword)
      let client = try SmartSchoolClient(
        addresses: balancedAddresses(identity: ports), credentials: admin)
      defer { client.close() }
      let read: @Sendable () async throws -> Void = {
        _ = try await client.identity.whoAmI(.init())
      }
      try await warmUp(hosts, method: "WhoAmI", read)
      let before = hosts.map { servedCalls($0, method: "WhoAmI") }
      for _ in 0..<60 { try await read() }
      let spread = zip(hosts, before).map { servedCalls($0, method: "WhoAmI") - $1 }
      #expect(spread.allSatisfy { (15...25).contains($0) }, "WhoAmI per replica: \(spread)")

      for _ in 0..<6 { try await client.login() }
      let logins = hosts.map { servedCalls($0, method: "Login") }
      #expect(logins.allSatisfy { $0 >= 1 }, "logins per replica: \(logins)")

      // One replica's token, every replica's answer.
      let token = try #require(await client.session.current?.accessToken)
      for port in ports {
        try await withClient(port: port) { raw in
          let me = try await Smartschool_Identity_V1_IdentityService.Client(wrapping: raw)
            .whoAmI(.init(), metadata: bearer(token))
          #expect(me.user.username == "admin")
        }
      }

      // Reads while replica 2 stops (logins run beside them; a login is not repeated, so
      // its failures are counted apart).
      let loginClient = try SmartSchoolClient(
        addresses: balancedAddresses(identity: ports), credentials: admin)
      defer { loginClient.close() }
      async let reads = runLoad(workers: 4, for: .seconds(2), atLeast: 20, read)
      async let logging = runLoad(workers: 1, for: .seconds(2)) {
        _ = try await loginClient.login()
      }
      try await Task.sleep(for: .milliseconds(600))
      await hosts[2].shutdown()
      let (readOutcome, loginOutcome) = await (reads, logging)
      #expect(readOutcome.failed == 0, "\(readOutcome.errors)")
      #expect(readOutcome.succeeded >= 20)
      let loginCounts = "\(loginOutcome.succeeded) ok, \(loginOutcome.failed) failed"
      #expect(loginOutcome.succeeded >= 1, "logins: \(loginCounts) \(loginOutcome.errors)")
      print(
        "balancing: while a replica stopped, \(readOutcome.succeeded) reads ok, "
          + "\(readOutcome.failed) failed; logins \(loginCounts)")
      // Logins answered after the stop came from the other two.
      let stopped = servedCalls(hosts[2], method: "Login")
      for _ in 0..<4 { try await loginClient.login() }
      #expect(servedCalls(hosts[2], method: "Login") == stopped)
    }
  }

  /// A catalogue started with `--identity-addr` listing three identity replicas, the first of
  /// them already down: it fetches keys and the org tree from the others, validates tokens
  /// they issue, and keeps doing so when a second replica stops.
  @Test func aCatalogueLinkedToThreeIdentityReplicasValidatesTokensWithOneDown() async throws {
    try await withIdentityReplicas(3, sharingOneStore: true) { ports, hosts in
      let (clientID, secret) = try await withClient(port: ports[0]) { raw in
        let identity = Smartschool_Identity_V1_IdentityService.Client(wrapping: raw)
        let auth = bearer(try await login(identity, "admin", testAdminPassword))
        _ = try await identity.createOrg(
          .with {
            $0.org = .with {
              $0.code = "P34"
              $0.name = "安徽省"
              $0.kind = .province
            }
          }, metadata: auth)
        let account = try await identity.createServiceAccount(
          .with {
            $0.name = "catalogue-sync"
            $0.orgCode = "P34"
            $0.roles = [.dataExchange]
          }, metadata: auth)
        return (account.clientID, account.clientSecret)
      }
      await hosts[0].shutdown()

      let dir = try TemporaryDirectory()
      defer { dir.remove() }
      let config = try await TestStore.config(service: "catalogue", directory: dir)
      let options = try IdentityLinkOptions.parse([
        "--identity-addr", ports.map { "127.0.0.1:\($0)" }.joined(separator: ","),
        "--client-id", clientID, "--client-secret", secret,
      ])
      let link = try options.open(config: config, environment: [:])
      defer { link.close() }
      var logger = Logger(label: "catalogue")
      logger.logLevel = .critical
      let definition = try await buildCatalogueService(
        config: config, settings: CatalogueSettings(), verifier: link.makeVerifier(),
        identity: link, logger: logger)
      let directory = try #require(definition.background.first as? OrgDirectory)
      try await directory.sync()
      #expect(directory.org(code: "P34")?.kind == .province)

      try await withHost(definition, config: config) { cataloguePort, _ in
        let client = try SmartSchoolClient(
          addresses: balancedAddresses(identity: ports, catalogue: cataloguePort),
          credentials: .password(username: "admin", password: testAdminPassword))
        defer { client.close() }
        for _ in 0..<10 { _ = try await client.catalogue.listResources(.init()) }
        let forged = await statusCode {
          _ = try await withClient(port: cataloguePort) { raw in
            try await Smartschool_Catalogue_V1_CatalogueService.Client(wrapping: raw)
              .listResources(.init(), metadata: bearer("not-a-token"))
          }
        }
        #expect(forged == .unauthenticated)

        await hosts[1].shutdown()
        try await client.login()
        for _ in 0..<10 { _ = try await client.catalogue.listResources(.init()) }
        // Keys and the feed still come through the one replica left.
        for _ in 0..<5 { try await link.verifier.refresh() }
        try await directory.sync()
        #expect(servedCalls(hosts[2], method: "ListSigningKeys") >= 5)
      }
    }
  }
}
