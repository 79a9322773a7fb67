import SmartSchoolModel

/// Teacher-level targets: smart-classroom lessons per term and training hours per year.
public enum TeacherRule {
  /// Lessons a teacher owes per term.
  public static let baseLessons = 2
  /// Lessons a teacher under 45 owes per term.
  public static let youngLessons = 4
  /// Training hours (信息化素养培训学时) a teacher owes per year.
  public static let trainingHours = 60

  /// Age at the term's start from a birth year alone: the age reached in the start's calendar
  /// year (identity keeps no birthday). `nil` when the birth year is unknown (0).
  public static func age(birthYear: Int, termStart: CalendarDate) -> Int? {
    birthYear > 0 ? termStart.components.year - birthYear : nil
  }

  /// Lessons owed: 4 when under 45 at the term's start, else 2 (also for an unknown age).
  public static func requiredLessons(birthYear: Int, termStart: CalendarDate) -> Int {
    guard let age = age(birthYear: birthYear, termStart: termStart) else { return baseLessons }
    return age < 45 ? youngLessons : baseLessons
  }

  /// True when half-hours `halves` reach the yearly 60 hours.
  public static func trainingMet(halfHours halves: Int) -> Bool { halves >= trainingHours * 2 }
}

/// A school's facility figures as coverage counts them.
public struct FacilityFacts: Hashable, Sendable {
  public var standardMet = false
  public var smartClassroomPresent = false
  public var multimediaClassrooms = 0
  public var studentComputers = 0
  public var teacherComputers = 0
  public var students = 0
  public var teachers = 0
  public var broadbandMbps = 0
  public var campusNetwork = false
  public var wirelessCoverage = false
  public var classrooms = 0

  public init() {}

  public init(_ r: Smartschool_Supervision_V1_FacilityReport) {
    standardMet = r.standardMet
    smartClassroomPresent = r.smartClassroomPresent
    multimediaClassrooms = Int(r.multimediaClassrooms)
    studentComputers = Int(r.studentComputers)
    teacherComputers = Int(r.teacherComputers)
    students = Int(r.students)
    teachers = Int(r.teachers)
    broadbandMbps = Int(r.broadbandMbps)
    campusNetwork = r.campusNetwork
    wirelessCoverage = r.wirelessCoverage
    classrooms = Int(r.classrooms)
  }
}

/// Construction coverage (建设覆盖率) and infrastructure indicators.
public enum Coverage {
  /// The broadband target in Mbps.
  public static let broadbandTarget = 200

  /// A school as coverage needs it.
  public struct School: Hashable, Sendable {
    public var code: String
    public var kind: Smartschool_Common_V1_SchoolKind
    public init(code: String, kind: Smartschool_Common_V1_SchoolKind) {
      self.code = code
      self.kind = kind
    }
  }

  /// Built means: a teaching point has a smart classroom; a rural or urban school meets the
  /// smart-school standard.
  public static func built(_ kind: Smartschool_Common_V1_SchoolKind, _ f: FacilityFacts) -> Bool {
    kind == .teachingPoint ? f.smartClassroomPresent : f.standardMet
  }

  /// What a kind's coverage measures, as the plans name it.
  public static func label(_ kind: Smartschool_Common_V1_SchoolKind) -> String {
    kind == .teachingPoint ? "教学点智慧课堂覆盖率" : kind.chineseName + "智慧学校覆盖率"
  }

  /// The coverage report of `schools` with the reports found for the year (by school code).
  public static func report(
    year: Int, schools: [School], reports: [String: FacilityFacts]
  ) -> Smartschool_Supervision_V1_CoverageReport {
    var out = Smartschool_Supervision_V1_CoverageReport()
    out.year = Int32(year)
    out.schools = Int64(schools.count)
    var students = 0
    var teachers = 0
    var studentPCs = 0
    var teacherPCs = 0
    for kind in Smartschool_Common_V1_SchoolKind.known {
      let ofKind = schools.filter { $0.kind == kind }
      let withReport = ofKind.compactMap { reports[$0.code] }
      let built = withReport.filter { Coverage.built(kind, $0) }.count
      let rate = Percent(numerator: built, denominator: ofKind.count)
      out.kinds.append(
        .with {
          $0.schoolKind = kind
          $0.schools = Int64(ofKind.count)
          $0.reported = Int64(withReport.count)
          $0.built = Int64(built)
          $0.coveragePercent = rate.value
          $0.coverageText = rate.description
          $0.label = label(kind)
        })
    }
    var broadband = 0
    var classrooms = 0
    var multimediaCounted = 0
    for s in schools {
      guard let f = reports[s.code] else { continue }
      out.reported += 1
      students += f.students
      teachers += f.teachers
      studentPCs += f.studentComputers
      teacherPCs += f.teacherComputers
      out.multimediaClassrooms += Int64(f.multimediaClassrooms)
      if f.broadbandMbps >= broadbandTarget { broadband += 1 }
      if f.campusNetwork { out.campusNetworkSchools += 1 }
      if f.wirelessCoverage { out.wirelessSchools += 1 }
      if f.classrooms > 0 {
        classrooms += f.classrooms
        multimediaCounted += f.multimediaClassrooms
      }
    }
    let multimedia = Percent(numerator: multimediaCounted, denominator: classrooms)
    out.classrooms = Int64(classrooms)
    out.multimediaCoveragePercent = multimedia.value
    out.multimediaCoverageText = classrooms > 0 ? multimedia.description : "n/a"
    out.students = Int64(students)
    out.teachers = Int64(teachers)
    out.studentComputers = Int64(studentPCs)
    out.teacherComputers = Int64(teacherPCs)
    out.studentsPerComputer = Ratio.text(students, per: studentPCs)
    out.teachersPerComputer = Ratio.text(teachers, per: teacherPCs)
    let share = Percent(numerator: broadband, denominator: schools.count)
    out.broadbandMet = Int64(broadband)
    out.broadbandSharePercent = share.value
    out.broadbandShareText = share.description
    return out
  }
}
