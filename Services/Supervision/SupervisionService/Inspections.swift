import Foundation
import ServiceRuntime
import SmartSchoolModel

/// Inspections (督导) as the plans run them: one record per visit, follow-up of findings, the
/// yearly inspection and the research units' termly visits.
public enum Inspections {
  public typealias Inspection = Smartschool_Supervision_V1_Inspection

  /// The kind a visit counts as (inspections recorded before kinds existed are inspections).
  public static func kind(_ i: Inspection) -> Smartschool_Supervision_V1_InspectionKind {
    i.kind == .unspecified ? .inspection : i.kind
  }

  /// The natural key of a visit: school, date, kind, inspector, classroom, teacher, subject.
  /// Only the inspector is free text; the other fields hold no '/', so keys never collide.
  public static func naturalKey(_ i: Inspection) -> String {
    [
      i.schoolCode, i.date, String(kind(i).rawValue), i.inspector, i.classroomCode,
      i.teacherExternalID, String(i.subject.rawValue),
    ].joined(separator: "/")
  }

  /// What a re-sent visit makes of the stored one: `nil` when nothing changes; otherwise the
  /// stored record with the new content (its id, create time and follow-up kept).
  public static func merge(_ sent: Inspection, into stored: Inspection) -> Inspection? {
    var merged = sent
    merged.id = stored.id
    merged.createTime = stored.createTime
    merged.followUp = stored.followUp
    merged.followUpNote = stored.followUpNote
    merged.followUpDate = stored.followUpDate
    return merged == stored ? nil : merged
  }

  /// True when a follow-up may move from `from` to `to`.
  public static func allowed(
    from: Smartschool_Supervision_V1_FollowUpStatus, to: Smartschool_Supervision_V1_FollowUpStatus
  ) -> Bool {
    switch (from, to) {
    case (.open, .rectified), (.rectified, .verified), (.rectified, .open): true
    default: false
    }
  }

  /// Today in China Standard Time (UTC+8), the calendar the plans' dates are written in.
  public static func today(_ now: Date) -> CalendarDate {
    CalendarDate(dayNumber: Int(((now.timeIntervalSince1970 + 8 * 3600) / 86_400).rounded(.down)))
  }

  /// The ratings in the order reports list them: 优, 良, 中, 差.
  public static let ratings: [Smartschool_Supervision_V1_InspectionRating] = [
    .excellent, .good, .fair, .poor,
  ]

  /// A school of the summary's scope.
  public typealias School = WeeklyNoticeBuilder.School

  /// The inspection summary of `schools` from the year's visits and those of the research
  /// period (`researchTerm`'s visits, or the year's when `researchTerm` is nil).
  public static func summary(
    year: Int, schools: [School], visits: [Inspection], researchTerm: String?,
    researchVisits: [Inspection]
  ) -> Smartschool_Supervision_V1_InspectionSummary {
    var out = Smartschool_Supervision_V1_InspectionSummary()
    out.year = Int32(year)
    out.schools = Int64(schools.count)
    out.researchTermCode = researchTerm ?? ""
    var bySchool: [String: [Inspection]] = [:]
    for v in visits { bySchool[v.schoolCode, default: []].append(v) }
    var researchBySchool: [String: [Inspection]] = [:]
    for v in researchVisits where kind(v) == .researchVisit {
      researchBySchool[v.schoolCode, default: []].append(v)
    }
    for s in schools {
      let own = bySchool[s.code] ?? []
      let inspections = own.filter { kind($0) == .inspection }
      let research = researchBySchool[s.code] ?? []
      var row = Smartschool_Supervision_V1_SchoolInspections()
      row.schoolCode = s.code
      row.schoolName = s.name
      row.inspections = Int64(inspections.count)
      row.lastDate = inspections.map(\.date).max() ?? ""
      row.researchVisits = Int64(research.count)
      row.lastResearchDate = research.map(\.date).max() ?? ""
      row.openFollowUps = Int64(own.filter { [.open, .rectified].contains($0.followUp) }.count)
      row.schoolKind = s.kind
      if inspections.isEmpty {
        out.notInspected.append(row)
      } else {
        out.inspected.append(row)
      }
      if research.isEmpty {
        out.schoolsWithoutResearchVisit.append(s.code)
      } else {
        out.researchVisited += 1
      }
    }
    let inspected = Percent(numerator: out.inspected.count, denominator: schools.count)
    out.inspectedSharePercent = inspected.value
    out.inspectedShareText = inspected.description
    out.bySchoolKind = KindSplit.shares(
      out.inspected.map { ($0.schoolKind, true) } + out.notInspected.map { ($0.schoolKind, false) })
    let research = Percent(numerator: Int(out.researchVisited), denominator: schools.count)
    out.researchVisitedSharePercent = research.value
    out.researchVisitedShareText = research.description
    for rating in ratings {
      let n = visits.filter { $0.rating == rating }.count
      let share = Percent(numerator: n, denominator: visits.count)
      out.ratings.append(
        .with {
          $0.rating = rating
          $0.count = Int64(n)
          $0.sharePercent = share.value
          $0.shareText = share.description
        })
    }
    for v in visits {
      switch v.followUp {
      case .open: out.followUpsOpen += 1
      case .rectified: out.followUpsRectified += 1
      case .verified: out.followUpsVerified += 1
      case .notNeeded: out.followUpsNotNeeded += 1
      default: break
      }
    }
    return out
  }
}
