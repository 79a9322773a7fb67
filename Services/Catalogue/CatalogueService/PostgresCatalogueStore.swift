import Foundation
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf

/// The PostgreSQL store of the catalogue, with the SQLite one's semantics; any number of
/// replicas may share its database. What differs:
/// - usage that reads before it writes (ratings, favourites) locks the resource row first, so
///   concurrent writes through several replicas count once;
/// - curriculum rows are inserted with ON CONFLICT on their code, each under a savepoint, so a
///   node another replica inserted meanwhile is updated instead of failing the batch;
/// - review transitions are one conditional UPDATE (… WHERE status = expected): the second of
///   two concurrent ones waits for the first's row lock, re-reads the row and matches nothing;
/// - search runs over the same inverted index tables (SearchIndex) with the same tokens and the
///   same Swift ranking, so both stores rank the same rows identically.
final class PostgresCatalogueStore: CatalogueStore {
  let store: PostgresStore
  var storage: any ServiceStorage { store }
  /// Driver postings above which a search with words joins them against the visible published
  /// rows instead of looking each resource up (see `candidates` in PostgresSearchIndex.swift).
  let lookupLimit: Int

  init(store: PostgresStore, lookupLimit: Int = 4_000) {
    self.store = store
    self.lookupLimit = lookupLimit
  }

  // MARK: Statements

  /// SQL conditions joined with AND, with their parameters bound as `$n`.
  struct Conditions {
    var clauses: [String] = []
    var binds = PostgresBindings()

    /// Binds `value` and answers its placeholder.
    mutating func bind<V: PostgresDynamicTypeEncodable>(_ value: V) -> String {
      binds.append(value)
      return "$\(binds.count)"
    }

    /// Adds `clause`, every `?` in it standing for `value` (bound once).
    mutating func add<V: PostgresDynamicTypeEncodable>(_ clause: String, _ value: V) {
      let p = bind(value)
      clauses.append(clause.replacingOccurrences(of: "?", with: p))
    }

    mutating func add(_ clause: String) { clauses.append(clause) }

    /// `(column >= lower AND column < upper)`: the subtree of `path`.
    mutating func subtree(_ column: String, _ path: OrgPath) -> String {
      let range = Visibility.range(of: path)
      return "(\(column) >= \(bind(range.lower)) AND \(column) < \(bind(range.upper)))"
    }

    var sql: String { clauses.isEmpty ? "TRUE" : clauses.joined(separator: " AND ") }

    func query(_ sql: String) -> PostgresQuery { PostgresQuery(unsafeSQL: sql, binds: binds) }
  }

  static let columns = SQLiteCatalogueStore.columns

  static func decode(_ row: PostgresRandomAccessRow) throws -> StoredResource {
    var r = Resource()
    r.id = try row["id"].decode(String.self)
    r.externalID = try row["external_id"].decode(String?.self) ?? ""
    r.title = try row["title"].decode(String.self)
    r.description_p = try row["description"].decode(String.self)
    r.keywords = SQLiteCatalogueStore.split(try row["keywords"].decode(String.self))
    r.type = .init(rawValue: try row["type"].decode(Int.self)) ?? .unspecified
    r.stage = .init(rawValue: try row["stage"].decode(Int.self)) ?? .unspecified
    r.grade = Int32(try row["grade"].decode(Int.self))
    r.subject = .init(rawValue: try row["subject"].decode(Int.self)) ?? .unspecified
    r.editionCode = try row["edition_code"].decode(String?.self) ?? ""
    r.chapterCode = try row["chapter_code"].decode(String?.self) ?? ""
    r.knowledgePointCodes = SQLiteCatalogueStore.split(
      try row["knowledge_points"].decode(String.self))
    r.authorID = try row["author_id"].decode(String.self)
    r.authorName = try row["author_name"].decode(String.self)
    r.ownerOrgID = try row["owner_org_id"].decode(String.self)
    r.ownerOrgCode = try row["owner_org_code"].decode(String.self)
    r.ownerOrgPath = try row["owner_path"].decode(String.self)
    r.sharingScope = .init(rawValue: try row["sharing_scope"].decode(Int.self)) ?? .unspecified
    r.licence = try row["licence"].decode(String.self)
    r.status = .init(rawValue: try row["status"].decode(Int.self)) ?? .unspecified
    r.reviewComment = try row["review_comment"].decode(String.self)
    if let size = try row["content_size"].decode(Int64?.self) {
      let mime = try row["content_mime"].decode(String?.self) ?? ""
      let sha = try row["content_sha256"].decode(String?.self) ?? ""
      let name = try row["content_name"].decode(String?.self) ?? ""
      let time = try row["content_time"].decode(Double?.self) ?? 0
      r.content = .with {
        $0.sizeBytes = size
        $0.mimeType = mime
        $0.sha256 = sha
        $0.fileName = name
        $0.uploadTime = SQLiteCatalogueStore.timestamp(time)
      }
    }
    r.stats = try stats(row)
    r.createTime = SQLiteCatalogueStore.timestamp(try row["created_at"].decode(Double.self))
    r.updateTime = SQLiteCatalogueStore.timestamp(try row["updated_at"].decode(Double.self))
    if let published = try row["published_at"].decode(Double?.self) {
      r.publishTime = SQLiteCatalogueStore.timestamp(published)
    }
    return StoredResource(
      seq: try row["seq"].decode(Int64.self), resource: r,
      reach: OrgPath(try row["reach_path"].decode(String.self)) ?? .root)
  }

  static func stats(_ row: PostgresRandomAccessRow) throws -> ResourceStats {
    let count = try row["rating_count"].decode(Int64.self)
    let sum = try row["rating_sum"].decode(Int64.self)
    var s = ResourceStats()
    s.resourceID = try row["id"].decode(String.self)
    s.views = try row["views"].decode(Int64.self)
    s.downloads = try row["downloads"].decode(Int64.self)
    s.favourites = try row["favourites"].decode(Int64.self)
    s.ratingCount = count
    s.ratingAverage = count > 0 ? Double(sum) / Double(count) : 0
    s.popularity = try row["popularity"].decode(Double.self)
    return s
  }

