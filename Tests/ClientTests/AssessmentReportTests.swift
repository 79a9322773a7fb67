import Foundation
import TestSupport
import SmartSchoolCLI
import SmartSchoolModel
import Testing

/// The session and progress reports render what the service answered, row for row.
@Suite struct AssessmentReportTests {
  @Test func sessionReportPutsSubjectsSideBySide() {
    func scope(_ code: String, mean: Double, rank: Int32, subjects: [(Double, Int32)])
      -> Smartschool_Assessment_V1_SessionScope
    {
      .with {
        $0.totals = .with {
          $0.orgCode = code
          $0.orgName = "Org " + code
          $0.satCount = 20
          $0.absentCount = 1
          $0.mean = mean
          $0.passRate = 75
          $0.excellentRate = 12.5
          $0.rank = rank
        }
        $0.subjects = zip([Smartschool_Common_V1_Subject.chinese, .mathematics], subjects).map {
          subject, figures in
          .with {
            $0.subject = subject
            $0.figures = .with {
              $0.mean = figures.0
              $0.rank = figures.1
            }
          }
        }
      }
    }
    let report = Reports.sessionReport(
      .with {
        $0.sessionCode = "S-K1"
        $0.fullMarks = 200
        $0.scope = scope("K1", mean: 120.5, rank: 0, subjects: [(60.25, 0), (60.25, 0)])
        $0.children = [
          scope("S1", mean: 130, rank: 1, subjects: [(66, 1), (64, 2)]),
          scope("S2", mean: 110, rank: 2, subjects: [(55, 2), (65.5, 1)]),
        ]
      })
    let csv = report.render(.csv).split(separator: "\n").map(String.init)
    #expect(
      csv[0] == "Code,Name,Sat,Absent,Mean total,Pass rate,Excellent rate,Rank,"
        + "chinese mean,chinese rank,mathematics mean,mathematics rank")
    #expect(csv[1] == "K1,Org K1,20,1,120.50,75.00%,12.50%,,60.25,,60.25,")
    #expect(csv.contains("S2,Org S2,20,1,110.00,75.00%,12.50%,2,55.00,2,65.50,1"))
    let text = report.render(.text)
    #expect(text.contains("学科对比 Subject comparison — S-K1") && text.contains("数学均分"))
  }

  @Test func rankListAndProgressRows() {
    let ranks = Reports.sessionRanks(
      [
        .with {
          $0.studentExternalID = "ext-1"
          $0.classCode = "CL1a"
          $0.schoolCode = "S1"
          $0.total = 181.5
          $0.papersSat = 1
          $0.classRank = 1
          $0.schoolRank = 2
          $0.countyRank = 3
          $0.sessionRank = 4
          $0.percentileRank = 97.5
          $0.papers = [
            .with {
              $0.examCode = "X-K1"
              $0.sat = true
              $0.total = 181.5
            },
            .with { $0.examCode = "M-K1" },
          ]
        }
      ], session: "S-K1")
    let rows = ranks.render(.csv).split(separator: "\n").map(String.init)
    #expect(rows.last == "ext-1,CL1a,S1,181.50,1,1,2,3,4,97.50,181.50,缺考")
    #expect(rows.first?.hasSuffix("Percentile,X-K1,M-K1") == true)

    let progress = Reports.progressReport(
      .with {
        $0.earlierExamCode = "M-K1"
        $0.laterExamCode = "M2-K1"
        $0.scope = .with {
          $0.matched = 34
          $0.earlierMean = 25
          $0.laterMean = 27.5
          $0.zChange = 0.125
          $0.valueAdded = -0.00001
        }
        $0.children = [
          .with {
            $0.orgCode = "S1"
            $0.matched = 22
            $0.valueAdded = 0.05
            $0.valueAddedRank = 1
          }
        ]
        $0.mostImproved = [
          .with {
            $0.studentExternalID = "ext-9"
            $0.zChange = 1.5
            $0.earlierRank = 30
            $0.laterRank = 3
            $0.rankChange = 27
          }
        ]
      })
    let lines = progress.render(.csv).split(separator: "\n").map(String.init)
    #expect(lines.contains("(全部 all),,34,25.00,27.50,0.1250,0.00%,0.00%,-0.0000,"))
    #expect(lines.contains { $0.hasPrefix("S1,,22,") && $0.hasSuffix(",0.0500,1") })
    #expect(lines.contains("ext-9,,0.00,0.00,1.5000,30,3,27"))
  }
}

/// The exams and scores CSV columns for sessions, cut lines and attendance.
@Suite struct AssessmentCSVTests {
  func table(_ text: String, _ kind: ImportKind) throws -> [Result<CSVRow, RowProblem>] {
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    let path = try writeFile(dir, "f.csv", text)
    let table = try CSVTable(
      reader: CSVReader(path: path), expected: kind.headers, optional: kind.optionalHeaders)
    var rows: [Result<CSVRow, RowProblem>] = []
    while let (_, row) = try table.next() { rows.append(row) }
    return rows
  }

  @Test func examLinesAndSession() throws {
    let head = "code,name,school_year,term,subject,stage,grade,org_code,full_marks,"
      + "session_code,pass_line,excellent_line,low_line\n"
    let rows = try table(
      head + "E1,期末,2025-2026,1,mathematics,junior,8,K1,100,S-K1,55%,top 20%,30\n"
        + "E2,期末,2025-2026,1,mathematics,junior,8,K1,100,,,,\n"
        + "E3,期末,2025-2026,1,mathematics,junior,8,K1,100,,top,,\n", .exams)
    let exam = try RowConversion.exam(try rows[0].get())
    #expect(exam.sessionCode == "S-K1" && exam.passFraction == 0.55 && !exam.cutLines.hasPass)
    #expect(exam.cutLines.excellent.topShare == 0.2 && exam.cutLines.low.score == 30)
    let plain = try RowConversion.exam(try rows[1].get())
    #expect(plain.sessionCode.isEmpty && plain.passFraction == 0)
    #expect(plain.cutLines == Smartschool_Assessment_V1_CutLines())
    #expect(throws: RowProblem.self) { try RowConversion.exam(try rows[2].get()) }
    // Old files without the new columns still load.
    let old = try table(
      "code,name,school_year,term,subject,stage,grade,org_code,full_marks\n"
        + "E4,期末,2025-2026,1,mathematics,junior,8,K1,100\n", .exams)
    #expect(try RowConversion.exam(try old[0].get()).code == "E4")
  }

  @Test func scoreMarks() throws {
    let rows = try table(
      "exam_code,student_external_id,class_code,school_code,item_no,score,attendance,"
        + "reason_not_tested\n"
        + "E1,s1,CL1,S1,3,7.5,,\n" + "E1,s2,CL1,S1,0,0,缺考,\n" + "E1,s3,CL1,S1,0,0,exempt,ill\n"
        + "E1,s4,CL1,S1,2,0,absent,\n" + "E1,s5,CL1,S1,0,0,late,\n", .scores)
    let score = try RowConversion.score(try rows[0].get())
    #expect(score.itemNumber == 3 && score.score == 7.5 && score.attendance == .unspecified)
    #expect(try RowConversion.score(try rows[1].get()).attendance == .absent)
    let exempt = try RowConversion.score(try rows[2].get())
    #expect(exempt.attendance == .exempt && exempt.reasonNotTested == "ill")
    #expect(throws: RowProblem.self) { try RowConversion.score(try rows[3].get()) }
    #expect(throws: RowProblem.self) { try RowConversion.score(try rows[4].get()) }
  }
}
