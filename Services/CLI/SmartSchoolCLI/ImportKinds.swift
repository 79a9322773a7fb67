import Foundation
import SmartSchoolModel

/// The kinds of CSV file `smartschool import` takes, with their exact headers.
public enum ImportKind: String, CaseIterable, Sendable {
  case orgs, users, guardians, terms, classrooms, lessons, facilities, training, inspections
  case exams, items, scores, curriculum, resources

  /// The header, exactly.
  public var headers: [String] {
    switch self {
    case .orgs:
      [
        "code", "name", "kind", "school_kind", "parent_code", "managing_school_code", "grade",
        "school_year",
      ]
    case .users: ["external_id", "username", "display_name", "kind", "org_code", "birth_year"]
    case .guardians: ["parent_external_id", "student_external_id"]
    case .terms: ["code", "name", "start_date", "end_date", "excluded_weeks"]
    case .classrooms: ["code", "school_code", "class_code", "equipped_on", "retired_on"]
    case .lessons:
      ["classroom_code", "teacher_external_id", "subject", "date", "period", "duration_minutes"]
    case .facilities:
      [
        "school_code", "year", "smart_school_built", "smart_classrooms", "multimedia_classrooms",
        "student_computers", "teacher_computers", "students", "teachers", "bandwidth_mbps",
        "campus_network", "wireless",
      ]
    case .training: ["teacher_external_id", "course", "hours", "date"]
    case .inspections:
      [
        "school_code", "inspector", "date", "classroom_code", "teacher_external_id", "subject",
        "findings", "rating",
      ]
    case .exams:
      [
        "code", "name", "school_year", "term", "subject", "stage", "grade", "org_code",
        "full_marks",
      ]
    case .items: ["exam_code", "item_no", "max_score", "kind", "knowledge_points"]
    case .scores:
      ["exam_code", "student_external_id", "class_code", "school_code", "item_no", "score"]
    case .curriculum:
      ["edition", "volume", "chapter_code", "chapter_title", "stage", "grade", "subject"]
    case .resources:
      [
        "title", "description", "keywords", "type", "stage", "grade", "subject", "chapter_code",
        "knowledge_points", "owner_org_code", "scope", "file",
      ]
    }
  }

  /// Columns a file may add to the header: an exam's session and cut lines, an objective
  /// item's options (A;B;C;D) and answer key, a score row's attendance (缺考/免考, item_no 0)
  /// and the option the student chose.
  public var optionalHeaders: [String] {
    switch self {
    case .exams: ["session_code", "pass_line", "good_line", "excellent_line", "low_line"]
    case .items: ["options", "answer_key"]
    case .scores: ["attendance", "reason_not_tested", "chosen_option"]
    default: []
    }
  }

  /// The order in which the demo loads the kinds (parents before what refers to them).
  public static let loadOrder: [ImportKind] = [
    .orgs, .users, .guardians, .terms, .classrooms, .lessons, .facilities, .training,
    .inspections, .curriculum, .resources, .exams, .items, .scores,
  ]
}

/// Picks a value from a table of accepted spellings (case-insensitive).
func choice<T>(_ row: CSVRow, _ name: String, _ table: [String: T]) throws(RowProblem) -> T {
  let value = row.text(name)
  if let hit = table[value.lowercased()] ?? table[value] { return hit }
  let names = table.keys.filter { $0.allSatisfy(\.isASCII) }.sorted().joined(separator: ", ")
  throw RowProblem(name, "unknown value \"\(value)\" (one of \(names))")
}

/// Row → message conversions, one per kind; pure, so they are unit-tested without servers.
public enum RowConversion {
  static let userKinds: [String: Smartschool_Identity_V1_UserKind] = [
    "teacher": .teacher, "教师": .teacher, "student": .student, "学生": .student,
    "parent": .parent, "家长": .parent, "staff": .staff, "教职工": .staff, "工作人员": .staff,
  ]
  static let itemKinds: [String: Bool] = [
    "objective": true, "客观题": true, "subjective": false, "主观题": false,
  ]
  static let resourceTypes: [String: Smartschool_Catalogue_V1_ResourceType] = [
    "courseware": .courseware, "课件": .courseware, "micro_lesson": .microLesson,
    "微课": .microLesson, "lesson_plan": .lessonPlan, "教案": .lessonPlan,
    "exercise_set": .exerciseSet, "习题": .exerciseSet, "teaching_case": .teachingCase,
    "智慧课堂教学案例": .teachingCase, "教学案例": .teachingCase,
    "resource_package": .resourcePackage, "资源包": .resourcePackage,
    "award_winning_lesson": .awardWinningLesson, "优课": .awardWinningLesson,
  ]
  static let scopes: [String: Smartschool_Catalogue_V1_SharingScope] = [
    "school": .school, "本校": .school, "county": .county, "本县": .county, "本县/区": .county,
    "city": .city, "本市": .city, "province": .province, "全省": .province,
  ]
  static let ratings: [String: Smartschool_Supervision_V1_InspectionRating] = [
    "excellent": .excellent, "优": .excellent, "good": .good, "良": .good, "fair": .fair,
    "中": .fair, "poor": .poor, "差": .poor,
  ]

