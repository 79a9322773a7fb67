import Foundation
import ServiceRuntime
import SmartSchoolModel

/// The per-row decisions of identity's imports, without I/O: both stores read the rows a
/// decision needs and ask here, so that SQLite and PostgreSQL refuse the same rows alike.
extension OrgRules {
  /// A refusal: the field and the reason.
  typealias Refusal = (field: String, reason: String)

  /// Why an imported org row may not be placed under `parent` (its parent found or nil for
  /// none), or nil.
  static func importPlacementRefusal(
    _ row: Org, parent: Org?, authorize: (OrgPath) -> Bool
  ) -> Refusal? {
    do {
      try checkParent(child: row.kind, parent: parent?.kind, field: "org.parent_code")
    } catch {
      return ("org.parent_code", error.message)
    }
    guard authorize(parent.flatMap { OrgPath($0.path) } ?? .root) else {
      return ("org.parent_code", "outside the caller's scope")
    }
    return nil
  }

  /// Why `managing` may not be an imported org row's managing school, or nil.
  static func importManagingRefusal(_ managing: Org) -> Refusal? {
    if managing.kind != .school || managing.schoolKind == .teachingPoint {
      return ("org.managing_school_code", "must name a central school (not a teaching point)")
    }
    return nil
  }

  /// Why an imported org row may not update `existing`, the org of its code, or nil.
  static func importUpdateRefusal(
    _ row: Org, existing: Org, parent: Org?, authorize: (OrgPath) -> Bool
  ) -> Refusal? {
    guard existing.kind == row.kind else {
      return ("org.kind", "org '\(row.code)' exists with kind \(existing.kind.englishName)")
    }
    guard authorize(OrgPath(existing.path)!) else { return ("org.code", "outside the caller's scope") }
    if let parent, let p = OrgPath(parent.path),
      wouldCycle(orgPath: OrgPath(existing.path)!, newParentPath: p)
    {
      return ("org.parent_code", "would make the org its own ancestor")
    }
    return nil
  }

  /// Whether an imported org row would change nothing of `existing`.
  static func importChanges(_ row: Org, existing: Org) -> Bool {
    !(existing.name == row.name && existing.schoolKind == row.schoolKind
      && existing.stages == row.stages && existing.grade == row.grade
      && existing.schoolYear == row.schoolYear && existing.parentCode == row.parentCode
      && existing.managingSchoolCode == row.managingSchoolCode)
  }

  /// Why a guardian-link row may not link the users its external ids name (`parent` and
  /// `student` as found, nil for none), or nil.
  static func guardianRefusal(
    parent: User?, parentKey: String, student: User?, studentKey: String,
    authorize: (OrgPath) -> Bool
  ) -> Refusal? {
    guard let parent, parent.kind == .parent else {
      return ("parent_external_id", "no parent with external id '\(parentKey)'")
    }
    guard let student, student.kind == .student else {
      return ("student_external_id", "no student with external id '\(studentKey)'")
    }
    guard let path = OrgPath(student.orgPath), authorize(path) else {
      return ("student_external_id", "outside the caller's scope")
    }
    return nil
  }

  /// Why an imported user row may not have `org` (the active org of its code) as home, or nil.
  static func importHomeRefusal(_ row: User, org: Org, authorize: (OrgPath) -> Bool)
    -> Refusal?
  {
    guard allowedHomeKinds(for: row.kind).contains(org.kind) else {
      return ("user.org_code", "a \(row.kind) cannot have a \(org.kind.englishName) as home org")
    }
    guard authorize(OrgPath(org.path)!) else { return ("user.org_code", "outside the caller's scope") }
    return nil
  }

  /// Whether an imported user row, homed at `orgID`, would change `existing`.
  static func importChanges(_ row: User, existing: User, orgID: String) -> Bool {
    !(existing.username.lowercased() == row.username.lowercased()
      && existing.displayName == row.displayName && existing.orgID == orgID
      && existing.birthYear == row.birthYear && existing.kind == row.kind)
  }
}

