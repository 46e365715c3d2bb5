import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// `pgworker --pool prefork|threads|async`, end to end: real workers (`pgcanvas-testworker`) on a
/// real PostgreSQL. The in-process pools cannot kill a run, so each way a run is stopped (hard
/// limit, cancel, shutdown, a dead worker) is checked for what the broker records and for what the
/// stopped code's late return must not change.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class PoolTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    static let everyPool = ["prefork", "threads", "async"]
    static let inProcess = ["threads", "async"]

    func startWorker(_ pool: String, _ extra: [String] = []) throws -> WorkerProcess {
        try WorkerProcess(
            databaseURL: database.url,
            arguments: ["--pool", pool, "--heartbeat-interval", "0.5", "--rescue-after", "3", "--poll-interval", "0.2"]
                + extra,
            executable: "pgcanvas-testworker")
    }

    func count(_ c: Connection, _ q: Query) throws -> Int { try c.query(q)[0].decode(Int.self, 0) }

    func status(_ id: Int64, _ c: Connection) throws -> JobStatus { try #require(try JobStatus.fetch(id, on: c)) }

    /// Enqueues one signature in its JSON form. - Returns: its job's id.
    func enqueue(_ json: String, on c: Connection) throws -> Int64 {
        let task = try #require(try JSONValue(parsing: json).objectValue?["task"]?.stringValue)
        _ = try Canvas.enqueue(json: JSONValue(parsing: json), on: c)
        return try c.query("SELECT max(id) FROM canvas.jobs WHERE task = \(task)")[0].decode(Int64.self, 0)
    }

    @Test(arguments: everyPool)
    func plainJobsChordsAndChainsRunOnceInEveryPool(pool: String) throws {
        let c = try database.connect()
        _ = try Enqueue.jobs((0..<3_000).map { _ in JobRequest("canvas.noop") }, on: c)
        let members = (0..<500).map { signature("canvas.add", .int($0), 1) }
        let sum = try chord(members, body: signature("canvas.sum")).enqueue(on: c)
        let steps = try chain([signature("canvas.add", 1, 2), signature("canvas.add", 3), signature("canvas.add", 4)])
            .enqueue(on: c)
        let a = try startWorker(pool, ["-c", "4", "--hostname", "a"])
        let b = try startWorker(pool, ["-c", "4", "--hostname", "b"])
        #expect(
            try eventually(timeout: 60, interval: 0.2) {
                try CanvasStatus.fetch(sum.id, on: c)?.state == .succeeded
                    && CanvasStatus.fetch(steps.id, on: c)?.state == .succeeded
                    && count(c, "SELECT count(*) FROM canvas.jobs WHERE state <> 'succeeded'") == 0
            }, "\(a.log)\n\(b.log)")
        #expect(try CanvasStatus.fetch(sum.id, on: c)?.result == .int((1...500).reduce(0, +)))
        #expect(try CanvasStatus.fetch(steps.id, on: c)?.result == .int(10))
        #expect(try count(c, "SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'") == 1)
        #expect(try count(c, "SELECT count(*) FROM canvas.jobs WHERE attempt <> 1") == 0)
        #expect(try count(c, "SELECT count(DISTINCT worker_id) FROM canvas.jobs") == 2)
        a.signal(SIGTERM)
        b.signal(SIGTERM)
        #expect(a.waitForExit(timeout: 10) == 0)
        #expect(b.waitForExit(timeout: 10) == 0)
        #expect(try count(c, "SELECT count(*) FROM canvas.workers") == 0)
        let names = ["prefork": "ForkPoolWorker-", "threads": "ThreadPoolWorker-", "async": "AsyncPoolWorker-"]
        #expect(a.log.contains("(\(pool == "prefork" ? "prefork, spawned" : pool))"), "\(a.log)")
        #expect(a.log.contains("/\(names[pool]!)"), "runs are logged under their runner's name: \(a.log)")
        if pool != "prefork" { #expect(a.poolPIDs.isEmpty && b.poolPIDs.isEmpty) }
    }

    /// Code that ignores cancellation keeps its thread; the job does not wait for it: the run is
    /// settled at its limit, another runner takes the place, and what the code returns later is dropped.
    @Test(arguments: inProcess)
    func aRunPastItsHardLimitIsSettledAtOnceAndItsLateReturnDropped(pool: String) throws {
        let c = try database.connect()
        let blocked = try enqueue(#"{"task": "test.block", "args": [3], "options": {"time_limit": 0.5}}"#, on: c)
        let w = try startWorker(pool, ["-c", "1"])
        #expect(try eventually(timeout: 10) { try status(blocked, c).state == .failed }, "\(w.log)")
        let started = Date()
        let others = try Enqueue.jobs((0..<5).map { JobRequest("canvas.add", [.int($0), 1]) }, on: c)
        #expect(
            try eventually(timeout: 10) {
                try count(c, "SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(others)) AND state = 'succeeded'") == 5
            }, "\(w.log)")
        // With one runner, these ran while the blocked code still held its thread (3 s).
        #expect(Date().timeIntervalSince(started) < 2.5, "the pool waited for the stopped run")
        let failed = try status(blocked, c)
        #expect(failed.attempt == 1 && failed.errorType == "TimeLimitExceeded")
        #expect(failed.error?.hasPrefix("Hard time limit (0.5000s) exceeded for test.block[") == true)
        #expect(
            eventually(timeout: 10) { w.log.contains("test.block[\(blocked)] returned after it was settled") },
            "\(w.log)")
        let after = try status(blocked, c)
        #expect(after.state == .failed && after.result == nil && after.attempt == 1)
    }

    /// An async body is cancelled when its run is settled, so it gives its place back at once.
    @Test func anAsyncBodyPastItsHardLimitIsCancelled() throws {
        let c = try database.connect()
        let sleeper = try enqueue(#"{"task": "canvas.sleep", "args": [30], "options": {"time_limit": 0.5}}"#, on: c)
        let w = try startWorker("async", ["-c", "1"])
        #expect(try eventually(timeout: 10) { try status(sleeper, c).state == .failed }, "\(w.log)")
        #expect(try status(sleeper, c).errorType == "TimeLimitExceeded")
        #expect(
            eventually(timeout: 3) { w.log.contains("canvas.sleep[\(sleeper)] returned after it was settled") },
            "the cancelled sleep did not end: \(w.log)")
    }

    @Test(arguments: inProcess)
    func softTimeLimitsReachTheTask(pool: String) throws {
        let c = try database.connect()
        let async = try enqueue(#"{"task": "test.soft_async", "args": [30]}"#, on: c)
        let checked = try enqueue(
            #"{"task": "test.soft_check", "options": {"soft_time_limit": 0.3, "time_limit": 20}}"#, on: c)
        let w = try startWorker(pool, ["-c", "2"])
        #expect(
            try eventually(timeout: 15) {
                try status(async, c).state.isFinished && status(checked, c).state.isFinished
            },
            "\(w.log)")
        let a = try status(async, c)
        #expect(
            a.state == .failed && a.error == "SoftTimeLimitExceeded: soft time limit (0.5000s) exceeded", "\(w.log)")
        let run = try #require(a.finishedAt).timeIntervalSince(try #require(a.startedAt))
        #expect(run >= 0.4 && run < 5, "\(run)")
        let s = try status(checked, c)
        #expect(s.state == .failed && s.error == "SoftTimeLimitExceeded: soft time limit (0.3000s) exceeded")
        #expect(!w.log.contains("Hard time limit"), "\(w.log)")
    }

    @Test(arguments: inProcess)
    func aRunCancelledInTheDatabaseIsSettledAndTheWorkerGoesOn(pool: String) throws {
        let c = try database.connect()
        let blocked = try enqueue(#"{"task": "test.block", "args": [3]}"#, on: c)
        let w = try startWorker(pool, ["-c", "1"])
        #expect(eventually(timeout: 10) { w.log.contains("test.block[\(blocked)] received") }, "\(w.log)")
        let cancelled = try runCommand(
            Binaries.url("voteradmin"), ["cancel", String(blocked)], environment: ["DATABASE_URL": database.url])
        #expect(cancelled.status == 0, "\(cancelled.stderr)")
        let started = Date()
        let next = try Enqueue.job(JobRequest("canvas.add", [1, 1]), on: c)
        #expect(try eventually(timeout: 10) { try status(next, c).state == .succeeded }, "\(w.log)")
        #expect(Date().timeIntervalSince(started) < 2.5, "the pool waited for the cancelled run")
        #expect(w.log.contains("test.block[\(blocked)] cancelled: settled now"), "\(w.log)")
        #expect(
            eventually(timeout: 10) { w.log.contains("test.block[\(blocked)] returned after it was settled") },
            "\(w.log)")
        #expect(try status(blocked, c).state == .cancelled)
    }

    @Test(arguments: inProcess)
    func aKilledWorkersRunsAreRescuedByAnother(pool: String) throws {
        let c = try database.connect()
        let jobs = try Enqueue.jobs((0..<2).map { _ in JobRequest("canvas.sleep", [2]) }, on: c)
        let first = try startWorker(pool, ["-c", "2", "--hostname", "first"])
        #expect(
            try eventually(timeout: 10) {
                try count(c, "SELECT count(*) FROM canvas.jobs WHERE state = 'running'") == 2
            })
        first.signal(SIGKILL)
        _ = first.waitForExit(timeout: 5)
        let second = try startWorker(pool, ["-c", "2", "--hostname", "second"])
        #expect(
            try eventually(timeout: 30) {
                try count(c, "SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(jobs)) AND state = 'succeeded'") == 2
            }, "\(second.log)")
        #expect(try count(c, "SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(jobs)) AND crashes = 1") == 2)
    }

    @Test(arguments: inProcess)
    func sigtermFinishesRunningJobsAndHandsBackTheRest(pool: String) throws {
        let c = try database.connect()
        let jobs = try Enqueue.jobs((0..<6).map { _ in JobRequest("canvas.sleep", [1.5]) }, on: c)
        let w = try startWorker(pool, ["-c", "2", "--prefetch", "4"])
        #expect(
            eventually(timeout: 10) { w.log.components(separatedBy: "canvas.sleep[").count - 1 >= 2 }, "\(w.log)")
        // Received is claimed, not started: give the runners a moment to take the first two
        // (each sleeps 1.5 s).
        usleep(600_000)
        w.signal(SIGTERM)
        #expect(w.waitForExit(timeout: 10) == 0, "\(w.log)")
        #expect(w.log.contains("Warm shutdown"))
        #expect(try count(c, "SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(jobs)) AND state = 'succeeded'") == 2)
        #expect(
            try count(
                c, "SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(jobs)) AND state = 'queued' AND attempt = 0") == 4
        )
        #expect(try count(c, "SELECT count(*) FROM canvas.workers") == 0)
    }

    /// A cold shutdown cannot stop code in this process: it hands the runs back and exits anyway.
    @Test(arguments: inProcess)
    func aSecondSignalHandsBackRunningJobsAndExits(pool: String) throws {
        let c = try database.connect()
        let jobs = try Enqueue.jobs((0..<2).map { _ in JobRequest("test.block", [30]) }, on: c)
        let w = try startWorker(pool, ["-c", "2"])
        #expect(
            eventually(timeout: 10) { w.log.components(separatedBy: "test.block[").count - 1 >= 2 }, "\(w.log)")
        // Received is claimed, not started: give the runners a moment to take both (each blocks 30 s),
        // or the first signal hands them back unstarted and the worker is gone before the second.
        usleep(600_000)
        w.signal(SIGTERM)
        usleep(300_000)
        w.signal(SIGINT)
        #expect(w.waitForExit(timeout: 10) == 0, "\(w.log)")
        #expect(w.log.contains("Cold shutdown"))
        #expect(
            try count(
                c, "SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(jobs)) AND state = 'queued' AND attempt = 0") == 2
        )
    }

    @Test(arguments: everyPool)
    func waitingForAResultInsideATaskIsRefused(pool: String) throws {
        let c = try database.connect()
        let other = try Enqueue.job(JobRequest("canvas.noop", options: JobOptions(countdown: 3600)), on: c)
        let waiter = try Enqueue.job(JobRequest("test.wait_inside", [.int(Int(other))]), on: c)
        let w = try startWorker(pool, ["-c", "1"])
        #expect(try eventually(timeout: 10) { try status(waiter, c).state == .failed }, "\(w.log)")
        #expect(try status(waiter, c).error == TaskExecution.refusal)
    }

    /// Tasks of 20 ms, four at a time, with eight more waiting in the worker: a round for each
    /// outcome or two would cost the server far more than the tasks do, so outcomes gather while
    /// jobs still wait to start. A round's finishes share its transaction's `finished_at`; 96 jobs
    /// finished one or two a round would show 50 to 96 of them. And nothing is lost or run twice.
    @Test(arguments: everyPool)
    func outcomesOfLongerTasksGatherWhileJobsWaitInTheWorker(pool: String) throws {
        let c = try database.connect()
        _ = try Enqueue.jobs((0..<96).map { _ in JobRequest("canvas.sleep", [.double(0.02)]) }, on: c)
        let w = try startWorker(pool, ["-c", "4", "--prefetch", "8"])
        #expect(
            try eventually(timeout: 30, interval: 0.1) {
                try count(c, "SELECT count(*) FROM canvas.jobs WHERE state = 'succeeded'") == 96
            }, "\(w.log)")
        #expect(try count(c, "SELECT count(*) FROM canvas.jobs WHERE attempt <> 1") == 0)
        let rounds = try count(c, "SELECT count(DISTINCT finished_at) FROM canvas.jobs")
        #expect(rounds <= 32, "\(rounds) rounds finished 96 jobs")
    }

    @Test func anUnknownPoolIsOneLineAndExit64() throws {
        let result = try runCommand(
            Binaries.url("pgworker"), ["--pool", "gevent"], environment: ["DATABASE_URL": database.url])
        #expect(result.status == 64)
        #expect(result.stderrLines.count == 1, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("pgworker: error: unknown --pool 'gevent' (use prefork, threads or async)"))
    }
}

