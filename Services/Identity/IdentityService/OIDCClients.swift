import Foundation
import ServiceRuntime
import SmartSchoolModel

typealias OIDCClient = Smartschool_Identity_V1_OIDCClient

/// What an OpenID Connect client may be registered with: pure rules, no I/O.
enum OIDCClientRules {
  /// The OpenID Connect scopes a client may be registered with. Identity keeps no e-mail
  /// addresses, so `email` grants no claim (yet); it is accepted so that stock clients asking
  /// for it are not refused.
  static let standardScopes = ["openid", "profile", "email", "offline_access"]
  /// The services a client's access tokens may be used at (their audiences); each is also a
  /// scope the client may ask for.
  static let services = ["identity", "catalogue", "assessment", "supervision"]
  /// The scopes of a client registered without any.
  static let defaultScopes = ["openid", "profile"]
  /// At most this many redirect URIs (and post-logout URIs) per client.
  static let maxURIs = 10

  /// Loopback hosts, where a native app's or a developer's plain-http redirect stays on the
  /// machine (RFC 8252 §7.3).
  static let loopbackHosts: Set<String> = ["127.0.0.1", "::1", "localhost"]

  /// Why `uri` cannot be a redirect URI, or `nil` when it can: an absolute https URL with a
  /// host (http only on a loopback host), no fragment, no user info, no whitespace. Redirect
  /// URIs are later matched byte for byte, so nothing is normalised.
  static func redirectProblem(_ uri: String) -> String? {
    guard uri.utf8.count <= 2000 else { return "must have at most 2000 characters" }
    guard !uri.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 })
    else { return "must not contain spaces or control characters" }
    guard let parts = URLComponents(string: uri), let scheme = parts.scheme?.lowercased(),
      let host = parts.host, !host.isEmpty
    else { return "must be an absolute URL with a host" }
    guard parts.fragment == nil else { return "must not have a fragment" }
    guard parts.user == nil, parts.password == nil else { return "must not carry user info" }
    switch scheme {
    case "https": return nil
    case "http":
      let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
      return loopbackHosts.contains(bare.lowercased())
        ? nil : "http is allowed only on a loopback host (127.0.0.1, [::1], localhost)"
    default: return "must be an https URL (or http on a loopback host)"
    }
  }

  /// Records every violation of `client`'s registrable fields (under `prefix`, for example
  /// "client."), with `scopes` already defaulted.
  static func validate(_ client: OIDCClient, _ v: inout Validator, prefix: String) {
    v.text(client.name, prefix + "name", maxLength: 100)
    v.check(!client.redirectUris.isEmpty, prefix + "redirect_uris", "give at least one")
    uris(client.redirectUris, prefix + "redirect_uris", &v)
    uris(client.postLogoutRedirectUris, prefix + "post_logout_redirect_uris", &v)
    for (i, scope) in client.scopes.enumerated()
    where !standardScopes.contains(scope) && !services.contains(scope) {
      v.add(
        "\(prefix)scopes[\(i)]",
        "unknown scope (one of: \((standardScopes + services).joined(separator: " ")))")
    }
    v.check(client.scopes.contains("openid"), prefix + "scopes", "must include openid")
    v.check(Set(client.scopes).count == client.scopes.count, prefix + "scopes", "has duplicates")
    for (i, service) in client.services.enumerated() where !services.contains(service) {
      v.add(
        "\(prefix)services[\(i)]",
        "unknown service (one of: \(services.joined(separator: " ")))")
    }
    v.check(
      Set(client.services).count == client.services.count, prefix + "services", "has duplicates")
    for (i, scope) in client.scopes.enumerated()
    where services.contains(scope) && !client.services.contains(scope) {
      v.add("\(prefix)scopes[\(i)]", "names a service the client may not call (see services)")
    }
  }

  private static func uris(_ list: [String], _ field: String, _ v: inout Validator) {
    v.check(list.count <= maxURIs, field, "must have at most \(maxURIs) entries")
    v.check(Set(list).count == list.count, field, "has duplicates")
    for (i, uri) in list.enumerated() {
      if let problem = redirectProblem(uri) { v.add("\(field)[\(i)]", problem) }
    }
  }

  /// A new client id.
  static func makeClientID() -> String { "oc-" + EntityID.make() }

  /// A new client secret (shown once; the store keeps ``Secrets/digest(_:)`` of it).
  static func makeSecret() -> String { "ocs_" + Secrets.random() }
}
