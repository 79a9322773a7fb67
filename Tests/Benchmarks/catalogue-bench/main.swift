// catalogue-bench: the catalogue at province scale (100,000 resources with generated Chinese
// titles) through a real server on loopback, on SQLite and, given a server, on PostgreSQL in
// the same run; each figure printed with its ratio to a baseline measured in the same run;
// search latency (p50/p95/p99) per kind of query; a summary of both stores side by side.
//
//   swift build -c release --product catalogue-bench
//   .build/release/catalogue-bench [resources] [scratch directory]
//     [--database-url postgres://user@host:port/db] [--seed-callers n] [--seed-dir directory]
//     [--only sqlite|postgresql]
//
// The PostgreSQL server also comes from SMARTSCHOOL_BENCH_DATABASE_URL; the bench makes a fresh
// database on it (its role needs CREATEDB) and drops it at the end (needs `psql`).
//
// Seeding goes through the service (CreateResource, UploadContent, two transitions per
// resource). The rates are measured on the first 10,000 resources with 8 callers; the rest are
// seeded by --seed-callers (default 32) callers, each taking its resources through create,
// upload, submit and approve in turn. With --seed-dir, a store seeded by an earlier run with
// the same resource count is copied (SQLite: its data folder; PostgreSQL: CREATE DATABASE …
// TEMPLATE) instead of seeding again, and a run that seeds keeps its store there at the end; a
// store seeded by older code is brought up to date by the service's own migrations on opening.
import CatalogueService
import Crypto
import Dispatch
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf
import Synchronization

typealias Client = Smartschool_Catalogue_V1_CatalogueService.Client<HTTP2ClientTransport.Posix>

var positional: [String] = []
var serverURL = ProcessInfo.processInfo.environment["SMARTSCHOOL_BENCH_DATABASE_URL"]
var seedCallersOption = 32
var seedDirectoryOption: String? = nil
var onlyOption: String? = nil
do {
  var rest = CommandLine.arguments.dropFirst()
  while let argument = rest.popFirst() {
    if argument == "--database-url", let value = rest.popFirst() {
      serverURL = value
    } else if argument == "--seed-callers", let value = rest.popFirst().flatMap({ Int($0) }),
      value > 0
    {
      seedCallersOption = value
    } else if argument == "--seed-dir", let value = rest.popFirst() {
      seedDirectoryOption = value
    } else if argument == "--only", let value = rest.popFirst(),
      ["sqlite", "postgresql"].contains(value)
    {
      onlyOption = value
    } else if argument.hasPrefix("--") {
      FileHandle.standardError.write(
        Data(
          ("usage: catalogue-bench [resources] [scratch directory] "
            + "[--database-url postgres://user@host:port/db] [--seed-callers n] "
            + "[--seed-dir directory] [--only sqlite|postgresql]\n").utf8))
      exit(64)
    } else {
      positional.append(argument)
    }
  }
}
let seedCallers = seedCallersOption
let seedDirectory = seedDirectoryOption
let resourceCount = positional.count > 0 ? Int(positional[0]) ?? 100_000 : 100_000
let scratchRoot = positional.count > 1 ? positional[1] : NSTemporaryDirectory()
let server: DatabaseSettings?
do {
  server = try serverURL.flatMap { $0.isEmpty ? nil : try DatabaseSettings(url: $0, poolSize: 10) }
} catch {
  FileHandle.standardError.write(Data("catalogue-bench: --database-url: \(error)\n".utf8))
  exit(64)
}

/// Where a run's store lives.
enum BenchStore {
  case sqlite
  case postgresql(server: DatabaseSettings)

  var name: String {
    switch self {
    case .sqlite: "SQLite"
    case .postgresql: "PostgreSQL"
    }
  }
}

/// A run's figures, for the summary.
struct Figures {
  var store = ""
  var floorP50 = 0.0
  var curriculumRate = 0.0
  var curriculumAgainRate = 0.0
  var createRate = 0.0
  var getRate = 0.0
  var search: [(name: String, hits: Int, p50: Double, p95: Double, p99: Double)] = []
  var load = ""
}

/// The load average now (1, 5, 15 minutes).
func loadAverage() -> String {
  let text = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? ""
  return text.split(separator: " ").prefix(3).joined(separator: " ")
}

/// `psql -c command` on `server`'s database.
func psql(_ server: DatabaseSettings, _ command: String) throws {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
  process.arguments = [
    "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", server.host, "-p", String(server.port),
    "-U", server.username, "-d", server.database, "-c", command,
  ]
  var environment = ProcessInfo.processInfo.environment
  environment["PGSSLMODE"] = server.tls.rawValue
  environment["PGPASSWORD"] = server.password
  process.environment = environment
  process.standardOutput = FileHandle.nullDevice
  try process.run()
  process.waitUntilExit()
  if process.terminationStatus != 0 {
    throw BenchError(message: "psql failed (status \(process.terminationStatus)): \(command)")
  }
}