  /// An `orgs` row.
  public static func org(_ r: CSVRow) throws(RowProblem) -> Smartschool_Identity_V1_Org {
    let kind = try r.vocabulary("kind", Smartschool_Common_V1_OrgKind.self)
    let schoolKind = try r.vocabulary(
      "school_kind", Smartschool_Common_V1_SchoolKind.self, optional: true, empty: .unspecified)
    let grade = try r.int("grade", 1...12, optional: true)
    var org = Smartschool_Identity_V1_Org()
    org.code = try r.required("code")
    org.name = try r.required("name")
    org.kind = kind
    org.schoolKind = schoolKind
    org.parentCode = r.text("parent_code")
    org.managingSchoolCode = r.text("managing_school_code")
    org.grade = Int32(grade)
    org.schoolYear = r.text("school_year")
    if kind == .school {
      org.stages = stagesFor(schoolKind)
    }
    return org
  }

  /// Stages a school of a kind teaches when the file does not say.
  static func stagesFor(_ kind: Smartschool_Common_V1_SchoolKind) -> [Smartschool_Common_V1_Stage] {
    kind == .teachingPoint ? [.primary] : [.primary, .junior]
  }

  /// A `users` row.
  public static func user(_ r: CSVRow) throws(RowProblem) -> Smartschool_Identity_V1_User {
    var user = Smartschool_Identity_V1_User()
    user.externalID = try r.required("external_id")
    user.username = try r.required("username")
    user.displayName = try r.required("display_name")
    user.kind = try choice(r, "kind", userKinds)
    user.orgCode = try r.required("org_code")
    user.birthYear = Int32(try r.int("birth_year", 1900...2100, optional: true))
    return user
  }

  /// A `guardians` row.
  public static func guardian(_ r: CSVRow) throws(RowProblem)
    -> Smartschool_Identity_V1_ImportGuardiansRequest
  {
    var link = Smartschool_Identity_V1_ImportGuardiansRequest()
    link.parentExternalID = try r.required("parent_external_id")
    link.studentExternalID = try r.required("student_external_id")
    return link
  }

  /// A `terms` row.
  public static func term(_ r: CSVRow) throws(RowProblem) -> Smartschool_Supervision_V1_Term {
    var term = Smartschool_Supervision_V1_Term()
    term.code = try r.required("code")
    term.name = try r.required("name")
    term.startDate = try r.date("start_date")!.description
    term.endDate = try r.date("end_date")!.description
    for week in r.list("excluded_weeks") {
      guard let date = CalendarDate(week) else {
        throw RowProblem("excluded_weeks", "\"\(week)\" is not a date YYYY-MM-DD")
      }
      term.excludedWeeks.append(date.description)
    }
    return term
  }

  /// A `classrooms` row (named by its code).
  public static func classroom(_ r: CSVRow) throws(RowProblem)
    -> Smartschool_Supervision_V1_Classroom
  {
    var room = Smartschool_Supervision_V1_Classroom()
    room.code = try r.required("code")
    room.name = room.code
    room.schoolCode = try r.required("school_code")
    room.classCode = r.text("class_code")
    room.equippedDate = try r.date("equipped_on")!.description
    room.retiredDate = try r.date("retired_on", optional: true)?.description ?? ""
    return room
  }

  /// A `lessons` row (source: the platform's log).
  public static func lesson(_ r: CSVRow) throws(RowProblem) -> Smartschool_Supervision_V1_Lesson {
    var lesson = Smartschool_Supervision_V1_Lesson()
    lesson.classroomCode = try r.required("classroom_code")
    lesson.teacherExternalID = try r.required("teacher_external_id")
    lesson.subject = try r.vocabulary("subject", Smartschool_Common_V1_Subject.self)
    lesson.date = try r.date("date")!.description
    lesson.period = Int32(try r.int("period", 1...20))
    lesson.durationMinutes = Int32(try r.int("duration_minutes", 1...240))
    lesson.source = .platform
    return lesson
  }

