import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import IdentityService
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

@Suite("Identity link: keys and org tree fetched over gRPC")
struct IdentityLinkTests {
  @Test func verifiesIdentityTokensAndSyncsTheTreeWithAServiceAccount() async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    try await withIdentity { port, _ in
      try await withClient(port: port) { client in
        let identity = Smartschool_Identity_V1_IdentityService.Client(wrapping: client)
        let admin = try await login(identity, "admin", testAdminPassword)
        let auth = bearer(admin)
        _ = try await identity.createOrg(.with { $0.org = .with { $0.code = "P"; $0.name = "省"; $0.kind = .province } }, metadata: auth)
        _ = try await identity.createOrg(.with { $0.org = .with { $0.code = "C"; $0.name = "市"; $0.kind = .city; $0.parentCode = "P" } }, metadata: auth)
        _ = try await identity.createOrg(.with { $0.org = .with { $0.code = "K"; $0.name = "县"; $0.kind = .county; $0.parentCode = "C" } }, metadata: auth)
        let account = try await identity.createServiceAccount(
          .with {
            $0.name = "catalogue-sync"
            $0.orgCode = "P"
            $0.roles = [.dataExchange]
          }, metadata: auth)
        #expect(account.clientSecret.hasPrefix("sas_"))

        let link = try IdentityLink(
          address: PeerAddress(host: "127.0.0.1", port: port),
          credentials: (account.clientID, account.clientSecret))
        defer { link.close() }
        // Tokens signed by identity verify locally with keys fetched over gRPC.
        let verifier = link.makeVerifier()
        let principal = try await verifier.verify(admin)
        #expect(principal.username == "admin")
        #expect(principal.bindings.map(\.role) == [.systemAdmin])
        #expect(verifier.cachedKeyCount == 1)
        // A key rotated later is fetched on first sight of its key id.
        _ = try await identity.rotateSigningKey(.init(), metadata: auth)
        let fresh = try await login(identity, "admin", testAdminPassword)
        #expect(try await verifier.verify(fresh).username == "admin")

        // The org directory follows identity's feed with the service-account token.
        let store = try await TestStore.open(name: "svc", directory: dir)
        let directory = try await OrgDirectory(source: link, store: store, trackUsers: true)
        try await directory.sync()
        #expect(directory.org(code: "K")?.kind == .county)
        #expect(directory.ancestor(of: directory.org(code: "K")!.id, kind: .province)?.code == "P")
        _ = try await identity.createOrg(
          .with { $0.org = .with { $0.code = "S"; $0.name = "学校"; $0.kind = .school; $0.parentCode = "K"; $0.schoolKind = .rural } },
          metadata: auth)
        _ = try await identity.createUser(
          .with {
            $0.user = .with {
              $0.externalID = "T1"
              $0.username = "teacher1"
              $0.displayName = "张老师"
              $0.kind = .teacher
              $0.orgCode = "S"
              $0.birthYear = 1990
            }
          }, metadata: auth)
        try await directory.sync()
        #expect(directory.org(code: "S")?.schoolKind == .rural)
        #expect(try await directory.user(externalID: "T1")?.birthYear == 1990)
        #expect(try await directory.users(under: OrgPath(directory.org(code: "K")!.path)!, kind: .teacher).count == 1)
      }
    }
  }

  /// Runs `body` as a service following a fresh identity: the province "P", a service account
  /// "sync" (data exchange at P), its link and an org directory kept in `store`.
  private func withFollower(
    _ body: (
      _ identity: Smartschool_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix>,
      _ admin: Metadata, _ port: Int, _ link: IdentityLink, _ directory: OrgDirectory,
      _ store: any ServiceStorage
    ) async throws -> Void
  ) async throws {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    try await withIdentity { port, _ in
      try await withClient(port: port) { client in
        let identity = Smartschool_Identity_V1_IdentityService.Client(wrapping: client)
        let admin = bearer(try await login(identity, "admin", testAdminPassword))
        _ = try await identity.createOrg(
          .with { $0.org = .with { $0.code = "P"; $0.name = "省"; $0.kind = .province } },
          metadata: admin)
        let account = try await identity.createServiceAccount(
          .with {
            $0.name = "sync"
            $0.orgCode = "P"
            $0.roles = [.dataExchange]
          }, metadata: admin)
        let link = try IdentityLink(
          address: PeerAddress(host: "127.0.0.1", port: port),
          credentials: (account.clientID, account.clientSecret))
        defer { link.close() }
        let store = try await TestStore.open(name: "svc", directory: dir)
        let directory = try await OrgDirectory(source: link, store: store)
        try await body(identity, admin, port, link, directory, store)
      }
    }
  }

  @Test func aRevokedSessionIsRefusedByEveryVerifierFollowingTheFeed() async throws {
    try await withFollower { identity, admin, port, link, directory, store in
      let kept = try await login(identity, "admin", testAdminPassword)
      let ended = try await login(identity, "admin", testAdminPassword)
      #expect(try await link.verifier.verify(ended).username == "admin")
      _ = try await identity.logout(.init(), metadata: bearer(ended))
      // Identity refuses it at once; another service once its directory has synced.
      let code = await statusCode {
        _ = try await identity.whoAmI(.init(), metadata: bearer(ended))
      }
      #expect(code == .unauthenticated)
      #expect(try await link.verifier.verify(ended).username == "admin")
      try await directory.sync()
      #expect(link.verifier.revokedSessionCount == 1)
      await #expect(throws: ServiceError.self) { try await link.verifier.verify(ended) }
      #expect(try await link.verifier.verify(kept).username == "admin")

      // A restarted service remembers the revocation from its own store.
      let restarted = try IdentityLink(
        address: PeerAddress(host: "127.0.0.1", port: port), credentials: nil)
      defer { restarted.close() }
      _ = try await OrgDirectory(source: restarted, store: store)
      await #expect(throws: ServiceError.self) { try await restarted.verifier.verify(ended) }
      #expect(try await restarted.verifier.verify(kept).username == "admin")
    }
  }

  @Test func aDeactivatedServiceAccountIsRefusedByEveryVerifierFollowingTheFeed() async throws {
    try await withFollower { identity, admin, _, link, directory, _ in
      let platform = try await identity.createServiceAccount(
        .with {
          $0.name = "platform"
          $0.orgCode = "P"
          $0.roles = [.dataExchange]
        }, metadata: admin)
      // The platform's tokens, as another service (here: its verifier) sees them.
      var tokens: [String] = []
      for _ in 0..<5 {
        tokens.append(
          try await identity.exchangeClientCredentials(.with {
            $0.clientID = platform.clientID
            $0.clientSecret = platform.clientSecret
          }).accessToken)
      }
      for token in tokens {
        #expect(try await link.verifier.verify(token).username == "platform")
      }
      _ = try await identity.deactivateUser(.with { $0.id = platform.user.id }, metadata: admin)
      try await directory.sync()
      for token in tokens {
        await #expect(throws: ServiceError.self) { try await link.verifier.verify(token) }
      }
      // The link's own account goes on reading the feed.
      try await directory.sync()
      #expect(link.verifier.revokedSessionCount == 5)
    }
  }
}