struct BenchError: Error, CustomStringConvertible {
  var message: String
  var description: String { message }
}

// MARK: Measuring

func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// CPU seconds this process (server and callers) has used, user and system.
func processCPUSeconds() -> Double {
  var usage = rusage()
  getrusage(RUSAGE_SELF.rawValue, &usage)
  return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
    + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
  guard !sorted.isEmpty else { return 0 }
  let index = min(sorted.count - 1, max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1))
  return sorted[index]
}

func line(_ text: String) {
  FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

func latencyRow(_ name: String, _ samples: [Double], baseline: Double, target: String = "") {
  let s = samples.sorted()
  line(
    name.padding(toLength: 44, withPad: " ", startingAt: 0)
      + String(
        format: "p50 %6.2f ms  p95 %6.2f ms  p99 %6.2f ms   p95/RPC floor %5.1f  %@",
        percentile(s, 0.5), percentile(s, 0.95), percentile(s, 0.99),
        percentile(s, 0.95) / baseline, target))
}

// MARK: A deterministic generator of realistic resources

struct SubjectTopics {
  var subject: Smartschool_Common_V1_Subject
  var stages: [Smartschool_Common_V1_Stage]
  var topics: [String]
}

let catalogue: [SubjectTopics] = [
  .init(
    subject: .mathematics, stages: [.primary, .junior, .senior],
    topics: [
      "二次函数的图像与性质", "一元二次方程的解法", "有理数的加减法", "整式的加减", "勾股定理",
      "全等三角形的判定", "概率初步", "平面直角坐标系", "一次函数的应用", "反比例函数",
      "圆的周长与面积", "相似三角形", "锐角三角函数", "分式方程", "因式分解", "不等式与不等式组",
      "数据的收集与整理", "分数的意义", "小数乘法", "长方体和正方体", "集合与函数概念", "数列求和",
      "导数及其应用", "空间向量与立体几何",
    ]),
  .init(
    subject: .chinese, stages: [.primary, .junior, .senior],
    topics: [
      "朱自清《背影》", "范仲淹《岳阳楼记》", "诸葛亮《出师表》", "陶渊明《桃花源记》",
      "朱自清《荷塘月色》", "古诗词诵读", "记叙文写作指导", "说明文阅读方法", "文言文实词虚词",
      "李白《静夜思》", "鲁迅《从百草园到三味书屋》", "《论语》十二章", "议论文论证方法",
      "看图写话", "拼音字母表", "成语故事",
    ]),
  .init(
    subject: .english, stages: [.primary, .junior, .senior],
    topics: [
      "现在完成时", "定语从句", "Unit 1 Hello 问候语", "被动语态", "英语阅读理解技巧",
      "书面表达满分作文", "宾语从句", "一般过去时", "听力训练", "词汇记忆方法",
    ]),
  .init(
    subject: .physics, stages: [.junior, .senior],
    topics: [
      "牛顿第一定律", "欧姆定律", "浮力与阿基米德原理", "光的折射", "电功率", "机械能守恒",
      "声音的产生与传播", "压强", "电磁感应", "匀变速直线运动",
    ]),
  .init(
    subject: .chemistry, stages: [.junior, .senior],
    topics: [
      "氧气的性质与制取", "质量守恒定律", "酸和碱的中和反应", "金属的化学性质", "化学方程式",
      "溶液的配制", "元素周期表", "化学反应速率",
    ]),
  .init(
    subject: .biology, stages: [.junior, .senior],
    topics: [
      "细胞的基本结构", "光合作用", "遗传与变异", "生态系统", "人体的消化与吸收", "DNA的结构",
    ]),
  .init(
    subject: .history, stages: [.junior, .senior],
    topics: [
      "鸦片战争", "辛亥革命", "秦统一中国", "丝绸之路", "改革开放", "第一次世界大战",
    ]),
  .init(
    subject: .geography, stages: [.junior, .senior],
    topics: [
      "地球的运动", "世界的气候类型", "中国的河流", "地图的阅读", "人口与城市",
    ]),
  .init(
    subject: .science, stages: [.primary],
    topics: [
      "水的三态变化", "植物的一生", "简单电路", "太阳系", "磁铁的性质",
    ]),
  .init(
    subject: .informationTechnology, stages: [.primary, .junior, .senior],
    topics: [
      "Scratch 编程入门", "Python 循环语句", "演示文稿制作", "网络安全", "人工智能初步",
    ]),
]

let editions = ["人教版", "北师大版", "苏教版", "沪科版", "部编版"]
let typeWords: [(Smartschool_Catalogue_V1_ResourceType, [String])] = [
  (.courseware, ["课件", "优质课件", "教学课件PPT"]),
  (.microLesson, ["微课", "微课视频"]),
  (.lessonPlan, ["教学设计", "教案"]),
  (.exerciseSet, ["同步练习", "课后习题", "单元测试卷"]),
  (.teachingCase, ["智慧课堂教学案例"]),
  (.resourcePackage, ["集体备课资源包"]),
  (.awardWinningLesson, ["优课", "省级优课"]),
]

func gradeName(_ g: Int) -> String {
  let digits = ["一", "二", "三", "四", "五", "六", "七", "八", "九"]
  return g <= 9 ? digits[g - 1] + "年级" : "高" + digits[g - 10]
}

func makeResource(_ rng: inout SeededGenerator, owner: String) -> Smartschool_Catalogue_V1_Resource {
  let area = catalogue.randomElement(using: &rng)!
  let stage = area.stages.randomElement(using: &rng)!
  let grade = Int.random(in: stage.grades, using: &rng)
  let topic = area.topics.randomElement(using: &rng)!
  let (type, words) = typeWords.randomElement(using: &rng)!
  let word = words.randomElement(using: &rng)!
  let edition = editions.randomElement(using: &rng)!
  let half = Bool.random(using: &rng) ? "上册" : "下册"
  let roll = Int.random(in: 0..<100, using: &rng)
  let scope: Smartschool_Catalogue_V1_SharingScope =
    roll < 50 ? .school : roll < 75 ? .county : roll < 90 ? .city : .province
  return .with {
    $0.title = "\(edition)\(gradeName(grade))\(area.subject.chineseName)\(half)《\(topic)》\(word)"
    $0.description_p =
      "本资源为\(gradeName(grade))\(area.subject.chineseName)\(topic)的\(word)，配合\(edition)教材使用，"
      + "包含教学目标、重难点分析、课堂练习与课后拓展，适合智慧课堂常态化应用。"
    $0.keywords = [topic, area.subject.chineseName, word]
    $0.type = type
    $0.stage = stage
    $0.grade = Int32(grade)
    $0.subject = area.subject
    $0.sharingScope = scope
    $0.ownerOrgCode = owner
  }
}

// MARK: A fake identity: the org tree and locally signed tokens

struct FixedFeed: IdentityChangeSource {
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

/// The org tree of the run: province P → city C → counties K0–K4 → ten schools each.
struct Tree: Sendable {
  var changes: [Smartschool_Common_V1_Change] = []
  var paths: [String: String] = [:]
  var schools: [String] = []

  mutating func add(_ code: String, _ kind: Smartschool_Common_V1_OrgKind, parent: String?) {
    let id = "id" + code
    let path = (parent.map { paths[$0]! } ?? "/") + id + "/"
    paths[code] = path
    let org = Smartschool_Identity_V1_Org.with {
      $0.id = id
      $0.code = code
      $0.name = code
      $0.kind = kind
      $0.parentID = parent.map { "id" + $0 } ?? ""
      $0.parentCode = parent ?? ""
      $0.path = path
      $0.schoolKind = kind == .school ? .urban : .unspecified
      $0.active = true
    }
    let sequence = Int64(changes.count + 1)
    changes.append(
      .with {
        $0.sequence = sequence
        $0.entity = "org"
        $0.id = id
        $0.naturalKey = code
        $0.op = .upsert
        $0.orgPath = path
        $0.payload = try! Google_Protobuf_Any(message: org)
      })
  }

  static func make() -> Tree {
    var t = Tree()
    t.add("P", .province, parent: nil)
    t.add("C", .city, parent: "P")
    for k in 0..<5 {
      t.add("K\(k)", .county, parent: "C")
      for s in 0..<10 {
        t.add("S\(k)-\(s)", .school, parent: "K\(k)")
        t.schools.append("S\(k)-\(s)")
      }
    }
    return t
  }
}

let tree = Tree.make()
let schools = tree.schools

let signingKey = Curve25519.Signing.PrivateKey()
let signer = TokenSigner(keyID: "bench", key: signingKey)
/// Signed tokens by user, role and org: each caller signs once, as a real client reuses its
/// token (the GetResource baseline does too), so rates compare the server's work.
let signedTokens = Mutex<[String: Metadata]>([:])

func token(_ user: String, _ role: String, at code: String) -> Metadata {
  let key = user + "|" + role + "|" + code
  if let cached = signedTokens.withLock({ $0[key] }) { return cached }
  let made = signToken(user, role, at: code)
  signedTokens.withLock { $0[key] = made }
  return made
}

func signToken(_ user: String, _ role: String, at code: String) -> Metadata {
  let t = Int64(Date().timeIntervalSince1970)
  let claims = AccessTokenClaims(
    iss: smartSchoolTokenIssuer, sub: user, usr: user, knd: "teacher", sid: "s", iat: t,
    exp: t + 7200, rol: [.init(r: role, o: "id" + code, p: tree.paths[code]!)])
  return ["authorization": "Bearer \(try! signer.sign(claims))"]
}

// MARK: The run

func run(on store: BenchStore) async throws -> Figures {
  var figures = Figures()
  figures.store = store.name
  let scratch = scratchRoot + "/catalogue-bench-" + UUID().uuidString
  try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
  defer { try? FileManager.default.removeItem(atPath: scratch) }
  let publicKey = signingKey.publicKey
  let verifier = TokenVerifier(keySource: {
    [PublishedKey(keyID: "bench", publicKey: publicKey, retireTime: nil)]
  })
  var settings = CatalogueSettings()
  settings.maxUploadBytes = 256 * 1024 * 1024
  settings.directoryPollInterval = .seconds(3600)
  var config = HostConfig.ephemeral(service: "catalogue", dataDirectory: scratch + "/data")
  config.metricsPort = -1
  // A store seeded by an earlier run (--seed-dir): SQLite's data folder, or for PostgreSQL a
  // marker file naming the database kept on the server.
  let seed = seedDirectory.map { "\($0)/catalogue-\(store.name.lowercased())-\(resourceCount)" }
  let seedDatabase = "catalogue_bench_seed_\(resourceCount)"
  let seeded = seed.map { FileManager.default.fileExists(atPath: $0) } ?? false
  var keep = false
  let copyStart = now()
  var database: DatabaseSettings? = nil
  if case .postgresql(let server) = store {
    let name = "catalogue_bench_" + UUID().uuidString.prefix(8).lowercased()
    if seeded {
      try psql(server, "CREATE DATABASE \(name) TEMPLATE \(seedDatabase)")
    } else {
      try await PostgresStore.createDatabaseIfMissing(on: server, name: name)
    }
    database = server.with(database: name)
    config.database = database
  } else if let seed, seeded {
    try FileManager.default.copyItem(atPath: seed, toPath: scratch + "/data")
  }
  if seeded {
    line(
      String(
        format: "\n(%@: seeded store copied in %.1f s)", store.name,
        Double(now() - copyStart) / 1e9))
  }
  defer {
    if let database, !keep {
      try? psql(
        database.with(database: "postgres"),
        "DROP DATABASE IF EXISTS \(database.database) WITH (FORCE)")
    }
  }
  var logger = Logger(label: "catalogue-bench")
  logger.logLevel = .critical
  let definition = try await buildCatalogueService(
    config: config, settings: settings, verifier: verifier,
    identity: FixedFeed(changes: tree.changes), logger: logger)
  try await (definition.background.first as! OrgDirectory).sync()
  let host = try ServiceHost(config: config, definition: definition, logger: logger)
  let serving = Task { try await host.run(handleSignals: false) }
  let port = try await host.boundPort()
  defer { serving.cancel() }

  try await withGRPCClient(
    transport: .http2NIOPosix(
      target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
  ) { grpc in
    let client = Client(wrapping: grpc)
    let reviewer = token("reviewer", "resource_reviewer", at: "P")
    let searcher = token("searcher", "teacher", at: "S0-0")
    line(
      "\n== \(store.name): \(resourceCount) resources, 5 counties × 10 schools, loopback, "
        + "\(ProcessInfo.processInfo.activeProcessorCount) cores, load average \(loadAverage())")

    // RPC floor: GetResource of one resource, sequential.
    let probe = try await client.createResource(
      .with {
        $0.resource = .with {
          $0.title = "探针"
          $0.type = .courseware
          $0.stage = .junior
          $0.subject = .mathematics
        }
      }, metadata: token("t-S0-0", "teacher", at: "S0-0"))
    let probeAuth = token("t-S0-0", "teacher", at: "S0-0")
    var floor: [Double] = []
    for i in 0..<600 {
      let t0 = now()
      _ = try await client.getResource(.with { $0.id = probe.id }, metadata: probeAuth)
      if i >= 100 { floor.append(Double(now() - t0) / 1e6) }
    }
    let floorP50 = percentile(floor.sorted(), 0.5)
    let floorP95 = percentile(floor.sorted(), 0.95)
    figures.floorP50 = floorP50
    line(
      String(
        format: "RPC floor (GetResource, sequential)          p50 %6.2f ms  p95 %6.2f ms",
        floorP50, floorP95))

    // The curriculum over one stream: 4 editions × 6 volumes × 12 chapters × 5 sections and a
    // knowledge point a chapter (1,900 rows), then the same rows again (all unchanged). Codes
    // new to every run, so that a seeded store imports them anew too.
    let tag = UUID().uuidString.prefix(8)
    var curriculum: [Smartschool_Catalogue_V1_ImportCurriculumRequest] = []
    func node(
      _ code: String, _ parent: String, _ kind: Smartschool_Catalogue_V1_CurriculumNodeKind,
      _ ordinal: Int, grade: Int32 = 0
    ) {
      curriculum.append(
        .with {
          $0.node = .with {
            $0.code = "\(tag)-\(code)"
            $0.parentCode = parent.isEmpty ? "" : "\(tag)-\(parent)"
            $0.kind = kind
            $0.name = "\(code) 第\(ordinal)"
            $0.ordinal = Int32(ordinal)
            $0.grade = grade
            if kind == .edition {
              $0.stage = .junior
              $0.subject = .mathematics
            }
          }
        })
    }
    for e in 0..<4 {
      node("E\(e)", "", .edition, e)
      for v in 0..<6 {
        node("E\(e)V\(v)", "E\(e)", .volume, v, grade: Int32(7 + v / 2))
        for c in 0..<12 {
          node("E\(e)V\(v)C\(c)", "E\(e)V\(v)", .chapter, c)
          for x in 0..<5 { node("E\(e)V\(v)C\(c)S\(x)", "E\(e)V\(v)C\(c)", .section, x) }
          curriculum.append(
            .with {
              $0.knowledgePoint = .with {
                $0.code = "\(tag)-K\(e)-\(v)-\(c)"
                $0.name = "知识点 \(e)-\(v)-\(c)"
                $0.stage = .junior
                $0.subject = .mathematics
                $0.chapterCode = "\(tag)-E\(e)V\(v)C\(c)"
              }
            })
        }
      }
    }
    let curator = token("curator", "province_admin", at: "P")
    let rows = curriculum
    var curriculumSeconds: [Double] = []
    for round in 0..<2 {
      let t0 = now()
      let summary = try await client.importCurriculum(metadata: curator) { writer in
        try await writer.write(contentsOf: rows)
      }
      curriculumSeconds.append(Double(now() - t0) / 1e9)
      guard summary.rejected == 0, summary.created == (round == 0 ? Int64(rows.count) : 0) else {
        throw BenchError(
          message: "curriculum import: \(summary.created) created, \(summary.errors.prefix(3))")
      }
    }
    figures.curriculumRate = Double(rows.count) / curriculumSeconds[0]
    figures.curriculumAgainRate = Double(rows.count) / curriculumSeconds[1]
    line(
      String(
        format: "curriculum import (%d rows, one stream)   %6.0f rows/s; again (unchanged) %.0f/s",
        rows.count, figures.curriculumRate, figures.curriculumAgainRate))

    // Only a resource with content is submitted: every author uploads a small lesson plan
    // (one blob: the catalogue stores content by its hash).
    let lessonPlan = Data("教案：学习目标、重点难点、教学过程、课堂练习".utf8)
    let lessonPlanSHA = SHA256.hash(data: lessonPlan).map { String(format: "%02x", $0) }.joined()
    @Sendable func create(_ i: Int) async throws -> (id: String, school: String) {
      let school = schools[i % schools.count]
      var rng = SeededGenerator(seed: UInt64(i + 1))
      let r = try await client.createResource(
        .with { $0.resource = makeResource(&rng, owner: school) },
        metadata: token("t-" + school, "teacher", at: school))
      return (r.id, school)
    }
    @Sendable func upload(_ id: String, _ school: String) async throws {
      _ = try await client.uploadContent(
        metadata: token("t-" + school, "teacher", at: school),
        requestProducer: { writer in
          try await writer.write(
            .with {
              $0.resourceID = id
              $0.header = .with {
                $0.sha256 = lessonPlanSHA
                $0.sizeBytes = Int64(lessonPlan.count)
              }
            })
          try await writer.write(
            .with {
              $0.resourceID = id
              $0.data = lessonPlan
            })
        })
    }
    @Sendable func publish(_ id: String, _ school: String) async throws {
      _ = try await client.transitionResource(
        .with {
          $0.id = id
          $0.action = .submit
        }, metadata: token("t-" + school, "teacher", at: school))
      _ = try await client.transitionResource(
        .with {
          $0.id = id
          $0.action = .approve
        }, metadata: reviewer)
    }
    /// Runs `body` for indexes `range` spread over `callers` concurrent callers (caller w takes
    /// w, w + callers, …); returns the seconds taken and what the calls returned.
    func spread<T: Sendable>(
      _ range: Range<Int>, callers: Int, _ body: @escaping @Sendable (Int) async throws -> T
    ) async throws -> (seconds: Double, results: [T]) {
      let start = now()
      let results = try await withThrowingTaskGroup(of: [T].self) { group in
        for w in 0..<callers {
          group.addTask {
            var made: [T] = []
            for i in stride(from: range.lowerBound + w, to: range.upperBound, by: callers) {
              made.append(try await body(i))
            }
            return made
          }
        }
        var all: [T] = []
        for try await part in group { all += part }
        return all
      }
      return (Double(now() - start) / 1e9, results)
    }

    let workers = 8
    if let seed, seeded {
      line("seeded store copied from \(seed) (\(resourceCount) resources; rates not measured)")
    } else {
      // Measured: creates, then uploads, then reviews of the first `measured` resources with
      // 8 concurrent callers, one author per school. The creates alternate with their
      // baseline, GetResource at the same concurrency, in five rounds: the machine's other
      // load swings from one minute to the next here, and so weighs on both alike.
      let measured = min(resourceCount, 10_000)
      let rounds = 5
      let getCount = 20_000
      var createSeconds = 0.0
      var getSeconds = 0.0
      var createCPU = 0.0
      var getCPU = 0.0
      var created: [(id: String, school: String)] = []
      var roundRatios: [String] = []
      for round in 0..<rounds {
        let range = (measured * round / rounds)..<(measured * (round + 1) / rounds)
        let cpu0 = processCPUSeconds()
        let (seconds, made) = try await spread(range, callers: workers, create)
        let cpu1 = processCPUSeconds()
        let gets = getCount / rounds
        let (getPart, _) = try await spread(0..<gets, callers: workers) { _ in
          _ = try await client.getResource(.with { $0.id = probe.id }, metadata: probeAuth)
        }
        createCPU += cpu1 - cpu0
        getCPU += processCPUSeconds() - cpu1
        createSeconds += seconds
        getSeconds += getPart
        created += made
        roundRatios.append(
          String(format: "%.2f", (Double(range.count) / seconds) / (Double(gets) / getPart)))
      }
      let ids = created
      let createRate = Double(measured) / createSeconds
      let getRate = Double(getCount) / getSeconds
      createCPU /= Double(measured)
      getCPU /= Double(getCount)
      figures.createRate = createRate
      figures.getRate = getRate
      line(
        String(
          format:
            "create rate (8 callers)                     %8.0f /s   GetResource %8.0f /s   "
            + "ratio %.2f   (%.1f s for the first %d)   target ratio >= 0.5",
          createRate, getRate, createRate / getRate, createSeconds, measured)
          + "\n  ratio per round                           "
          + roundRatios.joined(separator: "  "))
      // Rates swing with the machine's other load; CPU per call (this process: server and
      // callers) is steadier for comparing builds.
      line(
        String(
          format:
            "  CPU per call (process)                    create %.3f ms   GetResource %.3f ms   "
            + "ratio %.2f",
          createCPU * 1e3, getCPU * 1e3, getCPU / createCPU))
      let (uploadSeconds, _) = try await spread(ids.indices, callers: workers) {
        try await upload(ids[$0].id, ids[$0].school)
      }
      let contentRate = Double(ids.count) / uploadSeconds
      line(
        String(
          format:
            "small content uploads (8 callers)           %8.0f /s   GetResource %8.0f /s   "
            + "ratio %.2f",
          contentRate, getRate, contentRate / getRate))
      // Submit and approve (the review workflow at scale).
      let (reviewSeconds, _) = try await spread(ids.indices, callers: workers) {
        try await publish(ids[$0].id, ids[$0].school)
      }
      let reviewRate = Double(2 * ids.count) / reviewSeconds
      line(
        String(
          format:
            "review transitions (8 callers)              %8.0f /s   GetResource %8.0f /s   "
            + "ratio %.2f",
          reviewRate, getRate, reviewRate / getRate))
      // The rest: each caller takes its resources through all four calls in turn.
      if measured < resourceCount {
        let (seconds, _) = try await spread(measured..<resourceCount, callers: seedCallers) {
          let (id, school) = try await create($0)
          try await upload(id, school)
          try await publish(id, school)
        }
        line(
          String(
            format:
              "seeded %d more (create, upload, submit, approve; %d callers) in %.0f s: %.0f /s",
            resourceCount - measured, seedCallers, seconds,
            Double(resourceCount - measured) / seconds))
      }
    }

    // On PostgreSQL, searches are measured in the steady state autovacuum reaches once writes
    // pause: a freshly written (or copied) table has no visibility map yet, and every
    // index-only scan would also read the rows.
    if let database {
      let vacuumStart = now()
      try psql(database, "VACUUM (ANALYZE)")
      line(
        String(
          format: "VACUUM (ANALYZE) before searching: %.1f s", Double(now() - vacuumStart) / 1e9))
    }

    // Search latency, sequential, one teacher of one school (sees its own school's, its
    // county's, the city's and the province's shares: about a third of the catalogue).
    typealias Probe = (query: String, filter: Smartschool_Catalogue_V1_ResourceFilter)
    func f(
      _ stage: Smartschool_Common_V1_Stage, _ subject: Smartschool_Common_V1_Subject,
      grade: Int32 = 0
    ) -> Smartschool_Catalogue_V1_ResourceFilter {
      .with {
        $0.stage = stage
        $0.subject = subject
        $0.grade = grade
      }
    }
    // The targets of issue 27 (on SQLite; PostgreSQL within 2x): the 2-character query without
    // filters by p95, the others by p50.
    let p95Target = "search 2-char, no filters"
    let sets: [(String, [Probe])] = [
      (
        "search 1-char + filters",
        [
          ("函", f(.junior, .mathematics)), ("诗", f(.primary, .chinese)),
          ("力", f(.junior, .physics)), ("酸", f(.junior, .chemistry)),
          ("圆", f(.primary, .mathematics, grade: 6)),
        ]
      ),
      (
        "search 2-char + filters",
        [
          ("函数", f(.junior, .mathematics)), ("方程", f(.junior, .mathematics, grade: 8)),
          ("定律", f(.junior, .physics)), ("古诗", f(.primary, .chinese)),
          ("细胞", f(.senior, .biology)),
        ]
      ),
      (
        "search 4-char + filters",
        [
          ("二次函数", f(.junior, .mathematics)), ("勾股定理", f(.junior, .mathematics, grade: 8)),
          ("欧姆定律", f(.junior, .physics)), ("光合作用", f(.junior, .biology)),
          ("质量守恒", f(.junior, .chemistry)),
        ]
      ),
      (
        "search 2-char, no filters",
        [
          ("函数", .init()), ("定律", .init()), ("课件", .init()), ("微课", .init()),
        ]
      ),
      (
        "search 4-char, no filters",
        [
          ("二次函数", .init()), ("欧姆定律", .init()), ("教学设计", .init()),
        ]
      ),
      (
        "search as typed",  // 的 left out, typos, traditional
        [
          ("二次函数图像", .init()), ("勾股定理证明", .init()), ("勾股定里", .init()),
          ("欧姆定侓", .init()), ("質量守恆", .init()),
        ]
      ),
      (
        "search facet words",
        [
          ("八年级 数学", .init()), ("人教版 物理", .init()), ("勾股定理 教案", .init()),
          ("光合作用微课", .init()), ("初中化学", .init()),
        ]
      ),
    ]
    for (name, probes) in sets {
      var samples: [Double] = []
      var perProbe = Array(repeating: [Double](), count: probes.count)
      var probeHits = Array(repeating: 0, count: probes.count)
      var hits = 0
      for i in 0..<(probes.count * 60 + 20) {
        let p = probes[i % probes.count]
        let t0 = now()
        let response = try await client.searchResources(
          .with {
            $0.query = p.query
            $0.filter = p.filter
            $0.pageSize = 20
          }, metadata: searcher)
        if i >= 20 {
          let ms = Double(now() - t0) / 1e6
          samples.append(ms)
          perProbe[i % probes.count].append(ms)
          probeHits[i % probes.count] = Int(response.totalSize)
          hits += Int(response.totalSize)
        }
      }
      latencyRow(
        name + " (avg \(hits / samples.count) hits)", samples, baseline: floorP95,
        target: name == p95Target ? "target p95 < 25 ms" : "target p50 < 20 ms")
      if name == p95Target {
        // Each query of the target row apart: where the p95 comes from.
        for (j, probe) in probes.enumerated() {
          let s = perProbe[j].sorted()
          line(
            "    \(probe.query) (\(probeHits[j]) hits)".padding(
              toLength: 44, withPad: " ", startingAt: 0)
              + String(
                format: "p50 %6.2f ms  p95 %6.2f ms", percentile(s, 0.5), percentile(s, 0.95)))
        }
      }
      let sorted = samples.sorted()
      figures.search.append(
        (
          name, hits / samples.count, percentile(sorted, 0.5), percentile(sorted, 0.95),
          percentile(sorted, 0.99)
        ))
    }

    // List by filter, first pages and a deep page.
    let lists: [(String, Smartschool_Catalogue_V1_ResourceFilter)] = [
      (
        "subject+grade",
        .with {
          $0.subject = .mathematics
          $0.grade = 8
        }
      ),
      (
        "stage+type",
        .with {
          $0.stage = .senior
          $0.type = .microLesson
        }
      ),
      ("owner county", .with { $0.ownerOrgCode = "K0" }),
      ("status published", .with { $0.status = .published }),
      ("no filter", .init()),
    ]
    var listSamples: [Double] = []
    var deepSamples: [Double] = []
    for i in 0..<(lists.count * 60) {
      let (_, filter) = lists[i % lists.count]
      let t0 = now()
      let page = try await client.listResources(
        .with {
          $0.filter = filter
          $0.pageSize = 50
        }, metadata: searcher)
      listSamples.append(Double(now() - t0) / 1e6)
      if !page.nextPageToken.isEmpty && (i / lists.count) % 6 == 0 {
        var token = page.nextPageToken
        for _ in 0..<9 where !token.isEmpty {
          let t1 = now()
          let next = try await client.listResources(
            .with {
              $0.filter = filter
              $0.pageSize = 50
              $0.pageToken = token
            }, metadata: searcher)
          deepSamples.append(Double(now() - t1) / 1e6)
          token = next.nextPageToken
        }
      }
    }
    latencyRow("list by filter, first page of 50", listSamples, baseline: floorP95)
    latencyRow("list by filter, pages 2-10", deepSamples, baseline: floorP95)

    // 100 MB upload and download against cat of the same file.
    let size = 100 * 1024 * 1024
    let file = scratch + "/content.bin"
    var rng = SeededGenerator(seed: 42)
    var bytes = Data(count: size)
    bytes.withUnsafeMutableBytes { raw in
      let words = raw.bindMemory(to: UInt64.self)
      for i in 0..<words.count { words[i] = rng.next() }
    }
    try bytes.write(to: URL(fileURLWithPath: file))
    let sha = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    bytes = Data()
    func catSeconds() throws -> Double {
      let process = Process()
      process.executableURL = URL(fileURLWithPath: "/bin/cat")
      process.arguments = [file]
      process.standardOutput = FileHandle.nullDevice
      let t0 = now()
      try process.run()
      process.waitUntilExit()
      return Double(now() - t0) / 1e9
    }
    _ = try catSeconds()
    let cat = try catSeconds()
    let catRate = Double(size) / cat / 1e6
    let owner = token("t-S0-0", "teacher", at: "S0-0")
    let holder = try await client.createResource(
      .with {
        $0.resource = .with {
          $0.title = "100MB 资源包"
          $0.type = .resourcePackage
          $0.stage = .junior
          $0.subject = .mathematics
        }
      }, metadata: owner)
    let chunk = 1024 * 1024
    let uploadStart = now()
    _ = try await client.uploadContent(
      metadata: owner,
      requestProducer: { writer in
        try await writer.write(
          .with {
            $0.resourceID = holder.id
            $0.header = .with {
              $0.sha256 = sha
              $0.sizeBytes = Int64(size)
              $0.mimeType = "application/zip"
            }
          })
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: file))
        defer { try? handle.close() }
        while let data = try handle.read(upToCount: chunk), !data.isEmpty {
          try await writer.write(
            .with {
              $0.resourceID = holder.id
              $0.data = data
            })
        }
      })
    let uploadRate = Double(size) / (Double(now() - uploadStart) / 1e9) / 1e6
    let downloadStart = now()
    let received = try await client.downloadContent(
      .with { $0.resourceID = holder.id }, metadata: owner
    ) { response in
      var n = 0
      for try await message in response.messages { n += message.data.count }
      return n
    }
    precondition(received == size, "downloaded \(received) of \(size) bytes")
    let downloadRate = Double(size) / (Double(now() - downloadStart) / 1e9) / 1e6
    line(
      String(
        format:
          "upload 100 MB (1 MiB chunks, sha256 + fsync)  %7.0f MB/s   cat %7.0f MB/s   ratio %.3f",
        uploadRate, catRate, uploadRate / catRate))
    line(
      String(
        format:
          "download 100 MB (256 KiB chunks)              %7.0f MB/s   cat %7.0f MB/s   ratio %.3f",
        downloadRate, catRate, downloadRate / catRate))
  }
  figures.load = loadAverage()
  await host.shutdown()
  _ = await serving.result
  if let storage = definition.store, storage.backend == .postgresql { await storage.close() }
  if let seed, !seeded {
    // Keep the seeded store for later runs.
    try FileManager.default.createDirectory(
      atPath: (seed as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    if let database {
      try psql(
        database.with(database: "postgres"),
        "ALTER DATABASE \(database.database) RENAME TO \(seedDatabase)")
      keep = true
      try Data(seedDatabase.utf8).write(to: URL(fileURLWithPath: seed))
    } else {
      try FileManager.default.copyItem(atPath: scratch + "/data", toPath: seed)
    }
    line("seeded store kept at \(seed)")
  }
  return figures
}

var stores: [BenchStore] = onlyOption == "postgresql" ? [] : [.sqlite]
if let server, onlyOption != "sqlite" { stores.append(.postgresql(server: server)) }
var results: [Figures] = []
for store in stores { results.append(try await run(on: store)) }
line(
  "\n== summary: \(resourceCount) resources "
    + "(\(ProcessInfo.processInfo.activeProcessorCount) cores)")
line(
  "".padding(toLength: 36, withPad: " ", startingAt: 0)
    + results.map { $0.store.padding(toLength: 36, withPad: " ", startingAt: 0) }.joined())
@MainActor func summaryRow(_ name: String, _ cell: (Figures) -> String) {
  line(
    name.padding(toLength: 36, withPad: " ", startingAt: 0)
      + results.map { cell($0).padding(toLength: 36, withPad: " ", startingAt: 0) }.joined())
}
summaryRow("RPC floor p50 (GetResource)") { String(format: "%.2f ms", $0.floorP50) }
summaryRow("curriculum import rows/s (again)") {
  String(format: "%.0f (%.0f)", $0.curriculumRate, $0.curriculumAgainRate)
}
summaryRow("create rate (8 callers), >= 0.5") {
  $0.getRate == 0
    ? "not measured (seeded store)"
    : String(
      format: "%.0f/s (GetResource %.0f/s, %.2f)", $0.createRate, $0.getRate,
      $0.createRate / $0.getRate)
}
for (i, row) in (results.first?.search ?? []).enumerated() {
  let target = row.name == "search 2-char, no filters" ? ", p95 < 25" : ", p50 < 20"
  summaryRow(row.name + target) {
    let r = $0.search[i]
    return String(format: "p50 %.1f p95 %.1f p99 %.1f (%d)", r.p50, r.p95, r.p99, r.hits)
  }
}
summaryRow("load average at the end") { $0.load }
if server == nil {
  line("PostgreSQL: skipped (no --database-url or SMARTSCHOOL_BENCH_DATABASE_URL)")
}
