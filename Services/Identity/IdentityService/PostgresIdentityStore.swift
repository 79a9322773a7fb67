import Foundation
import PostgresNIO
import ServiceRuntime
import SmartSchoolModel

/// The PostgreSQL implementation of ``IdentityStore``, with the SQLite one's semantics
/// statement for statement; any number of replicas may share its database. What differs:
/// usernames compare and sort by `lower()`, a failed statement inside an import runs under a
/// savepoint (PostgreSQL refuses every later statement of a transaction once one failed),
/// audit sequences come from a commit-ordered counter, and signing keys rotate under an
/// advisory lock.
final class PostgresIdentityStore: IdentityStore {
  let store: PostgresStore
  /// ``userWithBindings(id:)`` by user id, as in ``SQLiteIdentityStore``; the version also
  /// moves on other replicas' writes (notified by PostgreSQL).
  private let accounts: StoreCache<String, (User, [Binding])>

  /// The store, holding up to `accountCacheEntries` accounts read by
  /// ``userWithBindings(id:)`` in memory (0: none).
  init(store: PostgresStore, accountCacheEntries: Int = 8192) async throws {
    self.store = store
    self.accounts = StoreCache(
      version: try await store.watch(["users", "role_bindings", "orgs"]),
      capacity: accountCacheEntries)
  }

  // MARK: Row mapping

  private static let orgSelect = """
    SELECT o.id, o.code, o.name, o.kind, o.parent_id, o.path, o.school_kind, o.stages,
      o.managing_school_id, o.grade, o.school_year, o.active, o.created_at, o.updated_at,
      p.code AS parent_code, m.code AS managing_code
    FROM orgs o LEFT JOIN orgs p ON p.id = o.parent_id
    LEFT JOIN orgs m ON m.id = o.managing_school_id
    """

  private static let userSelect = """
    SELECT u.id, u.external_id, u.username, u.display_name, u.kind, u.org_id, u.birth_year,
      u.status, u.locked_until, u.created_at, u.updated_at, o.code AS org_code, o.path AS org_path
    FROM users u LEFT JOIN orgs o ON o.id = u.org_id
    """

  /// The users an import batch names by external id ($1) or lower-cased username ($2), a
  /// user named both ways coming twice: one index probe a key. `external_id = ANY($1) OR
  /// lower(username) = ANY($2)` of a batch's thousands of keys made the planner scan the whole
  /// table every batch, ever slower as the table grows; a LATERAL subquery with LIMIT 1 is
  /// never flattened into a join, so each key is looked up on its own.
  private static let importUserSelect = """
    SELECT u.id, u.external_id, u.username, u.display_name, u.kind, u.org_id, u.birth_year,
      u.status, u.locked_until, u.created_at, u.updated_at, o.code AS org_code, o.path AS org_path
    FROM (
      SELECT x.* FROM unnest($1::text[]) AS k(key),
        LATERAL (SELECT * FROM users WHERE external_id = k.key LIMIT 1) x
      UNION ALL
      SELECT x.* FROM unnest($2::text[]) AS k(key),
        LATERAL (SELECT * FROM users WHERE lower(username) = k.key LIMIT 1) x) u
    LEFT JOIN orgs o ON o.id = u.org_id
    """

  private static let bindingSelect = """
    SELECT b.id, b.user_id, b.role, b.org_id, b.granted_by, b.created_at, o.code AS org_code,
      o.path AS org_path
    FROM role_bindings b LEFT JOIN orgs o ON o.id = b.org_id
    """

  private static func date(_ cell: PostgresCell) throws -> Date {
    Date(timeIntervalSince1970: try cell.decode(Double.self))
  }

  static func org(_ row: PostgresRandomAccessRow) throws -> Org {
    var o = Org()
    o.id = try row["id"].decode(String.self)
    o.code = try row["code"].decode(String.self)
    o.name = try row["name"].decode(String.self)
    o.kind = .init(rawValue: try row["kind"].decode(Int.self)) ?? .unspecified
    o.parentID = try row["parent_id"].decode(String?.self) ?? ""
    o.parentCode = try row["parent_code"].decode(String?.self) ?? ""
    o.path = try row["path"].decode(String.self)
    o.schoolKind = .init(rawValue: try row["school_kind"].decode(Int.self)) ?? .unspecified
    let stages = try row["stages"].decode(String.self)
    o.stages = stages.split(separator: ",").compactMap { Int($0) }.compactMap {
      Smartschool_Common_V1_Stage(rawValue: $0)
    }
    o.managingSchoolID = try row["managing_school_id"].decode(String?.self) ?? ""
    o.managingSchoolCode = try row["managing_code"].decode(String?.self) ?? ""
    o.grade = Int32(try row["grade"].decode(Int.self))
    o.schoolYear = try row["school_year"].decode(String.self)
    o.active = try row["active"].decode(Int.self) != 0
    o.createTime = .init(date: try date(row["created_at"]))
    o.updateTime = .init(date: try date(row["updated_at"]))
    return o
  }

  static func user(_ row: PostgresRandomAccessRow) throws -> User {
    var u = User()
    u.id = try row["id"].decode(String.self)
    u.externalID = try row["external_id"].decode(String.self)
    u.username = try row["username"].decode(String.self)
    u.displayName = try row["display_name"].decode(String.self)
    u.kind = .init(rawValue: try row["kind"].decode(Int.self)) ?? .unspecified
    u.orgID = try row["org_id"].decode(String?.self) ?? ""
    u.orgCode = try row["org_code"].decode(String?.self) ?? ""
    u.orgPath = try row["org_path"].decode(String?.self) ?? ""
    u.birthYear = Int32(try row["birth_year"].decode(Int.self))
    u.status = .init(rawValue: try row["status"].decode(Int.self)) ?? .unspecified
    if let locked = try row["locked_until"].decode(Double?.self),
      locked > Date().timeIntervalSince1970
    {
      u.lockedUntil = .init(date: Date(timeIntervalSince1970: locked))
    }
    u.createTime = .init(date: try date(row["created_at"]))
    u.updateTime = .init(date: try date(row["updated_at"]))
    return u
  }

  static func binding(_ row: PostgresRandomAccessRow) throws -> Binding {
    var b = Binding()
    b.id = try row["id"].decode(String.self)
    b.userID = try row["user_id"].decode(String.self)
    b.role = Role(rawValue: try row["role"].decode(String.self))?.proto ?? .unspecified
    b.orgID = try row["org_id"].decode(String?.self) ?? ""
    b.orgCode = try row["org_code"].decode(String?.self) ?? ""
    b.orgPath = try row["org_path"].decode(String?.self) ?? "/"
    b.grantedBy = try row["granted_by"].decode(String.self)
    b.createTime = .init(date: try date(row["created_at"]))
    return b
  }

  static func storedKey(_ row: PostgresRandomAccessRow) throws -> StoredKey {
    StoredKey(
      id: try row["id"].decode(String.self), privateKey: try row["private_key"].decode(Data.self),
      publicKey: try row["public_key"].decode(Data.self),
      createdAt: try date(row["created_at"]),
      retireAt: try row["retire_at"].decode(Double?.self).map { Date(timeIntervalSince1970: $0) },
      current: try row["current"].decode(Int.self) != 0)
  }

  static func auditEvent(_ row: PostgresRandomAccessRow) throws
    -> Smartschool_Identity_V1_AuditEvent
  {
    var e = Smartschool_Identity_V1_AuditEvent()
    e.sequence = try row["sequence"].decode(Int64.self)
    e.time = .init(date: try date(row["time"]))
    e.actorID = try row["actor_id"].decode(String.self)
    e.action = try row["action"].decode(String.self)
    e.target = try row["target"].decode(String.self)
    e.orgID = try row["org_id"].decode(String.self)
    e.orgPath = try row["org_path"].decode(String.self)
    e.detail = try row["detail"].decode(String.self)
    return e
  }

  /// A statement built piece by piece: `bind` appends a parameter and answers its `$n`.
  private struct Statement {
    var sql: String
    var binds = PostgresBindings()

    init(_ sql: String) { self.sql = sql }

    mutating func bind<V: PostgresDynamicTypeEncodable>(_ value: V) -> String {
      binds.append(value)
      return "$\(binds.count)"
    }

    /// Appends `fragment` with every `?` in it standing for `value` (bound once).
    mutating func add<V: PostgresDynamicTypeEncodable>(_ fragment: String, _ value: V) {
      let parameter = bind(value)
      sql += fragment.replacingOccurrences(of: "?", with: parameter)
    }

    /// `(starts_with(column, $a) OR …)` for a list of scopes; nil when a scope is the root.
    mutating func scopeClause(_ column: String, _ scopes: [OrgPath]) -> String? {
      if scopes.contains(.root) { return nil }
      if scopes.isEmpty { return "FALSE" }
      let terms = scopes.map { "starts_with(\(column), \(bind($0.description)))" }
      return "(" + terms.joined(separator: " OR ") + ")"
    }

    var query: PostgresQuery { PostgresQuery(unsafeSQL: sql, binds: binds) }
  }

