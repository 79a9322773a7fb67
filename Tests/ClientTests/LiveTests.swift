import CatalogueService
import Foundation
import GRPCCore
import IdentityService
import Logging
import ServiceRuntime
import SmartSchoolCLI
import SmartSchoolClient
import SmartSchoolModel
import SupervisionService
import Synchronization
import TestSupport
import Testing

/// Addresses with identity (and optionally supervision) on in-process ports; the others point
/// at a closed port.
func addresses(identity: Int, supervision: Int = 1) -> ServiceAddresses {
  ServiceAddresses(
    identity: PeerAddress(host: "127.0.0.1", port: identity),
    catalogue: PeerAddress(host: "127.0.0.1", port: 1),
    assessment: PeerAddress(host: "127.0.0.1", port: 1),
    supervision: PeerAddress(host: "127.0.0.1", port: supervision))
}

func writeFile(_ dir: TemporaryDirectory, _ name: String, _ text: String) throws -> String {
  let path = dir.path + "/" + name
  try Data(text.utf8).write(to: URL(fileURLWithPath: path))
  return path
}

let adminCredentials = Credentials.password(username: "admin", password: testAdminPassword)

@Suite(.serialized) struct LiveTests {
  @Test func loginAttachesTokenAndRefreshesBeforeExpiry() async throws {
    try await withIdentity { port, _ in
      var settings = ClientSettings()
      // Every token counts as "about to expire": each call renews it by refresh token.
      settings.refreshMargin = 24 * 3600
      let saved = Locked<[TokenSet]>([])
      let client = try SmartSchoolClient(
        addresses: addresses(identity: port), credentials: adminCredentials, settings: settings,
        onTokens: { tokens in saved.withLock { $0.append(tokens) } })
      defer { client.close() }
      let first = try await client.login()
      let me = try await client.identity.whoAmI(.init())
      #expect(me.user.username == "admin")
      let again = try await client.identity.whoAmI(.init())
      // Same session (refreshed, not logged in anew), rotated refresh tokens.
      #expect(again.sessionID == me.sessionID)
      let tokens = saved.withLock { $0 }
      #expect(tokens.count == 3)
      #expect(Set(tokens.map(\.refreshToken)).count == 3)
      #expect(tokens.first == first)
    }
  }

  @Test func wrongPasswordAndUnreachableServiceAreOneLineErrors() async throws {
    try await withIdentity { port, _ in
      let client = try SmartSchoolClient(
        addresses: addresses(identity: port),
        credentials: .password(username: "admin", password: "wrong-password"))
      defer { client.close() }
      let error = await rpcError { _ = try await client.identity.whoAmI(.init()) }
      #expect(error?.code == .unauthenticated)
    }
    var quick = ClientSettings()
    quick.callTimeout = .seconds(3)
    let nowhere = try SmartSchoolClient(
      addresses: addresses(identity: 1), credentials: adminCredentials, settings: quick)
    defer { nowhere.close() }
    let error = await rpcError { _ = try await nowhere.supervision.listTerms(.init()) }
    #expect(error?.code == .unavailable)
    #expect(error?.message.contains("127.0.0.1:1") == true)
  }

