import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// The broker's failure paths, driven through its SQL functions: each one ends its canvas, once.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class FailurePathTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func worker(_ c: Connection, rescueAfter: Double = 15) throws -> Int64 {
        try Broker.registerWorker(
            hostname: "test", pid: 1, queues: ["default", "elsewhere"], concurrency: 1, rescueAfter: rescueAfter, on: c)
    }

    func enqueue(_ json: String, on c: Connection) throws -> Int64 {
        try Canvas.enqueue(json: JSONValue(parsing: json), on: c).id
    }

    func count(_ sql: Query, on c: Connection) throws -> Int { try c.query(sql)[0].decode(Int.self, 0) }

    func rootState(_ id: Int64, on c: Connection) throws -> String {
        try c.query("SELECT state FROM canvas.chords WHERE id = \(id)")[0].decode(String.self, 0)
    }

    func errbacks(_ marker: String, on c: Connection) throws -> Int {
        try count(
            "SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.noop' AND args->1 = to_jsonb(\(marker)::text)", on: c
        )
    }

    @Test func aJobRescuedPastTheCrashLimitFailsItsCanvasWithItsErrorCallbacks() throws {
        let c = try database.connect()
        let root = try enqueue(
            #"""
            {"chord": [{"task": "canvas.sleep", "args": [60]}, {"task": "canvas.add", "args": [1, 1]}],
             "body": {"task": "canvas.sum"}, "on_error": {"task": "canvas.noop", "args": ["rescued"]}}
            """#, on: c)
        let dead = try worker(c)
        let claimed = try Broker.claim(worker: dead, queues: ["default"], limit: 1, on: c)
        let sleeper = try #require(claimed.first)
        // Its workers already died under it twice; this is the third.
        try c.execute("UPDATE canvas.jobs SET crashes = 2 WHERE id = \(sleeper.id)")
        try c.execute("UPDATE canvas.workers SET heartbeat_at = now() - interval '1 hour' WHERE id = \(dead)")
        let rescued = try Broker.rescue(on: c)
        #expect(rescued.map(\.1) == ["failed"])
        #expect(try JobStatus.fetch(sleeper.id, on: c)?.error?.contains("its worker died 3 times") == true)
        #expect(try rootState(root, on: c) == "failed")
        #expect(try errbacks("rescued", on: c) == 1)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'", on: c) == 0)
    }

    /// The dashboard's per-minute counts ride on heartbeats; a table an operator holds locked
    /// (or a grant missing) must cost those counts, never the beat, or the worker would be
    /// presumed dead and its jobs rescued.
    @Test func aHeartbeatBeatsWhenTheDashboardsCountsCannotBeWritten() throws {
        let c = try database.connect()
        let w = try worker(c)
        try c.execute("UPDATE canvas.workers SET heartbeat_at = now() - interval '1 minute' WHERE id = \(w)")
        let locker = try database.connect()
        try locker.execute("BEGIN")
        try locker.execute("LOCK TABLE canvas.finish_counts IN ACCESS EXCLUSIVE MODE")
        let started = Date()
        #expect(try c.query(#"SELECT canvas.heartbeat(\#(w), '{"canvas.add": [3, 0, 1]}')"#)[0].decode(Bool.self, 0))
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(
            try count(
                "SELECT count(*) FROM canvas.workers WHERE id = \(w) AND heartbeat_at > now() - interval '10 seconds'",
                on: c) == 1)
        try locker.execute("ROLLBACK")
        // With the table free again the counts are written as before.
        #expect(try c.query(#"SELECT canvas.heartbeat(\#(w), '{"canvas.add": [3, 0, 1]}')"#)[0].decode(Bool.self, 0))
        #expect(try count("SELECT coalesce(sum(succeeded), 0)::int FROM canvas.finish_counts", on: c) == 3)
    }

    @Test func aLargeExpiredBacklogIsCancelledInShortBatches() throws {
        let c = try database.connect()
        try c.execute(
            """
            INSERT INTO canvas.jobs (task, expires_at) SELECT 'canvas.noop', now() - interval '1 minute'
            FROM generate_series(1, 450)
            """)
        #expect(try Broker.expireDue(limit: 200, on: c) == 200)
        #expect(try Broker.expireDue(limit: 200, on: c) == 200)
        #expect(try Broker.expireDue(limit: 200, on: c) == 50)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE state = 'cancelled'", on: c) == 450)
    }

    @Test func aNumberNoDoublePrecisionCanHoldIsRefusedAtTheDoor() throws {
        let c = try database.connect()
        // From SQL: Swift's parser would already have read 1e-400 as 0.
        let error = try #require(throws: PostgresError.self) {
            try c.query(
                #"SELECT canvas.enqueue_canvas('{"task": "a", "on_error": {"task": "e", "options": {"retry_backoff": 1e-400}}}')"#
            )
        }
        #expect(error.message == "on_error.options.retry_backoff: expected seconds from 0 to 86400")
        #expect(try count("SELECT count(*) FROM canvas.jobs", on: c) == 0)
    }

    @Test func aCallbackTheDatabaseRefusesDoesNotStopRescue() throws {
        let c = try database.connect()
        let root = try enqueue(
            #"{"chord": [{"task": "canvas.sleep", "args": [60]}], "body": {"task": "canvas.sum"}}"#, on: c)
        let dead = try worker(c)
        let sleeper = try #require(try Broker.claim(worker: dead, queues: ["default"], limit: 1, on: c).first)
        // Written past validation: a callback whose option no double precision can hold.
        try c.execute(
            """
            UPDATE canvas.jobs SET crashes = 2,
                on_error = '[{"task": "canvas.noop", "options": {"retry_backoff": 1e-400}}]'
            WHERE id = \(sleeper.id)
            """)
        try c.execute("UPDATE canvas.workers SET heartbeat_at = now() - interval '1 hour' WHERE id = \(dead)")
        #expect(try Broker.rescue(on: c).map(\.1) == ["failed"])
        #expect(try rootState(root, on: c) == "failed")
        let error = try c.query("SELECT error FROM canvas.chords WHERE kind = 'chord'")[0].decode(String.self, 0)
        #expect(error.contains("its error callbacks could not be enqueued"), "\(error)")
        // And rescue goes on working for everyone else.
        #expect(try Broker.rescue(on: c).isEmpty)
    }

    @Test func purgingAQueuedMemberFailsItsCanvasOnce() throws {
        let c = try database.connect()
        let root = try enqueue(
            #"""
            {"chord": [{"task": "canvas.add", "args": [1, 1], "options": {"queue": "elsewhere"}},
                       {"task": "canvas.add", "args": [2, 2], "options": {"queue": "elsewhere", "countdown": 3600}},
                       {"task": "canvas.add", "args": [3, 3]}],
             "body": {"task": "canvas.sum"}, "on_error": {"task": "canvas.noop", "args": ["purged"]}}
            """#, on: c)
        #expect(try c.query("SELECT canvas.purge('elsewhere')")[0].decode(Int.self, 0) == 2)
        #expect(try rootState(root, on: c) == "failed")
        #expect(try errbacks("purged", on: c) == 1)
        let error = try c.query("SELECT error FROM canvas.chords WHERE kind = 'chord'")[0].decode(String.self, 0)
        #expect(error == "purged")
    }

    @Test func cancellingAJobRunsItsErrorCallbacksAndFailsItsCanvas() throws {
        let c = try database.connect()
        let root = try enqueue(
            #"""
            {"chain": [{"task": "canvas.add", "args": [1, 1]}, {"task": "canvas.add", "args": [2]}],
             "on_error": {"task": "canvas.noop", "args": ["cancelled"]}}
            """#, on: c)
        let first = try c.query("SELECT id FROM canvas.jobs WHERE task = 'canvas.add'")[0].decode(Int64.self, 0)
        #expect(try c.query("SELECT canvas.cancel(\(first))")[0].decode(String.self, 0) == "cancelled")
        #expect(try rootState(root, on: c) == "failed")
        #expect(try errbacks("cancelled", on: c) == 1)
        #expect(try c.query("SELECT canvas.cancel(\(first))")[0].decode(String.self, 0) == "already finished")
        #expect(try errbacks("cancelled", on: c) == 1)
    }

    @Test func workersAreRescuedByTheTermsTheyRegisteredWith() throws {
        let c = try database.connect()
        let patient = try worker(c, rescueAfter: 120)
        let hasty = try worker(c, rescueAfter: 15)
        let a = try Enqueue.job(JobRequest("canvas.sleep", [100]), on: c)
        _ = try Broker.claim(worker: patient, queues: ["default"], limit: 1, on: c)
        let b = try Enqueue.job(JobRequest("canvas.sleep", [100]), on: c)
        _ = try Broker.claim(worker: hasty, queues: ["default"], limit: 1, on: c)
        // Both silent for 60 s: only the one that said 15 s means dead is.
        try c.execute("UPDATE canvas.workers SET heartbeat_at = now() - interval '60 seconds'")
        #expect(try Broker.rescue(on: c).map(\.0) == [b])
        #expect(try JobStatus.fetch(a, on: c)?.state == .running)
        #expect(try Broker.heartbeat(worker: patient, on: c))
        #expect(try !Broker.heartbeat(worker: hasty, on: c))
    }

    /// Finishes (successes and failures, with nested chords failing upwards), hand-backs, cancels
    /// of chords and jobs, and retries, all at once on the same canvases, many times: not one
    /// deadlock.
    @Test func concurrentFinishesCancelsAndNestedFailuresNeverDeadlock() throws {
        let setup = try database.connect()
        let nested = #"""
            {"chord": [{"group": [{"task": "canvas.add", "args": [1, 1]}, {"task": "canvas.fail"}]},
                       {"chord": [{"task": "canvas.add", "args": [2, 2]}, {"task": "canvas.add", "args": [3, 3]}],
                        "body": {"task": "canvas.sum"}},
                       {"chain": [{"task": "canvas.add", "args": [4, 4]}, {"task": "canvas.add", "args": [5]}]},
                       {"task": "canvas.add", "args": [6, 6]}],
             "body": {"task": "canvas.sum"}, "on_error": {"task": "canvas.noop", "args": ["storm"]}}
            """#
        var generator = SystemRandomNumberGenerator()
        let rounds = 30
        let deadlocks = Counter()
        let otherErrors = Counter()
        for _ in 0..<rounds {
            let roots = try (0..<6).map { _ in try enqueue(nested, on: setup) }
            // The fourth hands back what it claims, in descending id order (canvas.release must
            // lock in the lock order whatever order it is given).
            let workers = try (0..<4).map { _ in try worker(setup) }
            let chords = try setup.query(
                "SELECT id FROM canvas.chords WHERE kind <> 'root' AND id > \(roots[0] - 1)"
            ).map { try $0.decode(Int64.self, 0) }
            let config = database.configuration
            var work: [@Sendable () -> Void] = []
            for (n, w) in workers.enumerated() {
                work.append(
                    {
                        do {
                            let c = try Connection.connect(config)
                            for _ in 0..<8 {
                                let jobs = try Broker.claim(worker: w, queues: ["default"], limit: 4, on: c)
                                guard !jobs.isEmpty else { break }
                                let outcomes = jobs.map { job in
                                    job.task == "canvas.fail" || (n == 2 && job.id % 3 == 0)
                                        ? Outcome(jobID: job.id, attempt: job.attempt, kind: .fatal, error: "storm")
                                        : Outcome(
                                            jobID: job.id, attempt: job.attempt, kind: .succeeded, resultText: "1")
                                }
                                do {
                                    if n == 3 {
                                        let back = jobs.sorted { $0.id > $1.id }
                                        _ = try c.query(
                                            "SELECT canvas.release(\(w), \(back.map(\.id)), \(back.map { Int32($0.attempt) }))"
                                        )
                                    } else {
                                        try Broker.finish(worker: w, outcomes.sorted { $0.jobID < $1.jobID }, on: c)
                                    }
                                } catch let e as PostgresError where e.sqlState == PostgresError.State.deadlockDetected
                                {
                                    deadlocks.add()
                                }
                            }
                        } catch {
                            otherErrors.add()
                        }
                    })
            }
            let targets = chords.shuffled(using: &generator)
            work.append(
                {
                    do {
                        let c = try Connection.connect(config)
                        for id in targets.prefix(6) + roots.prefix(2) {
                            do {
                                _ = try c.query("SELECT canvas.cancel(\(id))")
                                // One retry a transaction, as `voteradmin retry` does: two in one
                                // statement would take a second canvas's root after the first's,
                                // in whatever order they came, outside the lock order.
                                for failed in try c.query(
                                    "SELECT id FROM canvas.jobs WHERE state = 'failed' AND id % 5 = 0 LIMIT 2")
                                {
                                    _ = try c.query("SELECT canvas.retry(\(try failed.decode(Int64.self, 0)))")
                                }
                            } catch let e as PostgresError where e.sqlState == PostgresError.State.deadlockDetected {
                                deadlocks.add()
                            }
                        }
                    } catch {
                        otherErrors.add()
                    }
                })
            let done = Counter()
            for body in work {
                Thread {
                    body()
                    done.add()
                }.start()
            }
            #expect(eventually(timeout: 60) { done.value == work.count })
        }
        #expect(deadlocks.value == 0)
        #expect(otherErrors.value == 0)
        // The storm did end canvases: some failed, and none of those is still pending.
        #expect(
            try count("SELECT count(*) FROM canvas.chords WHERE kind = 'root' AND state <> 'pending'", on: setup) > 0)
    }
}

/// A count several threads add to.
final class Counter: @unchecked Sendable {
    // Guarded by `lock`.
    private var n = 0
    private let lock = NSLock()
    func add() {
        lock.lock()
        n += 1
        lock.unlock()
    }
    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return n
    }
}

/// The heartbeat vouches for the worker's loops, not only for the thread that sends it.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class HeartbeatTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    @Test func aWorkerWhoseBrokerLoopIsStuckStopsHeartbeating() throws {
        let c = try database.connect()
        let worker = try WorkerProcess(
            databaseURL: database.url,
            arguments: ["-c", "1", "--loglevel", "info", "--heartbeat-interval", "0.5", "--rescue-after", "4"])
        let id = try Enqueue.job(JobRequest("canvas.sleep", [0.5]), on: c)
        #expect(try eventually(timeout: 10) { try JobStatus.fetch(id, on: c)?.state == .running })
        // Another session holds the job's row: the broker loop's finish waits on it.
        let holder = try database.connect()
        try holder.execute("BEGIN")
        try holder.execute("SELECT 1 FROM canvas.jobs WHERE id = \(id) FOR UPDATE")
        func heartbeatAge() throws -> Double {
            try c.query("SELECT extract(epoch FROM now() - max(heartbeat_at))::float8 FROM canvas.workers")[0]
                .decode(Double.self, 0)
        }
        #expect(try eventually(timeout: 20, interval: 0.2) { try heartbeatAge() > 2.5 }, "\(worker.log)")
        #expect(worker.log.contains("a worker loop is stuck"))
        try holder.execute("COMMIT")
        #expect(try eventually(timeout: 10) { try JobStatus.fetch(id, on: c)?.state == .succeeded }, "\(worker.log)")
        #expect(try eventually(timeout: 5, interval: 0.2) { try heartbeatAge() < 1.5 })
    }
}
