@testable import CatalogueService
import Foundation
import GRDB
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import IdentityService
import Logging
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel
import TestSupport
import Testing

typealias IdentityClient = Smartschool_Identity_V1_IdentityService.Client<
  HTTP2ClientTransport.Posix
>
typealias CatalogueClient = Smartschool_Catalogue_V1_CatalogueService.Client<
  HTTP2ClientTransport.Posix
>
typealias Resource = Smartschool_Catalogue_V1_Resource

/// The test world: a real identity and a real catalogue, both in-process on ephemeral ports.
///
/// Org tree (built through identity's API): province P34 → city C3401 → county A (K340121)
/// with schools S-A1 (class CL-A1) and S-A2, and county B (K340122) with school S-B1.
/// Users (password "Secret-pass-1"): teachers tA1, tA1b (S-A1), tA2 (S-A2), tB1 (S-B1),
/// student sA1 (class CL-A1), reviewers revP (province), revA (county A), revB (county B),
/// revS (school S-A1), county admin adminA. The catalogue follows identity's tree with a
/// data-exchange service account at the province.
struct World: Sendable {
  let identity: IdentityClient
  /// One client per catalogue replica (several only on PostgreSQL: one database, each replica
  /// with a data directory of its own).
  let replicas: [CatalogueClient]
  var catalogue: CatalogueClient { replicas[0] }
  let directory: OrgDirectory
  let dataDirectory: String
  /// Tokens by user name ("admin" = the system admin, "exchange" = the service account).
  let tokens: [String: String]
  /// User ids by user name.
  let userIDs: [String: String]
  /// Starts one more catalogue replica on this world's store, as a (re)started process would
  /// (with a data directory of its own), serves it to `body`, then stops it.
  let launchReplica:
    @Sendable (CatalogueSettings, @Sendable (CatalogueClient) async throws -> Void) async throws
      -> Void

  func auth(_ user: String) -> Metadata { bearer(tokens[user]!) }
}

let testPassword = "Secret-pass-1"

