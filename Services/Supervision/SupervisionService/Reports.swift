import SmartSchoolModel

extension ComplianceTally {
  /// The figures message of this tally, labelled with an org or a week.
  public func figures(code: String = "", name: String = "", week: String = "")
    -> Smartschool_Supervision_V1_ComplianceFigures
  {
    let subjects = subjectRate
    let lessons = lessonRate
    let share = compliantShare
    return .with {
      $0.orgCode = code
      $0.orgName = name
      $0.week = week
      $0.classrooms = Int64(classrooms.count)
      $0.classroomWeeks = Int64(classroomWeeks)
      $0.subjectCount = Int64(subjectCount)
      $0.lessonCount = Int64(lessonCount)
      $0.compliantClassroomWeeks = Int64(compliantWeeks)
      $0.averageSubjects = averageSubjects
      $0.averageLessons = averageLessons
      $0.subjectRatePercent = subjects.value
      $0.lessonRatePercent = lessons.value
      $0.compliantSharePercent = share.value
      $0.subjectRateText = subjects.description
      $0.lessonRateText = lessons.description
      $0.compliantShareText = share.description
      $0.manualLessons = Int64(manualLessons)
      $0.manualSharePercent = manualShare.value
      $0.manualShareText = manualShare.description
    }
  }
}

/// Every usage indicator is split by school kind (教学点 / 乡村 / 城镇) beside the totals.
public enum KindSplit {
  /// The kinds reports list, in order: teaching point, rural, urban.
  public static var kinds: [Smartschool_Common_V1_SchoolKind] {
    Smartschool_Common_V1_SchoolKind.known
  }

  /// How many of `items` there are of each kind and how many of them are met.
  public static func shares(_ items: [(kind: Smartschool_Common_V1_SchoolKind, met: Bool)])
    -> [Smartschool_Supervision_V1_KindShare]
  {
    kinds.map { kind in
      let ofKind = items.filter { $0.kind == kind }
      let met = ofKind.filter(\.met).count
      let share = Percent(numerator: met, denominator: ofKind.count)
      return .with {
        $0.schoolKind = kind
        $0.label = kind.chineseName
        $0.total = Int64(ofKind.count)
        $0.met = Int64(met)
        $0.sharePercent = share.value
        $0.shareText = share.description
      }
    }
  }

  /// One figures row per kind from tallies keyed by kind.
  public static func figures(_ tallies: [Smartschool_Common_V1_SchoolKind: ComplianceTally])
    -> [Smartschool_Supervision_V1_ComplianceFigures]
  {
    kinds.map { kind in
      var f = (tallies[kind] ?? ComplianceTally()).figures(name: kind.chineseName)
      f.schoolKind = kind
      return f
    }
  }
}

/// The weekly notice (每周通报) of a scope's schools.
public enum WeeklyNoticeBuilder {
  /// A school of the scope.
  public struct School: Sendable {
    public var code: String
    public var name: String
    public var kind: Smartschool_Common_V1_SchoolKind
    public init(
      code: String, name: String, kind: Smartschool_Common_V1_SchoolKind = .unspecified
    ) {
      self.code = code
      self.name = name
      self.kind = kind
    }
  }

  private struct Week {
    var classrooms = 0
    var lessons = 0
    var subjects = 0
    var compliant = 0
  }

