import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import ServiceRuntime
import SmartSchoolModel
import SupervisionService
import SwiftProtobuf
import Testing
import TestSupport

/// A fake identity change feed: a fixed list of org and user changes.
struct FakeIdentityFeed: IdentityChangeSource {
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

/// Builds an org tree and teachers for the fake feed.
struct TreeBuilder {
  var changes: [Smartschool_Common_V1_Change] = []
  var paths: [String: String] = [:]  // code → path
  var ids: [String: String] = [:]  // code → id

  mutating func add(
    _ code: String, _ kind: Smartschool_Common_V1_OrgKind, parent: String?,
    schoolKind: Smartschool_Common_V1_SchoolKind = .unspecified
  ) {
    let id = "id-" + code
    let parentPath = parent.map { paths[$0]! } ?? "/"
    let path = parentPath + id + "/"
    paths[code] = path
    ids[code] = id
    let org = Smartschool_Identity_V1_Org.with {
      $0.id = id
      $0.code = code
      $0.name = "Org " + code
      $0.kind = kind
      $0.parentID = parent.map { ids[$0]! } ?? ""
      $0.parentCode = parent ?? ""
      $0.path = path
      $0.schoolKind = schoolKind
      $0.active = true
    }
    append(entity: "org", id: id, key: code, path: path, payload: org)
  }

  mutating func teacher(_ externalID: String, at orgCode: String, birthYear: Int) {
    let user = Smartschool_Identity_V1_User.with {
      $0.id = "u-" + externalID
      $0.externalID = externalID
      $0.username = externalID
      $0.displayName = "Teacher " + externalID
      $0.kind = .teacher
      $0.orgID = ids[orgCode]!
      $0.orgCode = orgCode
      $0.orgPath = paths[orgCode]!
      $0.birthYear = Int32(birthYear)
      $0.status = .active
    }
    append(entity: "user", id: user.id, key: externalID, path: paths[orgCode]!, payload: user)
  }

  private mutating func append(
    entity: String, id: String, key: String, path: String, payload: any SwiftProtobuf.Message
  ) {
    let sequence = Int64(changes.count + 1)
    var change = Smartschool_Common_V1_Change()
    change.sequence = sequence
    change.entity = entity
    change.id = id
    change.naturalKey = key
    change.op = .upsert
    change.orgPath = path
    change.payload = try! Google_Protobuf_Any(message: payload)
    changes.append(change)
  }
}

/// The standard test world: province P → city C → counties CA and CB; county CA has a
/// teaching point A1 (with class A1-1), a rural school A2 and an urban school A3; county CB
/// has school B1. Teachers: T1 (born 1976) and T2 (born 1975) at A1, T3 at B1 (unknown age).
func standardTree() -> TreeBuilder {
  var t = TreeBuilder()
  t.add("P", .province, parent: nil)
  t.add("C", .city, parent: "P")
  t.add("CA", .county, parent: "C")
  t.add("CB", .county, parent: "C")
  t.add("A1", .school, parent: "CA", schoolKind: .teachingPoint)
  t.add("A1-1", .class, parent: "A1")
  t.add("A2", .school, parent: "CA", schoolKind: .rural)
  t.add("A3", .school, parent: "CA", schoolKind: .urban)
  t.add("B1", .school, parent: "CB", schoolKind: .rural)
  t.teacher("T1", at: "A1", birthYear: 1976)
  t.teacher("T2", at: "A1", birthYear: 1975)
  t.teacher("T3", at: "B1", birthYear: 0)
  return t
}

typealias SupervisionClient = Smartschool_Supervision_V1_SupervisionService.Client<
  HTTP2ClientTransport.Posix
>

/// A real supervision server on 127.0.0.1 (ephemeral port) with a token signer.
final class Harness: Sendable {
  let tree: TreeBuilder
  let host: ServiceHost
  let directory: OrgDirectory
  let signer: TokenSigner
  let port: Int
  let dataDirectory: TemporaryDirectory
  let task: Task<Void, any Error>

