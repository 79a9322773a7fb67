import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SmartSchoolModel
import SwiftProtobuf

/// How a client proves who it is to identity.
public enum Credentials: Sendable, Hashable {
  /// A person's username and password (`Login`).
  case password(username: String, password: String)
  /// A service account's client id and secret (`ExchangeClientCredentials`).
  case clientCredentials(clientID: String, clientSecret: String)
}

/// The tokens of a session: the access token sent with every call and what renews it.
public struct TokenSet: Sendable, Codable, Hashable {
  /// The bearer access token.
  public var accessToken: String
  /// When the access token expires.
  public var accessTokenExpiry: Date
  /// The rotating refresh token; empty for service-account tokens.
  public var refreshToken: String
  /// When the refresh token (the session) expires; `nil` without one.
  public var refreshTokenExpiry: Date?

  /// A token set.
  public init(
    accessToken: String, accessTokenExpiry: Date, refreshToken: String = "",
    refreshTokenExpiry: Date? = nil
  ) {
    self.accessToken = accessToken
    self.accessTokenExpiry = accessTokenExpiry
    self.refreshToken = refreshToken
    self.refreshTokenExpiry = refreshTokenExpiry
  }

  /// The tokens of an identity `TokenResponse`.
  public init(_ response: Smartschool_Identity_V1_TokenResponse) {
    self.init(
      accessToken: response.accessToken,
      accessTokenExpiry: response.accessTokenExpireTime.date,
      refreshToken: response.refreshToken,
      refreshTokenExpiry: response.hasRefreshTokenExpireTime
        ? response.refreshTokenExpireTime.date : nil)
  }
}

/// Keeps one session's access token valid: logs in with the credentials when there is no
/// token, and renews the token (by refresh token, else by the credentials again) once it is
/// within `refreshMargin` of expiring. Concurrent callers share one renewal, so a rotating
/// refresh token is never used twice.
public actor TokenSession {
  /// Identity, reached without the bearer interceptor (login and refresh are open).
  private let identity: Smartschool_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix>
  private let credentials: Credentials?
  private let refreshMargin: TimeInterval
  private let onChange: (@Sendable (TokenSet) -> Void)?
  private let timeout: Duration
  private var tokens: TokenSet?
  private var renewal: Task<TokenSet, any Error>?

  /// A session; `tokens` resumes an earlier one (e.g. from a session file), `onChange` is told
  /// every new token set (to save it).
  public init(
    identity: Smartschool_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix>,
    credentials: Credentials?, tokens: TokenSet? = nil, refreshMargin: TimeInterval = 60,
    timeout: Duration = .seconds(20), onChange: (@Sendable (TokenSet) -> Void)? = nil
  ) {
    self.identity = identity
    self.credentials = credentials
    self.tokens = tokens
    self.refreshMargin = refreshMargin
    self.timeout = timeout
    self.onChange = onChange
  }

  /// The current token set, if any.
  public var current: TokenSet? { tokens }

  /// A valid access token, renewed first when it is missing or about to expire.
  public func accessToken() async throws -> String {
    if let tokens, tokens.accessTokenExpiry.timeIntervalSinceNow > refreshMargin {
      return tokens.accessToken
    }
    return try await renew().accessToken
  }

  /// Logs in with the credentials now, whatever the state of the current token.
  public func login() async throws -> TokenSet {
    try await renew(forceLogin: true)
  }

  private func renew(forceLogin: Bool = false) async throws -> TokenSet {
    if let renewal { return try await renewal.value }
    let previous = forceLogin ? nil : tokens
    let task = Task { [identity, credentials, timeout] in
      try await Self.obtain(
        identity: identity, credentials: credentials, previous: previous, timeout: timeout)
    }
    renewal = task
    defer { renewal = nil }
    let fresh = try await task.value
    tokens = fresh
    onChange?(fresh)
    return fresh
  }

  private static func obtain(
    identity: Smartschool_Identity_V1_IdentityService.Client<HTTP2ClientTransport.Posix>,
    credentials: Credentials?, previous: TokenSet?, timeout: Duration
  ) async throws -> TokenSet {
    var options = CallOptions.defaults
    options.timeout = timeout
    if let previous, !previous.refreshToken.isEmpty,
      (previous.refreshTokenExpiry ?? .distantFuture).timeIntervalSinceNow > 0
    {
      do {
        let response = try await identity.refresh(
          .with { $0.refreshToken = previous.refreshToken }, options: options)
        return TokenSet(response)
      } catch let error as RPCError where error.code == .unauthenticated && credentials != nil {
        // The session ended (logout, expiry, reuse): log in again below.
      }
    }
    switch credentials {
    case .password(let username, let password):
      let response = try await identity.login(
        .with {
          $0.username = username
          $0.password = password
        }, options: options)
      return TokenSet(response)
    case .clientCredentials(let id, let secret):
      let response = try await identity.exchangeClientCredentials(
        .with {
          $0.clientID = id
          $0.clientSecret = secret
        }, options: options)
      return TokenSet(response)
    case nil:
      throw ClientError.notLoggedIn
    }
  }
}
