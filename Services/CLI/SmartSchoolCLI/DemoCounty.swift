import Foundation
import SmartSchoolClient
import SmartSchoolModel

/// The size of a generated county.
public struct DemoSize: Sendable {
  /// Teaching points, rural schools, urban schools.
  public var teachingPoints: Int, rural: Int, urban: Int
  /// Teachers and students in all.
  public var teachers: Int, students: Int
  /// Exam items.
  public var items: Int

  /// The seed county of DOMAIN.md: 62 schools (28/19/15), 1,017 teachers, 13,047 students.
  public static let full = DemoSize(
    teachingPoints: 28, rural: 19, urban: 15, teachers: 1017, students: 13047, items: 20)
  /// A small county for tests: 6 schools, 30 teachers, 240 students.
  public static let small = DemoSize(
    teachingPoints: 2, rural: 2, urban: 2, teachers: 30, students: 240, items: 20)
}

/// A deterministic demo county, as the CSV files `smartschool import` reads.
public struct DemoCounty: Sendable {
  /// File contents by kind (header included).
  public private(set) var files: [ImportKind: String] = [:]
  /// The county's org code, its term code, its exam code and the report year.
  public let countyCode = "K341523"
  /// The term of the lesson logs.
  public let termCode = "2025-2026-1"
  /// The county unified maths exam.
  public let examCode = "K341523-2025-1-MATH7"
  /// The joint exam (联考) session the maths paper belongs to.
  public let sessionCode = "K341523-2025-1-G7"
  /// The same cohort's earlier maths exam (期中), for progress between exams (进退步).
  public let midtermExamCode = "K341523-2025-1-MATH7-MID"
  /// A student of the demo county (every size has one).
  public let studentCode = "S0000001"
  /// The year of facility reports and training.
  public let year = 2025
  /// Counts of what was generated, by name (schools, teachers, students, …).
  public private(set) var counts: [String: Int] = [:]
  /// Files the CSV files refer to (each resource's content), by path relative to them.
  public private(set) var attachments: [String: String] = [:]
  /// The county's first urban school (every size has one).
  public var schoolCode: String { "S\(countyCode)U01" }

  /// The report commands the demo's closing message suggests, with this county's codes, and
  /// the service each needs.
  public var exampleCommands: [(service: SmartSchoolService, arguments: [String])] {
    let term = termCode
    return [
      (.supervision, ["report", "compliance", "--org", countyCode, "--term", term]),
      (.supervision, ["report", "notice", "--org", countyCode, "--week", "2025-09-08"]),
      (
        .supervision,
        ["report", "ranking", "--org", countyCode, "--period", "month", "--date", "2025-09-01"]
      ),
      (.supervision, ["report", "warnings", "--org", countyCode, "--term", term]),
      (
        .supervision,
        ["report", "trends", "--org", countyCode, "--from-term", term, "--to-term", term]
      ),
      (.supervision, ["report", "teachers", "--org", schoolCode, "--term", term]),
      (.supervision, ["report", "inspections", "--org", countyCode, "--year", "\(year)"]),
      (.assessment, ["report", "exam", "--exam", examCode, "--org", countyCode]),
      (.assessment, ["report", "items", "--exam", examCode]),
      (.assessment, ["report", "options", "--exam", examCode, "--scope", countyCode]),
      (.assessment, ["report", "student", "--exam", examCode, "--student", studentCode]),
      (
        .assessment,
        ["report", "progress", "--earlier", midtermExamCode, "--later", examCode, "--org", countyCode]
      ),
      (.assessment, ["report", "session", "--exam-session", sessionCode, "--org", countyCode]),
    ]
  }

  static let surnames = Array(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程魏苏吕丁任"
      + "沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
  ).map(String.init)
  static let given = Array("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红梅鑫宇浩然子轩欣怡梓涵一诺思远佳琪雨泽俊杰晨曦嘉怡博文").map(
    String.init)
  static let knowledgePoints = [
    "M-J-RATIONAL", "M-J-ALGEBRA-EXPR", "M-J-LINEAR-EQ", "M-J-ANGLES", "M-J-PARALLEL",
    "M-J-INEQUALITY", "M-J-STATISTICS", "M-J-COORDINATES",
  ]