  static func decodeNode(_ row: PostgresRandomAccessRow) throws -> CurriculumNode {
    var n = CurriculumNode()
    n.code = try row["code"].decode(String.self)
    n.parentCode = try row["parent_code"].decode(String?.self) ?? ""
    n.kind = .init(rawValue: try row["kind"].decode(Int.self)) ?? .unspecified
    n.name = try row["name"].decode(String.self)
    n.stage = .init(rawValue: try row["stage"].decode(Int.self)) ?? .unspecified
    n.grade = Int32(try row["grade"].decode(Int.self))
    n.subject = .init(rawValue: try row["subject"].decode(Int.self)) ?? .unspecified
    n.ordinal = Int32(try row["ordinal"].decode(Int.self))
    n.editionCode = try row["edition_code"].decode(String.self)
    return n
  }

  static func decodeKnowledgePoint(_ row: PostgresRandomAccessRow) throws -> KnowledgePoint {
    var k = KnowledgePoint()
    k.code = try row["code"].decode(String.self)
    k.name = try row["name"].decode(String.self)
    k.stage = .init(rawValue: try row["stage"].decode(Int.self)) ?? .unspecified
    k.subject = .init(rawValue: try row["subject"].decode(Int.self)) ?? .unspecified
    k.chapterCode = try row["chapter_code"].decode(String?.self) ?? ""
    return k
  }

  /// The filter conditions on `resources r`.
  static func add(_ f: ResolvedFilter, to c: inout Conditions) {
    c.add("r.deleted_at IS NULL")
    if let v = f.stage { c.add("r.stage = ?", v) }
    if let v = f.grade { c.add("r.grade = ?", v) }
    if let v = f.subject { c.add("r.subject = ?", v) }
    if f.types.count == 1 {
      c.add("r.type = ?", f.types[0])
    } else if !f.types.isEmpty {
      c.add("r.type = ANY(?)", f.types)
    }
    if let v = f.editionCode { c.add("r.edition_code = ?", v) }
    if let v = f.chapterCode { c.add("r.top_chapter_code = ?", v) }
    if let v = f.sectionCode { c.add("r.chapter_code = ?", v) }
    if let p = f.ownerSubtree { c.add(c.subtree("r.owner_path", p)) }
    if let v = f.status { c.add("r.status = ?", v) }
    if let v = f.knowledgePoint {
      c.add("r.seq IN (SELECT resource_seq FROM resource_knowledge_points WHERE code = ?)", v)
    }
    if let v = f.authorID { c.add("r.author_id = ?", v) }
  }

  /// The visibility condition of ``Visibility/canSee(status:authorID:owner:reach:viewer:)``.
  static func add(_ viewer: Viewer, to c: inout Conditions) {
    var any: [String] = []
    if !viewer.userID.isEmpty {
      any.append("r.author_id = \(c.bind(viewer.userID))")
    }
    if !viewer.readScopes.isEmpty {
      var published: [String] = []
      let reaches = Set(viewer.readScopes.flatMap(Visibility.prefixes(of:)).map(\.description))
        .sorted()
      if !reaches.isEmpty { published.append("r.reach_path = ANY(\(c.bind(reaches)))") }
      for scope in viewer.readScopes { published.append(c.subtree("r.owner_path", scope)) }
      any.append("(r.status = 3 AND (" + published.joined(separator: " OR ") + "))")
    }
    if !viewer.reviewScopes.isEmpty {
      var ranges: [String] = []
      for scope in viewer.reviewScopes { ranges.append(c.subtree("r.owner_path", scope)) }
      any.append("(r.status IN (2, 3, 4) AND (" + ranges.joined(separator: " OR ") + "))")
    }
    c.add(any.isEmpty ? "FALSE" : "(" + any.joined(separator: " OR ") + ")")
  }

  /// The visibility condition of ``add(_:to:)`` as disjoint arms whose union is the visible
  /// set, their values bound in `c` (empty: nothing is visible); see
  /// `SQLiteCatalogueStore.visibleArms`.
  static func visibleArms(_ viewer: Viewer, binding c: inout Conditions) -> [String] {
    var arms: [String] = []
    var published: String? = nil
    if !viewer.readScopes.isEmpty {
      let reaches = Set(viewer.readScopes.flatMap(Visibility.prefixes(of:)).map(\.description))
        .sorted()
      let list = c.bind(reaches)
      arms.append("r.status = 3 AND r.reach_path = ANY(\(list))")
      var any = ["r.reach_path = ANY(\(list))"]
      let scopes = Set(viewer.readScopes)
      for scope in scopes.sorted(by: { $0.description < $1.description })
      where !scopes.contains(where: { $0 != scope && $0.covers(scope) }) {
        let range = Visibility.range(of: scope)
        let below =
          "r.reach_path > \(c.bind(range.lower)) AND r.reach_path < \(c.bind(range.upper))"
        arms.append("r.status = 3 AND \(below) AND r.reach_path <> ALL(\(list))")
        any.append("(\(below))")
      }
      published = "(r.status = 3 AND (" + any.joined(separator: " OR ") + "))"
    }
    if !viewer.userID.isEmpty {
      arms.append(
        "r.author_id = \(c.bind(viewer.userID))" + (published.map { " AND NOT " + $0 } ?? ""))
    }
    if !viewer.reviewScopes.isEmpty {
      var ranges: [String] = []
      for scope in viewer.reviewScopes { ranges.append(c.subtree("r.owner_path", scope)) }
      var reviewed = "r.status IN (2, 3, 4) AND (" + ranges.joined(separator: " OR ") + ")"
      if let published { reviewed += " AND NOT " + published }
      if !viewer.userID.isEmpty { reviewed += " AND r.author_id <> \(c.bind(viewer.userID))" }
      arms.append(reviewed)
    }
    return arms
  }

  /// The facet filters of a query on `resources r`.
  static func add(_ f: SearchFacets, to c: inout Conditions) {
    func list(_ column: String, _ values: Set<Int>) {
      if values.isEmpty { return }
      c.add("\(column) = ANY(?)", values.sorted())
    }
    list("r.stage", f.stages)
    list("r.grade", f.grades)
    list("r.subject", f.subjects)
    list("r.type", f.types)
    if !f.editions.isEmpty {
      c.add(
        "r.seq IN (SELECT resource_seq FROM search_postings WHERE token = ANY(?))",
        f.editions.sorted().map(SearchIndex.editionToken))
    }
  }

