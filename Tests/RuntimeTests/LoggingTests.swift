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
}
