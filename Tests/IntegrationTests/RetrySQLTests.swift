import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// The broker's side of retries and soft time limits, driven through its SQL functions: the
/// `retry` outcome of `canvas.finish`, time limits failing at once, and `soft_time_limit` from
/// the door (validation, the same in SQL and Swift) to the claim.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class RetrySQLTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func worker(_ c: Connection) throws -> Int64 {
        try Broker.registerWorker(hostname: "test", pid: 1, queues: ["default"], concurrency: 1, on: c)
    }

    func enqueue(_ json: String, on c: Connection) throws -> Int64 {
        try Canvas.enqueue(json: JSONValue(parsing: json), on: c).id
    }

    /// Claims the one queued job and finishes it with `outcome`. - Returns: what finish recorded.
    func run(
        _ me: Int64, _ kind: Outcome.Kind, result: String? = nil, error: String? = nil, on c: Connection
    ) throws -> Broker.Recorded {
        let job = try #require(try Broker.claim(worker: me, queues: ["default"], limit: 1, on: c).first)
        let recorded = try Broker.finish(
            worker: me,
            [Outcome(jobID: job.id, attempt: job.attempt, kind: kind, resultText: result, error: error)], on: c)
        return try #require(recorded.first)
    }

    func secondsUntilRun(_ id: Int64, on c: Connection) throws -> Double {
        try c.query("SELECT extract(epoch FROM run_at - now())::float8 FROM canvas.jobs WHERE id = \(id)")[0]
            .decode(Double.self, 0)
    }

    @Test func aRetryWithACountdownIsScheduledThatFarAhead() throws {
        let c = try database.connect()
        let me = try worker(c)
        let id = try Enqueue.job(JobRequest("t", options: JobOptions(maxRetries: 3)), on: c)
        let recorded = try run(me, .retry, result: #"{"countdown": 120}"#, error: "later", on: c)
        #expect(recorded.state == "scheduled")
        #expect(abs((recorded.retryIn ?? 0) - 120) < 1, "\(recorded)")
        #expect(abs(try secondsUntilRun(id, on: c) - 120) < 1)
        let job = try #require(try JobStatus.fetch(id, on: c))
        #expect(job.error == "later")
        // Countdown 0: runnable at once, and spent an attempt.
        try c.execute("UPDATE canvas.jobs SET run_at = now() WHERE id = \(id)")
        _ = try c.query("SELECT canvas.promote_due()")
        let again = try run(me, .retry, result: #"{"countdown": 0}"#, on: c)
        #expect(again.state == "queued")
        #expect(try JobStatus.fetch(id, on: c)?.error == "retry requested by the task")
        #expect(try JobStatus.fetch(id, on: c)?.attempt == 2)
    }

    @Test func aRetryPastItsMaxRetriesOverrideFailsWithItsReason() throws {
        let c = try database.connect()
        let me = try worker(c)
        let root = try enqueue(
            #"""
            {"task": "t", "options": {"max_retries": 10},
             "on_error": {"task": "canvas.noop", "args": ["errback"]}}
            """#, on: c)
        // max_retries 1 for this decision: the first run may retry, the second may not.
        #expect(
            try run(me, .retry, result: #"{"countdown": 0, "max_retries": 1}"#, error: "quota", on: c).state == "queued"
        )
        #expect(
            try run(me, .retry, result: #"{"countdown": 0, "max_retries": 1}"#, error: "quota", on: c).state == "failed"
        )
        let job = try c.query("SELECT error, attempt FROM canvas.jobs WHERE task = 't'")[0]
        #expect(try job.decode(String.self, 0) == "quota")
        #expect(try job.decode(Int.self, 1) == 2)
        #expect(try CanvasStatus.fetch(root, on: c)?.state == .failed)
        #expect(
            try c.query("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.noop' AND args->1 = '\"errback\"'")[0]
                .decode(Int.self, 0) == 1)
    }

    /// Terms from a client in another language: any JSON number is clamped, never refused.
    @Test func retryTermsOutOfRangeAreClamped() throws {
        let c = try database.connect()
        let me = try worker(c)
        let id = try Enqueue.job(JobRequest("t", options: JobOptions(maxRetries: 0)), on: c)
        let far = try run(me, .retry, result: #"{"countdown": 1e400, "max_retries": 2.5e9}"#, on: c)
        #expect(far.state == "scheduled")
        #expect(abs(try secondsUntilRun(id, on: c) - 315_360_000) < 60)
        try c.execute("UPDATE canvas.jobs SET run_at = now() WHERE id = \(id)")
        _ = try c.query("SELECT canvas.promote_due()")
        #expect(try run(me, .retry, result: #"{"countdown": -5, "max_retries": -1}"#, on: c).state == "failed")
    }

    @Test func aRetryWithoutAReasonFailsAsCeleryDoesWhenNoneIsLeft() throws {
        let c = try database.connect()
        let me = try worker(c)
        let id = try Enqueue.job(JobRequest("t", options: JobOptions(maxRetries: 0)), on: c)
        #expect(try run(me, .retry, result: "{}", on: c).state == "failed")
        #expect(try JobStatus.fetch(id, on: c)?.error == "Can't retry t[\(id)]: max retries exceeded")
    }

    /// Without a countdown the job's own backoff applies: retry_backoff 100 is 90 to 110 s.
    @Test func aRetryWithoutACountdownTakesTheJobsBackoff() throws {
        let c = try database.connect()
        let me = try worker(c)
        let id = try Enqueue.job(JobRequest("t", options: JobOptions(retryBackoff: 100)), on: c)
        #expect(try run(me, .retry, result: "{}", error: "x", on: c).state == "scheduled")
        let wait = try secondsUntilRun(id, on: c)
        #expect(wait > 88 && wait < 111, "\(wait)")
    }

    @Test func aTimeLimitFailsAtOnceWhileAnErrorStillRetriesByDefault() throws {
        let c = try database.connect()
        let me = try worker(c)
        let timedOut = try Enqueue.job(JobRequest("t", options: JobOptions(maxRetries: 3)), on: c)
        #expect(try run(me, .timeout, error: "Hard time limit (1s) exceeded", on: c).state == "failed")
        #expect(try JobStatus.fetch(timedOut, on: c)?.attempt == 1)
        // The default for errors from tasks without a policy (and from any other client) stays.
        let failing = try Enqueue.job(JobRequest("t", options: JobOptions(maxRetries: 3, retryBackoff: 0)), on: c)
        #expect(try run(me, .error, error: "boom", on: c).state == "queued")
        #expect(try JobStatus.fetch(failing, on: c)?.state == .queued)
    }

    @Test func successesStillTakeTheFastPathBesideRetries() throws {
        let c = try database.connect()
        let me = try worker(c)
        let ids = try Enqueue.jobs((0..<4).map { JobRequest("t", [.int($0)]) }, on: c)
        let jobs = try Broker.claim(worker: me, queues: ["default"], limit: 4, on: c)
        let outcomes = jobs.enumerated().map { i, job in
            i % 2 == 0
                ? Outcome(jobID: job.id, attempt: job.attempt, kind: .succeeded, resultText: "1")
                : Outcome(jobID: job.id, attempt: job.attempt, kind: .retry, resultText: #"{"countdown": 60}"#)
        }
        let recorded = try Broker.finish(worker: me, outcomes, on: c)
        #expect(recorded.map(\.state).sorted() == ["scheduled", "scheduled", "succeeded", "succeeded"])
        #expect(
            try ids.map { try JobStatus.fetch($0, on: c)!.state } == [.succeeded, .scheduled, .succeeded, .scheduled])
    }

    @Test(arguments: [
        (
            #"{"task": "a", "options": {"soft_time_limit": 0}}"#,
            "options.soft_time_limit: expected seconds, more than 0 and at most 31536000"
        ),
        (
            #"{"task": "a", "options": {"soft_time_limit": 31536001}}"#,
            "options.soft_time_limit: expected seconds, more than 0 and at most 31536000"
        ),
        (
            #"{"task": "a", "options": {"soft_time_limit": "5"}}"#,
            "options.soft_time_limit: expected seconds, more than 0 and at most 31536000"
        ),
        (
            #"{"chain": [{"task": "a"}, {"task": "b", "options": {"soft_time_limit": 5, "time_limit": 5}}]}"#,
            "chain[1].options.soft_time_limit: expected less than options.time_limit"
        ),
        (
            #"{"task": "a", "options": {"soft_time_limit": 6, "time_limit": 5}}"#,
            "options.soft_time_limit: expected less than options.time_limit"
        ),
    ])
    func aSoftTimeLimitOutOfRangeIsRefusedAlikeBySQLAndSwift(canvas: String, message: String) throws {
        let c = try database.connect()
        let error = try #require(throws: PostgresError.self) {
            try c.query("SELECT canvas.enqueue_canvas(\(PostgresJSON(text: canvas)))")
        }
        #expect(error.message == message)
        #expect(try c.query("SELECT count(*) FROM canvas.jobs")[0].decode(Int.self, 0) == 0)
    }

    /// The same cases as above, built in Swift: the same messages.
    @Test func swiftRefusesTheSameSoftTimeLimitsWithTheSameMessages() throws {
        let range = "options.soft_time_limit: expected seconds, more than 0 and at most 31536000"
        let order = "options.soft_time_limit: expected less than options.time_limit"
        let cases: [(Canvas, String)] = [
            (signature("a", options: SignatureOptions(softTimeLimit: 0)), range),
            (signature("a", options: SignatureOptions(softTimeLimit: 31_536_001)), range),
            (signature("a", options: SignatureOptions(softTimeLimit: .nan)), range),
            (
                chain([signature("a"), signature("b", options: SignatureOptions(timeLimit: 5, softTimeLimit: 5))]),
                "chain[1]." + order
            ),
            (signature("a", options: SignatureOptions(timeLimit: 5, softTimeLimit: 6)), order),
        ]
        for (canvas, message) in cases {
            let error = try #require(throws: CanvasError.self) { try canvas.validate() }
            #expect(error.description == message)
        }
        #expect(throws: Never.self) { try JobOptions(timeLimit: 5, softTimeLimit: 4.9).validate() }
        let refused = try #require(throws: CanvasError.self) {
            try JobOptions(timeLimit: 5, softTimeLimit: 5).validate()
        }
        #expect(refused.description == order)
    }

    @Test func aSoftTimeLimitTravelsFromEveryDoorToTheClaim() throws {
        let c = try database.connect()
        let me = try worker(c)
        _ = try enqueue(#"{"task": "json", "options": {"soft_time_limit": 1.5, "time_limit": 3}}"#, on: c)
        _ = try Canvas.signature(Signature("swift", options: SignatureOptions(softTimeLimit: 2.5))).enqueue(on: c)
        _ = try Enqueue.job(JobRequest("plain", options: JobOptions(timeLimit: 9, softTimeLimit: 3.5)), on: c)
        _ = try Enqueue.job(JobRequest("none"), on: c)
        let claimed = try Broker.claim(worker: me, queues: ["default"], limit: 10, on: c)
        #expect(
            Dictionary(uniqueKeysWithValues: claimed.map { ($0.task, $0.softTimeLimit) })
                == ["json": 1.5, "swift": 2.5, "plain": 3.5, "none": nil])
        // And from the command line.
        let cli = try runCommand(
            Binaries.url("voteradmin"), ["enqueue", "canvas.noop", "--soft-time-limit", "5.5", "--time-limit", "6"],
            environment: ["DATABASE_URL": database.url])
        #expect(cli.status == 0, "\(cli.stderr)")
        let fromCLI = try #require(Int64(cli.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(
            try c.query("SELECT soft_time_limit FROM canvas.jobs WHERE id = \(fromCLI)")[0].decode(Double.self, 0)
                == 5.5)
        try c.execute("DELETE FROM canvas.jobs WHERE id = \(fromCLI)")
        // finish_and_claim hands it over too.
        _ = try Enqueue.job(JobRequest("again", options: JobOptions(softTimeLimit: 4.5)), on: c)
        let both = try Broker.finishAndClaim(worker: me, [], queues: ["default"], limit: 1, on: c)
        #expect(both.claimed.map(\.softTimeLimit) == [4.5])
    }
}
