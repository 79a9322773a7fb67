// supervision-bench: a county term (62 schools, 200 smart classrooms, 20 teaching weeks,
// ~25,000 lessons) and then a city of 10 such counties, served by a real in-process
// supervision server on loopback. Prints the lesson import rate, compliance report latency
// (with per-school rows) and weekly notice latency, each with its ratio to a baseline
// measured in the same run: for the import, the same rows written straight into a store
// (no gRPC); for the reports, a trivial unary RPC (GetTerm).
import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import SwiftProtobuf

struct Feed: IdentityChangeSource {
  let changes: [Smartschool_Common_V1_Change]
  func listChanges(after: Int64, pageSize: Int) async throws
    -> Smartschool_Common_V1_ListChangesResponse
  {
    let rest = changes.filter { $0.sequence > after }
    let page = Array(rest.prefix(pageSize))
    return .with {
      $0.changes = page
      $0.lastSequence = page.last?.sequence ?? after
      $0.moreAvailable = rest.count > page.count
    }
  }
}

struct World {
  var changes: [Smartschool_Common_V1_Change] = []
  var counties: [String] = []
  var schoolsByCounty: [String: [String]] = [:]
  var paths: [String: String] = [:]

  mutating func org(
    _ code: String, _ kind: Smartschool_Common_V1_OrgKind, parent: String?,
    schoolKind: Smartschool_Common_V1_SchoolKind = .unspecified
  ) {
    let path = (parent.map { paths[$0]! } ?? "/") + code + "/"
    paths[code] = path
    let org = Smartschool_Identity_V1_Org.with {
      $0.id = code
      $0.code = code
      $0.name = code
      $0.kind = kind
      $0.parentID = parent ?? ""
      $0.path = path
      $0.schoolKind = schoolKind
      $0.active = true
    }
    var c = Smartschool_Common_V1_Change()
    c.sequence = Int64(changes.count + 1)
    c.entity = "org"
    c.id = code
    c.naturalKey = code
    c.op = .upsert
    c.orgPath = path
    c.payload = try! Google_Protobuf_Any(message: org)
    changes.append(c)
  }

  /// A province, a city and `counties` counties of 62 schools (28 teaching points, 19 rural,
  /// 15 urban).
  init(counties n: Int) {
    org("P", .province, parent: nil)
    org("C", .city, parent: "P")
    for k in 0..<n {
      let county = "K\(k)"
      counties.append(county)
      org(county, .county, parent: "C")
      for s in 0..<62 {
        let kind: Smartschool_Common_V1_SchoolKind =
          s < 28 ? .teachingPoint : s < 47 ? .rural : .urban
        let code = "\(county)-S\(s)"
        org(code, .school, parent: county, schoolKind: kind)
        schoolsByCounty[county, default: []].append(code)
      }
    }
  }
}

let termStart = CalendarDate("2020-09-07")!
let weeks = 20
let equippedMidTerm = CalendarDate("2020-10-12")!

/// The lessons of one county's 200 classrooms over 20 weeks: 4–9 a week (~24,800).
func lessons(county: String) -> [Smartschool_Supervision_V1_Lesson] {
  var out: [Smartschool_Supervision_V1_Lesson] = []
  out.reserveCapacity(26_000)
  for c in 0..<200 {
    for w in 0..<weeks {
      let n = 4 + (c * 7 + w * 3) % 5 + (w % 3 == 0 ? 1 : 0)
      for i in 0..<n {
        let date = termStart.adding(days: w * 7 + i % 5)
        // Every tenth classroom is equipped mid-term (2020-10-12): nothing before that.
        if c % 10 == 9 && date < equippedMidTerm { continue }
        out.append(
          .with {
            $0.classroomCode = "\(county)-R\(c)"
            $0.teacherExternalID = "\(county)-T\((c * 3 + i) % 400)"
            $0.subject = Smartschool_Common_V1_Subject(rawValue: (c + i * (1 + w % 3)) % 16 + 1)!
            $0.date = date.description
            $0.period = Int32(i / 5 + 1)
            $0.durationMinutes = 40
            $0.source = .platform
          })
      }
    }
  }
  return out
}

func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

func ms(_ d: Duration) -> Double {
  Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
}

