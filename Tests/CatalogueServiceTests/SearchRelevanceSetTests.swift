import Foundation
import GRPCCore
import SmartSchoolModel
import TestSupport
import Testing

/// The relevance set (``SearchCorpus``) through a real server: recall@10 and precision@5 per
/// query and per query group. Both are capped at the number of relevant results (a query with
/// 2 relevant results that returns both first scores 1.0 on each).
@Suite("Search relevance set")
struct SearchRelevanceSetTests {
  @Test func recallAndPrecisionMeetTheTargets() async throws {
    try await withWorld { w in
      #expect(SearchCorpus.items.count >= 300 && SearchCorpus.queries.count >= 40)
      var keys: [String: String] = [:]
      for item in SearchCorpus.items {
        let grade = Int32(item.topic.grade)
        let r = try await w.create(
          "tA1", item.title, type: item.type, stage: .of(grade: item.topic.grade)!, grade: grade,
          subject: item.topic.subject, keywords: item.keywords, description: item.description)
        keys[r.id] = item.key
      }
      let byKey = Dictionary(uniqueKeysWithValues: SearchCorpus.items.map { ($0.key, $0) })
      var groups: [String: [(recall: Double, precision: Double)]] = [:]
      var lines: [String] = []
      for judged in SearchCorpus.queries {
        let relevant = Set(SearchCorpus.items.filter(judged.relevant).map(\.key))
        let all = try await w.catalogue.searchResources(
          .with {
            $0.query = judged.query
            $0.pageSize = 1000
          }, metadata: w.auth("tA1")
        ).hits.map { keys[$0.resource.id] ?? "?" }
        let hits = Array(all.prefix(10))
        // A distractor found at all comes after every relevant result found.
        let lastRelevant = all.lastIndex(where: relevant.contains) ?? -1
        for d in judged.distractors {
          if let rank = all.firstIndex(of: d) {
            #expect(rank > lastRelevant, "\(judged.query): \(d) at \(rank + 1)")
            print(
              "[\(judged.group)] \(judged.query): distractor \(d) at rank \(rank + 1) "
                + "of \(all.count)")
          }
        }
        let recall =
          Double(hits.prefix(10).filter(relevant.contains).count)
          / Double(max(1, min(10, relevant.count)))
        let precision =
          Double(hits.prefix(5).filter(relevant.contains).count)
          / Double(max(1, min(5, relevant.count)))
        groups[judged.group, default: []].append((recall, precision))
        var text =
          judged.query.padding(toLength: 12, withPad: " ", startingAt: 0)
          + String(
            format: " recall@10 %.2f  precision@5 %.2f  (%d relevant)", recall, precision,
            relevant.count)
        if recall < 1 || precision < 1 {
          text +=
            "  top 5: " + hits.prefix(5).map { byKey[$0]?.title ?? $0 }.joined(separator: " | ")
        }
        lines.append("[\(judged.group)] " + text)
      }
      for line in lines { print(line) }
      let all = groups.values.flatMap { $0 }
      for (group, scores) in groups.sorted(by: { $0.key < $1.key }) {
        print(
          String(
            format: "group %@: %d queries, recall@10 %.3f, precision@5 %.3f", group, scores.count,
            scores.map(\.recall).reduce(0, +) / Double(scores.count),
            scores.map(\.precision).reduce(0, +) / Double(scores.count)))
      }
      let recall = all.map(\.recall).reduce(0, +) / Double(all.count)
      let precision = all.map(\.precision).reduce(0, +) / Double(all.count)
      print(
        String(
          format: "all %d queries: recall@10 %.3f, precision@5 %.3f", all.count, recall,
          precision))
      #expect(recall >= 0.90)
      #expect(precision >= 0.80)
    }
  }
}
