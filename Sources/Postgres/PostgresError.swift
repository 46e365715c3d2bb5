/// Every failure of the Postgres layer: one struct with a code and context, in the manner of
/// postgres-nio's `PSQLError`.
///
/// `description` is a single line fit for a user: it never contains bound parameter values or a
/// password. `debugDescription` adds the SQL text and the server's detail and hint.
///
/// ```swift
/// do {
///     try db.execute("INSERT INTO voter (voter_id, voter_name) VALUES (\(id), \(name))")
/// } catch let error as PostgresError where error.sqlState == PostgresError.State.uniqueViolation {
///     print(error)   // one line, without the bound values: "duplicate key value … (SQLSTATE 23505)"
/// }
/// ```
public struct PostgresError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// What kind of failure this is, before any SQLSTATE.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        /// The server could not be reached or refused the connection.
        public static let connectionFailed = Code(raw: "connectionFailed")
        /// An established connection broke (server restart, network, terminated backend).
        public static let connectionLost = Code(raw: "connectionLost")
        /// The server answered with an error (see `sqlState`).
        public static let server = Code(raw: "server")
        /// A value could not be decoded into the requested Swift type.
        public static let decoding = Code(raw: "decoding")
        /// Using the API in a way that cannot work (wrong column, COPY in the wrong state, …).
        public static let misuse = Code(raw: "misuse")
        /// Waiting for a notification or a result took longer than allowed.
        public static let timeout = Code(raw: "timeout")
        public var description: String { raw }
    }

    public var code: Code
    /// The five-character SQLSTATE the server sent, when it sent one.
    public var sqlState: String?
    public var message: String
    public var detail: String?
    public var hint: String?
    /// The SQL text (never the bound values).
    public var query: String?

    public init(
        _ code: Code, message: String, sqlState: String? = nil, detail: String? = nil, hint: String? = nil,
        query: String? = nil
    ) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
        self.detail = detail
        self.hint = hint
        self.query = query
    }

    /// True when retrying on a fresh connection might succeed.
    public var isConnectionProblem: Bool { code == .connectionFailed || code == .connectionLost }

    /// True when the same statement may well succeed if sent again: the connection broke, a lock
    /// or deadlock got in the way, the server is short of resources or shutting down, or the
    /// schema is missing (being migrated). Anything else the server refused (the values it
    /// carried, a statement timeout, an internal error) would be refused again.
    public var isTransient: Bool {
        if isConnectionProblem { return true }
        guard code == .server, let sqlState else { return false }
        if sqlState.hasPrefix("57P") { return true }  // admin or crash shutdown, cannot connect now
        return ["08", "40", "53", "55", "42", "3D", "3F"].contains(String(sqlState.prefix(2)))
    }

    /// A statement timeout, an internal or an I/O error: not the data's fault, and often gone on a
    /// second try, yet it can also come back every time. Callers try again a few times before
    /// treating it as final.
    public var mayPassLater: Bool {
        guard code == .server, let sqlState else { return false }
        return sqlState == State.queryCanceled || sqlState.hasPrefix("XX") || sqlState.hasPrefix("58")
    }

    public var description: String {
        if let sqlState { return "\(message) (SQLSTATE \(sqlState))" }
        return message
    }

    public var debugDescription: String {
        var parts = ["PostgresError(\(code)): \(description)"]
        if let detail { parts.append("detail: \(detail)") }
        if let hint { parts.append("hint: \(hint)") }
        if let query { parts.append("query: \(query)") }
        return parts.joined(separator: "\n  ")
    }
}

extension PostgresError {
    /// SQLSTATEs callers commonly branch on, by name.
    public enum State {
        public static let uniqueViolation = "23505"
        public static let foreignKeyViolation = "23503"
        public static let undefinedTable = "42P01"
        public static let undefinedFunction = "42883"
        public static let queryCanceled = "57014"
        public static let adminShutdown = "57P01"
        public static let serializationFailure = "40001"
        public static let deadlockDetected = "40P01"
        public static let invalidCatalogName = "3D000"
        public static let raiseException = "P0001"
        /// "sorry, too many clients already" and its kin; set on a refused connection too.
        public static let tooManyConnections = "53300"
    }
}