  /// Generates the county from `seed`.
  public init(seed: UInt64 = 20_251_123, size: DemoSize = .full) {
    var rng = SeededGenerator(seed: seed)
    func name() -> String {
      rng.pick(Self.surnames) + rng.pick(Self.given) + (rng.chance(0.5) ? rng.pick(Self.given) : "")
    }

    // Orgs.
    var orgs = csvLine(ImportKind.orgs.headers)
    orgs += csvLine(["P34", "安徽省", "province", "", "", "", "", ""])
    orgs += csvLine(["C3415", "六安市", "city", "", "P34", "", "", ""])
    orgs += csvLine([countyCode, "舒城县", "county", "", "C3415", "", "", ""])
    struct School {
      var code: String, kind: String, grades: ClosedRange<Int>, students = 0, teachers = 0
      var classes: [(code: String, grade: Int, size: Int)] = []
      var teacherIDs: [String] = []
      var quality = 1.0
    }
    var schools: [School] = []
    for i in 1...size.urban {
      schools.append(
        School(
          code: "S\(countyCode)U" + pad(i, 2), kind: "urban",
          grades: i % 2 == 0 ? 1...6 : 7...9))
    }
    for i in 1...size.rural {
      schools.append(
        School(
          code: "S\(countyCode)R" + pad(i, 2), kind: "rural",
          grades: i % 3 == 0 ? 7...9 : 1...6))
    }
    for i in 1...size.teachingPoints {
      schools.append(
        School(
          code: "S\(countyCode)T" + pad(i, 2), kind: "teaching_point",
          grades: 1...4))
    }
    // Students: teaching points are small, rural schools middling, urban schools take the rest.
    let perPoint = max(8, size.students / 700)
    let perRural = max(20, size.students / 60)
    for i in schools.indices where schools[i].kind == "teaching_point" {
      schools[i].students = perPoint + rng.int(0...perPoint)
    }
    for i in schools.indices where schools[i].kind == "rural" {
      schools[i].students = perRural + rng.int(0...(perRural / 2))
    }
    let assigned = schools.reduce(0) { $0 + $1.students }
    let urbanIndexes = schools.indices.filter { schools[$0].kind == "urban" }
    let rest = size.students - assigned
    for (n, i) in urbanIndexes.enumerated() {
      schools[i].students = rest / urbanIndexes.count + (n < rest % urbanIndexes.count ? 1 : 0)
    }
    // Teachers: one per ~13 students, at least 2.
    var teacherTotal = 0
    for i in schools.indices {
      schools[i].teachers = max(2, schools[i].students * size.teachers / size.students)
      teacherTotal += schools[i].teachers
    }
    var k = 0
    while teacherTotal != size.teachers {
      let i = urbanIndexes[k % urbanIndexes.count]
      if teacherTotal < size.teachers {
        schools[i].teachers += 1
        teacherTotal += 1
      } else if schools[i].teachers > 2 {
        schools[i].teachers -= 1
        teacherTotal -= 1
      }
      k += 1
    }
    let ruralCodes = schools.filter { $0.kind == "rural" }.map(\.code)
    var classCount = 0
    let kindNames = ["urban": "城镇", "rural": "乡村", "teaching_point": "教学点"]
    for (n, school) in schools.enumerated() {
      let managing = school.kind == "teaching_point" ? ruralCodes[n % ruralCodes.count] : ""
      orgs += csvLine([
        school.code, "舒城县\(kindNames[school.kind]!)学校\(n + 1)号", "school", school.kind,
        countyCode, managing, "", "",
      ])
      // Classes: students spread over the grades, at most 45 a class.
      let grades = Array(school.grades)
      for (g, grade) in grades.enumerated() {
        let inGrade = school.students / grades.count + (g < school.students % grades.count ? 1 : 0)
        guard inGrade > 0 else { continue }
        let classes = (inGrade + 44) / 45
        for c in 0..<classes {
          let classSize = inGrade / classes + (c < inGrade % classes ? 1 : 0)
          let code = "\(school.code)-G\(grade)-\(c + 1)"
          schools[n].classes.append((code, grade, classSize))
          orgs += csvLine([
            code, "\(grade)年级\(c + 1)班", "class", "", school.code, "", "\(grade)", "2025-2026",
          ])
          classCount += 1
        }
      }
    }
    files[.orgs] = orgs

    // People.
    var users = csvLine(ImportKind.users.headers)
    var guardians = csvLine(ImportKind.guardians.headers)
    var teacherNo = 0
    var studentNo = 0
    struct Pupil { var id: String, classCode: String, school: String, ability: Double }
    var pupils: [Pupil] = []
    for n in schools.indices {
      schools[n].quality = schools[n].kind == "urban" ? 0.9 : schools[n].kind == "rural" ? 0.7 : 0.5
      schools[n].quality += rng.unit() * 0.4 - 0.2
      for _ in 0..<schools[n].teachers {
        teacherNo += 1
        let id = "T" + pad(teacherNo, 6)
        schools[n].teacherIDs.append(id)
        users += csvLine([
          id, "t" + id.dropFirst(), name(), "teacher", schools[n].code, "\(rng.int(1965...2000))",
        ])
      }
      for cls in schools[n].classes {
        for _ in 0..<cls.size {
          studentNo += 1
          let id = "S" + pad(studentNo, 7)
          let parent = "P" + pad(studentNo, 7)
          let family = rng.pick(Self.surnames)
          users += csvLine([
            id, "s" + id.dropFirst(), family + rng.pick(Self.given) + rng.pick(Self.given),
            "student", cls.code, "",
          ])
          users += csvLine([
            parent, "p" + parent.dropFirst(), family + rng.pick(Self.given), "parent",
            schools[n].code, "",
          ])
          guardians += csvLine([parent, id])
          pupils.append(
            Pupil(
              id: id, classCode: cls.code, school: schools[n].code,
              ability: min(0.98, max(0.05, schools[n].quality - 0.1 + rng.unit() * 0.5 - 0.25))))
        }
      }
    }
    files[.users] = users
    files[.guardians] = guardians

    // Term, smart classrooms and a term of lessons of varied quality.
    let start = CalendarDate(year: 2025, month: 9, day: 1)!
    let end = CalendarDate(year: 2026, month: 1, day: 16)!
    let holiday = CalendarDate(year: 2025, month: 9, day: 29)!
    files[.terms] =
      csvLine(ImportKind.terms.headers)
      + csvLine([
        termCode, "2025-2026学年第一学期", start.description, end.description, holiday.description,
      ])
    var rooms = csvLine(ImportKind.classrooms.headers)
    var lessons = csvLine(ImportKind.lessons.headers)
    var roomsBySchool: [String: [String]] = [:]
    let subjects: [Smartschool_Common_V1_Subject] = [
      .chinese, .mathematics, .english, .science, .music, .fineArts, .moralityAndLaw,
    ]
    var lessonCount = 0
    for school in schools {
      let count =
        school.kind == "urban" ? 4 : school.kind == "rural" ? 2 : (rng.chance(0.85) ? 1 : 0)
      // Below-standard schools: roughly one in four.
      let poor = rng.chance(0.25)
      for r in 0..<count {
        let code = "\(school.code)-ZH\(r + 1)"
        roomsBySchool[school.code, default: []].append(code)
        rooms += csvLine([code, school.code, "", "2025-08-20", ""])
        var week = start
        while week <= end {
          defer { week = week.adding(days: 7) }
          if week == holiday { continue }
          let perWeek = poor ? rng.int(1...4) : rng.int(5...10)
          let pool = poor ? Array(subjects.prefix(2)) : subjects
          var used: Set<Int> = []
          for _ in 0..<perWeek {
            let day = rng.int(0...4)
            let period = rng.int(1...8)
            guard used.insert(day * 10 + period).inserted else { continue }
            lessons += csvLine([
              code, rng.pick(school.teacherIDs), rng.pick(pool).englishName,
              week.adding(days: day).description, "\(period)", rng.chance(0.7) ? "40" : "45",
            ])
            lessonCount += 1
          }
        }
      }
    }
    files[.classrooms] = rooms
    files[.lessons] = lessons

    // Facilities, training, inspections.
    var facilities = csvLine(ImportKind.facilities.headers)
    var training = csvLine(ImportKind.training.headers)
    var inspections = csvLine(ImportKind.inspections.headers)
    let courses = ["信息技术应用能力提升工程2.0", "智慧课堂教学实践", "人工智能助推教师队伍建设", "教育数据素养", "在线教学平台应用"]
    var trainingCount = 0
    for school in schools {
      let urban = school.kind == "urban"
      let rural = school.kind == "rural"
      facilities += csvLine([
        school.code, "\(year)",
        (urban ? rng.chance(0.85) : rural ? rng.chance(0.45) : false) ? "是" : "否",
        "\(roomsBySchool[school.code]?.count ?? 0)",
        "\(urban ? rng.int(15...30) : rural ? rng.int(5...12) : 1)",
        "\(school.students / rng.int(5...12) + 1)", "\(school.teachers - rng.int(0...1))",
        "\(school.students)", "\(school.teachers)",
        "\(rng.pick(urban ? [200, 500, 1000] : [50, 100, 200]))",
        rng.chance(urban ? 0.95 : 0.6) ? "1" : "0",
        rng.chance(urban ? 0.9 : 0.5) ? "true" : "false",
      ])
      for teacher in school.teacherIDs {
        for _ in 0..<rng.int(1...4) {
          let date = CalendarDate(year: year, month: rng.int(3...12), day: rng.int(1...28))!
          training += csvLine([
            teacher, rng.pick(courses), "\(Double(rng.int(12...60)) / 2)", date.description,
          ])
          trainingCount += 1
        }
      }
      if rng.chance(0.8) {
        let date = CalendarDate(year: year, month: rng.int(10...12), day: rng.int(1...28))!
        inspections += csvLine([
          school.code, "督学" + rng.pick(Self.surnames) + "老师", date.description,
          roomsBySchool[school.code]?.first ?? "", "", "mathematics", "推门听课：智慧课堂常态化应用情况",
          rng.pick(["优", "良", "中", "差"]),
        ])
      }
    }
    files[.facilities] = facilities
    files[.training] = training
    files[.inspections] = inspections

    // Curriculum (人教版 primary and junior maths) and resources with teaching cases.
    var curriculum = csvLine(ImportKind.curriculum.headers)
    var resources = csvLine(ImportKind.resources.headers)
    let volumeNames = ["上册", "下册"]
    let chapterTitles = [
      "有理数", "整式的加减", "一元一次方程", "几何图形初步", "相交线与平行线", "实数", "平面直角坐标系", "不等式与不等式组", "数据的收集、整理与描述",
      "三角形", "全等三角形", "轴对称",
    ]
    var chapters = 0
    var resourceCount = 0
    let types = [
      "courseware", "micro_lesson", "lesson_plan", "exercise_set", "teaching_case",
      "resource_package", "award_winning_lesson",
    ]
    for (stage, grades, edition) in [("primary", 1...6, "人教版小学数学"), ("junior", 7...9, "人教版初中数学")] {
      for grade in grades {
        for (v, volume) in volumeNames.enumerated() {
          for c in 1...6 {
            let code = "RJ-M-\(grade)\(v == 0 ? "A" : "B")-\(pad(c, 2))"
            let title = "第\(c)章 " + chapterTitles[(grade * 2 + v + c) % chapterTitles.count]
            curriculum += csvLine([
              edition, "\(grade)年级\(volume)", code, title, stage, "\(grade)", "数学",
            ])
            chapters += 1
            let points =
              stage == "junior" && grade == 7
              ? [Self.knowledgePoints[(v * 6 + c - 1) % Self.knowledgePoints.count]] : []
            // About two thirds of the chapters get a teaching case; every chapter a courseware.
            var kinds = ["courseware"]
            if rng.chance(0.66) { kinds.append("teaching_case") }
            if rng.chance(0.4) { kinds.append(rng.pick(types)) }
            for (n, type) in kinds.enumerated() {
              let owner = rng.chance(0.5) ? countyCode : rng.pick(schools).code
              let name =
                "\(title)（\(grade)年级\(volume)）"
                + "\(type == "teaching_case" ? "智慧课堂教学案例" : "资源")\(n + 1)"
              let topic = chapterTitles[(grade + c) % chapterTitles.count]
              // Only a resource with content is reviewed: each gets a short lesson document.
              let file = "resources/\(code)-\(n + 1).md"
              attachments[file] =
                "# \(name)\n\n- 教材：\(edition) \(grade)年级\(volume)，\(title)（\(code)）\n"
                + "- 类型：\(type)\n- 主题：\(topic)\n- 制作：舒城县集体备课组\n\n"
                + "## 教学目标\n\n理解\(topic)的基本概念，能运用所学解决问题。\n\n"
                + "## 教学过程\n\n1. 情境导入\n2. 新知探究\n3. 练习巩固\n4. 课堂小结\n"
              resources += csvLine([
                name, "舒城县集体备课资源", "\(topic);数学", type, stage, "\(grade)", "mathematics",
                code, points.joined(separator: ";"), owner, "county", file,
              ])
              resourceCount += 1
            }
          }
        }
      }
    }
    files[.curriculum] = curriculum
    files[.resources] = resources

    // The county unified maths exam, its items and every student's item scores.
    files[.exams] =
      csvLine(ImportKind.exams.headers + ["session_code"])
      + csvLine([
        examCode, "舒城县2025-2026学年第一学期七年级数学统一检测", "2025-2026", "1", "数学", "初中", "7", countyCode,
        "100", sessionCode,
      ])
      + csvLine([
        midtermExamCode, "舒城县2025-2026学年第一学期七年级数学期中检测", "2025-2026", "1", "数学", "初中", "7",
        countyCode, "100", "",
      ])
    // Objective items are four-option choice items: the options, the key, and each student's
    // choice (the key when scored, another option or none when not) feed the option analysis.
    let optionLabels = ["A", "B", "C", "D"]
    func key(_ item: Int) -> String { optionLabels[(item * 7 + 1) % optionLabels.count] }
    var items = csvLine(ImportKind.items.headers + ["options", "answer_key"])
    var maxima: [Double] = []
    let objectiveCount = size.items * 3 / 5
    for i in 1...size.items {
      let objective = i <= objectiveCount
      let maxScore =
        objective
        ? 3.0 : (100.0 - 3.0 * Double(objectiveCount)) / Double(size.items - objectiveCount)
      maxima.append(maxScore)
      let points =
        [Self.knowledgePoints[(i - 1) % Self.knowledgePoints.count]]
        + (i % 3 == 0 ? [Self.knowledgePoints[(i + 2) % Self.knowledgePoints.count]] : [])
      items += csvLine([
        examCode, "\(i)", decimal2(maxScore), objective ? "objective" : "subjective",
        points.joined(separator: ";"), objective ? optionLabels.joined(separator: ";") : "",
        objective ? key(i) : "",
      ])
    }
    var scores = csvLine(ImportKind.scores.headers + ["chosen_option"])
    let difficulty = (0..<size.items).map { _ in rng.unit() * 0.5 - 0.25 }
    // Choices and the midterm draw from their own generator, so that the term exam's scores are
    // those of a given seed whatever else the demo adds.
    var extra = SeededGenerator(seed: seed ^ 0x6D69_6474_6572_6D00)
    func choice(item: Int, scored: Bool) -> String {
      if scored { return key(item) }
      if extra.chance(0.08) { return "" }
      // A common wrong answer (the distractor) draws most of the wrong choices.
      let wrong = optionLabels.filter { $0 != key(item) }
      return extra.chance(0.6) ? wrong[item % wrong.count] : extra.pick(wrong)
    }
    for pupil in pupils {
      for i in 0..<size.items {
        let p = min(0.99, max(0.01, pupil.ability - difficulty[i]))
        let score: Double =
          i < objectiveCount
          ? (rng.chance(p) ? maxima[i] : 0)
          : (min(maxima[i], max(0, (p + rng.unit() * 0.3 - 0.15) * maxima[i])) * 2).rounded() / 2
        scores += csvLine([
          examCode, pupil.id, pupil.classCode, pupil.school, "\(i + 1)",
          score == score.rounded() ? "\(Int(score))" : "\(score)",
          i < objectiveCount ? choice(item: i + 1, scored: score > 0) : "",
        ])
      }
    }

    // The midterm: 10 items, each student's ability a little lower and noisier than at term end.
    let midtermItems = 10
    for i in 1...midtermItems {
      items += csvLine([
        midtermExamCode, "\(i)", i <= 6 ? "5" : "17.5", i <= 6 ? "objective" : "subjective",
        Self.knowledgePoints[(i - 1) % Self.knowledgePoints.count], "", "",
      ])
    }
    for pupil in pupils {
      let ability = pupil.ability - 0.05 + extra.unit() * 0.2 - 0.1
      for i in 1...midtermItems {
        let p = min(0.99, max(0.01, ability))
        let score: Double =
          i <= 6
          ? (extra.chance(p) ? 5 : 0)
          : (min(17.5, max(0, (p + extra.unit() * 0.3 - 0.15) * 17.5)) * 2).rounded() / 2
        scores += csvLine([
          midtermExamCode, pupil.id, pupil.classCode, pupil.school, "\(i)",
          score == score.rounded() ? "\(Int(score))" : "\(score)", "",
        ])
      }
    }
    files[.items] = items
    files[.scores] = scores

    counts = [
      "schools": schools.count,
      "teaching_points": schools.filter { $0.kind == "teaching_point" }.count,
      "rural": schools.filter { $0.kind == "rural" }.count,
      "urban": schools.filter { $0.kind == "urban" }.count,
      "classes": classCount, "teachers": teacherNo, "students": studentNo, "parents": studentNo,
      "classrooms": roomsBySchool.values.reduce(0) { $0 + $1.count }, "lessons": lessonCount,
      "training": trainingCount, "chapters": chapters, "resources": resourceCount,
      "items": size.items, "scores": pupils.count * size.items,
      "midterm_scores": pupils.count * midtermItems,
    ]
  }

  /// Writes `<kind>.csv` for every kind, and the attachments beside them, into `directory`;
  /// returns the paths by kind.
  @discardableResult
  public func write(to directory: String) throws -> [ImportKind: String] {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    var paths: [ImportKind: String] = [:]
    for (kind, text) in files {
      let path = (directory as NSString).appendingPathComponent("\(kind.rawValue).csv")
      try Data(text.utf8).write(to: URL(fileURLWithPath: path))
      paths[kind] = path
    }
    for (relative, text) in attachments {
      let path = (directory as NSString).appendingPathComponent(relative)
      try FileManager.default.createDirectory(
        atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
      try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }
    return paths
  }
}

/// `n` in decimal, zero-padded to `width` digits.
func pad(_ n: Int, _ width: Int) -> String {
  let digits = String(n)
  return String(repeating: "0", count: max(0, width - digits.count)) + digits
}