  @Test func importOrgsAndUsersReportsRejectedLinesAndIsIdempotent() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let orgs = try writeFile(
      dir, "orgs.csv",
      """
      \u{FEFF}code,name,kind,school_kind,parent_code,managing_school_code,grade,school_year
      P9,安徽省,province,,,,,
      C9,合肥市,市,,P9,,,
      K9,长丰县,county,,C9,,,
      S9,第一中学,school,urban,K9,,,
      X9,坏行,planet,,K9,,,
      CL9,七年级1班,class,,S9,,7,2025-2026
      Z9,孤儿,school,rural,NOPE,,,

      """)
    let users = try writeFile(
      dir, "users.csv",
      """
      external_id,username,display_name,kind,org_code,birth_year
      T1,tch1,张老师,教师,S9,1980
      T2,tch2,李老师,teacher,S9,nineteen
      S1,stu1,王同学,student,CL9,
      S2,stu2,赵同学,student,NOWHERE,

      """)
    try await withIdentity { port, _ in
      let client = try SmartSchoolClient(
        addresses: addresses(identity: port), credentials: adminCredentials)
      defer { client.close() }
      let importer = Importer(client: client, console: ImportConsole(quiet: true))
      let first = try await importer.run(.orgs, path: orgs)
      #expect(first.rows == 7)
      #expect(first.accepted == 5)
      #expect(first.rejections.map(\.line) == [6, 8])
      #expect(first.rejections[0].reason.contains("kind"))
      let again = try await importer.run(.orgs, path: orgs)
      #expect(again.accepted == 5)
      let list = try await client.identity.listOrgs(
        .with {
          $0.parentCode = "P9"
          $0.subtree = true
        })
      #expect(Set(list.orgs.map(\.code)) == ["C9", "K9", "S9", "CL9"])

      let imported = try await importer.run(.users, path: users)
      #expect(imported.accepted == 2)
      #expect(imported.rejections.map(\.line) == [3, 5])
      #expect(imported.rejections[0].reason.contains("birth_year"))
      let teacher = try await client.identity.getUser(.with { $0.externalID = "T1" })
      #expect(teacher.birthYear == 1980 && teacher.kind == .teacher)
    }
  }

  @Test func complianceReportFiguresFromImportedLessons() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let files: [ImportKind: String] = [
      .orgs: try writeFile(
        dir, "orgs.csv",
        """
        code,name,kind,school_kind,parent_code,managing_school_code,grade,school_year
        P8,安徽省,province,,,,,
        C8,合肥市,city,,P8,,,
        K8,长丰县,county,,C8,,,
        S8,一中,school,urban,K8,,,

        """),
      .users: try writeFile(
        dir, "users.csv",
        """
        external_id,username,display_name,kind,org_code,birth_year
        T8,tch8,张老师,teacher,S8,1990

        """),
      .terms: try writeFile(
        dir, "terms.csv",
        """
        code,name,start_date,end_date,excluded_weeks
        2025-1,秋季学期,2025-09-01,2025-09-14,

        """),
      .classrooms: try writeFile(
        dir, "classrooms.csv",
        """
        code,school_code,class_code,equipped_on,retired_on
        R8,S8,,2025-08-01,

        """),
      // Week 1: 6 lessons in 3 subjects (compliant); week 2: 3 lessons of 1 subject; one bad
      // line (date) rejected by the CLI, one (unknown classroom) by the service.
      .lessons: try writeFile(
        dir, "lessons.csv",
        """
        classroom_code,teacher_external_id,subject,date,period,duration_minutes
        R8,T8,数学,2025-09-01,1,40
        R8,T8,语文,2025-09-01,2,40
        R8,T8,english,2025-09-02,1,40
        R8,T8,数学,2025-09-02,2,40
        R8,T8,数学,2025-09-03,1,40
        R8,T8,数学,2025-09-04,1,40
        R8,T8,数学,2025-09-08,1,40
        R8,T8,数学,2025-09-09,1,40
        R8,T8,数学,2025-09-32,1,40
        NOPE,T8,数学,2025-09-10,1,40
        R8,T8,数学,2025-09-10,1,40

        """),
    ]
    try await withIdentity { identityPort, _ in
      let admin = try SmartSchoolClient(
        addresses: addresses(identity: identityPort), credentials: adminCredentials)
      defer { admin.close() }
      let importer = Importer(client: admin, console: ImportConsole(quiet: true))
      _ = try await importer.run(.orgs, path: files[.orgs]!)
      _ = try await importer.run(.users, path: files[.users]!)
      try await withLinkedSupervision(admin: admin, identityPort: identityPort, root: "P8") {
        _, port in
        let client = try SmartSchoolClient(
          addresses: addresses(identity: identityPort, supervision: port),
          credentials: adminCredentials)
        defer { client.close() }
        let importer = Importer(client: client, console: ImportConsole(quiet: true))
        let outcome = try await DemoLoader(importer: importer).load(
          files.filter { $0.key.service == .supervision })
        let lessons = try #require(outcome.outcomes.first { $0.kind == .lessons })
        #expect(lessons.rows == 11)
        #expect(lessons.accepted == 9)
        #expect(lessons.rejections.map(\.line) == [10, 11])
        // Importing twice changes nothing (lessons replaced by natural key, terms and
        // classrooms updated in place).
        _ = try await DemoLoader(importer: importer).load(
          files.filter { $0.key.service == .supervision })
        let report = try await Reports.compliance(client, org: "K8", term: "2025-1", week: nil)
        let text = report.render(.text)
        // Avg subjects (3 + 1) / 2 = 2 → 66.67%; avg lessons (6 + 3) / 2 = 4.5 → 75.00%;
        // one compliant classroom-week of two → 50.00%.
        #expect(text.contains("66.67%"), "\(text)")
        #expect(text.contains("75.00%"))
        #expect(text.contains("50.00%"))
        #expect(text.contains("学科达标率 Subject rate"))
        let csv = report.render(.csv)
        #expect(csv.hasPrefix("Code,Name,Classrooms"))
        #expect(report.render(.json).contains("\"subjectRatePercent\""))

        // The weekly notice, inspections and early warning as people read them.
        let notice = try await Reports.notice(client, org: "K8", week: "2025-09-10")
          .render(.text)
        #expect(notice.contains("每周通报 Weekly notice — K8, 2025-1, 周 week of 2025-09-08"))
        #expect(notice.contains("▼") && notice.contains("-3.00") && notice.contains("合计"))
        #expect(notice.contains("城镇学校"), "\(notice)")
        let inspections = try await Reports.inspections(client, org: "K8", year: 2025, term: nil)
        #expect(inspections.render(.text).contains("本年无督导记录 no visits this year"))
        #expect(inspections.render(.csv).contains("S8,一中,城镇学校,0,,0,0,▼"))
        let warnings = try await Reports.warnings(
          client, org: "K8", term: "2025-1", asOf: "2025-09-15", weeks: 1
        ).render(.text)
        #expect(warnings.contains("N = 1: 2 未解除 standing"), "\(warnings)")
        #expect(warnings.contains("▼ 教室连续未达标") && warnings.contains("2025-09-08"))
        let month = try await Reports.ranking(client, org: "K8", period: .month, date: "2025-09-20")
          .render(.text)
        #expect(month.contains("月通报 Monthly notice — K8, 2025-09-01 … 2025-09-30, 2 周 weeks"))
        // 9 lessons in 2 classroom-weeks: 75.00%, below standard, up 75 from an empty August.
        #expect(month.contains("75.00%") && month.contains("▼") && month.contains("75.00 "))
        let august = try await Reports.ranking(
          client, org: "K8", period: .month, date: "2025-08-20")
        #expect(august.render(.text).contains("本期无教学周 no teaching weeks"))
      }
    }
  }
}

