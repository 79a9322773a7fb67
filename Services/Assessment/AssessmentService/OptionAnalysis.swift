// Option analysis (选项分析): the share of students choosing each option of an objective item,
// overall and in the 27% groups of item analysis. Pure.

/// How many of a group chose one option (or none: option "").
public struct OptionCount: Equatable, Sendable {
  public var option: String
  public var count: Int
  /// Percent of the students, two decimals.
  public var share: Double
  /// Percent of the upper and of the lower 27% group, two decimals.
  public var upperShare: Double
  public var lowerShare: Double
}

/// One item's option figures: each declared option in order, then the students without one.
public struct ItemOptionFigures: Equatable, Sendable {
  public var options: [OptionCount]
  public var unrecorded: OptionCount
}

/// The option figures of `options.count` items over the students: `totals[s]` and `ids[s]`
/// place student s in the 27% groups (``ItemAnalysis/groups(totals:ids:)``), `choices[s][k]`
/// is its option on item k ("" for none; a label not declared counts as none). Also the
/// groups' size (0 when there is no student).
public func optionAnalysis(
  totals: [Double], ids: [String], choices: [[String]], options: [[String]]
) -> (groupSize: Int, items: [ItemOptionFigures]) {
  let (upper, lower) = ItemAnalysis.groups(totals: totals, ids: ids)
  func percent(_ part: Int, _ whole: Int) -> Double {
    whole == 0 ? 0 : roundTo2(Double(part) / Double(whole) * 100)
  }
  let items = options.enumerated().map { k, labels -> ItemOptionFigures in
    // Column `labels.count` counts the students without a declared option.
    func counts(_ students: some Sequence<Int>) -> [Int] {
      var tally = Array(repeating: 0, count: labels.count + 1)
      for s in students {
        tally[labels.firstIndex(of: choices[s][k]) ?? labels.count] += 1
      }
      return tally
    }
    let all = counts(totals.indices)
    let top = counts(upper)
    let bottom = counts(lower)
    let figures = (labels + [""]).enumerated().map { c, label in
      OptionCount(
        option: label, count: all[c], share: percent(all[c], totals.count),
        upperShare: percent(top[c], upper.count), lowerShare: percent(bottom[c], lower.count))
    }
    return ItemOptionFigures(options: Array(figures.dropLast()), unrecorded: figures.last!)
  }
  return (upper.count, items)
}
