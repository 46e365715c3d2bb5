import Foundation
import Logging
import Postgres

/// Applies numbered SQL migrations (tables, indexes, types) in order, each in its own transaction,
/// and records each with a checksum in `public.pgcanvas_migrations`; then, when any function file
/// changed, drops every function of the `canvas` schema and applies all function files again in
/// one transaction, so the functions in the database are exactly those in the files.
///
/// Concurrent runs are serialised by a session advisory lock, so two `voteradmin migrate` at once
/// apply every file exactly once. A numbered file whose text changed after it was applied stops
/// the run.
///
/// ```swift
/// let files = try Migration.load(from: URL(fileURLWithPath: "db/migrations"))   // 0001_name.sql, …
/// let migrator = Migrator(migrations: files, table: "app_migrations")   // recorded apart from pgcanvas's own
/// let applied = try migrator.migrate(db)   // empty when nothing was pending
/// let pending = try migrator.status(db).pending   // [] now
/// ```
public struct Migrator: Sendable {
    /// The advisory lock key (a fixed number: "pgcanvas" spelled in ASCII, truncated).
    static let lockKey = 0x7067_6361_6e76
    /// The schema whose functions the function files own.
    static let functionSchema = "canvas"

    /// Checksums of numbered files as they were before their functions moved to functions/*.sql.
    /// A database that applied one of these has the same tables; its functions are replaced by
    /// the function files, so the record is brought up to date instead of stopping the run.
    static let superseded: [Int: Set<String>] = [
        2: ["30db645a141a994f93d969394bc920ce"],
        3: ["c5320bd878d2995774589a65fe6b2d74"],
        5: ["872cba1179f6f9de4cd077edce425a36"],
        6: ["662e74404c00f2ce246877b6453140e1"],
    ]

    /// Rows earlier builds recorded in `pgcanvas_migrations` for files that now belong to an
    /// application (version: name).
    static let movedOut: [Int: String] = [1: "voter_rolls"]

    public var migrations: [Migration]
    public var functions: [FunctionScript]
    public var logger: Logger
    /// Where this set of migrations is recorded (in schema `public`): pgcanvas's own, or an
    /// application's, so that each numbers its files from 1 without meeting the other's.
    public var table: String
    /// Versions that earlier builds recorded in `pgcanvas_migrations` and this set now owns: they
    /// are moved to `table`, as applied, before anything else (the voter-roll schema's 0001).
    public var adopting: [Int]

    public init(
        migrations: [Migration], functions: [FunctionScript] = [], table: String = "pgcanvas_migrations",
        adopting: [Int] = [], logger: Logger = Logger(label: "pgcanvas.migrate")
    ) {
        self.migrations = migrations
        self.functions = functions
        self.table = table
        self.adopting = adopting
        self.logger = logger
    }

    /// `public.<table>`, quoted: the table's name comes from the program, never from input.
    var tableName: String { "public.\(quoteIdentifier(table))" }

    /// The migrations and function files shipped with this package.
    public static func bundled(logger: Logger = Logger(label: "pgcanvas.migrate")) throws -> Migrator {
        Migrator(migrations: try Migration.bundled(), functions: try FunctionScript.bundled(), logger: logger)
    }

    /// What a run applied.
    public struct Applied: Sendable {
        public var migrations: [Migration]
        /// Function files applied again because one of them changed (all of them, or none).
        public var functionFiles: [String]
        public var isEmpty: Bool { migrations.isEmpty && functionFiles.isEmpty }
    }

    /// What is applied and what is pending, without changing anything.
    public struct Status: Sendable {
        public var applied: [(migration: Migration, appliedAt: Date)]
        public var pending: [Migration]
        /// Function files not applied in this version (all of them when any changed).
        public var pendingFunctionFiles: [String] = []
        /// Versions recorded with a checksum from `superseded`, and the checksum they now have.
        var superseded: [(version: Int, checksum: String)] = []
    }

