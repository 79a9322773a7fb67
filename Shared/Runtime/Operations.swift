import ArgumentParser
import Foundation
import GRDB
import Prometheus
import Synchronization

// What operators run beside the service itself: the `backup` subcommand every executable
// has, and gauges of points in time (e.g. when identity's signing key was made) for alerts.

/// Online backup of a service's data directory while the service runs.
///
/// The SQLite store is copied with SQLite's online backup API (the same GRDB call as
/// ``Store/backup(to:)``) from a read-only connection inside one read transaction, so the copy
/// is the consistent snapshot of one moment even while the service keeps writing; the live
/// store is never migrated or written. The copy is checked (`PRAGMA quick_check`), made
/// self-contained (journal mode DELETE, no `-wal` file), flushed to disk and only then renamed
/// to `<name>.sqlite`, so an interrupted backup never leaves a half-written file under that name.
///
/// The destination is itself a valid data directory: restoring is pointing a stopped service
/// at it (or copying it over the old data directory, after deleting the old `-wal`/`-shm`).
public enum StoreBackup {
  /// What a backup wrote.
  public struct Report: Sendable, Codable, Equatable {
    /// Path of the copied database file.
    public var database: String
    /// Size of the copy, in bytes.
    public var bytes: Int64
    /// Sequence of the newest change-feed event in the copy.
    public var changeFeedHead: Int64
    /// Number of schema migrations recorded in the copy.
    public var migrations: Int
    /// Files copied from the extra directories (e.g. catalogue's blobs).
    public var copiedFiles: Int
  }

  /// Why a backup could not be taken.
  public enum Failure: Error, CustomStringConvertible, Equatable {
    /// There is no store at the given path.
    case noStore(String)
    /// The destination already holds a backup; backups are never overwritten.
    case destinationExists(String)
    /// The copy failed its integrity check.
    case corruptCopy(String)

    public var description: String {
      switch self {
      case .noStore(let path): "no store at \(path) (check --data-dir)"
      case .destinationExists(let path): "\(path) already exists; choose a new --to directory"
      case .corruptCopy(let detail): "the copy failed its integrity check: \(detail)"
      }
    }
  }

  /// Copies `<dataDirectory>/<name>.sqlite` to `<destination>/<name>.sqlite`, then the files
  /// of each directory in `alsoCopy` (relative to the data directory; subdirectories named in
  /// `excluding` are skipped).
  ///
  /// Extra directories must hold immutable files that are written before the database refers
  /// to them and never deleted while referenced (catalogue's content-addressed blobs): copied
  /// after the snapshot, they then include every file the snapshot refers to.
  public static func run(
    dataDirectory: String, name: String, to destination: String, alsoCopy: [String] = [],
    excluding: Set<String> = ["tmp"]
  ) throws -> Report {
    let fm = FileManager.default
    let source = (dataDirectory as NSString).appendingPathComponent("\(name).sqlite")
    guard fm.fileExists(atPath: source) else { throw Failure.noStore(source) }
    try fm.createDirectory(atPath: destination, withIntermediateDirectories: true)
    let final = (destination as NSString).appendingPathComponent("\(name).sqlite")
    guard !fm.fileExists(atPath: final) else { throw Failure.destinationExists(final) }
    let partial = (destination as NSString).appendingPathComponent(".\(name).sqlite.partial")
    for suffix in ["", "-journal", "-wal", "-shm"] { try? fm.removeItem(atPath: partial + suffix) }

    var readOnly = Configuration()
    readOnly.readonly = true
    readOnly.busyMode = .timeout(10)
    let live = try DatabaseQueue(path: source, configuration: readOnly)
    let copy = try DatabaseQueue(path: partial)
    try live.backup(to: copy)
    try live.close()

    let (check, head, migrations) = try copy.writeWithoutTransaction { db in
      try db.execute(sql: "PRAGMA journal_mode = DELETE")
      let check = try String.fetchOne(db, sql: "PRAGMA quick_check") ?? "no answer"
      let head = try ChangeFeed.head(db)
      var migrations = 0
      if try db.tableExists("grdb_migrations") {
        migrations = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM grdb_migrations") ?? 0
      }
      return (check, head, migrations)
    }
    try copy.close()
    guard check == "ok" else {
      try? fm.removeItem(atPath: partial)
      throw Failure.corruptCopy(check)
    }
    let handle = try FileHandle(forUpdating: URL(fileURLWithPath: partial))
    try handle.synchronize()
    try handle.close()
    try fm.moveItem(atPath: partial, toPath: final)

    var copied = 0
    for directory in alsoCopy {
      copied += try copyTree(
        from: (dataDirectory as NSString).appendingPathComponent(directory),
        to: (destination as NSString).appendingPathComponent(directory), excluding: excluding)
    }
    let bytes = (try? fm.attributesOfItem(atPath: final)[.size] as? NSNumber)?.int64Value ?? 0
    return Report(
      database: final, bytes: bytes, changeFeedHead: head, migrations: migrations,
      copiedFiles: copied)
  }