/// Runs `body` against a fresh world with `replicas` catalogue services on one store.
func withWorld(
  settings: CatalogueSettings = .forTests(), replicas: Int = 1,
  _ body: @Sendable (World) async throws -> Void
) async throws {
  let dir = try TemporaryDirectory()
  defer { dir.remove() }
  try await withIdentity { identityPort, _ in
    try await withClient(port: identityPort) { identityClient in
      let identity = IdentityClient(wrapping: identityClient)
      let admin = try await login(identity, "admin", testAdminPassword)
      let auth = bearer(admin)
      func org(
        _ code: String, _ name: String, _ kind: Smartschool_Common_V1_OrgKind, _ parent: String,
        grade: Int32 = 0
      ) async throws {
        _ = try await identity.createOrg(
          .with {
            $0.org = .with {
              $0.code = code
              $0.name = name
              $0.kind = kind
              $0.parentCode = parent
              if kind == .school {
                $0.schoolKind = .urban
                $0.stages = [.primary, .junior]
              }
              if kind == .class {
                $0.grade = grade
                $0.schoolYear = "2020-2021"
              }
            }
          }, metadata: auth)
      }
      try await org("P34", "安徽省", .province, "")
      try await org("C3401", "合肥市", .city, "P34")
      try await org("K340121", "长丰县", .county, "C3401")
      try await org("K340122", "肥东县", .county, "C3401")
      try await org("S-A1", "长丰县第一中学", .school, "K340121")
      try await org("S-A2", "长丰县第二中学", .school, "K340121")
      try await org("S-B1", "肥东县第一中学", .school, "K340122")
      try await org("CL-A1", "七年级1班", .class, "S-A1", grade: 7)

      let people:
        [(String, Smartschool_Identity_V1_UserKind, String, Smartschool_Identity_V1_Role)] = [
          ("tA1", .teacher, "S-A1", .teacher), ("tA1b", .teacher, "S-A1", .teacher),
          ("tA2", .teacher, "S-A2", .teacher), ("tB1", .teacher, "S-B1", .teacher),
          ("sA1", .student, "CL-A1", .student), ("revP", .staff, "P34", .resourceReviewer),
          ("revA", .staff, "K340121", .resourceReviewer),
          ("revB", .staff, "K340122", .resourceReviewer),
          ("revS", .staff, "S-A1", .resourceReviewer),
          ("adminA", .staff, "K340121", .countyAdmin),
        ]
      var tokens: [String: String] = ["admin": admin]
      var ids: [String: String] = [:]
      for (name, kind, orgCode, role) in people {
        let user = try await identity.createUser(
          .with {
            $0.user = .with {
              $0.externalID = "ext-" + name
              $0.username = name
              $0.displayName = name
              $0.kind = kind
              $0.orgCode = orgCode
            }
            $0.initialPassword = initialPassword(for: testPassword)
          }, metadata: auth)
        _ = try await identity.grantRole(
          .with {
            $0.userID = user.id
            $0.role = role
            $0.orgCode = orgCode
          }, metadata: auth)
        ids[name] = user.id
        tokens[name] = try await firstLogin(identity, name, testPassword)
      }
      let account = try await identity.createServiceAccount(
        .with {
          $0.name = "catalogue-sync"
          $0.orgCode = "P34"
          $0.roles = [.dataExchange]
        }, metadata: auth)
      tokens["exchange"] = try await identity.exchangeClientCredentials(
        .with {
          $0.clientID = account.clientID
          $0.clientSecret = account.clientSecret
        }
      ).accessToken

      let link = try IdentityLink(
        address: PeerAddress(host: "127.0.0.1", port: identityPort),
        credentials: (account.clientID, account.clientSecret))
      defer { link.close() }
      let config = try await TestStore.config(service: "catalogue", directory: dir)
      var logger = Logger(label: "catalogue-test")
      logger.logLevel = .critical
      var definitions: [ServiceDefinition] = []
      var configs: [HostConfig] = []
      for replica in 0..<replicas {
        var replicaConfig = config
        if replica > 0 {
          replicaConfig.dataDirectory = dir.path + "/replica-\(replica)"
          try FileManager.default.createDirectory(
            atPath: replicaConfig.dataDirectory, withIntermediateDirectories: true)
        }
        let definition = try await buildCatalogueService(
          config: replicaConfig, settings: settings, verifier: link.makeVerifier(),
          identity: link, logger: logger)
        try await (definition.background.first as! OrgDirectory).sync()
        definitions.append(definition)
        configs.append(replicaConfig)
      }
      let directory = definitions[0].background.first as! OrgDirectory
      let frozenTokens = tokens
      let frozenIDs = ids
      let frozenConfigs = configs
      let frozenLogger = logger
      let launch:
        @Sendable (CatalogueSettings, @Sendable (CatalogueClient) async throws -> Void)
          async throws -> Void = { settings, body in
            var replicaConfig = config
            replicaConfig.dataDirectory = dir.path + "/replica-" + UUID().uuidString
            try FileManager.default.createDirectory(
              atPath: replicaConfig.dataDirectory, withIntermediateDirectories: true)
            let definition = try await buildCatalogueService(
              config: replicaConfig, settings: settings, verifier: link.makeVerifier(),
              identity: link, logger: frozenLogger)
            try await (definition.background.first as! OrgDirectory).sync()
            try await withHost(definition, config: replicaConfig) { port, _ in
              try await withClient(port: port) { try await body(CatalogueClient(wrapping: $0)) }
            }
          }
      func serve(_ rest: ArraySlice<ServiceDefinition>, _ clients: [CatalogueClient])
        async throws
      {
        guard let definition = rest.first else {
          return try await body(
            World(
              identity: identity, replicas: clients, directory: directory,
              dataDirectory: dir.path, tokens: frozenTokens, userIDs: frozenIDs,
              launchReplica: launch))
        }
        try await withHost(definition, config: frozenConfigs[clients.count]) { port, _ in
          try await withClient(port: port) { client in
            try await serve(rest.dropFirst(), clients + [CatalogueClient(wrapping: client)])
          }
        }
      }
      try await serve(definitions[...], [])
    }
  }
}

extension CatalogueSettings {
  /// Small limits so that tests exercise them: 64 KiB uploads, 1000-byte download chunks,
  /// content stored in 1536-byte chunks on PostgreSQL.
  static func forTests() -> CatalogueSettings {
    var s = CatalogueSettings()
    s.maxUploadBytes = 64 * 1024
    s.downloadChunkBytes = 1000
    s.contentChunkBytes = 1536
    s.directoryPollInterval = .seconds(3600)
    return s
  }
}

// MARK: Curriculum fixture

