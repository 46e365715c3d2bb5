import Foundation
import Postgres

/// Vacuums `canvas.jobs` whenever it has gathered enough dead rows, so that claims stay fast.
///
/// Every claim turns a queued row into a running one, so the claim index (`jobs_queued_idx`)
/// keeps an entry for each claimed job at its front, where every claim's scan starts. Scans mark
/// those entries dead, but only VACUUM takes them (and their emptied pages) out: until then each
/// claim walks past all the jobs claimed since the last VACUUM. At tens of thousands of jobs a
/// second that is thousands of index pages a claim within a minute, and autovacuum comes by once
/// a minute at best (`autovacuum_naptime`, a server-wide setting): a 10-million-job soak fell from
/// 25,000 to 3,000 jobs/s within 20 s (docs/benchmarks.md). So the worker's maintenance thread
/// vacuums the table itself, between two heartbeats, once dead rows pass a threshold.
///
/// Workers of a fleet do not pile up: `SKIP_LOCKED` skips a table another VACUUM (or autovacuum)
/// holds, and the count of dead rows drops once one has run. Only a role that may vacuum the
/// table (its owner's, the database owner's, a superuser) tries; a least-privilege worker role
/// leaves it to autovacuum, which migration 0018 makes come sooner for this table.
public struct Vacuumer: Sendable {
    /// Dead rows (as the statistics count them) before a VACUUM, plus `scale` of the live rows:
    /// a table that keeps a long history (`--prune-after` of a day) is vacuumed less often,
    /// since each VACUUM then reads large indexes.
    public var threshold: Int
    public var scale: Double
    /// Seconds between two looks at the statistics.
    public var interval: Double

    private var nextRun = Date.distantPast
    /// Whether this connection's role may vacuum canvas.jobs; asked once.
    private var permitted: Bool?

    public init(threshold: Int = 10_000, scale: Double = 0.05, interval: Double = 2) {
        self.threshold = threshold
        self.scale = scale
        self.interval = interval
    }

    public enum Outcome: Sendable, Equatable {
        /// Not due, or too few dead rows.
        case idle
        /// VACUUM ran (or found the table busy with another VACUUM and skipped it).
        case vacuumed(dead: Int)
        /// The role may not vacuum the table; reported once, then `idle` for good.
        case notPermitted
    }

    /// - Parameter perform: runs the VACUUM (a worker's: on a thread and connection of its own, so
    ///   that a long one never delays a heartbeat); nil runs it on `c`.
    public mutating func runIfDue(
        on c: Connection, now: Date = Date(), perform: ((Int) throws -> Void)? = nil
    ) throws -> Outcome {
        guard now >= nextRun, permitted != false else { return .idle }
        nextRun = now.addingTimeInterval(interval)
        if permitted == nil {
            // VACUUM's own rule in PostgreSQL 15: the table's owner or the database's (a member
            // of either role), or a superuser (who has every role).
            let may = try c.query(
                """
                SELECT pg_has_role(current_user, c.relowner, 'USAGE')
                    OR pg_has_role(current_user, d.datdba, 'USAGE')
                FROM pg_class c, pg_database d
                WHERE c.oid = 'canvas.jobs'::regclass AND d.datname = current_database()
                """)[0].decode(Bool.self, 0)
            permitted = may
            if !may { return .notPermitted }
        }
        // Not while another VACUUM has the table: SKIP_LOCKED would skip it anyway, with a
        // warning on stderr (which only a race between the two statements still gives). Session
        // settings to hush it are out: behind a pooler in transaction mode they would land on
        // some other client's server connection.
        let dead = try c.query(
            """
            SELECT n_dead_tup FROM pg_stat_user_tables
            WHERE relid = 'canvas.jobs'::regclass AND n_dead_tup >= \(threshold) + \(scale) * n_live_tup
              AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_vacuum WHERE relid = 'canvas.jobs'::regclass)
            """)
        guard let row = dead.first else { return .idle }
        let count = try row.decode(Int.self, 0)
        // INDEX_CLEANUP ON: the index is the point, and AUTO skips it when few heap pages hold
        // dead rows (a large table, a quiet hour), leaving the claim index's front as it was.
        if let perform { try perform(count) } else { try Self.vacuum(on: c) }
        return .vacuumed(dead: count)
    }

    public static func vacuum(on c: Connection) throws {
        try c.executeScript("VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON) canvas.jobs")
    }
}
