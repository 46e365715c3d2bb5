/// A SQL statement with its bound parameters.
///
/// String interpolation binds values: `"SELECT * FROM voter WHERE voter_id = \(id)"` sends
/// `$1` and `id` separately, so user data can never be spliced into SQL text. Raw SQL needs
/// the explicit `Query(unsafeSQL:)` or `\(unescaped:)`, and only ever for text the program
/// itself wrote.
///
/// ```swift
/// let name = "O'Brien"
/// let rows = try db.query("SELECT voter_id FROM voter WHERE voter_name = \(name)")   // name is sent as $1
/// let table = "voter"   // written by the program, never user input
/// let count = try db.query("SELECT count(*) FROM \(unescaped: table)")[0].decode(Int.self, 0)
/// ```
public struct Query: Sendable, ExpressibleByStringInterpolation, CustomStringConvertible {
    public var sql: String
    public var parameters: [Parameter]

    /// One bound value: its text form (or NULL) and its type.
    public struct Parameter: Sendable {
        public var type: UInt32
        public var text: String?
    }

    public init(unsafeSQL sql: String, parameters: [Parameter] = []) {
        self.sql = sql
        self.parameters = parameters
    }

    public init(stringLiteral value: String) {
        self.init(unsafeSQL: value)
    }

    public init(stringInterpolation: StringInterpolation) {
        self.init(unsafeSQL: stringInterpolation.sql, parameters: stringInterpolation.parameters)
    }

    /// Appends a bound value and returns its placeholder (`$n`), for building statements in code.
    public mutating func bind<T: PostgresEncodable>(_ value: T) -> String {
        parameters.append(Parameter(type: T.postgresType, text: value.postgresText))
        return "$\(parameters.count)"
    }

    public var description: String { sql }

    /// Turns each `\(value)` into a `$n` parameter; only `\(unescaped:)` adds text to the SQL.
    public struct StringInterpolation: StringInterpolationProtocol {
        var sql = ""
        var parameters: [Parameter] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            sql.reserveCapacity(literalCapacity + interpolationCount * 3)
        }

        public mutating func appendLiteral(_ literal: String) { sql += literal }

        public mutating func appendInterpolation<T: PostgresEncodable>(_ value: T) {
            parameters.append(Parameter(type: T.postgresType, text: value.postgresText))
            sql += "$\(parameters.count)"
        }

        /// An optional binds as its value, or as NULL. (Its own overload, so the compiler does not
        /// mistake it for an Optional printed into text.)
        public mutating func appendInterpolation<T: PostgresEncodable>(_ value: T?) {
            parameters.append(Parameter(type: T.postgresType, text: value?.postgresText))
            sql += "$\(parameters.count)"
        }

        /// Splices program-written SQL (an identifier, a fragment) into the text. Never user data.
        public mutating func appendInterpolation(unescaped fragment: String) { sql += fragment }
    }
}
