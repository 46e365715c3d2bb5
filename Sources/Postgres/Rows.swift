/// The rows a statement returned, copied out of libpq's result so nothing outlives `PQclear`.
///
/// ```swift
/// let rows = try db.query("SELECT voter_id, voter_name FROM voter ORDER BY voter_id LIMIT 10")
/// print(rows.columns, rows.count)   // ["voter_id", "voter_name"] and up to 10
/// for row in rows { print(try row.decode(Int64.self, 0), try row.decode(String.self, "voter_name")) }
/// let changed = try db.query("DELETE FROM voter WHERE voter_id < 0").affectedRows
/// ```
public struct Rows: Sendable, RandomAccessCollection {
    public let columns: [String]
    let values: [String?]
    /// Rows changed by INSERT/UPDATE/DELETE (0 for statements that report none).
    public let affectedRows: Int

    init(columns: [String], values: [String?], affectedRows: Int) {
        self.columns = columns
        self.values = values
        self.affectedRows = affectedRows
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { columns.isEmpty ? 0 : values.count / columns.count }
    public subscript(position: Int) -> Row {
        Row(rows: self, offset: position * columns.count)
    }

    func columnIndex(_ name: String) throws -> Int {
        guard let i = columns.firstIndex(of: name) else {
            throw PostgresError(
                .misuse, message: "no column named '\(name)' (have: \(columns.joined(separator: ", ")))")
        }
        return i
    }
}

/// One row; decode columns by position or name.
///
/// ```swift
/// let row = try db.query("SELECT 42::int8 AS id, 'Ann' AS name, NULL::timestamptz AS seen")[0]
/// let id = try row.decode(Int64.self, 0)   // 42
/// let name = try row.decode(String.self, "name")   // "Ann"
/// let seen = try row.decodeIfPresent(Date.self, 2)   // nil; decode would throw for NULL
/// ```
public struct Row: Sendable {
    let rows: Rows
    let offset: Int

    public var count: Int { rows.columns.count }

    /// The raw text of a column, nil for NULL.
    public func text(_ column: Int) -> String? { rows.values[offset + column] }

    public func decode<T: PostgresDecodable>(_ type: T.Type = T.self, _ column: Int) throws -> T {
        guard let text = text(column) else {
            throw PostgresError(
                .decoding, message: "column '\(rows.columns[column])' is NULL, expected \(T.self)")
        }
        return try T(postgresText: text)
    }

    /// Like `decode`, but NULL gives nil instead of an error.
    public func decodeIfPresent<T: PostgresDecodable>(_ type: T.Type = T.self, _ column: Int) throws -> T? {
        guard let text = text(column) else { return nil }
        return try T(postgresText: text)
    }

    public func decode<T: PostgresDecodable>(_ type: T.Type = T.self, _ name: String) throws -> T {
        try decode(type, try rows.columnIndex(name))
    }

    public func decodeIfPresent<T: PostgresDecodable>(_ type: T.Type = T.self, _ name: String) throws -> T? {
        try decodeIfPresent(type, try rows.columnIndex(name))
    }
}
