import Foundation
import ServiceRuntime
import SmartSchoolModel
import Synchronization
import Testing
import TestSupport

/// A fake identity feed: a list of changes served in pages; can be switched off.
final class FakeFeed: IdentityChangeSource {
  let changes = Mutex<[Smartschool_Common_V1_Change]>([])
  let down = Mutex(false)

  func add(_ org: Smartschool_Identity_V1_Org) {
    changes.withLock { c in
      var change = Smartschool_Common_V1_Change()
      change.sequence = Int64(c.count + 1)
      change.entity = "org"
      change.id = org.id
      change.naturalKey = org.code
      change.op = .upsert
      change.orgPath = org.path
      change.payload.typeURL = "type.googleapis.com/smartschool.identity.v1.Org"
      change.payload.value = try! org.serializedData()
      c.append(change)
    }
  }

  func listChanges(after: Int64, pageSize: Int) async throws -> Smartschool_Common_V1_ListChangesResponse {
    if down.withLock({ $0 }) { throw ServiceError.unavailable("identity is down") }
    let all = changes.withLock { $0 }.filter { $0.sequence > after }
    return .with {
      $0.changes = Array(all.prefix(pageSize))
      $0.lastSequence = $0.changes.last?.sequence ?? after
      $0.moreAvailable = all.count > pageSize
    }
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