extension PoolTests {
    /// An async body that blocks holds one of Swift's cooperative threads (one per core). Once
    /// runs the pool settled hold all of them, the worker would hold its jobs while running
    /// nothing: it restarts instead (exit 70), handing them back, and another worker runs them.
    @Test func anAsyncPoolStarvedByCodeItCannotStopRestartsAndHandsItsJobsBack() throws {
        let c = try database.connect()
        let threads = ProcessInfo.processInfo.activeProcessorCount
        let blocked = try Enqueue.jobs(
            (0..<threads).map { _ in JobRequest("test.block_typed", [120], options: JobOptions(timeLimit: 0.5)) },
            on: c)
        let w = try startWorker("async", ["-c", String(threads * 2), "--hostname", "starved"])
        #expect(
            try eventually(timeout: 10) {
                try count(c, "SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(blocked)) AND state = 'failed'")
                    == threads
            }, "\(w.log)")
        let waiting = try Enqueue.job(JobRequest("test.retry_typed", [1]), on: c)
        #expect(w.waitForExit(timeout: 40) == 70, "\(w.log)")
        #expect(w.log.contains("the async pool is starved"), "\(w.log)")
        #expect(try status(waiting, c).state == .queued && status(waiting, c).attempt == 0)
        let other = try startWorker("threads", ["-c", "1", "--hostname", "other"])
        #expect(try eventually(timeout: 10) { try status(waiting, c).result == .int(1) }, "\(other.log)")
    }

    /// Each run settled while its code goes on keeps a thread (and maybe a connection) beyond
    /// what the worker registered: past one per runner the worker restarts to shed them.
    @Test func moreRunsLeftBehindThanRunnersRestartTheWorker() throws {
        let c = try database.connect()
        let blocked = try Enqueue.jobs(
            (0..<2).map { _ in JobRequest("test.block", [60], options: JobOptions(timeLimit: 0.3)) }, on: c)
        let w = try startWorker("threads", ["-c", "1", "--hostname", "leaky"])
        #expect(w.waitForExit(timeout: 20) == 70, "\(w.log)")
        #expect(w.log.contains("left 2 runs behind"), "\(w.log)")
        #expect(
            try count(c, "SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(blocked)) AND state = 'failed'") == 2)
    }
}