/// A small curriculum with known answers:
/// 人教版初中数学 (PEP-MATH-J): 七年级上册 (grade 7) with chapters M7-1 (section M7-1-1), M7-2,
/// M7-3; 九年级上册 (grade 9) with chapters M9-21, M9-22. 人教版小学语文 (PEP-CHN-P): 三年级上册
/// (grade 3) with chapters C3-1, C3-2. Knowledge points KP-RATIONAL (M7-1), KP-LINEAR (M7-3),
/// KP-QUAD-EQ (M9-21), KP-QUAD-FN (M9-22), KP-READ (C3-1).
func curriculumRows() -> [Smartschool_Catalogue_V1_ImportCurriculumRequest] {
  func node(
    _ code: String, _ parent: String, _ kind: Smartschool_Catalogue_V1_CurriculumNodeKind,
    _ name: String, stage: Smartschool_Common_V1_Stage = .unspecified, grade: Int32 = 0,
    subject: Smartschool_Common_V1_Subject = .unspecified, ordinal: Int32 = 0
  ) -> Smartschool_Catalogue_V1_ImportCurriculumRequest {
    .with {
      $0.node = .with {
        $0.code = code
        $0.parentCode = parent
        $0.kind = kind
        $0.name = name
        $0.stage = stage
        $0.grade = grade
        $0.subject = subject
        $0.ordinal = ordinal
      }
    }
  }
  func point(
    _ code: String, _ name: String, _ chapter: String, stage: Smartschool_Common_V1_Stage = .junior,
    subject: Smartschool_Common_V1_Subject = .mathematics
  ) -> Smartschool_Catalogue_V1_ImportCurriculumRequest {
    .with {
      $0.knowledgePoint = .with {
        $0.code = code
        $0.name = name
        $0.chapterCode = chapter
        $0.stage = stage
        $0.subject = subject
      }
    }
  }
  return [
    node("PEP-MATH-J", "", .edition, "人教版初中数学", stage: .junior, subject: .mathematics),
    node("PEP-MATH-7A", "PEP-MATH-J", .volume, "七年级上册", grade: 7, ordinal: 1),
    node("M7-1", "PEP-MATH-7A", .chapter, "第一章 有理数", ordinal: 1),
    node("M7-1-1", "M7-1", .section, "1.1 正数和负数", ordinal: 1),
    node("M7-2", "PEP-MATH-7A", .chapter, "第二章 整式的加减", ordinal: 2),
    node("M7-3", "PEP-MATH-7A", .chapter, "第三章 一元一次方程", ordinal: 3),
    node("PEP-MATH-9A", "PEP-MATH-J", .volume, "九年级上册", grade: 9, ordinal: 3),
    node("M9-21", "PEP-MATH-9A", .chapter, "第二十一章 一元二次方程", ordinal: 1),
    node("M9-22", "PEP-MATH-9A", .chapter, "第二十二章 二次函数", ordinal: 2),
    node("PEP-CHN-P", "", .edition, "人教版小学语文", stage: .primary, subject: .chinese),
    node("PEP-CHN-3A", "PEP-CHN-P", .volume, "三年级上册", grade: 3, ordinal: 1),
    node("C3-1", "PEP-CHN-3A", .chapter, "第一单元", ordinal: 1),
    node("C3-2", "PEP-CHN-3A", .chapter, "第二单元", ordinal: 2),
    point("KP-RATIONAL", "有理数的概念", "M7-1"),
    point("KP-LINEAR", "一元一次方程的解法", "M7-3"),
    point("KP-QUAD-EQ", "一元二次方程的解法", "M9-21"),
    point("KP-QUAD-FN", "二次函数的图像与性质", "M9-22"),
    point("KP-READ", "阅读理解", "C3-1", stage: .primary, subject: .chinese),
  ]
}

extension World {
  /// Imports ``curriculumRows()`` as the system admin.
  @discardableResult
  func importCurriculum(
    _ rows: [Smartschool_Catalogue_V1_ImportCurriculumRequest] = curriculumRows()
  )
    async throws -> Smartschool_Common_V1_ImportSummary
  {
    try await catalogue.importCurriculum(
      metadata: auth("admin"),
      requestProducer: { writer in try await writer.write(contentsOf: rows) })
  }

  /// Creates a resource as `user`.
  func create(
    _ user: String, _ title: String, type: Smartschool_Catalogue_V1_ResourceType = .courseware,
    chapter: String = "", stage: Smartschool_Common_V1_Stage = .junior, grade: Int32 = 0,
    subject: Smartschool_Common_V1_Subject = .mathematics,
    scope: Smartschool_Catalogue_V1_SharingScope = .school,
    keywords: [String] = [], description: String = "", points: [String] = [], owner: String = "",
    externalID: String = ""
  ) async throws -> Resource {
    try await catalogue.createResource(
      .with {
        $0.resource = .with {
          $0.title = title
          $0.type = type
          $0.chapterCode = chapter
          if chapter.isEmpty {
            $0.stage = stage
            $0.subject = subject
            $0.grade = grade
          }
          $0.sharingScope = scope
          $0.keywords = keywords
          $0.description_p = description
          $0.knowledgePointCodes = points
          $0.ownerOrgCode = owner
          $0.externalID = externalID
        }
      }, metadata: auth(user))
  }

  /// Moves a resource through a transition as `user`.
  @discardableResult
  func transition(
    _ id: String, _ action: Smartschool_Catalogue_V1_ReviewAction, by user: String,
    comment: String = ""
  ) async throws -> Resource {
    try await catalogue.transitionResource(
      .with {
        $0.id = id
        $0.action = action
        $0.comment = comment
      }, metadata: auth(user))
  }

