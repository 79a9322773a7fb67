// Comprehensive quality evaluation (综合素质评价): the overall grade of a dimension. Pure.

/// The overall grade of a dimension from its entries' grades (1 = A … 4 = D): the most
/// frequent grade, the better (smaller) one on ties; `nil` without entries.
public func overallGrade(_ grades: [Int]) -> Int? {
  guard !grades.isEmpty else { return nil }
  var counts: [Int: Int] = [:]
  for grade in grades { counts[grade, default: 0] += 1 }
  return counts.max { a, b in a.value != b.value ? a.value < b.value : a.key > b.key }?.key
}