/// What a batch of imported users finds in the store, read in bulk before anything is decided
/// (one or two queries, not one per row).
struct UserImportState: Equatable {
  /// Orgs by code, for every `org_code` of the batch (inactive ones too).
  var orgs: [String: Org] = [:]
  /// Users by external id: those of the batch's external ids and those holding one of its
  /// usernames.
  var users: [String: User] = [:]

  /// The org codes of a batch, each once.
  static func orgCodes(_ rows: [(index: Int, row: User)]) -> [String] {
    var codes = Set<String>()
    var last = ""
    for (_, row) in rows where row.orgCode != last {
      codes.insert(row.orgCode)
      last = row.orgCode
    }
    return Array(codes)
  }

  /// The lookups a batch needs: its org codes, external ids and lower-cased usernames.
  static func keys(_ rows: [(index: Int, row: User)])
    -> (orgCodes: [String], externalIDs: [String], usernames: [String])
  {
    var codes = Set<String>()
    var externals = Set<String>()
    var usernames = Set<String>()
    for (_, row) in rows {
      codes.insert(row.orgCode)
      externals.insert(row.externalID)
      usernames.insert(row.username.lowercased())
    }
    return (Array(codes), Array(externals), Array(usernames))
  }
}

/// A batch of imported users read and decided ahead of its turn: an import stages each batch
/// while the one before it commits (``IdentityStoring/stageUserImport(_:authorize:)``), so the
/// reads and the plan leave the commit's path. The commit checks that what the stage read
/// still holds (on PostgreSQL under the import lock, or, for a batch of new users only, by the
/// users' unique indexes), and reads and decides again when it does not.
struct StagedUserImport: Sendable {
  /// What the stage read, what it decided, and the encodings of the decision.
  struct Guess: Sendable {
    var state: UserImportState
    var plan: UserImportPlan
    /// The plan's feed events and encodings, made on a task of their own: the import reads,
    /// checks and plans its next batch meanwhile (serializing the events' payloads and encoding
    /// the rows was half of a stage's work, all of it on the import's one task).
    var encoded: Task<Encoded, any Error>
    /// The row versions of `state`'s orgs by code, where the store checks them so.
    var orgVersions: [String: String]?
  }

  /// A plan's feed events and, where the store writes them so, their encodings.
  struct Encoded: Sendable {
    var events: [ChangeEvent]
    /// The plan's new users encoded for a COPY, where the store loads them so.
    var copyRows: PostgresCopyRows?
    /// `events` packed for the feed, where the store writes them so.
    var encodedEvents: PostgresEncodedChanges?
  }

  var rows: [(index: Int, row: User)]
  /// The external ids and lower-cased usernames the batch reads or may write: its rows' and
  /// those of the users its read found. Empty without a guess (nothing to check them for).
  var keys: Set<String>
  /// Nil when the commit must read and decide itself (a store that decides in its commit, or a
  /// batch whose keys the batch before it writes: that one may commit after the stage read).
  var guess: Guess?

  init(_ rows: [(index: Int, row: User)], guess: Guess? = nil) {
    self.rows = rows
    self.guess = guess
    guard let guess else {
      keys = []
      return
    }
    var keys = Set<String>(minimumCapacity: rows.count * 2)
    for (_, row) in rows {
      keys.insert(row.externalID)
      keys.insert(row.username.lowercased())
    }
    for user in guess.state.users.values {
      keys.insert(user.externalID)
      keys.insert(user.username.lowercased())
    }
    self.keys = keys
  }
}

/// The store-neutral user importer: decides a whole batch from the rows and a
/// ``UserImportState`` as if the rows were applied one by one in stream order, and says what
/// the store must write. Both stores read the state in bulk, call ``plan(_:state:authorize:)``
/// and write the plan in few statements, so they accept and refuse the same rows alike.
struct UserImportPlan {
  /// One change to an existing user, in row order: the user as that row leaves it.
  struct Update {
    var index: Int
    var user: User
  }

