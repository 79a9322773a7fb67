/// How resources are ranked: popularity from usage, search relevance, recommendation order.
enum Ranking {
  // MARK: Popularity

  /// Popularity from usage counts: views + 3 × downloads + 5 × favourites + Σ (stars − 2)
  /// over ratings (a 1-star rating lowers it, a 5-star one adds 3).
  static func popularity(
    views: Int64, downloads: Int64, favourites: Int64, ratingSum: Int64, ratingCount: Int64
  ) -> Double {
    Double(views + 3 * downloads + 5 * favourites + ratingSum - 2 * ratingCount)
  }

  // MARK: Search relevance

  /// Weight of a query word found in the title.
  static let titleWeight = 10
  /// Extra weight when the title starts with the word.
  static let titlePrefixWeight = 3
  /// Weight of a word found in the keywords.
  static let keywordWeight = 5
  /// Weight of a word found in the description.
  static let descriptionWeight = 2

  /// Relevance of a resource for query words (already lower-cased): the sum over words of the
  /// weights of the fields that contain it. The store computes the same sum in SQL.
  static func relevance(
    terms: [String], title: String, keywords: [String], description: String
  ) -> Int {
    let t = SearchQuery.asciiLowercased(title)
    let k = SearchQuery.asciiLowercased(keywords.joined(separator: "\n"))
    let d = SearchQuery.asciiLowercased(description)
    return terms.reduce(0) { sum, term in
      var score = 0
      if t.contains(term) { score += titleWeight }
      if t.hasPrefix(term) { score += titlePrefixWeight }
      if k.contains(term) { score += keywordWeight }
      if d.contains(term) { score += descriptionWeight }
      return sum + score
    }
  }

  /// A search result's sort key.
  struct SearchKey: Sendable {
    var relevance: Int
    var popularity: Double
    var sequence: Int64
  }

  /// Search order: relevance, then popularity, then the newer resource first.
  static func searchOrder(_ a: SearchKey, _ b: SearchKey) -> Bool {
    if a.relevance != b.relevance { return a.relevance > b.relevance }
    if a.popularity != b.popularity { return a.popularity > b.popularity }
    return a.sequence > b.sequence
  }

  // MARK: Recommendations

  /// Prior mean and weight of the rating estimate: a resource with few ratings is pulled
  /// toward 3 stars, so one 5-star rating does not beat many 4.5-star ones.
  static let ratingPrior = (mean: 3.0, weight: 2.0)

  /// The rating estimate used for ranking: (Σ stars + prior mean × weight) / (count + weight).
  static func ratingScore(sum: Int64, count: Int64) -> Double {
    (Double(sum) + ratingPrior.mean * ratingPrior.weight) / (Double(count) + ratingPrior.weight)
  }

  /// A recommendation candidate.
  struct Candidate: Sendable {
    var id: String
    /// How many of the asked knowledge points it teaches.
    var matched: Int
    var ratingSum: Int64
    var ratingCount: Int64
    var popularity: Double
  }

  /// Recommendation order: coverage of the asked points, then rating, then usage, then id.
  static func recommendationOrder(_ a: Candidate, _ b: Candidate) -> Bool {
    if a.matched != b.matched { return a.matched > b.matched }
    let ra = ratingScore(sum: a.ratingSum, count: a.ratingCount)
    let rb = ratingScore(sum: b.ratingSum, count: b.ratingCount)
    if ra != rb { return ra > rb }
    if a.popularity != b.popularity { return a.popularity > b.popularity }
    return a.id < b.id
  }

  // MARK: Popular in a period

  /// Usage of a resource within a scope and period.
  struct PeriodUsage: Sendable, Equatable {
    var views: Int64 = 0
    var downloads: Int64 = 0
    var favourites: Int64 = 0
    var unfavourites: Int64 = 0
    var ratings: Int64 = 0
    var ratingStars: Int64 = 0
  }

  /// Score of period usage: views + 3 × downloads + 5 × (favourites − unfavourites)
  /// + Σ (stars − 2).
  static func periodScore(_ u: PeriodUsage) -> Double {
    Double(
      u.views + 3 * u.downloads + 5 * (u.favourites - u.unfavourites)
        + u.ratingStars - 2 * u.ratings)
  }
}
