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
    #expect(throws: ServiceError.self) { try Passwords.validateNew("short1", field: "p") }
    #expect(throws: ServiceError.self) { try Passwords.validateNew("12345678901", field: "p") }
    #expect(throws: ServiceError.self) { try Passwords.validateNew("onlyletters", field: "p") }
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
