import Foundation
import GRPCCore
import GRPCProtobuf
import SwiftProtobuf

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
  /// A concurrent change won (a serialisation failure or deadlock that retries did not
  /// resolve): ABORTED, to be retried by the caller.
  case aborted(String)
  /// A bug or corrupt state on the server's side: INTERNAL.
  case internalError(String)

  /// The status for a PostgreSQL SQLSTATE the caller did not cause directly: the one table
  /// for both stores (SQLite's result codes map in ``Store/map(_:)`` to the same statuses).
  /// A taken key is ALREADY_EXISTS; a broken reference or check FAILED_PRECONDITION; a
  /// serialisation failure or deadlock that retries did not resolve ABORTED; a full disk
  /// RESOURCE_EXHAUSTED; a server shutting down, a lost connection, a lock or statement
  /// timeout UNAVAILABLE.
  public static func store(sqlState: String, message: String) -> ServiceError {
    switch sqlState {
    case "23505": return .alreadyExists("an entity with the same key already exists")
    case "23503", "23514", "23502", "23P01":
      return .failedPrecondition("the change conflicts with existing data")
    case "40001", "40P01":
      return .aborted("a concurrent change conflicted with this one; retry")
    case "53100": return .resourceExhausted("the store is full (disk space)")
    case "53200", "53300", "53400":
      return .unavailable("the database is out of resources (\(sqlState)); retry shortly")
    case "55P03", "57014":
      return .unavailable("the database is busy (lock or statement timeout); retry shortly")
    case "57P01", "57P02", "57P03", "25006":
      return .unavailable("the database is restarting or read-only; retry shortly")
    default:
      if sqlState.hasPrefix("08") {
        return .unavailable("the database connection failed; retry shortly")
      }
      return .internalError("store error SQLSTATE \(sqlState): \(message)")
    }
  }

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
    case .aborted: .aborted
    case .internalError: .internalError
    }
  }

  /// The English developer message, bounded in size (see ``reported``).
  public var message: String {
    switch self {
    case .invalidArgument:
      ServiceError.bounded(
        "invalid argument: "
          + reported.map { "\($0.field): \($0.description)" }.joined(separator: "; "), 600)
    case .unauthenticated(let m), .permissionDenied(let m), .notFound(let m),
      .alreadyExists(let m), .failedPrecondition(let m), .resourceExhausted(let m),
      .unavailable(let m), .aborted(let m), .internalError(let m):
      ServiceError.bounded(m, 1000)
    }
  }

  /// The field violations as sent: at most 10, each field and description bounded. Messages
  /// often quote the caller's input, and a status travels in HTTP/2 trailers, whose size peers
  /// limit (16 KiB by default, with non-ASCII text percent-encoded): an unbounded echo of a
  /// huge value would cost the caller the whole connection instead of a clear status.
  public var reported: [FieldViolation] {
    guard case .invalidArgument(let violations) = self else { return [] }
    var list = violations.prefix(10).map {
      FieldViolation(ServiceError.bounded($0.field, 80), ServiceError.bounded($0.description, 100))
    }
    if violations.count > 10 {
      list.append(FieldViolation("…", "and \(violations.count - 10) more violations"))
    }
    return list
  }

  /// `text` cut to at most `limit` characters, marked with an ellipsis when cut.
  static func bounded(_ text: String, _ limit: Int) -> String {
    text.count <= limit ? text : String(text.prefix(limit - 1)) + "…"
  }

  /// The error as a gRPC status; INVALID_ARGUMENT carries a google.rpc.Status with
  /// BadRequest field violations in `grpc-status-details-bin`.
  public var rpcError: RPCError {
    if case .invalidArgument = self {
      let status = GoogleRPCStatus(
        code: .invalidArgument, message: message,
        details: [
          .badRequest(
            violations: reported.map {
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

  /// Checks that a text field holds no control characters and fits `maxLength`; when
  /// `required`, that it is not blank (empty, or only tabs and spaces: U+0020, U+3000 and the
  /// other Unicode space separators), as Foundation's `.whitespaces` would trim it.
  ///
  /// One pass over the scalars, ASCII decided without Unicode tables: imports run it on every
  /// row (Foundation's `trimmingCharacters` was a tenth of a user import's CPU).
  public mutating func text(
    _ value: String, _ field: String, required: Bool = true, maxLength: Int = 200
  ) {
    var blank = true
    var control = false
    for scalar in value.unicodeScalars {
      if scalar.isASCII {
        let byte = scalar.value
        control = control || byte < 0x20 || byte == 0x7F
        blank = blank && (byte == 0x20 || byte == 0x09)
      } else {
        let category = scalar.properties.generalCategory
        control = control || category == .control
        blank = blank && category == .spaceSeparator
      }
    }
    if required && blank {
      add(field, "must not be empty")
    } else if value.utf8.count > maxLength && value.count > maxLength {
      add(field, "must have at most \(maxLength) characters")
    } else if control {
      add(field, "must not contain control characters")
    }
  }

  /// The date of a protobuf timestamp, or `nil` (with a violation) when it lies outside
  /// 0001-01-01 … 9999-12-31 UTC or its nanos are out of range, as the protobuf spec requires.
  /// Converting such a value unchecked can trap.
  public mutating func timestamp(_ value: Google_Protobuf_Timestamp, _ field: String) -> Date? {
    guard (-62_135_596_800...253_402_300_799).contains(value.seconds),
      (0..<1_000_000_000).contains(value.nanos)
    else {
      add(field, "must be a timestamp between 0001-01-01 and 9999-12-31 UTC")
      return nil
    }
    return value.date
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
