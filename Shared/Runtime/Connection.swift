import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization

/// Where and how to reach a peer service: `host:port`, plaintext or TLS with a CA bundle, and
/// optionally a client certificate (mTLS).
public struct PeerAddress: Sendable, Hashable, CustomStringConvertible {
  /// Host name or IPv4 address.
  public var host: String
  /// Port.
  public var port: Int
  /// PEM CA bundle to verify the peer with; `nil` = plaintext.
  public var caBundle: String?
  /// PEM client certificate and key to present (mTLS).
  public var clientCertificate: String?
  /// PEM key of ``clientCertificate``.
  public var clientKey: String?

  /// A peer at `host:port`.
  public init(
    host: String, port: Int, caBundle: String? = nil, clientCertificate: String? = nil,
    clientKey: String? = nil
  ) {
    self.host = host
    self.port = port
    self.caBundle = caBundle
    self.clientCertificate = clientCertificate
    self.clientKey = clientKey
  }

  /// Parses `host:port`; `nil` for anything else.
  public init?(_ text: String) {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
      (1...65535).contains(port), colon != text.startIndex
    else { return nil }
    self.init(host: String(text[..<colon]), port: port)
  }

  /// `host:port`.
  public var description: String { "\(host):\(port)" }

  /// A client transport to this peer; `serviceConfig` sets per-method deadlines and retries.
  public func makeTransport(serviceConfig: ServiceConfig = ServiceConfig()) throws
    -> HTTP2ClientTransport.Posix
  {
    let target: any ResolvableTarget =
      host.allSatisfy({ $0.isNumber || $0 == "." })
      ? ResolvableTargets.IPv4.ipv4(address: host, port: port)
      : ResolvableTargets.DNS.dns(host: host, port: port)
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
    return try HTTP2ClientTransport.Posix(
      target: target, transportSecurity: security, serviceConfig: serviceConfig)
  }
}

/// A long-lived gRPC client to one peer, its connections run in a background task until
/// ``close()``.
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
