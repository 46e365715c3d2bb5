import CLibPQ
import Foundation

/// One libpq connection.
///
/// Every call blocks the calling thread until the server answers, so use a connection from a
/// thread of its own (never from Swift's cooperative pool) and from one thread at a time.
/// `@unchecked Sendable` is justified by that rule, which the worker runtime keeps by giving
/// each connection to exactly one thread; `cancel()` is the one method meant for other threads.
///
/// ```swift
/// let db = try Connection.connect(.resolve(databaseURL: nil))   // DATABASE_URL, else libpq's PG* variables
/// let voters = try db.query("SELECT count(*) FROM voter")[0].decode(Int.self, 0)
/// let deleted = try db.withTransaction { tx in try tx.execute("DELETE FROM voter WHERE voter_id = \(id)") }
/// ```
public final class Connection: @unchecked Sendable {
    let pg: OpaquePointer
    private var cancelHandle: OpaquePointer?
    private let cancelLock = NSLock()

    /// Opens a connection. It sends no start-up `options` and sets nothing for the session, so it
    /// works through PgBouncer in transaction pooling mode (which refuses `options`): timestamps
    /// are parsed with the offset the server writes, whatever its `TimeZone`.
    /// - Throws: `PostgresError` with `.connectionFailed`, naming the host, port or socket tried
    ///   and the server's message (never the password); `.misuse` when the server writes dates in
    ///   a style other than ISO (`DateStyle`), which no decoder here reads.
    public static func connect(_ configuration: ConnectionConfiguration) throws -> Connection {
        var keys = ["dbname", "application_name"]
        var values = [configuration.conninfo, configuration.applicationName]
        if let timeout = configuration.connectTimeout {
            // Before dbname, whose expanded conninfo overrides it when it sets one of its own.
            keys.insert("connect_timeout", at: 0)
            values.insert(String(max(1, timeout)), at: 0)
        }
        if let db = configuration.overrideDatabase {
            keys.append("dbname")
            values.append(db)
        }
        let conn = withCStringArray(keys) { k in
            withCStringArray(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let conn else {
            throw PostgresError(.connectionFailed, message: "could not allocate a libpq connection")
        }
        if PQstatus(conn) != CONNECTION_OK {
            let message = oneLine(String(cString: PQerrorMessage(conn)))
            PQfinish(conn)
            // libpq gives no SQLSTATE for a refused start-up, only the text: the server's (in
            // English, its default lc_messages) or PgBouncer's when its max_client_conn is reached.
            let full =
                ["too many clients already", "remaining connection slots are reserved", "no more connections allowed"]
                .contains { message.contains($0) }
            throw PostgresError(
                .connectionFailed, message: "cannot connect to PostgreSQL: \(message)",
                sqlState: full ? PostgresError.State.tooManyConnections : nil)
        }
        // Reported by the server (and by PgBouncer, which tracks it) at start-up: no round trip.
        // ISO is PostgreSQL's default; another style is a setting someone chose, so it is named
        // rather than overridden (a SET would not survive transaction pooling anyway).
        let dateStyle = PQparameterStatus(conn, "DateStyle").map { String(cString: $0) } ?? ""
        if !dateStyle.hasPrefix("ISO") {
            PQfinish(conn)
            throw PostgresError(
                .misuse,
                message: "the server writes dates as '\(dateStyle)' (DateStyle); pgcanvas reads ISO only: "
                    + "ALTER DATABASE … SET DateStyle = 'ISO, MDY' (or ALTER ROLE …)")
        }
        return Connection(pg: conn)
    }

    init(pg: OpaquePointer) {
        self.pg = pg
        // Notices (e.g. "relation already exists, skipping") are not errors; keep them off stderr.
        PQsetNoticeProcessor(pg, { _, _ in }, nil)
    }

    deinit {
        if let cancelHandle { PQfreeCancel(cancelHandle) }
        PQfinish(pg)
    }

    /// The server process serving this connection (for `pg_terminate_backend`, logs).
    public var backendPID: Int32 { PQbackendPID(pg) }

    /// False once the connection has broken; make a new one then.
    public var isHealthy: Bool { PQstatus(pg) == CONNECTION_OK }

    /// Runs one statement with bound parameters and returns its rows.
    @discardableResult
    public func query(_ query: Query) throws -> Rows {
        let result = execParams(query)
        defer { PQclear(result) }
        return try rows(from: result, query: query.sql)
    }

    /// Runs one statement; returns the number of rows it changed.
    @discardableResult
    public func execute(_ query: Query) throws -> Int {
        try self.query(query).affectedRows
    }

    /// Runs a script of one or more statements without parameters (migrations, set-up).
    /// Only for SQL text the program owns.
    public func executeScript(_ sql: String) throws {
        let result = PQexec(pg, sql)
        defer { PQclear(result) }
        _ = try rows(from: result, query: String(sql.prefix(200)))
    }

    /// Asks the server to cancel whatever this connection is running. Safe from any thread.
    public func cancel() {
        cancelLock.lock()
        defer { cancelLock.unlock() }
        if cancelHandle == nil { cancelHandle = PQgetCancel(pg) }
        guard let cancelHandle else { return }
        var buffer = [CChar](repeating: 0, count: 256)
        _ = PQcancel(cancelHandle, &buffer, 256)
    }

    private func execParams(_ query: Query) -> OpaquePointer? {
        let count = query.parameters.count
        if count == 0 {
            return PQexecParams(pg, query.sql, 0, nil, nil, nil, nil, 0)
        }
        let types = query.parameters.map { Oid($0.type) }
        let texts = query.parameters.map(\.text)
        return withCStringArray(texts) { values in
            PQexecParams(pg, query.sql, Int32(count), types, values, nil, nil, 0)
        }
    }

    func rows(from result: OpaquePointer?, query: String) throws -> Rows {
        guard let result else { throw connectionError(query: query) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return Rows(columns: [], values: [], affectedRows: affected(result))
        case PGRES_TUPLES_OK, PGRES_SINGLE_TUPLE:
            let nrows = Int(PQntuples(result))
            let ncols = Int(PQnfields(result))
            var columns: [String] = []
            columns.reserveCapacity(ncols)
            for c in 0..<ncols { columns.append(String(cString: PQfname(result, Int32(c)))) }
            var values: [String?] = []
            values.reserveCapacity(nrows * ncols)
            for r in 0..<nrows {
                for c in 0..<ncols {
                    if PQgetisnull(result, Int32(r), Int32(c)) == 1 {
                        values.append(nil)
                    } else {
                        values.append(String(cString: PQgetvalue(result, Int32(r), Int32(c))))
                    }
                }
            }
            return Rows(columns: columns, values: values, affectedRows: nrows)
        default:
            throw error(from: result, query: query)
        }
    }

    private func affected(_ result: OpaquePointer) -> Int {
        Int(String(cString: PQcmdTuples(result))) ?? 0
    }

    func error(from result: OpaquePointer, query: String?) -> PostgresError {
        func field(_ code: UInt8) -> String? {
            guard let p = PQresultErrorField(result, Int32(code)) else { return nil }
            return String(cString: p)
        }
        let sqlState = field(UInt8(ascii: "C"))
        if PQstatus(pg) != CONNECTION_OK,
            sqlState == nil || sqlState?.hasPrefix("57P") == true
                || sqlState?.hasPrefix("08") == true
        {
            return connectionError(query: query)
        }
        let message = field(UInt8(ascii: "M")) ?? oneLine(String(cString: PQresultErrorMessage(result)))
        return PostgresError(
            .server, message: message, sqlState: sqlState, detail: field(UInt8(ascii: "D")),
            hint: field(UInt8(ascii: "H")), query: query)
    }

    func connectionError(query: String?) -> PostgresError {
        let message = oneLine(String(cString: PQerrorMessage(pg)))
        return PostgresError(
            .connectionLost,
            message: "lost the connection to PostgreSQL: \(message.isEmpty ? "no answer" : message)", query: query)
    }
}

func oneLine(_ text: String) -> String {
    text.split(whereSeparator: { $0 == "\n" || $0 == "\t" || $0 == "\r" })
        .map { $0.trimmingCharacters(in: .whitespaces) }
        .filter { !$0.isEmpty }
        .joined(separator: " ")
}

/// Calls `body` with a NULL-terminated array of C strings that live for the call; a nil entry
/// stays NULL (an SQL NULL parameter). libpq's own: libpq takes `const char *const *`, where
/// posix_spawn (the one in PGCanvas) takes `char *const *`.
private func withCStringArray<R>(_ strings: [String?], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let pointers: [UnsafeMutablePointer<CChar>?] = strings.map { $0.map { strdup($0) } ?? nil } + [nil]
    defer { pointers.forEach { free($0) } }
    return body(pointers.map { UnsafePointer($0) })
}
