import Foundation
import GRDB
import ServiceRuntime
import SmartSchoolModel

typealias Org = Smartschool_Identity_V1_Org
typealias User = Smartschool_Identity_V1_User
typealias Binding = Smartschool_Identity_V1_RoleBinding

/// What login needs of a user's credentials.
struct Credentials: Sendable {
  var user: User
  var passwordHash: String?
  var failedLogins: Int
  var lockedUntil: Date?
  var clientSecretHash: String?
  /// The password was set by an admin (CreateUser): the user must choose one at first login.
  var mustChangePassword = false
}

/// A refresh token's row with its session.
struct RefreshRecord: Sendable {
  var sessionID: String
  var userID: String
  var expiresAt: Date
  var usedAt: Date?
  var sessionRevoked: Bool
  /// The session's absolute end, fixed at login: refreshing never moves it.
  var sessionExpiresAt: Date
}

/// A stored signing key.
struct StoredKey: Sendable {
  var id: String
  var privateKey: Data
  var publicKey: Data
  var createdAt: Date
  var retireAt: Date?
  var current: Bool
}

/// One audit event to write.
struct AuditEntry: Sendable {
  var actorID: String
  var action: String
  var target: String
  var orgID: String = ""
  var orgPath: String = ""
  var detail: String = ""
}

/// Every SQL statement of identity, behind a protocol so a PostgreSQL store can stand beside
/// the SQLite one.
/// Where the signing keys are kept: all a ``KeyRing`` needs of the store.
protocol SigningKeyStore: Sendable {
  func signingKeys() async throws -> [StoredKey]
  func addSigningKey(_ key: StoredKey, retireOthersAt: Date?) async throws
}

