/// `text` with `& < > " '` as HTML character references, safe in element text and in quoted
/// attribute values: what every HTML page of the suite (identity's login and consent pages, the
/// CLI's reports) puts around a name a user or an import chose.
public func escapeHTML(_ text: String) -> String {
  guard text.contains(where: { htmlReferences[$0] != nil }) else { return text }
  var out = ""
  out.reserveCapacity(text.utf8.count + 16)
  for c in text { out += htmlReferences[c] ?? String(c) }
  return out
}

private let htmlReferences: [Character: String] = [
  "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;",
]
