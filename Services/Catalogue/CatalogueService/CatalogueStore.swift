import Foundation
import GRDB
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf

typealias Resource = Smartschool_Catalogue_V1_Resource
typealias CurriculumNode = Smartschool_Catalogue_V1_CurriculumNode
typealias KnowledgePoint = Smartschool_Catalogue_V1_KnowledgePoint
typealias Transition = Smartschool_Catalogue_V1_Transition
typealias ResourceStats = Smartschool_Catalogue_V1_ResourceStats
typealias ContentInfo = Smartschool_Catalogue_V1_ContentInfo

/// A resource as stored: the message plus what visibility and paging need.
struct StoredResource: Sendable {
  /// Insertion order; the list sort key and the FTS rowid.
  var seq: Int64
  var resource: Resource
  /// The owner's ancestor at the sharing level.
  var reach: OrgPath

  var owner: OrgPath { OrgPath(resource.ownerOrgPath) ?? .root }
}

/// List filters after validation and resolution of codes.
struct ResolvedFilter: Sendable, Hashable {
  var stage: Int?
  var grade: Int?
  var subject: Int?
  var types: [Int] = []
  var editionCode: String?
  /// A chapter: matches resources of the chapter and its sections.
  var chapterCode: String?
  /// A section: matches resources of that section only.
  var sectionCode: String?
  var ownerSubtree: OrgPath?
  var status: Int?
  var knowledgePoint: String?
  var authorID: String?
}

/// One curriculum import row, already checked for field-level errors.
enum CurriculumRow: Sendable {
  case node(CurriculumNode)
  case knowledgePoint(KnowledgePoint)

  var code: String {
    switch self {
    case .node(let n): n.code
    case .knowledgePoint(let k): k.code
    }
  }
}

/// Result of applying one import batch.
struct BatchResult: Sendable {
  var created = 0
  var updated = 0
  var errors: [Smartschool_Common_V1_RowError] = []
}

/// One page of search results with the facets of the whole matching set.
struct SearchPage: Sendable {
  var hits: [(resource: StoredResource, relevance: Double)]
  var total: Int
  /// (subject, grade, type) → count over the whole matching set.
  var groups: [(subject: Int, grade: Int, type: Int, count: Int)]
}

/// A usage event to record.
struct UsageEvent: Sendable {
  var kind: Smartschool_Catalogue_V1_UsageKind
  var stars: Int
  var userID: String
  var userPath: String
  var time: Date
}

/// Every SQL statement of the catalogue, behind a protocol so a PostgreSQL store can stand
/// beside the SQLite one.
protocol CatalogueStore: Sendable {
  /// The backend-neutral storage (change feed, org directory) the Runtime uses.
  var storage: any ServiceStorage { get }

  // Curriculum
  func curriculumNode(code: String) async throws -> CurriculumNode?
  func knowledgePoints(codes: [String]) async throws -> [KnowledgePoint]
  func importCurriculum(_ rows: [(index: Int, row: CurriculumRow)], orgPath: String)
    async throws -> BatchResult
  func listCurriculum(
    editionCode: String?, parentCode: String?, kind: Int?, afterCode: String?, limit: Int
  ) async throws -> [CurriculumNode]
  func listKnowledgePoints(
    stage: Int?, subject: Int?, chapterCode: String?, afterCode: String?, limit: Int
  ) async throws -> [KnowledgePoint]
  func chapters(editionCode: String?, stage: Int?, subject: Int?) async throws -> [ChapterRef]
  func coveredChapters(viewer: Viewer, editionCode: String?, stage: Int?, subject: Int?)
    async throws -> Set<String>

  // Resources
  func insertResource(_ resource: Resource, reach: OrgPath, topChapter: String?) async throws
    -> StoredResource
  func resource(id: String) async throws -> StoredResource?
  func resource(externalID: String) async throws -> StoredResource?
  func updateResource(seq: Int64, _ resource: Resource, reach: OrgPath, topChapter: String?)
    async throws -> StoredResource
  /// Moves the resource from `from` to `to` and records the transition, provided it is still
  /// in `from` at `reach` (the reach the caller's rights were checked against): a resource
  /// withdrawn, widened and resubmitted meanwhile is FAILED_PRECONDITION.
  func transition(
    seq: Int64, reach: OrgPath, action: ReviewAction, from: ResourceStatus, to: ResourceStatus,
    actorID: String, actorName: String, comment: String
  ) async throws -> StoredResource
  func deleteResource(seq: Int64) async throws
  func listResources(filter: ResolvedFilter, viewer: Viewer, beforeSeq: Int64?, limit: Int)
    async throws -> [StoredResource]
  func search(query: SearchQuery, filter: ResolvedFilter, viewer: Viewer, offset: Int, limit: Int)
    async throws -> SearchPage
  func transitions(resourceSeq: Int64, afterSeq: Int64?, limit: Int) async throws -> [Transition]
  func setContent(seq: Int64, _ content: ContentInfo) async throws -> StoredResource

  // Usage and recommendations
  func recordUsage(seq: Int64, _ event: UsageEvent) async throws -> ResourceStats
  func popular(scope: OrgPath, start: Date?, end: Date?, filter: ResolvedFilter, limit: Int)
    async throws -> [(resource: StoredResource, usage: Ranking.PeriodUsage)]
  func recommendationCandidates(
    codes: [String], filter: ResolvedFilter, viewer: Viewer, limit: Int
  ) async throws -> [(resource: StoredResource, matched: [String])]

  // Change feed
  func changes(after: Int64, limit: Int, scopes: [OrgPath]) async throws
    -> (changes: [Smartschool_Common_V1_Change], hasMore: Bool)
}

/// The SQLite catalogue store (one GRDB pool, WAL).
final class SQLiteCatalogueStore: CatalogueStore {
  let store: Store
  var storage: any ServiceStorage { store }
  /// Documents whose postings the search index reads from their text before moving them into
  /// a segment (see SearchIndexStore.swift).
  let recentLimit: Int

  init(store: Store, recentLimit: Int = SQLiteCatalogueStore.defaultRecentLimit) {
    self.store = store
    self.recentLimit = max(1, recentLimit)
    // The writer's connection: a create dirties pages all over the postings B-tree, which
    // outgrows SQLite's default 2 MB cache at district size, and every checkpoint writes each
    // page it finds in the WAL back to the file and syncs both; a checkpoint every 8,000
    // pages instead of 1,000 writes a page touched by many creates back once for all of them.
    try? store.pool.writeWithoutTransaction { db in
      try db.execute(sql: "PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 8000")
    }
  }

