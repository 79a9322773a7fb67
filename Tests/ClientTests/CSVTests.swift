import Foundation
import SmartSchoolCLI
import SmartSchoolClient
import SmartSchoolModel
import Testing

func records(_ text: String) throws -> [CSVRecord] {
  let reader = CSVReader(data: Data(text.utf8))
  var out: [CSVRecord] = []
  while let r = try reader.next() { out.append(r) }
  return out
}

@Suite struct CSVReaderTests {
  @Test func bomQuotingAndLineNumbers() throws {
    let text = "\u{FEFF}a,b\r\n\"x, y\",\"say \"\"hi\"\"\"\r\n\n\"two\nlines\",z\nlast,row"
    let r = try records(text)
    #expect(
      r.map(\.fields) == [
        ["a", "b"], ["x, y", "say \"hi\""], ["two\nlines", "z"], ["last", "row"],
      ])
    #expect(r.map(\.line) == [1, 2, 4, 6])
  }

  @Test func unterminatedQuoteIsAnError() throws {
    #expect(throws: CSVError.self) { try records("a,b\n\"open,1\n") }
  }

  @Test func chineseTextSurvivesChunkBoundaries() throws {
    let dir = NSTemporaryDirectory() + "csv-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/big.csv"
    var text = "name,n\n"
    for i in 0..<20_000 { text += "智慧课堂教学案例\(i),\(i)\n" }
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    let reader = try CSVReader(path: path)
    var count = 0
    _ = try reader.next()
    while let r = try reader.next() {
      #expect(r.fields == ["智慧课堂教学案例\(count)", "\(count)"])
      count += 1
    }
    #expect(count == 20_000)
  }

  @Test func headerMustMatchExactly() throws {
    let expected = ImportKind.guardians.headers
    let ok = try CSVTable(
      reader: CSVReader(data: Data("\u{FEFF}student_external_id,parent_external_id\nS1,P1\n".utf8)),
      expected: expected)
    let row = try #require(try ok.next())
    #expect(try RowConversion.guardian(row.row.get()).parentExternalID == "P1")
    #expect(throws: CSVError.self) {
      try CSVTable(
        reader: CSVReader(data: Data("parent_external_id,student_external_id,extra\n".utf8)),
        expected: expected)
    }
    #expect(throws: CSVError.self) {
      try CSVTable(reader: CSVReader(data: Data("parent_external_id\n".utf8)), expected: expected)
    }
    let short = try CSVTable(
      reader: CSVReader(data: Data("parent_external_id,student_external_id\nP1\n".utf8)),
      expected: expected)
    let bad = try #require(try short.next())
    #expect(bad.line == 2)
    guard case .failure(let problem) = bad.row else {
      Issue.record("a short row must fail")
      return
    }
    #expect(problem.reason.contains("1 fields"))
  }
}

@Suite struct RowConversionTests {
  @Test func enumsTakeChineseOrEnglishNames() throws {
    let org = try RowConversion.org(
      CSVRow([
        "code": "S1", "name": "一小", "kind": "学校", "school_kind": "教学点", "parent_code": "K1",
        "managing_school_code": "S0", "grade": "", "school_year": "",
      ]))
    #expect(org.kind == .school)
    #expect(org.schoolKind == .teachingPoint)
    let lesson = try RowConversion.lesson(
      CSVRow([
        "classroom_code": "R1", "teacher_external_id": "T1", "subject": "数学",
        "date": "2025-09-01", "period": "3", "duration_minutes": "40",
      ]))
    #expect(lesson.subject == .mathematics)
    let english = try RowConversion.lesson(
      CSVRow([
        "classroom_code": "R1", "teacher_external_id": "T1", "subject": "Morality_And_Law",
        "date": "2025-09-01", "period": "3", "duration_minutes": "40",
      ]))
    #expect(english.subject == .moralityAndLaw)
  }

