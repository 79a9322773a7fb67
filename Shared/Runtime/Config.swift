import ArgumentParser
import Foundation
import Logging

/// The flags every executable takes. Each flag falls back to the environment variable
/// `SMARTSCHOOL_<SERVICE>_<FLAG>` (upper case, '-' as '_'), then to its default.
public struct HostOptions: ParsableArguments, Sendable {
  @Option(help: "Address to listen on for gRPC. [default: 0.0.0.0]")
  public var host: String?

  @Option(help: "gRPC port; 0 picks a free port (the bound port is logged).")
  public var port: Int?

  @Option(help: "Directory of the SQLite store. [default: ./data/<service>]")
  public var dataDir: String?

  @Option(help: "Port of the Prometheus /metrics HTTP endpoint; 0 picks a free port, -1 disables.")
  public var metricsPort: Int?

  @Option(help: "PEM certificate chain; with --tls-key, the server speaks TLS.")
  public var tlsCert: String?

  @Option(help: "PEM private key of --tls-cert.")
  public var tlsKey: String?

  @Option(
    help: "PEM CA bundle: with a server certificate, clients must present a certificate it signed (mTLS); also the CA this service trusts when it calls others."
  )
  public var tlsCa: String?

  @Option(help: "Log level: trace, debug, info, notice, warning, error, critical. [default: info]")
  public var logLevel: String?

  @Option(help: "Largest request message accepted, in bytes. [default: 4194304]")
  public var maxMessageBytes: Int?

  @Option(help: "Most concurrent RPC streams per connection. [default: 256]")
  public var maxConcurrentStreams: Int?

  @Option(help: "Seconds in-flight RPCs get to finish after SIGTERM. [default: 20]")
  public var drainSeconds: Int?

  @Option(
    help: """
      PostgreSQL store, e.g. postgres://identity@db.example:5432/identity?sslmode=require \
      (sslmode disable, prefer, require or verify-full). Without it: SQLite under --data-dir.
      """)
  public var databaseUrl: String?

  @Option(help: "File holding the PostgreSQL password (instead of one in --database-url).")
  public var databasePasswordFile: String?

  @Option(help: "Most PostgreSQL connections this process opens. [default: 10]")
  public var databasePoolSize: Int?

  public init() {}

  /// Resolves flags, then environment, then defaults, for `service` (e.g. "identity") whose
  /// default gRPC port is `defaultPort` and default metrics port `defaultMetricsPort`.
  public func resolve(
    service: String, defaultPort: Int, defaultMetricsPort: Int,
    environment: [String: String] = ProcessInfo.processInfo.environment
  ) throws -> HostConfig {
    let env = EnvironmentReader(service: service, environment: environment)
    let cert = tlsCert ?? env["tls-cert"]
    let key = tlsKey ?? env["tls-key"]
    if (cert == nil) != (key == nil) {
      throw ValidationError("--tls-cert and --tls-key go together")
    }
    var database: DatabaseSettings? = nil
    if let url = databaseUrl ?? env["database-url"] {
      var password: String? = nil
      if let file = databasePasswordFile ?? env["database-password-file"] {
        do {
          password = try String(contentsOfFile: file, encoding: .utf8)
            .trimmingCharacters(in: .newlines)
        } catch {
          throw ValidationError("--database-password-file: cannot read \(file)")
        }
      }
      let poolSize = try databasePoolSize ?? env.int("database-pool-size") ?? 10
      guard (2...500).contains(poolSize) else {
        throw ValidationError("--database-pool-size must be 2-500")
      }
      do {
        database = try DatabaseSettings(url: url, password: password, poolSize: poolSize)
      } catch let error as DatabaseSettings.Invalid {
        throw ValidationError("--database-url: \(error.message)")
      }
    } else if databasePasswordFile ?? env["database-password-file"] != nil {
      throw ValidationError("--database-password-file needs --database-url")
    }
    let levelText = logLevel ?? env["log-level"] ?? "info"
    guard let level = Logger.Level(rawValue: levelText) else {
      throw ValidationError("unknown log level '\(levelText)'")
    }
    return HostConfig(
      service: service,
      host: host ?? env["host"] ?? "0.0.0.0",
      port: try port ?? env.int("port") ?? defaultPort,
      dataDirectory: dataDir ?? env["data-dir"] ?? "./data/\(service)",
      metricsPort: try metricsPort ?? env.int("metrics-port") ?? defaultMetricsPort,
      tls: cert.map { HostConfig.TLSFiles(certificate: $0, key: key!, clientCA: tlsCa ?? env["tls-ca"]) },
      clientCA: tlsCa ?? env["tls-ca"],
      logLevel: level,
      maxMessageBytes: try maxMessageBytes ?? env.int("max-message-bytes") ?? 4 * 1024 * 1024,
      maxConcurrentStreams: try maxConcurrentStreams ?? env.int("max-concurrent-streams") ?? 256,
      drainTimeout: .seconds(try drainSeconds ?? env.int("drain-seconds") ?? 20),
      database: database)
  }