func line(_ name: String, _ value: String, _ ratio: String) {
  writeLine("  \(name.padding(toLength: 46, withPad: " ", startingAt: 0)) \(value)   \(ratio)")
}

func run(counties n: Int, label: String) async throws {
  let world = World(counties: n)
  let key = Curve25519.Signing.PrivateKey()
  let signer = TokenSigner(keyID: "b1", key: key)
  let pub = key.publicKey
  let verifier = TokenVerifier(keySource: {
    [PublishedKey(keyID: "b1", publicKey: pub, retireTime: nil)]
  })
  let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sup-bench-\(UUID())")
    .path
  defer { try? FileManager.default.removeItem(atPath: dir) }
  var config = HostConfig.ephemeral(service: "supervision", dataDirectory: dir)
  config.metricsPort = -1
  var settings = SupervisionSettings()
  settings.directoryPollInterval = .seconds(3600)
  let definition = try await buildSupervisionService(
    config: config, settings: settings, verifier: verifier,
    identity: Feed(changes: world.changes))
  try await (definition.background.first as! OrgDirectory).sync()
  var logger = Logger(label: "bench")
  logger.logLevel = .critical
  let host = try ServiceHost(config: config, definition: definition, logger: logger)
  let serving = Task { try await host.run(handleSignals: false) }
  let port = try await host.boundPort()
  let now = Int64(Date().timeIntervalSince1970)
  let token = try signer.sign(
    AccessTokenClaims(
      iss: smartSchoolTokenIssuer, sub: "bench", usr: "bench", knd: "staff", sid: "s",
      iat: now, exp: now + 3600, rol: [.init(r: "system_admin", o: "", p: "/")]))
  let auth: Metadata = ["authorization": "Bearer \(token)"]
  let clock = ContinuousClock()

  writeLine(
    "\(label): \(n) count\(n == 1 ? "y" : "ies"), \(n * 62) schools, "
      + "\(n * 200) classrooms, \(weeks) weeks"
  )
  try await withGRPCClient(
    transport: .http2NIOPosix(
      target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
  ) { grpc in
    let client = Smartschool_Supervision_V1_SupervisionService.Client(wrapping: grpc)
    _ = try await client.createTerm(
      .with {
        $0.term = .with {
          $0.code = "2020-2021-1"
          $0.name = "bench"
          $0.startDate = termStart.description
          $0.endDate = termStart.adding(days: weeks * 7 - 1).description
        }
      }, metadata: auth)
    for county in world.counties {
      let schools = world.schoolsByCounty[county]!
      for c in 0..<200 {
        _ = try await client.createClassroom(
          .with {
            $0.classroom = .with {
              $0.code = "\(county)-R\(c)"
              $0.schoolCode = schools[c % schools.count]
              $0.equippedDate = c % 10 == 9 ? equippedMidTerm.description : "2020-08-01"
            }
          }, metadata: auth)
      }
    }

    // Baseline: a trivial unary RPC.
    var unary: [Double] = []
    for _ in 0..<200 {
      let t = try await clock.measure {
        _ = try await client.getTerm(.with { $0.code = "2020-2021-1" }, metadata: auth)
      }
      unary.append(ms(t))
    }
    let unaryMs = median(unary)

    // Import, county by county, each county in one client stream.
    var total = 0
    var importTime = Duration.zero
    for county in world.counties {
      let rows = lessons(county: county)
      total += rows.count
      var summary = Smartschool_Common_V1_ImportSummary()
      importTime += try await clock.measure {
        summary = try await client.importLessons(metadata: auth) { writer in
          for chunk in stride(from: 0, to: rows.count, by: 1000) {
            try await writer.write(contentsOf: rows[chunk..<min(chunk + 1000, rows.count)])
          }
        }
      }
      precondition(summary.rejected == 0, "bench rows rejected: \(summary.errors.prefix(3))")
    }
    let importRate = Double(total) / (ms(importTime) / 1000)

    // Baseline: the first county's rows written straight into a fresh store.
    let baseDir = dir + "-base"
    defer { try? FileManager.default.removeItem(atPath: baseDir) }
    let base = try SQLiteSupervisionStore(directory: baseDir)
    var records: [LessonRecord] = []
    var classroomNumbers: [String: ClassroomRecord] = [:]
    for c in 0..<200 {
      let r = try await base.createClassroom(
        ClassroomRecord(
          number: 0, id: "x\(c)", code: "\(world.counties[0])-R\(c)", name: "r", schoolID: "s",
          schoolCode: "s", classCode: "", orgPath: "/P/C/K0/s/", equipped: termStart,
          retired: nil, createTime: 0, updateTime: 0))
      classroomNumbers[r.code] = r
    }
    for row in lessons(county: world.counties[0]) {
      let c = classroomNumbers[row.classroomCode]!
      records.append(
        LessonRecord(
          classroom: c.number, classroomCode: c.code, date: CalendarDate(row.date)!,
          period: Int(row.period), orgPath: c.orgPath, teacher: row.teacherExternalID,
          subject: row.subject.rawValue, minutes: 40, source: 1))
    }
    let baseTime = try await clock.measure {
      for chunk in stride(from: 0, to: records.count, by: 500) {
        _ = try await base.upsertLessons(Array(records[chunk..<min(chunk + 500, records.count)]))
      }
    }
    let baseRate = Double(records.count) / (ms(baseTime) / 1000)

    // Compliance for one county (per-school rows) and for the whole scope.
    var countyMs: [Double] = []
    var rows = 0
    for _ in 0..<15 {
      let t = try await clock.measure {
        let r = try await client.getComplianceReport(
          .with {
            $0.orgCode = world.counties[0]
            $0.termCode = "2020-2021-1"
          }, metadata: auth)
        rows = r.children.count
      }
      countyMs.append(ms(t))
    }
    var cityMs: [Double] = []
    var cityFigures = ""
    if n > 1 {
      for _ in 0..<5 {
        let t = try await clock.measure {
          let r = try await client.getComplianceReport(
            .with {
              $0.orgCode = "C"
              $0.termCode = "2020-2021-1"
            }, metadata: auth)
          cityFigures =
            "\(r.children.count) county rows, 学科达标率 \(r.scope.subjectRateText), "
            + "课时达标率 \(r.scope.lessonRateText)"
        }
        cityMs.append(ms(t))
      }
    }
    var noticeMs: [Double] = []
    for i in 0..<15 {
      let t = try await clock.measure {
        _ = try await client.getWeeklyNotice(
          .with {
            $0.orgCode = world.counties[0]
            $0.week = termStart.adding(days: 7 * (1 + i % (weeks - 1))).description
          }, metadata: auth)
      }
      noticeMs.append(ms(t))
    }
    let county = try await client.getComplianceReport(
      .with {
        $0.orgCode = world.counties[0]
        $0.termCode = "2020-2021-1"
      }, metadata: auth)

    line("baseline: unary GetTerm (median)", String(format: "%.3f ms", unaryMs), "1.00x")
    line(
      "baseline: direct store upsert (1 county)", String(format: "%.0f lessons/s", baseRate),
      "1.00x")
    line(
      "lesson import over gRPC (\(total) lessons)", String(format: "%.0f lessons/s", importRate),
      String(format: "%.2fx of direct store", importRate / baseRate))
    line(
      "compliance, 1 county, \(rows) school rows (median)",
      String(format: "%.2f ms", median(countyMs)),
      String(format: "%.1fx unary; ", median(countyMs) / unaryMs)
        + "target < 100 ms: \(median(countyMs) < 100 ? "met" : "MISSED")")
    if n > 1 {
      line(
        "compliance, whole city (median)", String(format: "%.2f ms", median(cityMs)),
        String(format: "%.1fx unary", median(cityMs) / unaryMs))
      writeLine("    \(cityFigures)")
    }
    line(
      "weekly notice, 1 county (median)", String(format: "%.2f ms", median(noticeMs)),
      String(format: "%.1fx unary", median(noticeMs) / unaryMs))
    writeLine(
      "    county figures: \(county.scope.classroomWeeks) classroom-weeks, "
        + "\(county.scope.lessonCount) lessons, 学科达标率 \(county.scope.subjectRateText), "
        + "课时达标率 \(county.scope.lessonRateText), compliant \(county.scope.compliantShareText)"
    )
  }
  await host.shutdown()
  _ = try? await serving.value
}

try await run(counties: 1, label: "county term")
try await run(counties: 10, label: "city of 10 counties")