  /// Opens `<directory>/catalogue.sqlite`.
  convenience init(
    directory: String, recentLimit: Int = SQLiteCatalogueStore.defaultRecentLimit
  ) throws {
    self.init(
      store: try Store(
        directory: directory, name: "catalogue", migrations: CatalogueMigrations.register),
      recentLimit: recentLimit)
  }

  // MARK: Row mapping

  static let columns = """
    r.seq, r.id, r.external_id, r.title, r.description, r.keywords, r.type, r.stage, r.grade,
    r.subject, r.edition_code, r.chapter_code, r.knowledge_points, r.author_id, r.author_name,
    r.owner_org_id, r.owner_org_code, r.owner_path, r.reach_path, r.sharing_scope, r.licence,
    r.status, r.review_comment, r.content_size, r.content_mime, r.content_sha256, r.content_name,
    r.content_time, r.views, r.downloads, r.favourites, r.rating_count, r.rating_sum,
    r.popularity, r.created_at, r.updated_at, r.published_at
    """

  static func decode(_ row: Row) -> StoredResource {
    var r = Resource()
    r.id = row["id"]
    r.externalID = row["external_id"] ?? ""
    r.title = row["title"]
    r.description_p = row["description"]
    r.keywords = split(row["keywords"])
    r.type = .init(rawValue: row["type"]) ?? .unspecified
    r.stage = .init(rawValue: row["stage"]) ?? .unspecified
    r.grade = row["grade"]
    r.subject = .init(rawValue: row["subject"]) ?? .unspecified
    r.editionCode = row["edition_code"] ?? ""
    r.chapterCode = row["chapter_code"] ?? ""
    r.knowledgePointCodes = split(row["knowledge_points"])
    r.authorID = row["author_id"]
    r.authorName = row["author_name"]
    r.ownerOrgID = row["owner_org_id"]
    r.ownerOrgCode = row["owner_org_code"]
    r.ownerOrgPath = row["owner_path"]
    r.sharingScope = .init(rawValue: row["sharing_scope"]) ?? .unspecified
    r.licence = row["licence"]
    r.status = .init(rawValue: row["status"]) ?? .unspecified
    r.reviewComment = row["review_comment"]
    if let size: Int64 = row["content_size"] {
      r.content = .with {
        $0.sizeBytes = size
        $0.mimeType = row["content_mime"] ?? ""
        $0.sha256 = row["content_sha256"] ?? ""
        $0.fileName = row["content_name"] ?? ""
        $0.uploadTime = timestamp(row["content_time"] ?? 0)
      }
    }
    r.stats = stats(row)
    r.createTime = timestamp(row["created_at"])
    r.updateTime = timestamp(row["updated_at"])
    if let published: Double = row["published_at"] { r.publishTime = timestamp(published) }
    return StoredResource(
      seq: row["seq"], resource: r, reach: OrgPath(row["reach_path"] as String) ?? .root)
  }

  static func stats(_ row: Row) -> ResourceStats {
    let count: Int64 = row["rating_count"]
    let sum: Int64 = row["rating_sum"]
    return .with {
      $0.resourceID = row["id"]
      $0.views = row["views"]
      $0.downloads = row["downloads"]
      $0.favourites = row["favourites"]
      $0.ratingCount = count
      $0.ratingAverage = count > 0 ? Double(sum) / Double(count) : 0
      $0.popularity = row["popularity"]
    }
  }

  static func timestamp(_ seconds: Double) -> Google_Protobuf_Timestamp {
    Google_Protobuf_Timestamp(date: Date(timeIntervalSince1970: seconds))
  }

  static func split(_ text: String) -> [String] {
    text.isEmpty
      ? [] : text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
  }

  static func decodeNode(_ row: Row) -> CurriculumNode {
    .with {
      $0.code = row["code"]
      $0.parentCode = row["parent_code"] ?? ""
      $0.kind = .init(rawValue: row["kind"]) ?? .unspecified
      $0.name = row["name"]
      $0.stage = .init(rawValue: row["stage"]) ?? .unspecified
      $0.grade = row["grade"]
      $0.subject = .init(rawValue: row["subject"]) ?? .unspecified
      $0.ordinal = row["ordinal"]
      $0.editionCode = row["edition_code"]
    }
  }

  static func decodeKnowledgePoint(_ row: Row) -> KnowledgePoint {
    .with {
      $0.code = row["code"]
      $0.name = row["name"]
      $0.stage = .init(rawValue: row["stage"]) ?? .unspecified
      $0.subject = .init(rawValue: row["subject"]) ?? .unspecified
      $0.chapterCode = row["chapter_code"] ?? ""
    }
  }

  // MARK: Conditions

  /// SQL conditions joined with AND, and their arguments.
  struct Conditions {
    var clauses: [String] = []
    var arguments: [any DatabaseValueConvertible] = []

    mutating func add(_ clause: String, _ args: [any DatabaseValueConvertible] = []) {
      clauses.append(clause)
      arguments += args
    }

    var sql: String { clauses.isEmpty ? "1" : clauses.joined(separator: " AND ") }
  }

  static func placeholders(_ n: Int) -> String {
    Array(repeating: "?", count: n).joined(separator: ", ")
  }

  /// The filter conditions on `resources r`.
  static func add(_ f: ResolvedFilter, to c: inout Conditions) {
    c.add("r.deleted_at IS NULL")
    if let v = f.stage { c.add("r.stage = ?", [v]) }
    if let v = f.grade { c.add("r.grade = ?", [v]) }
    if let v = f.subject { c.add("r.subject = ?", [v]) }
    if f.types.count == 1 {
      c.add("r.type = ?", [f.types[0]])
    } else if !f.types.isEmpty {
      c.add("r.type IN (\(placeholders(f.types.count)))", f.types)
    }
    if let v = f.editionCode { c.add("r.edition_code = ?", [v]) }
    if let v = f.chapterCode { c.add("r.top_chapter_code = ?", [v]) }
    if let v = f.sectionCode { c.add("r.chapter_code = ?", [v]) }
    if let p = f.ownerSubtree {
      let range = Visibility.range(of: p)
      c.add("r.owner_path >= ? AND r.owner_path < ?", [range.lower, range.upper])
    }
    if let v = f.status { c.add("r.status = ?", [v]) }
    if let v = f.knowledgePoint {
      c.add(
        "r.seq IN (SELECT resource_seq FROM resource_knowledge_points WHERE code = ?)", [v])
    }
    if let v = f.authorID { c.add("r.author_id = ?", [v]) }
  }