  // MARK: Curriculum

  static func node(_ tx: PostgresTransaction, code: String) async throws -> CurriculumNode? {
    try await tx.one("SELECT * FROM curriculum_nodes WHERE code = \(code)").map(decodeNode)
  }

  func curriculumNode(code: String) async throws -> CurriculumNode? {
    try await store.read { tx in try await Self.node(tx, code: code) }
  }

  func knowledgePoints(codes: [String]) async throws -> [KnowledgePoint] {
    if codes.isEmpty { return [] }
    return try await store.read { tx in
      try await tx.query("SELECT * FROM knowledge_points WHERE code = ANY(\(codes))")
        .map(Self.decodeKnowledgePoint)
    }
  }

  /// Imports a batch of curriculum rows with the SQLite store's verdicts, row after row, in a
  /// handful of statements: one read of every node and knowledge point the batch names, then
  /// each row checked against what was read and what the rows before it planned. New rows are
  /// written together (the nodes, then the knowledge points, each one INSERT from arrays)
  /// before any other write and at the end, so a section finds the chapter planned rows before
  /// it; a changed row goes alone as before. Should the batch's writes fail (a code taken
  /// meanwhile by another replica, a value the table's checks refuse), they are undone and the
  /// batch imported row by row, which refuses such rows alone.
  func importCurriculum(_ rows: [(index: Int, row: CurriculumRow)], orgPath: String)
    async throws -> BatchResult
  {
    try await store.write { tx in
      let now = Date()
      do {
        return try await tx.savepoint {
          try await Self.importTogether(tx, rows, orgPath: orgPath, now: now)
        }
      } catch is ServiceError {
        return try await Self.importOneByOne(tx, rows, orgPath: orgPath, now: now)
      }
    }
  }

  private static func importTogether(
    _ tx: PostgresTransaction, _ rows: [(index: Int, row: CurriculumRow)], orgPath: String,
    now: Date
  ) async throws -> BatchResult {
    var result = BatchResult()
    var nodeCodes: Set<String> = []
    var pointCodes: [String] = []
    for (_, row) in rows {
      switch row {
      case .node(let n): nodeCodes.formUnion([n.code, n.parentCode])
      case .knowledgePoint(let k):
        nodeCodes.insert(k.chapterCode)
        pointCodes.append(k.code)
      }
    }
    nodeCodes.remove("")
    var nodes: [String: CurriculumNode] = [:]
    for node in try await tx.query(
      "SELECT * FROM curriculum_nodes WHERE code = ANY(\(Array(nodeCodes)))"
    ).map(decodeNode) {
      nodes[node.code] = node
    }
    var points: [String: KnowledgePoint] = [:]
    if !pointCodes.isEmpty {
      for point in try await tx.query(
        "SELECT * FROM knowledge_points WHERE code = ANY(\(pointCodes))"
      ).map(decodeKnowledgePoint) {
        points[point.code] = point
      }
    }
    // The new rows in row order, a node with its chapter code.
    var planned: [(row: CurriculumRow, chapter: String)] = []
    func write() async throws {
      guard !planned.isEmpty else { return }
      let time = now.timeIntervalSince1970
      let new = planned.compactMap { p -> (CurriculumNode, String)? in
        if case .node(let n) = p.row { (n, p.chapter) } else { nil }
      }
      if !new.isEmpty {
        try await tx.execute(
          """
          INSERT INTO curriculum_nodes (code, parent_code, kind, name, stage, grade, subject,
            ordinal, edition_code, chapter_code, updated_at)
          SELECT u.code, NULLIF(u.parent_code, ''), u.kind, u.name, u.stage, u.grade, u.subject,
            u.ordinal, u.edition_code, NULLIF(u.chapter_code, ''), \(time)
          FROM unnest(\(new.map(\.0.code))::text[], \(new.map(\.0.parentCode))::text[],
            \(new.map { $0.0.kind.rawValue })::int8[], \(new.map(\.0.name))::text[],
            \(new.map { $0.0.stage.rawValue })::int8[], \(new.map { Int($0.0.grade) })::int8[],
            \(new.map { $0.0.subject.rawValue })::int8[], \(new.map { Int($0.0.ordinal) })::int8[],
            \(new.map(\.0.editionCode))::text[], \(new.map(\.1))::text[])
            AS u(code, parent_code, kind, name, stage, grade, subject, ordinal, edition_code,
              chapter_code)
          """)
      }
      let newPoints = planned.compactMap { p -> KnowledgePoint? in
        if case .knowledgePoint(let k) = p.row { k } else { nil }
      }
      if !newPoints.isEmpty {
        try await tx.execute(
          """
          INSERT INTO knowledge_points (code, name, stage, subject, chapter_code, updated_at)
          SELECT u.code, u.name, u.stage, u.subject, NULLIF(u.chapter_code, ''), \(time)
          FROM unnest(\(newPoints.map(\.code))::text[], \(newPoints.map(\.name))::text[],
            \(newPoints.map { $0.stage.rawValue })::int8[],
            \(newPoints.map { $0.subject.rawValue })::int8[],
            \(newPoints.map(\.chapterCode))::text[])
            AS u(code, name, stage, subject, chapter_code)
          """)
      }
      for p in planned {
        switch p.row {
        case .node(let n):
          try tx.recordChange(
            entity: "curriculum_node", id: n.code, naturalKey: n.code, op: .upsert,
            orgPath: orgPath, payload: n, time: now)
        case .knowledgePoint(let k):
          try tx.recordChange(
            entity: "knowledge_point", id: k.code, naturalKey: k.code, op: .upsert,
            orgPath: orgPath, payload: k, time: now)
        }
      }
      planned = []
    }
    for (index, row) in rows {
      func refuse(_ error: any Error) throws {
        if let problem = error as? SQLiteCatalogueStore.RowProblem {
          result.errors.append(.row(index, key: row.code, field: problem.field, problem.reason))
        } else if let error = error as? ServiceError {
          result.errors.append(
            .row(index, key: row.code, field: "row", "refused by the store: \(error)"))
        } else {
          throw error
        }
      }
      // The row's verdict first; a changed row is then written alone, after the planned ones
      // (whose failure is the batch's, not the row's).
      var changed = false
      do {
        switch row {
        case .node(let node):
          let parent = node.kind == .edition ? nil : nodes[node.parentCode]
          let place = try SQLiteCatalogueStore.NodePlacement(node, parent: parent)
          if let existing = nodes[node.code] {
            changed = try place.changes(existing, to: node)
          } else {
            // As the table will give it back.
            var stored = CurriculumNode()
            (stored.code, stored.parentCode, stored.kind, stored.name, stored.ordinal) =
              (node.code, node.parentCode, node.kind, node.name, node.ordinal)
            (stored.stage, stored.grade, stored.subject, stored.editionCode) =
              (place.stage, Int32(place.grade), place.subject, place.edition)
            planned.append((.node(stored), place.chapter ?? ""))
            nodes[node.code] = stored
            result.created += 1
            continue
          }
        case .knowledgePoint(let point):
          try SQLiteCatalogueStore.check(
            point, chapter: point.chapterCode.isEmpty ? nil : nodes[point.chapterCode])
          if let existing = points[point.code] {
            changed = existing != point
          } else {
            planned.append((.knowledgePoint(point), ""))
            points[point.code] = point
            result.created += 1
            continue
          }
        }
      } catch {
        try refuse(error)
        continue
      }
      guard changed else {
        result.updated += 1
        continue
      }
      try await write()
      do {
        switch row {
        case .node(let node):
          _ = try await tx.savepoint { try await upsert(node, tx: tx, now: now, orgPath: orgPath) }
        case .knowledgePoint(let point):
          _ = try await tx.savepoint {
            try await upsert(point, tx: tx, now: now, orgPath: orgPath)
          }
        }
      } catch {
        try refuse(error)
        continue
      }
      result.updated += 1
      switch row {
      case .node(let node): nodes[node.code] = try await Self.node(tx, code: node.code)
      case .knowledgePoint(let point): points[point.code] = point
      }
    }
    try await write()
    return result
  }