  /// Copies the regular files under `source` to `target`, skipping directories named in
  /// `excluding`; returns how many files were copied.
  static func copyTree(from source: String, to target: String, excluding: Set<String>) throws
    -> Int
  {
    let fm = FileManager.default
    guard fm.fileExists(atPath: source) else { return 0 }
    try fm.createDirectory(atPath: target, withIntermediateDirectories: true)
    var copied = 0
    for entry in try fm.contentsOfDirectory(atPath: source).sorted() {
      let from = (source as NSString).appendingPathComponent(entry)
      let to = (target as NSString).appendingPathComponent(entry)
      var isDirectory: ObjCBool = false
      guard fm.fileExists(atPath: from, isDirectory: &isDirectory) else { continue }
      if isDirectory.boolValue {
        if !excluding.contains(entry) {
          copied += try copyTree(from: from, to: to, excluding: excluding)
        }
      } else {
        try fm.copyItem(atPath: from, toPath: to)
        copied += 1
      }
    }
    return copied
  }
}

/// What an executable's `backup` subcommand needs to know about its service.
public protocol BackupTarget {
  /// Service name as in the environment variables, e.g. "identity".
  static var service: String { get }
  /// Base name of the store file, e.g. "identity" for `identity.sqlite`.
  static var storeName: String { get }
  /// Directories of the data directory copied after the store (e.g. `["blobs"]`).
  static var alsoCopy: [String] { get }
}

/// The `backup` subcommand every executable has:
/// `<service> backup [--data-dir DIR] --to BACKUP_DIR`, safe while the service runs.
public struct BackupCommand<Target: BackupTarget>: ParsableCommand {
  /// The subcommand's name and help.
  public static var configuration: CommandConfiguration {
    let extra =
      Target.alsoCopy.isEmpty
      ? "" : ", then copies <data-dir>/" + Target.alsoCopy.joined(separator: ", <data-dir>/")
    return CommandConfiguration(
      commandName: "backup",
      abstract: "Copy the live store to a new directory (safe while the service runs).",
      discussion: """
        Takes a consistent snapshot of <data-dir>/\(Target.storeName).sqlite with SQLite's \
        online backup API\(extra), \
        into --to, which must not hold a backup yet. The data directory comes from --data-dir \
        or \(EnvironmentReader.variable(service: Target.service, flag: "data-dir")), as for \
        the service. Prints one JSON line describing the copy. To restore: stop the service, \
        delete <data-dir>/\(Target.storeName).sqlite-wal and -shm, copy the backup directory's \
        files into <data-dir> (or point --data-dir at it) and start the service.
        """)
  }

  /// The service's own flags; only the data directory is used.
  @OptionGroup(visibility: .hidden) public var host: HostOptions

  /// Where the backup goes.
  @Option(help: "New directory to write the backup into.")
  public var to: String

  /// A command with every option unset (ArgumentParser fills them in).
  public init() {}

  /// Takes the backup and prints its report as one JSON line.
  public func run() throws {
    let config = try host.resolve(service: Target.service, defaultPort: 0, defaultMetricsPort: -1)
    if let database = config.database {
      // The SQLite copy below would back up a data folder the service does not use.
      throw ValidationError(
        "\(Target.service) runs on PostgreSQL (\(database.redacted)): back it up with"
          + " pg_dump -Fc (see deploy/README.md), not with this command")
    }
    do {
      let report = try StoreBackup.run(
        dataDirectory: config.dataDirectory, name: Target.storeName, to: to,
        alsoCopy: Target.alsoCopy)
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
      FileHandle.standardOutput.write(try encoder.encode(report) + Data("\n".utf8))
    } catch let failure as StoreBackup.Failure {
      FileHandle.standardError.write(Data("backup failed: \(failure)\n".utf8))
      throw ExitCode(1)
    }
  }
}

/// A Prometheus gauge holding a point in time as Unix seconds, settable before the host's
/// metrics exist: the last value is kept and copied into the registry by ``attach(to:)``.
///
/// Identity exports its current signing key's creation time this way
/// (`smartschool_signing_key_created_timestamp_seconds`), so an alert fires when the key is
/// older than the rotation policy allows.
public final class TimestampGauge: Sendable {
  private let metricName: String
  private let helpText: String
  private let state = Mutex<(value: Date?, gauge: Gauge?)>((nil, nil))

  /// A gauge exported as `smartschool_<metricName>_timestamp_seconds`.
  public init(metricName: String, helpText: String) {
    self.metricName = metricName
    self.helpText = helpText
  }

  /// Records `date` (exported from now on if attached, else once attached).
  public func set(_ date: Date) {
    let gauge = state.withLock { s in
      s.value = date
      return s.gauge
    }
    gauge?.set(to: date.timeIntervalSince1970)
  }

  /// The value last recorded.
  public var value: Date? { state.withLock { $0.value } }

  /// Registers the gauge in `metrics`, labelled with the service name, and exports the value
  /// recorded so far.
  public func attach(to metrics: ServiceMetrics, service: String) {
    let gauge = metrics.registry.makeGauge(
      descriptor: .init(
        namespace: "smartschool", metricName: metricName, unitName: "timestamp_seconds",
        helpText: helpText), labels: [("service", service)])
    let value = state.withLock { s in
      s.gauge = gauge
      return s.value
    }
    if let value { gauge.set(to: value.timeIntervalSince1970) }
  }
}
