import Foundation
import ServiceRuntime
import SmartSchoolModel

/// A registered smart classroom as the store keeps it.
public struct ClassroomRecord: Hashable, Sendable {
  public var number: Int64
  public var id: String
  public var code: String
  public var name: String
  public var schoolID: String
  public var schoolCode: String
  public var classCode: String
  public var orgPath: String
  public var equipped: CalendarDate
  public var retired: CalendarDate?
  public var createTime: Double
  public var updateTime: Double

  public init(
    number: Int64, id: String, code: String, name: String, schoolID: String, schoolCode: String,
    classCode: String, orgPath: String, equipped: CalendarDate, retired: CalendarDate?,
    createTime: Double, updateTime: Double
  ) {
    self.number = number
    self.id = id
    self.code = code
    self.name = name
    self.schoolID = schoolID
    self.schoolCode = schoolCode
    self.classCode = classCode
    self.orgPath = orgPath
    self.equipped = equipped
    self.retired = retired
    self.createTime = createTime
    self.updateTime = updateTime
  }

  public var span: ClassroomSpan {
    ClassroomSpan(
      number: number, code: code, orgPath: orgPath, equipped: equipped, retired: retired)
  }
}

/// A validated lesson, ready to store.
public struct LessonRecord: Hashable, Sendable {
  public var classroom: Int64
  public var classroomCode: String
  public var date: CalendarDate
  public var period: Int
  public var orgPath: String
  public var teacher: String
  public var subject: Int
  public var minutes: Int
  public var source: Int
  /// False for a lesson held as unverified (its teacher unknown to identity at import).
  public var verified: Bool

  public init(
    classroom: Int64, classroomCode: String, date: CalendarDate, period: Int, orgPath: String,
    teacher: String, subject: Int, minutes: Int, source: Int, verified: Bool = true
  ) {
    self.classroom = classroom
    self.classroomCode = classroomCode
    self.date = date
    self.period = period
    self.orgPath = orgPath
    self.teacher = teacher
    self.subject = subject
    self.minutes = minutes
    self.source = source
    self.verified = verified
  }

  /// The key (classroom, day, period) packed into one integer: the classroom's number, then
  /// 16 bits of day (days since 1970 fit until 2149) and 5 of period (1–20).
  public var packedKey: UInt64 {
    UInt64(classroom) << 21 | UInt64(date.dayNumber & 0xFFFF) << 5 | UInt64(period & 0x1F)
  }

  /// The natural key "<classroom>/<date>/<period>".
  public var naturalKey: String { naturalKey(dateText: date.description) }

  /// ``naturalKey`` with the date already written (a batch formats each distinct date once).
  public func naturalKey(dateText: String) -> String { "\(classroomCode)/\(dateText)/\(period)" }

  public var proto: Smartschool_Supervision_V1_Lesson { proto(dateText: date.description) }

  /// ``proto`` with the date already written.
  public func proto(dateText: String) -> Smartschool_Supervision_V1_Lesson {
    .with {
      $0.classroomCode = classroomCode
      $0.teacherExternalID = teacher
      $0.subject = Smartschool_Common_V1_Subject(rawValue: subject) ?? .unspecified
      $0.date = dateText
      $0.period = Int32(period)
      $0.durationMinutes = Int32(minutes)
      $0.source = Smartschool_Supervision_V1_LessonSource(rawValue: source) ?? .unspecified
      $0.unverified = !verified
    }
  }
}

/// A batch of lessons with each one's feed event made ahead (its key and serialized payload),
/// so that the store's write only sets the org path the lesson is stored under and the time of
/// the write: the import stages a batch while the batch before it is written.
public struct StagedLessons: Sendable {
  public var lessons: [LessonRecord]
  /// `events[i]` is the event of `lessons[i]`, at the org path the import resolved.
  public var events: [ChangeEvent]

  public init(_ lessons: [LessonRecord]) throws {
    let time = Date()
    self.lessons = lessons
    events = []
    events.reserveCapacity(lessons.count)
    // Each distinct date is formatted once, for the keys and the payloads.
    var dates: [Int: String] = [:]
    for l in lessons {
      let day = l.date.dayNumber
      let text: String
      if let known = dates[day] {
        text = known
      } else {
        text = l.date.description
        dates[day] = text
      }
      let key = l.naturalKey(dateText: text)
      events.append(
        try ChangeEvent(
          entity: "lesson", id: key, naturalKey: key, op: .upsert, orgPath: l.orgPath,
          payload: l.proto(dateText: text), time: time))
    }
  }

  /// The event of `lessons[i]` stored under `path` (the classroom's path when written) by a
  /// write at `time` (not when the batch was staged: it may wait behind a slow commit).
  public func event(_ i: Int, at path: String, time: Date) -> ChangeEvent {
    var event = events[i]
    event.orgPath = path
    event.time = time.timeIntervalSince1970
    return event
  }
}

/// Why one imported row was rejected.
public struct RowRejection: Hashable, Sendable, Error {
  public var field: String
  public var reason: String

  public init(_ field: String, _ reason: String) {
    self.field = field
    self.reason = reason
  }
}

/// The row rules of the lesson import.
public enum LessonRows {
  public static let maxPeriod = 20
  public static let maxMinutes = 240

  /// Validates one row against its classroom (`nil` when unknown), the caller's scope over
  /// that classroom and the defined terms.
  public static func validate(
    _ row: Smartschool_Supervision_V1_Lesson, classroom: ClassroomRecord?, inScope: Bool,
    terms: [TermCalendar]
  ) -> Result<LessonRecord, RowRejection> {
    guard let classroom else {
      return .failure(RowRejection("classroom_code", "no smart classroom has this code"))
    }
    guard inScope else {
      return .failure(
        RowRejection("classroom_code", "the classroom lies outside the caller's import scope"))
    }
    guard let date = CalendarDate(row.date) else {
      return .failure(RowRejection("date", "must be a date written YYYY-MM-DD"))
    }
    guard terms.contains(where: { $0.contains(date) }) else {
      return .failure(RowRejection("date", "falls within no defined term"))
    }
    guard classroom.span.inService(on: date) else {
      return .failure(
        RowRejection(
          "date",
          date < classroom.equipped
            ? "is before the classroom was equipped" : "is after the classroom was retired"))
    }
    let subject = row.subject.rawValue
    guard (1...16).contains(subject) else {
      return .failure(RowRejection("subject", "must be a known subject"))
    }
    guard (1...maxPeriod).contains(Int(row.period)) else {
      return .failure(RowRejection("period", "must be 1-\(maxPeriod)"))
    }
    guard (1...maxMinutes).contains(Int(row.durationMinutes)) else {
      return .failure(RowRejection("duration_minutes", "must be 1-\(maxMinutes)"))
    }
    guard TextRules.isCode(row.teacherExternalID) else {
      return .failure(
        RowRejection("teacher_external_id", "must be 1-64 letters, digits, '-', '_' or '.'"))
    }
    guard (1...3).contains(row.source.rawValue) else {
      return .failure(RowRejection("source", "must be platform, device or manual"))
    }
    return .success(
      LessonRecord(
        classroom: classroom.number, classroomCode: classroom.code, date: date,
        period: Int(row.period), orgPath: classroom.orgPath, teacher: row.teacherExternalID,
        subject: subject, minutes: Int(row.durationMinutes), source: row.source.rawValue))
  }
}