  /// The import of `rows` a row at a time, each under its own savepoint.
  private static func importOneByOne(
    _ tx: PostgresTransaction, _ rows: [(index: Int, row: CurriculumRow)], orgPath: String,
    now: Date
  ) async throws -> BatchResult {
    var result = BatchResult()
    for (index, row) in rows {
      do {
        // A savepoint per row: a row the database refuses leaves the batch usable.
        let created = try await tx.savepoint {
          switch row {
          case .node(let node):
            try await Self.upsert(node, tx: tx, now: now, orgPath: orgPath)
          case .knowledgePoint(let kp):
            try await Self.upsert(kp, tx: tx, now: now, orgPath: orgPath)
          }
        }
        if created { result.created += 1 } else { result.updated += 1 }
      } catch let error as SQLiteCatalogueStore.RowProblem {
        result.errors.append(.row(index, key: row.code, field: error.field, error.reason))
      } catch let error as ServiceError {
        result.errors.append(
          .row(index, key: row.code, field: "row", "refused by the store: \(error)"))
      }
    }
    return result
  }

  /// Inserts or updates a node; true when created, false when it existed (here or through
  /// another replica's concurrent import).
  static func upsert(_ node: CurriculumNode, tx: PostgresTransaction, now: Date, orgPath: String)
    async throws -> Bool
  {
    let parent = node.kind == .edition ? nil : try await Self.node(tx, code: node.parentCode)
    let place = try SQLiteCatalogueStore.NodePlacement(node, parent: parent)
    let (stage, grade, subject, edition, chapter) = (
      place.stage, place.grade, place.subject, place.edition, place.chapter
    )
    let parentCode: String? = node.parentCode.isEmpty ? nil : node.parentCode
    let time = now.timeIntervalSince1970
    // Insert first: when the code exists (or another replica inserts it meanwhile, this
    // statement then waits for that commit), nothing is inserted and the row is locked and
    // checked as an update.
    let inserted = try await tx.one(
      """
      INSERT INTO curriculum_nodes
        (code, parent_code, kind, name, stage, grade, subject, ordinal, edition_code,
         chapter_code, updated_at)
      VALUES (\(node.code), \(parentCode), \(node.kind.rawValue), \(node.name),
        \(stage.rawValue), \(grade), \(subject.rawValue), \(Int(node.ordinal)), \(edition),
        \(chapter), \(time))
      ON CONFLICT (code) DO NOTHING RETURNING code
      """)
    if inserted == nil {
      guard
        let existing = try await tx.one(
          "SELECT * FROM curriculum_nodes WHERE code = \(node.code) FOR UPDATE"
        ).map(decodeNode)
      else { throw ServiceError.aborted("curriculum node \(node.code) vanished; retry") }
      if try !place.changes(existing, to: node) { return false }
      try await tx.execute(
        """
        UPDATE curriculum_nodes SET name = \(node.name), ordinal = \(Int(node.ordinal)),
          updated_at = \(time)
        WHERE code = \(node.code)
        """)
    }
    guard let stored = try await Self.node(tx, code: node.code) else {
      throw ServiceError.internalError("curriculum node \(node.code) not stored")
    }
    try tx.recordChange(
      entity: "curriculum_node", id: node.code, naturalKey: node.code, op: .upsert,
      orgPath: orgPath, payload: stored, time: now)
    return inserted != nil
  }

