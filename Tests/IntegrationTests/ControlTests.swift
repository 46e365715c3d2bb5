import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// cancel, retry, purge and wait, as a user runs them.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class ControlTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func voteradmin(_ arguments: [String]) throws -> CommandResult {
        try runCommand(Binaries.url("voteradmin"), arguments, environment: ["DATABASE_URL": database.url])
    }

    func state(_ id: Int64) throws -> JobStatus.State? { try JobStatus.fetch(id, on: database.connect())?.state }

    @Test func cancellingQueuedAndRunningJobs() throws {
        let c = try database.connect()
        let queued = try Enqueue.job(JobRequest("canvas.noop", options: JobOptions(countdown: 3600)), on: c)
        #expect(try voteradmin(["cancel", String(queued)]).status == 0)
        #expect(try state(queued) == .cancelled)

        let running = try Enqueue.job(JobRequest("canvas.sleep", [30]), on: c)
        let worker = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "1"])
        #expect(try eventually(timeout: 10) { try state(running) == .running && worker.log.contains("received") })
        usleep(300_000)
        let before = worker.poolPIDs
        let result = try voteradmin(["cancel", String(running)])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try state(running) == .cancelled)
        #expect(
            eventually(timeout: 5) { worker.log.contains("Task canvas.sleep[\(running)] cancelled") }, "\(worker.log)")
        #expect(eventually(timeout: 5) { !worker.poolPIDs.isEmpty && worker.poolPIDs != before })
        // The worker goes on with other work.
        let next = try Enqueue.job(JobRequest("canvas.add", [1, 1]), on: c)
        #expect(try eventually(timeout: 10) { try state(next) == .succeeded })
        #expect(try state(running) == .cancelled)

        let again = try voteradmin(["cancel", String(running)])
        #expect(again.status == 1)
        #expect(again.stderrLines == ["voteradmin: error: \(running) has already finished; nothing to cancel"])
        let unknown = try voteradmin(["cancel", "987654321"])
        #expect(unknown.status == 1)
        #expect(unknown.stderrLines == ["voteradmin: error: no job or canvas with id 987654321"])
    }

    @Test func cancellingAChordCancelsItsPendingMembersAndItsBody() throws {
        let c = try database.connect()
        let handle = try chord(
            (0..<5).map { _ in signature("canvas.noop", options: SignatureOptions(countdown: 3600)) },
            body: signature("canvas.sum")
        ).enqueue(on: c)
        let inner = try #require(try CanvasStatus.fetch(handle.id, on: c)?.innerID)
        #expect(try voteradmin(["cancel", String(inner)]).status == 0)
        #expect(
            try c.query("SELECT count(*) FROM canvas.jobs WHERE chord_id = \(inner) AND state = 'cancelled'")[0].decode(
                Int.self, 0) == 5)
        #expect(try CanvasStatus.fetch(inner, on: c)?.state == .cancelled)
        #expect(try CanvasStatus.fetch(handle.id, on: c)?.state != .pending)
        let worker = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "1"])
        usleep(500_000)
        #expect(try c.query("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'")[0].decode(Int.self, 0) == 0)
        _ = worker
    }

    @Test func retryingTheFailedMemberLetsTheChordGoOn() throws {
        let c = try database.connect()
        let handle = try chord(
            [
                signature("canvas.add", 1, 2),
                signature("canvas.sleep", 1, options: SignatureOptions(maxRetries: 0, timeLimit: 0.3)),
            ], body: signature("canvas.identity")
        ).enqueue(on: c)
        let worker = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "2"])
        let failed = try handle.wait(on: c, timeout: 30)
        #expect(failed.state == .failed)
        let member: Int64 = try c.query("SELECT id FROM canvas.jobs WHERE task = 'canvas.sleep'")[0].decode(
            Int64.self, 0)
        // Give it room this time, then retry it.
        try c.execute("UPDATE canvas.jobs SET time_limit = NULL WHERE id = \(member)")
        let retried = try voteradmin(["retry", String(member)])
        #expect(retried.status == 0, "\(retried.stderr)")
        let done = try handle.wait(on: c, timeout: 30)
        #expect(done.state == .succeeded, "\(worker.log.suffix(1500))")
        #expect(done.result == [3, .null])
        let notFailed = try voteradmin(["retry", String(member)])
        #expect(notFailed.status == 1)
        #expect(notFailed.stderr.contains("has not failed"))
    }

    @Test func purgeRemovesQueuedJobsOnlyWhenConfirmed() throws {
        let c = try database.connect()
        _ = try Enqueue.jobs((0..<5).map { _ in JobRequest("canvas.noop", options: JobOptions(queue: "a")) }, on: c)
        _ = try Enqueue.jobs((0..<3).map { _ in JobRequest("canvas.noop", options: JobOptions(queue: "b")) }, on: c)
        let unconfirmed = try voteradmin(["purge"])
        #expect(unconfirmed.status == 1)
        #expect(unconfirmed.stderrLines.count == 1)
        #expect(try c.query("SELECT count(*) FROM canvas.jobs")[0].decode(Int.self, 0) == 8)
        let one = try voteradmin(["purge", "--queue", "a", "--yes"])
        #expect(one.stdout.contains("Purged 5 queued jobs from a"))
        #expect(try c.query("SELECT count(*) FROM canvas.jobs")[0].decode(Int.self, 0) == 3)
    }

    @Test func waitShowsProgressAsPlainLinesWhenNotOnATerminal() throws {
        let c = try database.connect()
        let handle = try chord((0..<300).map { _ in signature("canvas.sleep", 0.01) }, body: signature("canvas.noop"))
            .enqueue(on: c)
        let worker = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "2", "--loglevel", "warning"])
        let result = try voteradmin(["wait", String(handle.id)])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("members done"), "\(result.stderr)")
        #expect(result.stderr.contains("/300) members done"))
        #expect(result.stderr.contains("100% (300/300)"), "\(result.stderr)")
        #expect(result.stdout.contains("succeeded"))
        _ = worker
    }

    @Test func badScheduleInputIsOneLineAndChangesNothing() throws {
        #expect(try voteradmin(["schedule", "add", "ok", "--task", "canvas.noop", "--every", "30s"]).status == 0)
        let cases: [[String]] = [
            ["schedule", "add", "x", "--task", "canvas.noop", "--cron", "61 * * * *"],
            ["schedule", "add", "x", "--task", "canvas.noop", "--cron", "0 9 * * *", "--tz", "Mars/Olympus"],
            ["schedule", "add", "x", "--task", "canvas.noop", "--every", "0s"],
            ["schedule", "add", "x", "--task", "canvas.noop", "--every", "-5m"],
            ["schedule", "add", "ok", "--task", "canvas.noop", "--every", "10s"],
            ["schedule", "add", "x", "--task", "no.such.task", "--every", "10s"],
            ["schedule", "remove", "nope"],
        ]
        for arguments in cases {
            let result = try voteradmin(arguments)
            #expect(result.status != 0, "\(arguments)")
            #expect(result.stderrLines.count == 1, "\(arguments): \(result.stderr)")
        }
        let list = try voteradmin(["schedule", "list"])
        #expect(list.stdout.split(separator: "\n").count == 1)
        #expect(list.stdout.contains("ok  enabled   every 30s"))
    }
}