/// Creates a data-exchange service account at `root` and runs an in-process supervision service
/// that follows identity's tree through it, for the duration of `body`.
func withLinkedSupervision(
  admin: SmartSchoolClient, identityPort: Int, root: String,
  _ body: (_ link: IdentityLink, _ supervisionPort: Int) async throws -> Void
) async throws {
  let account = try await admin.identity.createServiceAccount(
    .with {
      $0.name = "sync-" + root.lowercased()
      $0.orgCode = root
      $0.roles = [.dataExchange]
    })
  let link = try IdentityLink(
    address: PeerAddress(host: "127.0.0.1", port: identityPort),
    credentials: (account.clientID, account.clientSecret))
  defer { link.close() }
  let data = try TemporaryDirectory()
  defer { data.remove() }
  let config = HostConfig.ephemeral(service: "supervision", dataDirectory: data.path)
  var settings = SupervisionSettings()
  settings.directoryPollInterval = .seconds(3600)
  let definition = try await buildSupervisionService(
    config: config, settings: settings, verifier: link.makeVerifier(), identity: link)
  try await (definition.background.first as! OrgDirectory).sync()
  try await withHost(definition, config: config) { port, _ in
    try await body(link, port)
  }
}

/// A value behind a lock, for closures the client calls.
final class Locked<Value: Sendable>: Sendable {
  private let mutex: Mutex<Value>
  init(_ value: Value) { mutex = Mutex(value) }
  func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
    try mutex.withLock { try body(&$0) }
  }
}