    /// Applies what is pending. - Returns: what it applied (empty when nothing was due).
    @discardableResult
    public func migrate(_ connection: Connection) throws -> Applied {
        try withLock(connection) {
            try ensureTable(connection)
            try adopt(connection)
            let status = try readStatus(connection)
            for (version, checksum) in status.superseded {
                try connection.execute(
                    "UPDATE \(unescaped: tableName) SET checksum = \(checksum) WHERE version = \(version)")
            }
            for migration in status.pending {
                let started = Date()
                try connection.withTransaction { tx in
                    try tx.executeScript(migration.sql)
                    try tx.execute(
                        """
                        INSERT INTO \(unescaped: tableName) (version, name, checksum)
                        VALUES (\(migration.version), \(migration.name), md5(\(migration.sql)))
                        """)
                }
                logger.info(
                    "applied migration",
                    metadata: [
                        "migration.file": "\(migration.fileName)",
                        "migration.ms": "\(Int(Date().timeIntervalSince(started) * 1000))",
                    ])
            }
            let functionFiles = try applyFunctions(connection, force: !status.superseded.isEmpty)
            return Applied(migrations: status.pending, functionFiles: functionFiles)
        }
    }

    /// Moves the rows of `adopting` from `pgcanvas_migrations` (where an earlier build put them).
    private func adopt(_ connection: Connection) throws {
        guard !adopting.isEmpty, table != "pgcanvas_migrations" else { return }
        let legacy: Bool = try connection.query("SELECT to_regclass('public.pgcanvas_migrations') IS NOT NULL")[0]
            .decode(Bool.self, 0)
        guard legacy else { return }
        // One statement: the rows move entirely or not at all.
        try connection.execute(
            """
                WITH moved AS (
                    DELETE FROM public.pgcanvas_migrations WHERE version = ANY(\(adopting)) RETURNING *
                )
                INSERT INTO \(unescaped: tableName) (version, name, checksum, applied_at)
                SELECT version, name, checksum, applied_at FROM moved
                ON CONFLICT (version) DO NOTHING
            """)
    }

    /// Drops the schema's functions and applies every function file, when any changed.
    private func applyFunctions(_ connection: Connection, force: Bool) throws -> [String] {
        guard !functions.isEmpty else { return [] }
        let stale = try functionsStale(connection)
        guard stale || force else { return [] }
        let started = Date()
        try connection.withTransaction { tx in
            // Bodies refer to each other across files; they are checked when first called.
            try tx.execute("SET LOCAL check_function_bodies = off")
            try tx.executeScript(
                """
                DO $$
                DECLARE f regprocedure;
                BEGIN
                    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
                             WHERE p.pronamespace = '\(Self.functionSchema)'::regnamespace LOOP
                        EXECUTE format('DROP FUNCTION %s CASCADE', f);
                    END LOOP;
                END
                $$
                """)
            for script in functions { try tx.executeScript(script.sql) }
            try tx.execute("DELETE FROM public.pgcanvas_functions")
            try tx.execute(
                """
                INSERT INTO public.pgcanvas_functions (name, checksum)
                SELECT n, md5(s) FROM unnest(\(functions.map(\.name)), \(functions.map(\.sql))) AS f(n, s)
                """)
        }
        logger.info(
            "applied function files",
            metadata: [
                "files": "\(functions.map(\.fileName).joined(separator: ", "))",
                "migration.ms": "\(Int(Date().timeIntervalSince(started) * 1000))",
            ])
        return functions.map(\.fileName)
    }

    /// Whether the recorded function files differ from this build's.
    private func functionsStale(_ connection: Connection) throws -> Bool {
        try connection.query(
            """
            SELECT EXISTS (
                SELECT name, checksum FROM public.pgcanvas_functions
                EXCEPT SELECT n, md5(s) FROM unnest(\(functions.map(\.name)), \(functions.map(\.sql))) AS f(n, s)
            ) OR EXISTS (
                SELECT n, md5(s) FROM unnest(\(functions.map(\.name)), \(functions.map(\.sql))) AS f(n, s)
                EXCEPT SELECT name, checksum FROM public.pgcanvas_functions
            )
            """)[0].decode(Bool.self, 0)
    }

