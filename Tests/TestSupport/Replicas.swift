import Foundation
import IdentityService
import Logging
import ServiceRuntime

/// How many calls of `method` (its name, e.g. `WhoAmI`) `host` has finished, whatever their
/// status, read from the host's Prometheus metrics.
public func servedCalls(_ host: ServiceHost, method: String) -> Int {
  host.metrics.render().split(separator: "\n").reduce(0) { sum, line in
    guard line.hasPrefix("smartschool_rpc_requests_total{"), line.contains("/\(method)\""),
      let value = line.split(separator: " ").last.flatMap({ Double($0) })
    else { return sum }
    return sum + Int(value)
  }
}

/// Runs `count` in-process identity replicas for the duration of `body`, given their ports and
/// hosts (a test may shut one down). With `sharingOneStore` the replicas are built together on
/// one PostgreSQL database, as ops run them behind a balancer (PostgreSQL runs only: SQLite is
/// one process's store); otherwise each has a store of its own, on either backend.
public func withIdentityReplicas<T: Sendable>(
  _ count: Int = 3, sharingOneStore: Bool,
  _ body: (_ ports: [Int], _ hosts: [ServiceHost]) async throws -> T
) async throws -> T {
  precondition(
    !sharingOneStore || TestStore.backend == .postgresql, "one store for replicas: PostgreSQL")
  var quiet = Logger(label: "identity")
  quiet.logLevel = .critical
  let logger = quiet
  let directories = try (0..<(sharingOneStore ? 1 : count)).map { _ in try TemporaryDirectory() }
  defer { for directory in directories { directory.remove() } }
  var configs: [HostConfig] = []
  for directory in directories {
    configs.append(try await TestStore.config(service: "identity", directory: directory))
  }
  if sharingOneStore { configs = Array(repeating: configs[0], count: count) }
  let frozen = configs
  let definitions = try await withThrowingTaskGroup(of: (Int, ServiceDefinition).self) { group in
    for index in 0..<count {
      group.addTask {
        (
          index,
          try await buildIdentityService(
            config: frozen[index], settings: .forTests(), logger: logger)
        )
      }
    }
    var all: [Int: ServiceDefinition] = [:]
    for try await (index, definition) in group { all[index] = definition }
    return (0..<count).map { all[$0]! }
  }
  func serve(_ index: Int, _ ports: [Int], _ hosts: [ServiceHost]) async throws -> T {
    guard index < count else { return try await body(ports, hosts) }
    return try await withHost(definitions[index], config: frozen[index]) { port, host in
      try await serve(index + 1, ports + [port], hosts + [host])
    }
  }
  return try await serve(0, [], [])
}