  /// New users as the batch leaves them, in row order; each is one INSERT.
  var inserts: [User] = []
  /// Changes to existing users, in row order. Stores write each user's last state (one
  /// statement for the batch where they can) or, when that fails, each step in order.
  var updates: [Update] = []
  /// Change-feed events in row order, each the user as its row left it (a new user changed
  /// again by a later row has two).
  var events: [(index: Int, user: User)] = []
  /// Counts and per-row refusals.
  var outcome = BatchOutcome()

  /// Plans `rows` (validated already) against `state`. Every row is scope-checked: its home
  /// org, and an existing user's current place. A row that changes nothing writes nothing and
  /// emits nothing (it still counts as updated: the row is confirmed).
  static func plan(
    _ rows: [(index: Int, row: User)], state: UserImportState,
    authorize: (OrgPath) -> Bool, now: Date = Date()
  ) -> UserImportPlan {
    var plan = UserImportPlan()
    plan.inserts.reserveCapacity(rows.count)
    plan.events.reserveCapacity(rows.count)
    // Stored users as the rows leave them (the batch's new ones are in `plan.inserts`).
    var users = state.users
    // Lower-cased username → external id of its holder, as the rows leave them.
    var holders: [String: String] = [:]
    holders.reserveCapacity(users.count + rows.count)
    for user in users.values { holders[user.username.lowercased()] = user.externalID }
    // External id → position in `inserts` of a user this batch creates.
    var inserted: [String: Int] = [:]
    inserted.reserveCapacity(rows.count)
    // The decisions that depend only on an org (and kind) or a path, made once each.
    struct Home: Hashable {
      var kind: Int
      var org: String
    }
    var homeRefusals: [Home: OrgRules.Refusal?] = [:]
    var allowedPaths: [String: Bool] = [:]
    for (index, row) in rows {
      func reject(_ field: String, _ reason: String) {
        plan.outcome.errors.append(.row(index, key: row.externalID, field: field, reason))
      }
      guard let org = state.orgs[row.orgCode], org.active else {
        reject("user.org_code", "unknown org '\(row.orgCode)'")
        continue
      }
      let homeKey = Home(kind: row.kind.rawValue, org: org.code)
      let refusal: OrgRules.Refusal?
      if let known = homeRefusals[homeKey] {
        refusal = known
      } else {
        refusal = OrgRules.importHomeRefusal(row, org: org, authorize: authorize)
        homeRefusals[homeKey] = .some(refusal)
      }
      if let refusal {
        reject(refusal.field, refusal.reason)
        continue
      }
      let username = row.username.lowercased()
      // A user this batch makes is looked up where the plan holds it, not copied again.
      let position = inserted[row.externalID]
      if let existing = position.map({ plan.inserts[$0] }) ?? users[row.externalID] {
        let path = existing.orgPath.isEmpty ? "/" : existing.orgPath
        let allowed: Bool
        if let known = allowedPaths[path] {
          allowed = known
        } else {
          allowed = OrgPath(path).map(authorize) ?? false
          allowedPaths[path] = allowed
        }
        guard allowed else {
          reject("user.external_id", "exists outside the caller's scope")
          continue
        }
        if OrgRules.importChanges(row, existing: existing, orgID: org.id) {
          if let holder = holders[username], holder != row.externalID {
            reject("user", "username '\(row.username)' is taken")
            continue
          }
          var changed = existing
          changed.username = row.username
          changed.displayName = row.displayName
          changed.kind = row.kind
          changed.birthYear = row.birthYear
          changed.orgID = org.id
          changed.orgCode = org.code
          changed.orgPath = org.path
          changed.updateTime = .init(date: now)
          holders[existing.username.lowercased()] = nil
          holders[username] = row.externalID
          if let position {
            plan.inserts[position] = changed
          } else {
            users[row.externalID] = changed
            plan.updates.append(Update(index: index, user: changed))
          }
          plan.events.append((index, changed))
        }
        plan.outcome.updated += 1
      } else {
        guard holders[username] == nil else {
          reject("user.username", "username '\(row.username)' is taken")
          continue
        }
        var user = row
        user.id = EntityID.make()
        user.orgID = org.id
        user.orgCode = org.code
        user.orgPath = org.path
        user.status = .pendingActivation
        user.createTime = .init(date: now)
        user.updateTime = .init(date: now)
        holders[username] = row.externalID
        inserted[row.externalID] = plan.inserts.count
        plan.inserts.append(user)
        plan.events.append((index, user))
        plan.outcome.created += 1
      }
    }
    return plan
  }