    /// What is applied and what is pending, without changing anything.
    public func status(_ connection: Connection) throws -> Status {
        let exists: Bool = try connection.query("SELECT to_regclass(\(tableName)) IS NOT NULL")[0]
            .decode(Bool.self, 0)
        if !exists {
            return Status(applied: [], pending: migrations, pendingFunctionFiles: functions.map(\.fileName))
        }
        var status = try readStatus(connection)
        let functionsTable: Bool = try connection.query(
            "SELECT to_regclass('public.pgcanvas_functions') IS NOT NULL")[0].decode(Bool.self, 0)
        if !functions.isEmpty {
            let stale = try !functionsTable || !status.superseded.isEmpty || functionsStale(connection)
            if stale { status.pendingFunctionFiles = functions.map(\.fileName) }
        }
        return status
    }

    private func ensureTable(_ connection: Connection) throws {
        try connection.executeScript(
            """
            CREATE TABLE IF NOT EXISTS \(tableName) (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """)
        guard !functions.isEmpty else { return }
        try connection.executeScript(
            """
            CREATE TABLE IF NOT EXISTS public.pgcanvas_functions (
                name       text PRIMARY KEY,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """)
    }

    private func readStatus(_ connection: Connection) throws -> Status {
        let rows = try connection.query(
            """
            SELECT m.version, m.name, m.checksum, m.applied_at, f.checksum AS file_checksum
            FROM \(unescaped: tableName) m
            LEFT JOIN unnest(\(migrations.map(\.version)), \(migrations.map(\.sql))) AS f_in(version, sql)
              ON f_in.version = m.version
            LEFT JOIN LATERAL (SELECT md5(f_in.sql) AS checksum) f ON true
            ORDER BY m.version
            """)
        var applied: [(Migration, Date)] = []
        var appliedVersions = Set<Int>()
        var superseded: [(version: Int, checksum: String)] = []
        for row in rows {
            let version: Int = try row.decode(Int.self, "version")
            let name: String = try row.decode(String.self, "name")
            // Recorded here by builds before the demo's schema moved out; the demo's migrator
            // takes the row over. Until it runs, it is none of this set's business.
            if table == "pgcanvas_migrations", Self.movedOut[version] == name { continue }
            guard let migration = migrations.first(where: { $0.version == version }) else {
                throw MigrationError(
                    "the database has migration \(String(format: "%04d", version))_\(name) applied, "
                        + "but this build does not know it: it is newer than this program")
            }
            let recorded: String = try row.decode(String.self, "checksum")
            let current: String = try row.decode(String.self, "file_checksum")
            if recorded != current, Self.superseded[version]?.contains(recorded) == true {
                superseded.append((version, current))
            } else if recorded != current {
                throw MigrationError(
                    "migration \(migration.fileName) was changed after it was applied "
                        + "(checksum \(recorded) in the database, \(current) now); "
                        + "restore the file and put the change in a new migration")
            }
            applied.append((migration, try row.decode(Date.self, "applied_at")))
            appliedVersions.insert(version)
        }
        return Status(
            applied: applied, pending: migrations.filter { !appliedVersions.contains($0.version) },
            superseded: superseded)
    }

    private func withLock<T>(_ connection: Connection, _ body: () throws -> T) throws -> T {
        try connection.execute("SELECT pg_advisory_lock(\(Self.lockKey))")
        defer { _ = try? connection.execute("SELECT pg_advisory_unlock(\(Self.lockKey))") }
        return try body()
    }
}

/// pgcanvas's schema in one call, for an application that sets up its own database:
/// `try PGCanvasMigrations.apply(on: connection)`. Safe to run at every start, and from several
/// processes at once.
///
/// ```swift
/// let db = try Connection.connect(.resolve(databaseURL: nil))
/// try PGCanvasMigrations.apply(on: db)   // applies what is pending; nothing when up to date
/// ```
public enum PGCanvasMigrations {
    /// - Parameter logger: where each applied file is logged; by default only warnings show.
    @discardableResult
    public static func apply(on connection: Connection, logger: Logger? = nil) throws -> Migrator.Applied {
        var quiet = Logger(label: "pgcanvas.migrate")
        quiet.logLevel = .warning
        return try Migrator.bundled(logger: logger ?? quiet).migrate(connection)
    }
}
