import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// Real pgworker processes against a real PostgreSQL, killed the ways machines die.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class WorkerTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func count(_ c: Connection, _ q: Query) throws -> Int { try c.query(q)[0].decode(Int.self, 0) }

    func startWorker(_ arguments: [String]) throws -> WorkerProcess {
        try WorkerProcess(
            databaseURL: database.url,
            arguments: arguments + ["--heartbeat-interval", "0.5", "--rescue-after", "3", "--poll-interval", "0.2"])
    }

    @Test func twoWorkersDrainTwentyThousandJobsEachOnce() throws {
        let c = try database.connect()
        _ = try Enqueue.jobs((0..<20_000).map { _ in JobRequest("canvas.noop") }, on: c)
        let a = try startWorker(["-c", "4", "--loglevel", "warning", "--hostname", "a"])
        let b = try startWorker(["-c", "4", "--loglevel", "warning", "--hostname", "b"])
        let drained = try eventually(timeout: 120, interval: 0.2) {
            try count(c, "SELECT count(*) FROM canvas.jobs WHERE state = 'succeeded'") == 20_000
        }
        #expect(drained, "\(a.log)\n\(b.log)")
        #expect(try count(c, "SELECT count(*) FROM canvas.jobs WHERE attempt <> 1") == 0)
        #expect(try count(c, "SELECT count(DISTINCT worker_id) FROM canvas.jobs") == 2)
        a.signal(SIGTERM)
        b.signal(SIGTERM)
        #expect(a.waitForExit(timeout: 10) == 0)
        #expect(b.waitForExit(timeout: 10) == 0)
        #expect(try count(c, "SELECT count(*) FROM canvas.workers") == 0)
    }

    @Test func aKilledPoolProcessIsReplacedAndItsJobRunsAgain() throws {
        let c = try database.connect()
        let sleeper = try Enqueue.job(JobRequest("canvas.sleep", [6]), on: c)
        let w = try startWorker(["-c", "1"])
        #expect(try eventually(timeout: 10) { try JobStatus.fetch(sleeper, on: c)?.state == .running })
        // `running` means claimed; under a loaded machine the supervisor may not have handed the
        // job to its pool process yet, and a kill then would not hit the run. Give it a moment
        // (the task sleeps 6 s).
        usleep(1_000_000)
        let before = try #require(w.poolPIDs.first)
        kill(before, SIGKILL)
        let others = try Enqueue.jobs((0..<20).map { JobRequest("canvas.add", [.int($0), 1]) }, on: c)
        #expect(try eventually(timeout: 20) { try JobStatus.fetch(sleeper, on: c)?.state == .succeeded }, "\(w.log)")
        let status = try #require(try JobStatus.fetch(sleeper, on: c))
        #expect(status.attempt == 2 && status.crashes == 1)
        #expect(
            try eventually(timeout: 10) {
                try count(
                    c,
                    "SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(others)) AND state = 'succeeded' AND attempt = 1"
                ) == 20
            })
        let after = try #require(w.poolPIDs.first)
        #expect(after != before)
        #expect(w.log.contains("exited with 'signal 9"))
    }

    @Test func aPoisonPillFailsAfterBoundedCrashes() throws {
        let c = try database.connect()
        let pill = try Enqueue.job(JobRequest("canvas.crash"), on: c)
        let w = try startWorker(["-c", "2"])
        #expect(try eventually(timeout: 20) { try JobStatus.fetch(pill, on: c)?.state == .failed }, "\(w.log)")
        let status = try #require(try JobStatus.fetch(pill, on: c))
        #expect(status.crashes == 3)
        #expect(status.error?.contains("died 3 times") == true)
        // The worker is still healthy afterwards.
        let after = try Enqueue.job(JobRequest("canvas.add", [2, 2]), on: c)
        #expect(try eventually(timeout: 10) { try JobStatus.fetch(after, on: c)?.result == .int(4) })
    }

    @Test func aKilledSupervisorTakesItsPoolAlongAndAnotherWorkerRescuesItsJobs() throws {
        let c = try database.connect()
        let jobs = try Enqueue.jobs((0..<2).map { _ in JobRequest("canvas.sleep", [2]) }, on: c)
        let first = try startWorker(["-c", "2", "--hostname", "first"])
        #expect(
            try eventually(timeout: 10) {
                try count(c, "SELECT count(*) FROM canvas.jobs WHERE state = 'running'") == 2
            })
        let pool = first.poolPIDs
        #expect(pool.count == 2)
        first.signal(SIGKILL)
        _ = first.waitForExit(timeout: 5)
        #expect(
            eventually(timeout: 3) { pool.allSatisfy { !processExists($0) } },
            "pool processes outlived their supervisor")
        let second = try startWorker(["-c", "2", "--hostname", "second"])
        #expect(
            try eventually(timeout: 30) {
                try count(c, "SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(jobs)) AND state = 'succeeded'") == 2
            }, "\(second.log)")
        #expect(second.log.contains("rescued"))
        #expect(try count(c, "SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(jobs)) AND crashes = 1") == 2)
    }

    @Test func sigtermFinishesRunningJobsHandsBackTheRestAndExitsZero() throws {
        let c = try database.connect()
        let jobs = try Enqueue.jobs((0..<6).map { _ in JobRequest("canvas.sleep", [1.5]) }, on: c)
        let w = try startWorker(["-c", "2", "--prefetch", "4"])
        #expect(
            try eventually(timeout: 10) {
                try count(c, "SELECT count(*) FROM canvas.jobs WHERE started_at IS NOT NULL") >= 2
            })
        // Claimed is not started: give the dispatcher time to hand the first two to the pool.
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

    @Test func aSecondSignalIsAColdShutdownThatHandsBackRunningJobs() throws {
        let c = try database.connect()
        let jobs = try Enqueue.jobs((0..<2).map { _ in JobRequest("canvas.sleep", [30]) }, on: c)
        let w = try startWorker(["-c", "2"])
        #expect(
            try eventually(timeout: 10) {
                try count(c, "SELECT count(*) FROM canvas.jobs WHERE state = 'running'") == 2
            })
        // Both runs must have started in their pool processes, not merely been claimed.
        #expect(
            eventually(timeout: 10) { w.poolPIDs.count == 2 && w.log.components(separatedBy: "received").count == 3 })
        usleep(300_000)
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

    /// A time limit fails the job at once, retries left or not: only a retry policy that names
    /// TimeLimitExceeded retries it (RetryTests), as in Celery.
    @Test func aTimeLimitKillsTheRunAndFailsTheJobWithoutRetry() throws {
        let c = try database.connect()
        let id = try Enqueue.job(
            JobRequest("canvas.sleep", [30], options: JobOptions(maxRetries: 1, retryBackoff: 0, timeLimit: 0.5)), on: c
        )
        let w = try startWorker(["-c", "1"])
        #expect(try eventually(timeout: 15) { try JobStatus.fetch(id, on: c)?.state == .failed }, "\(w.log)")
        let status = try #require(try JobStatus.fetch(id, on: c))
        #expect(status.attempt == 1)
        #expect(status.error?.contains("Hard time limit") == true)
        #expect(w.log.contains("Hard time limit (0.5000s) exceeded for canvas.sleep[\(id)]"))
    }

    @Test func pollOnlyModeWorksWithoutListen() throws {
        let c = try database.connect()
        let w = try WorkerProcess(
            databaseURL: database.url, arguments: ["-c", "1", "--poll-only", "--poll-interval", "0.2"])
        sleep(1)
        let id = try Enqueue.job(JobRequest("canvas.add", [2, 3]), on: c)
        #expect(try eventually(timeout: 5) { try JobStatus.fetch(id, on: c)?.result == 5 }, "\(w.log)")
        let listening = try c.query(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'")
        #expect(try listening[0].decode(Int.self, 0) == 0)
    }

    @Test func retriesAreLoggedAndFailuresStored() throws {
        let c = try database.connect()
        let id = try Enqueue.job(
            JobRequest("canvas.fail", ["boom"], options: JobOptions(maxRetries: 2, retryBackoff: 0.1)), on: c)
        let unknown = try Enqueue.job(JobRequest("no.such.task"), on: c)
        let w = try startWorker(["-c", "2"])
        #expect(try eventually(timeout: 15) { try JobStatus.fetch(id, on: c)?.state == .failed }, "\(w.log)")
        #expect(try JobStatus.fetch(id, on: c)?.attempt == 3)
        #expect(try JobStatus.fetch(unknown, on: c)?.error == "unknown task 'no.such.task'")
        #expect(w.log.contains("Task canvas.fail[\(id)] retry: Retry in"))
        #expect(w.log.contains("Task canvas.fail[\(id)] failed: boom"))
    }
}