@Suite(.serialized) struct DemoLoadTests {
  /// The small demo county loads into real identity, supervision and catalogue services (the
  /// assessment address is closed: its files are skipped), and a second load duplicates
  /// nothing.
  @Test func smallCountyLoadsTwiceWithoutDuplicates() async throws {
    let files = try TemporaryDirectory()
    defer { files.remove() }
    let county = DemoCounty(seed: 3, size: .small)
    let paths = try county.write(to: files.path)
    try await withIdentity { identityPort, _ in
      let bootstrap = try SmartSchoolClient(
        addresses: addresses(identity: identityPort), credentials: adminCredentials)
      defer { bootstrap.close() }
      // Orgs and people first, so that the other services' directories know them.
      let importer = Importer(client: bootstrap, console: ImportConsole(quiet: true))
      for kind in [ImportKind.orgs, .users, .guardians] {
        let outcome = try await importer.run(kind, path: paths[kind]!)
        #expect(outcome.rejectedCount == 0, "\(kind): \(outcome.rejections.prefix(3))")
      }
      try await withLinkedSupervision(
        admin: bootstrap, identityPort: identityPort, root: "P34"
      ) { link, supervisionPort in
        let catalogueData = try TemporaryDirectory()
        defer { catalogueData.remove() }
        var logger = Logger(label: "catalogue")
        logger.logLevel = .critical
        let catalogueConfig = HostConfig.ephemeral(
          service: "catalogue", dataDirectory: catalogueData.path)
        var catalogueSettings = CatalogueSettings()
        catalogueSettings.directoryPollInterval = .seconds(3600)
        let catalogue = try await buildCatalogueService(
          config: catalogueConfig, settings: catalogueSettings, verifier: link.makeVerifier(),
          identity: link, logger: logger)
        try await (catalogue.background.first as! OrgDirectory).sync()
        try await withHost(catalogue, config: catalogueConfig) { cataloguePort, _ in
          var settings = ClientSettings()
          settings.callTimeout = .seconds(20)
          var where_ = addresses(identity: identityPort, supervision: supervisionPort)
          where_.catalogue = PeerAddress(host: "127.0.0.1", port: cataloguePort)
          let client = try SmartSchoolClient(
            addresses: where_, credentials: adminCredentials, settings: settings)
          defer { client.close() }
          let loader = DemoLoader(
            importer: Importer(client: client, console: ImportConsole(quiet: true)))
          let first = try await loader.load(paths)
          #expect(first.skipped == [.assessment])
          for outcome in first.outcomes {
            #expect(outcome.rejectedCount == 0, "\(outcome.kind): \(outcome.rejections.prefix(3))")
          }
          let training = try await Reports.training(
            client, org: county.countyCode, year: county.year)
          let inspections = try await client.supervision.listInspections(
            .with {
              $0.orgCode = county.countyCode
              $0.pageSize = 1000
            })
          let resources = try await client.catalogue.listResources(
            .with {
              $0.filter.ownerOrgCode = county.countyCode
              $0.pageSize = 1000
            })
          #expect(resources.resources.count == county.counts["resources"])
          let published = try await loader.publishSubmittedResources(org: county.countyCode)
          #expect(published == county.counts["resources"])
          let coverage = try await Reports.caseCoverage(client, org: county.countyCode)
          let covered = try #require(coverage.tables.first?.rows.last)
          // Total row: chapters, covered chapters; about two thirds carry a teaching case.
          #expect(Int(covered[3]) == county.counts["chapters"])
          #expect((Int(covered[4]) ?? 0) > (county.counts["chapters"] ?? 0) / 2)

          let second = try await loader.load(paths)
          #expect(second.outcomes.map(\.rejectedCount).reduce(0, +) == 0)
          #expect(
            try await Reports.training(client, org: county.countyCode, year: county.year).json
              == training.json)
          let inspectionsAgain = try await client.supervision.listInspections(
            .with {
              $0.orgCode = county.countyCode
              $0.pageSize = 1000
            })
          #expect(inspectionsAgain.inspections.count == inspections.inspections.count)
          let resourcesAgain = try await client.catalogue.listResources(
            .with {
              $0.filter.ownerOrgCode = county.countyCode
              $0.pageSize = 1000
            })
          #expect(resourcesAgain.resources.count == resources.resources.count)
          #expect(try await loader.publishSubmittedResources(org: county.countyCode) == 0)
          let compliance = try await Reports.compliance(
            client, org: county.countyCode, term: county.termCode, week: nil)
          #expect(compliance.tables[1].rows.count == 6)
        }
      }
    }
  }
}