protocol IdentityStore: SigningKeyStore {
  // Orgs
  func org(id: String) async throws -> Org?
  func org(code: String) async throws -> Org?
  func insertOrg(_ org: Org, parent: Org?, managingSchool: Org?) async throws -> Org
  func updateOrg(_ org: Org, newParent: Org?, managingSchool: Org??) async throws -> Org
  func deactivateOrg(id: String) async throws -> Org
  func activeChildCount(of id: String) async throws -> Int
  func listOrgs(
    under path: OrgPath?, parentID: String?, kind: Smartschool_Common_V1_OrgKind?,
    includeInactive: Bool, scopes: [OrgPath], afterCode: String?, limit: Int
  ) async throws -> [Org]
  func importOrgs(
    _ rows: [(index: Int, row: Org)], authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> (result: BatchOutcome, deferred: [(index: Int, row: Org)])
  /// School id → ids (sorted) of the active teaching points it manages in its own county, for
  /// those of `schoolIDs` that manage any.
  func managedTeachingPoints(schoolIDs: [String]) async throws -> [String: [String]]

  // Users
  func user(id: String) async throws -> User?
  func user(externalID: String) async throws -> User?
  func user(username: String) async throws -> User?
  /// Inserts a user; `mustChangePassword` makes Login refuse the password until a new one is
  /// chosen (an admin-set initial password).
  func insertUser(
    _ user: User, org: Org?, passwordHash: String?, mustChangePassword: Bool, clientID: String?,
    clientSecretHash: String?
  ) async throws -> User
  func updateUser(_ user: User, org: Org?) async throws -> User
  func deactivateUser(id: String) async throws -> User
  /// Sets a deactivated user active again (pending activation without a password or secret)
  /// and clears any lockout; nil when the user is not deactivated.
  func reactivateUser(id: String) async throws -> User?
  func listUsers(
    scopes: [OrgPath], kind: Smartschool_Identity_V1_UserKind?, namePrefix: String,
    includeInactive: Bool, afterUsername: String?, limit: Int
  ) async throws -> [User]
  func importUsers(
    _ rows: [(index: Int, row: User)], authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> BatchOutcome
  /// Reads and decides a batch of ``importUsers(_:authorize:)`` ahead of its turn (while the
  /// batch before it commits), where the store's commit can check the guess cheaply; else
  /// stages the rows only.
  func stageUserImport(
    _ rows: [(index: Int, row: User)], authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> StagedUserImport
  /// Imports a staged batch: writes its guess when what the guess read still holds under the
  /// import lock, else reads and decides as ``importUsers(_:authorize:)``. Same outcome.
  func importUsers(
    _ staged: StagedUserImport, authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> BatchOutcome
  /// User batches of one stream this store writes at once when they share no key: 2 on
  /// PostgreSQL (a batch of new users copies without the import lock, so two batches' copies
  /// run on two backends), 1 on SQLite (its one writer runs them in turn anyway).
  var userWritesInFlight: Int { get }
  /// Stores a new activation code and removes the password, which stops working at once.
  func setActivation(userID: String, codeHash: String, expires: Date) async throws
  func activate(username: String, codeHash: String, passwordHash: String) async throws -> User?
  func setPassword(userID: String, hash: String) async throws

  // Credentials and sessions
  func credentials(username: String) async throws -> Credentials?
  func credentials(clientID: String) async throws -> Credentials?
  /// Reserves one password guess for the user before it is hashed, in one atomic statement:
  /// counts it as a failure (locking the account once `threshold` guesses are counted) and
  /// answers its number in the window, or nil while the account is locked (no guess may be
  /// evaluated then). So however many guesses arrive at once, at most `threshold` are
  /// evaluated inside a lock window.
  func reserveLoginAttempt(userID: String, threshold: Int, lockFor: TimeInterval) async throws
    -> Int?
  /// After a reserved guess proved right: clears the failures (and a lock that guess's own
  /// reservation set), stores `newHash` when given (a rehash or a chosen new password) and,
  /// with `passwordChanged`, the duty to change it. False when the user is gone.
  func recordSuccessfulLogin(userID: String, newHash: String?, passwordChanged: Bool)
    async throws -> Bool
  /// Clears the user's failures and lock (UnlockAccount); the user as it is now.
  func unlock(userID: String) async throws -> User
  /// A new session ending at `refreshExpires`, with its first refresh token when given
  /// (service-account sessions have none).
  func createSession(userID: String, refreshHash: String?, refreshExpires: Date) async throws
    -> String
  func refreshRecord(hash: String) async throws -> RefreshRecord?
  func rotateRefresh(oldHash: String, sessionID: String, newHash: String, expires: Date)
    async throws -> Bool
  func revokeSession(id: String, reason: String) async throws
  /// Revokes every live session of a user except `except`, each on the change feed; returns
  /// the revoked session ids and when.
  func revokeSessions(userID: String, except: String?, reason: String) async throws
    -> [String: Date]
  /// Replaces a service account's client-secret hash and returns its client id; nil when the
  /// user is not a service account.
  func setClientSecret(userID: String, hash: String) async throws -> String?
  func sessionActive(id: String) async throws -> Bool
  /// Sessions revoked since `since` (session id → when), for the token verifier.
  func revokedSessions(since: Date) async throws -> [String: Date]

  // Guardians
  func link(parentID: String, studentID: String) async throws -> Bool
  func unlink(parentID: String, studentID: String) async throws -> Bool
  func children(ofParent id: String) async throws -> [User]
  func guardians(ofStudent id: String) async throws -> [User]
  func importGuardians(
    _ rows: [(index: Int, parent: String, student: String)],
    authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> BatchOutcome

  // Roles
  func bindings(userID: String) async throws -> [Binding]
  /// A user and their bindings, read in one transaction (`nil` when there is no such user).
  func userWithBindings(id: String) async throws -> (User, [Binding])?
  func binding(id: String) async throws -> Binding?
  func insertBinding(userID: String, role: Role, org: Org?, grantedBy: String) async throws
    -> Binding
  func deleteBinding(id: String) async throws
  func listBindings(
    userID: String?, under: OrgPath?, role: Role?, scopes: [OrgPath], afterID: String?,
    limit: Int
  ) async throws -> [Binding]

  // Keys: see SigningKeyStore

  // Audit and changes
  func audit(_ entry: AuditEntry) async throws
  func auditEvents(
    after: Int64, actorID: String?, action: String?, under: OrgPath?, scopes: [OrgPath],
    limit: Int
  ) async throws -> ([Smartschool_Identity_V1_AuditEvent], Bool)
  func changes(after: Int64, limit: Int, scopes: [OrgPath]) async throws
    -> (changes: [Smartschool_Common_V1_Change], more: Bool)
  func isEmpty() async throws -> Bool
}

/// The SQLite implementation of ``IdentityStore``.
final class SQLiteIdentityStore: IdentityStore {
  let store: Store
  /// ``userWithBindings(id:)`` by user id: WhoAmI and Introspect ask it on every call, and
  /// the rows it reads change only through the writes that move this cache's version.
  private let accounts: StoreCache<String, (User, [Binding])>

  /// The store, holding up to `accountCacheEntries` accounts read by
  /// ``userWithBindings(id:)`` in memory (0: none).
  init(store: Store, accountCacheEntries: Int = 8192) throws {
    self.store = store
    self.accounts = StoreCache(
      version: try store.watch(["users", "role_bindings", "orgs"]),
      capacity: accountCacheEntries)
  }

  // MARK: Row mapping

  private static let orgSelect = """
    SELECT o.*, p.code AS parent_code, m.code AS managing_code
    FROM orgs o LEFT JOIN orgs p ON p.id = o.parent_id
    LEFT JOIN orgs m ON m.id = o.managing_school_id
    """

  private static let userSelect = """
    SELECT u.id, u.external_id, u.username, u.display_name, u.kind, u.org_id, u.birth_year,
      u.status, u.locked_until, u.created_at, u.updated_at, o.code AS org_code, o.path AS org_path
    FROM users u LEFT JOIN orgs o ON o.id = u.org_id
    """

  private static let bindingSelect = """
    SELECT b.*, o.code AS org_code, o.path AS org_path
    FROM role_bindings b LEFT JOIN orgs o ON o.id = b.org_id
    """

  static func org(_ row: Row) -> Org {
    var o = Org()
    o.id = row["id"]
    o.code = row["code"]
    o.name = row["name"]
    o.kind = .init(rawValue: row["kind"]) ?? .unspecified
    o.parentID = row["parent_id"] ?? ""
    o.parentCode = row["parent_code"] ?? ""
    o.path = row["path"]
    o.schoolKind = .init(rawValue: row["school_kind"]) ?? .unspecified
    let stages: String = row["stages"]
    o.stages = stages.split(separator: ",").compactMap { Int($0) }.compactMap {
      Smartschool_Common_V1_Stage(rawValue: $0)
    }
    o.managingSchoolID = row["managing_school_id"] ?? ""
    o.managingSchoolCode = row["managing_code"] ?? ""
    o.grade = row["grade"]
    o.schoolYear = row["school_year"]
    o.active = row["active"]
    o.createTime = .init(date: Date(timeIntervalSince1970: row["created_at"]))
    o.updateTime = .init(date: Date(timeIntervalSince1970: row["updated_at"]))
    return o
  }

  static func user(_ row: Row) -> User {
    var u = User()
    u.id = row["id"]
    u.externalID = row["external_id"]
    u.username = row["username"]
    u.displayName = row["display_name"]
    u.kind = .init(rawValue: row["kind"]) ?? .unspecified
    u.orgID = row["org_id"] ?? ""
    u.orgCode = row["org_code"] ?? ""
    u.orgPath = row["org_path"] ?? ""
    u.birthYear = row["birth_year"]
    u.status = .init(rawValue: row["status"]) ?? .unspecified
    if let locked: Double = row["locked_until"], locked > Date().timeIntervalSince1970 {
      u.lockedUntil = .init(date: Date(timeIntervalSince1970: locked))
    }
    u.createTime = .init(date: Date(timeIntervalSince1970: row["created_at"]))
    u.updateTime = .init(date: Date(timeIntervalSince1970: row["updated_at"]))
    return u
  }

  static func binding(_ row: Row) -> Binding {
    var b = Binding()
    b.id = row["id"]
    b.userID = row["user_id"]
    b.role = Role(rawValue: row["role"])?.proto ?? .unspecified
    b.orgID = row["org_id"] ?? ""
    b.orgCode = row["org_code"] ?? ""
    b.orgPath = row["org_path"] ?? "/"
    b.grantedBy = row["granted_by"]
    b.createTime = .init(date: Date(timeIntervalSince1970: row["created_at"]))
    return b
  }

  /// `substr(column, 1, n) = prefix OR …` for a list of scopes; `nil` when a scope is the root.
  private static func scopeClause(_ column: String, _ scopes: [OrgPath]) -> (
    String, [any DatabaseValueConvertible]
  )? {
    if scopes.contains(.root) { return nil }
    if scopes.isEmpty { return ("0", []) }
    var args: [any DatabaseValueConvertible] = []
    let sql = scopes.map { s -> String in
      args.append(s.description.count)
      args.append(s.description)
      return "substr(\(column), 1, ?) = ?"
    }.joined(separator: " OR ")
    return ("(\(sql))", args)
  }

  // MARK: Orgs

  private func fetchOrg(_ db: Database, id: String) throws -> Org? {
    try db.cachedStatement(sql: Self.orgSelect + " WHERE o.id = ?").decodeFirst(
      arguments: [id], Self.org)
  }

  private func fetchOrg(_ db: Database, code: String) throws -> Org? {
    try db.cachedStatement(sql: Self.orgSelect + " WHERE o.code = ?").decodeFirst(
      arguments: [code], Self.org)
  }

  func org(id: String) async throws -> Org? {
    try await store.read { db in try self.fetchOrg(db, id: id) }
  }

  func org(code: String) async throws -> Org? {
    try await store.read { db in try self.fetchOrg(db, code: code) }
  }

  private func recordOrgChange(_ db: Database, _ org: Org) throws {
    try ChangeFeed.record(
      db, entity: "org", id: org.id, naturalKey: org.code, op: .upsert, orgPath: org.path,
      payload: org)
  }

  private func insertOrg(_ db: Database, _ org: Org, parent: Org?, managingSchool: Org?) throws
    -> Org
  {
    if let managingSchool {
      try OrgRules.checkSameCounty(
        managingSchool, parentID: parent?.id ?? "", field: "org.managing_school_code")
      try checkManagedCount(db, managingSchool, excluding: "")
    }
    let id = EntityID.make()
    let path = (parent.flatMap { OrgPath($0.path) } ?? .root).appending(id)
    let now = Date().timeIntervalSince1970
    try db.execute(
      sql: """
        INSERT INTO orgs (id, code, name, kind, parent_id, path, school_kind, stages,
          managing_school_id, grade, school_year, active, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)
        """,
      arguments: [
        id, org.code, org.name, org.kind.rawValue, parent?.id, path.description,
        org.schoolKind.rawValue, org.stages.map { String($0.rawValue) }.joined(separator: ","),
        managingSchool?.id, org.grade, org.schoolYear, now, now,
      ])
    let created = try fetchOrg(db, id: id)!
    try recordOrgChange(db, created)
    return created
  }

  func insertOrg(_ org: Org, parent: Org?, managingSchool: Org?) async throws -> Org {
    try await store.write { db in
      if try self.fetchOrg(db, code: org.code) != nil {
        throw ServiceError.alreadyExists("an org with code '\(org.code)' already exists")
      }
      return try self.insertOrg(db, org, parent: parent, managingSchool: managingSchool)
    }
  }

  /// Writes the editable fields of `org` (by id); moves it (and its subtree) under `newParent`
  /// when given; sets the managing school when `managingSchool` is non-nil.
  private func updateOrg(_ db: Database, _ org: Org, newParent: Org?, managingSchool: Org??) throws
    -> Org
  {
    guard let current = try fetchOrg(db, id: org.id) else {
      throw ServiceError.notFound("org '\(org.id)' not found")
    }
    let now = Date().timeIntervalSince1970
    var managingID: String? = current.managingSchoolID.isEmpty ? nil : current.managingSchoolID
    if let m = managingSchool { managingID = m?.id }
    try checkManagement(db, current, newParentID: newParent?.id, managingID: managingID)
    try db.execute(
      sql: """
        UPDATE orgs SET name = ?, school_kind = ?, stages = ?, managing_school_id = ?, grade = ?,
          school_year = ?, updated_at = ? WHERE id = ?
        """,
      arguments: [
        org.name, org.schoolKind.rawValue,
        org.stages.map { String($0.rawValue) }.joined(separator: ","), managingID, org.grade,
        org.schoolYear, now, org.id,
      ])
    var moved: [String] = []
    if let newParent, newParent.id != current.parentID {
      let oldPath = current.path
      let newPath = OrgPath(newParent.path)!.appending(current.id).description
      // Rewrites the prefix of every path in the subtree (the org included).
      moved = try String.fetchAll(
        db.cachedStatement(sql: "SELECT id FROM orgs WHERE substr(path, 1, ?) = ?"),
        arguments: [oldPath.count, oldPath])
      try db.execute(
        sql: """
          UPDATE orgs SET path = ? || substr(path, ?), updated_at = ?
          WHERE substr(path, 1, ?) = ?
          """,
        arguments: [newPath, oldPath.count + 1, now, oldPath.count, oldPath])
      try db.execute(
        sql: "UPDATE orgs SET parent_id = ? WHERE id = ?", arguments: [newParent.id, org.id])
    }
    let updated = try fetchOrg(db, id: org.id)!
    try recordOrgChange(db, updated)
    for id in moved where id != org.id {
      if let o = try fetchOrg(db, id: id) { try recordOrgChange(db, o) }
    }
    return updated
  }

  /// Before an org moves or changes its managing school (inside the write, so that two writes
  /// cannot pass the check together): a teaching point's managing school must stay in the
  /// teaching point's county, and a central school may not leave the county of the teaching
  /// points it manages.
  private func checkManagement(
    _ db: Database, _ current: Org, newParentID: String?, managingID: String?
  ) throws {
    let parentID = newParentID ?? current.parentID
    let moves = parentID != current.parentID
    let managingChanged = (managingID ?? "") != current.managingSchoolID
    if let managingID, moves || managingChanged {
      guard let managing = try fetchOrg(db, id: managingID) else {
        throw ServiceError.notFound("org '\(managingID)' not found")
      }
      try OrgRules.checkSameCounty(
        managing, parentID: parentID,
        field: managingChanged ? "org.managing_school_code" : "org.parent_code")
      if managingChanged { try checkManagedCount(db, managing, excluding: current.id) }
    }
    guard moves else { return }
    let stranded = try String.fetchOne(
      db.cachedStatement(
        sql: """
          SELECT code FROM orgs WHERE managing_school_id = ? AND parent_id IS NOT ?
          ORDER BY code LIMIT 1
          """),
      arguments: [current.id, parentID])
    if let stranded {
      throw ServiceError.invalid(
        "org.parent_code",
        "the school manages teaching point '\(stranded)' of its county; give that teaching point "
          + "another managing school first")
    }
  }

  private func checkManagedCount(_ db: Database, _ school: Org, excluding id: String) throws {
    let count = try Int.fetchOne(
      db.cachedStatement(
        sql: "SELECT COUNT(*) FROM orgs WHERE managing_school_id = ? AND id <> ? AND active = 1"),
      arguments: [school.id, id]) ?? 0
    if count >= OrgRules.maxManagedTeachingPoints {
      throw ServiceError.invalid(
        "org.managing_school_code",
        "the school '\(school.code)' already manages \(count) teaching points, the most allowed")
    }
  }

  func managedTeachingPoints(schoolIDs: [String]) async throws -> [String: [String]] {
    if schoolIDs.isEmpty { return [:] }
    return try await store.read { db in
      // The same county only: a pairing across counties (from before the rule) reaches nothing.
      let marks = databaseQuestionMarks(count: schoolIDs.count)
      let rows = try Row.fetchAll(
        db,
        sql: """
          SELECT t.managing_school_id AS school, t.id AS point FROM orgs t
          JOIN orgs s ON s.id = t.managing_school_id AND s.parent_id = t.parent_id
          WHERE t.active = 1 AND t.managing_school_id IN (\(marks))
          ORDER BY t.id
          """,
        arguments: StatementArguments(schoolIDs))
      var result: [String: [String]] = [:]
      for row in rows { result[row["school"], default: []].append(row["point"]) }
      return result
    }
  }

  func updateOrg(_ org: Org, newParent: Org?, managingSchool: Org??) async throws -> Org {
    try await store.write { db in
      try self.updateOrg(db, org, newParent: newParent, managingSchool: managingSchool)
    }
  }

  func deactivateOrg(id: String) async throws -> Org {
    try await store.write { db in
      try db.execute(
        sql: "UPDATE orgs SET active = 0, updated_at = ? WHERE id = ?",
        arguments: [Date().timeIntervalSince1970, id])
      guard let org = try self.fetchOrg(db, id: id) else {
        throw ServiceError.notFound("org '\(id)' not found")
      }
      try self.recordOrgChange(db, org)
      return org
    }
  }

  func activeChildCount(of id: String) async throws -> Int {
    try await store.read { db in
      try Int.fetchOne(
        db.cachedStatement(sql: "SELECT COUNT(*) FROM orgs WHERE parent_id = ? AND active = 1"),
        arguments: [id])
        ?? 0
    }
  }

  func listOrgs(
    under path: OrgPath?, parentID: String?, kind: Smartschool_Common_V1_OrgKind?,
    includeInactive: Bool, scopes: [OrgPath], afterCode: String?, limit: Int
  ) async throws -> [Org] {
    try await store.read { db in
      var sql = Self.orgSelect + " WHERE 1"
      var args: [any DatabaseValueConvertible] = []
      if let parentID {
        sql += " AND o.parent_id = ?"
        args.append(parentID)
      } else if let path {
        sql += " AND substr(o.path, 1, ?) = ? AND o.path <> ?"
        args += [path.description.count, path.description, path.description]
      }
      if let kind {
        sql += " AND o.kind = ?"
        args.append(kind.rawValue)
      }
      if !includeInactive { sql += " AND o.active = 1" }
      if let (clause, scopeArgs) = Self.scopeClause("o.path", scopes) {
        sql += " AND " + clause
        args += scopeArgs
      }
      if let afterCode {
        sql += " AND o.code > ?"
        args.append(afterCode)
      }
      sql += " ORDER BY o.code LIMIT ?"
      args.append(limit)
      return try db.cachedStatement(sql: sql).decodeAll(
        arguments: StatementArguments(args), Self.org)
    }
  }

  func importOrgs(
    _ rows: [(index: Int, row: Org)], authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> (result: BatchOutcome, deferred: [(index: Int, row: Org)]) {
    try await store.write { db in
      var result = BatchOutcome()
      var deferred: [(index: Int, row: Org)] = []
      for (index, row) in rows {
        func reject(_ field: String, _ reason: String) {
          result.errors.append(.row(index, key: row.code, field: field, reason))
        }
        func fetch(_ code: String) throws -> Org? {
          code.isEmpty ? nil : try self.fetchOrg(db, code: code)
        }
        let parent = try fetch(row.parentCode)
        let managing = try fetch(row.managingSchoolCode)
        do {
          switch OrgImportStep.decide(
            row, parent: parent, managing: managing, existing: try fetch(row.code),
            authorize: authorize)
          {
          case .defer: deferred.append((index, row))
          case .reject(let field, let reason): reject(field, reason)
          case .update(let update, let changes):
            if changes {
              _ = try self.updateOrg(
                db, update, newParent: parent, managingSchool: .some(managing))
            }
            result.updated += 1
          case .insert:
            _ = try self.insertOrg(db, row, parent: parent, managingSchool: managing)
            result.created += 1
          }
        } catch ServiceError.invalidArgument(let violations) where !violations.isEmpty {
          reject(violations[0].field, violations[0].description)
        } catch let error as ServiceError {
          reject("org", error.message)
        } catch let error as DatabaseError {
          reject("org", Store.map(error).message)
        }
      }
      return (result, deferred)
    }
  }

  // MARK: Users

  private func fetchUser(_ db: Database, where clause: String, _ value: String) throws -> User? {
    // Cached statements (one per clause): WhoAmI and every login read users.
    try db.cachedStatement(sql: Self.userSelect + " WHERE \(clause)").decodeFirst(
      arguments: [value], Self.user)
  }

  func user(id: String) async throws -> User? {
    try await store.read { db in try self.fetchUser(db, where: "u.id = ?", id) }
  }

  func user(externalID: String) async throws -> User? {
    try await store.read { db in try self.fetchUser(db, where: "u.external_id = ?", externalID) }
  }

  func user(username: String) async throws -> User? {
    try await store.read { db in try self.fetchUser(db, where: "u.username = ?", username) }
  }

  private func recordUserChange(_ db: Database, _ user: User) throws {
    try ChangeFeed.record(db, events: [UserImportPlan.change(user)])
  }

  private func insertUser(
    _ db: Database, _ user: User, org: Org?, passwordHash: String?, mustChangePassword: Bool,
    clientID: String?, clientSecretHash: String?
  ) throws -> User {
    let id = EntityID.make()
    let now = Date().timeIntervalSince1970
    let status: Smartschool_Identity_V1_UserStatus =
      passwordHash != nil || clientSecretHash != nil ? .active : .pendingActivation
    try db.execute(
      sql: """
        INSERT INTO users (id, external_id, username, display_name, kind, org_id, birth_year,
          status, password_hash, password_change_required, client_id, client_secret_hash,
          created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """,
      arguments: [
        id, user.externalID, user.username, user.displayName, user.kind.rawValue, org?.id,
        user.birthYear, status.rawValue, passwordHash, mustChangePassword, clientID,
        clientSecretHash, now, now,
      ])
    let created = try fetchUser(db, where: "u.id = ?", id)!
    try recordUserChange(db, created)
    return created
  }

  private func checkUserKeys(_ db: Database, _ user: User, excluding id: String?) throws {
    if let other = try fetchUser(db, where: "u.external_id = ?", user.externalID), other.id != id {
      throw ServiceError.alreadyExists(
        "a user with external id '\(user.externalID)' already exists")
    }
    if let other = try fetchUser(db, where: "u.username = ?", user.username), other.id != id {
      throw ServiceError.alreadyExists("username '\(user.username)' is taken")
    }
  }

  func insertUser(
    _ user: User, org: Org?, passwordHash: String?, mustChangePassword: Bool, clientID: String?,
    clientSecretHash: String?
  ) async throws -> User {
    try await store.write { db in
      try self.checkUserKeys(db, user, excluding: nil)
      return try self.insertUser(
        db, user, org: org, passwordHash: passwordHash, mustChangePassword: mustChangePassword,
        clientID: clientID, clientSecretHash: clientSecretHash)
    }
  }

  private func updateUser(_ db: Database, _ user: User, org: Org?) throws -> User {
    try checkUserKeys(db, user, excluding: user.id)
    try db.execute(
      sql: """
        UPDATE users SET username = ?, display_name = ?, org_id = COALESCE(?, org_id),
          birth_year = ?, kind = ?, updated_at = ? WHERE id = ?
        """,
      arguments: [
        user.username, user.displayName, org?.id, user.birthYear, user.kind.rawValue,
        Date().timeIntervalSince1970, user.id,
      ])
    guard let updated = try fetchUser(db, where: "u.id = ?", user.id) else {
      throw ServiceError.notFound("user '\(user.id)' not found")
    }
    try recordUserChange(db, updated)
    return updated
  }

  func updateUser(_ user: User, org: Org?) async throws -> User {
    try await store.write { db in try self.updateUser(db, user, org: org) }
  }

  func deactivateUser(id: String) async throws -> User {
    try await store.write { db in
      let now = Date().timeIntervalSince1970
      try db.execute(
        sql: "UPDATE users SET status = ?, updated_at = ? WHERE id = ?",
        arguments: [Smartschool_Identity_V1_UserStatus.deactivated.rawValue, now, id])
      _ = try self.revokeSessions(db, userID: id, except: nil, reason: "user deactivated")
      guard let user = try self.fetchUser(db, where: "u.id = ?", id) else {
        throw ServiceError.notFound("user '\(id)' not found")
      }
      try self.recordUserChange(db, user)
      return user
    }
  }

  func reactivateUser(id: String) async throws -> User? {
    try await store.write { db in
      typealias Status = Smartschool_Identity_V1_UserStatus
      try db.execute(
        sql: """
          UPDATE users SET status = CASE
              WHEN password_hash IS NOT NULL OR client_secret_hash IS NOT NULL THEN ? ELSE ? END,
            failed_logins = 0, locked_until = NULL, updated_at = ?
          WHERE id = ? AND status = ?
          """,
        arguments: [
          Status.active.rawValue, Status.pendingActivation.rawValue,
          Date().timeIntervalSince1970, id, Status.deactivated.rawValue,
        ])
      guard db.changesCount == 1, let user = try self.fetchUser(db, where: "u.id = ?", id) else {
        return nil
      }
      try self.recordUserChange(db, user)
      return user
    }
  }

  func listUsers(
    scopes: [OrgPath], kind: Smartschool_Identity_V1_UserKind?, namePrefix: String,
    includeInactive: Bool, afterUsername: String?, limit: Int
  ) async throws -> [User] {
    try await store.read { db in
      var sql = Self.userSelect + " WHERE 1"
      var args: [any DatabaseValueConvertible] = []
      if let (clause, scopeArgs) = Self.scopeClause("o.path", scopes) {
        sql += " AND " + clause
        args += scopeArgs
      }
      if let kind {
        sql += " AND u.kind = ?"
        args.append(kind.rawValue)
      }
      if !namePrefix.isEmpty {
        sql +=
          " AND (substr(u.display_name, 1, ?) = ? OR substr(u.username, 1, ?) = ? COLLATE NOCASE)"
        args += [namePrefix.count, namePrefix, namePrefix.count, namePrefix]
      }
      if !includeInactive {
        sql += " AND u.status <> ?"
        args.append(Smartschool_Identity_V1_UserStatus.deactivated.rawValue)
      }
      if let afterUsername {
        sql += " AND u.username > ?"
        args.append(afterUsername)
      }
      sql += " ORDER BY u.username LIMIT ?"
      args.append(limit)
      return try db.cachedStatement(sql: sql).decodeAll(
        arguments: StatementArguments(args), Self.user)
    }
  }

  /// The rows of `sql` + " IN (…)" for `keys`, in chunks under SQLite's parameter limit.
  private func fetchAll<T>(
    _ db: Database, _ sql: String, in keys: [String], _ decode: (Row) -> T
  ) throws -> [T] {
    var result: [T] = []
    for start in stride(from: 0, to: keys.count, by: 500) {
      let chunk = Array(keys[start..<min(start + 500, keys.count)])
      let marks = Array(repeating: "?", count: chunk.count).joined(separator: ",")
      result += try Row.fetchAll(
        db.cachedStatement(sql: sql + " IN (\(marks))"), arguments: StatementArguments(chunk)
      ).map(decode)
    }
    return result
  }

  var userWritesInFlight: Int { 1 }

  /// Reads the batch's orgs and users on a reader (a snapshot) and plans it, with its feed
  /// events, while the batch before it commits: the writer, which every write of the service
  /// queues for, then only checks and writes.
  func stageUserImport(
    _ rows: [(index: Int, row: User)], authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> StagedUserImport {
    let keys = UserImportState.keys(rows)
    let state = try await store.read { db in
      try self.importState(db, orgCodes: keys.orgCodes, keys.externalIDs, keys.usernames)
    }
    let plan = UserImportPlan.plan(rows, state: state, authorize: authorize)
    let planned = plan.events
    let encoded = Task {
      StagedUserImport.Encoded(events: try planned.map { try UserImportPlan.change($0.user) })
    }
    return StagedUserImport(rows, guess: .init(state: state, plan: plan, encoded: encoded))
  }

  /// In the writer, reads again the orgs and the users the stage found (a user made meanwhile
  /// under a key the stage found free fails its insert by the unique index). All unchanged,
  /// the guess is written as planned; a changed one or a refused row, and the guess's writes
  /// are rolled back and the batch read and decided again, as if never staged.
  func importUsers(
    _ staged: StagedUserImport, authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> BatchOutcome {
    guard let guess = staged.guess else {
      return try await importUsers(staged.rows, authorize: authorize)
    }
    let events = try await guess.encoded.value.events
    return try await store.write { db in
      let now = try self.importState(
        db, orgCodes: Array(guess.state.orgs.keys), Array(guess.state.users.keys), [])
      if now == guess.state {
        var written = false
        try db.inSavepoint {
          let refused = try self.write(db, guess.plan)
          written = refused.updates.isEmpty && refused.inserts.isEmpty
          return written ? .commit : .rollback
        }
        if written {
          try ChangeFeed.record(db, events: events)
          return guess.plan.outcome
        }
      }
      return try self.importUsers(db, staged.rows, authorize: authorize)
    }
  }

  /// Imports a batch through ``UserImportPlan``: the orgs and users the rows name read in a
  /// few statements, then each insert, update and feed event through a cached statement.
  func importUsers(
    _ rows: [(index: Int, row: User)], authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> BatchOutcome {
    try await store.write { db in try self.importUsers(db, rows, authorize: authorize) }
  }

  /// The import of `rows` in the writer: read, plan, write.
  private func importUsers(
    _ db: Database, _ rows: [(index: Int, row: User)],
    authorize: @escaping @Sendable (OrgPath) -> Bool
  ) throws -> BatchOutcome {
    let keys = UserImportState.keys(rows)
    let state = try importState(db, orgCodes: keys.orgCodes, keys.externalIDs, keys.usernames)
    var plan = UserImportPlan.plan(rows, state: state, authorize: authorize)
    let refused = try write(db, plan)
    plan.dropInserts(refused.inserts) { "username '\($0.username)' is taken" }
    plan.dropUpdates(refused.updates)
    for (_, user) in plan.events { try recordUserChange(db, user) }
    return plan.outcome
  }

  /// The orgs of `orgCodes` and the users of `externalIDs` and of the lower-cased `usernames`.
  private func importState(
    _ db: Database, orgCodes: [String], _ externalIDs: [String], _ usernames: [String]
  ) throws -> UserImportState {
    var state = UserImportState()
    for org in try fetchAll(db, Self.orgSelect + " WHERE o.code", in: orgCodes, Self.org) {
      state.orgs[org.code] = org
    }
    for user
      in try fetchAll(db, Self.userSelect + " WHERE u.external_id", in: externalIDs, Self.user)
      + fetchAll(db, Self.userSelect + " WHERE u.username", in: usernames, Self.user)
    {
      state.users[user.externalID] = user
    }
    return state
  }

  /// Writes `plan`'s updates, then its inserts, each through a cached statement; returns the
  /// updates that failed (row index → reason) and the ids of the users not inserted.
  private func write(_ db: Database, _ plan: UserImportPlan) throws
    -> (updates: [Int: String], inserts: Set<String>)
  {
    // Updates first: one may free a username that a new user of the batch takes.
    let update = try db.cachedStatement(
      sql: """
        UPDATE users SET username = ?, display_name = ?, org_id = ?, birth_year = ?, kind = ?,
          updated_at = ? WHERE id = ?
        """)
    var failed: [Int: String] = [:]
    for step in plan.updates {
      let u = step.user
      do {
        try update.execute(arguments: [
          u.username, u.displayName, u.orgID, u.birthYear, u.kind.rawValue,
          u.updateTime.date.timeIntervalSince1970, u.id,
        ])
      } catch let error as DatabaseError {
        failed[step.index] = Store.map(error).message
      }
    }
    let insert = try db.cachedStatement(
      sql: """
        INSERT INTO users (id, external_id, username, display_name, kind, org_id, birth_year,
          status, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """)
    var refused = Set<String>()
    for u in plan.inserts {
      let time = u.createTime.date.timeIntervalSince1970
      do {
        try insert.execute(arguments: [
          u.id, u.externalID, u.username, u.displayName, u.kind.rawValue, u.orgID,
          u.birthYear, u.status.rawValue, time, time,
        ])
      } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
        refused.insert(u.id)
      }
    }
    return (failed, refused)
  }

  func setActivation(userID: String, codeHash: String, expires: Date) async throws {
    try await store.write { db in
      try db.execute(
        sql: """
          UPDATE users SET activation_hash = ?, activation_expires = ?, password_hash = NULL,
            updated_at = ?
          WHERE id = ?
          """,
        arguments: [
          codeHash, expires.timeIntervalSince1970, Date().timeIntervalSince1970, userID,
        ])
    }
  }

  func activate(username: String, codeHash: String, passwordHash: String) async throws -> User? {
    try await store.write { db in
      let now = Date().timeIntervalSince1970
      try db.execute(
        sql: """
          UPDATE users SET password_hash = ?, status = ?, activation_hash = NULL,
            activation_expires = NULL, failed_logins = 0, locked_until = NULL, updated_at = ?
          WHERE username = ? AND activation_hash = ? AND activation_expires > ? AND status <> ?
          """,
        arguments: [
          passwordHash, Smartschool_Identity_V1_UserStatus.active.rawValue, now, username,
          codeHash, now, Smartschool_Identity_V1_UserStatus.deactivated.rawValue,
        ])
      guard db.changesCount == 1 else { return nil }
      let user = try self.fetchUser(db, where: "u.username = ?", username)!
      try self.recordUserChange(db, user)
      return user
    }
  }

  func setPassword(userID: String, hash: String) async throws {
    try await store.write { db in
      try db.execute(
        sql: "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?",
        arguments: [hash, Date().timeIntervalSince1970, userID])
    }
  }

  // MARK: Credentials and sessions

  private func credentials(_ db: Database, where clause: String, _ value: String) throws
    -> Credentials?
  {
    guard
      let row = try Row.fetchOne(
        db.cachedStatement(
          sql: """
            SELECT u.password_hash, u.failed_logins, u.locked_until, u.client_secret_hash, u.id,
              u.password_change_required
            FROM users u WHERE \(clause)
            """), arguments: [value]),
      let user = try fetchUser(db, where: "u.id = ?", row["id"])
    else { return nil }
    let locked: Double? = row["locked_until"]
    return Credentials(
      user: user, passwordHash: row["password_hash"], failedLogins: row["failed_logins"],
      lockedUntil: locked.map { Date(timeIntervalSince1970: $0) },
      clientSecretHash: row["client_secret_hash"],
      mustChangePassword: row["password_change_required"])
  }

  func credentials(username: String) async throws -> Credentials? {
    try await store.read { db in try self.credentials(db, where: "u.username = ?", username) }
  }

  func credentials(clientID: String) async throws -> Credentials? {
    try await store.read { db in try self.credentials(db, where: "u.client_id = ?", clientID) }
  }

  /// One conditional UPDATE … RETURNING (the same statement ports to PostgreSQL, where the
  /// row lock orders concurrent reservations): refused while locked; a lock that has run out
  /// starts a new window at 1.
  func reserveLoginAttempt(userID: String, threshold: Int, lockFor: TimeInterval) async throws
    -> Int?
  {
    try await store.write { db in
      let now = Date().timeIntervalSince1970
      let row = try Row.fetchOne(
        db.cachedStatement(
          sql: """
            UPDATE users SET
              failed_logins = CASE WHEN locked_until IS NOT NULL AND locked_until <= ?1 THEN 1
                ELSE failed_logins + 1 END,
              locked_until = CASE
                WHEN (CASE WHEN locked_until IS NOT NULL AND locked_until <= ?1 THEN 1
                  ELSE failed_logins + 1 END) >= ?2 THEN ?3
                WHEN locked_until <= ?1 THEN NULL ELSE locked_until END
            WHERE id = ?4 AND (locked_until IS NULL OR locked_until <= ?1)
            RETURNING failed_logins
            """), arguments: [now, threshold, now + lockFor, userID])
      return row?["failed_logins"]
    }
  }

  func recordSuccessfulLogin(userID: String, newHash: String?, passwordChanged: Bool)
    async throws -> Bool
  {
    try await store.write { db in
      try db.execute(
        sql: """
          UPDATE users SET failed_logins = 0, locked_until = NULL,
            password_hash = COALESCE(?, password_hash),
            password_change_required = CASE WHEN ? THEN 0 ELSE password_change_required END,
            updated_at = CASE WHEN ? THEN ? ELSE updated_at END
          WHERE id = ?
          """,
        arguments: [newHash, passwordChanged, passwordChanged, Date().timeIntervalSince1970, userID])
      return db.changesCount == 1
    }
  }

  func unlock(userID: String) async throws -> User {
    try await store.write { db in
      try db.execute(
        sql: "UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = ?",
        arguments: [userID])
      guard let user = try self.fetchUser(db, where: "u.id = ?", userID) else {
        throw ServiceError.notFound("user not found")
      }
      return user
    }
  }

  func createSession(userID: String, refreshHash: String?, refreshExpires: Date) async throws
    -> String
  {
    try await store.write { db in
      let id = EntityID.make()
      let now = Date().timeIntervalSince1970
      // Only for an active account, in the same transaction: a deactivation that ended the
      // sessions just before must not be followed by a new one.
      try db.execute(
        sql: """
          INSERT INTO sessions (id, user_id, created_at, expires_at)
          SELECT ?, id, ?, ? FROM users WHERE id = ? AND status = ?
          """,
        arguments: [
          id, now, refreshExpires.timeIntervalSince1970, userID,
          Smartschool_Identity_V1_UserStatus.active.rawValue,
        ])
      guard db.changesCount == 1 else {
        throw ServiceError.unauthenticated("the account is not active")
      }
      guard let refreshHash else { return id }
      try db.execute(
        sql: """
          INSERT INTO refresh_tokens (hash, session_id, issued_at, expires_at) VALUES (?, ?, ?, ?)
          """, arguments: [refreshHash, id, now, refreshExpires.timeIntervalSince1970])
      return id
    }
  }

  func refreshRecord(hash: String) async throws -> RefreshRecord? {
    try await store.read { db in
      guard
        let row = try Row.fetchOne(
          db.cachedStatement(
            sql: """
              SELECT r.session_id, r.expires_at, r.used_at, s.user_id, s.revoked_at,
                s.expires_at AS session_expires_at
              FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.hash = ?
              """), arguments: [hash])
      else { return nil }
      let used: Double? = row["used_at"]
      let revoked: Double? = row["revoked_at"]
      return RefreshRecord(
        sessionID: row["session_id"], userID: row["user_id"],
        expiresAt: Date(timeIntervalSince1970: row["expires_at"]),
        usedAt: used.map { Date(timeIntervalSince1970: $0) }, sessionRevoked: revoked != nil,
        sessionExpiresAt: Date(timeIntervalSince1970: row["session_expires_at"]))
    }
  }

  /// Marks the old token used and issues the new one, atomically; false when the old token
  /// was used meanwhile (a concurrent reuse).
  func rotateRefresh(oldHash: String, sessionID: String, newHash: String, expires: Date)
    async throws -> Bool
  {
    try await store.write { db in
      let now = Date().timeIntervalSince1970
      try db.execute(
        sql: "UPDATE refresh_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL",
        arguments: [now, oldHash])
      guard db.changesCount == 1 else { return false }
      try db.execute(
        sql: """
          INSERT INTO refresh_tokens (hash, session_id, issued_at, expires_at) VALUES (?, ?, ?, ?)
          """, arguments: [newHash, sessionID, now, expires.timeIntervalSince1970])
      return true
    }
  }

  func revokeSession(id: String, reason: String) async throws {
    try await store.write { db in
      try db.execute(
        sql: """
          UPDATE sessions SET revoked_at = ?, revoke_reason = ? WHERE id = ? AND revoked_at IS NULL
          """, arguments: [Date().timeIntervalSince1970, reason, id])
      if db.changesCount > 0 { try self.recordRevocation(db, session: id) }
    }
  }

  /// Revokes, in the caller's transaction, every live session of a user but `except`, each on
  /// the change feed.
  private func revokeSessions(_ db: Database, userID: String, except: String?, reason: String)
    throws -> [String: Date]
  {
    let now = Date()
    let ids = try String.fetchAll(
      db.cachedStatement(
        sql: "SELECT id FROM sessions WHERE user_id = ? AND revoked_at IS NULL AND id <> ?"),
      arguments: [userID, except ?? ""])
    for id in ids {
      try db.cachedStatement(
        sql: "UPDATE sessions SET revoked_at = ?, revoke_reason = ? WHERE id = ?"
      ).execute(arguments: [now.timeIntervalSince1970, reason, id])
      try recordRevocation(db, session: id)
    }
    return Dictionary(uniqueKeysWithValues: ids.map { ($0, now) })
  }

  func revokeSessions(userID: String, except: String?, reason: String) async throws
    -> [String: Date]
  {
    try await store.write { db in
      try self.revokeSessions(db, userID: userID, except: except, reason: reason)
    }
  }

  func setClientSecret(userID: String, hash: String) async throws -> String? {
    try await store.write { db in
      try String.fetchOne(
        db.cachedStatement(
          sql: """
            UPDATE users SET client_secret_hash = ?, updated_at = ?
            WHERE id = ? AND client_id IS NOT NULL RETURNING client_id
            """), arguments: [hash, Date().timeIntervalSince1970, userID])
    }
  }

  /// Puts a revocation on the change feed, which every service reads, so the session's access
  /// tokens are refused everywhere, not only here. It carries no user data and no org path:
  /// every feed reader sees it (``SQLiteIdentityStore/changes(after:limit:scopes:)``).
  private func recordRevocation(_ db: Database, session: String) throws {
    try ChangeFeed.record(
      db, entity: "session", id: session, naturalKey: session, op: .delete, orgPath: "")
  }

  func revokedSessions(since: Date) async throws -> [String: Date] {
    try await store.read { db in
      // With the revoked OpenID Connect client_credentials grants, which are sessions to the
      // token verifiers but have no user (OIDCTokenStore.swift).
      let rows = try Row.fetchAll(
        db.cachedStatement(
          sql: """
            SELECT id, revoked_at FROM sessions WHERE revoked_at > ?1
            UNION ALL SELECT session_id, revoked_at FROM oidc_grants WHERE revoked_at > ?1
            """),
        arguments: [since.timeIntervalSince1970])
      return Dictionary(
        rows.map { (row: Row) -> (String, Date) in
          (row["id"], Date(timeIntervalSince1970: row["revoked_at"]))
        }, uniquingKeysWith: { a, _ in a })
    }
  }

  func sessionActive(id: String) async throws -> Bool {
    try await store.read { db in
      try Bool.fetchOne(
        db.cachedStatement(
          sql: "SELECT revoked_at IS NULL AND expires_at > ? FROM sessions WHERE id = ?"),
        arguments: [Date().timeIntervalSince1970, id]) ?? false
    }
  }

  // MARK: Guardians

  private func link(_ db: Database, parentID: String, studentID: String) throws -> Bool {
    try db.execute(
      sql: """
        INSERT OR IGNORE INTO guardian_links (parent_id, student_id, created_at) VALUES (?, ?, ?)
        """, arguments: [parentID, studentID, Date().timeIntervalSince1970])
    guard db.changesCount == 1 else { return false }
    let student = try fetchUser(db, where: "u.id = ?", studentID)
    let parent = try fetchUser(db, where: "u.id = ?", parentID)
    try ChangeFeed.record(
      db, entity: "guardian_link", id: "\(parentID):\(studentID)",
      naturalKey: "\(parent?.externalID ?? ""):\(student?.externalID ?? "")", op: .upsert,
      orgPath: student?.orgPath ?? "/")
    return true
  }

  func link(parentID: String, studentID: String) async throws -> Bool {
    try await store.write { db in try self.link(db, parentID: parentID, studentID: studentID) }
  }

  func unlink(parentID: String, studentID: String) async throws -> Bool {
    try await store.write { db in
      try db.execute(
        sql: "DELETE FROM guardian_links WHERE parent_id = ? AND student_id = ?",
        arguments: [parentID, studentID])
      guard db.changesCount == 1 else { return false }
      let student = try self.fetchUser(db, where: "u.id = ?", studentID)
      let parent = try self.fetchUser(db, where: "u.id = ?", parentID)
      try ChangeFeed.record(
        db, entity: "guardian_link", id: "\(parentID):\(studentID)",
        naturalKey: "\(parent?.externalID ?? ""):\(student?.externalID ?? "")", op: .delete,
        orgPath: student?.orgPath ?? "/")
      return true
    }
  }

  func children(ofParent id: String) async throws -> [User] {
    try await store.read { db in
      try db.cachedStatement(
        sql: Self.userSelect
          + " WHERE u.id IN (SELECT student_id FROM guardian_links WHERE parent_id = ?)"
          + " ORDER BY u.username"
      ).decodeAll(arguments: [id], Self.user)
    }
  }

  func guardians(ofStudent id: String) async throws -> [User] {
    try await store.read { db in
      try db.cachedStatement(
        sql: Self.userSelect
          + " WHERE u.id IN (SELECT parent_id FROM guardian_links WHERE student_id = ?)"
          + " ORDER BY u.username"
      ).decodeAll(arguments: [id], Self.user)
    }
  }

  func importGuardians(
    _ rows: [(index: Int, parent: String, student: String)],
    authorize: @escaping @Sendable (OrgPath) -> Bool
  ) async throws -> BatchOutcome {
    try await store.write { db in
      var result = BatchOutcome()
      for (index, parentKey, studentKey) in rows {
        func reject(_ field: String, _ reason: String) {
          result.errors.append(.row(index, key: "\(parentKey):\(studentKey)", field: field, reason))
        }
        let parent = try self.fetchUser(db, where: "u.external_id = ?", parentKey)
        let student = try self.fetchUser(db, where: "u.external_id = ?", studentKey)
        if let refusal = OrgRules.guardianRefusal(
          parent: parent, parentKey: parentKey, student: student, studentKey: studentKey,
          authorize: authorize)
        {
          reject(refusal.field, refusal.reason)
          continue
        }
        guard let parent, let student else { continue }
        if try self.link(db, parentID: parent.id, studentID: student.id) {
          result.created += 1
        } else {
          result.updated += 1
        }
      }
      return result
    }
  }

  // MARK: Roles

  func bindings(userID: String) async throws -> [Binding] {
    try await store.read { db in try self.fetchBindings(db, userID: userID) }
  }

  func userWithBindings(id: String) async throws -> (User, [Binding])? {
    let account = try await accounts.value(for: id) {
      try await store.read { db in
        guard let user = try self.fetchUser(db, where: "u.id = ?", id) else { return nil }
        return (user, try self.fetchBindings(db, userID: id))
      }
    }
    guard var account else { return nil }
    // A lockout ends with time, not with a write: a kept account may have outlived its own.
    if account.0.hasLockedUntil, account.0.lockedUntil.date <= Date() {
      account.0.clearLockedUntil()
    }
    return account
  }

  private func fetchBindings(_ db: Database, userID: String) throws -> [Binding] {
    try db.cachedStatement(
      sql: Self.bindingSelect + " WHERE b.user_id = ? ORDER BY b.created_at, b.id"
    ).decodeAll(arguments: [userID], Self.binding)
  }

  func binding(id: String) async throws -> Binding? {
    try await store.read { db in
      try db.cachedStatement(sql: Self.bindingSelect + " WHERE b.id = ?").decodeFirst(
        arguments: [id], Self.binding)
    }
  }

  func insertBinding(userID: String, role: Role, org: Org?, grantedBy: String) async throws
    -> Binding
  {
    try await store.write { db in
      let exists =
        try Bool.fetchOne(
          db.cachedStatement(
            sql: """
              SELECT 1 FROM role_bindings
              WHERE user_id = ? AND role = ? AND COALESCE(org_id, '') = ?
              """), arguments: [userID, role.rawValue, org?.id ?? ""]) ?? false
      if exists {
        throw ServiceError.alreadyExists("the user already holds \(role.rawValue) at this org")
      }
      let id = EntityID.make()
      try db.execute(
        sql: """
          INSERT INTO role_bindings (id, user_id, role, org_id, granted_by, created_at)
          VALUES (?, ?, ?, ?, ?, ?)
          """,
        arguments: [id, userID, role.rawValue, org?.id, grantedBy, Date().timeIntervalSince1970])
      let binding = try db.cachedStatement(sql: Self.bindingSelect + " WHERE b.id = ?").decodeFirst(
        arguments: [id], Self.binding)!
      try ChangeFeed.record(
        db, entity: "role_binding", id: id,
        naturalKey: "\(userID):\(role.rawValue):\(org?.code ?? "")",
        op: .upsert, orgPath: binding.orgPath, payload: binding)
      return binding
    }
  }

  func deleteBinding(id: String) async throws {
    try await store.write { db in
      guard
        let binding = try db.cachedStatement(sql: Self.bindingSelect + " WHERE b.id = ?")
          .decodeFirst(arguments: [id], Self.binding)
      else { throw ServiceError.notFound("role binding '\(id)' not found") }
      try db.execute(sql: "DELETE FROM role_bindings WHERE id = ?", arguments: [id])
      let role = Role(binding.role)?.rawValue ?? ""
      try ChangeFeed.record(
        db, entity: "role_binding", id: id,
        naturalKey: "\(binding.userID):\(role):\(binding.orgCode)", op: .delete,
        orgPath: binding.orgPath)
    }
  }

  func listBindings(
    userID: String?, under: OrgPath?, role: Role?, scopes: [OrgPath], afterID: String?,
    limit: Int
  ) async throws -> [Binding] {
    try await store.read { db in
      var sql = Self.bindingSelect + " WHERE 1"
      var args: [any DatabaseValueConvertible] = []
      if let userID {
        sql += " AND b.user_id = ?"
        args.append(userID)
      }
      if let under {
        sql += " AND substr(COALESCE(o.path, '/'), 1, ?) = ?"
        args += [under.description.count, under.description]
      }
      if let role {
        sql += " AND b.role = ?"
        args.append(role.rawValue)
      }
      if let (clause, scopeArgs) = Self.scopeClause("COALESCE(o.path, '/')", scopes) {
        sql += " AND " + clause
        args += scopeArgs
      }
      if let afterID {
        sql += " AND b.id > ?"
        args.append(afterID)
      }
      sql += " ORDER BY b.id LIMIT ?"
      args.append(limit)
      return try db.cachedStatement(sql: sql).decodeAll(
        arguments: StatementArguments(args), Self.binding)
    }
  }

  // MARK: Keys

  func signingKeys() async throws -> [StoredKey] {
    try await store.read { db in
      try db.cachedStatement(sql: "SELECT * FROM signing_keys ORDER BY created_at").decodeAll {
        row in
        let retire: Double? = row["retire_at"]
        return StoredKey(
          id: row["id"], privateKey: row["private_key"], publicKey: row["public_key"],
          createdAt: Date(timeIntervalSince1970: row["created_at"]),
          retireAt: retire.map { Date(timeIntervalSince1970: $0) }, current: row["current"])
      }
    }
  }

  func addSigningKey(_ key: StoredKey, retireOthersAt: Date?) async throws {
    try await store.write { db in
      try db.execute(
        sql: """
          UPDATE signing_keys SET current = 0, retire_at = COALESCE(retire_at, ?) WHERE current = 1
          """, arguments: [retireOthersAt?.timeIntervalSince1970])
      try db.execute(
        sql: """
          INSERT INTO signing_keys (id, private_key, public_key, created_at, retire_at, current)
          VALUES (?, ?, ?, ?, NULL, 1)
          """,
        arguments: [key.id, key.privateKey, key.publicKey, key.createdAt.timeIntervalSince1970])
    }
  }

  // MARK: Audit and changes

  func audit(_ entry: AuditEntry) async throws {
    try await store.write { db in
      try db.execute(
        sql: """
          INSERT INTO audit_events (time, actor_id, action, target, org_id, org_path, detail)
          VALUES (?, ?, ?, ?, ?, ?, ?)
          """,
        arguments: [
          Date().timeIntervalSince1970, entry.actorID, entry.action, entry.target, entry.orgID,
          entry.orgPath.isEmpty ? "/" : entry.orgPath, entry.detail,
        ])
    }
  }

  func auditEvents(
    after: Int64, actorID: String?, action: String?, under: OrgPath?, scopes: [OrgPath],
    limit: Int
  ) async throws -> ([Smartschool_Identity_V1_AuditEvent], Bool) {
    try await store.read { db in
      var sql = "SELECT * FROM audit_events WHERE sequence > ?"
      var args: [any DatabaseValueConvertible] = [after]
      if let actorID {
        sql += " AND actor_id = ?"
        args.append(actorID)
      }
      if let action {
        sql += " AND action = ?"
        args.append(action)
      }
      if let under {
        sql += " AND substr(org_path, 1, ?) = ?"
        args += [under.description.count, under.description]
      }
      if let (clause, scopeArgs) = Self.scopeClause("org_path", scopes) {
        sql += " AND " + clause
        args += scopeArgs
      }
      sql += " ORDER BY sequence LIMIT ?"
      args.append(limit + 1)
      let rows = try Row.fetchAll(db.cachedStatement(sql: sql), arguments: StatementArguments(args))
      let events = rows.prefix(limit).map { row in
        Smartschool_Identity_V1_AuditEvent.with {
          $0.sequence = row["sequence"]
          $0.time = .init(date: Date(timeIntervalSince1970: row["time"]))
          $0.actorID = row["actor_id"]
          $0.action = row["action"]
          $0.target = row["target"]
          $0.orgID = row["org_id"]
          $0.orgPath = row["org_path"]
          $0.detail = row["detail"]
        }
      }
      return (Array(events), rows.count > limit)
    }
  }

  func changes(after: Int64, limit: Int, scopes: [OrgPath]) async throws
    -> (changes: [Smartschool_Common_V1_Change], more: Bool)
  {
    try await store.read { db in
      let r = try ChangeFeed.list(
        db, after: after, limit: limit, scopes: scopes, unscoped: ["session"])
      return (r.changes, r.hasMore)
    }
  }

  func isEmpty() async throws -> Bool {
    try await store.read { db in
      try Int.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*) FROM users")) == 0
    }
  }
}
