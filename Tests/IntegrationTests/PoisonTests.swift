import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// One bad input, outcome or fault at a time, against a real worker: the bad job or canvas ends
/// `failed` with a message that names the cause, and the same worker goes on serving.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class PoisonTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func startWorker(_ extra: [String] = []) throws -> WorkerProcess {
        try WorkerProcess(databaseURL: database.url, arguments: ["-c", "2", "--loglevel", "info"] + extra)
    }

    func enqueue(_ json: String, on c: Connection) throws -> Int64 {
        try Canvas.enqueue(json: JSONValue(parsing: json), on: c).id
    }

    func count(_ sql: String, on c: Connection) throws -> Int {
        try c.query(Query(unsafeSQL: sql))[0].decode(Int.self, 0)
    }

    /// How many error callbacks carrying `marker` were enqueued (they are `canvas.noop` jobs whose
    /// arguments are the failure's description followed by the marker).
    func errbacks(_ marker: String, on c: Connection) throws -> Int {
        try c.query(
            "SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.noop' AND args->1 = to_jsonb(\(marker)::text)")[0]
            .decode(Int.self, 0)
    }

    func ended(_ root: Int64, on c: Connection, timeout: Double = 20) throws -> CanvasStatus {
        var status = try #require(try CanvasStatus.fetch(root, on: c))
        _ = try eventually(timeout: timeout, interval: 0.05) {
            status = try #require(try CanvasStatus.fetch(root, on: c))
            return status.state != .pending
        }
        return status
    }

    /// The worker is not stalled: a plain job enqueued now succeeds within seconds.
    func expectStillServing(_ worker: WorkerProcess, on c: Connection) throws {
        let id = try Enqueue.job(JobRequest("canvas.add", [5, 5]), on: c)
        let done = try eventually(timeout: 10) { try JobStatus.fetch(id, on: c)?.state == .succeeded }
        #expect(done, "\(worker.log.suffix(3000))")
        #expect(try JobStatus.fetch(id, on: c)?.result == .int(10))
    }

    @Test func aFollowUpThatCannotBeInsertedFailsItsCanvasAloneAndNotTheBatch() throws {
        let c = try database.connect()
        // Stands for any follow-up the database refuses although it passed validation.
        try c.execute("ALTER TABLE canvas.jobs ADD CONSTRAINT no_poison CHECK (task <> 'poison.next') NOT VALID")
        let plain = try Enqueue.jobs((0..<200).map { JobRequest("canvas.add", [.int($0), 1]) }, on: c)
        let root = try enqueue(
            #"""
            {"chain": [{"task": "canvas.add", "args": [1, 2]}, {"task": "poison.next"}],
             "on_error": {"task": "canvas.noop", "args": ["chain-errback"]}}
            """#, on: c)
        let worker = try startWorker()
        let status = try ended(root, on: c)
        #expect(status.state == .failed, "\(worker.log.suffix(3000))")
        let link = try c.query("SELECT id FROM canvas.jobs WHERE task = 'canvas.add' AND args = '[1, 2]'")[0].decode(
            Int64.self, 0)
        let job = try #require(try JobStatus.fetch(link, on: c))
        #expect(job.state == .failed)
        #expect(job.error?.contains("its outcome could not be recorded") == true, "\(job.error ?? "")")
        #expect(job.error?.contains("no_poison") == true, "\(job.error ?? "")")
        #expect(try errbacks("chain-errback", on: c) == 1)
        _ = try eventually(timeout: 10) {
            try plain.allSatisfy { try JobStatus.fetch($0, on: c)?.state == .succeeded }
        }
        #expect(try plain.allSatisfy { try JobStatus.fetch($0, on: c)?.state == .succeeded })
        try expectStillServing(worker, on: c)
        #expect(worker.log.contains("its outcome could not be recorded"))
        #expect(!worker.log.contains("PostgreSQL is unavailable"))
    }

    @Test(arguments: [
        (
            #"{"task": "canvas.add", "args": [1, 2], "options": {"priority": 3000000000}}"#,
            "options.priority: expected an integer from -32768 to 32767"
        ),
        (
            #"{"group": [{"task": "canvas.add", "args": [1, 2], "options": {"countdown": 1e300}}]}"#,
            "group[0].options.countdown: expected seconds from 0 to 315360000"
        ),
        (#"{"task": "line\nbreak"}"#, "task: expected a task name (1 to 200 characters, no control characters)"),
        (#"{"chain": [{"task": "a"}, {"task": "tab\there"}]}"#, "chain[1].task: expected a task name"),
        (#"{"task": "canvas.add", "kwarg": {"x": 1}}"#, #"canvas: unknown key "kwarg" for a signature"#),
    ])
    func aSpawnedCanvasThatIsRefusedFailsTheTaskThatSpawnedIt(spawned: String, cause: String) throws {
        let c = try database.connect()
        let id = try Enqueue.job(JobRequest("canvas.spawn", [try JSONValue(parsing: spawned)]), on: c)
        let worker = try startWorker()
        #expect(try eventually(timeout: 10) { try JobStatus.fetch(id, on: c)?.state == .failed }, "\(worker.log)")
        let error = try JobStatus.fetch(id, on: c)?.error ?? ""
        #expect(error.contains("the task spawned a canvas that could not be enqueued: \(cause)"), "\(error)")
        #expect(try count("SELECT count(*) FROM canvas.chords WHERE parent_id IS NOT NULL", on: c) == 0)
        try expectStillServing(worker, on: c)
    }

    @Test func argumentsAndGatheredResultsAboveTheBoundFailClearly() throws {
        let c = try database.connect()
        let big = try Enqueue.job(JobRequest("canvas.identity", [.string(String(repeating: "x", count: 2000))]), on: c)
        // Keyword arguments count too (`{"k": "z…"}` and `[]`: 2,011 bytes): the Swift bulk path
        // writes them without the SQL check.
        let bigKeywords = try Enqueue.job(
            JobRequest("canvas.echo", kwargs: ["k": .string(String(repeating: "z", count: 2000))]), on: c)
        let member = #"{"task": "canvas.identity", "args": ["\#(String(repeating: "y", count: 400))"]}"#
        let root = try enqueue(
            #"""
            {"chord": [\#(member), \#(member), \#(member)], "body": {"task": "canvas.noop", "args": ["body ran"]},
             "on_error": {"task": "canvas.noop", "args": ["too-big"]}}
            """#, on: c)
        // The bound is the database's setting; workers read it when they connect.
        try c.execute(
            Query(unsafeSQL: "ALTER DATABASE \(quoteIdentifier(database.name)) SET pgcanvas.max_payload_bytes = '1000'")
        )
        let worker = try startWorker()
        #expect(try eventually(timeout: 10) { try JobStatus.fetch(big, on: c)?.state == .failed }, "\(worker.log)")
        // Written while the bound was higher: the worker fails it without handing it to a pool process.
        let error = try JobStatus.fetch(big, on: c)?.error ?? ""
        #expect(error.contains("the arguments are too large (2004 bytes; the limit is 1000"), "\(error)")
        #expect(try JobStatus.fetch(big, on: c)?.attempt == 1)
        #expect(try eventually(timeout: 10) { try JobStatus.fetch(bigKeywords, on: c)?.state == .failed })
        let keywordError = try JobStatus.fetch(bigKeywords, on: c)?.error ?? ""
        #expect(keywordError.contains("the arguments are too large (2011 bytes; the limit is 1000"), "\(keywordError)")
        let status = try ended(root, on: c)
        #expect(status.state == .failed)
        let chordError =
            try c.query("SELECT error FROM canvas.chords WHERE kind = 'chord'")[0].decodeIfPresent(String.self, 0) ?? ""
        #expect(chordError.contains("the chord's gathered results take"), "\(chordError)")
        #expect(chordError.contains("the limit is 1000"), "\(chordError)")
        #expect(try errbacks("too-big", on: c) == 1)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE args->0 = '\"body ran\"'", on: c) == 0)
        try expectStillServing(worker, on: c)
    }

    @Test func errorCallbacksFollowCelery() throws {
        let c = try database.connect()
        // A chord's errback also covers its body.
        let bodyFails = try enqueue(
            #"""
            {"chord": [{"task": "canvas.add", "args": [1, 1]}],
             "body": {"task": "canvas.fail", "args": ["body broke"], "options": {"max_retries": 0}},
             "on_error": {"task": "canvas.noop", "args": ["E1"]}}
            """#, on: c)
        // The body's own errback hears of header failures (the body never runs).
        let headerFails = try enqueue(
            #"""
            {"chord": [{"task": "canvas.fail", "args": ["member broke"], "options": {"max_retries": 0}}],
             "body": {"task": "canvas.sum", "on_error": {"task": "canvas.noop", "args": ["E2"]}}}
            """#, on: c)
        // A chain's errback applies to every link besides the link's own; nothing leaks.
        let chainFails = try enqueue(
            #"""
            {"chain": [{"task": "canvas.add", "args": [1, 1], "on_error": {"task": "canvas.noop", "args": ["L1"]}},
                       {"task": "canvas.fail", "options": {"max_retries": 0},
                        "on_error": [{"task": "canvas.noop", "args": ["L2"]}]},
                       {"task": "canvas.add", "args": [1]}],
             "on_error": {"task": "canvas.noop", "args": ["C"]}}
            """#, on: c)
        let worker = try startWorker()
        for root in [bodyFails, headerFails, chainFails] {
            #expect(try ended(root, on: c).state == .failed, "\(worker.log.suffix(2000))")
        }
        // Error callbacks are enqueued in the transaction that fails their canvas.
        #expect(try errbacks("E1", on: c) == 1)
        #expect(try errbacks("E2", on: c) == 1)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'", on: c) == 0)
        #expect(try errbacks("L2", on: c) == 1)
        #expect(try errbacks("C", on: c) == 1)
        #expect(try errbacks("L1", on: c) == 0)
        let info = try JSONValue(
            parsing: c.query("SELECT args->0 FROM canvas.jobs WHERE task = 'canvas.noop' AND args->1 = '\"L2\"'")[0]
                .decode(String.self, 0))
        #expect(info.objectValue?["task"] == JSONValue.string("canvas.fail"))
        #expect(info.objectValue?["error"] == JSONValue.string("2"))
        #expect(info.objectValue?["id"]?.intValue != nil)
        try expectStillServing(worker, on: c)
    }

    @Test func starmapAsALaterLinkOrABodyIgnoresThePreviousResult() throws {
        let c = try database.connect()
        let inChain = try enqueue(
            #"{"chain": [{"task": "canvas.add", "args": [1, 2]}, {"starmap": "canvas.add", "args": [[1, 2], [3, 4]]}]}"#,
            on: c)
        let asBody = try enqueue(
            #"{"chord": [{"task": "canvas.add", "args": [1, 1]}], "body": {"starmap": "canvas.add", "args": [[2, 2]]}}"#,
            on: c)
        let worker = try startWorker()
        let chained = try ended(inChain, on: c)
        #expect(chained.state == .succeeded, "\(worker.log.suffix(2000))")
        #expect(chained.result == .array([.int(3), .int(7)]))
        let bodied = try ended(asBody, on: c)
        #expect(bodied.state == .succeeded)
        #expect(bodied.result == .array([.int(4)]))
    }

    @Test func retryingTheMemberThatFailedAChordCountsTheSiblingsThatSucceededMeanwhile() throws {
        let c = try database.connect()
        let root = try enqueue(
            #"""
            {"chord": [{"task": "canvas.fail", "args": ["first try"], "options": {"max_retries": 0}},
                       {"chain": [{"task": "canvas.sleep", "args": [0.5]},
                                  {"task": "canvas.identity", "args": [2], "options": {"immutable": true}}]}],
             "body": {"task": "canvas.identity"}}
            """#, on: c)
        let worker = try startWorker()
        #expect(try ended(root, on: c).state == .failed)
        // The sibling finishes after the chord failed.
        #expect(
            try eventually(timeout: 10) {
                try self.count(
                    "SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.identity' AND state = 'succeeded'", on: c)
                    == 1
            })
        let member = try c.query("SELECT id FROM canvas.jobs WHERE task = 'canvas.fail'")[0].decode(Int64.self, 0)
        // The operator fixes what made it fail, then retries it.
        try c.execute("UPDATE canvas.jobs SET task = 'canvas.identity', args = '[1]' WHERE id = \(member)")
        #expect(try c.query("SELECT canvas.retry(\(member))")[0].decode(String.self, 0) == "requeued")
        let status = try ended(root, on: c)
        #expect(status.state == .succeeded, "\(worker.log.suffix(2000))")
        #expect(status.result == .array([.int(1), .int(2)]))
        #expect(
            try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.identity' AND args = '[[1, 2]]'", on: c)
                == 1)
    }

    @Test func aTaskThatLosesItsDatabaseConnectionIsRetriedWithoutSpendingAnAttempt() throws {
        let c = try database.connect()
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("poison-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: output) }
        let worker = try WorkerProcess(
            databaseURL: database.url, arguments: ["-c", "1", "--loglevel", "info", "--output-dir", output.path])
        // all_in_one reads the (empty) voter tables on the pool process's own connection.
        let once = JobOptions(maxRetries: 0)
        let first = try Enqueue.job(JobRequest("all_in_one", options: once), on: c)
        #expect(try eventually(timeout: 10) { try JobStatus.fetch(first, on: c)?.state == .succeeded }, "\(worker.log)")
        // PostgreSQL drops the pool process's session (a restart or a failover looks the same to it).
        let killed = try count(
            """
            SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
            WHERE application_name = 'pgworker ForkPoolWorker-1' AND datname = current_database()
            """, on: c)
        #expect(killed == 1)
        let second = try Enqueue.job(JobRequest("all_in_one", options: once), on: c)
        #expect(try eventually(timeout: 10) { try JobStatus.fetch(second, on: c)?.state.isFinished == true })
        let row = try c.query("SELECT state, attempt, crashes FROM canvas.jobs WHERE id = \(second)")[0]
        // The run lost to the connection did not count against max_retries 0: the next one, on a
        // fresh connection, succeeded.
        #expect(try row.decode(String.self, 0) == "succeeded", "\(worker.log)")
        #expect(try row.decode(Int.self, 1) == 2)
        #expect(try row.decode(Int.self, 2) == 1)
        #expect(worker.log.contains("the task lost its database connection"), "\(worker.log)")
        try expectStillServing(worker, on: c)
    }
}
