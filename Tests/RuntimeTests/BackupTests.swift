import ArgumentParser
import Foundation
import GRDB
import ServiceRuntime
import Synchronization
import Testing
import TestSupport

/// Tells the writer task of a test when to stop.
private final class StopFlag: Sendable {
  private let value = Mutex(false)
  func set() { value.withLock { $0 = true } }
  var isSet: Bool { value.withLock { $0 } }
}

/// The store the backup tests copy: "bank.sqlite", blobs copied like catalogue's.
private enum BankBackup: BackupTarget {
  static let service = "bank"
  static let storeName = "bank"
  static let alsoCopy = ["blobs"]
}

/// An executable's shape: the service's flags on the root, `backup` as its subcommand.
private struct BankServiceCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bank-service", subcommands: [BackupCommand<BankBackup>.self])
  @OptionGroup var host: HostOptions
}

@Suite("Online backup and restore")
struct BackupTests {
  /// Ten accounts of 100 each; every transfer moves money between two of them and is logged
  /// in `transfers` and in the change feed in the same transaction. A consistent copy keeps
  /// the total at 1000 and has exactly one transfer row per change-feed event.
  static func migrations(_ m: inout DatabaseMigrator) {
    m.registerMigration("bank.1") { db in
      try db.execute(
        sql: "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
      try db.execute(
        sql: """
          CREATE TABLE transfers (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, from_id INTEGER NOT NULL,
            to_id INTEGER NOT NULL, amount INTEGER NOT NULL, memo TEXT NOT NULL)
          """)
      for id in 0..<10 {
        try db.execute(sql: "INSERT INTO accounts VALUES (?, 100)", arguments: [id])
      }
    }
  }

  static func transfer(_ store: Store, _ n: Int) async throws {
    try await store.write { db in
      let from = n % 10
      let to = (n * 7 + 3) % 10
      let amount = n % 13 + 1
      try db.execute(
        sql: "UPDATE accounts SET balance = balance - ? WHERE id = ?", arguments: [amount, from])
      try db.execute(
        sql: "UPDATE accounts SET balance = balance + ? WHERE id = ?", arguments: [amount, to])
      // A few KB per row, so the store spans many pages and a backup is not instantaneous.
      try db.execute(
        sql: "INSERT INTO transfers (from_id, to_id, amount, memo) VALUES (?, ?, ?, ?)",
        arguments: [from, to, amount, String(repeating: "转账", count: 1000)])
      try ChangeFeed.record(
        db, entity: "transfer", id: "\(n)", naturalKey: "\(n)", op: .upsert, orgPath: "/")
    }
  }

  static func head(_ store: Store) async throws -> Int64 {
    try await store.read { db in try ChangeFeed.head(db) }
  }

  @Test func backupsTakenDuringWritesRestoreToConsistentStores() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let live = dir.path + "/live"
    let store = try Store(directory: live, name: "bank", migrations: Self.migrations)
    let stop = StopFlag()
    let writer = Task {
      var n = 0
      while !stop.isSet {
        try await Self.transfer(store, n)
        n += 1
      }
      return n
    }
    while try await Self.head(store) < 50 { try await Task.sleep(for: .milliseconds(5)) }

    var reports: [StoreBackup.Report] = []
    for i in 0..<3 {
      let target = dir.path + "/backup-\(i)"
      let report = try await Task.detached {
        try StoreBackup.run(dataDirectory: live, name: "bank", to: target)
      }.value
      reports.append(report)
    }
    // Keep writing past the last backup, so every copy was taken mid-stream.
    let last = reports.last!.changeFeedHead
    while try await Self.head(store) < last + 20 { try await Task.sleep(for: .milliseconds(5)) }
    stop.set()
    let written = try await writer.value
    #expect(written > Int(last))
    #expect(reports.map(\.changeFeedHead) == reports.map(\.changeFeedHead).sorted())

    for (i, report) in reports.enumerated() {
      let target = dir.path + "/backup-\(i)"
      let files = try FileManager.default.contentsOfDirectory(atPath: target)
      #expect(files == ["bank.sqlite"], "a self-contained copy, no WAL or partial file")
      #expect(report.changeFeedHead >= 50)
      // Runtime changes + directory + users + change blocks + bank.1.
      #expect(report.migrations == 4 + 1)
      // Restore = the service opens the copy as its data directory.
      let restored = try Store(directory: target, name: "bank", migrations: Self.migrations)
      let (total, transfers, maxSeq, head) = try await restored.read { db in
        (
          try Int.fetchOne(db, sql: "SELECT SUM(balance) FROM accounts"),
          try Int64.fetchOne(db, sql: "SELECT COUNT(*) FROM transfers"),
          try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM transfers"),
          try ChangeFeed.head(db)
        )
      }
      #expect(total == 1000)
      #expect(transfers == head)
      #expect(maxSeq == head)
      #expect(head == report.changeFeedHead)
      // The restored store takes writes again.
      try await Self.transfer(restored, Int(head))
      #expect(try await Self.head(restored) == head + 1)
    }
  }

