import ArgumentParser
import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SmartSchoolModel
import Synchronization

/// The other services' line to identity: the published signing keys (for local token
/// verification) and a service-account token obtained by client credentials (for calls such
/// as the org-tree change feed).
public final class IdentityLink: Sendable {
  /// The connection to identity.
  public let connection: PeerConnection
  /// The token verifier fed by this link: keys from identity, and the session revocations an
  /// ``OrgDirectory`` following identity's feed through this link reports.
  public let verifier: TokenVerifier
  private let credentials: (clientID: String, clientSecret: String)?
  private let cachedToken = Mutex<(token: String, expires: Date)?>(nil)

  /// A link to identity at `address` (one or several replicas, balanced round robin);
  /// `credentials` are a service account's client id and secret (needed only for calls that
  /// require a token).
  public init(address: PeerAddress, credentials: (clientID: String, clientSecret: String)?) throws
  {
    let connection = try PeerConnection(address: address)
    self.connection = connection
    self.credentials = credentials
    self.verifier = TokenVerifier(keySource: {
      try await IdentityLink.onAnyReplica(of: address) {
        try await IdentityLink.publishedKeys(
          Smartschool_Identity_V1_IdentityService.Client(wrapping: connection.client))
      }
    })
  }

  /// Runs `call`, again on UNAVAILABLE while replicas remain untried: a replica that went away
  /// fails the calls already sent to it before the balancer stops picking it. Only for calls
  /// that are safe to repeat (reads, and token issue).
  static func onAnyReplica<T: Sendable>(
    of address: PeerAddress, _ call: () async throws -> T
  ) async throws -> T {
    var attempt = 1
    while true {
      do {
        return try await call()
      } catch let error as RPCError
        where error.code == .unavailable && attempt < address.endpoints.count
      {
        attempt += 1
        try await Task.sleep(for: .milliseconds(50))
      }
    }
  }

  /// ``onAnyReplica(of:_:)`` for this link's replicas.
  func onAnyReplica<T: Sendable>(_ call: () async throws -> T) async throws -> T {
    try await IdentityLink.onAnyReplica(of: connection.address, call)
  }

  /// The generated client.
  public var identity: Smartschool_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix> {
    .init(wrapping: connection.client)
  }

  /// The keys identity publishes now (``TokenVerifier/KeySource``).
  public func publishedKeys() async throws -> [PublishedKey] {
    try await onAnyReplica { try await IdentityLink.publishedKeys(identity) }
  }

  // A caller waits on this fetch when a token names a key not cached yet (the first call after
  // a start or a rotation); a loaded identity host answers slowly, not never, and failing the
  // fetch fails that call, so its deadline is a write's, not a read's.
  private static func publishedKeys(
    _ identity: Smartschool_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix>
  ) async throws -> [PublishedKey] {
    let response = try await identity.listSigningKeys(
      .init(), options: IdentityLink.callOptions(seconds: 15))
    return try response.keys.map(PublishedKey.init(proto:))
  }

  /// The token verifier fed by this link (the same one on every call, so that revocations
  /// reported through the link apply to it).
  public func makeVerifier() -> TokenVerifier { verifier }

  /// A valid service-account access token, fetched anew a minute before the cached one expires.
  /// The exchange checks the secret with scrypt, which takes seconds on a loaded identity host,
  /// so its deadline is longer than a read's.
  public func serviceToken() async throws -> String {
    if let cached = cachedToken.withLock({ $0 }), cached.expires.timeIntervalSinceNow > 60 {
      return cached.token
    }
    guard let credentials else {
      throw ServiceError.unauthenticated("no service-account credentials configured for identity")
    }
    let response = try await onAnyReplica {
      try await identity.exchangeClientCredentials(
        .with {
          $0.clientID = credentials.clientID
          $0.clientSecret = credentials.clientSecret
        }, options: IdentityLink.callOptions(seconds: 15))
    }
    let expires = response.accessTokenExpireTime.date
    cachedToken.withLock { $0 = (response.accessToken, expires) }
    return response.accessToken
  }

  /// Metadata carrying the service-account token.
  public func authorizedMetadata() async throws -> Metadata {
    ["authorization": "Bearer \(try await serviceToken())"]
  }

  /// Call options with a deadline.
  public static func callOptions(seconds: Int) -> CallOptions {
    var options = CallOptions.defaults
    options.timeout = .seconds(seconds)
    return options
  }

  /// Closes the connection.
  public func close() { connection.close() }
}

extension PublishedKey {
  /// The key of a `SigningKey` message; INVALID_ARGUMENT-like failure for a bad key.
  public init(proto: Smartschool_Identity_V1_SigningKey) throws {
    self.init(
      keyID: proto.keyID,
      publicKey: try Curve25519.Signing.PublicKey(rawRepresentation: proto.publicKey),
      retireTime: proto.hasRetireTime ? proto.retireTime.date : nil)
  }
}

/// The flags of a service that calls identity (catalogue, assessment, supervision): where
/// identity listens and the service account that reads its change feed. Each falls back to
/// `SMARTSCHOOL_<SERVICE>_<FLAG>`, like ``HostOptions``.
public struct IdentityLinkOptions: ParsableArguments, Sendable {
  @Option(
    help: """
      Identity service address HOST:PORT, or several replicas' HOST:PORT,HOST:PORT,… \
      (balanced round robin, a replica that is down skipped). [default: 127.0.0.1:50051]
      """)
  public var identityAddr: String?

  @Option(help: "Client id of the service account that reads identity's change feed.")
  public var clientId: String?

  @Option(help: "Client secret of that service account.")
  public var clientSecret: String?

  public init() {}

  /// The flags above, for ``HostOptions/environmentHelp(service:extraFlags:)``.
  public static var flags: [String] { optionFlags(of: IdentityLinkOptions()) }

  /// Resolves flags, then environment, then defaults into identity's address (one or several
  /// replicas) and the service account's credentials. The address trusts `config.clientCA`;
  /// when the host requires client certificates (mTLS), this service presents its own server
  /// certificate to identity.
  public func resolve(
    config: HostConfig, environment: [String: String] = ProcessInfo.processInfo.environment
  ) throws -> (address: PeerAddress, credentials: (clientID: String, clientSecret: String)?) {
    let env = EnvironmentReader(service: config.service, environment: environment)
    let text = identityAddr ?? env["identity-addr"] ?? "127.0.0.1:50051"
    var address: PeerAddress
    do {
      address = try PeerAddress(parsing: text)
    } catch {
      throw ValidationError("--identity-addr must be HOST:PORT[,HOST:PORT…]: \(error)")
    }
    address.caBundle = config.clientCA
    if let tls = config.tls, tls.clientCA != nil {
      address.clientCertificate = tls.certificate
      address.clientKey = tls.key
    }
    let id = clientId ?? env["client-id"]
    let secret = clientSecret ?? env["client-secret"]
    switch (id, secret) {
    case (let id?, let secret?): return (address, (id, secret))
    case (nil, nil): return (address, nil)
    default: throw ValidationError("--client-id and --client-secret go together")
    }
  }

  /// The link these options describe (``resolve(config:environment:)``); close it when the
  /// service stops.
  public func open(
    config: HostConfig, environment: [String: String] = ProcessInfo.processInfo.environment
  ) throws -> IdentityLink {
    let resolved = try resolve(config: config, environment: environment)
    return try IdentityLink(address: resolved.address, credentials: resolved.credentials)
  }
}