  @Test func badNumberDateAndEnumNameTheColumn() {
    func problem(_ body: () throws -> Void) -> RowProblem? {
      do {
        try body()
        return nil
      } catch let p as RowProblem {
        return p
      } catch {
        return nil
      }
    }
    let base: [String: String] = [
      "classroom_code": "R1", "teacher_external_id": "T1", "subject": "数学",
      "date": "2025-09-01", "period": "3", "duration_minutes": "40",
    ]
    func row(_ change: [String: String]) -> CSVRow {
      let merged = base.merging(change) { $1 }
      let names = Array(merged.keys)
      return CSVRow(
        columns: Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) }),
        fields: names.map { merged[$0]! })
    }
    #expect(problem { _ = try RowConversion.lesson(row(["period": "three"])) }?.column == "period")
    #expect(problem { _ = try RowConversion.lesson(row(["period": "21"])) }?.column == "period")
    #expect(problem { _ = try RowConversion.lesson(row(["date": "2025-02-30"])) }?.column == "date")
    #expect(problem { _ = try RowConversion.lesson(row(["subject": "炼丹"])) }?.column == "subject")
    #expect(problem { _ = try RowConversion.lesson(row([:])) } == nil)
  }

  @Test func booleans() {
    for yes in ["true", "TRUE", "1", "是"] { #expect(parseBool(yes) == true) }
    for no in ["false", "0", "否"] { #expect(parseBool(no) == false) }
    #expect(parseBool("yes") == nil)
    #expect(parseBool("") == nil)
  }

  @Test func facilityBooleansAndCounts() throws {
    let report = try RowConversion.facility(
      CSVRow([
        "school_code": "S1", "year": "2025", "smart_school_built": "是", "smart_classrooms": "2",
        "multimedia_classrooms": "9", "student_computers": "40", "teacher_computers": "12",
        "students": "300", "teachers": "20", "bandwidth_mbps": "200", "campus_network": "1",
        "wireless": "否",
      ]))
    #expect(report.standardMet && report.smartClassroomPresent && report.campusNetwork)
    #expect(!report.wirelessCoverage)
    #expect(report.broadbandMbps == 200)
  }

  @Test func resourceIDsAreStableAndCurriculumNodesNested() throws {
    let values: KeyValuePairs<String, String> = [
      "title": "一元一次方程 教学案例", "description": "", "keywords": "方程;七年级",
      "type": "智慧课堂教学案例", "stage": "初中", "grade": "7", "subject": "数学",
      "chapter_code": "M7-3", "knowledge_points": "KP-LINEAR", "owner_org_code": "K1",
      "scope": "county",
    ]
    let a = try RowConversion.resource(CSVRow(values))
    let b = try RowConversion.resource(CSVRow(values))
    #expect(a.externalID == b.externalID)
    #expect(a.type == .teachingCase && a.sharingScope == .county)
    #expect(a.keywords == ["方程", "七年级"])
    let nodes = try RowConversion.curriculum(
      CSVRow([
        "edition": "人教版初中数学", "volume": "七年级上册", "chapter_code": "M7-1",
        "chapter_title": "有理数", "stage": "junior", "grade": "7", "subject": "mathematics",
      ]))
    #expect(nodes.map(\.kind) == [.edition, .volume, .chapter])
    #expect(nodes[1].parentCode == nodes[0].code && nodes[2].parentCode == nodes[1].code)
  }
}

@Suite struct DemoCountyTests {
  @Test func sameSeedSameFiles() {
    let a = DemoCounty(seed: 7, size: .small)
    let b = DemoCounty(seed: 7, size: .small)
    let c = DemoCounty(seed: 8, size: .small)
    #expect(a.files == b.files)
    #expect(a.files[.users] != c.files[.users])
    #expect(Set(a.files.keys) == Set(ImportKind.allCases))
  }

  @Test func fullCountyHasTheSeedCountysSize() throws {
    let county = DemoCounty()
    #expect(county.counts["schools"] == 62)
    #expect(county.counts["teaching_points"] == 28)
    #expect(county.counts["rural"] == 19)
    #expect(county.counts["urban"] == 15)
    #expect(county.counts["teachers"] == 1017)
    #expect(county.counts["students"] == 13047)
    #expect(county.counts["scores"] == 13047 * 20)
    #expect((county.counts["resources"] ?? 0) >= 200)
    // The files say the same as the counts (header line excluded).
    let users = county.files[.users]!.split(separator: "\n").dropFirst()
    #expect(users.filter { $0.contains(",teacher,") }.count == 1017)
    #expect(users.filter { $0.contains(",student,") }.count == 13047)
    #expect(users.filter { $0.contains(",parent,") }.count == 13047)
    let schools = county.files[.orgs]!.split(separator: "\n").filter { $0.contains(",school,") }
    #expect(schools.count == 62)
    // Every row of every file parses.
    for kind in ImportKind.allCases {
      let table = try CSVTable(
        reader: CSVReader(data: Data(county.files[kind]!.utf8)), expected: kind.headers,
        optional: kind.optionalHeaders)
      var rows = 0
      while let (_, row) = try table.next() {
        _ = try row.get()
        rows += 1
        if rows > 2000 { break }
      }
      #expect(rows > 0, "\(kind)")
    }
  }
}

@Suite struct SessionFileTests {
  @Test func savedOnlyForTheOwnerAndReadBack() throws {
    let dir = NSTemporaryDirectory() + "session-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let path = dir + "/nested/session.json"
    var file = SessionFile(
      tokens: TokenSet(
        accessToken: "a", accessTokenExpiry: Date(timeIntervalSince1970: 1_800_000_000),
        refreshToken: "r", refreshTokenExpiry: Date(timeIntervalSince1970: 1_900_000_000)))
    file.clientID = "id"
    try file.save(path)
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
    let directory = try FileManager.default.attributesOfItem(atPath: dir + "/nested")
    #expect((directory[.posixPermissions] as? NSNumber)?.intValue == 0o700)
    let back = try #require(try SessionFile.load(path))
    #expect(back.tokens == file.tokens && back.clientID == "id" && back.clientSecret == nil)
    #expect(try SessionFile.load(dir + "/missing.json") == nil)
  }

  @Test func addressesComeFromTheEnvironment() throws {
    let addresses = try ServiceAddresses.fromEnvironment(
      ["SMARTSCHOOL_ASSESSMENT_ADDR": "assess.example:7000"], caBundle: "/ca.pem")
    #expect(addresses.identity.description == "127.0.0.1:50051")
    #expect(addresses.assessment.description == "assess.example:7000")
    #expect(addresses.supervision.port == 50054 && addresses.catalogue.caBundle == "/ca.pem")
    #expect(throws: ClientError.self) {
      try ServiceAddresses.fromEnvironment(["SMARTSCHOOL_IDENTITY_ADDR": "nope"])
    }
  }
}

@Suite struct RetryPolicyTests {
  @Test func onlyCallsSafeToRepeatAreRetried() {
    let all =
      Smartschool_Identity_V1_IdentityService.Method.descriptors
      + Smartschool_Supervision_V1_SupervisionService.Method.descriptors
      + Smartschool_Assessment_V1_AssessmentService.Method.descriptors
      + Smartschool_Catalogue_V1_CatalogueService.Method.descriptors
    let retried = Set(all.filter(SmartSchoolClient.isSafeToRepeat).map(\.method))
    for read in ["GetComplianceReport", "ListUsers", "WhoAmI", "SearchResources", "ExportScores"] {
      #expect(retried.contains(read), "\(read)")
    }
    for write in [
      "ImportOrgs", "ImportUsers", "ImportScores", "ImportLessons", "ImportCurriculum",
      "CreateTerm", "CreateTrainingRecord", "Login", "Refresh", "TransitionResource",
    ] {
      #expect(!retried.contains(write), "\(write)")
    }
  }
}
