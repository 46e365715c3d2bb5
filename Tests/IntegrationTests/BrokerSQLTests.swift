import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// The broker protocol at the SQL level: enqueue, claim, finish, release, rescue.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class BrokerSQLTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func worker(_ c: Connection) throws -> Int64 {
        try Broker.registerWorker(hostname: "test", pid: 1, queues: ["default"], concurrency: 1, on: c)
    }

    @Test func sqlEnqueueTakesNamedParametersAndRefusesBadArguments() throws {
        let c = try database.connect()
        let id: Int64 = try c.query("SELECT canvas.enqueue('canvas.add', '[1, 2]', queue => 'q', priority => 5)")[0]
            .decode(Int64.self, 0)
        let row = try c.query("SELECT task, args::text, queue, priority, state FROM canvas.jobs WHERE id = \(id)")[0]
        #expect(try row.decode(String.self, 0) == "canvas.add")
        #expect(try row.decode(String.self, 1) == "[1, 2]")
        #expect(try row.decode(String.self, 2) == "q")
        #expect(try row.decode(Int.self, 3) == 5)
        #expect(try row.decode(String.self, 4) == "queued")
        let error = try #require(throws: PostgresError.self) {
            try c.query("SELECT canvas.enqueue('canvas.add', '{\"a\": 1}')")
        }
        #expect(error.message.contains("args: expected a JSON array"))
        #expect(try c.query("SELECT count(*) FROM canvas.jobs")[0].decode(Int.self, 0) == 1)
    }

    @Test func bulkEnqueueIsOneStatementWithOneNotifyPerQueue() throws {
        let listener = try database.connect()
        try listener.listen(Broker.channel)
        let c = try database.connect()
        let requests = (0..<5000).map { i in
            JobRequest("canvas.add", [.int(i), 1], options: JobOptions(queue: i % 2 == 0 ? "even" : "odd"))
        }
        let ids = try Enqueue.jobs(requests, on: c)
        #expect(ids.count == 5000)
        #expect(ids == ids.sorted())
        let args = try c.query("SELECT args::text FROM canvas.jobs WHERE id = \(ids[7])")[0].decode(String.self, 0)
        #expect(args == "[7, 1]")
        var notes: [Postgres.Notification] = []
        while let n = try listener.waitForNotification(timeout: 0.3) { notes.append(n) }
        #expect(notes.map(\.payload).sorted() == ["even", "odd"])
    }

    @Test func claimReadsOnlyRunnableJobsOfItsQueues() throws {
        let c = try database.connect()
        // Finished rows, jobs due tomorrow on the claimed queue, and another queue's backlog: a
        // claim must read none of them.
        try c.executeScript(
            """
            INSERT INTO canvas.jobs (task, state, finished_at) SELECT 'canvas.noop', 'succeeded', now()
            FROM generate_series(1, 50000);
            INSERT INTO canvas.jobs (task, run_at) SELECT 'canvas.noop', now() + interval '1 day'
            FROM generate_series(1, 50000);
            INSERT INTO canvas.jobs (task, queue) SELECT 'canvas.noop', 'other' FROM generate_series(1, 50000);
            INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, 10);
            ANALYZE canvas.jobs;
            """)
        #expect(
            try c.query("SELECT count(*) FROM canvas.jobs WHERE state = 'scheduled'")[0].decode(Int.self, 0) == 50000)
        let w = try worker(c)
        let plan = try c.query(
            """
            EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) SELECT c.id FROM unnest('{default,absent}'::text[]) AS q(name),
            LATERAL (SELECT x.id, x.priority FROM canvas.jobs x WHERE x.state = 'queued' AND x.queue = q.name
                     ORDER BY x.priority, x.id LIMIT 100 FOR UPDATE SKIP LOCKED) c
            ORDER BY c.priority, c.id LIMIT 100
            """
        ).map { try $0.decode(String.self, 0) }.joined(separator: "\n")
        #expect(plan.contains("jobs_queued_idx"), "\(plan)")
        #expect(!plan.contains("Seq Scan on jobs"), "\(plan)")
        // Buffers touched stay a handful, not the thousands that scanning 150,000 rows would take.
        let buffers = plan.matches(of: #/shared hit=(\d+)/#).compactMap { Int($0.1) }.max() ?? 0
        #expect(buffers < 50, "\(plan)")
        let promote = try c.query(
            """
            EXPLAIN SELECT s.id FROM canvas.jobs s WHERE s.state = 'scheduled' AND s.run_at <= now()
            ORDER BY s.run_at LIMIT 1000 FOR UPDATE SKIP LOCKED
            """
        ).map { try $0.decode(String.self, 0) }.joined(separator: "\n")
        #expect(promote.contains("jobs_scheduled_idx"), "\(promote)")
        #expect(try Broker.claim(worker: w, queues: ["default", "absent"], limit: 100, on: c).count == 10)
    }

    /// The claim updates the rows its SKIP LOCKED scan locked by their physical address: no
    /// probe of the primary key, whose dead entries (every claim since the last vacuum leaves
    /// some) made a third of its time. Counted in the claim's own transaction.
    @Test func aClaimUpdatesTheRowsItLockedWithoutProbingThePrimaryKey() throws {
        let c = try database.connect()
        try c.executeScript(
            """
            INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, 300);
            INSERT INTO canvas.jobs (task, queue) SELECT 'canvas.noop', 'other' FROM generate_series(1, 300);
            ANALYZE canvas.jobs;
            """)
        let w = try worker(c)
        try c.executeScript("BEGIN")
        let claimed = try Broker.claim(worker: w, queues: ["default", "other"], limit: 100, on: c)
        let scans = try c.query(
            """
            SELECT pg_stat_get_xact_numscans('canvas.jobs_pkey'::regclass),
                   pg_stat_get_xact_numscans('canvas.jobs_queued_idx'::regclass)
            """)[0]
        try c.executeScript("COMMIT")
        #expect(claimed.count == 100)
        #expect(claimed.map(\.id) == claimed.map(\.id).sorted())
        #expect(try scans.decode(Int.self, 0) == 0)
        #expect(try scans.decode(Int.self, 1) >= 2)
        // Each row claimed once, and exactly the rows claimed are running.
        #expect(Set(claimed.map(\.id)).count == 100)
        let running = try c.query("SELECT id FROM canvas.jobs WHERE state = 'running' ORDER BY id").map {
            try $0.decode(Int64.self, 0)
        }
        #expect(running == claimed.map(\.id).sorted())
    }

    /// A worker that starts on an empty table plans its claims for an empty table, and a session
    /// keeps those plans until the table is analysed again: a minute or more after a burst
    /// arrives. Planned that way, every claim and promotion read the whole table, 2 to 5 ms a
    /// claim at a few thousand jobs. The broker's functions never read canvas.jobs sequentially,
    /// nor the whole of an index, whatever the statistics say. Counted in their own transaction.
    @Test func claimsPlannedOnAnEmptyTableStillReadByIndexAfterABurst() throws {
        let c = try database.connect()
        try c.execute("ANALYZE canvas.jobs")
        let w = try worker(c)
        // More calls than the plan cache takes to settle on a generic plan, of claim and finish.
        for _ in 0..<8 {
            #expect(try Broker.claim(worker: w, queues: ["default"], limit: 4, on: c).isEmpty)
            let none = Outcome(jobID: 1, attempt: 1, kind: .succeeded, resultText: "1")
            #expect(try Broker.finish(worker: w, [none], on: c).isEmpty)
        }
        try c.execute("INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, 4000)")
        try c.execute("BEGIN")
        var claimed: [ClaimedJob] = []
        for _ in 0..<3 { claimed += try Broker.claim(worker: w, queues: ["default"], limit: 4, on: c) }
        let recorded = try Broker.finish(
            worker: w,
            claimed.sorted { $0.id < $1.id }.map {
                Outcome(jobID: $0.id, attempt: $0.attempt, kind: .succeeded, resultText: "1")
            }, on: c)
        let scans = try c.query(
            """
            SELECT pg_stat_get_xact_numscans('canvas.jobs'::regclass),
                   pg_stat_get_xact_tuples_returned('canvas.jobs'::regclass),
                   pg_stat_get_xact_tuples_fetched('canvas.jobs'::regclass)
            """
        )[0]
        try c.execute("COMMIT")
        let sequentialScans = try scans.decode(Int.self, 0)
        let rowsReadSequentially = try scans.decode(Int.self, 1)
        // Rows fetched through indexes: the jobs claimed and finished and a few probes, not the
        // 4,000 a join reading the whole primary key would fetch.
        let rowsFetched = try scans.decode(Int.self, 2)
        #expect(claimed.count == 12)
        #expect(recorded.count == 12)
        #expect(sequentialScans == 0)
        #expect(rowsReadSequentially == 0)
        #expect(rowsFetched < 200, "\(rowsFetched) rows fetched")
        #expect(try c.query("SELECT count(*) FROM canvas.jobs WHERE state = 'succeeded'")[0].decode(Int.self, 0) == 12)
    }

    /// A sequential scan a function still needs (a small table with no index to use) is priced
    /// as disabled under enable_seqscan off: high enough to start the JIT compiler, which took
    /// 300 ms of every rescue. Every function that turns sequential scans off turns JIT off too.
    @Test func everyFunctionWithoutSequentialScansRunsWithoutJIT() throws {
        let c = try database.connect()
        let pinned = try c.query(
            """
            SELECT proname, 'jit=off' = ANY(proconfig) FROM pg_proc
            WHERE pronamespace = 'canvas'::regnamespace AND 'enable_seqscan=off' = ANY(proconfig) ORDER BY 1
            """
        ).map { (try $0.decode(String.self, 0), try $0.decode(Bool.self, 1)) }
        #expect(
            pinned.map(\.0) == ["claim", "expire_due", "finish", "promote_due", "release", "rescue"])
        #expect(pinned.filter { !$0.1 }.isEmpty, "\(pinned)")
    }

    @Test func dueScheduledJobsArePromotedByTheNextClaim() throws {
        let c = try database.connect()
        let w = try worker(c)
        let late = try Enqueue.job(JobRequest("canvas.noop", options: JobOptions(countdown: 3600)), on: c)
        let now = try Enqueue.job(JobRequest("canvas.noop"), on: c)
        #expect(try JobStatus.fetch(late, on: c)?.state == .scheduled)
        #expect(try Broker.claim(worker: w, queues: ["default"], limit: 10, on: c).map(\.id) == [now])
        try c.execute("UPDATE canvas.jobs SET run_at = now() - interval '1 second' WHERE id = \(late)")
        #expect(try Broker.claim(worker: w, queues: ["default"], limit: 10, on: c).map(\.id) == [late])
    }

    @Test func finishIsFencedOnWorkerAndAttempt() throws {
        let c = try database.connect()
        let id = try Enqueue.job(JobRequest("canvas.add", [1, 2]), on: c)
        let w = try worker(c)
        let other = try worker(c)
        let job = try #require(try Broker.claim(worker: w, queues: ["default"], limit: 1, on: c).first)
        #expect(job.id == id && job.attempt == 1)
        let stale = Outcome(jobID: id, attempt: 0, kind: .succeeded, resultText: "99")
        #expect(try Broker.finish(worker: w, [stale], on: c).isEmpty)
        let impostor = Outcome(jobID: id, attempt: 1, kind: .succeeded, resultText: "98")
        #expect(try Broker.finish(worker: other, [impostor], on: c).isEmpty)
        let real = Outcome(jobID: id, attempt: 1, kind: .succeeded, resultText: "3")
        #expect(try Broker.finish(worker: w, [real], on: c).map(\.state) == ["succeeded"])
        #expect(try Broker.finish(worker: w, [real], on: c).isEmpty)
        #expect(try JobStatus.fetch(id, on: c)?.result == .int(3))
    }

    @Test func errorsRetryWithBackoffThenFailAndFatalFailsAtOnce() throws {
        let c = try database.connect()
        let w = try worker(c)
        let id = try Enqueue.job(
            JobRequest("canvas.fail", ["x"], options: JobOptions(maxRetries: 1, retryBackoff: 60)), on: c)
        let fatal = try Enqueue.job(JobRequest("canvas.add", ["x"]), on: c)
        let claimed = try Broker.claim(worker: w, queues: ["default"], limit: 2, on: c)
        let recorded = try Broker.finish(
            worker: w,
            [
                Outcome(jobID: id, attempt: 1, kind: .error, error: "x"),
                Outcome(jobID: fatal, attempt: 1, kind: .fatal, error: "bad args"),
            ], on: c)
        #expect(claimed.count == 2)
        let retry = try #require(recorded.first { $0.jobID == id })
        #expect(retry.state == "scheduled")
        #expect((50...70).contains(retry.retryIn ?? 0))
        #expect(recorded.first { $0.jobID == fatal }?.state == "failed")
        // Not due yet: nothing to claim.
        #expect(try Broker.claim(worker: w, queues: ["default"], limit: 10, on: c).isEmpty)
        try c.execute("UPDATE canvas.jobs SET run_at = now() WHERE id = \(id)")
        let again = try #require(try Broker.claim(worker: w, queues: ["default"], limit: 1, on: c).first)
        #expect(again.attempt == 2)
        let last = try Broker.finish(worker: w, [Outcome(jobID: id, attempt: 2, kind: .error, error: "x")], on: c)
        #expect(last.first?.state == "failed")
    }

    @Test func crashesRequeueAtOnceUntilTheBoundThenFail() throws {
        let c = try database.connect()
        let w = try worker(c)
        let id = try Enqueue.job(JobRequest("canvas.crash"), on: c)
        for round in 1...3 {
            let job = try #require(try Broker.claim(worker: w, queues: ["default"], limit: 1, on: c).first)
            let r = try Broker.finish(
                worker: w, [Outcome(jobID: id, attempt: job.attempt, kind: .crashed, error: "signal 9")], on: c)
            #expect(r.first?.state == (round < 3 ? "queued" : "failed"))
        }
        let status = try #require(try JobStatus.fetch(id, on: c))
        #expect(status.crashes == 3)
        #expect(status.error?.contains("died 3 times") == true)
    }

    @Test func rescueRequeuesOnlyTheJobsOfSilentWorkers() throws {
        let c = try database.connect()
        let alive = try worker(c)
        let dead = try worker(c)
        let a = try Enqueue.job(JobRequest("canvas.sleep", [100]), on: c)
        _ = try Broker.claim(worker: alive, queues: ["default"], limit: 1, on: c)
        let b = try Enqueue.job(JobRequest("canvas.sleep", [100]), on: c)
        _ = try Broker.claim(worker: dead, queues: ["default"], limit: 1, on: c)
        // The live worker's job has run for an hour; only the heartbeat matters.
        try c.execute("UPDATE canvas.jobs SET started_at = now() - interval '1 hour' WHERE id = \(a)")
        try c.execute("UPDATE canvas.workers SET heartbeat_at = now() - interval '1 minute' WHERE id = \(dead)")
        let rescued = try Broker.rescue(on: c)
        #expect(rescued.map(\.0) == [b])
        #expect(try JobStatus.fetch(a, on: c)?.state == .running)
        #expect(try JobStatus.fetch(b, on: c)?.state == .queued)
        #expect(try !Broker.heartbeat(worker: dead, on: c))
        let error = try #require(throws: PostgresError.self) {
            try Broker.claim(worker: dead, queues: ["default"], limit: 1, on: c)
        }
        #expect(error.sqlState == "PCW01")
    }

    @Test func releaseHandsBackWithoutCountingTheRun() throws {
        let c = try database.connect()
        let w = try worker(c)
        let id = try Enqueue.job(JobRequest("canvas.noop"), on: c)
        let job = try #require(try Broker.claim(worker: w, queues: ["default"], limit: 1, on: c).first)
        #expect(try Broker.release(worker: w, [(job.id, job.attempt)], on: c) == 1)
        let status = try #require(try JobStatus.fetch(id, on: c))
        #expect(status.state == .queued && status.attempt == 0)
    }

    @Test func pruneDeletesOnlyOldFinishedJobs() throws {
        let c = try database.connect()
        try c.executeScript(
            """
            INSERT INTO canvas.jobs (task, state, finished_at) VALUES
              ('canvas.noop', 'succeeded', now() - interval '2 days'),
              ('canvas.noop', 'failed', now() - interval '2 days'),
              ('canvas.noop', 'succeeded', now());
            INSERT INTO canvas.jobs (task, created_at) VALUES ('canvas.noop', now() - interval '3 days');
            """)
        var pruner = Pruner(age: 86_400)
        #expect(try pruner.run(on: c).jobs == 2)
        #expect(try c.query("SELECT count(*) FROM canvas.jobs")[0].decode(Int.self, 0) == 2)
    }
}
