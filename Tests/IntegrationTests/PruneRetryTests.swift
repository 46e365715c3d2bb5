import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// `voteradmin retry` of the member that failed a chord reopens the chord, whose body then gets
/// every member's result: the pruner must not take members from under it, and a retry must not
/// reopen a chord the pruner took anything from, in either order and when both run at once
/// (canvas.prune's pass over members; canvas.retry, which takes the pruner's lock first).
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class PruneRetryTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func count(_ sql: Query, on c: Connection) throws -> Int { try c.query(sql)[0].decode(Int.self, 0) }

    func voteradmin(_ arguments: [String]) throws -> CommandResult {
        try runCommand(Binaries.url("voteradmin"), arguments, environment: ["DATABASE_URL": database.url])
    }

    struct Failed {
        var chord: Int64
        var member: Int64
        var worker: Int64
    }

    /// A chord of add(1, 2), add(3, 4) and a member that failed it, run on this connection as a
    /// worker would, then aged two days: its chord and root failed then. The failed member
    /// finished `memberAge` ago. With `siblingFails`, add(3, 4) failed too.
    func failedChord(memberAge: String, siblingFails: Bool = false, on c: Connection) throws -> Failed {
        // A regression that makes one side wait for the other fails the test, not the run.
        try c.execute("SET statement_timeout = '10s'")
        let w = try Broker.registerWorker(hostname: "t", pid: 1, queues: ["default"], concurrency: 3, on: c)
        _ = try chord(
            [
                signature("canvas.add", 1, 2),
                signature("canvas.add", 3, 4, options: SignatureOptions(maxRetries: 0)),
                signature("canvas.fail", "first try", options: SignatureOptions(maxRetries: 0)),
            ], body: signature("canvas.identity")
        ).enqueue(on: c)
        let jobs = try Broker.claim(worker: w, queues: ["default"], limit: 3, on: c).sorted { $0.id < $1.id }
        try #require(jobs.count == 3)
        try Broker.finish(
            worker: w,
            [
                Outcome(jobID: jobs[0].id, attempt: jobs[0].attempt, kind: .succeeded, resultText: "3"),
                siblingFails
                    ? Outcome(jobID: jobs[1].id, attempt: jobs[1].attempt, kind: .error, error: "also")
                    : Outcome(jobID: jobs[1].id, attempt: jobs[1].attempt, kind: .succeeded, resultText: "7"),
                Outcome(jobID: jobs[2].id, attempt: jobs[2].attempt, kind: .error, error: "first try"),
            ], on: c)
        let chordID: Int64 = try c.query("SELECT chord_id FROM canvas.jobs WHERE id = \(jobs[2].id)")[0].decode(
            Int64.self, 0)
        try c.executeScript(
            """
            UPDATE canvas.jobs SET finished_at = now() - interval '2 days' WHERE finished_at IS NOT NULL;
            UPDATE canvas.chords SET finished_at = now() - interval '2 days' WHERE finished_at IS NOT NULL;
            """)
        try c.execute(
            "UPDATE canvas.jobs SET finished_at = now() - \(memberAge)::interval WHERE id = \(jobs[2].id)")
        return Failed(chord: chordID, member: jobs[2].id, worker: w)
    }

    /// Runs the retried member to success, as a worker would.
    func succeed(_ f: Failed, on c: Connection) throws {
        let job = try #require(try Broker.claim(worker: f.worker, queues: ["default"], limit: 1, on: c).first)
        #expect(job.id == f.member)
        try Broker.finish(
            worker: f.worker, [Outcome(jobID: job.id, attempt: job.attempt, kind: .succeeded, resultText: "11")],
            on: c)
    }

    /// The arguments of every body the chord enqueued: one, with every member's result, or none.
    func bodyArguments(on c: Connection) throws -> [String] {
        try c.query("SELECT args FROM canvas.jobs WHERE task = 'canvas.identity'").map { try $0.decode(String.self, 0) }
    }

    func chordState(_ f: Failed, on c: Connection) throws -> String {
        try c.query("SELECT state FROM canvas.chords WHERE id = \(f.chord)")[0].decode(String.self, 0)
    }

    func retry(_ f: Failed, on c: Connection) throws -> String? {
        try c.query("SELECT canvas.retry(\(f.member))")[0].decodeIfPresent(String.self, 0)
    }

    func prune(on c: Connection) throws -> Int {
        try c.query("SELECT jobs FROM canvas.prune('1 day')")[0].decode(Int.self, 0)
    }

    /// Whether a session of this database waits for the pruner's advisory lock.
    func waitingOnThePrunersLock(_ c: Connection) throws -> Bool {
        try c.query(
            """
            SELECT count(*) FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'
            """)[0].decode(Int.self, 0) > 0
    }

    @Test func aRetryAfterTheResultsWerePrunedRequeuesTheJobButLeavesTheChordFailed() throws {
        let c = try database.connect()
        // The failed member is young, so it stays while its older siblings go.
        let f = try failedChord(memberAge: "1 minute", on: c)
        #expect(try prune(on: c) == 2)
        #expect(
            try retry(f, on: c)
                == "requeued; its chord \(f.chord) stays failed: some of its members were pruned (--prune-after)")
        #expect(try chordState(f, on: c) == "failed")
        try succeed(f, on: c)
        // Reopened, its body would have run on [11] alone.
        #expect(try bodyArguments(on: c).isEmpty)
    }

    /// A second member failed for good too, and the pruner took it: nothing left in the chord
    /// says it failed, yet reopened it would wait for that member forever.
    @Test func aRetryAfterAFailedSiblingWasPrunedLeavesTheChordFailed() throws {
        let c = try database.connect()
        let f = try failedChord(memberAge: "1 minute", siblingFails: true, on: c)
        #expect(try prune(on: c) == 2)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE state = 'failed'", on: c) == 1)
        #expect(try retry(f, on: c)?.hasSuffix("some of its members were pruned (--prune-after)") == true)
        #expect(try chordState(f, on: c) == "failed")
        let retried = try voteradmin(["retry", String(f.member)])
        #expect(retried.status == 1, "not failed any more: \(retried.stdout)")
    }

    /// The command says when the chord stays failed, and why it may.
    @Test func theRetryCommandSaysWhenTheChordStaysFailed() throws {
        let c = try database.connect()
        let f = try failedChord(memberAge: "1 minute", on: c)
        #expect(try prune(on: c) == 2)
        let retried = try voteradmin(["retry", String(f.member)])
        #expect(retried.status == 0, "\(retried.stderr)")
        #expect(
            retried.stdout.contains(
                "Requeued \(f.member); its chord \(f.chord) stays failed: some of its members were pruned"),
            "\(retried.stdout)")
    }

    @Test func aRetryWithEveryResultStillThereReopensTheChord() throws {
        let c = try database.connect()
        let f = try failedChord(memberAge: "1 minute", on: c)
        #expect(try retry(f, on: c) == "requeued")
        #expect(try chordState(f, on: c) == "pending")
        try succeed(f, on: c)
        #expect(try bodyArguments(on: c) == ["[[3, 7, 11]]"])
    }

    /// The retry has reopened the chord but not committed when the pruner comes: the pruner skips
    /// its round, and the next one finds the chord pending and leaves every member.
    @Test func aPrunerSkipsWhileARetryIsUnderWayThenLeavesTheReopenedChord() throws {
        let c = try database.connect()
        let f = try failedChord(memberAge: "2 days", on: c)
        let first = try database.connect()
        try first.execute("BEGIN")
        #expect(try retry(f, on: first) == "requeued")
        #expect(try c.query("SELECT jobs FROM canvas.prune('1 day')").isEmpty, "skipped, as for another pruner")
        try first.execute("COMMIT")
        #expect(try prune(on: c) == 0)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE chord_id = \(f.chord)", on: c) == 3)
        #expect(try chordState(f, on: c) == "pending")
        try succeed(f, on: c)
        #expect(try bodyArguments(on: c) == ["[[3, 7, 11]]"])
    }

    /// The pruner has taken the siblings but not committed when the retry comes: the retry waits,
    /// then sees them gone and leaves the chord failed.
    @Test func aRetryThatMeetsAPrunerLeavesTheChordFailed() throws {
        let c = try database.connect()
        let f = try failedChord(memberAge: "1 minute", on: c)
        let first = try database.connect()
        try first.execute("BEGIN")
        #expect(try prune(on: first) == 2)
        // What the retry returned, or the error it met (a statement timeout if it never got its turn).
        let retried = SharedValue<Result<String?, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let config = database.configuration
        let member = f.member
        let thread = Thread {
            retried.value = Result {
                let other = try Connection.connect(config)
                try other.execute("SET statement_timeout = '10s'")
                return try other.query("SELECT canvas.retry(\(member))")[0].decodeIfPresent(String.self, 0)
            }
            done.signal()
        }
        thread.start()
        #expect(eventually(timeout: 10) { (try? self.waitingOnThePrunersLock(c)) == true })
        try first.execute("COMMIT")
        #expect(done.wait(timeout: .now() + 15) == .success)
        #expect(try retried.value?.get()?.hasSuffix("some of its members were pruned (--prune-after)") == true)
        #expect(try chordState(f, on: c) == "failed")
        try succeed(f, on: c)
        #expect(try bodyArguments(on: c).isEmpty)
    }

    /// A chord inside the chord failed it; a plain member failed later. The pruner takes the inner
    /// chord (its member, then its row) and keeps the outer one, which the late member points at:
    /// reopened by a retry of that member, the outer chord would wait for the inner one forever.
    @Test func aRetryAfterAnInnerChordWasPrunedLeavesTheOuterChordFailed() throws {
        let c = try database.connect()
        try c.execute("SET statement_timeout = '10s'")
        let w = try Broker.registerWorker(hostname: "t", pid: 1, queues: ["default"], concurrency: 2, on: c)
        _ = try Canvas.enqueue(
            jsonText: """
                {"chord": [{"chord": [{"task": "canvas.fail", "args": ["inner"], "options": {"max_retries": 0}}],
                            "body": {"task": "canvas.identity"}},
                           {"task": "canvas.fail", "args": ["late"], "options": {"max_retries": 0}}],
                 "body": {"task": "canvas.identity"}}
                """, on: c)
        let jobs = try Broker.claim(worker: w, queues: ["default"], limit: 2, on: c).sorted { $0.id < $1.id }
        try #require(jobs.count == 2)
        for job in jobs {
            try Broker.finish(
                worker: w, [Outcome(jobID: job.id, attempt: job.attempt, kind: .error, error: "no")], on: c)
        }
        let late = jobs[1].id
        let outer: Int64 = try c.query("SELECT chord_id FROM canvas.jobs WHERE id = \(late)")[0].decode(Int64.self, 0)
        try c.executeScript(
            """
            UPDATE canvas.jobs SET finished_at = now() - interval '2 days' WHERE id <> \(late);
            UPDATE canvas.chords SET finished_at = now() - interval '2 days' WHERE finished_at IS NOT NULL;
            """)
        #expect(try prune(on: c) == 1)
        #expect(try count("SELECT count(*) FROM canvas.chords WHERE id = \(outer)", on: c) == 1)
        #expect(try count("SELECT count(*) FROM canvas.chords WHERE context->>'chord_id' = '\(outer)'", on: c) == 0)
        let outcome = try c.query("SELECT canvas.retry(\(late))")[0].decodeIfPresent(String.self, 0)
        #expect(outcome?.hasSuffix("some of its members were pruned (--prune-after)") == true, "\(outcome ?? "nil")")
        #expect(
            try c.query("SELECT state FROM canvas.chords WHERE id = \(outer)")[0].decode(String.self, 0) == "failed")
    }
}