  /// The visibility condition of ``Visibility/canSee(status:authorID:owner:reach:viewer:)``.
  static func add(_ viewer: Viewer, to c: inout Conditions) {
    var any: [String] = []
    var args: [any DatabaseValueConvertible] = []
    if !viewer.userID.isEmpty {
      any.append("r.author_id = ?")
      args.append(viewer.userID)
    }
    if !viewer.readScopes.isEmpty {
      var published: [String] = []
      let reaches = Set(viewer.readScopes.flatMap(Visibility.prefixes(of:)).map(\.description))
        .sorted()
      if !reaches.isEmpty {
        published.append("r.reach_path IN (\(placeholders(reaches.count)))")
        args += reaches
      }
      for scope in viewer.readScopes {
        let range = Visibility.range(of: scope)
        published.append("(r.owner_path >= ? AND r.owner_path < ?)")
        args += [range.lower, range.upper]
      }
      any.append("(r.status = 3 AND (" + published.joined(separator: " OR ") + "))")
    }
    if !viewer.reviewScopes.isEmpty {
      let ranges = viewer.reviewScopes.map { scope -> String in
        let range = Visibility.range(of: scope)
        args += [range.lower, range.upper]
        return "(r.owner_path >= ? AND r.owner_path < ?)"
      }
      any.append("(r.status IN (2, 3, 4) AND (" + ranges.joined(separator: " OR ") + "))")
    }
    if any.isEmpty {
      c.add("0")
    } else {
      c.add("(" + any.joined(separator: " OR ") + ")", args)
    }
  }

  /// The visibility condition of ``add(_:to:)`` as disjoint arms whose union is the visible
  /// set (empty: nothing is visible), for queries that count or rank every visible resource:
  /// published resources whose reach is a prefix of a read scope; published resources whose
  /// reach lies below a read scope (the same as owned within it, since a reach is always the
  /// owner or one of its ancestors); the caller's own resources not already counted; what
  /// the caller reviews, not already counted. The published arms name only columns of the
  /// covering index resources_visible.
  static func visibleArms(_ viewer: Viewer) -> [Conditions] {
    var arms: [Conditions] = []
    // The published arms as one condition, to leave them out of the later arms.
    var published = Conditions()
    if !viewer.readScopes.isEmpty {
      let reaches = Set(viewer.readScopes.flatMap(Visibility.prefixes(of:)).map(\.description))
        .sorted()
      let list = "(\(placeholders(reaches.count)))"
      var shared = Conditions()
      shared.add("r.status = 3 AND r.reach_path IN \(list)", reaches)
      arms.append(shared)
      var any = ["r.reach_path IN \(list)"]
      var anyArguments: [any DatabaseValueConvertible] = reaches
      // Scopes no other scope covers: their subtrees are disjoint.
      let scopes = Set(viewer.readScopes)
      for scope in scopes.sorted(by: { $0.description < $1.description })
      where !scopes.contains(where: { $0 != scope && $0.covers(scope) }) {
        let range = Visibility.range(of: scope)
        var below = Conditions()
        below.add(
          "r.status = 3 AND r.reach_path > ? AND r.reach_path < ? AND r.reach_path NOT IN \(list)",
          [range.lower, range.upper] + reaches)
        arms.append(below)
        any.append("(r.reach_path > ? AND r.reach_path < ?)")
        anyArguments += [range.lower, range.upper]
      }
      published.add("(r.status = 3 AND (" + any.joined(separator: " OR ") + "))", anyArguments)
    }
    if !viewer.userID.isEmpty {
      var own = Conditions()
      own.add("r.author_id = ?", [viewer.userID])
      if !published.clauses.isEmpty { own.add("NOT " + published.sql, published.arguments) }
      arms.append(own)
    }
    if !viewer.reviewScopes.isEmpty {
      var reviewed = Conditions()
      var args: [any DatabaseValueConvertible] = []
      let ranges = viewer.reviewScopes.map { scope -> String in
        let range = Visibility.range(of: scope)
        args += [range.lower, range.upper]
        return "(r.owner_path >= ? AND r.owner_path < ?)"
      }
      reviewed.add(
        "r.status IN (2, 3, 4) AND (" + ranges.joined(separator: " OR ") + ")", args)
      if !published.clauses.isEmpty {
        reviewed.add("NOT " + published.sql, published.arguments)
      }
      if !viewer.userID.isEmpty { reviewed.add("r.author_id <> ?", [viewer.userID]) }
      arms.append(reviewed)
    }
    return arms
  }

  // MARK: Curriculum

  func curriculumNode(code: String) async throws -> CurriculumNode? {
    try await store.read { db in
      try db.cachedStatement(sql: "SELECT * FROM curriculum_nodes WHERE code = ?").decodeFirst(
        arguments: [code], Self.decodeNode)
    }
  }

  func knowledgePoints(codes: [String]) async throws -> [KnowledgePoint] {
    if codes.isEmpty { return [] }
    return try await store.read { db in
      try Row.fetchAll(
        db,
        sql: "SELECT * FROM knowledge_points WHERE code IN (\(Self.placeholders(codes.count)))",
        arguments: StatementArguments(codes)
      ).map(Self.decodeKnowledgePoint)
    }
  }

  func importCurriculum(_ rows: [(index: Int, row: CurriculumRow)], orgPath: String)
    async throws -> BatchResult
  {
    try await store.write { db in
      var result = BatchResult()
      let now = Date()
      for (index, row) in rows {
        do {
          let created: Bool
          switch row {
          case .node(let node): created = try Self.upsert(node, db: db, now: now, orgPath: orgPath)
          case .knowledgePoint(let kp):
            created = try Self.upsert(kp, db: db, now: now, orgPath: orgPath)
          }
          if created { result.created += 1 } else { result.updated += 1 }
        } catch let error as RowProblem {
          result.errors.append(.row(index, key: row.code, field: error.field, error.reason))
        }
      }
      return result
    }
  }

  /// A row the import rejects.
  struct RowProblem: Error {
    var field: String
    var reason: String
  }

  /// Where an import row's node sits, from its parent (nil for an edition): stage, grade and
  /// subject as stored, its edition and chapter; RowProblem when the row does not fit.
  struct NodePlacement {
    var stage: Smartschool_Common_V1_Stage
    var grade: Int
    var subject: Smartschool_Common_V1_Subject
    var edition: String
    var chapter: String?

