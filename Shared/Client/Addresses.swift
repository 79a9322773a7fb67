import Foundation
import ServiceRuntime

/// The four SmartSchool services a client talks to.
public enum SmartSchoolService: String, CaseIterable, Sendable {
  /// Identity (统一身份认证), default port 50051.
  case identity
  /// Catalogue (统一资源管理), default port 50052.
  case catalogue
  /// Assessment (学业评价), default port 50053.
  case assessment
  /// Supervision (监管平台), default port 50054.
  case supervision

  /// The default port on 127.0.0.1.
  public var defaultPort: Int {
    switch self {
    case .identity: 50051
    case .catalogue: 50052
    case .assessment: 50053
    case .supervision: 50054
    }
  }

  /// The environment variable that overrides the address, e.g. `SMARTSCHOOL_IDENTITY_ADDR`.
  public var environmentVariable: String { "SMARTSCHOOL_\(rawValue.uppercased())_ADDR" }

  /// The command-line flag that overrides the address, e.g. `--identity-addr`.
  public var flag: String { "--\(rawValue)-addr" }

  /// The fully qualified gRPC service name, e.g. `smartschool.identity.v1.IdentityService`.
  public var grpcServiceName: String {
    switch self {
    case .identity: "smartschool.identity.v1.IdentityService"
    case .catalogue: "smartschool.catalogue.v1.CatalogueService"
    case .assessment: "smartschool.assessment.v1.AssessmentService"
    case .supervision: "smartschool.supervision.v1.SupervisionService"
    }
  }
}

/// Where the four services are: one or several replicas (`host:port`) each, plaintext or TLS
/// with one CA bundle. A service given several replicas is balanced round robin by the client,
/// a replica that is down skipped (see ``PeerAddress``), for deployments without a balancer.
public struct ServiceAddresses: Sendable, Hashable {
  /// Identity's address (its replicas).
  public var identity: PeerAddress
  /// Catalogue's address (its replicas).
  public var catalogue: PeerAddress
  /// Assessment's address (its replicas).
  public var assessment: PeerAddress
  /// Supervision's address (its replicas).
  public var supervision: PeerAddress

  /// Addresses given explicitly.
  public init(
    identity: PeerAddress, catalogue: PeerAddress, assessment: PeerAddress,
    supervision: PeerAddress
  ) {
    self.identity = identity
    self.catalogue = catalogue
    self.assessment = assessment
    self.supervision = supervision
  }

  /// 127.0.0.1:50051–50054, plaintext.
  public static let defaults = ServiceAddresses(
    identity: PeerAddress(host: "127.0.0.1", port: 50051),
    catalogue: PeerAddress(host: "127.0.0.1", port: 50052),
    assessment: PeerAddress(host: "127.0.0.1", port: 50053),
    supervision: PeerAddress(host: "127.0.0.1", port: 50054))

  /// The defaults overridden by `SMARTSCHOOL_<SERVICE>_ADDR`, then by `flags` (a flag's value
  /// per service, e.g. from `--identity-addr`), each `host:port` or a comma-separated list of
  /// replicas' `host:port`, with TLS verified by `caBundle` (a PEM file) when one is given.
  /// Throws ``ClientError/badAddress(_:_:)`` naming the variable or flag for a malformed value
  /// (an empty entry, a bad port, a replica listed twice, …).
  public static func fromEnvironment(
    _ environment: [String: String] = ProcessInfo.processInfo.environment,
    flags: [SmartSchoolService: String] = [:],
    caBundle: String? = nil
  ) throws -> ServiceAddresses {
    var result = ServiceAddresses.defaults
    for service in SmartSchoolService.allCases {
      let given: (source: String, text: String)? =
        flags[service].map { (service.flag, $0) }
        ?? environment[service.environmentVariable].flatMap {
          $0.isEmpty ? nil : (service.environmentVariable, $0)
        }
      if let given {
        do {
          result[service] = try PeerAddress(parsing: given.text)
        } catch {
          throw ClientError.badAddress(given.source, error)
        }
      }
      result[service].caBundle = caBundle
    }
    return result
  }

  /// The address of one service.
  public subscript(service: SmartSchoolService) -> PeerAddress {
    get {
      switch service {
      case .identity: identity
      case .catalogue: catalogue
      case .assessment: assessment
      case .supervision: supervision
      }
    }
    set {
      switch service {
      case .identity: identity = newValue
      case .catalogue: catalogue = newValue
      case .assessment: assessment = newValue
      case .supervision: supervision = newValue
      }
    }
  }
}

/// Failures of the client itself (as opposed to gRPC errors from a service).
public enum ClientError: Error, CustomStringConvertible, Sendable {
  /// An address variable or flag (its name) is not `host:port[,host:port…]`: why.
  case badAddress(String, PeerAddressError)
  /// No credentials and no session to authenticate with.
  case notLoggedIn
  /// Identity answered without a usable token.
  case noToken(String)

  /// One line for a human.
  public var description: String {
    switch self {
    case .badAddress(let name, let error):
      "invalid argument: \(name) must be HOST:PORT[,HOST:PORT…]: \(error)"
    case .notLoggedIn:
      "not logged in: run `smartschool login` or set SMARTSCHOOL_USERNAME and SMARTSCHOOL_PASSWORD"
    case .noToken(let why): "identity gave no usable token: \(why)"
    }
  }
}
