import Foundation
import Logging
import Postgres

/// Applies numbered SQL migrations in order, each in its own transaction, and records each with
/// a checksum in `public.pgcanvas_migrations`.
///
/// Concurrent runs are serialised by a session advisory lock, so two `voteradmin migrate` at once
/// apply every file exactly once. A file whose text changed after it was applied stops the run.
public struct Migrator: Sendable {
    /// The advisory lock key (a fixed number: "pgcanvas" spelled in ASCII, truncated).
    static let lockKey = 0x7067_6361_6e76

    public var migrations: [Migration]
    public var logger: Logger

    public init(migrations: [Migration], logger: Logger = Logger(label: "pgcanvas.migrate")) {
        self.migrations = migrations
        self.logger = logger
    }

    public struct Status: Sendable {
        public var applied: [(migration: Migration, appliedAt: Date)]
        public var pending: [Migration]
    }

    /// Applies what is pending. - Returns: the migrations it applied (empty when none were due).
    @discardableResult
    public func migrate(_ connection: Connection) throws -> [Migration] {
        try withLock(connection) {
            try ensureTable(connection)
            let status = try readStatus(connection)
            for migration in status.pending {
                let started = Date()
                try connection.withTransaction { tx in
                    try tx.executeScript(migration.sql)
                    try tx.execute(
                        """
                        INSERT INTO public.pgcanvas_migrations (version, name, checksum)
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
            return status.pending
        }
    }

    /// What is applied and what is pending, without changing anything.
    public func status(_ connection: Connection) throws -> Status {
        let exists: Bool = try connection.query("SELECT to_regclass('public.pgcanvas_migrations') IS NOT NULL")[0]
            .decode(Bool.self, 0)
        if !exists { return Status(applied: [], pending: migrations) }
        return try readStatus(connection)
    }

    private func ensureTable(_ connection: Connection) throws {
        try connection.executeScript(
            """
            CREATE TABLE IF NOT EXISTS public.pgcanvas_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """)
    }

    private func readStatus(_ connection: Connection) throws -> Status {
        let rows = try connection.query(
            """
            SELECT m.version, m.name, m.checksum, m.applied_at, f.checksum AS file_checksum
            FROM public.pgcanvas_migrations m
            LEFT JOIN unnest(\(migrations.map(\.version)), \(migrations.map(\.sql))) AS f_in(version, sql)
              ON f_in.version = m.version
            LEFT JOIN LATERAL (SELECT md5(f_in.sql) AS checksum) f ON true
            ORDER BY m.version
            """)
        var applied: [(Migration, Date)] = []
        var appliedVersions = Set<Int>()
        for row in rows {
            let version: Int = try row.decode(Int.self, "version")
            let name: String = try row.decode(String.self, "name")
            guard let migration = migrations.first(where: { $0.version == version }) else {
                throw MigrationError(
                    "the database has migration \(String(format: "%04d", version))_\(name) applied, "
                        + "but this build does not know it: it is newer than this program")
            }
            let recorded: String = try row.decode(String.self, "checksum")
            let current: String = try row.decode(String.self, "file_checksum")
            if recorded != current {
                throw MigrationError(
                    "migration \(migration.fileName) was changed after it was applied "
                        + "(checksum \(recorded) in the database, \(current) now); "
                        + "restore the file and put the change in a new migration")
            }
            applied.append((migration, try row.decode(Date.self, "applied_at")))
            appliedVersions.insert(version)
        }
        return Status(applied: applied, pending: migrations.filter { !appliedVersions.contains($0.version) })
    }

    private func withLock<T>(_ connection: Connection, _ body: () throws -> T) throws -> T {
        try connection.execute("SELECT pg_advisory_lock(\(Self.lockKey))")
        defer { _ = try? connection.execute("SELECT pg_advisory_unlock(\(Self.lockKey))") }
        return try body()
    }
}
