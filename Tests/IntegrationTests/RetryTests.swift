import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// Retries as Celery has them, end to end: a real PostgreSQL and real worker processes
/// (`pgcanvas-testworker`, a pgworker with the tasks of Tests/TestWorker/main.swift).
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class RetryTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func startWorker(_ extra: [String] = []) throws -> WorkerProcess {
        try WorkerProcess(
            databaseURL: database.url, arguments: ["-c", "2", "--loglevel", "info"] + extra,
            executable: "pgcanvas-testworker")
    }

    func enqueue(_ json: String, on c: Connection) throws -> Int64 {
        try Canvas.enqueue(json: JSONValue(parsing: json), on: c).id
    }

    /// The one job of a task (the tests enqueue one of each).
    func job(_ task: String, on c: Connection) throws -> JobStatus {
        let id = try c.query("SELECT id FROM canvas.jobs WHERE task = \(task)")[0].decode(Int64.self, 0)
        return try #require(try JobStatus.fetch(id, on: c))
    }

    func ended(_ task: String, on c: Connection, timeout: Double = 20) throws -> JobStatus {
        _ = try eventually(timeout: timeout) { try job(task, on: c).state.isFinished }
        return try job(task, on: c)
    }

    func errbacks(_ marker: String, on c: Connection) throws -> Int {
        try c.query(
            "SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.noop' AND args->1 = to_jsonb(\(marker)::text)")[0]
            .decode(Int.self, 0)
    }

    @Test func ctxRetryWaitsForItsCountdown() throws {
        let c = try database.connect()
        // Retry in 1.5 s, then succeed on the second run.
        _ = try enqueue(#"{"task": "test.retry", "args": [1.5, 5, "not yet", 2]}"#, on: c)
        let w = try startWorker()
        var waiting: Double?
        _ = try eventually(timeout: 10, interval: 0.02) {
            let row = try c.query(
                """
                SELECT state, extract(epoch FROM run_at - now())::float8 FROM canvas.jobs WHERE task = 'test.retry'
                """)[0]
            if try row.decode(String.self, 0) == "scheduled" { waiting = try row.decode(Double.self, 1) }
            return waiting != nil
        }
        let seen = try #require(waiting, "\(w.log)")
        #expect(seen > 1.0 && seen <= 1.5, "\(seen)")
        #expect(try job("test.retry", on: c).error == "not yet")
        let done = try ended("test.retry", on: c)
        #expect(done.state == .succeeded, "\(w.log)")
        #expect(done.result == .int(2))
        // The second run started no sooner than the countdown allowed.
        let gap = try c.query(
            "SELECT extract(epoch FROM started_at - created_at)::float8 FROM canvas.jobs WHERE task = 'test.retry'")[0]
            .decode(Double.self, 0)
        #expect(gap >= 1.5 && gap < 6, "\(gap)")
        #expect(w.log.contains("Task test.retry[\(done.id)] retry: Retry in 1."), "\(w.log)")
        #expect(w.log.contains("s: not yet"), "\(w.log)")
    }

    @Test func ctxRetryPastItsMaxRetriesFailsWithTheReasonAndRunsErrorCallbacksOnce() throws {
        let c = try database.connect()
        // The job allows 10 retries; the task's own max_retries=1 decides.
        let root = try enqueue(
            #"""
            {"task": "test.retry", "args": [0, 1, "quota exceeded"], "options": {"max_retries": 10},
             "on_error": {"task": "canvas.noop", "args": ["retry-errback"]}}
            """#, on: c)
        let w = try startWorker()
        let done = try ended("test.retry", on: c)
        #expect(done.state == .failed, "\(w.log)")
        #expect(done.error == "quota exceeded")
        #expect(done.attempt == 2)
        #expect(try CanvasStatus.fetch(root, on: c)?.state == .failed)
        _ = try eventually(timeout: 5) { try errbacks("retry-errback", on: c) > 0 }
        usleep(500_000)
        #expect(try errbacks("retry-errback", on: c) == 1)
        let callback = try c.query(
            "SELECT args->0->>'error' FROM canvas.jobs WHERE task = 'canvas.noop' AND args->1 = '\"retry-errback\"'")[0]
        #expect(try callback.decode(String.self, 0) == "quota exceeded")
        // Its type is the reason's (Celery re-raises exc), not the retry request's.
        #expect(done.errorType == "TaskError")
    }

    @Test func aChordMemberThatRetriesThenSucceedsCompletesTheChordOnce() throws {
        let c = try database.connect()
        // The first member asks for a retry twice (countdown 0.2 s), then returns its attempt: 3;
        // the second, a typed task, once, then returns 2.
        let root = try enqueue(
            #"""
            {"chord": [{"task": "test.retry", "args": [0.2, null, "again", 3]},
                       {"task": "test.retry_typed", "args": [2]}],
             "body": {"task": "canvas.sum"}}
            """#, on: c)
        let w = try startWorker()
        let status = try CanvasHandle(id: root).wait(on: c, timeout: 20)
        #expect(status.state == .succeeded, "\(w.log)")
        #expect(status.result == .int(5))
        #expect(try job("test.retry", on: c).attempt == 3)
        #expect(try job("test.retry_typed", on: c).attempt == 2)
        #expect(try c.query("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'")[0].decode(Int.self, 0) == 1)
        #expect(
            try c.query("SELECT remaining, state FROM canvas.chords WHERE kind = 'chord'")[0].decode(Int.self, 0) == 0)
    }

    @Test func autoretryForRetriesTheErrorsItNamesAndFailsOthersAtOnce() throws {
        let c = try database.connect()
        let transient = try enqueue(
            #"""
            {"task": "test.autoretry", "args": [{"kind": "transient"}],
             "on_error": {"task": "canvas.noop", "args": ["transient-errback"]}}
            """#, on: c)
        let w = try startWorker()
        let permanent = try Canvas.enqueue(
            json: JSONValue(parsing: #"{"task": "test.autoretry", "args": [{"kind": "permanent"}]}"#), on: c
        ).id
        _ = try CanvasHandle(id: transient).wait(on: c, timeout: 20)
        _ = try CanvasHandle(id: permanent).wait(on: c, timeout: 20)
        let jobs = try c.query(
            """
            SELECT args->0->>'kind', state, error, attempt, error_type FROM canvas.jobs
            WHERE task = 'test.autoretry' ORDER BY id
            """)
        #expect(jobs.count == 2)
        // Named by autoretry_for: retried up to the policy's max_retries (2), not the job's (3).
        #expect(try jobs[0].decode(String.self, 1) == "failed", "\(w.log)")
        #expect(try jobs[0].decode(String.self, 2) == "Transient: try again")
        #expect(try jobs[0].decode(Int.self, 3) == 3)
        // Not named: failed on its first run.
        #expect(try jobs[1].decode(String.self, 1) == "failed")
        #expect(try jobs[1].decode(String.self, 2) == "Permanent: never works")
        #expect(try jobs[1].decode(Int.self, 3) == 1)
        // Each names the Swift type of what it threw, for its error callbacks and `voteradmin result`.
        #expect(try jobs[0].decode(String.self, 4) == "Transient")
        #expect(try jobs[1].decode(String.self, 4) == "Permanent")
        #expect(try errbacks("transient-errback", on: c) == 1)
        // Each of its three runs asked for a retry; the broker granted two (logged with the time
        // left) and refused the third. Jittered countdowns stay within the policy's cap (0.1 s).
        let asked = w.log.split(separator: "\n").filter { $0.contains("test.autoretry[") }
            .compactMap { line -> Double? in
                guard let r = line.range(of: "retry: Retry in ") else { return nil }
                return Double(line[r.upperBound...].prefix { $0 != "s" })
            }
        #expect(asked.count == 2, "\(w.log)")
        #expect(w.log.contains("failed: Transient: try again"), "\(w.log)")
        #expect(asked.allSatisfy { $0 >= 0 && $0 <= 0.1 }, "\(asked)")
    }

    @Test func aHardTimeLimitFailsAtOnceUnlessThePolicyRetriesIt() throws {
        let c = try database.connect()
        // No policy: failed on its first run, although the job allows 3 retries.
        _ = try enqueue(#"{"task": "canvas.sleep", "args": [30], "options": {"time_limit": 0.5}}"#, on: c)
        // A policy naming TimeLimitExceeded: retried once (its max_retries), then failed.
        _ = try enqueue(#"{"task": "test.hard_limit_retried", "args": [30]}"#, on: c)
        let w = try startWorker()
        let plain = try ended("canvas.sleep", on: c)
        #expect(plain.state == .failed, "\(w.log)")
        #expect(plain.attempt == 1)
        #expect(
            plain.error?.hasPrefix("Hard time limit (0.5000s) exceeded for canvas.sleep[") == true,
            "\(plain.error ?? "")")
        let retried = try ended("test.hard_limit_retried", on: c)
        #expect(retried.state == .failed, "\(w.log)")
        #expect(retried.attempt == 2)
        #expect(
            retried.error?.hasPrefix("TimeLimitExceeded: Hard time limit (0.5000s) exceeded") == true,
            "\(retried.error ?? "")")
        #expect(retried.crashes == 0)
        #expect(plain.errorType == "TimeLimitExceeded" && retried.errorType == "TimeLimitExceeded")
    }

    @Test func theSoftTimeLimitReachesTheTaskBeforeTheHardLimit() throws {
        let c = try database.connect()
        // Async body: cancelled at its definition's soft limit (0.5 s), long before the hard (20 s).
        _ = try enqueue(#"{"task": "test.soft_async", "args": [30]}"#, on: c)
        // Sync code: sees ctx.softTimeLimitExceeded at the job's own soft limit and returns early.
        _ = try enqueue(
            #"{"task": "test.soft_sync", "options": {"soft_time_limit": 0.3, "time_limit": 20}}"#, on: c)
        // Sync code, Celery's way: SoftTimeLimitExceeded thrown into it by checkSoftTimeLimit().
        _ = try enqueue(#"{"task": "test.soft_check", "options": {"soft_time_limit": 0.3, "time_limit": 20}}"#, on: c)
        let w = try startWorker(["-c", "3"])

        let async = try ended("test.soft_async", on: c)
        #expect(async.state == .failed, "\(w.log)")
        #expect(async.error == "SoftTimeLimitExceeded: soft time limit (0.5000s) exceeded")
        #expect(async.attempt == 1)
        let asyncRun = try #require(async.finishedAt).timeIntervalSince(try #require(async.startedAt))
        #expect(asyncRun >= 0.4 && asyncRun < 5, "\(asyncRun)")

        let sync = try ended("test.soft_sync", on: c)
        #expect(sync.state == .succeeded, "\(w.log)")
        let result = try #require(sync.result?.objectValue)
        #expect(result["stopped"] == .string("soft time limit exceeded"))
        #expect((result["late"]?.doubleValue ?? 99) < 0.5)
        #expect((result["steps"]?.intValue ?? 0) > 5)

        let checked = try ended("test.soft_check", on: c)
        #expect(checked.state == .failed)
        #expect(checked.error == "SoftTimeLimitExceeded: soft time limit (0.3000s) exceeded")
        #expect(checked.attempt == 1)
        // No pool process was killed for any of them.
        #expect(!w.log.contains("Hard time limit"), "\(w.log)")
        #expect(!w.log.contains("exited with"), "\(w.log)")
    }

    @Test func theWorkersSoftTimeLimitIsTheDefaultForJobsWithoutOne() throws {
        let c = try database.connect()
        _ = try enqueue(#"{"task": "test.soft_sync"}"#, on: c)
        let w = try startWorker(["--soft-time-limit", "0.2", "--time-limit", "10"])
        let sync = try ended("test.soft_sync", on: c)
        #expect(sync.state == .succeeded, "\(w.log)")
        #expect(sync.result?.objectValue?["stopped"] == .string("soft time limit exceeded"))
        // Refused at the door: a soft limit not below the hard one would never be seen.
        let refused = try runCommand(
            Binaries.url("pgcanvas-testworker"), ["--soft-time-limit", "5", "--time-limit", "5"],
            environment: ["DATABASE_URL": database.url])
        #expect(refused.status == 64)
        #expect(refused.stderr.contains("--soft-time-limit must be less than --time-limit"), "\(refused.stderr)")
    }
}
