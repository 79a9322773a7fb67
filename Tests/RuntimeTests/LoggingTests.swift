import Foundation
import Logging
import ServiceRuntime
import Testing

@Suite("JSON log lines")
struct LoggingTests {
  @Test func linesAreValidJSONWithSortedKeysWhateverTheText() throws {
    let object = [
      "msg": "rpc \"quoted\" \\ back\nslash\t\u{1}\u{7F} 智慧学校 /path",
      "method": "smartschool.identity.v1.IdentityService/Login",
      "code": "ok",
    ]
    let line = JSONLogHandler.line(object)
    let parsed = try JSONSerialization.jsonObject(with: Data(line)) as? [String: String]
    #expect(parsed == object)
    #expect(String(decoding: line, as: UTF8.self).hasPrefix("{\"code\":\"ok\",\"method\":"))
    #expect(!line.contains(0x0A))
  }

  @Test func eventLinesMergeMetadataWithTheEventsWinning() throws {
    let line = JSONLogHandler.line(
      label: "identity", level: .info, message: "rpc",
      handlerMetadata: ["node": "a", "code": "from-handler", "msg": "not the message"],
      eventMetadata: [
        "code": "ok", "duration_ms": .stringConvertible(1.5), "ids": ["x", "y"],
        "note": "tab\there \"quoted\" 智慧",
      ])
    let parsed = try #require(
      try JSONSerialization.jsonObject(with: Data(line)) as? [String: String])
    #expect(parsed["service"] == "identity")
    #expect(parsed["level"] == "info")
    // Handler metadata may replace a fixed field; the event's replaces the handler's.
    #expect(parsed["msg"] == "not the message")
    #expect(parsed["code"] == "ok")
    #expect(parsed["node"] == "a")
    #expect(parsed["duration_ms"] == "1.5")
    #expect(parsed["ids"] == #"["x", "y"]"#)
    #expect(parsed["note"] == "tab\there \"quoted\" 智慧")
    #expect(parsed["time"]?.count == 24)
    #expect(parsed.count == 9)
    let text = String(decoding: line, as: UTF8.self)
    let offsets = parsed.keys.sorted().map { text.range(of: "\"\($0)\":")!.lowerBound }
    #expect(text.hasPrefix("{\"code\":") && offsets == offsets.sorted())
  }

  @Test func timestampsAreRFC3339UTCWithMilliseconds() {
    #expect(
      JSONLogHandler.timestamp(Date(timeIntervalSince1970: 1_795_421_702.1234))
        == "2026-11-23T08:15:02.123Z")
    #expect(JSONLogHandler.timestamp(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
  }

  @Test func requestIDsAreDistinctAndShareTheProcessPrefix() {
    let ids = (0..<1000).map { _ in RequestID.make() }
    #expect(Set(ids).count == ids.count)
    #expect(ids.allSatisfy { $0.utf8.count == 20 && $0.allSatisfy(\.isHexDigit) })
    #expect(Set(ids.map { $0.prefix(8) }).count == 1)
  }

  @Test func timestampsCoverEveryFieldAndLeapDays() {
    // 2028-02-29T23:59:59.999Z
    #expect(
      JSONLogHandler.timestamp(Date(timeIntervalSince1970: 1_835_481_599.9995))
        == "2028-02-29T23:59:59.999Z")
  }

  @Test func rpcLinesAreTheEventLineWrittenDirectly() throws {
    let time = Date(timeIntervalSince1970: 1_795_421_702.1234)
    let direct = JSONLogHandler.rpcLine(
      service: "catalogue", method: "smartschool.catalogue.v1.CatalogueService/GetResource",
      code: "notFound", duration: .microseconds(12_345_678), principal: "u1",
      requestID: "r\"1\"", peer: "ipv6:[::1]:5000", error: "resource 'a\\b\n' not found",
      time: time)
    let text = String(decoding: direct, as: UTF8.self)
    let parsed = try #require(
      try JSONSerialization.jsonObject(with: Data(direct)) as? [String: String])
    #expect(
      parsed == [
        "code": "notFound", "duration_ms": "12345.678", "error": "resource 'a\\b\n' not found",
        "level": "info", "method": "smartschool.catalogue.v1.CatalogueService/GetResource",
        "msg": "rpc", "peer": "ipv6:[::1]:5000", "principal": "u1", "request_id": "r\"1\"",
        "service": "catalogue", "time": "2026-11-23T08:15:02.123Z",
      ])
    // Byte for byte the line swift-log's path renders from the same fields (the event's
    // `time` replacing the clock's).
    let event = JSONLogHandler.line(
      label: "catalogue", level: .info, message: "rpc", handlerMetadata: [:],
      eventMetadata: [
        "method": "smartschool.catalogue.v1.CatalogueService/GetResource", "code": "notFound",
        "duration_ms": "12345.678", "principal": "u1", "request_id": "r\"1\"",
        "peer": "ipv6:[::1]:5000", "error": "resource 'a\\b\n' not found",
        "time": "2026-11-23T08:15:02.123Z",
      ])
    #expect(direct == event, "\(text)")
    #expect(!direct.contains(0x0A))

    let ok = JSONLogHandler.rpcLine(
      service: "identity", method: "m", code: "ok", duration: .microseconds(1_500),
      principal: "", requestID: "r", peer: "p", error: nil, time: time)
    let okFields = try #require(
      try JSONSerialization.jsonObject(with: Data(ok)) as? [String: String])
    #expect(okFields["duration_ms"] == "1.500" && okFields["error"] == nil)
    #expect(okFields.count == 10)
    let zero = JSONLogHandler.rpcLine(
      service: "s", method: "m", code: "ok", duration: .zero, principal: "", requestID: "r",
      peer: "p", error: nil, time: time)
    #expect(String(decoding: zero, as: UTF8.self).contains(#""duration_ms":"0.000""#))
  }

  @Test func theSinkWritesEveryLineWholeAndInOrderFromManyThreads() async throws {
    let file = try SinkFile(window: .milliseconds(1))
    defer { file.remove() }
    let (path, sink) = (file.path, file.sink)
    let writers = 8
    let lines = 2_000
    await withTaskGroup(of: Void.self) { group in
      for w in 0..<writers {
        group.addTask {
          for n in 0..<lines {
            sink.write(
              Array(
                "{\"writer\":\(w),\"n\":\(n),\"pad\":\"\(String(repeating: "x", count: n % 300))\"}\n"
                  .utf8))
          }
        }
      }
    }
    sink.flush()
    let text = try String(contentsOfFile: path, encoding: .utf8)
    let written = text.split(separator: "\n", omittingEmptySubsequences: false)
    #expect(written.last == "")  // ends with a newline
    var next = [Int](repeating: 0, count: writers)
    for line in written.dropLast() {
      let object = try #require(
        try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
      let w = try #require(object["writer"] as? Int)
      #expect(object["n"] as? Int == next[w], "writer \(w) out of order")
      next[w] += 1
    }
    #expect(next == [Int](repeating: lines, count: writers))
    #expect(sink.droppedCount == 0)
  }

  @Test func aStalledOutputDropsAndCountsLinesRatherThanBlockingTheCaller() async throws {
    var ends: [Int32] = [0, 0]
    #expect(pipe(&ends) == 0)
    let (readEnd, writeEnd) = (ends[0], ends[1])
    let sink = LogSink(fileDescriptor: writeEnd, window: .zero, capacity: 4_096)
    // Nobody reads the pipe: once its buffer (64 KiB) and the sink's are full, lines are
    // dropped, and every call still returns at once.
    let line = Array((String(repeating: "y", count: 99) + "\n").utf8)
    let total = 5_000
    let clock = ContinuousClock()
    let took = clock.measure {
      for _ in 0..<total { sink.write(line) }
    }
    #expect(took < .seconds(5))
    // Not `droppedCount > 0` here: the writer thread may take the count into a notice line
    // between the loop's end and the check (seen on a loaded run); the notices below count it.
    // Once the output moves again, everything kept arrives, then a line counting the rest.
    // The reader is a thread of its own, not a task: `flush` blocks its caller, and on a busy
    // test run every thread of the task pool may be taken, so a reading task might never run.
    let drained = PipeReader(readEnd)
    sink.flush()
    close(writeEnd)
    let output = String(decoding: drained.bytes(), as: UTF8.self)
    close(readEnd)
    // A notice counts the lines dropped since the one before; when the writer thread ran
    // between bursts of drops (a loaded machine) there are several, and together they count all.
    let lines = output.split(separator: "\n")
    let kept = lines.filter { $0 == String(repeating: "y", count: 99) }.count
    let notices = lines.filter { $0.contains("log lines dropped") }
    #expect(!notices.isEmpty)
    var dropped = 0
    for notice in notices {
      let fields = try #require(
        try JSONSerialization.jsonObject(with: Data(notice.utf8)) as? [String: String])
      #expect(fields["level"] == "warning")
      let count = try #require(Int(fields["dropped"] ?? ""))
      #expect(count > 0)
      dropped += count
    }
    #expect(kept < total && kept + dropped == total)
    #expect(lines.count == kept + notices.count)
  }

  @Test func rpcLogWritesOneLinePerCallThroughTheHandlersSinkAtItsLevel() throws {
    let file = try SinkFile(window: .zero)
    defer { file.remove() }
    let (path, sink) = (file.path, file.sink)
    func logger(_ level: Logger.Level, metadata: Logger.Metadata = [:]) -> Logger {
      var logger = Logger(label: "catalogue") {
        var handler = JSONLogHandler(label: $0, level: level, sink: sink)
        handler.metadata = metadata
        return handler
      }
      logger.logLevel = level
      return logger
    }
    // Rendered directly; below its level nothing; with handler metadata through swift-log.
    RPCLog(logger: logger(.info)).record(
      method: "m/Ok", code: "ok", duration: .microseconds(2_500), principal: "u1",
      requestID: "r1", peer: "p", error: nil)
    RPCLog(logger: logger(.warning)).record(
      method: "m/Quiet", code: "ok", duration: .zero, principal: "u1", requestID: "r2",
      peer: "p", error: nil)
    RPCLog(logger: logger(.info, metadata: ["node": "a"])).record(
      method: "m/Failed", code: "notFound", duration: .milliseconds(1), principal: "",
      requestID: "r3", peer: "p", error: "no such thing")
    sink.flush()
    let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
    let objects = try lines.map {
      try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: String])
    }
    #expect(objects.map { $0["method"] } == ["m/Ok", "m/Failed"])
    #expect(objects[0]["duration_ms"] == "2.500" && objects[0]["principal"] == "u1")
    #expect(objects[0]["msg"] == "rpc" && objects[0]["service"] == "catalogue")
    #expect(objects[0]["error"] == nil && objects[0]["request_id"] == "r1")
    #expect(objects[1]["error"] == "no such thing" && objects[1]["node"] == "a")
    #expect(objects[1]["code"] == "notFound" && objects[1]["level"] == "info")
  }
}

/// A temporary file and a ``LogSink`` writing to it.
private struct SinkFile {
  let path = NSTemporaryDirectory() + "sink-\(UUID().uuidString).log"
  let fd: Int32
  let sink: LogSink

  init(window: Duration) throws {
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    try #require(fd >= 0)
    sink = LogSink(fileDescriptor: fd, window: window)
  }

  func remove() {
    close(fd)
    unlink(path)
  }
}

/// Reads a file descriptor to its end on a GCD thread (outside Swift's task pool).
private final class PipeReader: @unchecked Sendable {
  private let done = DispatchSemaphore(value: 0)
  private var data: [UInt8] = []

  init(_ fd: Int32) {
    DispatchQueue.global().async { [self] in
      var chunk = [UInt8](repeating: 0, count: 65_536)
      while true {
        let n = read(fd, &chunk, chunk.count)
        if n <= 0 { break }
        data += chunk[0..<n]
      }
      done.signal()
    }
  }

  /// Everything read, once the writing end is closed.
  func bytes() -> [UInt8] {
    done.wait()
    return data
  }
}
