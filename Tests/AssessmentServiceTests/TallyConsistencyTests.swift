import AssessmentService
import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

/// The exam's tallies (kept by the score batches) against a recomputation from the raw rows:
/// after random imports, re-imports that change scores and classes, attendance marks and
/// clears, every figure of statistics, item analysis, student reports and rank lists is
/// compared with one made here from the exported scores and the rank list's students.
@Suite(.serialized) struct TallyConsistencyTests {
  /// The test world's classes: class → (school, county).
  static let classes: [String: (school: String, county: String)] = [
    "CL1a": ("S1", "K1"), "CL1b": ("S1", "K1"), "CL2": ("S2", "K1"), "CL3": ("S3", "K2"),
  ]
  /// The items after UpdateExamItems (the exam is created with others first).
  static let maxScores: [Double] = [10, 10, 20, 10, 5, 5]

  /// A city exam ("T-C", run by C3401 so that its students span two counties), created with
  /// two items that UpdateExamItems replaces by six before any score.
  static func createExam(_ w: World, code: String = "T-C") async throws {
    var exam = standardExam(code: code, org: "C3401")
    exam.items = [item(1, 10, ["KP-A"]), item(2, 40, ["KP-B"])]
    _ = try await w.assessment.createExam(.with { $0.exam = exam }, metadata: w.auth("admin"))
    _ = try await w.assessment.updateExamItems(
      .with {
        $0.code = code
        $0.items = maxScores.enumerated().map { i, m in
          item(Int32(i + 1), m, ["KP-\(i % 3)"])
        }
      }, metadata: w.auth("admin"))
  }

  /// A random batch: students of a pool of 30 get scores (all items or some, in a class
  /// drawn anew, so that students move between classes, schools and counties), an ABSENT or
  /// EXEMPT mark, or a clear (SAT); some rows are refused (a score above its item's maximum, a
  /// mark on a student with scores).
  static func batch(_ code: String, _ rng: inout SeededGenerator) -> [ScoreRow] {
    var rows: [ScoreRow] = []
    for _ in 0..<rng.int(4...14) {
      let student = String(format: "r-%02d", rng.int(0...29))
      let classCode = rng.pick(classes.keys.sorted())
      let school = classes[classCode]!.school
      switch rng.int(0...9) {
      case 0:
        rows.append(markRow(code, student, classCode, school, .absent))
      case 1:
        rows.append(markRow(code, student, classCode, school, .exempt, reason: "免考 \(student)"))
      case 2:
        rows.append(markRow(code, student, classCode, school, .sat))
      default:
        let all = rng.chance(0.7)
        for (i, m) in maxScores.enumerated() where all || rng.chance(0.5) {
          // Halves up to the maximum; now and then one above it (refused).
          var score = Double(rng.int(0...Int(m * 2))) / 2
          if rng.chance(0.03) { score = m + 1 }
          rows.append(row(code, student, classCode, school, Int32(i + 1), score))
        }
      }
    }
    return rows
  }

