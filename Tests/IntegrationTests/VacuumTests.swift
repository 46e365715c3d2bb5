import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// Claims stay fast over millions of jobs: every claimed job leaves a dead entry at the front of
/// the claim index, which only VACUUM removes, so workers vacuum canvas.jobs once dead rows pass
/// a threshold (Vacuumer), and migration 0018 makes autovacuum come sooner for roles that may not.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class VacuumTests {
    let database: TestDatabase
    // Roles belong to the whole server: a name of this test's own, dropped with it.
    let role = "pgc_novacuum_t\(UInt32.random(in: 0...UInt32.max))"

    init() throws { database = try TestDatabase() }

    deinit {
        database.drop()
        if let admin = try? Connection.connect(TestDatabase.adminConfiguration) {
            _ = try? admin.executeScript("DROP ROLE IF EXISTS \(quoteIdentifier(role))")
        }
    }

    func int(_ sql: Query, _ c: Connection) throws -> Int { try c.query(sql)[0].decode(Int.self, 0) }

    /// Manual VACUUMs of canvas.jobs so far (autovacuum counts apart).
    func vacuums(_ c: Connection) throws -> Int {
        try int("SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'canvas.jobs'::regclass", c)
    }

    /// What the claim's scan of the claim index reads: its statement, without the locks.
    func claimScanBuffers(_ c: Connection) throws -> Int {
        let plan = try c.query(
            """
            EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
            SELECT x.id FROM canvas.jobs x
            WHERE x.state = 'queued' AND x.queue = 'default' AND (x.expires_at IS NULL OR x.expires_at > now())
            ORDER BY x.priority, x.id LIMIT 16
            """)[0].decode(String.self, 0)
        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(plan.utf8)) as? [[String: Any]])
        let top = try #require(json.first?["Plan"] as? [String: Any])
        return (top["Shared Hit Blocks"] as? Int ?? 0) + (top["Shared Read Blocks"] as? Int ?? 0)
    }

    /// n jobs that went through the claim and the finish, as claims and finishes leave them:
    /// dead entries in the claim index; then their statistics, flushed so the next look sees them.
    func claimAndFinish(_ n: Int, _ c: Connection) throws {
        try c.execute("INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, \(n))")
        try c.execute(
            "UPDATE canvas.jobs SET state = 'running', attempt = 1, started_at = now() WHERE state = 'queued'")
        try c.execute("UPDATE canvas.jobs SET state = 'succeeded', finished_at = now() WHERE state = 'running'")
        try c.execute("SELECT pg_stat_force_next_flush()")
        try c.execute("SELECT 1")
    }

    @Test func aWorkerVacuumsAwayTheClaimedJobsAtTheFrontOfTheClaimIndex() throws {
        let c = try database.connect()
        try claimAndFinish(40_000, c)
        // Scans mark the entries dead but still read their pages: every claim would.
        _ = try claimScanBuffers(c)
        let before = try claimScanBuffers(c)
        #expect(before >= 100, "the dead front of the claim index: \(before) pages")
        #expect(try vacuums(c) == 0)

        let worker = try WorkerProcess(
            databaseURL: database.url, arguments: ["-c", "1", "--heartbeat-interval", "0.5", "--loglevel", "debug"])
        #expect(try eventually(timeout: 20) { try vacuums(c) >= 1 }, "\(worker.log.suffix(3000))")
        let after = try claimScanBuffers(c)
        #expect(after <= 5, "claim index after the worker's VACUUM: \(after) pages (before: \(before))")
        #expect(worker.log.contains("vacuumed canvas.jobs"), "\(worker.log.suffix(3000))")

        // It still runs jobs, and a table with few dead rows is left alone.
        let handle = try signature("canvas.add", 2, 3).enqueue(on: c)
        #expect(try handle.wait(on: c, timeout: 30).result == .int(5))
        let count = try vacuums(c)
        usleep(1_500_000)
        #expect(try vacuums(c) == count, "no VACUUM for a handful of dead rows")
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }

    @Test func theVacuumerWaitsForItsThresholdAndItsInterval() throws {
        let c = try database.connect()
        var vacuumer = Vacuumer(threshold: 5000, scale: 0, interval: 0)
        #expect(try vacuumer.runIfDue(on: c) == .idle, "an empty table")
        try claimAndFinish(1000, c)
        #expect(try vacuumer.runIfDue(on: c) == .idle, "2,000 dead rows, under the threshold")
        #expect(try vacuums(c) == 0)
        try claimAndFinish(2000, c)
        guard case .vacuumed(let dead) = try vacuumer.runIfDue(on: c) else {
            Issue.record("6,000 dead rows: no VACUUM")
            return
        }
        #expect(dead >= 5000)
        #expect(try vacuums(c) == 1)
        // No session setting is left behind (behind a pooler it would be some other client's).
        #expect(try c.query("SHOW client_min_messages")[0].decode(String.self, 0) == "notice")

        // A long table gets a proportionally higher bar: 6,000 finished rows live, 6,000 dead.
        var proportional = Vacuumer(threshold: 5000, scale: 1, interval: 0)
        try claimAndFinish(3000, c)
        #expect(try proportional.runIfDue(on: c) == .idle, "5,000 + 6,000 live × 1 not reached")

        var slow = Vacuumer(threshold: 1000, scale: 0, interval: 3600)
        guard case .vacuumed = try slow.runIfDue(on: c) else {
            Issue.record("the first look is due at once")
            return
        }
        try claimAndFinish(2000, c)
        #expect(try slow.runIfDue(on: c) == .idle, "the next look is an interval later")
        #expect(try slow.runIfDue(on: c, now: Date().addingTimeInterval(3601)) != .idle)
    }

    /// Another VACUUM (or anything holding the lock VACUUM takes) never holds up the
    /// maintenance thread, which must go on heartbeating: the table is skipped, not waited for.
    @Test func aTableAnotherSessionHoldsIsSkippedNotWaitedFor() throws {
        let c = try database.connect()
        try claimAndFinish(3000, c)
        let holder = try database.connect()
        try holder.executeScript("BEGIN; LOCK TABLE canvas.jobs IN SHARE UPDATE EXCLUSIVE MODE")
        var vacuumer = Vacuumer(threshold: 1000, scale: 0, interval: 0)
        let started = Date()
        guard case .vacuumed = try vacuumer.runIfDue(on: c) else {
            Issue.record("6,000 dead rows: no attempt")
            return
        }
        #expect(Date().timeIntervalSince(started) < 2, "waited for the lock")
        #expect(try vacuums(c) == 0, "skipped")
        try holder.executeScript("COMMIT")
        _ = try vacuumer.runIfDue(on: c)
        #expect(try vacuums(c) == 1, "once the lock is gone it vacuums")
    }

    @Test func aRoleThatMayNotVacuumLeavesItToAutovacuumWithoutAWarningEachBeat() throws {
        let admin = try database.connect()
        try admin.executeScript(
            """
            CREATE ROLE \(quoteIdentifier(role)) LOGIN;
            GRANT USAGE ON SCHEMA canvas TO \(quoteIdentifier(role));
            GRANT SELECT ON canvas.jobs TO \(quoteIdentifier(role));
            """)
        try claimAndFinish(3000, admin)
        var components = try #require(URLComponents(string: database.url))
        components.queryItems =
            (components.queryItems ?? []).filter { $0.name != "user" } + [
                URLQueryItem(name: "user", value: role)
            ]
        components.user = nil
        let c = try Connection.connect(ConnectionConfiguration(conninfo: try #require(components.string)))
        var vacuumer = Vacuumer(threshold: 1000, scale: 0, interval: 0)
        #expect(try vacuumer.runIfDue(on: c) == .notPermitted)
        #expect(try vacuumer.runIfDue(on: c) == .idle, "asked once")
        #expect(try vacuums(admin) == 0)
        var owners = Vacuumer(threshold: 1000, scale: 0, interval: 0)
        #expect(try owners.runIfDue(on: admin) == .vacuumed(dead: 6000), "the table's owner may")
        #expect(try vacuums(admin) == 1)
    }

    @Test func migrationMakesAutovacuumComeSoonerAndOrdersFinishedJobsByTimeAndId() throws {
        let c = try database.connect()
        #expect(
            try c.query("SELECT pg_get_indexdef('canvas.jobs_finished_idx'::regclass)")[0].decode(String.self, 0)
                .contains("(finished_at, id) WHERE"))
        let options = try c.query(
            "SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = 'canvas.jobs'::regclass"
        )[0].decode(String.self, 0).split(separator: ",").map(String.init)
        #expect(
            Set(options)
                == [
                    "autovacuum_vacuum_threshold=10000", "autovacuum_vacuum_scale_factor=0.05",
                    "autovacuum_vacuum_cost_limit=2000",
                ])
    }
}