  /// Builds the notice for `week` (and `previous`, the teaching week before, if any) from the
  /// scope's schools, classrooms and the usage of both weeks.
  public static func build(
    termCode: String, week: CalendarDate, previous: CalendarDate?, schools: [School],
    classrooms: [ClassroomRecord], usage: UsageTable
  ) -> Smartschool_Supervision_V1_WeeklyNotice {
    let zero = WeekUsage(lessons: 0, subjects: 0)
    var now: [String: Week] = [:]
    var before: [String: Week] = [:]
    var thisTally = ComplianceTally()
    var prevTally = ComplianceTally()
    var below: [Smartschool_Supervision_V1_NoticeClassroom] = []
    let kinds = Dictionary(schools.map { ($0.code, $0.kind) }, uniquingKeysWith: { a, _ in a })
    var byKind: [Smartschool_Common_V1_SchoolKind: ComplianceTally] = [:]
    for c in classrooms {
      if c.span.inService(weekOf: week) {
        let u = usage[ClassroomWeek(classroom: c.number, week: week)] ?? zero
        thisTally.add(classroom: c.number, usage: u)
        if let kind = kinds[c.schoolCode] {
          byKind[kind, default: ComplianceTally()].add(classroom: c.number, usage: u)
        }
        now[c.schoolCode, default: Week()].classrooms += 1
        now[c.schoolCode]!.lessons += u.lessons
        now[c.schoolCode]!.subjects += u.subjects
        if u.compliant {
          now[c.schoolCode]!.compliant += 1
        } else {
          below.append(
            .with {
              $0.classroomCode = c.code
              $0.classroomName = c.name
              $0.schoolCode = c.schoolCode
              $0.lessons = Int64(u.lessons)
              $0.subjects = Int64(u.subjects)
            })
        }
      }
      if let previous, c.span.inService(weekOf: previous) {
        let u = usage[ClassroomWeek(classroom: c.number, week: previous)] ?? zero
        prevTally.add(classroom: c.number, usage: u)
        before[c.schoolCode, default: Week()].classrooms += 1
        before[c.schoolCode]!.lessons += u.lessons
      }
    }
    func perClassroom(_ w: Week?) -> Double {
      guard let w, w.classrooms > 0 else { return 0 }
      return Double(Decimal2.hundredths(w.lessons, w.classrooms)) / 100
    }
    // Exact ordering by lessons per classroom: compare cross products, not rounded values.
    let ranked = schools.sorted { a, b in
      let x = now[a.code] ?? Week()
      let y = now[b.code] ?? Week()
      if (x.classrooms == 0) != (y.classrooms == 0) { return y.classrooms == 0 }
      let lhs = x.lessons * max(y.classrooms, 1)
      let rhs = y.lessons * max(x.classrooms, 1)
      return lhs != rhs ? lhs > rhs : a.code < b.code
    }
    var notice = Smartschool_Supervision_V1_WeeklyNotice()
    notice.termCode = termCode
    notice.week = week.description
    notice.previousWeek = previous?.description ?? ""
    for (i, s) in ranked.enumerated() {
      let w = now[s.code] ?? Week()
      let isBelow =
        w.classrooms > 0
        && (w.lessons < Compliance.lessonStandard * w.classrooms
          || w.subjects < Compliance.subjectStandard * w.classrooms)
      let current = perClassroom(w)
      let prior = perClassroom(before[s.code])
      notice.schools.append(
        .with {
          $0.rank = Int32(i + 1)
          $0.schoolCode = s.code
          $0.schoolName = s.name
          $0.classrooms = Int64(w.classrooms)
          $0.lessons = Int64(w.lessons)
          $0.lessonsPerClassroom = current
          $0.previousLessonsPerClassroom = prior
          $0.change = Decimal2.rounded(current - prior)
          $0.compliantClassrooms = Int64(w.compliant)
          $0.belowStandard = isBelow
          $0.schoolKind = s.kind
        })
      if isBelow { notice.schoolsBelowStandard.append(s.code) }
    }
    notice.classroomsBelowStandard = below.sorted {
      ($0.schoolCode, $0.classroomCode) < ($1.schoolCode, $1.classroomCode)
    }
    notice.thisWeek = thisTally.figures(week: week.description)
    notice.previous = prevTally.figures(week: previous?.description ?? "")
    notice.lessonsPerClassroomChange = Decimal2.rounded(
      thisTally.averageLessons - prevTally.averageLessons)
    notice.bySchoolKind = KindSplit.figures(byKind)
    return notice
  }
}