  /// Inserts or updates a knowledge point; true when created, false when it existed.
  static func upsert(_ kp: KnowledgePoint, tx: PostgresTransaction, now: Date, orgPath: String)
    async throws -> Bool
  {
    try SQLiteCatalogueStore.check(
      kp, chapter: kp.chapterCode.isEmpty ? nil : try await Self.node(tx, code: kp.chapterCode))
    let existing = try await tx.one("SELECT * FROM knowledge_points WHERE code = \(kp.code)")
      .map(decodeKnowledgePoint)
    if let existing, existing == kp { return false }
    let chapter: String? = kp.chapterCode.isEmpty ? nil : kp.chapterCode
    // xmax = 0 only for a row this statement inserted (not one it updated).
    guard
      let row = try await tx.one(
        """
        INSERT INTO knowledge_points (code, name, stage, subject, chapter_code, updated_at)
        VALUES (\(kp.code), \(kp.name), \(kp.stage.rawValue), \(kp.subject.rawValue),
          \(chapter), \(now.timeIntervalSince1970))
        ON CONFLICT (code) DO UPDATE SET name = excluded.name, stage = excluded.stage,
          subject = excluded.subject, chapter_code = excluded.chapter_code,
          updated_at = excluded.updated_at
        RETURNING (xmax = 0) AS inserted
        """)
    else { throw ServiceError.internalError("knowledge point upsert returned nothing") }
    try tx.recordChange(
      entity: "knowledge_point", id: kp.code, naturalKey: kp.code, op: .upsert,
      orgPath: orgPath, payload: kp, time: now)
    return try row["inserted"].decode(Bool.self)
  }

  func listCurriculum(
    editionCode: String?, parentCode: String?, kind: Int?, afterCode: String?, limit: Int
  ) async throws -> [CurriculumNode] {
    var c = Conditions()
    if let editionCode { c.add("edition_code = ?", editionCode) }
    if let parentCode { c.add("parent_code = ?", parentCode) }
    if editionCode == nil && parentCode == nil { c.add("kind = 1") }
    if let kind { c.add("kind = ?", kind) }
    if let afterCode { c.add("code > ?", afterCode) }
    let sql = "SELECT * FROM curriculum_nodes WHERE \(c.sql) ORDER BY code LIMIT \(c.bind(limit))"
    return try await store.query(c.query(sql)).map(Self.decodeNode)
  }

  func listKnowledgePoints(
    stage: Int?, subject: Int?, chapterCode: String?, afterCode: String?, limit: Int
  ) async throws -> [KnowledgePoint] {
    var c = Conditions()
    if let stage { c.add("stage = ?", stage) }
    if let subject { c.add("subject = ?", subject) }
    if let chapterCode { c.add("chapter_code = ?", chapterCode) }
    if let afterCode { c.add("code > ?", afterCode) }
    let sql = "SELECT * FROM knowledge_points WHERE \(c.sql) ORDER BY code LIMIT \(c.bind(limit))"
    return try await store.query(c.query(sql)).map(Self.decodeKnowledgePoint)
  }

  func chapters(editionCode: String?, stage: Int?, subject: Int?) async throws -> [ChapterRef] {
    var c = Conditions()
    c.add("kind = 3")
    if let editionCode { c.add("edition_code = ?", editionCode) }
    if let stage { c.add("stage = ?", stage) }
    if let subject { c.add("subject = ?", subject) }
    return try await store.query(
      c.query("SELECT code, stage, grade, subject FROM curriculum_nodes WHERE \(c.sql)")
    ).map { row in
      ChapterRef(
        code: try row["code"].decode(String.self),
        stage: .init(rawValue: try row["stage"].decode(Int.self)) ?? .unspecified,
        grade: try row["grade"].decode(Int.self),
        subject: .init(rawValue: try row["subject"].decode(Int.self)) ?? .unspecified)
    }
  }

  func coveredChapters(viewer: Viewer, editionCode: String?, stage: Int?, subject: Int?)
    async throws -> Set<String>
  {
    var c = Conditions()
    c.add("r.deleted_at IS NULL AND r.status = 3 AND r.type = 5")
    c.add("r.top_chapter_code IS NOT NULL")
    if let editionCode { c.add("r.edition_code = ?", editionCode) }
    if let stage { c.add("r.stage = ?", stage) }
    if let subject { c.add("r.subject = ?", subject) }
    Self.add(viewer, to: &c)
    return Set(
      try await store.query(
        c.query("SELECT DISTINCT r.top_chapter_code FROM resources r WHERE \(c.sql)")
      ).map { try $0[0].decode(String.self) })
  }

  // MARK: Resources

  static func fetch(_ tx: PostgresTransaction, seq: Int64) async throws -> StoredResource? {
    try await tx.one(
      """
      SELECT \(unescaped: columns) FROM resources r WHERE r.seq = \(seq) AND r.deleted_at IS NULL
      """
    ).map(decode)
  }

  static func recordChange(
    _ tx: PostgresTransaction, _ s: StoredResource, op: Smartschool_Common_V1_ChangeOp
  ) throws {
    try tx.recordChange(
      entity: "resource", id: s.resource.id,
      naturalKey: SQLiteCatalogueStore.naturalKey(s.resource), op: op,
      orgPath: s.resource.ownerOrgPath, payload: op == .upsert ? s.resource : nil)
  }

  /// Replaces a resource's knowledge points (`fresh`: a resource inserted in this
  /// transaction, which has none to remove).
  static func writeKnowledgePoints(
    _ tx: PostgresTransaction, seq: Int64, _ codes: [String], fresh: Bool = false
  ) async throws {
    if !fresh {
      try await tx.execute("DELETE FROM resource_knowledge_points WHERE resource_seq = \(seq)")
    }
    let unique = Set(codes).sorted()
    if unique.isEmpty { return }
    try await tx.execute(
      """
      INSERT INTO resource_knowledge_points (code, resource_seq)
      SELECT code, \(seq) FROM unnest(\(unique)::text[]) AS code
      """)
  }

  /// A finished statement: an existing resource, or FAILED_PRECONDITION with `reason`.
  static func fetched(_ tx: PostgresTransaction, seq: Int64) async throws -> StoredResource {
    guard let stored = try await fetch(tx, seq: seq) else {
      throw ServiceError.internalError("resource \(seq) vanished in its own transaction")
    }
    return stored
  }