  @Test func refusesToOverwriteAndNeedsAStore() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let live = dir.path + "/live"
    #expect(throws: StoreBackup.Failure.noStore(live + "/bank.sqlite")) {
      try StoreBackup.run(dataDirectory: live, name: "bank", to: dir.path + "/b")
    }
    let store = try Store(directory: live, name: "bank", migrations: Self.migrations)
    try await Self.transfer(store, 1)
    _ = try StoreBackup.run(dataDirectory: live, name: "bank", to: dir.path + "/b")
    try await Self.transfer(store, 2)
    #expect(throws: StoreBackup.Failure.destinationExists(dir.path + "/b/bank.sqlite")) {
      try StoreBackup.run(dataDirectory: live, name: "bank", to: dir.path + "/b")
    }
    let copy = try DatabaseQueue(path: dir.path + "/b/bank.sqlite")
    #expect(try await copy.read { db in try ChangeFeed.head(db) } == 1)
  }

  @Test func extraDirectoriesAreCopiedWithoutTemporaryFiles() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let live = dir.path + "/live"
    _ = try Store(directory: live, name: "bank", migrations: Self.migrations)
    let fm = FileManager.default
    try fm.createDirectory(atPath: live + "/blobs/ab", withIntermediateDirectories: true)
    try fm.createDirectory(atPath: live + "/blobs/tmp", withIntermediateDirectories: true)
    try Data("content".utf8).write(to: URL(fileURLWithPath: live + "/blobs/ab/abcdef"))
    try Data("half".utf8).write(to: URL(fileURLWithPath: live + "/blobs/tmp/x.part"))
    let report = try StoreBackup.run(
      dataDirectory: live, name: "bank", to: dir.path + "/b", alsoCopy: ["blobs"])
    #expect(report.copiedFiles == 1)
    #expect(fm.contents(atPath: dir.path + "/b/blobs/ab/abcdef") == Data("content".utf8))
    #expect(!fm.fileExists(atPath: dir.path + "/b/blobs/tmp"))
  }

  @Test func theSubcommandSharesTheServiceFlags() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let live = dir.path + "/live"
    let store = try Store(directory: live, name: "bank", migrations: Self.migrations)
    try await Self.transfer(store, 1)
    // `bank-service backup --data-dir D --to T`: the root parses --data-dir, the subcommand
    // must still see it.
    var command = try BankServiceCommand.parseAsRoot([
      "backup", "--data-dir", live, "--to", dir.path + "/b",
    ])
    let backup = try #require(command as? BackupCommand<BankBackup>)
    #expect(backup.host.dataDir == live)
    try command.run()
    let copy = try DatabaseQueue(path: dir.path + "/b/bank.sqlite")
    #expect(try await copy.read { db in try ChangeFeed.head(db) } == 1)
    #expect(throws: (any Error).self) {
      _ = try BankServiceCommand.parseAsRoot(["backup", "--data-dir", live])
    }
    #expect(BackupCommand<BankBackup>.helpMessage().contains("SMARTSCHOOL_BANK_DATA_DIR"))
  }

  @Test func timestampGaugesAreExportedOnceAttached() {
    let gauge = TimestampGauge(metricName: "signing_key_created", helpText: "test")
    gauge.set(Date(timeIntervalSince1970: 1_700_000_000))
    let metrics = ServiceMetrics(service: "identity")
    #expect(!metrics.render().contains("smartschool_signing_key_created_timestamp_seconds"))
    gauge.attach(to: metrics, service: "identity")
    #expect(
      metrics.render().contains(
        #"smartschool_signing_key_created_timestamp_seconds{service="identity"} 1700000000"#))
    gauge.set(Date(timeIntervalSince1970: 1_800_000_000))
    #expect(metrics.render().contains("1800000000"))
  }
}
