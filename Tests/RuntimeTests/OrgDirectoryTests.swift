import Foundation
import ServiceRuntime
import SmartSchoolModel
import SwiftProtobuf
import Synchronization
import Testing
import TestSupport

/// A fake identity feed: a list of changes served in pages (at most `pageLimit` a page,
/// after a pause of up to `pause`); can be switched off. Records the revocations it is told of.
final class FakeFeed: IdentityChangeSource {
  let changes = Mutex<[Smartschool_Common_V1_Change]>([])
  let down = Mutex(false)
  let revoked = Mutex<[String: Date]>([:])
  let pageLimit: Int
  let pause: Duration

  init(pageLimit: Int = .max, pause: Duration = .zero) {
    self.pageLimit = pageLimit
    self.pause = pause
  }

  func add(_ org: Smartschool_Identity_V1_Org) {
    append("org", org.id, org.code, path: org.path, org)
  }

  func add(_ user: Smartschool_Identity_V1_User) {
    append("user", user.id, user.externalID, path: user.orgPath, user)
  }

  func link(parent: String, student: String, removed: Bool = false) {
    append("guardian_link", "\(parent):\(student)", "", op: removed ? .delete : .upsert, path: "/")
  }

  func revoke(session: String) {
    append("session", session, session, op: .delete, path: "/")
  }

  /// Appends one event and returns its sequence.
  @discardableResult
  func append(
    _ entity: String, _ id: String, _ key: String, op: Smartschool_Common_V1_ChangeOp = .upsert,
    path: String, _ payload: (any SwiftProtobuf.Message)? = nil
  ) -> Int64 {
    changes.withLock { c in
      var change = Smartschool_Common_V1_Change()
      change.sequence = Int64(c.count + 1)
      change.entity = entity
      change.id = id
      change.naturalKey = key
      change.op = op
      change.orgPath = path
      change.time = Google_Protobuf_Timestamp(date: Date())
      if let payload {
        change.payload.typeURL = "type.googleapis.com/" + type(of: payload).protoMessageName
        change.payload.value = try! payload.serializedData()
      }
      c.append(change)
      return change.sequence
    }
  }

  func listChanges(after: Int64, pageSize: Int) async throws
    -> Smartschool_Common_V1_ListChangesResponse
  {
    if down.withLock({ $0 }) { throw ServiceError.unavailable("identity is down") }
    if pause > .zero {
      try await Task.sleep(for: pause * Double.random(in: 0...1))
    }
    let limit = min(pageSize, pageLimit)
    let all = changes.withLock { $0 }.filter { $0.sequence > after }
    return .with {
      $0.changes = Array(all.prefix(limit))
      $0.lastSequence = $0.changes.last?.sequence ?? after
      $0.moreAvailable = all.count > limit
    }
  }

  func sessionsRevoked(_ sessions: [String: Date]) {
    revoked.withLock { $0.merge(sessions) { $1 } }
  }
}

func testUser(
  _ id: String, _ externalID: String, _ kind: Smartschool_Identity_V1_UserKind, org: String,
  path: String, active: Bool = true
) -> Smartschool_Identity_V1_User {
  .with {
    $0.id = id
    $0.externalID = externalID
    $0.displayName = "用户" + externalID
    $0.kind = kind
    $0.orgID = org
    $0.orgPath = path
    $0.birthYear = 1980
    $0.status = active ? .active : .deactivated
  }
}

func testOrg(_ id: String, _ code: String, _ kind: Smartschool_Common_V1_OrgKind, parent: String,
             path: String) -> Smartschool_Identity_V1_Org {
  .with {
    $0.id = id
    $0.code = code
    $0.kind = kind
    $0.parentID = parent
    $0.path = path
    $0.active = true
  }
}

@Suite("Org directory")
struct OrgDirectoryTests {
  @Test func syncsKeepsAndPersistsTheTree() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let feed = FakeFeed()
    feed.add(testOrg("p", "P", .province, parent: "", path: "/p/"))
    feed.add(testOrg("k", "K", .county, parent: "p", path: "/p/k/"))
    feed.add(testOrg("s", "S", .school, parent: "k", path: "/p/k/s/"))
    feed.add(testOrg("c", "CL", .`class`, parent: "s", path: "/p/k/s/c/"))
    let store = try await TestStore.open(name: "svc", directory: dir)
    let directory = try await OrgDirectory(source: feed, store: store)
    try await directory.sync()
    #expect(directory.cursor == 4)
    #expect(directory.org(code: "CL")?.path == "/p/k/s/c/")
    #expect(directory.ancestor(of: "c", kind: .county)?.code == "K")
    #expect(directory.children(of: "k").map(\.code) == ["S"])
    #expect(directory.orgs(under: OrgPath("/p/")!, kind: .school).map(\.code) == ["S"])
    // A rename arrives; identity then goes down: the last known tree keeps serving.
    var renamed = testOrg("s", "S2", .school, parent: "k", path: "/p/k/s/")
    renamed.name = "改名"
    feed.add(renamed)
    try await directory.sync()
    feed.down.withLock { $0 = true }
    await #expect(throws: ServiceError.self) { try await directory.sync() }
    #expect(directory.org(code: "S2")?.name == "改名")
    #expect(directory.org(code: "S") == nil)
    // A restart while identity is down loads the persisted copy.
    let reopened = try await OrgDirectory(source: feed, store: store)
    #expect(reopened.cursor == 5)
    #expect(reopened.org(code: "S2")?.path == "/p/k/s/")
    #expect(reopened.ancestor(of: "c", kind: .province)?.code == "P")
  }
}