  func insertResource(_ r: Resource, reach: OrgPath, topChapter: String?) async throws
    -> StoredResource
  {
    let analysed = try await analyse(r)
    return try await store.write { tx in
      let now = Date().timeIntervalSince1970
      let externalID: String? = r.externalID.isEmpty ? nil : r.externalID
      let edition: String? = r.editionCode.isEmpty ? nil : r.editionCode
      let chapter: String? = r.chapterCode.isEmpty ? nil : r.chapterCode
      // The row comes back as a read of it would (one statement fewer).
      guard
        let row = try await tx.one(
          """
          INSERT INTO resources AS r
            (id, external_id, title, description, keywords, type, stage, grade, subject,
             edition_code, chapter_code, top_chapter_code, knowledge_points, author_id,
             author_name, owner_org_id, owner_org_code, owner_path, reach_path, sharing_scope,
             licence, status, created_at, updated_at)
          VALUES (\(r.id), \(externalID), \(r.title), \(r.description_p),
            \(r.keywords.joined(separator: "\n")), \(r.type.rawValue), \(r.stage.rawValue),
            \(Int(r.grade)), \(r.subject.rawValue), \(edition), \(chapter), \(topChapter),
            \(r.knowledgePointCodes.joined(separator: "\n")), \(r.authorID), \(r.authorName),
            \(r.ownerOrgID), \(r.ownerOrgCode), \(r.ownerOrgPath), \(reach.description),
            \(r.sharingScope.rawValue), \(r.licence), 1, \(now), \(now))
          RETURNING \(unescaped: Self.columns)
          """)
      else { throw ServiceError.internalError("resource insert returned nothing") }
      let stored = try Self.decode(row)
      let seq = stored.seq
      try await Self.writeKnowledgePoints(tx, seq: seq, r.knowledgePointCodes, fresh: true)
      try await Self.indexResource(tx, seq: seq, analysed, fresh: true)
      try Self.recordChange(tx, stored, op: .upsert)
      return stored
    }
  }

  func resource(id: String) async throws -> StoredResource? {
    try await store.query(
      """
      SELECT \(unescaped: Self.columns) FROM resources r
      WHERE r.id = \(id) AND r.deleted_at IS NULL
      """
    ).first.map(Self.decode)
  }

  func resource(externalID: String) async throws -> StoredResource? {
    try await store.query(
      """
      SELECT \(unescaped: Self.columns) FROM resources r
      WHERE r.external_id = \(externalID) AND r.deleted_at IS NULL
      """
    ).first.map(Self.decode)
  }

  func updateResource(seq: Int64, _ r: Resource, reach: OrgPath, topChapter: String?)
    async throws -> StoredResource
  {
    let analysed = try await analyse(r)
    return try await store.write { tx in
      let edition: String? = r.editionCode.isEmpty ? nil : r.editionCode
      let chapter: String? = r.chapterCode.isEmpty ? nil : r.chapterCode
      let updated = try await tx.one(
        """
        UPDATE resources SET title = \(r.title), description = \(r.description_p),
          keywords = \(r.keywords.joined(separator: "\n")), type = \(r.type.rawValue),
          stage = \(r.stage.rawValue), grade = \(Int(r.grade)), subject = \(r.subject.rawValue),
          edition_code = \(edition), chapter_code = \(chapter), top_chapter_code = \(topChapter),
          knowledge_points = \(r.knowledgePointCodes.joined(separator: "\n")),
          sharing_scope = \(r.sharingScope.rawValue), reach_path = \(reach.description),
          licence = \(r.licence), updated_at = \(Date().timeIntervalSince1970)
        WHERE seq = \(seq) AND deleted_at IS NULL AND status IN (1, 4)
        RETURNING seq
        """)
      guard updated != nil else {
        throw ServiceError.failedPrecondition(
          "the resource changed status meanwhile; only drafts and rejected resources can be edited")
      }
      try await Self.writeKnowledgePoints(tx, seq: seq, r.knowledgePointCodes)
      try await Self.indexResource(tx, seq: seq, analysed)
      let stored = try await Self.fetched(tx, seq: seq)
      try Self.recordChange(tx, stored, op: .upsert)
      return stored
    }
  }

  func transition(
    seq: Int64, reach: OrgPath, action: ReviewAction, from: ResourceStatus, to: ResourceStatus,
    actorID: String, actorName: String, comment: String
  ) async throws -> StoredResource {
    try await store.write { tx in
      let now = Date().timeIntervalSince1970
      let published: Double? = to == .published ? now : nil
      let rejected: String? = action == .reject ? comment : nil
      // One conditional UPDATE: of two concurrent transitions from the same state, the second
      // waits for the first's row lock, re-checks the WHERE on the new row and matches nothing.
      let updated = try await tx.one(
        """
        UPDATE resources SET status = \(to.rawValue), updated_at = \(now),
          published_at = COALESCE(\(published), published_at),
          review_comment = COALESCE(\(rejected), review_comment)
        WHERE seq = \(seq) AND status = \(from.rawValue) AND reach_path = \(reach.description)
          AND deleted_at IS NULL
        RETURNING seq
        """)
      guard updated != nil else {
        throw ServiceError.failedPrecondition(
          "the resource changed status or sharing scope meanwhile; read it again")
      }
      try await tx.execute(
        """
        INSERT INTO transitions
          (resource_seq, action, from_status, to_status, actor_id, actor_name, comment, time)
        VALUES (\(seq), \(action.rawValue), \(from.rawValue), \(to.rawValue), \(actorID),
          \(actorName), \(comment), \(now))
        """)
      let stored = try await Self.fetched(tx, seq: seq)
      try Self.recordChange(tx, stored, op: .upsert)
      return stored
    }
  }

  func deleteResource(seq: Int64) async throws {
    try await store.write { tx in
      let now = Date().timeIntervalSince1970
      // Locks the row; a resource deleted meanwhile matches nothing.
      guard let stored = try await Self.fetch(tx, seq: seq),
        try await tx.one(
          """
          UPDATE resources SET deleted_at = \(now), updated_at = \(now)
          WHERE seq = \(seq) AND deleted_at IS NULL RETURNING seq
          """) != nil
      else { throw ServiceError.notFound("resource not found") }
      try await Self.unindexResource(tx, seq: seq)
      try Self.recordChange(tx, stored, op: .delete)
    }
  }