    init(_ node: CurriculumNode, parent: CurriculumNode?) throws {
      stage = node.stage
      grade = Int(node.grade)
      subject = node.subject
      edition = node.code
      chapter = nil
      let kindName = CatalogueNames.name(node.kind)
      if node.kind == .edition {
        if !node.parentCode.isEmpty {
          throw RowProblem(field: "node.parent_code", reason: "an edition has no parent")
        }
        if grade != 0 { throw RowProblem(field: "node.grade", reason: "an edition has no grade") }
        return
      }
      guard let parent else {
        throw RowProblem(
          field: "node.parent_code",
          reason: "unknown parent '\(node.parentCode)' (parents come first)")
      }
      let expected: Smartschool_Catalogue_V1_CurriculumNodeKind =
        switch node.kind {
        case .volume: .edition
        case .chapter: .volume
        default: .chapter
        }
      guard parent.kind == expected else {
        throw RowProblem(
          field: "node.parent_code",
          reason: "a \(kindName)'s parent must be a \(CatalogueNames.name(expected)), "
            + "not a \(CatalogueNames.name(parent.kind))")
      }
      if stage != .unspecified && stage != parent.stage {
        throw RowProblem(field: "node.stage", reason: "differs from the parent's stage")
      }
      if subject != .unspecified && subject != parent.subject {
        throw RowProblem(field: "node.subject", reason: "differs from the parent's subject")
      }
      stage = parent.stage
      subject = parent.subject
      edition = parent.editionCode
      if node.kind == .volume {
        guard stage.grades.contains(grade) else {
          throw RowProblem(
            field: "node.grade",
            reason: "a volume needs a grade of its stage "
              + "(\(stage.grades.lowerBound)-\(stage.grades.upperBound))")
        }
      } else {
        if grade != 0 && grade != Int(parent.grade) {
          throw RowProblem(field: "node.grade", reason: "differs from the parent's grade")
        }
        grade = Int(parent.grade)
        chapter = node.kind == .chapter ? node.code : parent.code
      }
    }

    /// Refuses a row that would change what a node's code means; false when the row changes
    /// nothing (name and ordinal as stored).
    func changes(_ existing: CurriculumNode, to node: CurriculumNode) throws -> Bool {
      guard existing.kind == node.kind else {
        throw RowProblem(
          field: "node.kind",
          reason: "code '\(node.code)' is a \(CatalogueNames.name(existing.kind))")
      }
      guard existing.parentCode == node.parentCode else {
        throw RowProblem(field: "node.parent_code", reason: "a node cannot move to another parent")
      }
      guard existing.stage == stage, existing.subject == subject, Int(existing.grade) == grade
      else {
        throw RowProblem(
          field: "node.stage", reason: "stage, grade and subject of a node cannot change")
      }
      return existing.name != node.name || existing.ordinal != node.ordinal
    }
  }

  /// Refuses a knowledge point whose chapter (looked up by its code) does not fit it.
  static func check(_ kp: KnowledgePoint, chapter: CurriculumNode?) throws {
    if kp.chapterCode.isEmpty { return }
    guard let chapter else {
      throw RowProblem(
        field: "knowledge_point.chapter_code", reason: "unknown chapter '\(kp.chapterCode)'")
    }
    guard chapter.kind == .chapter || chapter.kind == .section else {
      throw RowProblem(
        field: "knowledge_point.chapter_code", reason: "must name a chapter or section")
    }
    guard chapter.stage == kp.stage, chapter.subject == kp.subject else {
      throw RowProblem(
        field: "knowledge_point.chapter_code",
        reason: "the chapter's stage and subject differ from the knowledge point's")
    }
  }

  /// Inserts or updates a node; true when created, false when it existed.
  static func upsert(_ node: CurriculumNode, db: Database, now: Date, orgPath: String) throws
    -> Bool
  {
    let existing = try db.cachedStatement(sql: "SELECT * FROM curriculum_nodes WHERE code = ?")
      .decodeFirst(arguments: [node.code], decodeNode)
    let parent =
      node.kind == .edition
      ? nil
      : try db.cachedStatement(sql: "SELECT * FROM curriculum_nodes WHERE code = ?")
        .decodeFirst(arguments: [node.parentCode], decodeNode)
    let place = try NodePlacement(node, parent: parent)
    let (stage, grade, subject, edition, chapter) = (
      place.stage, place.grade, place.subject, place.edition, place.chapter
    )
    if let existing {
      if try !place.changes(existing, to: node) { return false }
      try db.execute(
        sql: "UPDATE curriculum_nodes SET name = ?, ordinal = ?, updated_at = ? WHERE code = ?",
        arguments: [node.name, node.ordinal, now.timeIntervalSince1970, node.code])
    } else {
      try db.execute(
        sql: """
          INSERT INTO curriculum_nodes
            (code, parent_code, kind, name, stage, grade, subject, ordinal, edition_code,
             chapter_code, updated_at)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
          """,
        arguments: [
          node.code, node.parentCode.isEmpty ? nil : node.parentCode, node.kind.rawValue,
          node.name, stage.rawValue, grade, subject.rawValue, node.ordinal, edition, chapter,
          now.timeIntervalSince1970,
        ])
    }
    let stored = try db.cachedStatement(sql: "SELECT * FROM curriculum_nodes WHERE code = ?")
      .decodeFirst(arguments: [node.code], decodeNode)!
    try ChangeFeed.record(
      db, entity: "curriculum_node", id: node.code, naturalKey: node.code, op: .upsert,
      orgPath: orgPath, payload: stored, time: now)
    return existing == nil
  }

  /// Inserts or updates a knowledge point; true when created, false when it existed.
  static func upsert(_ kp: KnowledgePoint, db: Database, now: Date, orgPath: String) throws
    -> Bool
  {
    let chapter =
      kp.chapterCode.isEmpty
      ? nil
      : try db.cachedStatement(sql: "SELECT * FROM curriculum_nodes WHERE code = ?")
        .decodeFirst(arguments: [kp.chapterCode], decodeNode)
    try check(kp, chapter: chapter)
    let existing = try db.cachedStatement(sql: "SELECT * FROM knowledge_points WHERE code = ?")
      .decodeFirst(arguments: [kp.code], decodeKnowledgePoint)
    if let existing, existing == kp { return false }
    try db.execute(
      sql: """
        INSERT INTO knowledge_points (code, name, stage, subject, chapter_code, updated_at)
        VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT(code) DO UPDATE SET name = excluded.name, stage = excluded.stage,
          subject = excluded.subject, chapter_code = excluded.chapter_code,
          updated_at = excluded.updated_at
        """,
      arguments: [
        kp.code, kp.name, kp.stage.rawValue, kp.subject.rawValue,
        kp.chapterCode.isEmpty ? nil : kp.chapterCode, now.timeIntervalSince1970,
      ])
    try ChangeFeed.record(
      db, entity: "knowledge_point", id: kp.code, naturalKey: kp.code, op: .upsert,
      orgPath: orgPath, payload: kp, time: now)
    return existing == nil
  }

