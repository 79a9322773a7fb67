import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SmartSchoolModel
import Synchronization

/// One replica of a peer service: a host name or IP address and a port.
public struct PeerEndpoint: Sendable, Hashable, CustomStringConvertible {
  /// Host name, IPv4 address, or IPv6 address (without brackets).
  public var host: String
  /// Port.
  public var port: Int

  /// The replica at `host:port`.
  public init(host: String, port: Int) {
    self.host = host
    self.port = port
  }

  /// `host:port`, `[v6]:port` for an IPv6 address.
  public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

  /// Whether `host` is a dotted-quad IPv4 address.
  var isIPv4Literal: Bool {
    let parts = host.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 4
      && parts.allSatisfy { part in
        !part.isEmpty && part.count <= 3 && part.allSatisfy(\.isASCIIDigit)
          && Int(part).map { $0 <= 255 } == true
      }
  }

  /// Whether `host` is an IPv6 address (the only hosts with a colon).
  var isIPv6Literal: Bool { host.contains(":") }

  /// The socket addresses of this replica: the address itself for an IP address, else what
  /// DNS gives for the name now.
  func resolve() async throws -> [SocketAddress] {
    if isIPv4Literal { return [.ipv4(host: host, port: port)] }
    if isIPv6Literal { return [.ipv6(host: host, port: port)] }
    let dns = NameResolvers.DNS().resolver(for: .dns(host: host, port: port))
    var names = dns.names.makeAsyncIterator()
    guard let result = try await names.next() else { return [] }
    return result.endpoints.flatMap(\.addresses)
  }
}

extension Character {
  fileprivate var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}

/// Why an address or address list was refused: `text` as given and the reason, one line.
public struct PeerAddressError: Error, Sendable, Hashable, CustomStringConvertible {
  /// The text that was refused (the whole list).
  public var text: String
  /// What is wrong with it.
  public var reason: String

  /// `'text': reason`.
  public var description: String { "'\(text)': \(reason)" }
}

/// Where and how to reach a peer service: one or several replicas (`host:port`, comma
/// separated), plaintext or TLS with a CA bundle, and optionally a client certificate (mTLS).
///
/// With several replicas, calls are spread over them round robin by gRPC's own load balancer,
/// which connects to every replica, keeps picking only those whose connection is ready (a
/// replica that stops or cannot be reached is skipped) and reconnects to a lost one with
/// backoff. Host names are looked up again whenever the balancer asks (after a replica goes
/// away). With TLS and host names in the list, every replica must present a certificate valid
/// for the first host name listed, the authority (and SNI name) of every call; a list of IP
/// addresses alone is verified replica by replica against each address.
public struct PeerAddress: Sendable, Hashable, CustomStringConvertible {
  /// The replicas, in the order given; never empty.
  public private(set) var endpoints: [PeerEndpoint]
  /// PEM CA bundle to verify the peer with; `nil` = plaintext.
  public var caBundle: String?
  /// PEM client certificate and key to present (mTLS).
  public var clientCertificate: String?
  /// PEM key of ``clientCertificate``.
  public var clientKey: String?

  /// Host of the first (or only) replica.
  public var host: String {
    get { endpoints[0].host }
    set { endpoints[0].host = newValue }
  }

  /// Port of the first (or only) replica.
  public var port: Int {
    get { endpoints[0].port }
    set { endpoints[0].port = newValue }
  }

  /// A peer at `host:port`.
  public init(
    host: String, port: Int, caBundle: String? = nil, clientCertificate: String? = nil,
    clientKey: String? = nil
  ) {
    self.init(
      endpoints: [PeerEndpoint(host: host, port: port)], caBundle: caBundle,
      clientCertificate: clientCertificate, clientKey: clientKey)
  }

  /// A peer with several replicas (at least one).
  public init(
    endpoints: [PeerEndpoint], caBundle: String? = nil, clientCertificate: String? = nil,
    clientKey: String? = nil
  ) {
    precondition(!endpoints.isEmpty, "a peer needs at least one endpoint")
    self.endpoints = endpoints
    self.caBundle = caBundle
    self.clientCertificate = clientCertificate
    self.clientKey = clientKey
  }