  func listResources(filter: ResolvedFilter, viewer: Viewer, beforeSeq: Int64?, limit: Int)
    async throws -> [StoredResource]
  {
    var c = Conditions()
    Self.add(filter, to: &c)
    Self.add(viewer, to: &c)
    if let beforeSeq { c.add("r.seq < ?", beforeSeq) }
    let sql = """
      SELECT \(Self.columns) FROM resources r WHERE \(c.sql)
      ORDER BY r.seq DESC LIMIT \(c.bind(limit))
      """
    return try await store.query(c.query(sql)).map(Self.decode)
  }

  func search(query: SearchQuery, filter: ResolvedFilter, viewer: Viewer, offset: Int, limit: Int)
    async throws -> SearchPage
  {
    try await store.read { tx in
      if query.hasText {
        return try await Self.searchText(
          tx, query: query, filter: filter, viewer: viewer, offset: offset, limit: limit,
          lookupLimit: lookupLimit)
      }
      // No words: every resource the filters and facets select, most popular first, read as
      // the disjoint arms of the visible set (SQLiteCatalogueStore.visibleArms), the published
      // ones from the covering index resources_visible. The arms share the filter's binds.
      var q = Conditions()
      Self.add(filter, to: &q)
      Self.add(query.filters, to: &q)
      let filterSQL = q.sql
      let arms = Self.visibleArms(viewer, binding: &q)
      if arms.isEmpty { return SearchPage(hits: [], total: 0, groups: []) }
      func union(_ columns: String) -> String {
        arms.map { "SELECT \(columns) FROM resources r WHERE \(filterSQL) AND \($0)" }
          .joined(separator: " UNION ALL ")
      }
      let groups = try await tx.query(
        q.query(
          """
          SELECT subject, grade, type, count(*) AS n FROM (\(union("r.subject, r.grade, r.type")))
            AS v
          GROUP BY subject, grade, type ORDER BY subject, grade, type
          """)
      ).map { row in
        (
          subject: try row["subject"].decode(Int.self), grade: try row["grade"].decode(Int.self),
          type: try row["type"].decode(Int.self), count: try row["n"].decode(Int.self)
        )
      }
      let total = groups.reduce(0) { $0 + $1.count }
      var hits: [(resource: StoredResource, relevance: Double)] = []
      if total > offset {
        let sql = """
          SELECT \(Self.columns) FROM resources r
          WHERE r.seq = ANY(ARRAY(
            SELECT seq FROM (\(union("r.seq, r.popularity"))) AS v
            ORDER BY popularity DESC, seq DESC LIMIT \(q.bind(limit)) OFFSET \(q.bind(offset))))
          ORDER BY r.popularity DESC, r.seq DESC
          """
        hits = try await tx.query(q.query(sql)).map { (try Self.decode($0), 0) }
      }
      return SearchPage(hits: hits, total: total, groups: groups)
    }
  }

  func transitions(resourceSeq: Int64, afterSeq: Int64?, limit: Int) async throws -> [Transition] {
    try await store.read { tx in
      let id =
        try await tx.one("SELECT id FROM resources WHERE seq = \(resourceSeq)")?[0].decode(
          String.self) ?? ""
      return try await tx.query(
        """
        SELECT * FROM transitions WHERE resource_seq = \(resourceSeq) AND seq > \(afterSeq ?? 0)
        ORDER BY seq LIMIT \(limit)
        """
      ).map { row in
        var t = Transition()
        t.sequence = try row["seq"].decode(Int64.self)
        t.resourceID = id
        t.action = .init(rawValue: try row["action"].decode(Int.self)) ?? .unspecified
        t.fromStatus = .init(rawValue: try row["from_status"].decode(Int.self)) ?? .unspecified
        t.toStatus = .init(rawValue: try row["to_status"].decode(Int.self)) ?? .unspecified
        t.actorID = try row["actor_id"].decode(String.self)
        t.actorName = try row["actor_name"].decode(String.self)
        t.comment = try row["comment"].decode(String.self)
        t.time = SQLiteCatalogueStore.timestamp(try row["time"].decode(Double.self))
        return t
      }
    }
  }

  func setContent(seq: Int64, _ content: ContentInfo) async throws -> StoredResource {
    try await store.write { tx in
      let now = Date().timeIntervalSince1970
      let updated = try await tx.one(
        """
        UPDATE resources SET content_size = \(content.sizeBytes),
          content_mime = \(content.mimeType), content_sha256 = \(content.sha256),
          content_name = \(content.fileName), content_time = \(now), updated_at = \(now)
        WHERE seq = \(seq) AND deleted_at IS NULL AND status IN (1, 4)
        RETURNING seq
        """)
      guard updated != nil else {
        throw ServiceError.failedPrecondition(
          "the resource changed status meanwhile; content can change only in draft or rejected")
      }
      let stored = try await Self.fetched(tx, seq: seq)
      try Self.recordChange(tx, stored, op: .upsert)
      return stored
    }
  }

  // MARK: Usage