  /// The feed event of a user as a write leaves it (an upsert at the user's org path).
  static func change(_ user: User) throws -> ChangeEvent {
    try ChangeEvent(
      entity: "user", id: user.id, naturalKey: user.externalID, op: .upsert,
      orgPath: user.orgPath.isEmpty ? "/" : user.orgPath, payload: user)
  }

  /// Takes back the rows of new users the store could not insert (`ids`: a user written
  /// meanwhile by another caller took the external id or the username): each becomes a
  /// refusal of its first row, and its events go.
  mutating func dropInserts(_ ids: Set<String>, reason: (User) -> String) {
    guard !ids.isEmpty else { return }
    for user in inserts where ids.contains(user.id) {
      guard let first = events.first(where: { $0.user.id == user.id }) else { continue }
      outcome.errors.append(
        .row(first.index, key: user.externalID, field: "user.username", reason(user)))
      outcome.created -= 1
      // Later rows of the same user counted as updates of it.
      outcome.updated -= events.filter { $0.user.id == user.id }.count - 1
    }
    inserts.removeAll { ids.contains($0.id) }
    events.removeAll { ids.contains($0.user.id) }
  }

  /// Takes back the updates the store could not write (`failed`: row index → reason, a
  /// constraint a concurrent caller's write broke): each becomes a refusal and its event goes.
  mutating func dropUpdates(_ failed: [Int: String]) {
    guard !failed.isEmpty else { return }
    for step in updates {
      guard let reason = failed[step.index] else { continue }
      outcome.errors.append(.row(step.index, key: step.user.externalID, field: "user", reason))
      outcome.updated -= 1
    }
    events.removeAll { failed[$0.index] != nil }
  }
}

/// What one imported org row does, decided from the orgs it names (each read by the store in
/// the batch's transaction, so a row sees the rows before it), alike on both stores.
enum OrgImportStep {
  /// Its parent or managing school is not there yet: retry after the stream's other rows.
  case `defer`
  /// Refused: the field and the reason.
  case reject(field: String, reason: String)
  /// Update `existing` (with the row's fields, under its id) when `changes`; counted either way.
  case update(Org, changes: Bool)
  /// A new org.
  case insert

  /// The step for `row`, given its parent and managing school (nil: not found) and the org of
  /// its code (`existing`).
  static func decide(
    _ row: Org, parent: Org?, managing: Org?, existing: Org?,
    authorize: (OrgPath) -> Bool
  ) -> OrgImportStep {
    if !row.parentCode.isEmpty && parent == nil { return .defer }
    if let refusal = OrgRules.importPlacementRefusal(row, parent: parent, authorize: authorize) {
      return .reject(field: refusal.field, reason: refusal.reason)
    }
    if !row.managingSchoolCode.isEmpty {
      guard let managing else { return .defer }
      if let refusal = OrgRules.importManagingRefusal(managing) {
        return .reject(field: refusal.field, reason: refusal.reason)
      }
    }
    guard let existing else { return .insert }
    if let refusal = OrgRules.importUpdateRefusal(
      row, existing: existing, parent: parent, authorize: authorize)
    {
      return .reject(field: refusal.field, reason: refusal.reason)
    }
    var update = row
    update.id = existing.id
    return .update(update, changes: OrgRules.importChanges(row, existing: existing))
  }
}
