import Foundation
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
