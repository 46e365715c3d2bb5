import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// Pruning keeps up with the fleet (batches, one pruner at a time, every scan on an index) and
/// covers finished chords and schedule firings, without deleting what is still needed.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class RetentionTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func count(_ sql: Query, _ c: Connection) throws -> Int { try c.query(sql)[0].decode(Int.self, 0) }

    /// Adds a schedule and its firings, `daysAgo` each, and returns the schedule's id.
    func schedule(_ name: String, firedDaysAgo days: [Int], _ c: Connection) throws -> Int64 {
        let id: Int64 = try c.query(
            """
            INSERT INTO canvas.schedules (name, canvas, every_seconds, next_fire_at)
            VALUES (\(name), '{"task": "canvas.noop"}', 86400, now() + interval '1 day') RETURNING id
            """)[0].decode(Int64.self, 0)
        try c.execute(
            """
            INSERT INTO canvas.schedule_firings (schedule_id, fire_at, fired_at)
            SELECT \(id), date_trunc('second', now()) - d * interval '1 day', now() - d * interval '1 day'
            FROM unnest(\(days.map(Int32.init))::int[]) AS d
            """)
        return id
    }

    @Test func deletesEveryOldFinishedJobAcrossManyBatchesAndNothingElse() throws {
        let c = try database.connect()
        // Half of them finished in the same transaction (one finished_at), as a batch of outcomes
        // does: the cursor must get through ties that straddle batches.
        try c.executeScript(
            """
            INSERT INTO canvas.jobs (task, state, finished_at)
            SELECT 'canvas.noop', (ARRAY['succeeded', 'failed', 'cancelled'])[1 + g % 3],
                   CASE WHEN g % 2 = 0 THEN now() - interval '2 days' ELSE now() - interval '3 days' + g * interval '1 ms' END
            FROM generate_series(1, 12345) g;
            INSERT INTO canvas.jobs (task, state, finished_at) SELECT 'canvas.noop', 'succeeded', now()
            FROM generate_series(1, 7);
            INSERT INTO canvas.jobs (task, created_at) SELECT 'canvas.noop', now() - interval '3 days'
            FROM generate_series(1, 5);
            INSERT INTO canvas.jobs (task, state, started_at) SELECT 'canvas.noop', 'running', now() - interval '3 days'
            FROM generate_series(1, 3);
            """)
        var pruner = Pruner(age: 86_400, batchSize: 1000, budget: 60)
        let first = try pruner.batch(on: c)
        #expect(first.jobs == 1000 && first.more)
        let rest = try pruner.run(on: c)
        #expect(first.jobs + rest.jobs == 12345)
        #expect(rest.batches >= 12 && !rest.more && !rest.skipped)
        #expect(try count("SELECT count(*) FROM canvas.jobs", c) == 15)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE finished_at < now() - interval '1 day'", c) == 0)
    }

    @Test func runsAgainAtOnceWhileBehindAndWaitsOnceCaughtUp() throws {
        let c = try database.connect()
        try c.execute(
            """
            INSERT INTO canvas.jobs (task, state, finished_at) SELECT 'canvas.noop', 'succeeded', now() - interval '2 days'
            FROM generate_series(1, 250)
            """)
        // A budget of 0: one batch per run, as when a run's time is up.
        var pruner = Pruner(age: 86_400, batchSize: 100, budget: 0, idleInterval: 3600)
        var runs: [Int] = []
        while let report = try pruner.runIfDue(on: c) { runs.append(report.jobs) }
        #expect(runs == [100, 100, 50], "each run behind is followed by another at once, then it waits")
        #expect(try count("SELECT count(*) FROM canvas.jobs", c) == 0)
    }

    @Test func chordMembersStayUntilTheirChordIsDoneAndAgedThenTheChordGoesToo() throws {
        let c = try database.connect()
        try c.executeScript(
            """
            CREATE TEMP TABLE fixture (name text, chord_id bigint);
            -- pending: its members finished long ago, but the chord still needs their results.
            -- young: finished a minute ago; a retry of a member would reopen it and need them.
            -- done: finished two days ago with every member.
            -- straggler: finished two days ago, one member still queued (it points at the chord).
            WITH made AS (
                INSERT INTO canvas.chords (kind, size, remaining, state, finished_at)
                VALUES ('chord', 3, 1, 'pending', NULL),
                       ('group', 3, 0, 'succeeded', now() - interval '1 minute'),
                       ('group', 3, 0, 'succeeded', now() - interval '2 days'),
                       ('chord', 3, 0, 'failed', now() - interval '2 days'),
                       ('root', 1, 0, 'succeeded', now() - interval '2 days')
                RETURNING id, kind, state, finished_at)
            INSERT INTO fixture
            SELECT CASE WHEN state = 'pending' THEN 'pending' WHEN kind = 'root' THEN 'root'
                        WHEN finished_at > now() - interval '1 hour' THEN 'young'
                        WHEN state = 'succeeded' THEN 'done' ELSE 'straggler' END, id
            FROM made;
            INSERT INTO canvas.jobs (task, state, finished_at, chord_id, position)
            SELECT 'canvas.noop', 'succeeded', now() - interval '3 days', f.chord_id, p
            FROM fixture f, generate_series(0, 2) p WHERE f.name <> 'root';
            UPDATE canvas.jobs SET state = 'queued', finished_at = NULL
            WHERE chord_id = (SELECT chord_id FROM fixture WHERE name = 'straggler') AND position = 2;
            """)
        var pruner = Pruner(age: 86_400)
        let report = try pruner.run(on: c)
        #expect(report.jobs == 5 && report.chords == 2, "\(report)")
        func members(_ name: String) throws -> Int {
            try count(
                "SELECT count(*) FROM canvas.jobs j JOIN fixture f ON f.chord_id = j.chord_id WHERE f.name = \(name)", c
            )
        }
        #expect(try members("pending") == 3)
        #expect(try members("young") == 3)
        #expect(try members("done") == 0)
        #expect(try members("straggler") == 1)
        let chords = try c.query(
            "SELECT f.name FROM fixture f JOIN canvas.chords c ON c.id = f.chord_id ORDER BY 1"
        ).map { try $0.decode(String.self, 0) }
        #expect(chords == ["pending", "straggler", "young"])
        // Once the pending chord is done and aged, it and its members go.
        try c.execute(
            """
            UPDATE canvas.chords SET state = 'succeeded', remaining = 0, finished_at = now() - interval '2 days'
            WHERE id = (SELECT chord_id FROM fixture WHERE name = 'pending')
            """)
        let later = try pruner.run(on: c)
        #expect(later.jobs == 3 && later.chords == 1, "\(later)")
        #expect(try members("pending") == 0)
    }

    @Test func realChordMembersSurviveUntilTheChordCompletes() throws {
        let c = try database.connect()
        let w = try Broker.registerWorker(hostname: "t", pid: 1, queues: ["default"], concurrency: 1, on: c)
        let root = try chord([signature("canvas.noop"), signature("canvas.noop")], body: signature("canvas.noop"))
            .enqueue(on: c)
        func finishOne() throws {
            let job = try #require(try Broker.claim(worker: w, queues: ["default"], limit: 1, on: c).first)
            try Broker.finish(
                worker: w, [Outcome(jobID: job.id, attempt: job.attempt, kind: .succeeded, resultText: "1")], on: c)
        }
        func age() throws {
            try c.executeScript(
                """
                UPDATE canvas.jobs SET finished_at = now() - interval '3 days' WHERE finished_at IS NOT NULL;
                UPDATE canvas.chords SET finished_at = now() - interval '3 days' WHERE finished_at IS NOT NULL;
                """)
        }
        var pruner = Pruner(age: 60)
        try finishOne()
        try age()
        #expect(try pruner.run(on: c).deleted == 0)
        try finishOne()  // the second member: the chord completes and enqueues its body
        try finishOne()  // the body: the root completes
        #expect(try CanvasStatus.fetch(root.id, on: c)?.state == .succeeded)
        try age()
        let report = try pruner.run(on: c)
        #expect(report.jobs == 3 && report.chords == 2, "\(report)")
        #expect(try count("SELECT count(*) FROM canvas.jobs", c) == 0)
        #expect(try count("SELECT count(*) FROM canvas.chords", c) == 0)
    }

    @Test func oldFiringsGoButEachScheduleKeepsItsLatestSoItsTickCannotFireTwice() throws {
        let c = try database.connect()
        let busy = try schedule("busy", firedDaysAgo: [6, 5, 4, 3, 2, 0], c)
        let slow = try schedule("slow", firedDaysAgo: [9, 8, 7], c)
        let once = try schedule("once", firedDaysAgo: [30], c)
        var pruner = Pruner(age: 86_400)
        #expect(try pruner.run(on: c).firings == 5 + 2)
        func firings(_ id: Int64) throws -> Int {
            try count("SELECT count(*) FROM canvas.schedule_firings WHERE schedule_id = \(id)", c)
        }
        #expect(try firings(busy) == 1)
        #expect(try firings(slow) == 1)
        #expect(try firings(once) == 1)
        let kept = try c.query(
            "SELECT fire_at::text FROM canvas.schedule_firings WHERE schedule_id = \(slow)")[0].decode(String.self, 0)
        #expect(
            try c.query(
                "SELECT round(extract(epoch FROM now() - fire_at) / 86400)::int FROM canvas.schedule_firings WHERE schedule_id = \(slow)"
            )[0].decode(Int.self, 0) == 7)
        // What the kept row is for: a beat handed that tick again fires nothing.
        let again = try c.query(
            """
            SELECT count(*) FROM canvas.fire_ticks(ARRAY[\(slow)]::bigint[], ARRAY[\(kept)::timestamptz],
                                                   ARRAY[now() + interval '1 day'], ARRAY[0])
            """
        )[0].decode(Int.self, 0)
        #expect(again == 0)
        #expect(try count("SELECT count(*) FROM canvas.chords", c) == 0)
    }

    @Test func aSecondPrunerSkipsWhileOneIsAtWork() throws {
        let c = try database.connect()
        try c.execute(
            """
            INSERT INTO canvas.jobs (task, state, finished_at) SELECT 'canvas.noop', 'succeeded', now() - interval '2 days'
            FROM generate_series(1, 100)
            """)
        let holder = try database.connect()
        try holder.execute("BEGIN")
        let held = try holder.query("SELECT jobs FROM canvas.prune('1 day', 10)")
        #expect(try held.first?.decode(Int.self, 0) == 10)
        var second = Pruner(age: 86_400)
        let skipped = try #require(try second.runIfDue(on: c))
        #expect(skipped.skipped && skipped.deleted == 0 && skipped.batches == 1)
        #expect(try count("SELECT count(*) FROM canvas.jobs", c) == 100)
        #expect(try second.runIfDue(on: c) == nil, "after a skip it waits an interval instead of retrying at once")
        try holder.execute("COMMIT")
        var third = Pruner(age: 86_400)
        let ran = try third.run(on: c)
        #expect(!ran.skipped && ran.jobs == 90)
    }

    @Test func everyPruneStatementReadsThroughAnIndex() throws {
        let c = try database.connect()
        // 50,000 finished jobs (a fifth of them in 2,000 finished chords, some in 200 pending
        // ones), 2,200 chords, 5,000 firings of 50 schedules, all older than the age.
        try c.executeScript(
            """
            INSERT INTO canvas.chords (id, kind, size, remaining, state, finished_at)
            SELECT g, 'group', 5, CASE WHEN g <= 200 THEN 1 ELSE 0 END,
                   CASE WHEN g <= 200 THEN 'pending' ELSE 'succeeded' END,
                   CASE WHEN g <= 200 THEN NULL ELSE now() - interval '2 days' + g * interval '1 s' END
            FROM generate_series(1, 2200) g;
            SELECT setval(pg_get_serial_sequence('canvas.jobs', 'id'), 10000);
            INSERT INTO canvas.jobs (task, state, finished_at, chord_id, position)
            SELECT 'canvas.noop', 'succeeded', now() - interval '3 days' + (g / 100) * interval '1 s',
                   CASE WHEN g <= 11000 THEN 1 + (g - 1) / 5 END, CASE WHEN g <= 11000 THEN (g - 1) % 5 END
            FROM generate_series(1, 50000) g;
            INSERT INTO canvas.schedules (name, canvas, every_seconds, next_fire_at)
            SELECT 's' || g, '{"task": "canvas.noop"}', 60, now() FROM generate_series(1, 50) g;
            INSERT INTO canvas.schedule_firings (schedule_id, fire_at, fired_at)
            SELECT s.id, now() - interval '3 days' + g * interval '1 minute', now() - interval '3 days' + g * interval '1 minute'
            FROM canvas.schedules s, generate_series(1, 100) g;
            ANALYZE canvas.jobs;
            ANALYZE canvas.chords;
            ANALYZE canvas.schedule_firings;
            """)
        // Counted around the calls themselves: the plans the function ran, rather than an EXPLAIN
        // of a copy of its statements. For a table the count is of sequential scans, for an
        // index of scans through it; both are this session's, not yet flushed, so the difference
        // is what the pruner did.
        func scans(_ c: Connection) throws -> [String: Int] {
            try c.query(
                """
                SELECT relname, pg_stat_get_xact_numscans(oid) FROM pg_class
                WHERE relnamespace = 'canvas'::regnamespace
                  AND relname IN ('jobs', 'chords', 'schedule_firings', 'jobs_finished_idx', 'chords_finished_idx',
                                  'schedule_firings_fired_idx', 'jobs_chord_waiting_idx', 'jobs_chord_done_idx',
                                  'jobs_running_idx', 'chords_pkey', 'schedule_firings_pkey')
                """
            ).reduce(into: [String: Int]()) { $0[try $1.decode(String.self, 0)] = try $1.decode(Int.self, 1) }
        }
        let (report, used) = try c.withTransaction { tx in
            let before = try scans(tx)
            var pruner = Pruner(age: 86_400, budget: 60)
            let report = try pruner.run(on: tx)
            return (report, try scans(tx).merging(before, uniquingKeysWith: -))
        }
        #expect(report.jobs == 50000 - 1000 && report.chords == 2000 && report.firings == 50 * 99, "\(report)")
        #expect(report.batches >= 10)
        #expect(used["jobs"] == 0, "\(used)")
        #expect(used["chords"] == 0, "\(used)")
        #expect(used["schedule_firings"] == 0, "\(used)")
        #expect(used["jobs_finished_idx", default: 0] >= report.batches, "\(used)")
        #expect(used["chords_finished_idx", default: 0] > 0, "\(used)")
        // A finished chord's members are taken by chord, then the chord, once none waits (one
        // probe), none finished (one more), and none runs (those are read once for the batch).
        #expect(used["jobs_chord_done_idx", default: 0] >= 2 * 2000, "two probes per finished chord: \(used)")
        #expect(used["jobs_chord_waiting_idx", default: 0] >= 2000, "one probe per finished chord: \(used)")
        #expect((1...20).contains(used["jobs_running_idx", default: 0]), "one scan per batch: \(used)")
        #expect(used["schedule_firings_fired_idx", default: 0] > 0, "\(used)")
        #expect(used["schedule_firings_pkey", default: 0] >= 4950, "one probe per old firing: \(used)")
    }

    /// Statistics taken while every job was still queued (a new table, a queue that just started)
    /// once made each batch read every finished job twice, in a sort and in its DELETE.
    @Test func aBatchReadsItsBatchEvenWhenTheStatisticsPredateEveryFinish() throws {
        let c = try database.connect()
        try c.executeScript(
            """
            INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, 60000);
            ANALYZE canvas.jobs;
            UPDATE canvas.jobs SET state = 'succeeded', started_at = now() - interval '2 days',
                finished_at = now() - interval '2 days' + id * interval '1 ms'
            WHERE id % 6 <> 0;
            SET enable_indexscan = on;
            """)
        let (report, read, setting) = try c.withTransaction { tx in
            var pruner = Pruner(age: 86_400, batchSize: 5000)
            let report = try pruner.batch(on: tx)
            let row = try tx.query(
                """
                SELECT pg_stat_get_xact_tuples_returned('canvas.jobs_finished_idx'::regclass),
                       current_setting('enable_indexscan') || current_setting('enable_bitmapscan')
                """)[0]
            return (report, try row.decode(Int.self, 0), try row.decode(String.self, 1))
        }
        #expect(report.jobs == 5000 && report.more)
        // 50,000 finished: the batch's 5,000 through the index, the DELETE by TID.
        #expect(read == 5000, "entries of jobs_finished_idx read for one batch of 5,000: \(read)")
        #expect(setting == "onon", "the session's planner settings are as they were")
        #expect(try count("SELECT count(*) FROM canvas.jobs", c) == 55000)
    }

    @Test func aWorkerPrunesABacklogWithinSecondsAndKeepsAtIt() throws {
        let c = try database.connect()
        try c.execute(
            """
            INSERT INTO canvas.jobs (task, state, finished_at) SELECT 'canvas.noop', 'succeeded', now() - interval '2 days'
            FROM generate_series(1, 30000)
            """)
        _ = try schedule("nightly", firedDaysAgo: [3, 2, 1], c)
        let worker = try WorkerProcess(
            databaseURL: database.url, arguments: ["-c", "1", "--prune-after", "3600", "--heartbeat-interval", "0.5"])
        #expect(
            try eventually(timeout: 15) {
                let jobs = try count("SELECT count(*) FROM canvas.jobs", c)
                return try jobs == 0 && count("SELECT count(*) FROM canvas.schedule_firings", c) == 1
            }, "\(worker.log)")
        #expect(worker.log.contains("pruned finished work"), "\(worker.log)")
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }
}
