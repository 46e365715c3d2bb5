import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// `voteradmin enqueue`, `result` and `status` as a user runs them.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class EnqueueCommandTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func voteradmin(_ arguments: [String], url: String? = nil) throws -> CommandResult {
        try runCommand(Binaries.url("voteradmin"), arguments, environment: ["DATABASE_URL": url ?? database.url])
    }

    func jobCount() throws -> Int {
        try database.connect().query("SELECT count(*) FROM canvas.jobs")[0].decode(Int.self, 0)
    }

    @Test func enqueuePrintsTheIdAndWaitPrintsTheOutcome() throws {
        let plain = try voteradmin(["enqueue", "canvas.add", "--args", "[1, 2]"])
        #expect(plain.status == 0, "\(plain.stderr)")
        let id = try #require(Int64(plain.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(try JobStatus.fetch(id, on: database.connect())?.args == [1, 2])

        let worker = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "1"])
        let waited = try voteradmin(["enqueue", "canvas.add", "--args", "[20, 22]", "--wait", "--json"])
        #expect(waited.status == 0, "\(waited.stderr)")
        let object = try JSONValue(parsing: waited.stdout)
        #expect(object["state"] == "succeeded")
        #expect(object["result"] == 42)
        #expect(object["error"] == .null)
        #expect(object["elapsed_s"]?.doubleValue != nil)

        let failed = try voteradmin(["enqueue", "canvas.fail", "--args", "[\"nope\"]", "--max-retries", "0", "--wait"])
        #expect(failed.status == 1)
        #expect(failed.stdout.contains("failed"))
        #expect(failed.stdout.contains("error: nope"))

        let result = try voteradmin(["result", String(id)])
        #expect(result.status == 0)
        #expect(result.stdout.contains("succeeded"))
        #expect(result.stdout.contains("result: 3"))

        let status = try voteradmin(["status"])
        #expect(status.status == 0)
        #expect(status.stdout.contains("default"))
        #expect(status.stdout.contains("heartbeat"))
        #expect(status.stdout.contains("canvas.fail"))
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }

    /// Waiting on a job follows what its canvases spawn in turn: a chord whose body spawns a chain
    /// is not done until that chain is, although the chord itself has finished before it.
    @Test func waitFollowsACanvasThatAChordBodySpawnsUntilItFinishes() throws {
        let c = try database.connect()
        let inner = chain([
            signature("canvas.sleep", 0.4), signature("canvas.add", 1, 2, options: SignatureOptions(immutable: true)),
        ])
        let outer = chord(
            (0..<6).map { _ in signature("canvas.sleep", 0.05) },
            body: signature("canvas.spawn", inner.json, options: SignatureOptions(immutable: true)))
        let id = try Enqueue.job(JobRequest("canvas.spawn", [outer.json]), on: c)
        let worker = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "4"])
        var polls = 0
        let lineage = try Lineage.wait(for: id, on: c, timeout: 30) { _ in polls += 1 }
        #expect(lineage.isFinished)
        #expect(lineage.succeeded)
        #expect(lineage.spawned.map(\.kind) == ["root", "root"])
        #expect(lineage.finalResult == 3)
        let unfinished = try c.query(
            "SELECT count(*) FROM canvas.jobs WHERE state NOT IN ('succeeded', 'failed', 'cancelled')")[0]
        #expect(try unfinished.decode(Int.self, 0) == 0)
        #expect(polls > 1)
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }

    @Test(arguments: [
        ["enqueue", "no.such.task"], ["enqueue", "canvas.add", "--args", "{not json"],
        ["enqueue", "canvas.add", "--args", "{\"a\": 1}"], ["enqueue", "canvas.add", "--countdown", "-1"],
        ["enqueue", "canvas.add", "--max-retries", "-2"],
    ])
    func badInputIsOneLineAndEnqueuesNothing(arguments: [String]) throws {
        let result = try voteradmin(arguments)
        #expect(result.status == 64)
        #expect(result.stderrLines.count == 1, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("voteradmin: error: "))
        #expect(try jobCount() == 0)
    }

    /// Issue 9, items 2 and 11: every number and name out of range is one line with the rule's
    /// message, exit 64, and nothing in canvas.jobs; never a trap, never a value changed silently.
    @Test(arguments: [
        (["--max-retries", "9223372036854775807"], "options.max_retries: expected an integer from 0 to 1000"),
        (["--max-retries", "1001"], "options.max_retries: expected an integer from 0 to 1000"),
        (["--max-retries", "-1"], "options.max_retries: expected an integer from 0 to 1000"),
        (
            ["--max-retries", "99999999999999999999"],
            "The value '99999999999999999999' is invalid for '--max-retries <max-retries>': "
                + "options.max_retries: expected an integer from 0 to 1000"
        ),
        (
            ["--priority", "1e3"],
            "The value '1e3' is invalid for '--priority <priority>': "
                + "options.priority: expected an integer from -32768 to 32767"
        ),
        (["--priority", "32768"], "options.priority: expected an integer from -32768 to 32767"),
        (["--priority", "-32769"], "options.priority: expected an integer from -32768 to 32767"),
        (["--priority", "3000000000"], "options.priority: expected an integer from -32768 to 32767"),
        (["--countdown", "315360000.001"], "options.countdown: expected seconds from 0 to 315360000"),
        (["--countdown", "1e300"], "options.countdown: expected seconds from 0 to 315360000"),
        (["--countdown", "1e400"], "options.countdown: expected seconds from 0 to 315360000"),
        (["--countdown", "nan"], "options.countdown: expected seconds from 0 to 315360000"),
        (["--countdown", "-0.5"], "options.countdown: expected seconds from 0 to 315360000"),
        (["--time-limit", "0"], "options.time_limit: expected seconds, more than 0 and at most 31536000"),
        (["--time-limit", "31536000.5"], "options.time_limit: expected seconds, more than 0 and at most 31536000"),
        (["--time-limit", "inf"], "options.time_limit: expected seconds, more than 0 and at most 31536000"),
        (["--retry-backoff", "86400.5"], "options.retry_backoff: expected seconds from 0 to 86400"),
        (["--soft-time-limit", "0"], "options.soft_time_limit: expected seconds, more than 0 and at most 31536000"),
        (
            ["--time-limit", "5", "--soft-time-limit", "5"],
            "options.soft_time_limit: expected less than options.time_limit"
        ),
        (["--retry-backoff", "-1"], "options.retry_backoff: expected seconds from 0 to 86400"),
        (["--eta", "2999-01-01T00:00:00Z"], "options.eta: expected a time within 10 years"),
        (["--eta", "2030-01-01"], "--eta: expected an ISO 8601 time with a zone"),
        (["--queue", ""], "options.queue: expected a queue name (1 to 200 characters, no control characters)"),
        (["--queue", "a\tb"], "options.queue: expected a queue name (1 to 200 characters, no control characters)"),
        (
            ["--queue", String(repeating: "q", count: 201)],
            "options.queue: expected a queue name (1 to 200 characters, no control characters)"
        ),
        (["--args", "[1e400]"], "--args is not valid JSON: invalid JSON at byte 1: the number 1e400 is too large"),
        (
            ["--args", "[18446744073709551616]"],
            "--args is not valid JSON: invalid JSON at byte 1: the integer 18446744073709551616 is out of range"
        ),
        (["--timeout", "-1"], "--timeout: expected seconds, 0 or more"),
    ])
    func outOfRangeNumbersAreOneLineAndEnqueueNothing(flags: [String], message: String) throws {
        let result = try voteradmin(["enqueue", "canvas.add", "--args", "[1, 2]"] + flags)
        #expect(result.status == 64, "\(result.stderr)")
        #expect(result.stderrLines.count == 1, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("voteradmin: error: " + message), "\(result.stderr)")
        #expect(result.stdout.isEmpty)
        #expect(try jobCount() == 0)
    }

    @Test(arguments: ["canvas.add\n", "canvas\u{85}add", ""])
    func aTaskNameWithControlCharactersIsRefused(task: String) throws {
        let result = try voteradmin(["enqueue", task])
        #expect(result.status == 64)
        #expect(
            result.stderrLines == [
                "voteradmin: error: task: expected a task name (1 to 200 characters, no control characters) "
                    + "(see 'voteradmin --help')"
            ])
        #expect(try jobCount() == 0)
    }

    /// A canvas carries its own options: a job flag beside --canvas would be dropped silently.
    @Test func jobFlagsBesideACanvasAreRefused() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("edges-\(UUID().uuidString).json")
        try Data(#"{"task": "canvas.add", "args": [1, 2]}"#.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try voteradmin(["enqueue", "--canvas", file.path, "--priority", "5"])
        #expect(result.status == 64)
        #expect(result.stderrLines.count == 1)
        #expect(result.stderr.hasPrefix("voteradmin: error: --priority applies to a task, not to --canvas"))
        #expect(try jobCount() == 0)
    }

    /// A canvas file is parsed by the same JSON parser: an out-of-range number is named, not
    /// enqueued as a float or a null. (Exit 1, as for every other bad canvas today.)
    @Test(arguments: [
        (#"{"task": "canvas.add", "args": [1, 99999999999999999999]}"#, "the integer 99999999999999999999"),
        (#"{"task": "canvas.add", "args": [1e400, 2]}"#, "the number 1e400 is too large"),
        (#"{"task": "canvas.add", "options": {"countdown": -1e999}}"#, "the number -1e999 is too large"),
    ])
    func aCanvasWithAnOutOfRangeNumberIsRefused(canvas: String, message: String) throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("edges-\(UUID().uuidString).json")
        try Data(canvas.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try voteradmin(["enqueue", "--canvas", file.path])
        #expect(result.status == 64)
        #expect(result.stderrLines.count == 1, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("voteradmin: error: the canvas is not valid JSON: invalid JSON at byte "))
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(try jobCount() == 0)
    }

    /// The bounds themselves are accepted and stored exactly as given.
    @Test func valuesAtTheBoundsAreStoredUnchanged() throws {
        let eta = Date().addingTimeInterval(315_360_000 - 3600)
        let formatter = ISO8601DateFormatter()
        let cases: [([String], (Int, Int, Double, Double?))] = [
            (
                [
                    "--priority", "-32768", "--max-retries", "1000", "--retry-backoff", "86400", "--time-limit",
                    "31536000",
                ],
                (-32768, 1001, 86400, 31_536_000)
            ),
            (
                ["--priority", "32767", "--max-retries", "0", "--retry-backoff", "0", "--countdown", "315360000"],
                (32767, 1, 0, nil)
            ),
            (["--eta", formatter.string(from: eta), "--time-limit", "0.001"], (0, 4, 1, 0.001)),
        ]
        for (flags, expected) in cases {
            let result = try voteradmin(["enqueue", "canvas.add", "--args", "[1, 2]"] + flags)
            #expect(result.status == 0, "\(flags) \(result.stderr)")
            let id = try #require(Int64(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
            let row = try database.connect().query(
                """
                SELECT priority, max_attempts, retry_backoff, time_limit,
                       extract(epoch FROM run_at - now())::float8 FROM canvas.jobs WHERE id = \(id)
                """)[0]
            #expect(try row.decode(Int.self, 0) == expected.0)
            #expect(try row.decode(Int.self, 1) == expected.1)
            #expect(try row.decode(Double.self, 2) == expected.2)
            #expect(try row.decodeIfPresent(Double.self, 3) == expected.3)
            let delay = try row.decode(Double.self, 4)
            if flags.contains("--countdown") { #expect(abs(delay - 315_360_000) < 60) }
            if flags.contains("--eta") { #expect(abs(delay - (315_360_000 - 3600)) < 60) }
        }
    }

    /// The library refuses a bad job among many by its index and writes none of them.
    @Test func enqueueOfManyNamesTheBadJobAndWritesNone() throws {
        let c = try database.connect()
        var requests = (0..<5).map { JobRequest("canvas.add", [.int($0), 1]) }
        requests[3].options.maxRetries = Int.max
        #expect {
            try Enqueue.jobs(requests, on: c)
        } throws: {
            ($0 as? CanvasError)?.description == "job 3: options.max_retries: expected an integer from 0 to 1000"
        }
        requests[3] = JobRequest("canvas.add", [.double(.infinity)])
        #expect {
            try Enqueue.jobs(requests, on: c)
        } throws: {
            ($0 as? CanvasError)?.description
                == "job 3: args[0]: expected a finite number, not inf (JSON has no infinity or NaN)"
        }
        #expect {
            try chain([
                signature("canvas.add", 1, 2), signature("canvas.add", options: SignatureOptions(priority: 1 << 40)),
            ])
            .enqueue(on: c)
        } throws: {
            ($0 as? CanvasError)?.description == "chain[1].options.priority: expected an integer from -32768 to 32767"
        }
        #expect(try jobCount() == 0)
        // The earliest eta this client can write, and a past one, both mean "run now".
        let ids = try Enqueue.jobs(
            [
                JobRequest(
                    "canvas.add", [1, 2], options: JobOptions(eta: Date(timeIntervalSince1970: -62_135_596_800))),
                JobRequest("canvas.add", [3, 4], options: JobOptions(eta: Date(timeIntervalSince1970: 0))),
            ], on: c)
        #expect(ids.count == 2)
        #expect(
            try c.query("SELECT min(run_at)::text FROM canvas.jobs")[0].decode(String.self, 0)
                == "0001-01-01 00:00:00+00")
    }

    @Test func anUnmigratedOrUnreachableDatabaseIsOneLine() throws {
        let bare = try TestDatabase(migrated: false)
        defer { bare.drop() }
        let unmigrated = try voteradmin(["enqueue", "canvas.noop"], url: bare.url)
        #expect(unmigrated.status == 1)
        let noSchema = "the database has no canvas schema: run 'voteradmin migrate' (or PGCanvasMigrations.apply) first"
        #expect(unmigrated.stderrLines == ["voteradmin: error: " + noSchema])
        let unreachable = try voteradmin(["enqueue", "canvas.noop"], url: "postgresql://x:pw@127.0.0.1:1/none")
        #expect(unreachable.status == 1)
        #expect(unreachable.stderrLines.count == 1)
        let worker = try runCommand(Binaries.url("pgworker"), ["-c", "1"], environment: ["DATABASE_URL": bare.url])
        #expect(worker.status == 1)
        #expect(worker.stderrLines == ["pgworker: error: " + noSchema])
    }

    @Test func unknownResultIdIsOneLine() throws {
        let result = try voteradmin(["result", "999999"])
        #expect(result.status == 1)
        #expect(result.stderrLines == ["voteradmin: error: no job or canvas with id 999999"])
    }
}
