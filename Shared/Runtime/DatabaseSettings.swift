import Foundation

/// Where a service's PostgreSQL store is: parsed from `--database-url`
/// (`postgres://user[:password]@host[:port]/database[?sslmode=…]`), with the password from
/// `--database-password-file` when given.
public struct DatabaseSettings: Sendable, Hashable {
  /// How the connection is secured, as libpq's `sslmode` names it.
  public enum TLSMode: String, Sendable, Hashable {
    /// Plaintext.
    case disable
    /// TLS when the server offers it, plaintext otherwise.
    case prefer
    /// TLS, without checking the server's certificate.
    case require
    /// TLS with the server's certificate checked against the system's roots and the host.
    case verifyFull = "verify-full"
  }

  /// Why a URL was refused.
  public struct Invalid: Error, Sendable {
    /// What is wrong with it.
    public var message: String
  }

  /// Server host name or address.
  public var host: String
  /// Server port.
  public var port: Int
  /// Role to log in as.
  public var username: String
  /// Password (from the password file, else from the URL).
  public var password: String?
  /// Database name.
  public var database: String
  /// TLS mode.
  public var tls: TLSMode
  /// Most connections this process opens.
  public var poolSize: Int
  /// How long a call waits for one of them before it fails UNAVAILABLE (see
  /// ``PostgresLease``): long enough for a busy pool to turn over, short enough that a call
  /// behind a stuck pool gives up before its client does.
  public var leaseTimeout: Duration = .seconds(10)

  /// Parses `url`; `password`, when given, wins over one in the URL.
  public init(url: String, password: String? = nil, poolSize: Int = 10) throws {
    guard let parts = URLComponents(string: url),
      let scheme = parts.scheme, ["postgres", "postgresql"].contains(scheme)
    else {
      throw Invalid(message: "expected postgres://user@host:port/database")
    }
    guard let host = parts.host, !host.isEmpty else { throw Invalid(message: "no host") }
    guard let user = parts.user, !user.isEmpty else { throw Invalid(message: "no user name") }
    let database = String(parts.path.drop(while: { $0 == "/" }))
    guard !database.isEmpty, !database.contains("/") else {
      throw Invalid(message: "no database name (the URL's path)")
    }
    var tls = TLSMode.prefer
    for item in parts.queryItems ?? [] {
      switch item.name {
      case "sslmode":
        switch item.value ?? "" {
        case "disable": tls = .disable
        case "allow", "prefer": tls = .prefer
        case "require": tls = .require
        case "verify-ca", "verify-full": tls = .verifyFull
        default: throw Invalid(message: "unknown sslmode '\(item.value ?? "")'")
        }
      default:
        throw Invalid(message: "unknown parameter '\(item.name)' (only sslmode is understood)")
      }
    }
    self.host = host
    self.port = parts.port ?? 5432
    self.username = user.removingPercentEncoding ?? user
    self.password = password ?? parts.password.map { $0.removingPercentEncoding ?? $0 }
    self.database = database.removingPercentEncoding ?? database
    self.tls = tls
    self.poolSize = poolSize
  }

  /// The same server and role with another database (tests make one per test).
  public func with(database: String) -> DatabaseSettings {
    var copy = self
    copy.database = database
    return copy
  }

  /// The URL without its password, for logs.
  public var redacted: String {
    "postgres://\(username)@\(host):\(port)/\(database)?sslmode=\(tls.rawValue)"
  }
}