  /// A server on this run's store (SQLite, or PostgreSQL with SMARTSCHOOL_TEST_DATABASE_URL).
  /// Giving `data` (the `dataDirectory`) of another harness serves its data (a replica, on
  /// PostgreSQL), and giving its `key` makes both accept the same tokens. `lessonBatch` sets
  /// the lessons per import transaction (nil: the default); `unknownTeachers` what an import
  /// does with lessons by teachers the tree does not hold; `usageReads` lets a test switch
  /// the reports to counting the lessons.
  init(
    tree: TreeBuilder = standardTree(), data: TemporaryDirectory? = nil,
    key: Curve25519.Signing.PrivateKey = .init(), lessonBatch: Int? = nil,
    unknownTeachers: UnknownTeacherLessons = .hold, usageReads: UsageReads = UsageReads()
  ) async throws {
    self.tree = tree
    signer = TokenSigner(keyID: "k1", key: key)
    let publicKey = key.publicKey
    let verifier = TokenVerifier(keySource: {
      [PublishedKey(keyID: "k1", publicKey: publicKey, retireTime: nil)]
    })
    dataDirectory = try data ?? TemporaryDirectory()
    let config = try await TestStore.config(service: "supervision", directory: dataDirectory)
    var settings = SupervisionSettings()
    settings.directoryPollInterval = .seconds(3600)
    if let lessonBatch { settings.lessonBatch = lessonBatch }
    settings.unknownTeacherLessons = unknownTeachers
    settings.usageReads = usageReads
    var logger = Logger(label: "supervision-test")
    logger.logLevel = .critical
    let definition = try await buildSupervisionService(
      config: config, settings: settings, verifier: verifier,
      identity: FakeIdentityFeed(changes: tree.changes), logger: logger)
    directory = definition.background.first as! OrgDirectory
    try await directory.sync()
    host = try ServiceHost(config: config, definition: definition, logger: logger)
    let host = self.host
    task = Task { try await host.run(handleSignals: false) }
    port = try await host.boundPort()
  }

  func stop() async {
    await host.shutdown()
    _ = try? await task.value
    if let store = host.definition.store, store.backend == .postgresql { await store.close() }
    dataDirectory.remove()
  }

  /// Metadata with a token for `role` held at the org `code` (nil = root, system admin).
  func auth(_ role: String, at code: String?) -> Metadata {
    let now = Int64(Date().timeIntervalSince1970)
    let claims = AccessTokenClaims(
      iss: smartSchoolTokenIssuer, sub: "user-\(role)-\(code ?? "root")",
      usr: "\(role)@\(code ?? "root")",
      knd: "staff", sid: "s1", iat: now, exp: now + 600,
      rol: [
        .init(r: role, o: code.map { tree.ids[$0]! } ?? "", p: code.map { tree.paths[$0]! } ?? "/")
      ])
    let token = try! signer.sign(claims)
    return ["authorization": "Bearer \(token)"]
  }

  /// Runs `body` with a client of this server, then stops the server.
  func run(_ body: @Sendable (SupervisionClient) async throws -> Void) async throws {
    do {
      try await withGRPCClient(
        transport: .http2NIOPosix(
          target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
      ) { client in
        try await body(SupervisionClient(wrapping: client))
      }
    } catch {
      await stop()
      throw error
    }
    await stop()
  }
}

/// Expects `body` to fail with the gRPC status `code`.
func expectCode<T>(
  _ code: RPCError.Code, sourceLocation: SourceLocation = #_sourceLocation,
  _ body: () async throws -> T
) async {
  do {
    _ = try await body()
    Issue.record("expected \(code), got success", sourceLocation: sourceLocation)
  } catch let error as RPCError {
    #expect(error.code == code, "\(error.message)", sourceLocation: sourceLocation)
  } catch {
    Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
  }
}

func lesson(
  _ classroom: String, _ date: String, _ period: Int32, subject: Smartschool_Common_V1_Subject,
  teacher: String = "T1", minutes: Int32 = 40
) -> Smartschool_Supervision_V1_Lesson {
  .with {
    $0.classroomCode = classroom
    $0.teacherExternalID = teacher
    $0.subject = subject
    $0.date = date
    $0.period = period
    $0.durationMinutes = minutes
    $0.source = .platform
  }
}

/// The lessons of the seed term under the org `code`, as ListLessons streams them.
func termLessons(_ client: SupervisionClient, under code: String, _ metadata: Metadata)
  async throws -> [Smartschool_Supervision_V1_Lesson]
{
  try await client.listLessons(
    .with {
      $0.orgCode = code
      $0.fromDate = "2020-09-01"
      $0.toDate = "2020-12-31"
    }, metadata: metadata
  ) { response in
    var out: [Smartschool_Supervision_V1_Lesson] = []
    for try await l in response.messages { out.append(l) }
    return out
  }
}