  /// Parses `host:port[,host:port…]` (``parseEndpoints(_:)``); throws ``PeerAddressError``
  /// naming what is wrong.
  public init(parsing text: String) throws(PeerAddressError) {
    self.init(endpoints: try Self.parseEndpoints(text))
  }

  /// Parses `host:port[,host:port…]`; `nil` for anything else.
  public init?(_ text: String) {
    guard let endpoints = try? Self.parseEndpoints(text) else { return nil }
    self.init(endpoints: endpoints)
  }

  /// The replicas of a comma-separated list of `host:port` (spaces around an entry are
  /// ignored; an IPv6 address is written `[addr]:port`). Refuses an empty list or entry, an
  /// entry without a host or a port, a port outside 1–65535, and a replica listed twice.
  public static func parseEndpoints(_ text: String) throws(PeerAddressError) -> [PeerEndpoint] {
    func refuse(_ reason: String) -> PeerAddressError {
      PeerAddressError(text: text, reason: reason)
    }
    let entries = text.split(separator: ",", omittingEmptySubsequences: false)
      .map { $0.trimmingSpaces() }
    if entries.allSatisfy(\.isEmpty) {
      throw refuse("no address (expected HOST:PORT[,HOST:PORT…])")
    }
    var endpoints: [PeerEndpoint] = []
    var seen: Set<String> = []
    for (index, entry) in entries.enumerated() {
      guard !entry.isEmpty else {
        throw refuse("address \(index + 1) of \(entries.count) is empty")
      }
      let host: Substring
      let portText: Substring
      if entry.hasPrefix("[") {
        guard let close = entry.firstIndex(of: "]"),
          entry[entry.index(after: close)...].hasPrefix(":")
        else { throw refuse("'\(entry)' is not [IPV6]:PORT") }
        host = entry[entry.index(after: entry.startIndex)..<close]
        portText = entry[entry.index(close, offsetBy: 2)...]
        guard host.contains(":") else { throw refuse("'\(entry)': [\(host)] is not IPv6") }
      } else {
        guard let colon = entry.lastIndex(of: ":") else {
          throw refuse("'\(entry)' is not HOST:PORT")
        }
        host = entry[..<colon]
        portText = entry[entry.index(after: colon)...]
        guard !host.contains(":") else {
          throw refuse("'\(entry)': write an IPv6 address as [ADDRESS]:PORT")
        }
      }
      guard !host.isEmpty else { throw refuse("'\(entry)' has no host") }
      guard !host.contains(where: { $0.isWhitespace || $0 == "/" || $0 == "[" || $0 == "]" })
      else { throw refuse("'\(entry)': '\(host)' is not a host name or address") }
      guard !portText.isEmpty, portText.allSatisfy(\.isASCIIDigit), portText.count <= 5,
        let port = Int(portText), (1...65535).contains(port)
      else { throw refuse("'\(entry)': port '\(portText)' is not a number from 1 to 65535") }
      let endpoint = PeerEndpoint(host: String(host), port: port)
      guard seen.insert(endpoint.description.lowercased()).inserted else {
        throw refuse("\(endpoint) is listed twice")
      }
      endpoints.append(endpoint)
    }
    return endpoints
  }

  /// `host:port`, or the replicas' `host:port` joined by commas.
  public var description: String { endpoints.map(\.description).joined(separator: ",") }

  /// A client transport to this peer; `serviceConfig` sets per-method deadlines and retries.
  /// Several replicas are balanced round robin unless `serviceConfig` names a load-balancing
  /// policy of its own.
  public func makeTransport(serviceConfig: ServiceConfig = ServiceConfig()) throws
    -> HTTP2ClientTransport.Posix
  {
    let security: HTTP2ClientTransport.Posix.TransportSecurity
    if let caBundle {
      let roots: TLSConfig.TrustRootsSource = .certificates([.file(path: caBundle, format: .pem)])
      if let cert = clientCertificate, let key = clientKey {
        security = .mTLS(
          certificateChain: [.file(path: cert, format: .pem)],
          privateKey: .file(path: key, format: .pem)
        ) { $0.trustRoots = roots }
      } else {
        security = .tls { $0.trustRoots = roots }
      }
    } else {
      security = .plaintext
    }
    if endpoints.count == 1 {
      let only = endpoints[0]
      let target: any ResolvableTarget
      if only.isIPv4Literal {
        target = ResolvableTargets.IPv4.ipv4(address: only.host, port: only.port)
      } else if only.isIPv6Literal {
        target = ResolvableTargets.IPv6.ipv6(address: only.host, port: only.port)
      } else {
        target = ResolvableTargets.DNS.dns(host: only.host, port: only.port)
      }
      return try HTTP2ClientTransport.Posix(
        target: target, transportSecurity: security, serviceConfig: serviceConfig)
    }
    var balanced = serviceConfig
    if balanced.loadBalancingConfig.isEmpty { balanced.loadBalancingConfig = [.roundRobin] }
    var registry = NameResolverRegistry.defaults
    registry.registerFactory(ReplicaSetResolverFactory())
    return try HTTP2ClientTransport.Posix(
      target: ReplicaSetTarget(endpoints: endpoints), transportSecurity: security,
      resolverRegistry: registry, serviceConfig: balanced)
  }
}