  func listCurriculum(
    editionCode: String?, parentCode: String?, kind: Int?, afterCode: String?, limit: Int
  ) async throws -> [CurriculumNode] {
    try await store.read { db in
      var c = Conditions()
      if let editionCode { c.add("edition_code = ?", [editionCode]) }
      if let parentCode { c.add("parent_code = ?", [parentCode]) }
      if editionCode == nil && parentCode == nil { c.add("kind = 1") }
      if let kind { c.add("kind = ?", [kind]) }
      if let afterCode { c.add("code > ?", [afterCode]) }
      return try db.cachedStatement(
        sql: "SELECT * FROM curriculum_nodes WHERE \(c.sql) ORDER BY code LIMIT ?"
      ).decodeAll(arguments: StatementArguments(c.arguments + [limit]), Self.decodeNode)
    }
  }

  func listKnowledgePoints(
    stage: Int?, subject: Int?, chapterCode: String?, afterCode: String?, limit: Int
  ) async throws -> [KnowledgePoint] {
    try await store.read { db in
      var c = Conditions()
      if let stage { c.add("stage = ?", [stage]) }
      if let subject { c.add("subject = ?", [subject]) }
      if let chapterCode { c.add("chapter_code = ?", [chapterCode]) }
      if let afterCode { c.add("code > ?", [afterCode]) }
      return try db.cachedStatement(
        sql: "SELECT * FROM knowledge_points WHERE \(c.sql) ORDER BY code LIMIT ?"
      ).decodeAll(arguments: StatementArguments(c.arguments + [limit]), Self.decodeKnowledgePoint)
    }
  }

  func chapters(editionCode: String?, stage: Int?, subject: Int?) async throws -> [ChapterRef] {
    try await store.read { db in
      var c = Conditions()
      c.add("kind = 3")
      if let editionCode { c.add("edition_code = ?", [editionCode]) }
      if let stage { c.add("stage = ?", [stage]) }
      if let subject { c.add("subject = ?", [subject]) }
      return try db.cachedStatement(
        sql: "SELECT code, stage, grade, subject FROM curriculum_nodes WHERE \(c.sql)"
      ).decodeAll(arguments: StatementArguments(c.arguments)) { row in
        ChapterRef(
          code: row["code"], stage: .init(rawValue: row["stage"]) ?? .unspecified,
          grade: row["grade"], subject: .init(rawValue: row["subject"]) ?? .unspecified)
      }
    }
  }

  func coveredChapters(viewer: Viewer, editionCode: String?, stage: Int?, subject: Int?)
    async throws -> Set<String>
  {
    try await store.read { db in
      var c = Conditions()
      c.add("r.deleted_at IS NULL AND r.status = 3 AND r.type = 5")
      c.add("r.top_chapter_code IS NOT NULL")
      if let editionCode { c.add("r.edition_code = ?", [editionCode]) }
      if let stage { c.add("r.stage = ?", [stage]) }
      if let subject { c.add("r.subject = ?", [subject]) }
      Self.add(viewer, to: &c)
      return Set(
        try String.fetchAll(
          db, sql: "SELECT DISTINCT r.top_chapter_code FROM resources r WHERE \(c.sql)",
          arguments: StatementArguments(c.arguments)))
    }
  }

  // MARK: Resources

  static func naturalKey(_ r: Resource) -> String { r.externalID.isEmpty ? r.id : r.externalID }

  static func fetch(_ db: Database, seq: Int64) throws -> StoredResource? {
    try db.cachedStatement(
      sql: "SELECT \(columns) FROM resources r WHERE r.seq = ? AND r.deleted_at IS NULL"
    ).decodeFirst(arguments: [seq], decode)
  }

  static func recordChange(_ db: Database, _ s: StoredResource, op: Smartschool_Common_V1_ChangeOp)
    throws
  {
    try ChangeFeed.record(db, events: [changeEvent(s.resource, op: op)])
  }

  /// A resource's change event (its payload encoded here: a create makes it before its write).
  static func changeEvent(_ r: Resource, op: Smartschool_Common_V1_ChangeOp) throws
    -> ChangeEvent
  {
    try ChangeEvent(
      entity: "resource", id: r.id, naturalKey: naturalKey(r), op: op, orgPath: r.ownerOrgPath,
      payload: op == .upsert ? r : nil)
  }

  /// Replaces a resource's knowledge points (`fresh`: a resource inserted in this
  /// transaction, which has none to remove).
  static func writeKnowledgePoints(
    _ db: Database, seq: Int64, _ codes: [String], fresh: Bool = false
  ) throws {
    if !fresh {
      try db.execute(
        sql: "DELETE FROM resource_knowledge_points WHERE resource_seq = ?", arguments: [seq])
    }
    for code in Set(codes) {
      try db.execute(
        sql: "INSERT INTO resource_knowledge_points (code, resource_seq) VALUES (?, ?)",
        arguments: [code, seq])
    }
  }

  /// The columns a create writes, in the order of ``insertValues(_:reach:topChapter:at:)``.
  static let insertColumns = [
    "id", "external_id", "title", "description", "keywords", "type", "stage", "grade", "subject",
    "edition_code", "chapter_code", "top_chapter_code", "knowledge_points", "author_id",
    "author_name", "owner_org_id", "owner_org_code", "owner_path", "reach_path",
    "sharing_scope", "licence", "status", "created_at", "updated_at",
  ]

  /// The values a create writes (``insertColumns``): a draft created at `now`.
  static func insertValues(_ r: Resource, reach: OrgPath, topChapter: String?, at now: Double)
    -> [(any DatabaseValueConvertible)?]
  {
    [
      r.id, r.externalID.isEmpty ? nil : r.externalID, r.title, r.description_p,
      r.keywords.joined(separator: "\n"), r.type.rawValue, r.stage.rawValue, Int(r.grade),
      r.subject.rawValue, r.editionCode.isEmpty ? nil : r.editionCode,
      r.chapterCode.isEmpty ? nil : r.chapterCode, topChapter,
      r.knowledgePointCodes.joined(separator: "\n"), r.authorID, r.authorName, r.ownerOrgID,
      r.ownerOrgCode, r.ownerOrgPath, reach.description, r.sharingScope.rawValue, r.licence,
      Smartschool_Catalogue_V1_ResourceStatus.draft.rawValue, now, now,
    ]
  }

