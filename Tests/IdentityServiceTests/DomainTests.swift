import Foundation
import ServiceRuntime
import SmartSchoolModel
import Testing

@testable import IdentityService

@Suite("Org tree rules")
struct OrgRulesTests {
  @Test func parentKindMustBeTheLevelAbove() throws {
    #expect(throws: ServiceError.self) {
      try OrgRules.checkParent(child: .school, parent: .city, field: "p")
    }
    try OrgRules.checkParent(child: .school, parent: .county, field: "p")
    try OrgRules.checkParent(child: .province, parent: nil, field: "p")
    #expect(throws: ServiceError.self) {
      try OrgRules.checkParent(child: .province, parent: .city, field: "p")
    }
  }

  @Test func cyclesAreDetected() {
    let county = OrgPath(ids: ["p", "c", "k"])
    #expect(OrgRules.wouldCycle(orgPath: county, newParentPath: county.appending("s")))
    #expect(OrgRules.wouldCycle(orgPath: county, newParentPath: county))
    #expect(!OrgRules.wouldCycle(orgPath: county, newParentPath: OrgPath(ids: ["p", "c", "k2"])))
  }

  @Test func fieldViolationsNameTheField() {
    var o = Smartschool_Identity_V1_Org()
    o.code = "bad code!"
    o.name = ""
    o.kind = .`class`
    o.parentCode = "S1"
    o.grade = 13
    o.schoolYear = "2020"
    let fields = Set(OrgRules.validate(o).map(\.field))
    #expect(fields == ["org.code", "org.name", "org.grade", "org.school_year"])
    var school = Smartschool_Identity_V1_Org()
    school.code = "S1"
    school.name = "学校"
    school.kind = .school
    school.parentCode = "K1"
    #expect(OrgRules.validate(school).map(\.field) == ["org.school_kind"])
    school.schoolKind = .rural
    #expect(OrgRules.validate(school).isEmpty)
  }

  @Test func usersNeedValidKeysAndKinds() {
    var u = Smartschool_Identity_V1_User()
    u.externalID = "e1"
    u.username = "ab"
    u.displayName = "张三"
    u.kind = .serviceAccount
    u.orgCode = "S1"
    u.birthYear = 1800
    let fields = Set(OrgRules.validate(u).map(\.field))
    #expect(fields == ["user.username", "user.kind", "user.birth_year"])
  }
}

@Suite("Passwords")
struct PasswordTests {
  let cheap = ScryptParameters(logN: 10, r: 8, p: 1)

  @Test func hashVerifiesOnlyTheRightPassword() throws {
    let hash = try Passwords.hash("Correct-horse-1", parameters: cheap)
    #expect(hash.hasPrefix("$scrypt$ln=10,r=8,p=1$"))
    #expect(try Passwords.verify("Correct-horse-1", against: hash))
    #expect(try !Passwords.verify("Correct-horse-2", against: hash))
    #expect(try !Passwords.verify("Correct-horse-1", against: "$scrypt$garbage"))
    // Salted: the same password hashes differently.
    #expect(try Passwords.hash("Correct-horse-1", parameters: cheap) != hash)
  }

  @Test func parametersAreStoredAndUpgradesDetected() throws {
    let hash = try Passwords.hash("Correct-horse-1", parameters: cheap)
    #expect(Passwords.parameters(of: hash) == cheap)
    #expect(!Passwords.needsRehash(hash, current: cheap))
    #expect(Passwords.needsRehash(hash, current: ScryptParameters(logN: 11, r: 8, p: 1)))
  }