  func recordUsage(seq: Int64, _ e: UsageEvent) async throws -> ResourceStats {
    try await store.write { tx in
      let time = e.time.timeIntervalSince1970
      // The resource row is locked first: every usage write of one resource queues here, so a
      // rating's read of the old stars and the counters it adjusts cannot interleave with
      // another replica's.
      guard try await tx.one("SELECT seq FROM resources WHERE seq = \(seq) FOR UPDATE") != nil
      else { throw ServiceError.notFound("resource not found") }
      var record = true
      switch e.kind {
      case .view:
        try await tx.execute("UPDATE resources SET views = views + 1 WHERE seq = \(seq)")
      case .download:
        try await tx.execute("UPDATE resources SET downloads = downloads + 1 WHERE seq = \(seq)")
      case .favourite:
        record =
          try await tx.one(
            """
            INSERT INTO favourites (resource_seq, user_id, time) VALUES (\(seq), \(e.userID), \(time))
            ON CONFLICT DO NOTHING RETURNING resource_seq
            """) != nil
        if record {
          try await tx.execute(
            "UPDATE resources SET favourites = favourites + 1 WHERE seq = \(seq)")
        }
      case .unfavourite:
        record =
          try await tx.one(
            """
            DELETE FROM favourites WHERE resource_seq = \(seq) AND user_id = \(e.userID)
            RETURNING resource_seq
            """) != nil
        if record {
          try await tx.execute(
            "UPDATE resources SET favourites = favourites - 1 WHERE seq = \(seq)")
        }
      case .rate:
        let old = try await tx.one(
          "SELECT stars FROM ratings WHERE resource_seq = \(seq) AND user_id = \(e.userID)"
        ).map { try $0[0].decode(Int.self) }
        try await tx.execute(
          """
          INSERT INTO ratings (resource_seq, user_id, stars, time)
          VALUES (\(seq), \(e.userID), \(e.stars), \(time))
          ON CONFLICT (resource_seq, user_id) DO UPDATE SET stars = excluded.stars,
            time = excluded.time
          """)
        try await tx.execute(
          """
          UPDATE resources SET rating_sum = rating_sum + \(e.stars) - \(old ?? 0),
            rating_count = rating_count + \(old == nil ? 1 : 0)
          WHERE seq = \(seq)
          """)
      default:
        throw ServiceError.invalid("kind", "must be a known usage kind")
      }
      if record {
        try await tx.execute(
          """
          INSERT INTO usage_events (resource_seq, kind, user_id, user_path, stars, time)
          VALUES (\(seq), \(e.kind.rawValue), \(e.userID), \(e.userPath), \(e.stars), \(time))
          """)
      }
      guard
        let row = try await tx.one(
          """
          SELECT views, downloads, favourites, rating_count, rating_sum FROM resources
          WHERE seq = \(seq)
          """)
      else { throw ServiceError.notFound("resource not found") }
      let popularity = Ranking.popularity(
        views: try row["views"].decode(Int64.self), downloads: try row["downloads"].decode(Int64.self),
        favourites: try row["favourites"].decode(Int64.self),
        ratingSum: try row["rating_sum"].decode(Int64.self),
        ratingCount: try row["rating_count"].decode(Int64.self))
      guard
        let updated = try await tx.one(
          """
          UPDATE resources SET popularity = \(popularity) WHERE seq = \(seq)
          RETURNING id, views, downloads, favourites, rating_count, rating_sum, popularity
          """)
      else { throw ServiceError.notFound("resource not found") }
      return try Self.stats(updated)
    }
  }

  func popular(scope: OrgPath, start: Date?, end: Date?, filter: ResolvedFilter, limit: Int)
    async throws -> [(resource: StoredResource, usage: Ranking.PeriodUsage)]
  {
    try await store.read { tx in
      var c = Conditions()
      c.add(c.subtree("e.user_path", scope))
      if let start { c.add("e.time >= ?", start.timeIntervalSince1970) }
      if let end { c.add("e.time < ?", end.timeIntervalSince1970) }
      c.add("r.status = 3")
      Self.add(filter, to: &c)
      let rows = try await tx.query(
        c.query(
          """
          SELECT e.resource_seq AS seq,
            count(*) FILTER (WHERE e.kind = 1) AS views,
            count(*) FILTER (WHERE e.kind = 2) AS downloads,
            count(*) FILTER (WHERE e.kind = 3) AS favourites,
            count(*) FILTER (WHERE e.kind = 4) AS unfavourites,
            count(*) FILTER (WHERE e.kind = 5) AS ratings,
            COALESCE(sum(e.stars) FILTER (WHERE e.kind = 5), 0)::bigint AS stars
          FROM usage_events e JOIN resources r ON r.seq = e.resource_seq
          WHERE \(c.sql) GROUP BY e.resource_seq
          """))
      var scored: [(seq: Int64, usage: Ranking.PeriodUsage, score: Double)] = try rows.map { row in
        let u = Ranking.PeriodUsage(
          views: try row["views"].decode(Int64.self),
          downloads: try row["downloads"].decode(Int64.self),
          favourites: try row["favourites"].decode(Int64.self),
          unfavourites: try row["unfavourites"].decode(Int64.self),
          ratings: try row["ratings"].decode(Int64.self),
          ratingStars: try row["stars"].decode(Int64.self))
        return (try row["seq"].decode(Int64.self), u, Ranking.periodScore(u))
      }
      scored.sort { $0.score != $1.score ? $0.score > $1.score : $0.seq > $1.seq }
      let top = Array(scored.prefix(limit))
      if top.isEmpty { return [] }
      let seqs = top.map(\.seq)
      let fetched = try await tx.query(
        """
        SELECT \(unescaped: Self.columns) FROM resources r
        WHERE r.seq = ANY(\(seqs)) AND r.deleted_at IS NULL
        """
      ).map(Self.decode)
      let bySeq = Dictionary(fetched.map { ($0.seq, $0) }, uniquingKeysWith: { a, _ in a })
      return top.compactMap { item in bySeq[item.seq].map { ($0, item.usage) } }
    }
  }

  func recommendationCandidates(
    codes: [String], filter: ResolvedFilter, viewer: Viewer, limit: Int
  ) async throws -> [(resource: StoredResource, matched: [String])] {
    var c = Conditions()
    c.add("k.code = ANY(?)", codes)
    c.add("r.status = 3")
    Self.add(filter, to: &c)
    Self.add(viewer, to: &c)
    let sql = """
      SELECT \(Self.columns), string_agg(k.code, E'\\n') AS matched, count(*) AS n
      FROM resource_knowledge_points k JOIN resources r ON r.seq = k.resource_seq
      WHERE \(c.sql) GROUP BY r.seq ORDER BY n DESC, r.popularity DESC LIMIT \(c.bind(limit))
      """
    return try await store.query(c.query(sql)).map { row in
      (
        try Self.decode(row),
        SQLiteCatalogueStore.split(try row["matched"].decode(String.self)).sorted()
      )
    }
  }

  // MARK: Change feed

  func changes(after: Int64, limit: Int, scopes: [OrgPath]) async throws
    -> (changes: [Smartschool_Common_V1_Change], hasMore: Bool)
  {
    try await store.listChanges(after: after, limit: limit, scopes: scopes, unscoped: [])
  }
}
