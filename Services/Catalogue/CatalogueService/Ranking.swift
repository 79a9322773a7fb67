import Foundation

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

  /// BM25 term-frequency saturation.
  static let k1 = 1.2
  /// BM25 length normalisation.
  static let b = 0.75
  /// Weight of each indexed field (``SearchField`` order): the title above keywords above
  /// the description.
  static let fieldWeights: [Double] = [3, 2, 1]
  /// What an occurrence counts when the query word is a dictionary word and the occurrence
  /// straddles two words of the field (分数 in 部分|数据, 圆 in 圆明园).
  static let looseOccurrence = 0.2
  /// Bonus of a pair of query tokens found close together, in the order of the query, as a
  /// share of the smaller of their idf times the field weight.
  static let proximityWeight = 0.6
  /// Bonus when the title starts with the query's first token, as a share of its idf times the
  /// title weight.
  static let titleStartWeight = 0.3
  /// Factor per facet kind (stage, grade, subject, type, edition) a result has of those the
  /// query names at the edge of a word (勾股定理教案).
  static let facetBoost = 0.5

  /// Inverse document frequency (BM25's, never negative).
  static func idf(documents: Int, frequency: Int) -> Double {
    let n = Double(documents)
    let df = Double(frequency)
    return log(1 + (n - df + 0.5) / (df + 0.5))
  }

  /// Relevance of one document for a query, `nil` when the document does not match (a group
  /// with too few of its tokens). Deterministic: the same inputs give the same bits on every
  /// store, since stores only supply the rows.
  static func relevance(
    query: SearchQuery, document: SearchIndex.Document, stats: SearchIndex.Stats,
    frequencies: [String: Int], facets: SearchFacets
  ) -> Double? {
    var matched = Array(repeating: Set<String>(), count: query.required.count)
    var aligned: [String: Bool] = [:]
    for term in query.terms {
      aligned[term.token] = (aligned[term.token] ?? false) || term.aligned
      if let group = term.group, document.postings[term.token] != nil {
        matched[group].insert(term.token)
      }
    }
    for (group, need) in query.required.enumerated() where matched[group].count < need {
      return nil
    }
    var idfs: [String: Double] = [:]
    var score = 0.0
    for token in query.tokens {
      let idf = idf(documents: stats.documents, frequency: frequencies[token] ?? 0)
      idfs[token] = idf
      guard let posting = document.postings[token] else { continue }
      let loose = aligned[token] == true ? looseOccurrence : 1
      for field in 0..<SearchIndex.fieldCount {
        let positions = posting.positions[field]
        if positions.isEmpty { continue }
        let tf = positions.reduce(0.0) { $0 + ($1 >= 0 ? 1 : loose) }
        let average = stats.averageLength(field)
        let length = Double(document.lengths[field])
        let norm = average > 0 ? 1 - b + b * length / average : 1
        score += idf * fieldWeights[field] * tf * (k1 + 1) / (tf + k1 * norm)
      }
    }
    // Proximity: consecutive query tokens found in order, about as far apart as in the query.
    for (a, c) in zip(query.terms, query.terms.dropFirst()) where a.token != c.token {
      guard let pa = document.postings[a.token], let pc = document.postings[c.token] else {
        continue
      }
      let gap = c.offset - a.offset
      var best = 0.0
      for field in 0..<SearchIndex.fieldCount where fieldWeights[field] > best {
        let first = pa.positions[field].map(SearchIndex.offset)
        let second = Set(pc.positions[field].map(SearchIndex.offset))
        if first.isEmpty || second.isEmpty { continue }
        let near = first.contains { p in
          (max(1, gap)...(gap + 2)).contains { second.contains(p + $0) }
        }
        if near { best = fieldWeights[field] }
      }
      score += proximityWeight * min(idfs[a.token]!, idfs[c.token]!) * best
    }
    if let first = query.terms.first, let posting = document.postings[first.token],
      posting.positions[0].contains(where: { SearchIndex.offset($0) == 0 })
    {
      score += titleStartWeight * idfs[first.token]! * fieldWeights[0]
    }
    let boosts = query.boosts
    var kinds = 0
    if !boosts.stages.isEmpty && boosts.stages.contains(facets.stages.first ?? -1) { kinds += 1 }
    if !boosts.grades.isEmpty && boosts.grades.contains(facets.grades.first ?? -1) { kinds += 1 }
    if !boosts.subjects.isEmpty && boosts.subjects.contains(facets.subjects.first ?? -1) {
      kinds += 1
    }
    if !boosts.types.isEmpty && boosts.types.contains(facets.types.first ?? -1) { kinds += 1 }
    if !boosts.editions.isDisjoint(with: facets.editions) { kinds += 1 }
    return score * (1 + facetBoost * Double(kinds))
  }

  /// A search result's sort key.
  struct SearchKey: Sendable {
    var relevance: Double
    var popularity: Double
    var sequence: Int64
  }

  /// A resource a search's postings matched, as either store reads it: its matched postings,
  /// facets and popularity.
  struct SearchCandidate {
    var document = SearchIndex.Document()
    var facets = SearchFacets()
    var subject = 0
    var grade = 0
    var type = 0
    var popularity = 0.0
  }

  /// Scores `candidates` (one ranking for both stores): the matching ones' keys in search
  /// order, and how many match per (subject, grade, type) group.
  static func rank(
    _ candidates: [Int64: SearchCandidate], query: SearchQuery, stats: SearchIndex.Stats,
    frequencies: [String: Int]
  ) -> (keys: [SearchKey], counts: [SearchGroupKey: Int]) {
    var keys: [SearchKey] = []
    var counts: [SearchGroupKey: Int] = [:]
    for (seq, candidate) in candidates {
      guard
        let relevance = relevance(
          query: query, document: candidate.document, stats: stats, frequencies: frequencies,
          facets: candidate.facets)
      else { continue }
      keys.append(
        SearchKey(relevance: relevance, popularity: candidate.popularity, sequence: seq))
      counts[
        SearchGroupKey(subject: candidate.subject, grade: candidate.grade, type: candidate.type),
        default: 0] += 1
    }
    keys.sort(by: searchOrder)
    return (keys, counts)
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