extension PoolTests {
    /// A warm shutdown while runners are finishing jobs by the thousand: every run reaches the
    /// database once (none is left running for a rescue to run again), seeded SIGTERM moments.
    @Test(arguments: inProcess)
    func aShutdownWhileRunnersFinishLosesNoReport(pool: String) throws {
        let c = try database.connect()
        var random = SplitMix64(state: 0x5EED_0001 ^ UInt64(pool.count))
        for round in 0..<4 {
            try c.execute("TRUNCATE canvas.jobs")
            _ = try Enqueue.jobs((0..<20_000).map { _ in JobRequest("canvas.noop") }, on: c)
            let w = try startWorker(pool, ["-c", "8", "--loglevel", "warning", "--hostname", "r\(round)"])
            #expect(
                try eventually(timeout: 20, interval: 0.01) {
                    try count(c, "SELECT count(*) FROM canvas.jobs WHERE state = 'succeeded'") > 0
                }, "\(w.log)")
            usleep(UInt32(Int.random(in: 0..<200_000, using: &random)))
            w.signal(SIGTERM)
            #expect(w.waitForExit(timeout: 30) == 0, "\(w.log)")
            #expect(try count(c, "SELECT count(*) FROM canvas.jobs WHERE state = 'running'") == 0, "round \(round)")
            #expect(try count(c, "SELECT count(*) FROM canvas.jobs WHERE crashes > 0 OR attempt > 1") == 0)
            #expect(
                try count(c, "SELECT count(*) FROM canvas.jobs WHERE state = 'queued' AND attempt <> 0") == 0,
                "a job handed back counts no run")
        }
    }

    /// A starmap over a typed task blocks while it waits for each typed body: in an async pool that
    /// wait happens off Swift's cooperative threads, so more starmaps than cores at once finish.
    @Test func starmapsOfTypedTasksBeyondTheCoreCountFinishInAnAsyncPool() throws {
        let c = try database.connect()
        let many = ProcessInfo.processInfo.activeProcessorCount * 3
        let ids = try Enqueue.jobs(
            (0..<many).map { _ in JobRequest("canvas.starmap", ["test.retry_typed", [[1], [1], [1]]]) }, on: c)
        let w = try startWorker("async", ["-c", String(many)])
        #expect(
            try eventually(timeout: 30) {
                try count(c, "SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(ids)) AND state = 'succeeded'") == many
            }, "\(w.log)")
        #expect(try status(ids[0], c).result == .array([1, 1, 1]))
    }
}