  /// A `facilities` row.
  public static func facility(_ r: CSVRow) throws(RowProblem)
    -> Smartschool_Supervision_V1_FacilityReport
  {
    var report = Smartschool_Supervision_V1_FacilityReport()
    report.schoolCode = try r.required("school_code")
    report.year = Int32(try r.int("year", 2000...2100))
    report.standardMet = try r.bool("smart_school_built")
    report.smartClassroomPresent = try r.int("smart_classrooms", 0...100_000) > 0
    report.multimediaClassrooms = Int32(try r.int("multimedia_classrooms", 0...100_000))
    report.studentComputers = Int32(try r.int("student_computers", 0...1_000_000))
    report.teacherComputers = Int32(try r.int("teacher_computers", 0...1_000_000))
    report.students = Int32(try r.int("students", 0...1_000_000))
    report.teachers = Int32(try r.int("teachers", 0...1_000_000))
    report.broadbandMbps = Int32(try r.int("bandwidth_mbps", 0...1_000_000))
    report.campusNetwork = try r.bool("campus_network")
    report.wirelessCoverage = try r.bool("wireless")
    return report
  }

  /// A `training` row.
  public static func training(_ r: CSVRow) throws(RowProblem)
    -> Smartschool_Supervision_V1_TrainingRecord
  {
    var record = Smartschool_Supervision_V1_TrainingRecord()
    record.teacherExternalID = try r.required("teacher_external_id")
    record.course = try r.required("course")
    record.hours = try r.decimal("hours")
    record.completedDate = try r.date("date")!.description
    return record
  }

  /// An `inspections` row.
  public static func inspection(_ r: CSVRow) throws(RowProblem)
    -> Smartschool_Supervision_V1_Inspection
  {
    var inspection = Smartschool_Supervision_V1_Inspection()
    inspection.schoolCode = try r.required("school_code")
    inspection.inspector = try r.required("inspector")
    inspection.date = try r.date("date")!.description
    inspection.classroomCode = r.text("classroom_code")
    inspection.teacherExternalID = r.text("teacher_external_id")
    inspection.subject = try r.vocabulary(
      "subject", Smartschool_Common_V1_Subject.self, optional: true, empty: .unspecified)
    inspection.findings = try r.required("findings")
    inspection.rating = try choice(r, "rating", ratings)
    return inspection
  }

  /// An `exams` row (items come from the `items` file).
  public static func exam(_ r: CSVRow) throws(RowProblem) -> Smartschool_Assessment_V1_Exam {
    var exam = Smartschool_Assessment_V1_Exam()
    exam.code = try r.required("code")
    exam.name = try r.required("name")
    exam.schoolYear = try r.required("school_year")
    exam.term = Int32(try r.int("term", 1...2))
    exam.subject = try r.vocabulary("subject", Smartschool_Common_V1_Subject.self)
    exam.stage = try r.vocabulary("stage", Smartschool_Common_V1_Stage.self)
    exam.grade = Int32(try r.int("grade", 1...12))
    exam.orgCode = try r.required("org_code")
    exam.fullMarks = try r.decimal("full_marks")
    exam.sessionCode = r.text("session_code")
    // A line: "60%" of full marks, a score "72", or "top 20%" of the scope; empty: default.
    func line(_ column: String, _ fraction: (inout Smartschool_Assessment_V1_Exam, Double) -> Void)
      throws(RowProblem) -> Smartschool_Assessment_V1_CutLine?
    {
      let text = r.text(column).replacingOccurrences(of: " ", with: "").lowercased()
      if text.isEmpty { return nil }
      let share = text.hasPrefix("top")
      let body = share ? String(text.dropFirst(3)) : text
      if body.hasSuffix("%"), let p = Double(body.dropLast()), p.isFinite, p > 0, p <= 100 {
        if share { return .with { $0.topShare = p / 100 } }
        fraction(&exam, p / 100)
        return nil
      }
      if !share, let score = Double(body), score.isFinite, score > 0 {
        return .with { $0.score = score }
      }
      throw RowProblem(column, "\"\(r.text(column))\" is not a line: 60%, 72 or top 20%")
    }
    if let l = try line("pass_line", { $0.passFraction = $1 }) { exam.cutLines.pass = l }
    if let l = try line("good_line", { $0.goodFraction = $1 }) { exam.cutLines.good = l }
    if let l = try line("excellent_line", { $0.excellentFraction = $1 }) {
      exam.cutLines.excellent = l
    }
    if let l = try line("low_line", { $0.lowFraction = $1 }) { exam.cutLines.low = l }
    return exam
  }

  /// An `items` row: the exam code and the item.
  public static func item(_ r: CSVRow) throws(RowProblem) -> (
    exam: String, item: Smartschool_Assessment_V1_ExamItem
  ) {
    var item = Smartschool_Assessment_V1_ExamItem()
    let exam = try r.required("exam_code")
    item.number = Int32(try r.int("item_no", 1...1000))
    item.maxScore = try r.decimal("max_score")
    if item.maxScore <= 0 { throw RowProblem("max_score", "must be above 0") }
    item.objective = try choice(r, "kind", itemKinds)
    item.knowledgePoints = r.list("knowledge_points")
    item.options = r.list("options")
    item.answerKey = r.text("answer_key")
    return (exam, item)
  }