  @Test func weakPasswordsAreRefused() {
    let policy = PasswordPolicy()
    for weak in [
      "short1", "12345678901", "onlyletters", "password1", "aaaaaaa1", "Password123!",
      "P@ssw0rd1", "qwerty123", "iloveyou2", "abab1abab1", "Dragon2024", "11111111a",
      "monkey!!", "Summer2024",
    ] {
      #expect(policy.problem(weak, username: nil) != nil, "\(weak)")
    }
    for fine in ["Correct-horse-1", "Secret-pass-1", "k7#Qm2vLp9", "川流不息-2025", "Bench-admin-1"] {
      #expect(policy.problem(fine, username: nil) == nil, "\(fine)")
    }
    // The username, also inside the password and by its part before '@'.
    #expect(policy.problem("Li.wei-2025!", username: "li.wei") != nil)
    #expect(policy.problem("x-Zhangsan-77", username: "zhangsan@school.cn") != nil)
    #expect(policy.problem("x-Zhangsan-77", username: "lisi") == nil)
    // The minimum length is the configured one.
    #expect(PasswordPolicy(minLength: 14).problem("Secret-pass-1", username: nil) != nil)
    #expect(throws: ServiceError.invalid("p", "is a common password or word, easy to guess")) {
      try policy.check("password1", username: nil, field: "p")
    }
    // The list is the generated one, not a handful of words.
    #expect(PasswordPolicy.common.count > 20_000)
  }

  @Test func clientAddressesTrustOnlyConfiguredProxies() throws {
    let proxies = try IPRange.list("10.0.0.0/8,fd00::/8, 192.0.2.1")
    #expect(IPRange("10.0.0.0/33") == nil && IPRange("proxy.local") == nil)
    #expect(proxies[0].contains("10.200.3.4") && !proxies[0].contains("11.0.0.1"))
    #expect(proxies[1].contains("fd12::1") && !proxies[1].contains("fe80::1"))
    #expect(proxies.map(\.description) == ["10.0.0.0/8", "fd00::/8", "192.0.2.1"])
    #expect(ClientAddress.host(ofPeer: "ipv6:[::1]:5000") == "::1")
    // A peer that is not a proxy: its own address, whatever header it writes.
    #expect(ClientAddress.resolve(
      peer: "ipv4:203.0.113.5:4000", forwardedFor: ["1.2.3.4"], trusted: proxies)
      == "203.0.113.5")
    // Behind proxies: the rightmost hop that is not a proxy; what the client wrote to its left
    // proves nothing.
    #expect(ClientAddress.resolve(
      peer: "ipv4:10.1.1.1:4000", forwardedFor: ["6.6.6.6, 198.51.100.7", "10.2.2.2"],
      trusted: proxies) == "198.51.100.7")
    #expect(ClientAddress.resolve(
      peer: "ipv4:10.1.1.1:4000", forwardedFor: ["not-an-address"], trusted: proxies)
      == "10.1.1.1")
  }

  @Test func throttleRefusesPastEachLimit() async throws {
    let throttle = LoginThrottle(perAccount: 3, perAddress: 5, hashesPerAddress: 1)
    for _ in 0..<3 { try throttle.admit(account: "Teacher1", address: "a") }
    #expect(throws: ServiceError.self) { try throttle.admit(account: "teacher1", address: "b") }
    for i in 0..<2 { try throttle.admit(account: "u\(i)", address: "a") }
    #expect(throws: ServiceError.self) { try throttle.admit(account: "other", address: "a") }
    try throttle.admit(account: "other", address: "c")
    let gate = AsyncStream<Void>.makeStream()
    let running = Task { try await throttle.hashing(from: "c") { for await _ in gate.stream {} } }
    for _ in 0..<400 where throttle.hashesRunning(from: "c") == 0 {
      try await Task.sleep(for: .milliseconds(5))
    }
    await #expect(throws: ServiceError.self) { try await throttle.hashing(from: "c") {} }
    try await throttle.hashing(from: "d") {}
    gate.continuation.finish()
    try await running.value
    try await throttle.hashing(from: "c") {}
  }

  @Test func limiterRefusesBeyondItsBound() async throws {
    let limiter = HashLimiter(limit: 1)
    let gate = DispatchSemaphore(value: 0)
    let first = Task { try await limiter.run { gate.wait(); return 1 } }
    for _ in 0..<400 where limiter.inUse == 0 { try await Task.sleep(for: .milliseconds(5)) }
    #expect(limiter.inUse == 1)
    await #expect(throws: ServiceError.resourceExhausted("too many password checks in progress; retry shortly")) {
      _ = try await limiter.run { 2 }
    }
    gate.signal()
    #expect(try await first.value == 1)
    // The slot is free again.
    #expect(try await limiter.run { 3 } == 3)
  }
}

@Suite("Secrets")
struct SecretTests {
  @Test func activationCodesAreTypeable() {
    let code = Secrets.activationCode()
    #expect(code.count == 10)
    #expect(code.allSatisfy { "ABCDEFGHJKMNPQRSTUVWXYZ23456789".contains($0) })
    #expect(Secrets.digest("a") != Secrets.digest("b"))
    #expect(Secrets.random() != Secrets.random())
  }
}
