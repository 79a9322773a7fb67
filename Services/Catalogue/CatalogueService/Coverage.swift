import SmartSchoolModel

/// A chapter (章) of the curriculum, as the coverage report counts it.
struct ChapterRef: Hashable, Sendable {
  var code: String
  var stage: Smartschool_Common_V1_Stage
  var grade: Int
  var subject: Smartschool_Common_V1_Subject
}

/// Smart-classroom teaching-case coverage: the share of chapters with at least one published
/// case, per subject and grade, rounded half up to two decimals. The plans aim for 60%.
enum Coverage {
  /// The plan target, in percent.
  static let targetPercent = 60.0

  /// covered / total × 100 in hundredths of a percent, rounded half up (6667 for 2 of 3);
  /// 0 when there is nothing to cover. Integer arithmetic, so 2/3 is always 66.67.
  static func hundredths(covered: Int, total: Int) -> Int {
    guard total > 0 else { return 0 }
    // round(covered × 10000 / total) half up = floor((2 × covered × 10000 + total) / (2 × total))
    return (2 * covered * 10_000 + total) / (2 * total)
  }

  /// Hundredths of a percent as text with two decimals: 6667 → "66.67", 5 → "0.05".
  static func text(hundredths: Int) -> String {
    let whole = hundredths / 100
    let fraction = hundredths % 100
    return "\(whole)." + (fraction < 10 ? "0\(fraction)" : "\(fraction)")
  }

  /// One row of the report.
  static func row(
    stage: Smartschool_Common_V1_Stage, subject: Smartschool_Common_V1_Subject, grade: Int,
    chapters: Int, covered: Int
  ) -> Smartschool_Catalogue_V1_CoverageRow {
    let h = hundredths(covered: covered, total: chapters)
    return .with {
      $0.stage = stage
      $0.subject = subject
      $0.grade = Int32(grade)
      $0.chapters = Int64(chapters)
      $0.coveredChapters = Int64(covered)
      $0.coveragePercent = Double(h) / 100
      $0.coverageText = text(hundredths: h)
      $0.meetsTarget = Double(h) / 100 >= targetPercent
    }
  }

  /// Rows per (subject, grade) in subject then grade order, and the total over all of them.
  static func report(chapters: [ChapterRef], covered: Set<String>)
    -> (rows: [Smartschool_Catalogue_V1_CoverageRow], total: Smartschool_Catalogue_V1_CoverageRow)
  {
    struct Key: Hashable {
      var subject: Int
      var grade: Int
      var stage: Int
    }
    var counts: [Key: (chapters: Int, covered: Int)] = [:]
    for chapter in Set(chapters) {
      let key = Key(
        subject: chapter.subject.rawValue, grade: chapter.grade,
        stage: chapter.stage.rawValue)
      counts[key, default: (0, 0)].chapters += 1
      if covered.contains(chapter.code) { counts[key, default: (0, 0)].covered += 1 }
    }
    let rows = counts.keys.sorted {
      ($0.subject, $0.grade, $0.stage) < ($1.subject, $1.grade, $1.stage)
    }.map { key in
      row(
        stage: .init(rawValue: key.stage) ?? .unspecified,
        subject: .init(rawValue: key.subject) ?? .unspecified, grade: key.grade,
        chapters: counts[key]!.chapters, covered: counts[key]!.covered)
    }
    let total = row(
      stage: .unspecified, subject: .unspecified, grade: 0,
      chapters: rows.reduce(0) { $0 + Int($1.chapters) },
      covered: rows.reduce(0) { $0 + Int($1.coveredChapters) })
    return (rows, total)
  }
}
