import Foundation
import GRPCCore
import GRPCProtobuf

/// A field problem found while validating a request: which field, and what is wrong with it.
public struct FieldViolation: Hashable, Sendable, CustomStringConvertible {
  /// Dot/bracket path of the field in the request, e.g. `org.code` or `items[2].max_score`.
  public var field: String
  /// What is wrong, in English, for a developer.
  public var description: String

  /// A violation of `field`, described for a developer.
  public init(_ field: String, _ description: String) {
    self.field = field
    self.description = description
  }
}

/// The errors a service's domain and store raise. The one table that maps domain errors to
/// gRPC status codes is ``rpcError``; nothing leaks as UNKNOWN.
public enum ServiceError: Error, Hashable, Sendable {
  /// Bad input: INVALID_ARGUMENT with google.rpc.BadRequest field violations.
  case invalidArgument([FieldViolation])
  /// Missing, malformed, expired or revoked credentials: UNAUTHENTICATED.
  case unauthenticated(String)
  /// Authenticated but out of scope or role: PERMISSION_DENIED.
  case permissionDenied(String)
  /// The named entity does not exist (or is not visible): NOT_FOUND.
  case notFound(String)
  /// A natural key is taken: ALREADY_EXISTS.
  case alreadyExists(String)
  /// A state-machine violation: FAILED_PRECONDITION.
  case failedPrecondition(String)
  /// A limit was hit (concurrency, size, disk): RESOURCE_EXHAUSTED.
  case resourceExhausted(String)
  /// A dependency (store lock, peer service) is unavailable for now: UNAVAILABLE.
  case unavailable(String)
  /// A bug or corrupt state on the server's side: INTERNAL.
  case internalError(String)

  /// Bad input in one field.
  public static func invalid(_ field: String, _ description: String) -> ServiceError {
    .invalidArgument([FieldViolation(field, description)])
  }

  /// The gRPC status code for this error.
  public var code: RPCError.Code {
    switch self {
    case .invalidArgument: .invalidArgument
    case .unauthenticated: .unauthenticated
    case .permissionDenied: .permissionDenied
    case .notFound: .notFound
    case .alreadyExists: .alreadyExists
    case .failedPrecondition: .failedPrecondition
    case .resourceExhausted: .resourceExhausted
    case .unavailable: .unavailable
    case .internalError: .internalError
    }
  }

  /// The English developer message.
  public var message: String {
    switch self {
    case .invalidArgument(let violations):
      "invalid argument: "
        + violations.map { "\($0.field): \($0.description)" }.joined(separator: "; ")
    case .unauthenticated(let m), .permissionDenied(let m), .notFound(let m),
      .alreadyExists(let m), .failedPrecondition(let m), .resourceExhausted(let m),
      .unavailable(let m), .internalError(let m):
      m
    }
  }

  /// The error as a gRPC status; INVALID_ARGUMENT carries a google.rpc.Status with
  /// BadRequest field violations in `grpc-status-details-bin`.
  public var rpcError: RPCError {
    if case .invalidArgument(let violations) = self {
      let status = GoogleRPCStatus(
        code: .invalidArgument, message: message,
        details: [
          .badRequest(
            violations: violations.map {
              .init(field: $0.field, description: $0.description)
            })
        ])
      return RPCError(code: .invalidArgument, message: message, metadata: status.rpcErrorMetadata)
    }
    return RPCError(code: code, message: message)
  }
}

extension ServiceError: RPCErrorConvertible {
  public var rpcErrorCode: RPCError.Code { code }
  public var rpcErrorMessage: String { message }
  public var rpcErrorMetadata: Metadata { rpcError.metadata }
}

/// Collects field violations while a request is validated, then throws them all at once.
///
/// ```swift
/// var v = Validator()
/// v.check(!name.isEmpty, "org.name", "must not be empty")
/// try v.throwIfInvalid()
/// ```
public struct Validator: Sendable {
  /// The violations found so far.
  public private(set) var violations: [FieldViolation] = []

  /// An empty validator.
  public init() {}

  /// Records a violation of `field` unless `condition` holds.
  public mutating func check(_ condition: Bool, _ field: String, _ description: String) {
    if !condition { violations.append(FieldViolation(field, description)) }
  }

  /// Records a violation.
  public mutating func add(_ field: String, _ description: String) {
    violations.append(FieldViolation(field, description))
  }

  /// Checks that a string's length (in characters) lies within `range`.
  public mutating func length(
    _ value: String, _ field: String, _ range: ClosedRange<Int>
  ) {
    let n = value.count
    if n < range.lowerBound {
      add(field, range.lowerBound == 1 ? "must not be empty" : "must have at least \(range.lowerBound) characters")
    } else if n > range.upperBound {
      add(field, "must have at most \(range.upperBound) characters")
    }
  }

  /// Checks a natural-key code: 1–64 of ASCII letters, digits, '-', '_', '.'.
  public mutating func code(_ value: String, _ field: String) {
    if value.isEmpty {
      add(field, "must not be empty")
    } else if !TextRules.isCode(value) {
      add(field, "must be 1-64 characters of letters, digits, '-', '_' or '.'")
    }
  }

  /// Checks that a text field holds no control characters and fits `maxLength`.
  public mutating func text(
    _ value: String, _ field: String, required: Bool = true, maxLength: Int = 200
  ) {
    if required && value.trimmingCharacters(in: .whitespaces).isEmpty {
      add(field, "must not be empty")
    } else if value.count > maxLength {
      add(field, "must have at most \(maxLength) characters")
    } else if value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
      add(field, "must not contain control characters")
    }
  }

  /// Throws INVALID_ARGUMENT with every violation found, if any.
  public func throwIfInvalid() throws(ServiceError) {
    if !violations.isEmpty { throw .invalidArgument(violations) }
  }
}

/// Character-set rules shared by every service.
public enum TextRules {
  /// True for 1–64 ASCII letters, digits, '-', '_' and '.'.
  public static func isCode(_ value: String) -> Bool {
    guard (1...64).contains(value.utf8.count) else { return false }
    return value.utf8.allSatisfy { c in
      (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
        || c == 0x2D || c == 0x5F || c == 0x2E
    }
  }

  /// True for 3–64 ASCII letters, digits, '.', '_', '-', '@'.
  public static func isUsername(_ value: String) -> Bool {
    guard (3...64).contains(value.utf8.count) else { return false }
    return value.utf8.allSatisfy { c in
      (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
        || c == 0x2D || c == 0x5F || c == 0x2E || c == 0x40
    }
  }
}