  /// The flags above, in declaration order ("host", "port", "data-dir", …).
  public static var flags: [String] { optionFlags(of: HostOptions()) }

  /// The help text listing each flag's environment variable, for `--help`: every flag of
  /// ``HostOptions`` (a flag added there is listed without further change), then `extraFlags`.
  public static func environmentHelp(service: String, extraFlags: [String] = []) -> String {
    let flags = HostOptions.flags + extraFlags
    let lines = flags.map { "  --\($0)  ←  \(EnvironmentReader.variable(service: service, flag: $0))" }
    return "Every flag falls back to an environment variable, then to its default:\n"
      + lines.joined(separator: "\n")
  }
}

/// The long names ArgumentParser gives the `@Option` properties of `options`, in declaration
/// order: `dataDir` is "data-dir".
func optionFlags(of options: some ParsableArguments) -> [String] {
  Mirror(reflecting: options).children.compactMap { child in
    guard let label = child.label, label.hasPrefix("_"),
      String(describing: type(of: child.value)).hasPrefix("Option<")
    else { return nil }
    var flag = ""
    for character in label.dropFirst() {
      if character.isUppercase {
        flag += "-" + character.lowercased()
      } else {
        flag.append(character)
      }
    }
    return flag
  }
}

/// Reads `SMARTSCHOOL_<SERVICE>_<FLAG>` variables.
public struct EnvironmentReader: Sendable {
  /// The service part of the variable names, e.g. "identity".
  public let service: String
  /// The environment read.
  public let environment: [String: String]

  /// A reader for `service` over `environment`.
  public init(service: String, environment: [String: String] = ProcessInfo.processInfo.environment) {
    self.service = service
    self.environment = environment
  }

  /// The variable name for a flag: `SMARTSCHOOL_IDENTITY_DATA_DIR` for ("identity", "data-dir").
  public static func variable(service: String, flag: String) -> String {
    "SMARTSCHOOL_\(service.uppercased())_\(flag.uppercased().replacingOccurrences(of: "-", with: "_"))"
  }

  /// The value for `flag`, if set and not empty.
  public subscript(flag: String) -> String? {
    let v = environment[EnvironmentReader.variable(service: service, flag: flag)]
    return (v?.isEmpty ?? true) ? nil : v
  }

  /// The integer value for `flag`; a non-integer is a configuration error.
  public func int(_ flag: String) throws -> Int? {
    guard let text = self[flag] else { return nil }
    guard let value = Int(text) else {
      throw ValidationError(
        "\(EnvironmentReader.variable(service: service, flag: flag)) must be an integer")
    }
    return value
  }
}

/// The resolved settings of a service host.
public struct HostConfig: Sendable {
  /// TLS files of the server.
  public struct TLSFiles: Sendable {
    /// PEM certificate chain.
    public var certificate: String
    /// PEM private key.
    public var key: String
    /// PEM CA bundle that client certificates must chain to (mTLS); `nil` = no client certs.
    public var clientCA: String?

    /// TLS with the given files.
    public init(certificate: String, key: String, clientCA: String?) {
      self.certificate = certificate
      self.key = key
      self.clientCA = clientCA
    }
  }

  /// Service name, e.g. "identity".
  public var service: String
  /// Listen address.
  public var host: String
  /// gRPC port (0 = any free port).
  public var port: Int
  /// Directory of the store.
  public var dataDirectory: String
  /// Metrics port (0 = any, negative = disabled).
  public var metricsPort: Int
  /// Server TLS; `nil` = plaintext.
  public var tls: TLSFiles?
  /// CA bundle trusted when this service calls others over TLS.
  public var clientCA: String?
  /// Log level.
  public var logLevel: Logger.Level
  /// Largest request message, in bytes.
  public var maxMessageBytes: Int
  /// Most concurrent streams per HTTP/2 connection.
  public var maxConcurrentStreams: Int
  /// How long in-flight RPCs get after SIGTERM.
  public var drainTimeout: Duration
  /// The PostgreSQL store; `nil` = SQLite under ``dataDirectory``.
  public var database: DatabaseSettings? = nil

  /// A configuration for tests and embedding: loopback, ephemeral ports, plaintext.
  public static func ephemeral(service: String, dataDirectory: String) -> HostConfig {
    HostConfig(
      service: service, host: "127.0.0.1", port: 0, dataDirectory: dataDirectory,
      metricsPort: 0, tls: nil, clientCA: nil, logLevel: .warning,
      maxMessageBytes: 4 * 1024 * 1024, maxConcurrentStreams: 256, drainTimeout: .seconds(5),
      database: nil)
  }
}
