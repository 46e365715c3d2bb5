import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// What a Celery user reaches for (docs/celery.md): keyword arguments and partial calls, success
/// and error callbacks as lists, expiry, results that are not kept and Celery's state names, run
/// by a real worker; each with the path where it could go wrong.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class CeleryOptionsTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func startWorker(_ extra: [String] = []) throws -> WorkerProcess {
        try WorkerProcess(
            databaseURL: database.url,
            arguments: ["-c", "2", "--loglevel", "info", "--heartbeat-interval", "0.5"] + extra)
    }

    func enqueue(
        _ json: String, args: [JSONValue]? = nil, kwargs: [String: JSONValue]? = nil, on c: Connection
    ) throws -> Int64 {
        try Canvas.enqueue(json: JSONValue(parsing: json), args: args, kwargs: kwargs, on: c).id
    }

    func finished(_ root: Int64, on c: Connection) throws -> CanvasStatus {
        try CanvasHandle(id: root).wait(on: c, timeout: 30)
    }

    /// The arguments of the jobs of `task` that `parent` enqueued (its success or error callbacks),
    /// once `count` of them have finished.
    func callbacks(of parent: Int64, task: String, count: Int, on c: Connection) throws -> [JSONValue] {
        let done = eventually(timeout: 15) {
            (try? c.query(
                "SELECT count(*) FROM canvas.jobs WHERE parent_id = \(parent) AND task = \(task) AND finished_at IS NOT NULL"
            )[0].decode(Int.self, 0)) == count
        }
        #expect(done, "\(count) \(task) callbacks of \(parent)")
        return try c.query("SELECT args FROM canvas.jobs WHERE parent_id = \(parent) AND task = \(task) ORDER BY id")
            .map { try JSONValue(parsingStored: $0.decode(PostgresJSON.self, 0).text) }
    }

    func jobOf(_ root: Int64, task: String, on c: Connection) throws -> Int64 {
        try c.query("SELECT id FROM canvas.jobs WHERE task = \(task) AND chord_id = \(root) ORDER BY id LIMIT 1")[0]
            .decode(Int64.self, 0)
    }

    @Test func keywordArgumentsReachTheTaskFromSwiftSQLTheCommandLineAndJSON() throws {
        let worker = try startWorker()
        defer { _ = worker }
        let c = try database.connect()

        let fromSwift = try Enqueue.job(JobRequest("canvas.echo", [1], kwargs: ["a": 2]), on: c)
        #expect(try JobStatus.wait(for: fromSwift, on: c, timeout: 30).result == ["args": [1], "kwargs": ["a": 2]])

        let fromSQL = try c.query(#"SELECT canvas.enqueue('canvas.echo', kwargs => '{"b": [3]}')"#)[0]
            .decode(Int64.self, 0)
        #expect(try JobStatus.wait(for: fromSQL, on: c, timeout: 30).result == ["args": [], "kwargs": ["b": [3]]])

        let cli = try runCommand(
            Binaries.url("voteradmin"), ["enqueue", "canvas.echo", "--kwargs", #"{"c": "d"}"#, "--wait", "--json"],
            environment: ["DATABASE_URL": database.url])
        #expect(cli.status == 0)
        #expect(try JSONValue(parsing: cli.stdout).objectValue?["result"] == ["args": [], "kwargs": ["c": "d"]])

        let fromJSON = try enqueue(#"{"task": "canvas.echo", "args": [5], "kwargs": {"e": null}}"#, on: c)
        #expect(try finished(fromJSON, on: c).result == ["args": [5], "kwargs": ["e": .null]])

        let bad = try runCommand(
            Binaries.url("voteradmin"), ["enqueue", "canvas.echo", "--kwargs", "[1]"],
            environment: ["DATABASE_URL": database.url])
        #expect(bad.status == 64)
        #expect(bad.stderr.contains("--kwargs must be a JSON object"))
    }

    /// Celery's partials: call-time args go first, call-time kwargs win over the signature's own,
    /// and only the signatures that start the canvas take them; immutable ones take nothing.
    @Test func aPartialCallMergesAsCelerysDoes() throws {
        let worker = try startWorker()
        defer { _ = worker }
        let c = try database.connect()
        let group = try enqueue(
            #"""
            {"group": [{"task": "canvas.echo", "args": [1], "kwargs": {"x": 1, "kept": true}},
                       {"task": "canvas.echo", "args": [2], "kwargs": {"x": 1}, "options": {"immutable": true}}]}
            """#, args: [0], kwargs: ["x": 9, "added": 2], on: c)
        #expect(
            try finished(group, on: c).result == [
                ["args": [0, 1], "kwargs": ["x": 9, "kept": true, "added": 2]], ["args": [2], "kwargs": ["x": 1]],
            ])

        let chain = try enqueue(
            #"{"chain": [{"task": "canvas.echo", "kwargs": {"x": 1}}, {"task": "canvas.echo", "kwargs": {"y": 2}}]}"#,
            args: [7], kwargs: ["x": 9], on: c)
        #expect(
            try finished(chain, on: c).result == [
                "args": [["args": [7], "kwargs": ["x": 9]]], "kwargs": ["y": 2],
            ])

        // The Swift spelling of the same rule, before anything is sent.
        let partial = Signature("canvas.echo", [1], kwargs: ["x": 1, "kept": true]).partial([0], kwargs: ["x": 9])
        #expect(partial.args == [0, 1])
        #expect(partial.kwargs == ["x": 9, "kept": true])
        #expect(Signature("canvas.echo", [1]).immutable.partial([0]).args == [1])
    }

    @Test func successCallbacksGetTheResultOnceAndOnlyOnSuccess() throws {
        let worker = try startWorker()
        defer { _ = worker }
        let c = try database.connect()

        let single = try enqueue(
            #"""
            {"task": "canvas.add", "args": [1, 2],
             "link": [{"task": "canvas.identity"}, {"task": "canvas.echo", "args": ["after"]}]}
            """#, on: c)
        #expect(try finished(single, on: c).result == 3)
        let job = try jobOf(single, task: "canvas.add", on: c)
        #expect(try callbacks(of: job, task: "canvas.identity", count: 1, on: c) == [[3]])
        #expect(try callbacks(of: job, task: "canvas.echo", count: 1, on: c) == [[3, "after"]])

        // A chain's callbacks hear its last link; a chord's its body; a group's its list.
        let chain = try enqueue(
            #"""
            {"chain": [{"task": "canvas.add", "args": [1, 2]}, {"task": "canvas.add", "args": [10]}],
             "link": {"task": "canvas.identity"}}
            """#, on: c)
        #expect(try finished(chain, on: c).result == 13)
        let last = try c.query("SELECT id FROM canvas.jobs WHERE args = '[3, 10]'")[0].decode(Int64.self, 0)
        #expect(try callbacks(of: last, task: "canvas.identity", count: 1, on: c) == [[13]])

        let chord = try enqueue(
            #"""
            {"chord": [{"task": "canvas.add", "args": [1, 1]}, {"task": "canvas.add", "args": [2, 2]}],
             "body": {"task": "canvas.sum"}, "link": [{"task": "canvas.identity"}]}
            """#, on: c)
        #expect(try finished(chord, on: c).result == 6)
        let body = try c.query("SELECT id FROM canvas.jobs WHERE task = 'canvas.sum'")[0].decode(Int64.self, 0)
        #expect(try callbacks(of: body, task: "canvas.identity", count: 1, on: c) == [[6]])

        let group = try enqueue(
            #"""
            {"group": [{"task": "canvas.add", "args": [5, 5]}, {"task": "canvas.add", "args": [6, 6]}],
             "link": {"task": "canvas.echo"}}
            """#, on: c)
        #expect(try finished(group, on: c).result == [10, 12])
        #expect(
            eventually(timeout: 15) {
                (try? c.query(
                    "SELECT result FROM canvas.jobs WHERE task = 'canvas.echo' AND args = '[[10, 12]]' AND state = 'succeeded'"
                ).count) == 1
            })

        // A failure runs no success callback; an immutable one ignores the result.
        let failing = try enqueue(
            #"""
            {"task": "canvas.fail", "args": ["no"], "options": {"max_retries": 0},
             "link": {"task": "canvas.identity", "args": ["never"]}}
            """#, on: c)
        #expect(try finished(failing, on: c).state == .failed)
        let immutable = try enqueue(
            #"""
            {"task": "canvas.add", "args": [2, 2],
             "link": {"task": "canvas.echo", "args": ["fixed"], "options": {"immutable": true}}}
            """#, on: c)
        #expect(try finished(immutable, on: c).result == 4)
        let four = try jobOf(immutable, task: "canvas.add", on: c)
        #expect(try callbacks(of: four, task: "canvas.echo", count: 1, on: c) == [["fixed"]])
        usleep(300_000)
        #expect(try c.query("SELECT count(*) FROM canvas.jobs WHERE args = '[\"never\"]'")[0].decode(Int.self, 0) == 0)
    }

    /// `on_error` and `link_error` add up; every callback hears the failure's id, task, error,
    /// type and attempt.
    @Test func errorCallbacksAreAdditiveListsAndHearTheTypeAndAttempt() throws {
        let worker = try startWorker()
        defer { _ = worker }
        let c = try database.connect()
        let root = try enqueue(
            #"""
            {"task": "canvas.fail", "args": ["broken"], "options": {"max_retries": 1, "retry_backoff": 0},
             "on_error": {"task": "canvas.identity"},
             "link_error": [{"task": "canvas.echo", "args": ["one"]}, {"task": "canvas.echo", "args": ["two"]}]}
            """#, on: c)
        #expect(try finished(root, on: c).state == .failed)
        let job = try jobOf(root, task: "canvas.fail", on: c)
        let info: JSONValue = [
            "id": .int(Int(job)), "task": "canvas.fail", "error": "broken", "error_type": "TaskError", "attempt": 2,
        ]
        #expect(try callbacks(of: job, task: "canvas.identity", count: 1, on: c) == [[info]])
        #expect(try callbacks(of: job, task: "canvas.echo", count: 2, on: c) == [[info, "one"], [info, "two"]])

        let slow = try enqueue(
            #"""
            {"task": "canvas.sleep", "args": [30], "options": {"time_limit": 0.5, "max_retries": 0},
             "link_error": {"task": "canvas.identity"}}
            """#, on: c)
        #expect(try finished(slow, on: c).state == .failed)
        let sleeper = try jobOf(slow, task: "canvas.sleep", on: c)
        let heard = try callbacks(of: sleeper, task: "canvas.identity", count: 1, on: c)
        #expect(heard.first?.arrayValue?.first?.objectValue?["error_type"] == "TimeLimitExceeded")

        let later = try enqueue(
            #"{"task": "canvas.noop", "options": {"countdown": 60}, "link_error": {"task": "canvas.identity"}}"#,
            on: c)
        let waiting = try jobOf(later, task: "canvas.noop", on: c)
        #expect(try c.query("SELECT canvas.cancel(\(waiting))")[0].decode(String.self, 0) == "cancelled")
        let revoked = try callbacks(of: waiting, task: "canvas.identity", count: 1, on: c)
        #expect(revoked.first?.arrayValue?.first?.objectValue?["error_type"] == "TaskRevokedError")
        #expect(try JobStatus.fetch(waiting, on: c)?.celeryState == "REVOKED")
    }

    @Test func aJobNotStartedBeforeItExpiresIsCancelledAndFailsItsCanvasOnce() throws {
        let c = try database.connect()
        // A claim reads past an expired job, and takes the one behind it.
        let me = try Broker.registerWorker(
            hostname: "test", pid: 1, queues: ["default"], concurrency: 1, rescueAfter: 15, on: c)
        let stale = try enqueue(
            #"""
            {"chord": [{"task": "canvas.add", "args": [1, 1], "options": {"expires": 60}},
                       {"task": "canvas.add", "args": [2, 2]}],
             "body": {"task": "canvas.sum"}, "on_error": {"task": "canvas.noop", "args": ["expired"]}}
            """#, on: c)
        try c.execute("UPDATE canvas.jobs SET expires_at = now() - interval '1 second' WHERE args = '[1, 1]'")
        let claimed = try Broker.claim(worker: me, queues: ["default"], limit: 10, on: c)
        #expect(claimed.map(\.argsText) == ["[2, 2]"])
        #expect(
            try c.query("SELECT state FROM canvas.jobs WHERE args = '[1, 1]'")[0].decode(String.self, 0) == "queued")
        // Maintenance's expiry cancels it and fails its canvas once.
        #expect(try Broker.expireDue(on: c) == 1)
        let gone = try c.query("SELECT state, error, error_type FROM canvas.jobs WHERE args = '[1, 1]'")[0]
        #expect(try gone.decode(String.self, 0) == "cancelled")
        #expect(try gone.decode(String.self, 1).hasPrefix("expired: not run by "))
        #expect(try gone.decode(String.self, 2) == "TaskRevokedError")
        #expect(try CanvasStatus.fetch(stale, on: c)?.state == .failed)
        #expect(
            try c.query("SELECT count(*) FROM canvas.jobs WHERE args->1 = '\"expired\"'")[0].decode(Int.self, 0) == 1)
        #expect(try Broker.expireDue(on: c) == 0)
        // Its sibling's success later finds the chord failed: no body, no second callback.
        _ = try Broker.finish(
            worker: me, [Outcome(jobID: claimed[0].id, attempt: claimed[0].attempt, kind: .succeeded, resultText: "4")],
            on: c)
        #expect(try c.query("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'")[0].decode(Int.self, 0) == 0)
        #expect(
            try c.query("SELECT count(*) FROM canvas.jobs WHERE args->1 = '\"expired\"'")[0].decode(Int.self, 0) == 1)

        // A job waiting to retry expires too, and says what it failed with.
        let flaky = try Enqueue.job(
            JobRequest("canvas.add", [5, 5], options: JobOptions(retryBackoff: 60, expires: .after(600))), on: c)
        let run = try #require(
            try Broker.claim(worker: me, queues: ["default"], limit: 10, on: c).first { $0.id == flaky })
        _ = try Broker.finish(
            worker: me, [Outcome(jobID: flaky, attempt: run.attempt, kind: .error, error: "boom")], on: c)
        try c.execute("UPDATE canvas.jobs SET expires_at = now() - interval '1 second' WHERE id = \(flaky)")
        #expect(try Broker.expireDue(on: c) == 1)
        let retried = try #require(try JobStatus.fetch(flaky, on: c))
        #expect(retried.state == .cancelled && retried.error?.hasSuffix("; its last error: boom") == true)
        try Broker.deregister(worker: me, on: c)

        // A delayed job past its expiry, and one in a queue no worker serves: a live worker's
        // maintenance cancels both; one whose expiry is later runs.
        let delayed = try Enqueue.job(
            JobRequest("canvas.noop", options: JobOptions(countdown: 1, expires: .after(0.3))), on: c)
        let unserved = try Enqueue.job(
            JobRequest(
                "canvas.noop", options: JobOptions(queue: "nobody", expires: .at(Date().addingTimeInterval(0.3)))),
            on: c)
        let fine = try Enqueue.job(JobRequest("canvas.add", [1, 2], options: JobOptions(expires: .after(60))), on: c)
        let worker = try startWorker()
        defer { _ = worker }
        #expect(try JobStatus.wait(for: delayed, on: c, timeout: 15).state == .cancelled)
        #expect(try JobStatus.wait(for: unserved, on: c, timeout: 15).state == .cancelled)
        #expect(try JobStatus.wait(for: fine, on: c, timeout: 15).result == 3)
        #expect(try JobStatus.fetch(unserved, on: c)?.error?.hasPrefix("expired") == true)
    }

    @Test func anIgnoredResultIsNotStoredButStillFlowsOnInAChain() throws {
        let worker = try startWorker()
        defer { _ = worker }
        let c = try database.connect()
        let chain = try enqueue(
            #"""
            {"chain": [{"task": "canvas.add", "args": [1, 2], "options": {"ignore_result": true}},
                       {"task": "canvas.add", "args": [10]}]}
            """#, on: c)
        #expect(try finished(chain, on: c).result == 13)
        let first = try c.query("SELECT result IS NULL, state FROM canvas.jobs WHERE args = '[1, 2]'")[0]
        #expect(try first.decode(Bool.self, 0))
        #expect(try first.decode(String.self, 1) == "succeeded")

        // In a chord its slot is null: nothing was kept to gather.
        let chord = try enqueue(
            #"""
            {"chord": [{"task": "canvas.add", "args": [1, 1], "options": {"ignore_result": true}},
                       {"task": "canvas.add", "args": [2, 2]}], "body": {"task": "canvas.identity"}}
            """#, on: c)
        #expect(try finished(chord, on: c).result == [.null, 4])

        let alone = try Enqueue.job(JobRequest("canvas.add", [3, 4], options: JobOptions(ignoreResult: true)), on: c)
        let status = try JobStatus.wait(for: alone, on: c, timeout: 15)
        #expect(status.state == .succeeded && status.result == nil && status.celeryState == "SUCCESS")
    }

    /// PENDING, STARTED, RETRY (with its last error), SUCCESS, FAILURE, REVOKED — the same from
    /// SQL, Swift and `voteradmin result --json`.
    @Test func aJobShowsCelerysStateNames() throws {
        let c = try database.connect()
        func celery(_ id: Int64) throws -> String {
            try c.query("SELECT canvas.celery_state(state, attempt, error) FROM canvas.jobs WHERE id = \(id)")[0]
                .decode(String.self, 0)
        }
        let me = try Broker.registerWorker(
            hostname: "test", pid: 1, queues: ["default"], concurrency: 1, rescueAfter: 15, on: c)
        let id = try Enqueue.job(JobRequest("canvas.add", [1, 2], options: JobOptions(retryBackoff: 30)), on: c)
        #expect(try celery(id) == "PENDING")
        var run = try #require(try Broker.claim(worker: me, queues: ["default"], limit: 1, on: c).first)
        #expect(try celery(id) == "STARTED")
        _ = try Broker.finish(
            worker: me, [Outcome(jobID: id, attempt: run.attempt, kind: .error, error: "flaky")], on: c)
        let retrying = try #require(try JobStatus.fetch(id, on: c))
        #expect(retrying.celeryState == "RETRY" && retrying.error == "flaky")
        let cli = try runCommand(
            Binaries.url("voteradmin"), ["result", String(id), "--json"], environment: ["DATABASE_URL": database.url])
        let object = try JSONValue(parsing: cli.stdout).objectValue
        #expect(
            object?["celery_state"] == "RETRY" && object?["error"] == "flaky" && object?["error_type"] == "TaskError")

        try c.execute("UPDATE canvas.jobs SET state = 'queued', run_at = now() WHERE id = \(id)")
        run = try #require(try Broker.claim(worker: me, queues: ["default"], limit: 1, on: c).first)
        _ = try Broker.finish(
            worker: me, [Outcome(jobID: id, attempt: run.attempt, kind: .succeeded, resultText: "3")], on: c)
        #expect(try celery(id) == "SUCCESS")

        let doomed = try Enqueue.job(JobRequest("canvas.fail", options: JobOptions(maxRetries: 0)), on: c)
        run = try #require(try Broker.claim(worker: me, queues: ["default"], limit: 1, on: c).first)
        _ = try Broker.finish(
            worker: me, [Outcome(jobID: doomed, attempt: run.attempt, kind: .error, error: "x")], on: c)
        #expect(try celery(doomed) == "FAILURE")
        let cancelled = try Enqueue.job(JobRequest("canvas.noop", options: JobOptions(countdown: 60)), on: c)
        _ = try c.query("SELECT canvas.cancel(\(cancelled))")
        #expect(try celery(cancelled) == "REVOKED")
    }
    /// A success callback written past validation cannot start: its task stays succeeded, says
    /// why, and its canvas completes.
    @Test func aSuccessCallbackThatCannotStartLeavesItsTaskSucceeded() throws {
        let c = try database.connect()
        let me = try Broker.registerWorker(
            hostname: "test", pid: 1, queues: ["default"], concurrency: 1, rescueAfter: 15, on: c)
        let root = try enqueue(#"{"task": "canvas.add", "args": [1, 2], "link": {"task": "canvas.noop"}}"#, on: c)
        try c.execute(#"UPDATE canvas.jobs SET link = '[{"chord": 5}]' WHERE task = 'canvas.add'"#)
        let job = try #require(try Broker.claim(worker: me, queues: ["default"], limit: 1, on: c).first)
        let recorded = try Broker.finish(
            worker: me, [Outcome(jobID: job.id, attempt: job.attempt, kind: .succeeded, resultText: "3")], on: c)
        #expect(recorded.map(\.state) == ["succeeded"])
        let status = try #require(try JobStatus.fetch(job.id, on: c))
        #expect(status.state == .succeeded && status.result == 3)
        #expect(status.error?.hasPrefix("its success callbacks could not be enqueued: ") == true)
        #expect(status.errorType == "LinkRefused")
        #expect(try CanvasStatus.fetch(root, on: c)?.state == .succeeded)
    }

    /// A group's success callbacks hear its list wherever the group stands: followed by more
    /// links (where it becomes a chord) or inside a chord's header.
    @Test func aGroupsSuccessCallbacksHearItsListWhereverItStands() throws {
        let worker = try startWorker()
        defer { _ = worker }
        let c = try database.connect()
        let chain = try enqueue(
            #"""
            {"chain": [{"group": [{"task": "canvas.add", "args": [1, 1]}, {"task": "canvas.add", "args": [2, 2]}],
                        "link": {"task": "canvas.echo", "args": ["first"]}},
                       {"task": "canvas.sum"}]}
            """#, on: c)
        #expect(try finished(chain, on: c).result == 6)
        let chord = try enqueue(
            #"""
            {"chord": [{"group": [{"task": "canvas.add", "args": [3, 3]}], "link": {"task": "canvas.echo", "args": ["inner"]}},
                       {"task": "canvas.add", "args": [4, 4]}],
             "body": {"task": "canvas.identity"}}
            """#, on: c)
        #expect(try finished(chord, on: c).result == [[6], 8])
        for (marker, list) in [("first", "[2, 4]"), ("inner", "[6]")] {
            #expect(
                eventually(timeout: 15) {
                    (try? c.query(
                        "SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.echo' AND state = 'succeeded' AND args = jsonb_build_array(\(list)::jsonb, \(marker)::text)"
                    )[0].decode(Int.self, 0)) == 1
                }, "the group's callback \(marker) heard \(list) once")
        }
    }

    @Test func aMalformedCanvasCalledWithKeywordArgumentsIsNamedByItsPath() throws {
        let c = try database.connect()
        let error = try #require(throws: CanvasError.self) {
            try enqueue(#"{"group": 5}"#, kwargs: ["a": 1], on: c)
        }
        #expect(error.description == "group: expected an array of canvases")
        let notObject = try #require(throws: PostgresError.self) {
            try c.query(#"SELECT canvas.enqueue_canvas('{"task": "canvas.noop"}', kwargs => '[1]')"#)
        }
        #expect(notObject.message == "kwargs: expected a JSON object of keyword arguments")
        #expect(try c.query("SELECT count(*) FROM canvas.jobs")[0].decode(Int.self, 0) == 0)
    }
}