  /// Submits a resource as `author`, first uploading a small lesson plan when it has no
  /// content (only a resource with content is submitted).
  @discardableResult
  func submit(_ id: String, by author: String) async throws -> Resource {
    let r = try await catalogue.getResource(.with { $0.id = id }, metadata: auth(author))
    if r.content.sizeBytes == 0 { _ = try await upload(author, id, Data("教案 \(id)".utf8)) }
    return try await transition(id, .submit, by: author)
  }

  /// Submits as the author (with content) and approves as `reviewer`.
  @discardableResult
  func publish(_ r: Resource, author: String, reviewer: String) async throws -> Resource {
    try await submit(r.id, by: author)
    return try await transition(r.id, .approve, by: reviewer)
  }

  /// Creates and publishes a resource.
  func published(
    _ user: String, _ title: String, reviewer: String,
    type: Smartschool_Catalogue_V1_ResourceType = .courseware, chapter: String = "",
    scope: Smartschool_Catalogue_V1_SharingScope = .school, keywords: [String] = [],
    description: String = "", points: [String] = [], grade: Int32 = 0,
    subject: Smartschool_Common_V1_Subject = .mathematics
  ) async throws -> Resource {
    let stage: Smartschool_Common_V1_Stage = grade > 0 ? .of(grade: Int(grade))! : .junior
    let r = try await create(
      user, title, type: type, chapter: chapter, stage: stage, grade: grade, subject: subject,
      scope: scope, keywords: keywords, description: description, points: points)
    return try await publish(r, author: user, reviewer: reviewer)
  }

  /// Ids of every resource `user` finds with `filter` (all pages).
  func listIDs(
    _ user: String, _ filter: Smartschool_Catalogue_V1_ResourceFilter = .init(),
    pageSize: Int32 = 0
  ) async throws -> [String] {
    var ids: [String] = []
    var token = ""
    repeat {
      let page = try await catalogue.listResources(
        .with {
          $0.filter = filter
          $0.pageSize = pageSize
          $0.pageToken = token
        }, metadata: auth(user))
      ids += page.resources.map(\.id)
      token = page.nextPageToken
    } while !token.isEmpty
    return ids
  }

  /// Titles `user` finds for `query` (first page of 1000).
  func searchTitles(
    _ user: String, _ query: String, _ filter: Smartschool_Catalogue_V1_ResourceFilter = .init()
  ) async throws -> [String] {
    try await catalogue.searchResources(
      .with {
        $0.query = query
        $0.filter = filter
        $0.pageSize = 1000
      }, metadata: auth(user)
    ).hits.map(\.resource.title)
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

/// The field violations an INVALID_ARGUMENT carries in google.rpc.BadRequest.
func fieldViolations(_ body: () async throws -> Void) async -> [String] {
  guard let error = await rpcError(body), error.code == .invalidArgument,
    let status = try? error.unpackGoogleRPCStatus()
  else { return [] }
  return status.details.compactMap(\.badRequest).flatMap { $0.violations.map(\.field) }
}

/// The catalogue store of this run (SQLite under `directory`, or a PostgreSQL database named
/// after it), opened directly for store-level tests; `recentLimit` is SQLite's (documents whose
/// postings are read from their text until a merge writes them).
func openCatalogueStore(
  _ directory: TemporaryDirectory, recentLimit: Int = SQLiteCatalogueStore.defaultRecentLimit
) async throws -> any CatalogueStore {
  guard let database = try await TestStore.database(named: "catalogue_" + directory.path) else {
    return try SQLiteCatalogueStore(directory: directory.path, recentLimit: recentLimit)
  }
  var quiet = Logger(label: "catalogue")
  quiet.logLevel = .critical
  return PostgresCatalogueStore(
    store: try await PostgresStore(
      settings: database, migrations: CatalogueMigrations.postgres, logger: quiet))
}

extension World {
  /// Sets a resource's status straight in the store, past every rule (data from before a
  /// rule existed).
  func setStatusInStore(_ id: String, _ status: Smartschool_Catalogue_V1_ResourceStatus)
    async throws
  {
    if let database = try await TestStore.database(named: "catalogue_" + dataDirectory) {
      var quiet = Logger(label: "catalogue")
      quiet.logLevel = .critical
      let store = try await PostgresStore(
        settings: database, migrations: CatalogueMigrations.postgres, logger: quiet)
      do {
        try await store.write { tx in
          try await tx.execute(
            "UPDATE resources SET status = \(status.rawValue) WHERE id = \(id)")
        }
      } catch {
        await store.close()
        throw error
      }
      await store.close()
    } else {
      let db = try DatabaseQueue(path: dataDirectory + "/catalogue.sqlite")
      try await db.write { db in
        try db.execute(
          sql: "UPDATE resources SET status = ? WHERE id = ?", arguments: [status.rawValue, id])
      }
      try db.close()
    }
  }
}