  @Test func talliesEqualARecomputationAfterRandomImports() async throws {
    try await withWorld { w in
      try await Self.createExam(w)
      var rng = SeededGenerator(seed: 27)
      // What the rounds went through, so that the comparison cannot pass on tame data.
      var updated = 0, moved = 0, cleared = 0, marked = 0, incomplete = 0
      var previous: [String: Raw] = [:]
      for round in 0..<10 {
        var rows = Self.batch("T-C", &rng)
        // Some rounds send two batches' worth in one stream.
        if round % 3 == 2 { rows += Self.batch("T-C", &rng) }
        // A marked student is cleared (SAT), every other time with scores after the clear.
        if let m = previous.values.filter({ $0.attendance != .sat }).min(by: { $0.id < $1.id }) {
          rows.append(markRow("T-C", m.id, m.classCode, m.schoolCode, .sat))
          if round % 2 == 0 {
            rows.append(row("T-C", m.id, m.classCode, m.schoolCode, 1, Double(round % 10)))
          }
        }
        updated += Int(try await w.importScores(rows, as: "admin").updated)
        let raw = try await Self.verify(w, exam: "T-C", round: "round \(round)")
        for s in raw.values {
          guard let before = previous[s.id] else { continue }
          if before.classCode != s.classCode { moved += 1 }
          if before.attendance != .sat && s.attendance == .sat { cleared += 1 }
        }
        marked = max(marked, raw.values.filter { $0.attendance != .sat }.count)
        incomplete = max(
          incomplete, raw.values.filter { $0.attendance == .sat && $0.scores.count < 6 }.count)
        previous = raw
      }
      let seen = "updated \(updated), moved \(moved), cleared \(cleared), marked \(marked)"
      #expect(
        updated > 0 && moved > 0 && cleared > 0 && marked > 0 && incomplete > 0,
        "\(seen), incomplete \(incomplete)")
    }
  }

  // MARK: the recomputation

  /// One student as the raw rows give it.
  struct Raw {
    var id: String
    var classCode: String
    var schoolCode: String
    var attendance: Smartschool_Assessment_V1_Attendance = .sat
    var reason = ""
    /// Item scores by item number (missing: absent).
    var scores: [Int32: Double] = [:]
    /// The stored total (from the rank list, which reads the student rows).
    var total = 0.0

    var county: String { classes[classCode]?.county ?? "" }
    func column(_ count: Int) -> [Double] { (1...count).map { scores[Int32($0)] ?? 0 } }
  }

  /// The raw students of an exam: those who sat from the whole exam's rank list (every page),
  /// their item scores and the marked students from the export.
  static func raw(_ w: World, exam: String) async throws -> [String: Raw] {
    var students: [String: Raw] = [:]
    for s in try await ranked(w, exam: exam) {
      students[s.studentExternalID] = Raw(
        id: s.studentExternalID, classCode: s.classCode, schoolCode: s.schoolCode,
        total: s.total)
    }
    let exported = try await w.assessment.exportScores(
      .with { $0.examCode = exam }, metadata: w.auth("admin")
    ) { response in
      var rows: [ScoreRow] = []
      for try await r in response.messages { rows.append(r) }
      return rows
    }
    for r in exported {
      if r.itemNumber == 0 {
        #expect(students[r.studentExternalID] == nil, "\(r.studentExternalID) sat and not")
        students[r.studentExternalID] = Raw(
          id: r.studentExternalID, classCode: r.classCode, schoolCode: r.schoolCode,
          attendance: r.attendance, reason: r.reasonNotTested)
      } else {
        students[r.studentExternalID]?.scores[r.itemNumber] = r.score
      }
    }
    return students
  }

  /// The whole exam's rank list, every page (of 7, so that there are several).
  static func ranked(_ w: World, exam: String) async throws
    -> [Smartschool_Assessment_V1_RankedStudent]
  {
    var students: [Smartschool_Assessment_V1_RankedStudent] = []
    var token = ""
    repeat {
      let page = try await w.assessment.listExamRanks(
        .with {
          $0.examCode = exam
          $0.pageSize = 7
          $0.pageToken = token
        }, metadata: w.auth("admin"))
      students += page.students
      token = page.nextPageToken
    } while !token.isEmpty
    return students
  }

  static func same(_ a: Double, _ b: Double) -> Bool {
    a == b || abs(a - b) <= 1e-9 * max(1, abs(a), abs(b))
  }

  static func same(_ a: Double?, _ b: Double?) -> Bool {
    switch (a, b) {
    case (nil, nil): true
    case (let a?, let b?): same(a, b)
    default: false
    }
  }

  /// Every figure of `stats` against the same figures of `students` (the scope's, sat or not).
  static func expectFigures(
    _ got: Smartschool_Assessment_V1_ScopeStatistics, _ students: [Raw],
    lines: ScoreLineFigures, fullMarks: Double, reportsMissing: Bool, _ label: String
  ) {
    let sat = students.filter { $0.attendance == .sat }
    let totals = sat.map(\.total)
    let f = SummaryFigures.compute(
      totals, lines: lines, fullMarks: fullMarks, binCount: 10)
    #expect(got.count == Int64(f.count), "\(label) count")
    #expect(same(got.mean, f.mean) && same(got.standardDeviation, f.standardDeviation), "\(label)")
    #expect(got.min == f.min && got.max == f.max && got.median == f.median, "\(label) min/max")
    #expect(
      got.passRate == f.passRate && got.goodRate == f.goodRate
        && got.excellentRate == f.excellentRate && got.lowRate == f.lowRate, "\(label) rates")
    #expect(got.bins.map(\.count) == f.bins.map { Int64($0.count) }, "\(label) bins")
    #expect(got.bins.map(\.percent) == f.bins.map(\.percent), "\(label) bin percents")
    let absent = students.filter { $0.attendance == .absent }.count
    let exempt = students.filter { $0.attendance == .exempt }.count
    let incomplete = sat.filter { $0.scores.count < maxScores.count }.count
    #expect(got.satCount == Int64(sat.count) && got.absentCount == Int64(absent), "\(label)")
    #expect(got.exemptCount == Int64(exempt) && got.expectedCount == Int64(sat.count + absent))
    #expect(got.incompleteCount == Int64(reportsMissing ? incomplete : 0), "\(label) incomplete")
  }

  /// Statistics of `scope` ("" the exam) with `kind` children against the raw students.
  static func expectStatistics(
    _ w: World, exam: Smartschool_Assessment_V1_Exam, raw: [String: Raw], scope: String,
    kind: Smartschool_Common_V1_OrgKind, children: [String: (Raw) -> Bool], _ label: String
  ) async throws {
    let stats = try await w.assessment.getExamStatistics(
      .with {
        $0.examCode = exam.code
        $0.scopeOrgCode = scope
        $0.childrenKind = kind
      }, metadata: w.auth("admin"))
    let inScope = raw.values.filter {
      ["", "C3401"].contains(scope) || [$0.classCode, $0.schoolCode, $0.county].contains(scope)
    }.sorted { $0.id < $1.id }
    let reportsMissing = exam.missingItems != .zero
    let fm = exam.fullMarks
    let lines = ScoreLineFigures(
      pass: exam.passFraction * fm, good: exam.goodFraction * fm,
      excellent: exam.excellentFraction * fm, low: exam.lowFraction * fm)
    #expect(fm == 60, "\(label) full marks")
    #expect(
      stats.lines.pass == lines.pass && stats.lines.good == lines.good
        && stats.lines.excellent == lines.excellent && stats.lines.low == lines.low, "\(label)")
    expectFigures(
      stats.scope, inScope, lines: lines, fullMarks: fm, reportsMissing: reportsMissing, label)
    #expect(stats.children.count == children.count, "\(label) children")
    for child in stats.children {
      guard let member = children[child.orgCode] else {
        Issue.record("\(label): unexpected child \(child.orgCode)")
        continue
      }
      expectFigures(
        child, inScope.filter(member), lines: lines, fullMarks: fm,
        reportsMissing: reportsMissing, "\(label) child \(child.orgCode)")
    }
    let ranked = stats.children.filter { $0.count > 0 }
    let means = ranksByMean(ranked.map(\.mean))
    #expect(ranked.map(\.rank) == means.map { Int32($0) }, "\(label) child ranks")
    // Not tested and incomplete lists.
    let notTested = inScope.filter { $0.attendance != .sat }
      .sorted { ($0.classCode, $0.id) < ($1.classCode, $1.id) }
    #expect(stats.notTested.map(\.studentExternalID) == notTested.map(\.id), "\(label)")
    #expect(stats.notTested.map(\.reasonNotTested) == notTested.map(\.reason), "\(label)")
    let incomplete = inScope.filter { $0.attendance == .sat && $0.scores.count < 6 }
      .sorted { ($0.classCode, $0.id) < ($1.classCode, $1.id) }
    #expect(
      stats.incomplete.map(\.studentExternalID) == (reportsMissing ? incomplete.map(\.id) : []),
      "\(label) incomplete list")
    // Item analysis over the scope's students who sat (missing scores 0).
    let sat = inScope.filter { $0.attendance == .sat }
    let analysis = ItemAnalysis.compute(
      sat.map { StudentItemScores(externalID: $0.id, scores: $0.column(maxScores.count)) },
      maxScores: maxScores)
    #expect(stats.items.count == analysis.items.count, "\(label) items")
    for (got, want) in zip(stats.items, analysis.items) {
      #expect(
        same(got.mean, want.mean) && same(got.difficulty, want.difficulty),
        "\(label) item \(got.number) mean \(got.mean) \(want.mean)")
      #expect(
        same(got.discrimination, want.discrimination),
        "\(label) item \(got.number) D \(got.discrimination) \(want.discrimination)")
      #expect(
        same(got.hasPointBiserial ? got.pointBiserial.value : nil, want.pointBiserial),
        "\(label) item \(got.number) r \(got.pointBiserial.value) \(want.pointBiserial ?? -9)")
    }
    let alpha = stats.hasCronbachAlpha ? stats.cronbachAlpha.value : nil
    #expect(same(alpha, analysis.alpha), "\(label) alpha")
    #expect(same(stats.hasSem ? stats.sem.value : nil, analysis.sem), "\(label) sem")
    // Each sat student's stored total is the sum of its item scores.
    for s in sat {
      #expect(same(s.total, s.column(maxScores.count).reduce(0, +)), "\(label) \(s.id) total")
    }
  }

  /// Every figure the exam reports against a recomputation from its raw rows.
  @discardableResult
  static func verify(_ w: World, exam code: String, round: String) async throws -> [String: Raw] {
    let exam = try await w.assessment.getExam(.with { $0.code = code }, metadata: w.auth("admin"))
    let raw = try await raw(w, exam: code)
    let counties: [String: (Raw) -> Bool] = [
      "K1": { $0.county == "K1" }, "K2": { $0.county == "K2" },
    ]
    try await expectStatistics(
      w, exam: exam, raw: raw, scope: "", kind: .unspecified, children: counties, "\(round) exam")
    try await expectStatistics(
      w, exam: exam, raw: raw, scope: "C3401", kind: .class,
      children: Dictionary(
        uniqueKeysWithValues: classes.keys.map { c in (c, { (s: Raw) in s.classCode == c }) }),
      "\(round) city by class")
    try await expectStatistics(
      w, exam: exam, raw: raw, scope: "K1", kind: .unspecified,
      children: ["S1": { $0.schoolCode == "S1" }, "S2": { $0.schoolCode == "S2" }],
      "\(round) K1")
    try await expectStatistics(
      w, exam: exam, raw: raw, scope: "S1", kind: .unspecified,
      children: ["CL1a": { $0.classCode == "CL1a" }, "CL1b": { $0.classCode == "CL1b" }],
      "\(round) S1")

    // Every student's report, and the rank list's ranks of those who sat.
    let sat = raw.values.filter { $0.attendance == .sat }
    let totals = sat.map(\.total)
    let mean = totals.isEmpty ? 0 : totals.reduce(0, +) / Double(totals.count)
    let sd = populationSD(totals, mean: mean)
    var listed: [String: Smartschool_Assessment_V1_RankedStudent] = [:]
    for s in try await ranked(w, exam: code) { listed[s.studentExternalID] = s }
    for s in raw.values.sorted(by: { $0.id < $1.id }) {
      let report = try await w.assessment.getStudentReport(
        .with {
          $0.examCode = code
          $0.studentExternalID = s.id
        }, metadata: w.auth("admin"))
      let label = "\(round) report \(s.id)"
      let inClass = sat.filter { $0.classCode == s.classCode }.map(\.total)
      let inSchool = sat.filter { $0.schoolCode == s.schoolCode }.map(\.total)
      #expect(report.classSize == Int32(inClass.count), "\(label) class size")
      #expect(report.schoolSize == Int32(inSchool.count), "\(label) school size")
      #expect(report.examSize == Int32(totals.count), "\(label) exam size")
      #expect(report.attendance == s.attendance, "\(label) attendance")
      guard s.attendance == .sat else {
        #expect(report.total == 0 && report.examRank == 0, "\(label)")
        continue
      }
      #expect(report.total == s.total, "\(label) total")
      #expect(report.classRank == Int32(competitionRank(of: s.total, in: inClass)), "\(label)")
      #expect(report.schoolRank == Int32(competitionRank(of: s.total, in: inSchool)), "\(label)")
      #expect(report.examRank == Int32(competitionRank(of: s.total, in: totals)), "\(label)")
      #expect(
        report.percentileRank == roundTo2(percentileRank(of: s.total, in: totals)), "\(label)")
      let z = zScore(of: s.total, mean: mean, sd: sd)
      #expect(same(report.hasZScore ? report.zScore.value : nil, z), "\(label) z")
      let t = report.hasTScore ? report.tScore.value : nil
      #expect(same(t, z.map { tScore(z: $0) }), "\(label) T")
      let missing = (1...maxScores.count).map(Int32.init).filter { s.scores[$0] == nil }
      #expect(report.missingItems == missing, "\(label) missing")
      guard let ranked = listed[s.id] else {
        Issue.record("\(label): not in the rank list")
        continue
      }
      #expect(
        ranked.classRank == report.classRank && ranked.schoolRank == report.schoolRank
          && ranked.examRank == report.examRank
          && ranked.percentileRank == report.percentileRank, "\(label) rank list")
    }
    #expect(listed.count == sat.count, "\(round) rank list size")
    return raw
  }
}

