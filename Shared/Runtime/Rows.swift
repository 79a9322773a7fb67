import GRDB

extension Statement {
  /// Every row this statement returns for `arguments`, each decoded by `decode` while the
  /// statement steps.
  ///
  /// Use this rather than `Row.fetchAll(statement).map(decode)`. GRDB's fetched rows are
  /// copies, and a copy finds `row["column"]` by lower-casing and comparing each column name in
  /// turn, on every lookup: a 13-column row decoded by name costs about 90 `lowercased()` calls.
  /// A row read while the statement steps finds a column through one name → index table built
  /// once per statement execution.
  ///
  /// `decode` must copy what it needs out of the row: the row changes as the statement steps.
  public func decodeAll<T>(
    arguments: StatementArguments = StatementArguments(), _ decode: (Row) throws -> T
  ) throws -> [T] {
    let rows = try Row.fetchCursor(self, arguments: arguments)
    // The cursor resets the statement when it goes, and its rows read from the statement.
    return try withExtendedLifetime(rows) {
      var result: [T] = []
      while let row = try rows.next() { result.append(try decode(row)) }
      return result
    }
  }

  /// The first row this statement returns for `arguments`, decoded by `decode` (`nil` when it
  /// returns none). See ``decodeAll(arguments:_:)`` for why rows are decoded in place.
  public func decodeFirst<T>(
    arguments: StatementArguments = StatementArguments(), _ decode: (Row) throws -> T
  ) throws -> T? {
    let rows = try Row.fetchCursor(self, arguments: arguments)
    return try withExtendedLifetime(rows) { try rows.next().map(decode) }
  }
}
