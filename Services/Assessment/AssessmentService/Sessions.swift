// Joint exam sessions (联考): each student's total over the papers of a session they sat. Pure.

/// One student's standing in a session: the paper totals they sat, in paper order.
public struct SessionStudent: Sendable {
  public var externalID: String
  public var classCode: String
  public var schoolCode: String
  public var orgPath: String
  /// Per paper (in the session's paper order): the paper's total, or nil when the student
  /// did not sit it (absent, exempt, or no row).
  public var papers: [Double?]

  /// The total over the papers sat.
  public var total: Double { papers.reduce(0) { $0 + ($1 ?? 0) } }
  /// How many papers the student sat.
  public var sat: Int { papers.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }
}

/// The session's students from each paper's results (`papers[p]`: paper p's students),
/// ordered by external id. A student's class, school and path are those of the first paper
/// that lists them.
public func sessionStudents(_ papers: [[StudentResult]]) -> [SessionStudent] {
  var index: [String: Int] = [:]
  var students: [SessionStudent] = []
  for (p, results) in papers.enumerated() {
    for r in results {
      let i: Int
      if let known = index[r.externalID] {
        i = known
      } else {
        i = students.count
        index[r.externalID] = i
        students.append(
          SessionStudent(
            externalID: r.externalID, classCode: r.classCode, schoolCode: r.schoolCode,
            orgPath: r.orgPath, papers: Array(repeating: nil, count: papers.count)))
      }
      if r.sat { students[i].papers[p] = r.total }
    }
  }
  return students.sorted { $0.externalID < $1.externalID }
}
