import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import ServiceRuntime
import SmartSchoolModel

/// Deadlines and retries of a ``SmartSchoolClient``.
public struct ClientSettings: Sendable {
  /// Deadline of ordinary calls.
  public var callTimeout: Duration = .seconds(30)
  /// Deadline of streaming bulk calls (imports and exports).
  public var bulkTimeout: Duration = .seconds(3600)
  /// Attempts (first try included) of calls that are safe to repeat.
  public var readAttempts: Int = 3
  /// Renew the access token when it has less than this left.
  public var refreshMargin: TimeInterval = 60

  /// The defaults: 30 s per call, an hour per bulk stream, 3 attempts for reads.
  public init() {}
}

/// One login, then typed clients for all four SmartSchool services.
///
/// Every call carries the session's bearer token (renewed before it expires), has a deadline
/// (``ClientSettings/callTimeout``, or ``ClientSettings/bulkTimeout`` for streams), and fails
/// fast when the service cannot be reached, with a message naming the address. Reads
/// (`Get…`, `List…`, `Search…`, `Export…`, …) and logins are retried on UNAVAILABLE; writes,
/// bulk imports and token refreshes never are. A service given several replicas (see
/// ``ServiceAddresses``) is balanced round robin, and a retried call goes to a replica that
/// is up.
///
/// ```swift
/// let client = try SmartSchoolClient(
///   addresses: .fromEnvironment(), credentials: .password(username: "admin", password: pw))
/// defer { client.close() }
/// let me = try await client.identity.whoAmI(.init())
/// ```
public final class SmartSchoolClient: Sendable {
  /// The addresses in use.
  public let addresses: ServiceAddresses
  /// The session whose token every call carries.
  public let session: TokenSession
  private let auth: PeerConnection
  private let connections: [SmartSchoolService: PeerConnection]

  /// A client of the services at `addresses`, authenticating with `credentials` or resuming
  /// `tokens`; `onTokens` is told every renewed token set. Connections open lazily.
  public init(
    addresses: ServiceAddresses, credentials: Credentials?, tokens: TokenSet? = nil,
    settings: ClientSettings = ClientSettings(),
    onTokens: (@Sendable (TokenSet) -> Void)? = nil
  ) throws {
    self.addresses = addresses
    let identityName = SmartSchoolService.identity.grpcServiceName
    var authConfigs = [
      MethodConfig(
        names: [MethodConfig.Name(service: identityName)], waitForReady: false,
        timeout: settings.callTimeout)
    ]
    // A login repeated after its reply was lost leaves one unused session behind, no more; a
    // refresh is never repeated (a refresh token used twice ends the session as stolen).
    if let retry = Self.retryPolicy(settings, timeout: settings.callTimeout) {
      authConfigs.append(
        MethodConfig(
          names: ["Login", "ExchangeClientCredentials"].map {
            MethodConfig.Name(service: identityName, method: $0)
          }, waitForReady: false, timeout: settings.callTimeout, executionPolicy: retry))
    }
    let fastFail = ServiceConfig(methodConfig: authConfigs)
    auth = try PeerConnection(
      address: addresses.identity, serviceConfig: fastFail,
      interceptors: [
        BearerInterceptor(session: nil, service: .identity, address: addresses.identity)
      ])
    session = TokenSession(
      identity: .init(wrapping: auth.client), credentials: credentials, tokens: tokens,
      refreshMargin: settings.refreshMargin, timeout: settings.callTimeout, onChange: onTokens)
    var connections: [SmartSchoolService: PeerConnection] = [:]
    for service in SmartSchoolService.allCases {
      connections[service] = try PeerConnection(
        address: addresses[service],
        serviceConfig: Self.serviceConfig(for: service, settings: settings),
        interceptors: [
          BearerInterceptor(session: session, service: service, address: addresses[service])
        ])
    }
    self.connections = connections
  }

  /// Identity (统一身份认证).
  public var identity: Smartschool_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix> {
    .init(wrapping: connections[.identity]!.client)
  }

  /// Catalogue (统一资源管理).
  public var catalogue: Smartschool_Catalogue_V1_CatalogueService.Client<HTTP2ClientTransport.Posix>
  { .init(wrapping: connections[.catalogue]!.client) }

  /// Assessment (学业评价).
  public var assessment:
    Smartschool_Assessment_V1_AssessmentService.Client<HTTP2ClientTransport.Posix>
  { .init(wrapping: connections[.assessment]!.client) }

  /// Supervision (监管平台).
  public var supervision:
    Smartschool_Supervision_V1_SupervisionService.Client<HTTP2ClientTransport.Posix>
  { .init(wrapping: connections[.supervision]!.client) }

  /// Logs in with the credentials now and returns the new tokens.
  @discardableResult
  public func login() async throws -> TokenSet {
    try await session.login()
  }

  /// Closes every connection once in-flight calls finish.
  public func close() {
    auth.close()
    for connection in connections.values { connection.close() }
  }

  /// Whether calling `method` twice has the effect of calling it once, so that a failed
  /// attempt may be repeated: reads, plus `PutFacilityReport` (create-or-replace).
  public static func isSafeToRepeat(_ method: MethodDescriptor) -> Bool {
    let readPrefixes = ["Get", "List", "Search", "Export", "Recommend", "Download", "Introspect"]
    return readPrefixes.contains { method.method.hasPrefix($0) } || method.method == "WhoAmI"
      || method.method == "PutFacilityReport"
  }

