import Foundation
import GRPCCore
import IdentityService
import ServiceRuntime
import SmartSchoolModel
import Testing
import TestSupport

/// A client registration with the given redirect URIs and scopes.
func oidcClient(
  _ name: String = "教师云 Teacher cloud", redirect: [String] = ["https://app.example.cn/cb"],
  scopes: [String] = [], services: [String] = [], isPublic: Bool = false, org: String = ""
) -> Smartschool_Identity_V1_CreateOIDCClientRequest {
  .with {
    $0.client = .with {
      $0.name = name
      $0.redirectUris = redirect
      $0.scopes = scopes
      $0.services = services
      $0.publicClient = isPublic
    }
    $0.orgCode = org
  }
}

/// A user holding `role` at `org`, logged in.
func official(
  _ identity: IdentityClient, admin: String, name: String, role: Smartschool_Identity_V1_Role,
  org: String
) async throws -> String {
  let user = try await newUser(
    identity, admin: admin, externalID: "ext-\(name)", username: name, kind: .staff, org: org)
  _ = try await grant(identity, token: admin, user: user.id, role: role, org: org)
  return try await login(identity, name, "Secret-pass-1")
}

@Suite("OIDC clients: registration RPCs")
struct OIDCClientTests {
  @Test func aConfidentialClientGetsASecretShownOnceAndAPublicOneNone() async throws {
    try await withTree { identity, admin, _ in
      let created = try await identity.createOIDCClient(
        oidcClient(
          redirect: ["https://app.example.cn/cb", "http://127.0.0.1:8400/cb"],
          scopes: ["openid", "profile", "catalogue"], services: ["catalogue"], org: "P34"),
        metadata: bearer(admin))
      #expect(created.client.clientID.hasPrefix("oc-"))
      #expect(created.clientSecret.hasPrefix("ocs_"))
      #expect(created.clientSecret.count >= 40)
      #expect(created.client.publicClient == false)
      #expect(created.client.redirectUris == ["https://app.example.cn/cb", "http://127.0.0.1:8400/cb"])
      #expect(created.client.scopes == ["openid", "profile", "catalogue"])
      #expect(created.client.services == ["catalogue"])
      #expect(created.client.orgPath.hasPrefix("/") && created.client.orgPath.count > 1)
      // Never again: neither listed nor in an update's answer (only a hash is stored).
      let listed = try await identity.listOIDCClients(.init(), metadata: bearer(admin))
      #expect(listed.clients.map(\.clientID) == [created.client.clientID])
      let secret = Data(created.clientSecret.utf8)
      #expect(try listed.serializedData().range(of: secret) == nil)
      let updated = try await identity.updateOIDCClient(
        .with {
          $0.client = .with {
            $0.clientID = created.client.clientID
            $0.name = "教师云 2"
          }
          $0.updateMask = .with { $0.paths = ["name"] }
        }, metadata: bearer(admin))
      #expect(updated.name == "教师云 2")
      #expect(updated.redirectUris == created.client.redirectUris)
      #expect(try updated.serializedData().range(of: secret) == nil)
      // A rotation gives a new secret, once.
      let rotated = try await identity.rotateOIDCClientSecret(
        .with { $0.clientID = created.client.clientID }, metadata: bearer(admin))
      #expect(rotated.clientSecret.hasPrefix("ocs_"))
      #expect(rotated.clientSecret != created.clientSecret)

      // Public: no secret, defaults to openid profile, and nothing to rotate.
      let mobile = try await identity.createOIDCClient(
        oidcClient("Parent app", redirect: ["http://[::1]:9000/cb"], isPublic: true),
        metadata: bearer(admin))
      #expect(mobile.clientSecret.isEmpty)
      #expect(mobile.client.publicClient)
      #expect(mobile.client.scopes == ["openid", "profile"])
      #expect(mobile.client.orgPath == "/")
      #expect(await statusCode {
        _ = try await identity.rotateOIDCClientSecret(
          .with { $0.clientID = mobile.client.clientID }, metadata: bearer(admin))
      } == .failedPrecondition)
    }
  }

  @Test func badRedirectURIsScopesAndServicesAreRefusedFieldByField() async throws {
    try await withTree { identity, admin, _ in
      let cases: [(Smartschool_Identity_V1_CreateOIDCClientRequest, String)] = [
        (oidcClient(redirect: ["http://app.example.cn/cb"]), "client.redirect_uris[0]"),
        (oidcClient(redirect: ["http://10.0.0.5/cb"]), "client.redirect_uris[0]"),
        (oidcClient(redirect: ["https://a.cn/cb", "https://a.cn/cb#x"]), "client.redirect_uris[1]"),
        (oidcClient(redirect: ["ftp://a.cn/cb"]), "client.redirect_uris[0]"),
        (oidcClient(redirect: ["/cb"]), "client.redirect_uris[0]"),
        (oidcClient(redirect: ["https://user:pw@a.cn/cb"]), "client.redirect_uris[0]"),
        (oidcClient(redirect: ["https://a.cn/c b"]), "client.redirect_uris[0]"),
        (oidcClient(redirect: []), "client.redirect_uris"),
        (oidcClient(scopes: ["openid", "admin"]), "client.scopes[1]"),
        (oidcClient(scopes: ["profile"]), "client.scopes"),
        (oidcClient(scopes: ["openid", "assessment"]), "client.scopes[1]"),
        (oidcClient(services: ["payroll"]), "client.services[0]"),
        (oidcClient(""), "client.name"),
      ]
      for (request, field) in cases {
        let error = await rpcError {
          _ = try await identity.createOIDCClient(request, metadata: bearer(admin))
        }
        #expect(error?.code == .invalidArgument, "\(request.client)")
        #expect(fieldViolations(error).contains(field), "\(field): \(fieldViolations(error))")
      }
      // Loopback http is fine, in all three spellings.
      let loopback = try await identity.createOIDCClient(
        oidcClient(
          redirect: ["http://127.0.0.1:8400/cb", "http://[::1]/cb", "http://localhost:3000/cb"],
          scopes: ["openid", "offline_access", "assessment"], services: ["assessment"]),
        metadata: bearer(admin))
      #expect(loopback.client.redirectUris.count == 3)
      // An update is held to the same rules, and to its mask.
      let error = await rpcError {
        _ = try await identity.updateOIDCClient(
          .with {
            $0.client = .with {
              $0.clientID = loopback.client.clientID
              $0.redirectUris = ["http://example.cn/cb"]
            }
            $0.updateMask = .with { $0.paths = ["redirect_uris"] }
          }, metadata: bearer(admin))
      }
      #expect(fieldViolations(error) == ["client.redirect_uris[0]"])
      for mask in [[String](), ["public_client"], ["client_id"]] {
        #expect(await statusCode {
          _ = try await identity.updateOIDCClient(
            .with {
              $0.client = loopback.client
              $0.updateMask = .with { $0.paths = mask }
            }, metadata: bearer(admin))
        } == .invalidArgument)
      }
      #expect(await statusCode {
        _ = try await identity.createOIDCClient(oidcClient(org: "NOPE"), metadata: bearer(admin))
      } == .notFound)
      #expect(await statusCode {
        _ = try await identity.disableOIDCClient(
          .with { $0.clientID = "oc-unknown" }, metadata: bearer(admin))
      } == .notFound)
    }
  }

  @Test func clientsAreManagedByTheAdminsOfTheirOrgOnly() async throws {
    try await withTree { identity, admin, _ in
      let adminA = try await official(
        identity, admin: admin, name: "official-a", role: .countyAdmin, org: "K340121")
      let adminB = try await official(
        identity, admin: admin, name: "official-b", role: .countyAdmin, org: "K340122")
      let teacher = try await official(
        identity, admin: admin, name: "teacher-a", role: .teacher, org: "S-A1")
      let clientA = try await identity.createOIDCClient(
        oidcClient("County A app", org: "S-A1"), metadata: bearer(adminA))
      for (token, org) in [(adminA, "K340122"), (adminA, ""), (teacher, "S-A1")] {
        #expect(await statusCode {
          _ = try await identity.createOIDCClient(oidcClient(org: org), metadata: bearer(token))
        } == .permissionDenied, "\(org)")
      }
      #expect(await statusCode {
        _ = try await identity.disableOIDCClient(
          .with { $0.clientID = clientA.client.clientID }, metadata: bearer(adminB))
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await identity.rotateOIDCClientSecret(
          .with { $0.clientID = clientA.client.clientID }, metadata: bearer(adminB))
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await identity.updateOIDCClient(
          .with {
            $0.client = .with {
              $0.clientID = clientA.client.clientID
              $0.name = "taken over"
            }
            $0.updateMask = .with { $0.paths = ["name"] }
          }, metadata: bearer(adminB))
      } == .permissionDenied)
      #expect(await statusCode {
        _ = try await identity.listOIDCClients(.init(), metadata: bearer(teacher))
      } == .permissionDenied)
      // Each admin lists the clients of their scope; the system admin all of them.
      let clientB = try await identity.createOIDCClient(
        oidcClient("County B app", org: "K340122"), metadata: bearer(adminB))
      let listA = try await identity.listOIDCClients(.init(), metadata: bearer(adminA))
      #expect(listA.clients.map(\.clientID) == [clientA.client.clientID])
      let listB = try await identity.listOIDCClients(.init(), metadata: bearer(adminB))
      #expect(listB.clients.map(\.clientID) == [clientB.client.clientID])
      let all = try await identity.listOIDCClients(.init(), metadata: bearer(admin))
      #expect(
        Set(all.clients.map(\.clientID)) == [clientA.client.clientID, clientB.client.clientID])

      // Disabling: for good, listed only on request, and no longer updatable or rotatable.
      let disabled = try await identity.disableOIDCClient(
        .with { $0.clientID = clientA.client.clientID }, metadata: bearer(adminA))
      #expect(disabled.disabled)
      let again = try await identity.disableOIDCClient(
        .with { $0.clientID = clientA.client.clientID }, metadata: bearer(adminA))
      #expect(again.disabled)
      #expect(try await identity.listOIDCClients(.init(), metadata: bearer(adminA)).clients.isEmpty)
      let withDisabled = try await identity.listOIDCClients(
        .with { $0.includeDisabled = true }, metadata: bearer(adminA))
      #expect(withDisabled.clients.map(\.clientID) == [clientA.client.clientID])
      #expect(await statusCode {
        _ = try await identity.rotateOIDCClientSecret(
          .with { $0.clientID = clientA.client.clientID }, metadata: bearer(adminA))
      } == .failedPrecondition)
      #expect(await statusCode {
        _ = try await identity.updateOIDCClient(
          .with {
            $0.client = .with {
              $0.clientID = clientA.client.clientID
              $0.name = "back"
            }
            $0.updateMask = .with { $0.paths = ["name"] }
          }, metadata: bearer(adminA))
      } == .failedPrecondition)
    }
  }

  @Test func clientChangesAreAuditedAndOnTheFeedWithoutTheSecret() async throws {
    try await withTree { identity, admin, tree in
      let created = try await identity.createOIDCClient(
        oidcClient(org: "K340121"), metadata: bearer(admin))
      let id = created.client.clientID
      _ = try await identity.rotateOIDCClientSecret(.with { $0.clientID = id }, metadata: bearer(admin))
      _ = try await identity.disableOIDCClient(.with { $0.clientID = id }, metadata: bearer(admin))
      let audit = try await identity.listAuditEvents(
        .with { $0.pageSize = 1000 }, metadata: bearer(admin)
      ).events.filter { $0.target == id }
      #expect(
        audit.map(\.action)
          == ["oidc_client.create", "oidc_client.rotate_secret", "oidc_client.disable"])
      #expect(audit.allSatisfy { $0.orgID == tree.countyA.id })

      let feed = try await identity.listChanges(
        .with { $0.pageSize = 1000 }, metadata: bearer(admin)
      ).changes.filter { $0.entity == "oidc_client" }
      // Created, then disabled: the new secret is nothing a follower sees.
      #expect(feed.count == 2)
      #expect(feed.allSatisfy { $0.id == id && $0.naturalKey == id })
      let last = try Smartschool_Identity_V1_OIDCClient(serializedBytes: try #require(feed.last).payload.value)
      #expect(last.disabled)
      #expect(last.orgPath == tree.countyA.path)
      #expect(
        try feed.allSatisfy {
          try $0.serializedData().range(of: Data(created.clientSecret.utf8)) == nil
        })
      // The feed is scoped like every other entity: county B's admin does not see it.
      let adminB = try await official(
        identity, admin: admin, name: "official-b", role: .countyAdmin, org: "K340122")
      let feedB = try await identity.listChanges(
        .with { $0.pageSize = 1000 }, metadata: bearer(adminB))
      #expect(!feedB.changes.contains { $0.entity == "oidc_client" })
    }
  }

  @Test func listingPagesByClientID() async throws {
    try await withTree { identity, admin, _ in
      var ids: [String] = []
      for i in 0..<5 {
        ids.append(
          try await identity.createOIDCClient(oidcClient("App \(i)"), metadata: bearer(admin))
            .client.clientID)
      }
      var seen: [String] = []
      var token = ""
      var pages = 0
      repeat {
        let page = try await identity.listOIDCClients(
          .with {
            $0.pageSize = 2
            $0.pageToken = token
          }, metadata: bearer(admin))
        #expect(page.clients.count <= 2)
        seen += page.clients.map(\.clientID)
        token = page.nextPageToken
        pages += 1
      } while !token.isEmpty && pages < 10
      #expect(seen == ids.sorted())
      #expect(pages == 3)
      // A token is bound to its query.
      let first = try await identity.listOIDCClients(
        .with { $0.pageSize = 2 }, metadata: bearer(admin))
      #expect(await statusCode {
        _ = try await identity.listOIDCClients(
          .with {
            $0.pageToken = first.nextPageToken
            $0.includeDisabled = true
          }, metadata: bearer(admin))
      } == .invalidArgument)
    }
  }
}