  /// The resource a create of `values` (``insertValues(_:reach:topChapter:at:)``) stores, as
  /// ``decode(_:)`` reads it back: the inserted row with the schema's defaults for the rest.
  static func created(_ values: [(any DatabaseValueConvertible)?], seq: Int64) -> StoredResource {
    var row: [String: (any DatabaseValueConvertible)?] = [
      "seq": seq, "review_comment": "", "content_size": nil, "content_mime": nil,
      "content_sha256": nil, "content_name": nil, "content_time": nil, "views": 0,
      "downloads": 0, "favourites": 0, "rating_count": 0, "rating_sum": 0, "popularity": 0.0,
      "published_at": nil, "deleted_at": nil,
    ]
    for (column, value) in zip(insertColumns, values) { row[column] = value }
    return decode(Row(row))
  }

  static let insertSQL = """
    INSERT INTO resources (\(insertColumns.joined(separator: ", ")))
    VALUES (\(placeholders(insertColumns.count)))
    """

  func insertResource(_ r: Resource, reach: OrgPath, topChapter: String?) async throws
    -> StoredResource
  {
    let analysed = try await analyse(r)
    let now = Date().timeIntervalSince1970
    let values = Self.insertValues(r, reach: reach, topChapter: topChapter, at: now)
    // The stored resource and its change event are made before the write (its sequence aside,
    // which only the write knows): the single writer inserts rows and nothing else.
    let created = Self.created(values, seq: 0)
    let arguments = StatementArguments(values)
    let event = try Self.changeEvent(created.resource, op: .upsert)
    // Concurrent creates share a transaction (the store's group commit).
    let seq = try await store.write { db in
      // Cached: compiling this insert (a table with eleven indexes) was a ninth of the writer's
      // time a create.
      try db.cachedStatement(sql: Self.insertSQL).execute(arguments: arguments)
      let seq = db.lastInsertedRowID
      try Self.indexResource(db, seq: seq, analysed, fresh: true, recentLimit: self.recentLimit)
      try Self.writeKnowledgePoints(db, seq: seq, r.knowledgePointCodes, fresh: true)
      try ChangeFeed.record(db, events: [event])
      return seq
    }
    return StoredResource(seq: seq, resource: created.resource, reach: created.reach)
  }

  func resource(id: String) async throws -> StoredResource? {
    try await store.read { db in
      try db.cachedStatement(
        sql: "SELECT \(Self.columns) FROM resources r WHERE r.id = ? AND r.deleted_at IS NULL"
      ).decodeFirst(arguments: [id], Self.decode)
    }
  }

  func resource(externalID: String) async throws -> StoredResource? {
    try await store.read { db in
      try db.cachedStatement(
        sql: """
          SELECT \(Self.columns) FROM resources r
          WHERE r.external_id = ? AND r.deleted_at IS NULL
          """
      ).decodeFirst(arguments: [externalID], Self.decode)
    }
  }

  func updateResource(seq: Int64, _ r: Resource, reach: OrgPath, topChapter: String?)
    async throws -> StoredResource
  {
    let analysed = try await analyse(r)
    return try await store.write { db in
      try db.execute(
        sql: """
          UPDATE resources SET title = ?, description = ?, keywords = ?, type = ?, stage = ?,
            grade = ?, subject = ?, edition_code = ?, chapter_code = ?, top_chapter_code = ?,
            knowledge_points = ?, sharing_scope = ?, reach_path = ?, licence = ?, updated_at = ?
          WHERE seq = ? AND deleted_at IS NULL AND status IN (1, 4)
          """,
        arguments: StatementArguments(
          [
            r.title, r.description_p, r.keywords.joined(separator: "\n"), r.type.rawValue,
            r.stage.rawValue, Int(r.grade), r.subject.rawValue,
            r.editionCode.isEmpty ? nil : r.editionCode,
            r.chapterCode.isEmpty ? nil : r.chapterCode,
            topChapter, r.knowledgePointCodes.joined(separator: "\n"), r.sharingScope.rawValue,
            reach.description, r.licence, Date().timeIntervalSince1970, seq,
          ] as [(any DatabaseValueConvertible)?]))
      guard db.changesCount == 1 else {
        throw ServiceError.failedPrecondition(
          "the resource changed status meanwhile; only drafts and rejected resources can be edited")
      }
      try Self.indexResource(db, seq: seq, analysed, recentLimit: self.recentLimit)
      try Self.writeKnowledgePoints(db, seq: seq, r.knowledgePointCodes)
      let stored = try Self.fetch(db, seq: seq)!
      try Self.recordChange(db, stored, op: .upsert)
      return stored
    }
  }

  func transition(
    seq: Int64, reach: OrgPath, action: ReviewAction, from: ResourceStatus, to: ResourceStatus,
    actorID: String, actorName: String, comment: String
  ) async throws -> StoredResource {
    try await store.write { db in
      let now = Date().timeIntervalSince1970
      var sets = "status = ?, updated_at = ?"
      var args: [(any DatabaseValueConvertible)?] = [to.rawValue, now]
      if to == .published {
        sets += ", published_at = ?"
        args.append(now)
      }
      if action == .reject {
        sets += ", review_comment = ?"
        args.append(comment)
      }
      args += [seq, from.rawValue, reach.description]
      try db.execute(
        sql: """
          UPDATE resources SET \(sets)
          WHERE seq = ? AND status = ? AND reach_path = ? AND deleted_at IS NULL
          """,
        arguments: StatementArguments(args))
      guard db.changesCount == 1 else {
        throw ServiceError.failedPrecondition(
          "the resource changed status or sharing scope meanwhile; read it again")
      }
      try db.execute(
        sql: """
          INSERT INTO transitions
            (resource_seq, action, from_status, to_status, actor_id, actor_name, comment, time)
          VALUES (?, ?, ?, ?, ?, ?, ?, ?)
          """,
        arguments: [
          seq, action.rawValue, from.rawValue, to.rawValue, actorID, actorName, comment, now,
        ])
      let stored = try Self.fetch(db, seq: seq)!
      try Self.recordChange(db, stored, op: .upsert)
      return stored
    }
  }