  /// Methods whose request or response is a stream of rows.
  static func isBulk(_ method: MethodDescriptor) -> Bool {
    ["Import", "Export", "Upload", "Download"].contains { method.method.hasPrefix($0) }
      || method.method == "ListLessons"
  }

  /// The generated method descriptors of a service.
  static func methods(of service: SmartSchoolService) -> [MethodDescriptor] {
    switch service {
    case .identity: Smartschool_Identity_V1_IdentityService.Method.descriptors
    case .catalogue: Smartschool_Catalogue_V1_CatalogueService.Method.descriptors
    case .assessment: Smartschool_Assessment_V1_AssessmentService.Method.descriptors
    case .supervision: Smartschool_Supervision_V1_SupervisionService.Method.descriptors
    }
  }

  /// The repeat of an attempt answered UNAVAILABLE (``ClientSettings/readAttempts``
  /// attempts, at most 5), or nil for one attempt. It is gRPC's hedging policy with a delay
  /// as long as the call's deadline, so attempts never overlap: each follows the previous
  /// one's UNAVAILABLE at once, on the replica the balancer picks next. Not gRPC's retry
  /// policy: in grpc-swift 2.x its executor, when no connection can be made at all, waits for
  /// the call's whole deadline before it fails (a CLI command against a service that is down
  /// took 30 s to say so); the hedging executor fails such a call at once.
  static func retryPolicy(_ settings: ClientSettings, timeout: Duration) -> RPCExecutionPolicy? {
    guard settings.readAttempts > 1 else { return nil }
    return .hedge(
      HedgingPolicy(
        maxAttempts: min(settings.readAttempts, 5), hedgingDelay: timeout,
        nonFatalStatusCodes: [.unavailable]))
  }

  /// Deadlines for every method and fail-fast (no waiting for a connection that cannot be
  /// made), and the repeat policy (``retryPolicy(_:timeout:)``) for the calls that are safe
  /// to repeat (not client streams): an attempt the service answered UNAVAILABLE before any
  /// response (a replica going away, its connection reset) is made again on a new stream,
  /// which the balancer places on a replica that is up. A service that cannot be reached at
  /// all fails at once.
  static func serviceConfig(for service: SmartSchoolService, settings: ClientSettings)
    -> ServiceConfig
  {
    let all = methods(of: service)
    func names(_ filter: (MethodDescriptor) -> Bool) -> [MethodConfig.Name] {
      all.filter(filter).map {
        MethodConfig.Name(service: $0.service.fullyQualifiedService, method: $0.method)
      }
    }
    func repeatable(_ method: MethodDescriptor) -> Bool {
      isSafeToRepeat(method) && !method.method.hasPrefix("Import")
    }
    var configs = [
      MethodConfig(
        names: [MethodConfig.Name(service: service.grpcServiceName)], waitForReady: false,
        timeout: settings.callTimeout)
    ]
    let bulk = names { isBulk($0) && !repeatable($0) }
    if !bulk.isEmpty {
      configs.append(
        MethodConfig(names: bulk, waitForReady: false, timeout: settings.bulkTimeout))
    }
    let bulkReads = names { isBulk($0) && repeatable($0) }
    if !bulkReads.isEmpty {
      configs.append(
        MethodConfig(
          names: bulkReads, waitForReady: false, timeout: settings.bulkTimeout,
          executionPolicy: retryPolicy(settings, timeout: settings.bulkTimeout)))
    }
    let reads = names { !isBulk($0) && repeatable($0) }
    if !reads.isEmpty {
      configs.append(
        MethodConfig(
          names: reads, waitForReady: false, timeout: settings.callTimeout,
          executionPolicy: retryPolicy(settings, timeout: settings.callTimeout)))
    }
    return ServiceConfig(methodConfig: configs)
  }
}

/// Attaches the session's bearer token (if any) to every call but the open ones, and turns a
/// failure to reach the service into an UNAVAILABLE error that names the service and its
/// address. It sees one attempt: repeats are the repeat policy's (``SmartSchoolClient``), since
/// an interceptor cannot open a second stream.
struct BearerInterceptor: ClientInterceptor {
  let session: TokenSession?
  let service: SmartSchoolService
  let address: PeerAddress

  static let openMethods: Set<String> = [
    "Login", "LoginSecondFactor", "Refresh", "ExchangeClientCredentials", "ActivateAccount",
    "ListSigningKeys",
  ]

  func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingClientRequest<Input>,
    context: ClientContext,
    next: (StreamingClientRequest<Input>, ClientContext) async throws -> StreamingClientResponse<
      Output
    >
  ) async throws -> StreamingClientResponse<Output> {
    var request = request
    if let session, !Self.openMethods.contains(context.descriptor.method) {
      let token = try await session.accessToken()
      request.metadata.replaceOrAddString("Bearer \(token)", forKey: "authorization")
    }
    do {
      var response = try await next(request, context)
      if case .failure(let error) = response.accepted {
        response.accepted = .failure(named(error))
      }
      return response
    } catch let error as RPCError {
      throw named(error)
    }
  }

  /// UNAVAILABLE (and a deadline hit before any connection) say where the service was sought.
  func named(_ error: RPCError) -> RPCError {
    guard error.code == .unavailable else { return error }
    return RPCError(
      code: .unavailable,
      message: "\(service.rawValue) service at \(address) is unreachable (\(error.message))",
      metadata: error.metadata, cause: error.cause)
  }
}
