import Foundation
import GRPCCore
import ServiceRuntime
import SmartSchoolModel

/// The two-factor store on the same storage as identity's.
func twoFactorStore(_ identity: any IdentityStore) throws -> any TwoFactorStore {
  if let postgres = identity as? PostgresIdentityStore {
    return PostgresTwoFactorStore(store: postgres.store)
  }
  if let sqlite = identity as? SQLiteIdentityStore {
    return SQLiteTwoFactorStore(store: sqlite.store)
  }
  throw ServiceError.internalError("identity's store is neither SQLite nor PostgreSQL")
}

/// Two-factor login (TOTP): the second step of Login, enrolment, and its removal.
///
/// A right password of an account that needs a second factor gives a challenge, not tokens,
/// and the guess it reserved against the lockout stays counted until the second step
/// succeeds: so a thief of the password cannot alternate right passwords (which would clear
/// the count) with guessed codes. Wrong codes reserve guesses the same way as passwords do.
extension IdentityAPI {
  static let badChallenge =
    "the login challenge is unknown, expired or already used: log in again with the password"
  static let badCode = "the code is wrong or was already used"

  var twoFactor: any TwoFactorStore {
    get throws { try twoFactorStore(store) }
  }

  /// What the user's login needs beyond the password: nil, TOTP (active), or an enrolment
  /// (the policy covers one of their bindings and they have no active TOTP).
  func secondFactor(for user: User) async throws -> Smartschool_Identity_V1_SecondFactorKind? {
    if let state = try await twoFactor.totp(userID: user.id), state.active { return .totp }
    let policy = settings.twoFactor.policy
    guard !policy.isEmpty else { return nil }
    return policy.covers(try await store.bindings(userID: user.id)) ? .totpEnrolment : nil
  }

  /// The answer to a right password when a second step must follow: a new challenge (with a
  /// new pending secret for an enrolment).
  func secondFactorChallenge(for user: User, kind: Smartschool_Identity_V1_SecondFactorKind)
    async throws -> Smartschool_Identity_V1_TokenResponse
  {
    var kind = kind
    var enrolment: Smartschool_Identity_V1_TotpEnrolment? = nil
    if kind == .totpEnrolment {
      let secret = TOTP.newSecret()
      if try await twoFactor.beginTOTP(userID: user.id, secret: secret) {
        enrolment = TOTP.enrolment(secret: secret, username: user.username)
      } else {
        kind = .totp  // enrolled meanwhile (another login completed)
      }
    }
    let id = Secrets.random()
    let expires = Date().addingTimeInterval(settings.twoFactor.challengeTTL)
    try await twoFactor.createChallenge(
      idHash: Secrets.digest(id), userID: user.id, kind: kind, expires: expires)
    await audit("login.second_factor_required", actor: user.id, target: user.id,
                orgID: user.orgID, orgPath: user.orgPath,
                detail: kind == .totpEnrolment ? "totp enrolment" : "totp")
    return .with {
      $0.secondFactor = .with {
        $0.challengeID = id
        $0.expireTime = .init(date: expires)
        $0.kind = kind
        if let enrolment { $0.enrolment = enrolment }
      }
    }
  }