  func deleteResource(seq: Int64) async throws {
    try await store.write { db in
      guard let stored = try Self.fetch(db, seq: seq) else {
        throw ServiceError.notFound("resource not found")
      }
      try db.execute(
        sql: "UPDATE resources SET deleted_at = ?, updated_at = ? WHERE seq = ?",
        arguments: [Date().timeIntervalSince1970, Date().timeIntervalSince1970, seq])
      try Self.unindexResource(db, seq: seq)
      try Self.recordChange(db, stored, op: .delete)
    }
  }

  func listResources(filter: ResolvedFilter, viewer: Viewer, beforeSeq: Int64?, limit: Int)
    async throws -> [StoredResource]
  {
    try await store.read { db in
      var c = Conditions()
      Self.add(filter, to: &c)
      Self.add(viewer, to: &c)
      if let beforeSeq { c.add("r.seq < ?", [beforeSeq]) }
      // Without a selective filter most rows match, and the planner's choice (an index per
      // arm of the visibility OR, then sorting every visible row) costs tens of milliseconds
      // at district size; walking the newest rows first stops after one page instead.
      let selective =
        filter.subject != nil || filter.editionCode != nil || filter.chapterCode != nil
        || filter.sectionCode != nil || filter.knowledgePoint != nil || filter.authorID != nil
      let source = selective ? "resources r" : "resources r NOT INDEXED"
      return try db.cachedStatement(
        sql: "SELECT \(Self.columns) FROM \(source) WHERE \(c.sql) ORDER BY r.seq DESC LIMIT ?"
      ).decodeAll(arguments: StatementArguments(c.arguments + [limit]), Self.decode)
    }
  }

  func search(query: SearchQuery, filter: ResolvedFilter, viewer: Viewer, offset: Int, limit: Int)
    async throws -> SearchPage
  {
    try await store.read { db in
      var c = Conditions()
      Self.add(filter, to: &c)
      Self.add(query.filters, to: &c)
      Self.add(viewer, to: &c)
      if query.hasText {
        return try Self.searchText(db, query: query, conditions: c, offset: offset, limit: limit)
      }
      // No words: every resource the filters and facets select, most popular first. The
      // visible set is read as disjoint arms, the published ones from the covering index
      // resources_visible, so neither the facet counts nor the page read a resource's row.
      var f = Conditions()
      Self.add(filter, to: &f)
      Self.add(query.filters, to: &f)
      let arms = Self.visibleArms(viewer)
      if arms.isEmpty { return SearchPage(hits: [], total: 0, groups: []) }
      func union(_ columns: String) -> (sql: String, arguments: StatementArguments) {
        var arguments: [any DatabaseValueConvertible] = []
        let sql: String = arms.map { arm -> String in
          arguments += f.arguments + arm.arguments
          return "SELECT \(columns) FROM resources r WHERE \(f.sql) AND \(arm.sql)"
        }.joined(separator: " UNION ALL ")
        return (sql, StatementArguments(arguments))
      }
      let counted = union("r.subject, r.grade, r.type")
      let groups = try db.cachedStatement(
        sql: """
          SELECT subject, grade, type, count(*) AS n FROM (\(counted.sql))
          GROUP BY subject, grade, type
          """
      ).decodeAll(arguments: counted.arguments) { row in
        (
          subject: row["subject"] as Int, grade: row["grade"] as Int, type: row["type"] as Int,
          count: row["n"] as Int
        )
      }
      let total = groups.reduce(0) { $0 + $1.count }
      var hits: [(resource: StoredResource, relevance: Double)] = []
      if total > offset {
        let ranked = union("r.seq, r.popularity")
        let seqs = try Int64.fetchAll(
          db.cachedStatement(
            sql: """
              SELECT seq FROM (\(ranked.sql)) ORDER BY popularity DESC, seq DESC LIMIT ? OFFSET ?
              """), arguments: ranked.arguments + [limit, offset])
        let rows = try db.cachedStatement(
          sql: """
            SELECT \(Self.columns) FROM resources r
            WHERE r.seq IN (\(Self.placeholders(seqs.count)))
            """
        ).decodeAll(arguments: StatementArguments(seqs), Self.decode)
        let bySeq = Dictionary(rows.map { ($0.seq, $0) }, uniquingKeysWith: { a, _ in a })
        hits = seqs.compactMap { bySeq[$0].map { ($0, 0) } }
      }
      return SearchPage(hits: hits, total: total, groups: groups)
    }
  }

  func transitions(resourceSeq: Int64, afterSeq: Int64?, limit: Int) async throws -> [Transition] {
    try await store.read { db in
      let id =
        try String.fetchOne(
          db.cachedStatement(sql: "SELECT id FROM resources WHERE seq = ?"),
          arguments: [resourceSeq]) ?? ""
      return try db.cachedStatement(
        sql: """
          SELECT * FROM transitions WHERE resource_seq = ? AND seq > ? ORDER BY seq LIMIT ?
          """
      ).decodeAll(arguments: [resourceSeq, afterSeq ?? 0, limit]) { row in
        Transition.with {
          $0.sequence = row["seq"]
          $0.resourceID = id
          $0.action = .init(rawValue: row["action"]) ?? .unspecified
          $0.fromStatus = .init(rawValue: row["from_status"]) ?? .unspecified
          $0.toStatus = .init(rawValue: row["to_status"]) ?? .unspecified
          $0.actorID = row["actor_id"]
          $0.actorName = row["actor_name"]
          $0.comment = row["comment"]
          $0.time = Self.timestamp(row["time"])
        }
      }
    }
  }

  func setContent(seq: Int64, _ content: ContentInfo) async throws -> StoredResource {
    try await store.write { db in
      let now = Date().timeIntervalSince1970
      try db.execute(
        sql: """
          UPDATE resources SET content_size = ?, content_mime = ?, content_sha256 = ?,
            content_name = ?, content_time = ?, updated_at = ?
          WHERE seq = ? AND deleted_at IS NULL AND status IN (1, 4)
          """,
        arguments: [
          content.sizeBytes, content.mimeType, content.sha256, content.fileName, now, now, seq,
        ])
      guard db.changesCount == 1 else {
        throw ServiceError.failedPrecondition(
          "the resource changed status meanwhile; content can change only in draft or rejected")
      }
      let stored = try Self.fetch(db, seq: seq)!
      try Self.recordChange(db, stored, op: .upsert)
      return stored
    }
  }

  // MARK: Usage

