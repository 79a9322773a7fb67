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
  /// with too few of its tokens): the score a search gives it, worked out from the whole
  /// analysed document at once. Deterministic: the same inputs give the same bits on every
  /// store, since stores only supply the rows.
  static func relevance(
    query: SearchQuery, document: SearchIndex.Document, stats: SearchIndex.Stats,
    frequencies: [String: Int], facets: SearchFacets
  ) -> Double? {
    let scorer = Scorer(query: query, stats: stats, frequencies: frequencies)
    let counts = scorer.tokens.map { document.postings[$0].map(SearchIndex.counts) ?? -1 }
    guard scorer.matches(counts) else { return nil }
    let candidate = SearchCandidate(
      sequence: 0, counts: counts, lengths: SearchIndex.packLengths(document.lengths),
      stage: facets.stages.first ?? -1, grade: facets.grades.first ?? -1,
      subject: facets.subjects.first ?? -1, type: facets.types.first ?? -1,
      hasEdition: !query.boosts.editions.isDisjoint(with: facets.editions), popularity: 0)
    var positions: [Int: SearchIndex.Posting] = [:]
    for (i, token) in scorer.tokens.enumerated() { positions[i] = document.postings[token] }
    return scorer.score(candidate, positions: positions, bound: false)
  }

  /// A resource the postings of a search matched, as either store reads it: for each of the
  /// query's tokens its posting's ``SearchIndex/counts(_:)`` (−1 when absent), its field
  /// lengths, facets and popularity.
  struct SearchCandidate: Sendable {
    var sequence: Int64
    var counts: [Int64]
    var lengths: Int64
    var stage: Int
    var grade: Int
    var subject: Int
    var type: Int
    /// Has one of the editions the query boosts.
    var hasEdition: Bool
    var popularity: Double
  }

  /// The scoring of one query against the collection's statistics, worked out once per search.
  ///
  /// A score is ((BM25 + Σ proximity bonuses) + title-start bonus) × facet boost. Everything
  /// but proximity comes from the postings' counts; proximity needs positions, and its bonus
  /// for a pair of tokens is at most the weight of the best field both occur in, which the
  /// counts tell. So every match gets an upper bound from its counts, equal to its score when
  /// no pair needs positions, and only candidates whose bound could reach the page need
  /// positions (``TopResults``). Bounds add the same terms in the same order as scores, so a
  /// bound is never below its score, bit for bit.
  struct Scorer: Sendable {
    let query: SearchQuery
    let stats: SearchIndex.Stats
    /// Distinct tokens in query order (``SearchQuery/tokens``).
    let tokens: [String]
    let idfs: [Double]
    /// What a straddling occurrence of each token counts.
    let looseWeights: [Double]
    /// Per group, its distinct tokens (indices into `tokens`) and how many must match.
    let groups: [(tokens: [Int], need: Int)]
    /// Consecutive query terms with different tokens (indices into `tokens`) and the bonus per
    /// unit of field weight when they are found close together.
    let pairs: [(a: Int, c: Int, gap: Int, weight: Double)]
    /// The first term's token, for the title-start bonus.
    let first: Int?

    init(query: SearchQuery, stats: SearchIndex.Stats, frequencies: [String: Int]) {
      self.query = query
      self.stats = stats
      let tokens = query.tokens
      self.tokens = tokens
      var index: [String: Int] = [:]
      for (i, t) in tokens.enumerated() { index[t] = i }
      let idfs = tokens.map {
        Ranking.idf(documents: stats.documents, frequency: frequencies[$0] ?? 0)
      }
      self.idfs = idfs
      var aligned = Array(repeating: false, count: tokens.count)
      var members = Array(repeating: Set<Int>(), count: query.required.count)
      for term in query.terms {
        let i = index[term.token]!
        aligned[i] = aligned[i] || term.aligned
        if let group = term.group { members[group].insert(i) }
      }
      looseWeights = aligned.map { $0 ? Ranking.looseOccurrence : 1 }
      groups = query.required.enumerated().map { (members[$0.offset].sorted(), $0.element) }
      pairs = zip(query.terms, query.terms.dropFirst()).compactMap { a, c in
        if a.token == c.token { return nil }
        let ia = index[a.token]!
        let ic = index[c.token]!
        return (ia, ic, c.offset - a.offset, Ranking.proximityWeight * min(idfs[ia], idfs[ic]))
      }
      first = query.terms.first.map { index[$0.token]! }
    }

    /// True when every group has enough of its tokens.
    func matches(_ counts: [Int64]) -> Bool {
      for group in groups {
        var n = 0
        for t in group.tokens where counts[t] >= 0 { n += 1 }
        if n < group.need { return false }
      }
      return true
    }

    /// Tokens (indices into `tokens`) of which every match has at least one, chosen to have
    /// the fewest postings (`frequencies`, by token index): for the group where they cost
    /// least, its `n − need + 1` rarest tokens, since a document without any of them has
    /// fewer than `need` of the group's `n`. A store can find every match among the documents
    /// of these postings and look the other tokens up for those documents alone.
    func drivers(frequencies: [Int]) -> [Int] {
      var best: (cost: Int, tokens: [Int])? = nil
      for group in groups where group.need > 0 {
        let rarest = group.tokens.sorted { (frequencies[$0], $0) < (frequencies[$1], $1) }
          .prefix(group.tokens.count - group.need + 1)
        let cost = rarest.reduce(0) { $0 + frequencies[$1] }
        if best == nil || cost < best!.cost { best = (cost, rarest.sorted()) }
      }
      return best?.tokens ?? Array(tokens.indices)
    }

    /// True when a pair of the query needs positions to be scored in this candidate.
    func needsPositions(_ c: SearchCandidate) -> Bool {
      pairs.contains { bestField(c, $0.a, $0.c) > 0 }
    }

    /// The weight of the best field both tokens occur in (0: none).
    func bestField(_ c: SearchCandidate, _ a: Int, _ b: Int) -> Double {
      let ca = c.counts[a]
      let cb = c.counts[b]
      if ca < 0 || cb < 0 { return 0 }
      for field in 0..<SearchIndex.fieldCount {
        let inA = SearchIndex.aligned(ca, field) + SearchIndex.loose(ca, field) > 0
        let inB = SearchIndex.aligned(cb, field) + SearchIndex.loose(cb, field) > 0
        if inA && inB { return fieldWeights[field] }
      }
      return 0
    }

    /// The score of a matching candidate; with `bound`, its upper bound from counts alone
    /// (`positions` unused), else its score from the positions of its tokens (by index) for
    /// the pairs that need them.
    func score(_ c: SearchCandidate, positions: [Int: SearchIndex.Posting], bound: Bool)
      -> Double
    {
      var score = 0.0
      for t in 0..<tokens.count {
        let counts = c.counts[t]
        if counts < 0 { continue }
        for field in 0..<SearchIndex.fieldCount {
          let aligned = SearchIndex.aligned(counts, field)
          let loose = SearchIndex.loose(counts, field)
          if aligned + loose == 0 { continue }
          let tf = Double(aligned) + Double(loose) * looseWeights[t]
          let average = stats.averageLength(field)
          let length = Double(SearchIndex.length(c.lengths, field))
          let norm = average > 0 ? 1 - b + b * length / average : 1
          score += idfs[t] * fieldWeights[field] * tf * (k1 + 1) / (tf + k1 * norm)
        }
      }
      // Proximity: consecutive query tokens found in order, about as far apart as in the query.
      for pair in pairs {
        let most = bestField(c, pair.a, pair.c)
        if most == 0 { continue }
        var best = most
        if !bound {
          best = 0
          if let pa = positions[pair.a], let pc = positions[pair.c] {
            for field in 0..<SearchIndex.fieldCount where fieldWeights[field] > best {
              let first = pa.positions[field].map(SearchIndex.offset)
              let second = Set(pc.positions[field].map(SearchIndex.offset))
              if first.isEmpty || second.isEmpty { continue }
              let near = first.contains { p in
                (max(1, pair.gap)...(pair.gap + 2)).contains { second.contains(p + $0) }
              }
              if near { best = fieldWeights[field] }
            }
          }
        }
        score += pair.weight * best
      }
      if let first, c.counts[first] >= 0, c.counts[first] & SearchIndex.titleStartBit != 0 {
        score += titleStartWeight * idfs[first] * fieldWeights[0]
      }
      let boosts = query.boosts
      var kinds = 0
      if boosts.stages.contains(c.stage) { kinds += 1 }
      if boosts.grades.contains(c.grade) { kinds += 1 }
      if boosts.subjects.contains(c.subject) { kinds += 1 }
      if boosts.types.contains(c.type) { kinds += 1 }
      if c.hasEdition { kinds += 1 }
      return score * (1 + facetBoost * Double(kinds))
    }
  }

  /// A search result's sort key.
  struct SearchKey: Sendable {
    var relevance: Double
    var popularity: Double
    var sequence: Int64
  }

  /// The first `need` results of a search in order, with the size and facet groups of the
  /// whole matching set, from candidates read by either store (one ranking for both).
  ///
  /// Every match is scored from its counts: exactly when no pair of the query needs positions,
  /// else as an upper bound. Matches are taken in order of that bound; those that need it are
  /// handed out in batches (``nextBatch()``) for the store to read their positions
  /// (``refine(_:)``), until the `need`-th best exact score is ahead of the next bound. The
  /// result is the order a full sort of exact scores gives.
  struct TopResults {
    let scorer: Scorer
    let need: Int
    /// Matches, in order of their bound.
    private var ordered: [(key: SearchKey, candidate: SearchCandidate, exact: Bool)] = []
    private var next = 0
    /// Exact keys so far, in search order.
    private var done: [SearchKey] = []
    private var pending: [SearchCandidate] = []
    /// Size of the matching set.
    private(set) var total = 0
    /// Matches per (subject, grade, type).
    private(set) var counts: [SearchGroupKey: Int] = [:]

    init(_ candidates: [SearchCandidate], scorer: Scorer, need: Int) {
      self.scorer = scorer
      self.need = need
      for c in candidates where scorer.matches(c.counts) {
        total += 1
        counts[SearchGroupKey(subject: c.subject, grade: c.grade, type: c.type), default: 0] += 1
        let bound = scorer.score(c, positions: [:], bound: true)
        ordered.append(
          (
            SearchKey(relevance: bound, popularity: c.popularity, sequence: c.sequence), c,
            !scorer.needsPositions(c)
          ))
      }
      ordered.sort { searchOrder($0.key, $1.key) }
    }

    /// The sequences of the next candidates whose positions are needed (with the tokens of the
    /// query's pairs), or `nil` when the first `need` results are settled.
    mutating func nextBatch() -> [Int64]? {
      if need <= 0 { return nil }
      while next < ordered.count {
        if done.count >= need && searchOrder(done[need - 1], ordered[next].key) { return nil }
        let item = ordered[next]
        if item.exact {
          insert(item.key)
          next += 1
          continue
        }
        pending = []
        while next < ordered.count && pending.count < max(need, 16) {
          let item = ordered[next]
          if item.exact { insert(item.key) } else { pending.append(item.candidate) }
          next += 1
        }
        return pending.map(\.sequence)
      }
      return nil
    }

    /// Scores the last batch exactly from its positions: sequence → token index → posting.
    mutating func refine(_ positions: [Int64: [Int: SearchIndex.Posting]]) {
      for c in pending {
        let relevance = scorer.score(c, positions: positions[c.sequence] ?? [:], bound: false)
        insert(SearchKey(relevance: relevance, popularity: c.popularity, sequence: c.sequence))
      }
      pending = []
    }

    private mutating func insert(_ key: SearchKey) {
      var low = 0
      var high = done.count
      while low < high {
        let mid = (low + high) / 2
        if searchOrder(done[mid], key) { low = mid + 1 } else { high = mid }
      }
      done.insert(key, at: low)
    }

    /// The first `need` keys in search order (after the batches are done).
    var keys: ArraySlice<SearchKey> { done.prefix(need) }

    /// Facet groups in (subject, grade, type) order.
    var groups: [(subject: Int, grade: Int, type: Int, count: Int)] {
      counts.sorted { $0.key < $1.key }.map {
        (subject: $0.key.subject, grade: $0.key.grade, type: $0.key.type, count: $0.value)
      }
    }

    /// The tokens (indices) whose positions ``refine(_:)`` needs.
    var pairTokens: [Int] {
      Array(Set(scorer.pairs.flatMap { [$0.a, $0.c] })).sorted()
    }
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