  // MARK: Orgs

  private func fetchOrg(_ tx: PostgresTransaction, id: String) async throws -> Org? {
    try await tx.one(
      PostgresQuery(unsafeSQL: Self.orgSelect + " WHERE o.id = $1", binds: Self.binds(id))
    ).map(Self.org)
  }

  private func fetchOrg(_ tx: PostgresTransaction, code: String) async throws -> Org? {
    try await tx.one(
      PostgresQuery(unsafeSQL: Self.orgSelect + " WHERE o.code = $1", binds: Self.binds(code))
    ).map(Self.org)
  }

  private static func binds(_ value: String) -> PostgresBindings {
    var binds = PostgresBindings()
    binds.append(value)
    return binds
  }

  func org(id: String) async throws -> Org? {
    try await store.read { tx in try await self.fetchOrg(tx, id: id) }
  }

  func org(code: String) async throws -> Org? {
    try await store.read { tx in try await self.fetchOrg(tx, code: code) }
  }

  private func recordOrgChange(_ tx: PostgresTransaction, _ org: Org) throws {
    try tx.recordChange(
      entity: "org", id: org.id, naturalKey: org.code, op: .upsert, orgPath: org.path,
      payload: org)
  }

  private static func stages(_ org: Org) -> String {
    org.stages.map { String($0.rawValue) }.joined(separator: ",")
  }

  private func insertOrg(_ tx: PostgresTransaction, _ org: Org, parent: Org?, managingSchool: Org?)
    async throws -> Org
  {
    if let managingSchool {
      try OrgRules.checkSameCounty(
        managingSchool, parentID: parent?.id ?? "", field: "org.managing_school_code")
      try await checkManagedCount(tx, managingSchool, excluding: "")
    }
    let id = EntityID.make()
    let path = (parent.flatMap { OrgPath($0.path) } ?? .root).appending(id)
    let now = Date().timeIntervalSince1970
    try await tx.execute(
      """
      INSERT INTO orgs (id, code, name, kind, parent_id, path, school_kind, stages,
        managing_school_id, grade, school_year, active, created_at, updated_at)
      VALUES (\(id), \(org.code), \(org.name), \(org.kind.rawValue), \(parent?.id),
        \(path.description), \(org.schoolKind.rawValue), \(Self.stages(org)),
        \(managingSchool?.id), \(Int(org.grade)), \(org.schoolYear), 1, \(now), \(now))
      """)
    let created = try await fetchOrg(tx, id: id)!
    try recordOrgChange(tx, created)
    return created
  }

  func insertOrg(_ org: Org, parent: Org?, managingSchool: Org?) async throws -> Org {
    try await store.write { tx in
      if try await self.fetchOrg(tx, code: org.code) != nil {
        throw ServiceError.alreadyExists("an org with code '\(org.code)' already exists")
      }
      return try await self.insertOrg(tx, org, parent: parent, managingSchool: managingSchool)
    }
  }

  /// Writes the editable fields of `org` (by id); moves it (and its subtree) under `newParent`
  /// when given; sets the managing school when `managingSchool` is non-nil.
  private func updateOrg(
    _ tx: PostgresTransaction, _ org: Org, newParent: Org?, managingSchool: Org??
  ) async throws -> Org {
    guard let current = try await fetchOrg(tx, id: org.id) else {
      throw ServiceError.notFound("org '\(org.id)' not found")
    }
    let now = Date().timeIntervalSince1970
    var managingID: String? = current.managingSchoolID.isEmpty ? nil : current.managingSchoolID
    if let m = managingSchool { managingID = m?.id }
    try await checkManagement(tx, current, newParentID: newParent?.id, managingID: managingID)
    try await tx.execute(
      """
      UPDATE orgs SET name = \(org.name), school_kind = \(org.schoolKind.rawValue),
        stages = \(Self.stages(org)), managing_school_id = \(managingID),
        grade = \(Int(org.grade)), school_year = \(org.schoolYear), updated_at = \(now)
      WHERE id = \(org.id)
      """)
    var moved: [String] = []
    if let newParent, newParent.id != current.parentID {
      let oldPath = current.path
      let newPath = OrgPath(newParent.path)!.appending(current.id).description
      // Rewrites the prefix of every path in the subtree (the org included).
      moved = try await tx.query(
        """
        UPDATE orgs SET path = \(newPath) || substr(path, \(Int32(oldPath.count + 1))),
          updated_at = \(now)
        WHERE starts_with(path, \(oldPath)) RETURNING id
        """
      ).map { try $0[0].decode(String.self) }.sorted()
      try await tx.execute(
        "UPDATE orgs SET parent_id = \(newParent.id) WHERE id = \(org.id)")
    }
    let updated = try await fetchOrg(tx, id: org.id)!
    try recordOrgChange(tx, updated)
    for id in moved where id != org.id {
      if let o = try await fetchOrg(tx, id: id) { try recordOrgChange(tx, o) }
    }
    return updated
  }

  /// See ``SQLiteIdentityStore``'s: a teaching point's managing school stays in its county,
  /// a central school does not leave the county of the teaching points it manages.
  private func checkManagement(
    _ tx: PostgresTransaction, _ current: Org, newParentID: String?, managingID: String?
  ) async throws {
    let parentID = newParentID ?? current.parentID
    let moves = parentID != current.parentID
    let managingChanged = (managingID ?? "") != current.managingSchoolID
    if let managingID, moves || managingChanged {
      guard let managing = try await fetchOrg(tx, id: managingID) else {
        throw ServiceError.notFound("org '\(managingID)' not found")
      }
      try OrgRules.checkSameCounty(
        managing, parentID: parentID,
        field: managingChanged ? "org.managing_school_code" : "org.parent_code")
      if managingChanged { try await checkManagedCount(tx, managing, excluding: current.id) }
    }
    guard moves else { return }
    let stranded = try await tx.one(
      """
      SELECT code FROM orgs WHERE managing_school_id = \(current.id)
        AND parent_id IS DISTINCT FROM \(parentID)
      ORDER BY code LIMIT 1
      """
    )?[0].decode(String.self)
    if let stranded {
      throw ServiceError.invalid(
        "org.parent_code",
        "the school manages teaching point '\(stranded)' of its county; give that teaching point "
          + "another managing school first")
    }
  }

  private func checkManagedCount(_ tx: PostgresTransaction, _ school: Org, excluding id: String)
    async throws
  {
    let count =
      try await tx.one(
        """
        SELECT COUNT(*) FROM orgs WHERE managing_school_id = \(school.id) AND id <> \(id)
          AND active = 1
        """
      )?[0].decode(Int.self) ?? 0
    if count >= OrgRules.maxManagedTeachingPoints {
      throw ServiceError.invalid(
        "org.managing_school_code",
        "the school '\(school.code)' already manages \(count) teaching points, the most allowed")
    }
  }

  func managedTeachingPoints(schoolIDs: [String]) async throws -> [String: [String]] {
    if schoolIDs.isEmpty { return [:] }
    return try await store.read { tx in
      // The same county only: a pairing across counties (from before the rule) reaches nothing.
      let rows = try await tx.query(
        """
        SELECT t.managing_school_id AS school, t.id AS point FROM orgs t
        JOIN orgs s ON s.id = t.managing_school_id AND s.parent_id = t.parent_id
        WHERE t.active = 1 AND t.managing_school_id = ANY(\(schoolIDs))
        ORDER BY t.id
        """)
      var result: [String: [String]] = [:]
      for row in rows {
        result[try row["school"].decode(String.self), default: []].append(
          try row["point"].decode(String.self))
      }
      return result
    }
  }

  func updateOrg(_ org: Org, newParent: Org?, managingSchool: Org??) async throws -> Org {
    try await store.write { tx in
      try await self.updateOrg(tx, org, newParent: newParent, managingSchool: managingSchool)
    }
  }

  func deactivateOrg(id: String) async throws -> Org {
    try await store.write { tx in
      try await tx.execute(
        "UPDATE orgs SET active = 0, updated_at = \(Date().timeIntervalSince1970) WHERE id = \(id)"
      )
      guard let org = try await self.fetchOrg(tx, id: id) else {
        throw ServiceError.notFound("org '\(id)' not found")
      }
      try self.recordOrgChange(tx, org)
      return org
    }
  }

  func activeChildCount(of id: String) async throws -> Int {
    try await store.read { tx in
      try await tx.one("SELECT COUNT(*) FROM orgs WHERE parent_id = \(id) AND active = 1")?[0]
        .decode(Int.self) ?? 0
    }
  }