  /// A `scores` row.
  public static func score(_ r: CSVRow) throws(RowProblem) -> Smartschool_Assessment_V1_ScoreRow {
    var row = Smartschool_Assessment_V1_ScoreRow()
    row.examCode = try r.required("exam_code")
    row.studentExternalID = try r.required("student_external_id")
    row.classCode = r.text("class_code")
    row.schoolCode = r.text("school_code")
    let marks: [String: Smartschool_Assessment_V1_Attendance] = [
      "": .unspecified, "sat": .sat, "实考": .sat, "absent": .absent, "缺考": .absent,
      "exempt": .exempt, "免考": .exempt,
    ]
    guard let attendance = marks[r.text("attendance").lowercased()] else {
      throw RowProblem("attendance", "must be sat, absent or exempt (实考, 缺考, 免考) or empty")
    }
    row.attendance = attendance
    row.reasonNotTested = r.text("reason_not_tested")
    // A mark names no item (0) and no score.
    row.itemNumber = Int32(try r.int("item_no", attendance == .unspecified ? 1...1000 : 0...0))
    row.score = attendance == .unspecified ? try r.decimal("score") : 0
    row.chosenOption = r.text("chosen_option")
    return row
  }

  /// A `curriculum` row: the edition, volume and chapter nodes it implies (parents first).
  /// Edition and volume codes are derived from their names, so re-imports hit the same nodes.
  public static func curriculum(_ r: CSVRow) throws(RowProblem)
    -> [Smartschool_Catalogue_V1_CurriculumNode]
  {
    let edition = try r.required("edition")
    let volume = try r.required("volume")
    let stage = try r.vocabulary("stage", Smartschool_Common_V1_Stage.self)
    let subject = try r.vocabulary("subject", Smartschool_Common_V1_Subject.self)
    let grade = try r.int("grade", 1...12)
    guard stage.grades.contains(grade) else {
      throw RowProblem("grade", "\(grade) is not a grade of \(stage.chineseName)")
    }
    let editionCode = "ED-" + stableHash(edition)
    let volumeCode = "VOL-" + stableHash(edition + "/" + volume)
    var editionNode = Smartschool_Catalogue_V1_CurriculumNode()
    editionNode.code = editionCode
    editionNode.kind = .edition
    editionNode.name = edition
    editionNode.stage = stage
    editionNode.subject = subject
    var volumeNode = Smartschool_Catalogue_V1_CurriculumNode()
    volumeNode.code = volumeCode
    volumeNode.parentCode = editionCode
    volumeNode.kind = .volume
    volumeNode.name = volume
    volumeNode.grade = Int32(grade)
    var chapter = Smartschool_Catalogue_V1_CurriculumNode()
    chapter.code = try r.required("chapter_code")
    chapter.parentCode = volumeCode
    chapter.kind = .chapter
    chapter.name = try r.required("chapter_title")
    return [editionNode, volumeNode, chapter]
  }

  /// A `resources` row; its external id is derived from owner, title, type and chapter, so a
  /// re-import finds the resource it created before.
  public static func resource(_ r: CSVRow) throws(RowProblem) -> Smartschool_Catalogue_V1_Resource {
    var resource = Smartschool_Catalogue_V1_Resource()
    resource.title = try r.required("title")
    resource.description_p = r.text("description")
    resource.keywords = r.list("keywords")
    resource.type = try choice(r, "type", resourceTypes)
    resource.stage = try r.vocabulary("stage", Smartschool_Common_V1_Stage.self)
    resource.grade = Int32(try r.int("grade", 1...12))
    resource.subject = try r.vocabulary("subject", Smartschool_Common_V1_Subject.self)
    resource.chapterCode = r.text("chapter_code")
    resource.knowledgePointCodes = r.list("knowledge_points")
    resource.ownerOrgCode = try r.required("owner_org_code")
    resource.sharingScope = try choice(r, "scope", scopes)
    resource.externalID =
      "csv-"
      + stableHash(
        [resource.ownerOrgCode, resource.title, "\(resource.type.rawValue)", resource.chapterCode]
          .joined(separator: "\u{1F}"))
    return resource
  }
}

/// 16 hex digits of the FNV-1a 64-bit hash of the UTF-8 bytes: a stable derived key.
public func stableHash(_ text: String) -> String {
  var hash: UInt64 = 0xcbf2_9ce4_8422_2325
  for byte in text.utf8 {
    hash ^= UInt64(byte)
    hash = hash &* 0x100_0000_01b3
  }
  let hex = String(hash, radix: 16)
  return String(repeating: "0", count: 16 - hex.count) + hex
}