/// The target of a peer with several replicas, one gRPC endpoint each.
struct ReplicaSetTarget: ResolvableTarget, Sendable {
  var endpoints: [PeerEndpoint]
}

/// Resolves a ``ReplicaSetTarget`` into one endpoint per replica, each with the socket
/// addresses of its host, every time the channel asks (pull mode, as gRPC's DNS resolver).
struct ReplicaSetResolverFactory: NameResolverFactory, Sendable {
  typealias Target = ReplicaSetTarget

  func resolver(for target: ReplicaSetTarget) -> NameResolver {
    // The authority (and TLS name) is the first host name listed: an IP address is no valid
    // SNI name, and without an authority each connection is verified against its address.
    let named = target.endpoints.first { !$0.isIPv4Literal && !$0.isIPv6Literal }
    return NameResolver(
      names: RPCAsyncSequence(wrapping: Resolution(endpoints: target.endpoints)),
      updateMode: .pull, authority: named?.description)
  }

  /// One resolution per `next()`; re-iterable, as a throwing resolver must be.
  struct Resolution: AsyncSequence, Sendable {
    typealias Element = NameResolutionResult
    let endpoints: [PeerEndpoint]

    func makeAsyncIterator() -> Iterator { Iterator(endpoints: endpoints) }

    struct Iterator: AsyncIteratorProtocol {
      let endpoints: [PeerEndpoint]

      /// Every replica whose host resolves; a replica whose name does not resolve is left out
      /// (its neighbours still serve), and the resolution fails only when none resolves.
      func next() async throws -> NameResolutionResult? {
        var resolved: [Endpoint] = []
        var failure: (any Error)?
        for endpoint in endpoints {
          do {
            let addresses = try await endpoint.resolve()
            if !addresses.isEmpty { resolved.append(Endpoint(addresses: addresses)) }
          } catch let error as CancellationError {
            throw error
          } catch {
            failure = error
          }
        }
        guard !resolved.isEmpty else {
          throw RPCError(
            code: .unavailable,
            message: "no replica of \(endpoints.map(\.description).joined(separator: ",")) "
              + "resolves", cause: failure)
        }
        return NameResolutionResult(endpoints: resolved, serviceConfig: nil)
      }
    }
  }
}

/// A long-lived gRPC client to one peer (all its replicas), its connections run in a background
/// task until ``close()``.
public final class PeerConnection: Sendable {
  /// The client; wrap it in a generated `…Service.Client`.
  public let client: GRPCClient<HTTP2ClientTransport.Posix>
  /// The peer.
  public let address: PeerAddress
  private let task: Task<Void, Never>

  /// Connects (lazily, on first call) to `address`; every call passes through `interceptors`
  /// and follows `serviceConfig` (deadlines, retries).
  public init(
    address: PeerAddress, serviceConfig: ServiceConfig = ServiceConfig(),
    interceptors: [any ClientInterceptor] = []
  ) throws {
    self.address = address
    let client = GRPCClient(
      transport: try address.makeTransport(serviceConfig: serviceConfig),
      interceptors: interceptors)
    self.client = client
    self.task = Task { try? await client.runConnections() }
  }

  /// Stops the client after in-flight calls finish.
  public func close() {
    client.beginGracefulShutdown()
  }

  deinit {
    client.beginGracefulShutdown()
  }
}