  func loginSecondFactor(
    request: Smartschool_Identity_V1_LoginSecondFactorRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_LoginSecondFactorResponse {
    try await completeSecondFactor(
      challengeID: request.challengeID, code: request.code,
      client: ClientAddress.host(ofPeer: context.remotePeer))
  }

  /// With its metadata: behind a trusted proxy the client's address comes from
  /// `x-forwarded-for`, as for Login.
  func loginSecondFactor(
    request: ServerRequest<Smartschool_Identity_V1_LoginSecondFactorRequest>,
    context: ServerContext
  ) async throws -> ServerResponse<Smartschool_Identity_V1_LoginSecondFactorResponse> {
    let client = ClientAddress.resolve(
      peer: context.remotePeer,
      forwardedFor: request.metadata[stringValues: "x-forwarded-for"].map { String($0) },
      trusted: settings.trustedProxies)
    return ServerResponse(
      message: try await completeSecondFactor(
        challengeID: request.message.challengeID, code: request.message.code, client: client))
  }

  /// The second step of a login from `client` (an address, for the rate limits): checks the
  /// code against the challenge's user and opens the session. The web login calls this too.
  func completeSecondFactor(challengeID: String, code: String, client: String) async throws
    -> Smartschool_Identity_V1_LoginSecondFactorResponse
  {
    var v = Validator()
    v.check(!challengeID.isEmpty && challengeID.count <= 128, "challenge_id",
            "must be 1-128 characters")
    v.check(!code.isEmpty && code.count <= 32, "code", "must be 1-32 characters")
    try v.throwIfInvalid()
    let store = try twoFactor
    let idHash = Secrets.digest(challengeID)
    guard let challenge = try await store.challenge(idHash: idHash), !challenge.completed,
      challenge.expiresAt > Date(),
      let user = try await self.store.user(id: challenge.userID), user.status == .active
    else { throw ServiceError.unauthenticated(Self.badChallenge) }
    try throttle.admit(account: user.username, address: client)
    guard
      let attempt = try await self.store.reserveLoginAttempt(
        userID: user.id, threshold: settings.lockoutThreshold, lockFor: settings.lockoutDuration)
    else {
      await audit("login.failure", actor: user.id, target: user.id, orgID: user.orgID,
                  orgPath: user.orgPath, detail: "account locked; second factor not checked")
      throw ServiceError.unauthenticated(Self.badLogin)
    }
    let typed = code.trimmingSpaces()
    var proof: SecondFactorProof? = nil
    var recoveryCodes: [String] = []
    let state = try await store.totp(userID: user.id)
    switch challenge.kind {
    case .totp:
      if let state, state.active {
        if TOTP.isCodeShaped(typed) {
          proof = TOTP.matchingStep(secret: state.secret, code: typed).map { .step($0) }
        } else if RecoveryCodes.isCodeShaped(typed) {
          proof = .recoveryCode(digest: RecoveryCodes.digest(typed))
        }
      }
    case .totpEnrolment:
      if let state, !state.active, TOTP.isCodeShaped(typed),
        let step = TOTP.matchingStep(secret: state.secret, code: typed)
      {
        recoveryCodes = RecoveryCodes.make()
        proof = .enrolment(
          secret: state.secret, step: step,
          recoveryDigests: recoveryCodes.map(RecoveryCodes.digest))
      }
    default: break
    }
    var outcome = ChallengeOutcome.proofRefused
    if let proof {
      outcome = try await store.completeChallenge(idHash: idHash, user: user, proof: proof)
    }
    switch outcome {
    case .challengeGone:
      throw ServiceError.unauthenticated(Self.badChallenge)
    case .proofRefused:
      await audit("login.failure", actor: user.id, target: user.id, orgID: user.orgID,
                  orgPath: user.orgPath, detail: "wrong second factor (\(attempt))")
      if attempt >= settings.lockoutThreshold {
        await audit("login.lockout", actor: user.id, target: user.id, orgID: user.orgID,
                    orgPath: user.orgPath, detail: "after \(attempt) failures")
      }
      throw ServiceError.unauthenticated(Self.badCode)
    case .completed:
      break
    }
    guard
      try await self.store.recordSuccessfulLogin(
        userID: user.id, newHash: nil, passwordChanged: false)
    else { throw ServiceError.unauthenticated(Self.badChallenge) }
    let how: String
    switch proof {
    case .recoveryCode: how = "recovery code"
    case .enrolment: how = "totp enrolment"
    default: how = "totp"
    }
    if case .enrolment = proof {
      await audit("user.totp_enable", actor: user.id, target: user.id, orgID: user.orgID,
                  orgPath: user.orgPath, detail: "at login")
    }
    let refresh = Secrets.random()
    let refreshExpires = Date().addingTimeInterval(settings.refreshTokenTTL)
    let session = try await self.store.createSession(
      userID: user.id, refreshHash: Secrets.digest(refresh), refreshExpires: refreshExpires)
    await audit("login.success", actor: user.id, target: session, orgID: user.orgID,
                orgPath: user.orgPath, detail: "second factor: \(how)")
    let tokens = try await tokenResponse(
      user: user, sessionID: session, refreshToken: refresh, refreshExpires: refreshExpires)
    let remaining: Int
    if case .recoveryCode = proof {
      remaining = try await store.unusedRecoveryCodes(userID: user.id)
    } else {
      remaining = 0
    }
    return .with {
      $0.tokens = tokens
      $0.recoveryCodes = recoveryCodes
      $0.recoveryCodesRemaining = Int32(remaining)
    }
  }

  /// The caller as a user who may use TOTP (people, not service accounts).
  private func totpUser() async throws -> User {
    let p = try Principal.require()
    guard let user = try await self.store.user(id: p.userID) else {
      throw ServiceError.notFound("your account no longer exists")
    }
    guard user.kind != .serviceAccount else {
      throw ServiceError.failedPrecondition("service accounts do not use TOTP")
    }
    return user
  }

  func beginTotpEnrolment(
    request: Smartschool_Identity_V1_BeginTotpEnrolmentRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_TotpEnrolment {
    let user = try await totpUser()
    let secret = TOTP.newSecret()
    guard try await twoFactor.beginTOTP(userID: user.id, secret: secret) else {
      throw ServiceError.failedPrecondition("TOTP is already active: DisableTotp first")
    }
    await audit("user.totp_begin", actor: user.id, target: user.id, orgID: user.orgID,
                orgPath: user.orgPath)
    return TOTP.enrolment(secret: secret, username: user.username)
  }

  func confirmTotpEnrolment(
    request: Smartschool_Identity_V1_ConfirmTotpEnrolmentRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_ConfirmTotpEnrolmentResponse {
    let user = try await totpUser()
    let code = request.code.trimmingSpaces()
    guard TOTP.isCodeShaped(code) else {
      throw ServiceError.invalid("code", "must be the app's 6-digit code")
    }
    let store = try twoFactor
    guard let state = try await store.totp(userID: user.id), !state.active else {
      throw ServiceError.failedPrecondition(
        "no TOTP enrolment is pending (or TOTP is already active): BeginTotpEnrolment first")
    }
    // Nothing is protected by the pending secret yet, so a wrong code here is not a guess
    // against the account: refused, not counted.
    guard let step = TOTP.matchingStep(secret: state.secret, code: code) else {
      throw ServiceError.invalid(
        "code", "does not match the new secret (is the phone's clock right?)")
    }
    let codes = RecoveryCodes.make()
    guard
      try await store.confirmTOTP(
        user: user, secret: state.secret, step: step,
        recoveryDigests: codes.map(RecoveryCodes.digest))
    else {
      throw ServiceError.failedPrecondition(
        "the pending enrolment changed meanwhile: BeginTotpEnrolment again")
    }
    await audit("user.totp_enable", actor: user.id, target: user.id, orgID: user.orgID,
                orgPath: user.orgPath)
    return .with { $0.recoveryCodes = codes }
  }

  func disableTotp(request: Smartschool_Identity_V1_DisableTotpRequest, context: ServerContext)
    async throws -> Smartschool_Identity_V1_DisableTotpResponse
  {
    let user = try await totpUser()
    let code = request.code.trimmingSpaces()
    var v = Validator()
    v.check(!code.isEmpty && code.count <= 32, "code", "must be 1-32 characters")
    try v.throwIfInvalid()
    let store = try twoFactor
    guard let state = try await store.totp(userID: user.id), state.active else {
      throw ServiceError.failedPrecondition("TOTP is not active")
    }
    let policy = settings.twoFactor.policy
    if !policy.isEmpty, policy.covers(try await self.store.bindings(userID: user.id)) {
      throw ServiceError.failedPrecondition(
        "your roles require TOTP; an admin can reset it (ResetUserTotp) if the app is lost")
    }
    guard
      let attempt = try await self.store.reserveLoginAttempt(
        userID: user.id, threshold: settings.lockoutThreshold, lockFor: settings.lockoutDuration)
    else { throw ServiceError.unauthenticated("the account is temporarily locked") }
    var proved = false
    if TOTP.isCodeShaped(code), let step = TOTP.matchingStep(secret: state.secret, code: code) {
      proved = try await store.useStep(userID: user.id, step: step)
    } else if RecoveryCodes.isCodeShaped(code) {
      proved = try await store.useRecoveryCode(
        userID: user.id, digest: RecoveryCodes.digest(code))
    }
    guard proved else {
      await audit("login.failure", actor: user.id, target: user.id, orgID: user.orgID,
                  orgPath: user.orgPath, detail: "wrong second factor to disable TOTP (\(attempt))")
      throw ServiceError.unauthenticated(Self.badCode)
    }
    _ = try await self.store.recordSuccessfulLogin(
      userID: user.id, newHash: nil, passwordChanged: false)
    _ = try await store.removeTOTP(user: user)
    await audit("user.totp_disable", actor: user.id, target: user.id, orgID: user.orgID,
                orgPath: user.orgPath)
    return .init()
  }

  func resetUserTotp(
    request: Smartschool_Identity_V1_ResetUserTotpRequest, context: ServerContext
  ) async throws -> Smartschool_Identity_V1_ResetUserTotpResponse {
    let p = try Principal.require()
    var v = Validator()
    v.check(request.userID.isEmpty != request.username.isEmpty, "user_id",
            "name the user by user_id or username (exactly one)")
    v.text(request.username, "username", required: false, maxLength: 64)
    v.text(request.userID, "user_id", required: false, maxLength: 64)
    try v.throwIfInvalid()
    let user = try await resolveUser(
      id: request.userID, username: request.username, field: "user_id")
    try p.require(.usersWrite, at: userPath(user))
    let had = try await twoFactor.removeTOTP(user: user)
    // Whoever holds the lost phone may hold sessions too.
    let ended = had ? try await endSessions(of: user.id, except: nil, reason: "TOTP reset") : 0
    await audit("user.totp_reset", actor: p.userID, target: user.id, orgID: user.orgID,
                orgPath: user.orgPath,
                detail: had ? "ended \(ended) sessions" : "had no TOTP")
    return .with { $0.hadTotp = had }
  }
}