  func listOrgs(
    under path: OrgPath?, parentID: String?, kind: Smartschool_Common_V1_OrgKind?,
    includeInactive: Bool, scopes: [OrgPath], afterCode: String?, limit: Int
  ) async throws -> [Org] {
    var s = Statement(Self.orgSelect + " WHERE TRUE")
    if let parentID {
      s.add(" AND o.parent_id = ?", parentID)
    } else if let path {
      s.add(" AND starts_with(o.path, ?) AND o.path <> ?", path.description)
    }
    if let kind { s.add(" AND o.kind = ?", kind.rawValue) }
    if !includeInactive { s.sql += " AND o.active = 1" }
    if let clause = s.scopeClause("o.path", scopes) { s.sql += " AND " + clause }
    if let afterCode { s.add(" AND o.code > ?", afterCode) }
    s.add(" ORDER BY o.code LIMIT ?", limit)
    let query = s.query
    return try await store.read { tx in try await tx.query(query).map(Self.org) }
  }

  /// Imports a batch of org rows, decided in order as ``OrgImportStep`` says, row by row as
  /// SQLite does, in a handful of statements: one read of every org the batch names (by code,
  /// as a row, a parent or a managing school), then each row decided against what was read
  /// and what the rows before it planned. New orgs are written together (one INSERT from
  /// arrays, read back in one statement for their feed events) before any other write and at
  /// the end, so a class finds the school planned rows before it. A teaching point (its managing
  /// school's count is checked in the store) and a changed org go alone as before, and the
  /// names are read again after a change (a move rewrites the paths below it). Should the
  /// batch's writes fail (a code taken meanwhile by another writer), they are undone and the
  /// batch imported one statement after another, which refuses such rows alone.
  func importOrgs(
    _ rows: [(index: Int, row: Org)], authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> (result: BatchOutcome, deferred: [(index: Int, row: Org)]) {
    try await store.write { tx in
      do {
        return try await tx.savepoint {
          try await self.importOrgsTogether(tx, rows, authorize: authorize)
        }
      } catch is ServiceError {
        return try await self.importOrgsOneByOne(tx, rows, authorize: authorize)
      }
    }
  }

  private func importOrgsTogether(
    _ tx: PostgresTransaction, _ rows: [(index: Int, row: Org)],
    authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> (result: BatchOutcome, deferred: [(index: Int, row: Org)]) {
    var result = BatchOutcome()
    var deferred: [(index: Int, row: Org)] = []
    let codes = Array(
      Set(rows.flatMap { [$0.row.code, $0.row.parentCode, $0.row.managingSchoolCode] })
        .subtracting([""]))
    var known = try await orgs(tx, codes: codes)
    var planned: [Org] = []
    func write() async throws {
      guard !planned.isEmpty else { return }
      let now = Date().timeIntervalSince1970
      try await tx.execute(
        """
        INSERT INTO orgs (id, code, name, kind, parent_id, path, school_kind, stages,
          managing_school_id, grade, school_year, active, created_at, updated_at)
        SELECT u.id, u.code, u.name, u.kind, NULLIF(u.parent_id, ''), u.path, u.school_kind,
          u.stages, NULL, u.grade, u.school_year, 1, \(now), \(now)
        FROM unnest(\(planned.map(\.id))::text[], \(planned.map(\.code))::text[],
          \(planned.map(\.name))::text[], \(planned.map { $0.kind.rawValue })::int8[],
          \(planned.map(\.parentID))::text[], \(planned.map(\.path))::text[],
          \(planned.map { $0.schoolKind.rawValue })::int8[], \(planned.map(Self.stages))::text[],
          \(planned.map { Int($0.grade) })::int8[], \(planned.map(\.schoolYear))::text[])
          AS u(id, code, name, kind, parent_id, path, school_kind, stages, grade, school_year)
        """)
      var binds = PostgresBindings()
      binds.append(planned.map(\.id))
      var stored: [String: Org] = [:]
      for org in try await tx.query(
        PostgresQuery(unsafeSQL: Self.orgSelect + " WHERE o.id = ANY($1)", binds: binds)
      ).map(Self.org) {
        stored[org.id] = org
      }
      for org in planned {
        guard let created = stored[org.id] else {
          throw ServiceError.aborted("org '\(org.code)' was not written")
        }
        known[created.code] = created
        try recordOrgChange(tx, created)
      }
      planned = []
    }
    for (index, row) in rows {
      func reject(_ field: String, _ reason: String) {
        result.errors.append(.row(index, key: row.code, field: field, reason))
      }
      func named(_ code: String) -> Org? { code.isEmpty ? nil : known[code] }
      let step = OrgImportStep.decide(
        row, parent: named(row.parentCode), managing: named(row.managingSchoolCode),
        existing: named(row.code), authorize: authorize)
      if case .insert = step, row.managingSchoolCode.isEmpty {
        let parent = named(row.parentCode)
        var org = row
        org.id = EntityID.make()
        org.path = (parent.flatMap { OrgPath($0.path) } ?? .root).appending(org.id).description
        org.parentID = parent?.id ?? ""
        org.active = true
        planned.append(org)
        known[org.code] = org
        result.created += 1
        continue
      }
      if case .update(_, changes: false) = step {
        result.updated += 1
        continue
      }
      if case .defer = step {
        deferred.append((index, row))
        continue
      }
      if case .reject(let field, let reason) = step {
        reject(field, reason)
        continue
      }
      // A teaching point or a changed org: alone, after the planned ones are written (it may
      // name them), with its parent and managing school as stored.
      try await write()
      let (parent, managing) = (named(row.parentCode), named(row.managingSchoolCode))
      var changed = false
      do {
        switch step {
        case .update(let update, let changes):
          if changes {
            _ = try await tx.savepoint {
              try await self.updateOrg(
                tx, update, newParent: parent, managingSchool: .some(managing))
            }
            changed = true
          }
          result.updated += 1
        default:
          let created = try await tx.savepoint {
            try await self.insertOrg(tx, row, parent: parent, managingSchool: managing)
          }
          known[created.code] = created
          result.created += 1
        }
      } catch ServiceError.invalidArgument(let violations) where !violations.isEmpty {
        reject(violations[0].field, violations[0].description)
      } catch let error as ServiceError {
        reject("org", error.message)
      }
      if changed { known = try await orgs(tx, codes: codes) }
    }
    try await write()
    return (result, deferred)
  }

  /// The orgs of `codes`, by code.
  private func orgs(_ tx: PostgresTransaction, codes: [String]) async throws -> [String: Org] {
    guard !codes.isEmpty else { return [:] }
    var binds = PostgresBindings()
    binds.append(codes)
    var found: [String: Org] = [:]
    for org in try await tx.query(
      PostgresQuery(unsafeSQL: Self.orgSelect + " WHERE o.code = ANY($1)", binds: binds)
    ).map(Self.org) {
      found[org.code] = org
    }
    return found
  }

  /// The import of `rows` a statement at a time: three reads, then the write under its own
  /// savepoint, a row.
  private func importOrgsOneByOne(
    _ tx: PostgresTransaction, _ rows: [(index: Int, row: Org)],
    authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> (result: BatchOutcome, deferred: [(index: Int, row: Org)]) {
    var result = BatchOutcome()
    var deferred: [(index: Int, row: Org)] = []
    for (index, row) in rows {
      func reject(_ field: String, _ reason: String) {
        result.errors.append(.row(index, key: row.code, field: field, reason))
      }
      func fetch(_ code: String) async throws -> Org? {
        code.isEmpty ? nil : try await self.fetchOrg(tx, code: code)
      }
      let parent = try await fetch(row.parentCode)
      let managing = try await fetch(row.managingSchoolCode)
      do {
        // A failed statement would end the transaction: each write under a savepoint.
        switch OrgImportStep.decide(
          row, parent: parent, managing: managing, existing: try await fetch(row.code),
          authorize: authorize)
        {
        case .defer: deferred.append((index, row))
        case .reject(let field, let reason): reject(field, reason)
        case .update(let update, let changes):
          if changes {
            _ = try await tx.savepoint {
              try await self.updateOrg(
                tx, update, newParent: parent, managingSchool: .some(managing))
            }
          }
          result.updated += 1
        case .insert:
          _ = try await tx.savepoint {
            try await self.insertOrg(tx, row, parent: parent, managingSchool: managing)
          }
          result.created += 1
        }
      } catch ServiceError.invalidArgument(let violations) where !violations.isEmpty {
        reject(violations[0].field, violations[0].description)
      } catch let error as ServiceError {
        reject("org", error.message)
      }
    }
    return (result, deferred)
  }

  // MARK: Users

  /// The user matching `clause`, in which `$1` stands for `value`.
  private func fetchUser(_ tx: PostgresTransaction, where clause: String, _ value: String)
    async throws -> User?
  {
    try await tx.one(
      PostgresQuery(unsafeSQL: Self.userSelect + " WHERE \(clause)", binds: Self.binds(value))
    ).map(Self.user)
  }

  private static let byID = "u.id = $1"
  private static let byExternalID = "u.external_id = $1"
  private static let byUsername = "lower(u.username) = lower($1)"

  func user(id: String) async throws -> User? {
    try await store.read { tx in try await self.fetchUser(tx, where: Self.byID, id) }
  }

  func user(externalID: String) async throws -> User? {
    try await store.read { tx in
      try await self.fetchUser(tx, where: Self.byExternalID, externalID)
    }
  }

  func user(username: String) async throws -> User? {
    try await store.read { tx in try await self.fetchUser(tx, where: Self.byUsername, username) }
  }

  private func recordUserChange(_ tx: PostgresTransaction, _ user: User) throws {
    tx.recordChanges([try UserImportPlan.change(user)])
  }

  /// The feed event of a user as it now is.

  private func insertUser(
    _ tx: PostgresTransaction, _ user: User, org: Org?, passwordHash: String?,
    mustChangePassword: Bool, clientID: String?, clientSecretHash: String?
  ) async throws -> User {
    let id = EntityID.make()
    let now = Date().timeIntervalSince1970
    let status: Smartschool_Identity_V1_UserStatus =
      passwordHash != nil || clientSecretHash != nil ? .active : .pendingActivation
    try await tx.execute(
      """
      INSERT INTO users (id, external_id, username, display_name, kind, org_id, birth_year,
        status, password_hash, password_change_required, client_id, client_secret_hash,
        created_at, updated_at)
      VALUES (\(id), \(user.externalID), \(user.username), \(user.displayName),
        \(user.kind.rawValue), \(org?.id), \(Int(user.birthYear)), \(status.rawValue),
        \(passwordHash), \(mustChangePassword ? 1 : 0), \(clientID), \(clientSecretHash),
        \(now), \(now))
      """)
    let created = try await fetchUser(tx, where: Self.byID, id)!
    try recordUserChange(tx, created)
    return created
  }

  private func checkUserKeys(_ tx: PostgresTransaction, _ user: User, excluding id: String?)
    async throws
  {
    if let other = try await fetchUser(tx, where: Self.byExternalID, user.externalID),
      other.id != id
    {
      throw ServiceError.alreadyExists(
        "a user with external id '\(user.externalID)' already exists")
    }
    if let other = try await fetchUser(tx, where: Self.byUsername, user.username), other.id != id {
      throw ServiceError.alreadyExists("username '\(user.username)' is taken")
    }
  }

  func insertUser(
    _ user: User, org: Org?, passwordHash: String?, mustChangePassword: Bool, clientID: String?,
    clientSecretHash: String?
  ) async throws -> User {
    try await store.write { tx in
      try await self.checkUserKeys(tx, user, excluding: nil)
      return try await self.insertUser(
        tx, user, org: org, passwordHash: passwordHash, mustChangePassword: mustChangePassword,
        clientID: clientID, clientSecretHash: clientSecretHash)
    }
  }

  private func updateUser(_ tx: PostgresTransaction, _ user: User, org: Org?) async throws
    -> User
  {
    try await checkUserKeys(tx, user, excluding: user.id)
    try await tx.execute(
      """
      UPDATE users SET username = \(user.username), display_name = \(user.displayName),
        org_id = COALESCE(\(org?.id)::text, org_id), birth_year = \(Int(user.birthYear)),
        kind = \(user.kind.rawValue), updated_at = \(Date().timeIntervalSince1970)
      WHERE id = \(user.id)
      """)
    guard let updated = try await fetchUser(tx, where: Self.byID, user.id) else {
      throw ServiceError.notFound("user '\(user.id)' not found")
    }
    try recordUserChange(tx, updated)
    return updated
  }

  func updateUser(_ user: User, org: Org?) async throws -> User {
    try await store.write { tx in try await self.updateUser(tx, user, org: org) }
  }

  func deactivateUser(id: String) async throws -> User {
    try await store.write { tx in
      let now = Date().timeIntervalSince1970
      let deactivated = Smartschool_Identity_V1_UserStatus.deactivated.rawValue
      try await tx.execute(
        "UPDATE users SET status = \(deactivated), updated_at = \(now) WHERE id = \(id)")
      _ = try await self.revokeSessions(tx, userID: id, except: nil, reason: "user deactivated")
      guard let user = try await self.fetchUser(tx, where: Self.byID, id) else {
        throw ServiceError.notFound("user '\(id)' not found")
      }
      try self.recordUserChange(tx, user)
      return user
    }
  }

  func reactivateUser(id: String) async throws -> User? {
    try await store.write { tx in
      typealias Status = Smartschool_Identity_V1_UserStatus
      let changed = try await tx.one(
        """
        UPDATE users SET status = CASE
            WHEN password_hash IS NOT NULL OR client_secret_hash IS NOT NULL
            THEN \(Status.active.rawValue) ELSE \(Status.pendingActivation.rawValue) END,
          failed_logins = 0, locked_until = NULL, updated_at = \(Date().timeIntervalSince1970)
        WHERE id = \(id) AND status = \(Status.deactivated.rawValue)
        RETURNING id
        """)
      guard changed != nil, let user = try await self.fetchUser(tx, where: Self.byID, id) else {
        return nil
      }
      try self.recordUserChange(tx, user)
      return user
    }
  }

  func listUsers(
    scopes: [OrgPath], kind: Smartschool_Identity_V1_UserKind?, namePrefix: String,
    includeInactive: Bool, afterUsername: String?, limit: Int
  ) async throws -> [User] {
    var s = Statement(Self.userSelect + " WHERE TRUE")
    if let clause = s.scopeClause("o.path", scopes) { s.sql += " AND " + clause }
    if let kind { s.add(" AND u.kind = ?", kind.rawValue) }
    if !namePrefix.isEmpty {
      s.add(
        " AND (starts_with(u.display_name, ?) OR starts_with(lower(u.username), lower(?)))",
        namePrefix)
    }
    if !includeInactive {
      s.add(" AND u.status <> ?", Smartschool_Identity_V1_UserStatus.deactivated.rawValue)
    }
    if let afterUsername { s.add(" AND lower(u.username) > lower(?)", afterUsername) }
    s.add(" ORDER BY lower(u.username) LIMIT ?", limit)
    let query = s.query
    return try await store.read { tx in try await tx.query(query).map(Self.user) }
  }

  /// Imports a batch through ``UserImportPlan`` in a handful of statements whatever its size:
  /// one read of the orgs, one of the users the rows name, one UPDATE of the changed users and
  /// one INSERT of the new ones (each from arrays through `unnest`), and the feed events in
  /// bulk at commit. Imports take turns per batch (an advisory lock taken before the reads),
  /// so two replicas importing the same rows at once see each other's users: nothing is lost
  /// or made twice, and no row is refused for a user the other import made.
  func importUsers(
    _ rows: [(index: Int, row: User)], authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> BatchOutcome {
    try await store.write { tx in
      try await tx.lock(Self.importLock)
      return try await self.importUsers(tx, rows, authorize: authorize)
    }
  }

  /// Reads the batch's state in a read-only snapshot and plans it, with its feed events, while
  /// the batch before it commits. The keys of its first, middle and last rows are read first:
  /// when none of them is stored, the batch is taken for new users (a first import, a new
  /// school year's students) and the other keys are not read, saving the server two index
  /// probes a row; should one of them be stored after all, the users' unique indexes refuse
  /// the copy and the commit reads and decides the batch again.
  func stageUserImport(
    _ rows: [(index: Int, row: User)], authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> StagedUserImport {
    let orgCodes = UserImportState.orgCodes(rows)
    let sample = rows.count <= 3 ? rows : [rows[0], rows[rows.count / 2], rows[rows.count - 1]]
    let (state, versions) = try await store.read { tx in
      let sampled = try await self.importState(
        tx, orgCodes: orgCodes, sample.map(\.row.externalID),
        sample.map { $0.row.username.lowercased() })
      guard !sampled.state.users.isEmpty else { return sampled }
      let keys = UserImportState.keys(rows)
      return try await self.importState(tx, orgCodes: orgCodes, keys.externalIDs, keys.usernames)
    }
    let plan = UserImportPlan.plan(rows, state: state, authorize: authorize)
    let (planned, inserts) = (plan.events, plan.inserts)
    let encoded = Task {
      let events = try planned.map { try UserImportPlan.change($0.user) }
      return StagedUserImport.Encoded(
        events: events,
        copyRows: PostgresCopyRows(
          columns: Self.userCopyColumns.count, rows: inserts.map(Self.copyValues)),
        encodedEvents: PostgresEncodedChanges(events))
    }
    return StagedUserImport(
      rows, guess: .init(state: state, plan: plan, encoded: encoded, orgVersions: versions))
  }

  var userWritesInFlight: Int { 2 }

  /// Under the import lock, reads again the orgs and the users the stage found (not the keys
  /// it found free: a user made meanwhile under one of those fails the copy by its unique
  /// index). All unchanged, the guess is written as planned; a changed one, an update or the
  /// copy refused, and the batch is read and decided again, as if never staged.
  ///
  /// A batch the stage took for new users only (it found none of its keys) is copied without
  /// the lock: it reads no user, so the users' unique indexes are all its check. A user of its
  /// keys made by another writer, committed or not, fails the copy (once that writer ends),
  /// and the batch is then decided again under the lock. So the batches of a first import
  /// copy two at a time, on two backends, instead of queueing for one lock.
  func importUsers(
    _ staged: StagedUserImport, authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> BatchOutcome {
    guard let guess = staged.guess else {
      return try await importUsers(staged.rows, authorize: authorize)
    }
    let newOnly = guess.state.users.isEmpty && guess.plan.updates.isEmpty
    let encoded = try await guess.encoded.value
    return try await store.write { tx in
      if !newOnly { try await tx.lock(Self.importLock) }
      if try await self.stillHolds(tx, guess) {
        do {
          return try await tx.savepoint {
            guard try await self.writeUpdates(tx, guess.plan.updates).isEmpty else {
              throw ServiceError.aborted("an update of the staged import was refused")
            }
            if let rows = encoded.copyRows {
              try await tx.copy(into: "users", columns: Self.userCopyColumns, encoded: rows)
            } else {
              try await self.copyUsers(tx, guess.plan.inserts)
            }
            if let events = encoded.encodedEvents {
              tx.recordChanges(events)
            } else {
              tx.recordChanges(encoded.events)
            }
            return guess.plan.outcome
          }
        } catch is ServiceError {}
      }
      if newOnly { try await tx.lock(Self.importLock) }
      return try await self.importUsers(tx, staged.rows, authorize: authorize)
    }
  }

  private static let importLock = "identity.import.users"

  /// Whether what `guess`'s stage read still holds in `tx`: the same users it found, and its
  /// orgs the same row versions (`xmin`: any write of an org makes a new one), which is all a
  /// stage's plan reads of them; two columns an org, not the whole org again.
  private func stillHolds(_ tx: PostgresTransaction, _ guess: StagedUserImport.Guess)
    async throws -> Bool
  {
    guard let versions = guess.orgVersions else {
      let (now, _) = try await importState(
        tx, orgCodes: Array(guess.state.orgs.keys), Array(guess.state.users.keys), [])
      return now == guess.state
    }
    var binds = PostgresBindings()
    binds.append(Array(versions.keys))
    var current: [String: String] = [:]
    current.reserveCapacity(versions.count)
    for row in try await tx.query(
      PostgresQuery(
        unsafeSQL: "SELECT code, xmin::text FROM orgs WHERE code = ANY($1)", binds: binds))
    {
      current[try row[0].decode(String.self)] = try row[1].decode(String.self)
    }
    guard current == versions else { return false }
    guard !guess.state.users.isEmpty else { return true }
    let (now, _) = try await importState(
      tx, orgCodes: [], Array(guess.state.users.keys), [])
    return now.users == guess.state.users
  }

  /// The orgs of `orgCodes` and the users of `externalIDs` and of the lower-cased `usernames`;
  /// with the orgs' row versions (`xmin`) by code.
  private func importState(
    _ tx: PostgresTransaction, orgCodes: [String], _ externalIDs: [String], _ usernames: [String]
  ) async throws -> (state: UserImportState, versions: [String: String]) {
    var state = UserImportState()
    var versions: [String: String] = [:]
    if !orgCodes.isEmpty {
      var binds = PostgresBindings()
      binds.append(orgCodes)
      for row in try await tx.query(
        PostgresQuery(unsafeSQL: Self.importOrgSelect, binds: binds))
      {
        let org = try Self.org(row)
        state.orgs[org.code] = org
        versions[org.code] = try row["version"].decode(String.self)
      }
    }
    guard !externalIDs.isEmpty || !usernames.isEmpty else { return (state, versions) }
    var binds = PostgresBindings()
    binds.append(externalIDs)
    binds.append(usernames)
    for user in try await tx.query(
      PostgresQuery(unsafeSQL: Self.importUserSelect, binds: binds)
    ).map(Self.user) {
      state.users[user.externalID] = user
    }
    return (state, versions)
  }

  /// The orgs of the codes `$1` with their row versions.
  private static let importOrgSelect =
    orgSelect.replacingOccurrences(of: "SELECT ", with: "SELECT o.xmin::text AS version, ")
    + " WHERE o.code = ANY($1)"

  /// The import of `rows` inside `tx`, which holds the import lock: read, plan, write. A
  /// write refused for a user the read did not see (another writer's, uncommitted then: a
  /// batch of new users copies without the lock) waited for that writer to end; the batch's
  /// writes are undone and it is read and decided again, seeing that user now. The third try
  /// reports what is still refused as taken meanwhile.
  private func importUsers(
    _ tx: PostgresTransaction, _ rows: [(index: Int, row: User)],
    authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> BatchOutcome {
    var attempt = 1
    while true {
      do {
        return try await tx.savepoint {
          try await self.decideUsers(tx, rows, authorize: authorize, final: attempt == 3)
        }
      } catch is ImportRaced {
        attempt += 1
      }
    }
  }

  /// A write of a batch refused for a user its read did not see: read and decide again.
  private struct ImportRaced: Error {}

  /// Reads, plans and writes `rows`; unless `final`, throws ``ImportRaced`` where a write is
  /// refused rather than dropping the refused rows.
  private func decideUsers(
    _ tx: PostgresTransaction, _ rows: [(index: Int, row: User)],
    authorize: @escaping @Sendable (OrgPath) -> Bool, final: Bool
  ) async throws -> BatchOutcome {
    let keys = UserImportState.keys(rows)
    let (state, _) = try await importState(
      tx, orgCodes: keys.orgCodes, keys.externalIDs, keys.usernames)
    var plan = UserImportPlan.plan(rows, state: state, authorize: authorize)
    // The feed events (a payload serialized each) are made on another core while the
    // users are written, not on the transaction's path between its statements.
    let planned = plan.events
    let events = Task { try planned.map { try UserImportPlan.change($0.user) } }
    // Updates first: one may free a username that a new user of the batch takes.
    let refused = try await writeUpdates(tx, plan.updates)
    if !final && !refused.isEmpty { throw ImportRaced() }
    plan.dropUpdates(refused)
    let missing = try await copyOrInsertUsers(tx, plan.inserts)
    if !final && !missing.isEmpty { throw ImportRaced() }
    plan.dropInserts(missing) {
      "username '\($0.username)' or external id '\($0.externalID)' was taken meanwhile"
    }
    // Rows the store refused dropped their events (only ever the rare race): made anew.
    tx.recordChanges(
      plan.events.count == planned.count
        ? try await events.value : try plan.events.map { try UserImportPlan.change($0.user) })
    return plan.outcome
  }

  /// Writes the users' last states in one statement; should it fail (a username passed from
  /// one user to another within the batch, or a concurrent writer), each step alone in row
  /// order under a savepoint. Returns the steps that failed: row index → reason.
  private func writeUpdates(_ tx: PostgresTransaction, _ steps: [UserImportPlan.Update])
    async throws -> [Int: String]
  {
    guard !steps.isEmpty else { return [:] }
    func statement(_ users: [User]) -> PostgresQuery {
      """
      UPDATE users u SET username = v.username, display_name = v.display_name,
        org_id = v.org_id, birth_year = v.birth_year, kind = v.kind, updated_at = v.updated_at
      FROM unnest(\(users.map(\.id))::text[], \(users.map(\.username))::text[],
        \(users.map(\.displayName))::text[], \(users.map(\.orgID))::text[],
        \(users.map { Int($0.birthYear) })::int8[], \(users.map { $0.kind.rawValue })::int8[],
        \(users.map { $0.updateTime.date.timeIntervalSince1970 })::float8[])
        AS v(id, username, display_name, org_id, birth_year, kind, updated_at)
      WHERE u.id = v.id
      """
    }
    var last: [String: User] = [:]
    for step in steps { last[step.user.id] = step.user }
    do {
      try await tx.savepoint { try await tx.execute(statement(Array(last.values))) }
      return [:]
    } catch is ServiceError {}
    var failed: [Int: String] = [:]
    for step in steps {
      do {
        try await tx.savepoint { try await tx.execute(statement([step.user])) }
      } catch let error as ServiceError {
        failed[step.index] = error.message
      }
    }
    return failed
  }

  /// Loads new users with COPY, the bulk path: under the import lock the plan has seen every
  /// user the batch's keys name, so the copy fails only when another writer (CreateUser, say)
  /// took one of them meanwhile; then the copy is undone and ``insertUsers(_:_:)`` skips the
  /// taken rows. Returns the ids not inserted.
  private func copyOrInsertUsers(_ tx: PostgresTransaction, _ users: [User]) async throws
    -> Set<String>
  {
    guard !users.isEmpty else { return [] }
    do {
      try await tx.savepoint { try await copyUsers(tx, users) }
      return []
    } catch is ServiceError {
      return try await insertUsers(tx, users)
    }
  }

  /// Loads new users with COPY; fails whole should one of them be taken.
  private func copyUsers(_ tx: PostgresTransaction, _ users: [User]) async throws {
    try await tx.copy(
      into: "users", columns: Self.userCopyColumns, rows: users.map(Self.copyValues))
  }

  /// The columns of a new user's row in a COPY, in the order of ``copyValues(_:)``.
  private static let userCopyColumns = [
    "id", "external_id", "username", "display_name", "kind", "org_id", "birth_year", "status",
    "created_at", "updated_at",
  ]

  /// A new user's row in a COPY.
  private static func copyValues(_ user: User) -> [PostgresCopyValue] {
    [
      .text(user.id), .text(user.externalID), .text(user.username), .text(user.displayName),
      .int(user.kind.rawValue), .text(user.orgID), .int(Int(user.birthYear)),
      .int(user.status.rawValue), .double(user.createTime.date.timeIntervalSince1970),
      .double(user.updateTime.date.timeIntervalSince1970),
    ]
  }

  /// Inserts new users in one statement, skipping those whose username or external id is
  /// taken; returns the ids not inserted. Should the statement fail for another reason, each
  /// row is tried alone under a savepoint, so only that row is lost.
  private func insertUsers(_ tx: PostgresTransaction, _ users: [User]) async throws
    -> Set<String>
  {
    guard !users.isEmpty else { return [] }
    func statement(_ users: [User]) -> PostgresQuery {
      """
      INSERT INTO users (id, external_id, username, display_name, kind, org_id, birth_year,
        status, created_at, updated_at)
      SELECT * FROM unnest(\(users.map(\.id))::text[], \(users.map(\.externalID))::text[],
        \(users.map(\.username))::text[], \(users.map(\.displayName))::text[],
        \(users.map { $0.kind.rawValue })::int8[], \(users.map(\.orgID))::text[],
        \(users.map { Int($0.birthYear) })::int8[], \(users.map { $0.status.rawValue })::int8[],
        \(users.map { $0.createTime.date.timeIntervalSince1970 })::float8[],
        \(users.map { $0.updateTime.date.timeIntervalSince1970 })::float8[])
      ON CONFLICT DO NOTHING RETURNING id
      """
    }
    var missing = Set(users.map(\.id))
    do {
      try await tx.savepoint {
        for row in try await tx.query(statement(users)) {
          missing.remove(try row[0].decode(String.self))
        }
      }
      return missing
    } catch is ServiceError {
      missing = Set(users.map(\.id))
    }
    for user in users {
      do {
        try await tx.savepoint {
          for row in try await tx.query(statement([user])) {
            missing.remove(try row[0].decode(String.self))
          }
        }
      } catch is ServiceError {}
    }
    return missing
  }

  func setActivation(userID: String, codeHash: String, expires: Date) async throws {
    try await store.write { tx in
      try await tx.execute(
        """
        UPDATE users SET activation_hash = \(codeHash),
          activation_expires = \(expires.timeIntervalSince1970), password_hash = NULL,
          updated_at = \(Date().timeIntervalSince1970)
        WHERE id = \(userID)
        """)
    }
  }

  func activate(username: String, codeHash: String, passwordHash: String) async throws -> User? {
    try await store.write { tx in
      let now = Date().timeIntervalSince1970
      typealias Status = Smartschool_Identity_V1_UserStatus
      let row = try await tx.one(
        """
        UPDATE users SET password_hash = \(passwordHash), status = \(Status.active.rawValue),
          activation_hash = NULL, activation_expires = NULL, failed_logins = 0,
          locked_until = NULL, updated_at = \(now)
        WHERE lower(username) = lower(\(username)) AND activation_hash = \(codeHash)
          AND activation_expires > \(now) AND status <> \(Status.deactivated.rawValue)
        RETURNING id
        """)
      guard let row else { return nil }
      let user = try await self.fetchUser(tx, where: Self.byID, try row[0].decode(String.self))!
      try self.recordUserChange(tx, user)
      return user
    }
  }

  func setPassword(userID: String, hash: String) async throws {
    try await store.write { tx in
      try await tx.execute(
        """
        UPDATE users SET password_hash = \(hash), updated_at = \(Date().timeIntervalSince1970)
        WHERE id = \(userID)
        """)
    }
  }

  // MARK: Credentials and sessions

  private func credentials(_ tx: PostgresTransaction, where clause: String, _ value: String)
    async throws -> Credentials?
  {
    guard
      let row = try await tx.one(
        PostgresQuery(
          unsafeSQL: """
            SELECT u.password_hash, u.failed_logins, u.locked_until, u.client_secret_hash, u.id,
              u.password_change_required
            FROM users u WHERE \(clause)
            """, binds: Self.binds(value))),
      let user = try await fetchUser(tx, where: Self.byID, try row["id"].decode(String.self))
    else { return nil }
    return Credentials(
      user: user, passwordHash: try row["password_hash"].decode(String?.self),
      failedLogins: try row["failed_logins"].decode(Int.self),
      lockedUntil: try row["locked_until"].decode(Double?.self).map {
        Date(timeIntervalSince1970: $0)
      },
      clientSecretHash: try row["client_secret_hash"].decode(String?.self),
      mustChangePassword: try row["password_change_required"].decode(Int.self) != 0)
  }

  func credentials(username: String) async throws -> Credentials? {
    try await store.read { tx in try await self.credentials(tx, where: Self.byUsername, username) }
  }

  func credentials(clientID: String) async throws -> Credentials? {
    try await store.read { tx in
      try await self.credentials(tx, where: "u.client_id = $1", clientID)
    }
  }

  /// The SQLite store's statement: one conditional UPDATE … RETURNING, whose row lock orders
  /// concurrent reservations from any replica.
  func reserveLoginAttempt(userID: String, threshold: Int, lockFor: TimeInterval) async throws
    -> Int?
  {
    try await store.write { tx in
      let now = Date().timeIntervalSince1970
      return try await tx.one(
        """
        UPDATE users SET
          failed_logins = CASE WHEN locked_until IS NOT NULL AND locked_until <= \(now) THEN 1
            ELSE failed_logins + 1 END,
          locked_until = CASE
            WHEN (CASE WHEN locked_until IS NOT NULL AND locked_until <= \(now) THEN 1
              ELSE failed_logins + 1 END) >= \(threshold) THEN \(now + lockFor)
            WHEN locked_until <= \(now) THEN NULL ELSE locked_until END
        WHERE id = \(userID) AND (locked_until IS NULL OR locked_until <= \(now))
        RETURNING failed_logins
        """
      )?[0].decode(Int.self)
    }
  }

  func recordSuccessfulLogin(userID: String, newHash: String?, passwordChanged: Bool)
    async throws -> Bool
  {
    try await store.write { tx in
      try await tx.one(
        """
        UPDATE users SET failed_logins = 0, locked_until = NULL,
          password_hash = COALESCE(\(newHash)::text, password_hash),
          password_change_required = CASE WHEN \(passwordChanged) THEN 0
            ELSE password_change_required END,
          updated_at = CASE WHEN \(passwordChanged) THEN \(Date().timeIntervalSince1970)
            ELSE updated_at END
        WHERE id = \(userID) RETURNING id
        """) != nil
    }
  }

  func unlock(userID: String) async throws -> User {
    try await store.write { tx in
      try await tx.execute(
        "UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = \(userID)")
      guard let user = try await self.fetchUser(tx, where: Self.byID, userID) else {
        throw ServiceError.notFound("user not found")
      }
      return user
    }
  }

  func createSession(userID: String, refreshHash: String?, refreshExpires: Date) async throws
    -> String
  {
    try await store.write { tx in
      let id = EntityID.make()
      let now = Date().timeIntervalSince1970
      let expires = refreshExpires.timeIntervalSince1970
      // Only for an active account, in the same transaction: a deactivation that ended the
      // sessions just before must not be followed by a new one.
      let created = try await tx.one(
        """
        INSERT INTO sessions (id, user_id, created_at, expires_at)
        SELECT \(id), id, \(now), \(expires) FROM users
        WHERE id = \(userID) AND status = \(Smartschool_Identity_V1_UserStatus.active.rawValue)
        RETURNING id
        """)
      guard created != nil else {
        throw ServiceError.unauthenticated("the account is not active")
      }
      guard let refreshHash else { return id }
      try await tx.execute(
        """
        INSERT INTO refresh_tokens (hash, session_id, issued_at, expires_at)
        VALUES (\(refreshHash), \(id), \(now), \(expires))
        """)
      return id
    }
  }

  func refreshRecord(hash: String) async throws -> RefreshRecord? {
    try await store.read { tx in
      guard
        let row = try await tx.one(
          """
          SELECT r.session_id, r.expires_at, r.used_at, s.user_id, s.revoked_at,
            s.expires_at AS session_expires_at
          FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.hash = \(hash)
          """)
      else { return nil }
      return RefreshRecord(
        sessionID: try row["session_id"].decode(String.self),
        userID: try row["user_id"].decode(String.self),
        expiresAt: try Self.date(row["expires_at"]),
        usedAt: try row["used_at"].decode(Double?.self).map { Date(timeIntervalSince1970: $0) },
        sessionRevoked: try row["revoked_at"].decode(Double?.self) != nil,
        sessionExpiresAt: try Self.date(row["session_expires_at"]))
    }
  }

  /// Marks the old token used and issues the new one, atomically; false when the old token
  /// was used meanwhile (a concurrent reuse, on any replica: the conditional UPDATE waits for
  /// the other's row lock and then finds `used_at` set).
  func rotateRefresh(oldHash: String, sessionID: String, newHash: String, expires: Date)
    async throws -> Bool
  {
    try await store.write { tx in
      let now = Date().timeIntervalSince1970
      let used = try await tx.one(
        """
        UPDATE refresh_tokens SET used_at = \(now) WHERE hash = \(oldHash) AND used_at IS NULL
        RETURNING hash
        """)
      guard used != nil else { return false }
      try await tx.execute(
        """
        INSERT INTO refresh_tokens (hash, session_id, issued_at, expires_at)
        VALUES (\(newHash), \(sessionID), \(now), \(expires.timeIntervalSince1970))
        """)
      return true
    }
  }

  func revokeSession(id: String, reason: String) async throws {
    try await store.write { tx in
      let revoked = try await tx.one(
        """
        UPDATE sessions SET revoked_at = \(Date().timeIntervalSince1970),
          revoke_reason = \(reason)
        WHERE id = \(id) AND revoked_at IS NULL RETURNING id
        """)
      if revoked != nil { try self.recordRevocation(tx, session: id) }
    }
  }

  /// Revokes, in the caller's transaction, every live session of a user but `except`, each on
  /// the change feed.
  private func revokeSessions(
    _ tx: PostgresTransaction, userID: String, except: String?, reason: String
  ) async throws -> [String: Date] {
    let now = Date()
    let ids = try await tx.query(
      """
      UPDATE sessions SET revoked_at = \(now.timeIntervalSince1970), revoke_reason = \(reason)
      WHERE user_id = \(userID) AND revoked_at IS NULL AND id <> \(except ?? "")
      RETURNING id
      """
    ).map { try $0[0].decode(String.self) }.sorted()
    for id in ids { try recordRevocation(tx, session: id) }
    return Dictionary(uniqueKeysWithValues: ids.map { ($0, now) })
  }

  func revokeSessions(userID: String, except: String?, reason: String) async throws
    -> [String: Date]
  {
    try await store.write { tx in
      try await self.revokeSessions(tx, userID: userID, except: except, reason: reason)
    }
  }

  func setClientSecret(userID: String, hash: String) async throws -> String? {
    try await store.write { tx in
      try await tx.one(
        """
        UPDATE users SET client_secret_hash = \(hash), updated_at = \(Date().timeIntervalSince1970)
        WHERE id = \(userID) AND client_id IS NOT NULL RETURNING client_id
        """
      )?[0].decode(String.self)
    }
  }

  /// A revocation on the change feed, with no user data and no org path (see
  /// ``SQLiteIdentityStore``).
  private func recordRevocation(_ tx: PostgresTransaction, session: String) throws {
    try tx.recordChange(
      entity: "session", id: session, naturalKey: session, op: .delete, orgPath: "")
  }

  func revokedSessions(since: Date) async throws -> [String: Date] {
    try await store.read { tx in
      // With the revoked OpenID Connect client_credentials grants, which are sessions to the
      // token verifiers but have no user (OIDCTokenStore.swift).
      let rows = try await tx.query(
        """
        SELECT id, revoked_at FROM sessions WHERE revoked_at > \(since.timeIntervalSince1970)
        UNION ALL SELECT session_id, revoked_at FROM oidc_grants
        WHERE revoked_at > \(since.timeIntervalSince1970)
        """)
      var result: [String: Date] = [:]
      for row in rows {
        result[try row["id"].decode(String.self)] = try Self.date(row["revoked_at"])
      }
      return result
    }
  }

  func sessionActive(id: String) async throws -> Bool {
    try await store.read { tx in
      try await tx.one(
        """
        SELECT revoked_at IS NULL AND expires_at > \(Date().timeIntervalSince1970)
        FROM sessions WHERE id = \(id)
        """
      )?[0].decode(Bool.self) ?? false
    }
  }

  // MARK: Guardians

  /// Links parent and student (the users when the caller has read them already); false when
  /// they were linked before. The insert cannot fail on a duplicate, so no savepoint is needed
  /// inside an import.
  private func link(
    _ tx: PostgresTransaction, parentID: String, studentID: String, parent: User? = nil,
    student: User? = nil
  ) async throws -> Bool {
    let inserted = try await tx.one(
      """
      INSERT INTO guardian_links (parent_id, student_id, created_at)
      VALUES (\(parentID), \(studentID), \(Date().timeIntervalSince1970))
      ON CONFLICT DO NOTHING RETURNING parent_id
      """)
    guard inserted != nil else { return false }
    try await recordLink(
      tx, parentID: parentID, studentID: studentID, op: .upsert, parent: parent, student: student)
    return true
  }

  private func recordLink(
    _ tx: PostgresTransaction, parentID: String, studentID: String,
    op: Smartschool_Common_V1_ChangeOp, parent: User? = nil, student: User? = nil
  ) async throws {
    var student = student
    if student == nil { student = try await fetchUser(tx, where: Self.byID, studentID) }
    var parent = parent
    if parent == nil { parent = try await fetchUser(tx, where: Self.byID, parentID) }
    try tx.recordChange(
      entity: "guardian_link", id: "\(parentID):\(studentID)",
      naturalKey: "\(parent?.externalID ?? ""):\(student?.externalID ?? "")", op: op,
      orgPath: student?.orgPath ?? "/")
  }

  func link(parentID: String, studentID: String) async throws -> Bool {
    try await store.write { tx in
      try await self.link(tx, parentID: parentID, studentID: studentID)
    }
  }

  func unlink(parentID: String, studentID: String) async throws -> Bool {
    try await store.write { tx in
      let deleted = try await tx.one(
        """
        DELETE FROM guardian_links WHERE parent_id = \(parentID) AND student_id = \(studentID)
        RETURNING parent_id
        """)
      guard deleted != nil else { return false }
      try await self.recordLink(tx, parentID: parentID, studentID: studentID, op: .delete)
      return true
    }
  }

  func children(ofParent id: String) async throws -> [User] {
    try await store.read { tx in
      try await tx.query(
        PostgresQuery(
          unsafeSQL: Self.userSelect
            + " WHERE u.id IN (SELECT student_id FROM guardian_links WHERE parent_id = $1)"
            + " ORDER BY lower(u.username)", binds: Self.binds(id))
      ).map(Self.user)
    }
  }

  func guardians(ofStudent id: String) async throws -> [User] {
    try await store.read { tx in
      try await tx.query(
        PostgresQuery(
          unsafeSQL: Self.userSelect
            + " WHERE u.id IN (SELECT parent_id FROM guardian_links WHERE student_id = $1)"
            + " ORDER BY lower(u.username)", binds: Self.binds(id))
      ).map(Self.user)
    }
  }

  /// Imports a batch of guardian links with the SQLite store's verdicts in three statements:
  /// one read of every user the rows name, then each row checked in order, then one INSERT of
  /// the accepted links (in key order, so that two imports of overlapping links lock them in
  /// the same order) that skips those already linked. A link named twice is made by its first
  /// row. Should the insert fail, it is undone and the batch linked row by row.
  func importGuardians(
    _ rows: [(index: Int, parent: String, student: String)],
    authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> BatchOutcome {
    try await store.write { tx in
      do {
        return try await tx.savepoint {
          try await self.importGuardiansTogether(tx, rows, authorize: authorize)
        }
      } catch is ServiceError {
        return try await self.importGuardiansOneByOne(tx, rows, authorize: authorize)
      }
    }
  }

  private func importGuardiansTogether(
    _ tx: PostgresTransaction, _ rows: [(index: Int, parent: String, student: String)],
    authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> BatchOutcome {
    var result = BatchOutcome()
    var binds = PostgresBindings()
    binds.append(Array(Set(rows.flatMap { [$0.parent, $0.student] })))
    binds.append([String]())
    var users: [String: User] = [:]
    for user in try await tx.query(PostgresQuery(unsafeSQL: Self.importUserSelect, binds: binds))
      .map(Self.user)
    {
      users[user.externalID] = user
    }
    var links: [(parent: User, student: User)] = []
    for (index, parentKey, studentKey) in rows {
      func reject(_ field: String, _ reason: String) {
        result.errors.append(.row(index, key: "\(parentKey):\(studentKey)", field: field, reason))
      }
      let (parent, student) = (users[parentKey], users[studentKey])
      if let refusal = OrgRules.guardianRefusal(
        parent: parent, parentKey: parentKey, student: student, studentKey: studentKey,
        authorize: authorize)
      {
        reject(refusal.field, refusal.reason)
        continue
      }
      links.append((parent!, student!))
    }
    guard !links.isEmpty else { return result }
    struct Link: Hashable {
      var parent: String
      var student: String
    }
    var made = Set<Link>()
    for row in try await tx.query(
      """
      INSERT INTO guardian_links (parent_id, student_id, created_at)
      SELECT u.parent_id, u.student_id, \(Date().timeIntervalSince1970)
      FROM unnest(\(links.map(\.parent.id))::text[], \(links.map(\.student.id))::text[])
        AS u(parent_id, student_id)
      ORDER BY u.parent_id, u.student_id
      ON CONFLICT DO NOTHING RETURNING parent_id, student_id
      """)
    {
      made.insert(
        Link(parent: try row[0].decode(String.self), student: try row[1].decode(String.self)))
    }
    for (parent, student) in links {
      guard made.remove(Link(parent: parent.id, student: student.id)) != nil else {
        result.updated += 1
        continue
      }
      result.created += 1
      try await recordLink(
        tx, parentID: parent.id, studentID: student.id, op: .upsert, parent: parent,
        student: student)
    }
    return result
  }

  /// The import of `rows` a statement after another: two reads and the link, a row.
  private func importGuardiansOneByOne(
    _ tx: PostgresTransaction, _ rows: [(index: Int, parent: String, student: String)],
    authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> BatchOutcome {
    var result = BatchOutcome()
    for (index, parentKey, studentKey) in rows {
      func reject(_ field: String, _ reason: String) {
        result.errors.append(.row(index, key: "\(parentKey):\(studentKey)", field: field, reason))
      }
      let parent = try await self.fetchUser(tx, where: Self.byExternalID, parentKey)
      let student = try await self.fetchUser(tx, where: Self.byExternalID, studentKey)
      if let refusal = OrgRules.guardianRefusal(
        parent: parent, parentKey: parentKey, student: student, studentKey: studentKey,
        authorize: authorize)
      {
        reject(refusal.field, refusal.reason)
        continue
      }
      guard let parent, let student else { continue }
      if try await self.link(
        tx, parentID: parent.id, studentID: student.id, parent: parent, student: student)
      {
        result.created += 1
      } else {
        result.updated += 1
      }
    }
    return result
  }

  // MARK: Roles

  func bindings(userID: String) async throws -> [Binding] {
    try await store.read { tx in try await self.fetchBindings(tx, userID: userID) }
  }

  func userWithBindings(id: String) async throws -> (User, [Binding])? {
    let account = try await accounts.value(for: id) {
      try await store.read { tx -> (User, [Binding])? in
        guard let user = try await self.fetchUser(tx, where: Self.byID, id) else { return nil }
        return (user, try await self.fetchBindings(tx, userID: id))
      }
    }
    guard var account else { return nil }
    // A lockout ends with time, not with a write: a kept account may have outlived its own.
    if account.0.hasLockedUntil, account.0.lockedUntil.date <= Date() {
      account.0.clearLockedUntil()
    }
    return account
  }

  private func fetchBinding(_ tx: PostgresTransaction, id: String) async throws -> Binding? {
    try await tx.one(
      PostgresQuery(unsafeSQL: Self.bindingSelect + " WHERE b.id = $1", binds: Self.binds(id))
    ).map(Self.binding)
  }

  private func fetchBindings(_ tx: PostgresTransaction, userID: String) async throws
    -> [Binding]
  {
    try await tx.query(
      PostgresQuery(
        unsafeSQL: Self.bindingSelect + " WHERE b.user_id = $1 ORDER BY b.created_at, b.id",
        binds: Self.binds(userID))
    ).map(Self.binding)
  }

  func binding(id: String) async throws -> Binding? {
    try await store.read { tx in try await self.fetchBinding(tx, id: id) }
  }

  func insertBinding(userID: String, role: Role, org: Org?, grantedBy: String) async throws
    -> Binding
  {
    try await store.write { tx in
      let exists = try await tx.one(
        """
        SELECT 1 FROM role_bindings
        WHERE user_id = \(userID) AND role = \(role.rawValue)
          AND COALESCE(org_id, '') = \(org?.id ?? "")
        """)
      if exists != nil {
        throw ServiceError.alreadyExists("the user already holds \(role.rawValue) at this org")
      }
      let id = EntityID.make()
      try await tx.execute(
        """
        INSERT INTO role_bindings (id, user_id, role, org_id, granted_by, created_at)
        VALUES (\(id), \(userID), \(role.rawValue), \(org?.id), \(grantedBy),
          \(Date().timeIntervalSince1970))
        """)
      let binding = try await self.fetchBinding(tx, id: id)!
      try tx.recordChange(
        entity: "role_binding", id: id,
        naturalKey: "\(userID):\(role.rawValue):\(org?.code ?? "")",
        op: .upsert, orgPath: binding.orgPath, payload: binding)
      return binding
    }
  }

  func deleteBinding(id: String) async throws {
    try await store.write { tx in
      guard let binding = try await self.fetchBinding(tx, id: id) else {
        throw ServiceError.notFound("role binding '\(id)' not found")
      }
      try await tx.execute("DELETE FROM role_bindings WHERE id = \(id)")
      let role = Role(binding.role)?.rawValue ?? ""
      try tx.recordChange(
        entity: "role_binding", id: id,
        naturalKey: "\(binding.userID):\(role):\(binding.orgCode)", op: .delete,
        orgPath: binding.orgPath)
    }
  }

  func listBindings(
    userID: String?, under: OrgPath?, role: Role?, scopes: [OrgPath], afterID: String?,
    limit: Int
  ) async throws -> [Binding] {
    var s = Statement(Self.bindingSelect + " WHERE TRUE")
    if let userID { s.add(" AND b.user_id = ?", userID) }
    if let under { s.add(" AND starts_with(COALESCE(o.path, '/'), ?)", under.description) }
    if let role { s.add(" AND b.role = ?", role.rawValue) }
    if let clause = s.scopeClause("COALESCE(o.path, '/')", scopes) { s.sql += " AND " + clause }
    if let afterID { s.add(" AND b.id > ?", afterID) }
    s.add(" ORDER BY b.id LIMIT ?", limit)
    let query = s.query
    return try await store.read { tx in try await tx.query(query).map(Self.binding) }
  }

  // MARK: Keys

  func signingKeys() async throws -> [StoredKey] {
    try await store.read { tx in
      try await tx.query(
        """
        SELECT id, private_key, public_key, created_at, retire_at, current FROM signing_keys
        ORDER BY created_at
        """
      ).map(Self.storedKey)
    }
  }

  /// Retires the current key and adds `key` as current, under an advisory lock so that
  /// replicas rotating at once take turns (the partial unique index refuses a second current
  /// key whatever happens).
  func addSigningKey(_ key: StoredKey, retireOthersAt: Date?) async throws {
    try await store.write { tx in
      try await tx.lock("signing-keys")
      try await tx.execute(
        """
        UPDATE signing_keys
        SET current = 0, retire_at = COALESCE(retire_at, \(retireOthersAt?.timeIntervalSince1970))
        WHERE current = 1
        """)
      try await tx.execute(
        """
        INSERT INTO signing_keys (id, private_key, public_key, created_at, retire_at, current)
        VALUES (\(key.id), \(key.privateKey), \(key.publicKey),
          \(key.createdAt.timeIntervalSince1970), NULL, 1)
        """)
    }
  }

  // MARK: Audit and changes

  func audit(_ entry: AuditEntry) async throws {
    try await store.write { tx in
      // Last in the transaction: the counter's lock, held to COMMIT, numbers events in commit
      // order, so a reader past sequence n never misses an event below n.
      let sequence = try await tx.takeSequence("audit")
      try await tx.execute(
        """
        INSERT INTO audit_events (sequence, time, actor_id, action, target, org_id, org_path,
          detail)
        VALUES (\(sequence), \(Date().timeIntervalSince1970), \(entry.actorID), \(entry.action),
          \(entry.target), \(entry.orgID), \(entry.orgPath.isEmpty ? "/" : entry.orgPath),
          \(entry.detail))
        """)
    }
  }

  func auditEvents(
    after: Int64, actorID: String?, action: String?, under: OrgPath?, scopes: [OrgPath],
    limit: Int
  ) async throws -> ([Smartschool_Identity_V1_AuditEvent], Bool) {
    var s = Statement(
      """
      SELECT sequence, time, actor_id, action, target, org_id, org_path, detail
      FROM audit_events WHERE sequence > $1
      """)
    _ = s.bind(after)
    if let actorID { s.add(" AND actor_id = ?", actorID) }
    if let action { s.add(" AND action = ?", action) }
    if let under { s.add(" AND starts_with(org_path, ?)", under.description) }
    if let clause = s.scopeClause("org_path", scopes) { s.sql += " AND " + clause }
    s.add(" ORDER BY sequence LIMIT ?", limit + 1)
    let query = s.query
    let rows = try await store.read { tx in try await tx.query(query) }
    return (try rows.prefix(limit).map(Self.auditEvent), rows.count > limit)
  }

  func changes(after: Int64, limit: Int, scopes: [OrgPath]) async throws
    -> (changes: [Smartschool_Common_V1_Change], more: Bool)
  {
    let r = try await store.listChanges(
      after: after, limit: limit, scopes: scopes, unscoped: ["session"])
    return (r.changes, r.hasMore)
  }

  func isEmpty() async throws -> Bool {
    try await store.read { tx in
      try await tx.one("SELECT NOT EXISTS (SELECT 1 FROM users)")?[0].decode(Bool.self) ?? true
    }
  }
}
