import Foundation
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