  func recordUsage(seq: Int64, _ e: UsageEvent) async throws -> ResourceStats {
    try await store.write { db in
      let time = e.time.timeIntervalSince1970
      var record = true
      switch e.kind {
      case .view:
        try db.execute(
          sql: "UPDATE resources SET views = views + 1 WHERE seq = ?", arguments: [seq])
      case .download:
        try db.execute(
          sql: "UPDATE resources SET downloads = downloads + 1 WHERE seq = ?", arguments: [seq])
      case .favourite:
        try db.execute(
          sql: "INSERT OR IGNORE INTO favourites (resource_seq, user_id, time) VALUES (?, ?, ?)",
          arguments: [seq, e.userID, time])
        record = db.changesCount == 1
        if record {
          try db.execute(
            sql: "UPDATE resources SET favourites = favourites + 1 WHERE seq = ?", arguments: [seq])
        }
      case .unfavourite:
        try db.execute(
          sql: "DELETE FROM favourites WHERE resource_seq = ? AND user_id = ?",
          arguments: [seq, e.userID])
        record = db.changesCount == 1
        if record {
          try db.execute(
            sql: "UPDATE resources SET favourites = favourites - 1 WHERE seq = ?", arguments: [seq])
        }
      case .rate:
        let old = try Int.fetchOne(
          db.cachedStatement(
            sql: "SELECT stars FROM ratings WHERE resource_seq = ? AND user_id = ?"),
          arguments: [seq, e.userID])
        try db.execute(
          sql: """
            INSERT INTO ratings (resource_seq, user_id, stars, time) VALUES (?, ?, ?, ?)
            ON CONFLICT(resource_seq, user_id) DO UPDATE SET stars = excluded.stars,
              time = excluded.time
            """,
          arguments: [seq, e.userID, e.stars, time])
        try db.execute(
          sql: """
            UPDATE resources SET rating_sum = rating_sum + ? - ?, rating_count = rating_count + ?
            WHERE seq = ?
            """,
          arguments: [e.stars, old ?? 0, old == nil ? 1 : 0, seq])
      default:
        throw ServiceError.invalid("kind", "must be a known usage kind")
      }
      if record {
        try db.execute(
          sql: """
            INSERT INTO usage_events (resource_seq, kind, user_id, user_path, stars, time)
            VALUES (?, ?, ?, ?, ?, ?)
            """,
          arguments: [seq, e.kind.rawValue, e.userID, e.userPath, e.stars, time])
      }
      let row = try Row.fetchOne(
        db.cachedStatement(
          sql: """
            SELECT id, views, downloads, favourites, rating_count, rating_sum FROM resources
            WHERE seq = ?
            """), arguments: [seq])!
      let popularity = Ranking.popularity(
        views: row["views"], downloads: row["downloads"], favourites: row["favourites"],
        ratingSum: row["rating_sum"], ratingCount: row["rating_count"])
      try db.execute(
        sql: "UPDATE resources SET popularity = ? WHERE seq = ?", arguments: [popularity, seq])
      let updated = try Row.fetchOne(
        db.cachedStatement(
          sql: """
            SELECT id, views, downloads, favourites, rating_count, rating_sum, popularity
            FROM resources WHERE seq = ?
            """), arguments: [seq])!
      return Self.stats(updated)
    }
  }

  func popular(scope: OrgPath, start: Date?, end: Date?, filter: ResolvedFilter, limit: Int)
    async throws -> [(resource: StoredResource, usage: Ranking.PeriodUsage)]
  {
    try await store.read { db in
      var c = Conditions()
      let range = Visibility.range(of: scope)
      c.add("e.user_path >= ? AND e.user_path < ?", [range.lower, range.upper])
      if let start { c.add("e.time >= ?", [start.timeIntervalSince1970]) }
      if let end { c.add("e.time < ?", [end.timeIntervalSince1970]) }
      c.add("r.status = 3")
      Self.add(filter, to: &c)
      let rows = try Row.fetchAll(
        db.cachedStatement(
          sql: """
            SELECT e.resource_seq AS seq,
              SUM(e.kind = 1) AS views, SUM(e.kind = 2) AS downloads,
              SUM(e.kind = 3) AS favourites, SUM(e.kind = 4) AS unfavourites,
              SUM(e.kind = 5) AS ratings, SUM(CASE WHEN e.kind = 5 THEN e.stars ELSE 0 END) AS stars
            FROM usage_events e JOIN resources r ON r.seq = e.resource_seq
            WHERE \(c.sql) GROUP BY e.resource_seq
            """),
        arguments: StatementArguments(c.arguments))
      var scored: [(seq: Int64, usage: Ranking.PeriodUsage, score: Double)] = rows.map { row in
        let u = Ranking.PeriodUsage(
          views: row["views"], downloads: row["downloads"], favourites: row["favourites"],
          unfavourites: row["unfavourites"], ratings: row["ratings"], ratingStars: row["stars"])
        return (row["seq"], u, Ranking.periodScore(u))
      }
      scored.sort { $0.score != $1.score ? $0.score > $1.score : $0.seq > $1.seq }
      return try scored.prefix(limit).compactMap { item in
        try Self.fetch(db, seq: item.seq).map { ($0, item.usage) }
      }
    }
  }

  func recommendationCandidates(
    codes: [String], filter: ResolvedFilter, viewer: Viewer, limit: Int
  ) async throws -> [(resource: StoredResource, matched: [String])] {
    try await store.read { db in
      var c = Conditions()
      c.add("k.code IN (\(Self.placeholders(codes.count)))", codes)
      c.add("r.status = 3")
      Self.add(filter, to: &c)
      Self.add(viewer, to: &c)
      return try db.cachedStatement(
        sql: """
          SELECT \(Self.columns), group_concat(k.code, '\n') AS matched, count(*) AS n
          FROM resource_knowledge_points k JOIN resources r ON r.seq = k.resource_seq
          WHERE \(c.sql) GROUP BY r.seq ORDER BY n DESC, r.popularity DESC LIMIT ?
          """
      ).decodeAll(arguments: StatementArguments(c.arguments + [limit])) { row in
        (Self.decode(row), Self.split(row["matched"]).sorted())
      }
    }
  }

  // MARK: Change feed

  func changes(after: Int64, limit: Int, scopes: [OrgPath]) async throws
    -> (changes: [Smartschool_Common_V1_Change], hasMore: Bool)
  {
    try await store.read { db in
      try ChangeFeed.list(db, after: after, limit: limit, scopes: scopes)
    }
  }
}