/// Two assessment replicas importing into one exam at once on one PostgreSQL database: the
/// tallies' increments must add up to a recomputation.
@Suite(
  "Tallies of two replicas on one PostgreSQL database", .serialized,
  .enabled(if: TestStore.postgresServer != nil))
struct TallyReplicaTests {
  @Test func concurrentImportsKeepTheTalliesExact() async throws {
    try await withWorld(replicas: 2) { w in
      try await TallyConsistencyTests.createExam(w)
      var rng = SeededGenerator(seed: 2027)
      for round in 0..<6 {
        // Each replica gets its own stream of several batches; the students overlap.
        let first = (0..<4).flatMap { _ in TallyConsistencyTests.batch("T-C", &rng) }
        let second = (0..<4).flatMap { _ in TallyConsistencyTests.batch("T-C", &rng) }
        async let a = Self.send(first, to: w.replicas[0], w)
        async let b = Self.send(second, to: w.replicas[1], w)
        _ = try await (a, b)
        try await TallyConsistencyTests.verify(w, exam: "T-C", round: "replicas \(round)")
      }
    }
  }

  /// Streams `rows` to `replica` in batches of five rows.
  static func send(_ rows: [ScoreRow], to replica: AssessmentClient, _ w: World) async throws
    -> Smartschool_Common_V1_ImportSummary
  {
    try await replica.importScoreBatches(
      metadata: w.auth("admin"),
      requestProducer: { writer in
        for start in stride(from: 0, to: rows.count, by: 5) {
          let end = min(start + 5, rows.count)
          try await writer.write(.with { $0.rows = Array(rows[start..<end]) })
        }
      })
  }
}