extension PoolTests {
    /// While jobs take microseconds a worker claims hundreds; once they take real time, what it
    /// claimed beyond its new capacity goes back to the queue, for other workers, uncounted.
    @Test(arguments: everyPool)
    func jobsClaimedForShortRunsGoBackWhenRunsGetLong(pool: String) throws {
        let c = try database.connect()
        _ = try Enqueue.jobs((0..<3_000).map { _ in JobRequest("canvas.noop") }, on: c)
        let slow = try Enqueue.jobs((0..<40).map { _ in JobRequest("canvas.sleep", [0.3]) }, on: c)
        let a = try startWorker(pool, ["-c", "2", "--hostname", "greedy"])
        #expect(
            eventually(timeout: 20) { a.log.contains("handed jobs back to the queue") }, "\(a.log.suffix(3000))")
        let b = try startWorker(pool, ["-c", "2", "--hostname", "other"])
        #expect(
            try eventually(timeout: 30) {
                try count(c, "SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(slow)) AND state = 'succeeded'") == 40
            }, "\(a.log.suffix(2000))\n\(b.log.suffix(2000))")
        #expect(try count(c, "SELECT count(*) FROM canvas.jobs WHERE attempt <> 1 OR crashes <> 0") == 0)
        #expect(
            try count(c, "SELECT count(DISTINCT worker_id) FROM canvas.jobs WHERE id = ANY(\(slow))") == 2,
            "the jobs handed back went to the idle worker")
    }
}
