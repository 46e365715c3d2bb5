import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// Canvas expansion and bookkeeping at the SQL level, without workers.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class CanvasSQLTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func jobCount(_ c: Connection) throws -> Int {
        try c.query("SELECT count(*) FROM canvas.jobs")[0].decode(Int.self, 0)
    }

    @Test(arguments: [
        (#"{"chord": [{"task": "canvas.add"}], "body": {"args": [1]}}"#, #"body: missing "task""#),
        (#"{"chain": []}"#, "chain: expected a non-empty array"),
        (#"{"group": [{"task": "canvas.add"}, {"task": 5}]}"#, "group[1].task: expected a task name"),
        (#"{"chord": [{"task": "canvas.add"}]}"#, #"canvas: a chord needs a "body""#),
        (#"{"task": "canvas.add", "args": {"a": 1}}"#, "args: expected a JSON array"),
        (#"{"starmap": "canvas.add", "args": [[1], 2]}"#, "args[1]: expected an argument list"),
        (#"{"task": "canvas.add", "on_error": {"args": []}}"#, #"on_error: expected a signature with "task""#),
        (#"{"task": "canvas.add", "options": {"countdown": -1}}"#, "options.countdown: expected seconds from 0"),
        (#"{"task": "a", "group": []}"#, "canvas: give only one of"),
        (#"[1, 2]"#, "canvas: expected an object"),
        // Keys a canvas does not know are refused by name, never dropped.
        (#"{"task": "canvas.add", "kwarg": {"a": 1}}"#, #"canvas: unknown key "kwarg" for a signature"#),
        (#"{"chain": [{"task": "a"}, {"task": "b", "links": []}]}"#, #"chain[1]: unknown key "links""#),
        (#"{"task": "canvas.add", "options": {"expire": 10}}"#, #"options: unknown option "expire""#),
        (#"{"task": "canvas.add", "kwargs": [1]}"#, "kwargs: expected a JSON object of keyword arguments"),
        (#"{"task": "canvas.add", "link": 3}"#, #"link: expected a signature or canvas, or a list of them"#),
        (
            #"{"task": "canvas.add", "link_error": [{"group": []}]}"#,
            #"link_error[0]: expected a signature with "task""#
        ),
        (
            #"{"task": "a", "link": [{"task": "b", "options": {"priority": 1e9}}]}"#,
            "link[0].options.priority: expected an integer"
        ),
        (
            #"{"task": "a", "options": {"expires": -1}}"#,
            "options.expires: expected seconds from 0 to 315360000, or a time"
        ),
        (#"{"task": "a", "options": {"expires": "2999-01-01T00:00:00Z"}}"#, "options.expires: expected seconds from 0"),
        (#"{"task": "a", "options": {"ignore_result": 1}}"#, "options.ignore_result: expected true or false"),
        (#"{"task": "a", "options": {"unique_for": 10}}"#, "options.unique_for: needs a unique_key"),
        (#"{"task": "a", "options": {"unique_key": ""}}"#, "options.unique_key: expected a key"),
        (
            #"{"chain": [{"task": "a", "options": {"unique_key": "k"}}]}"#,
            "chain[0].options.unique_key: only for a signature enqueued on its own, not inside a canvas"
        ),
        (#"{"group": [], "options": {"queue": "q"}}"#, #"canvas: unknown key "options" for a group"#),
        // The same rules as every client's, with the same messages.
        (
            #"{"chain": [{"task": "a"}, {"task": "b", "options": {"time_limit": 0}}]}"#,
            "chain[1].options.time_limit: expected seconds, more than 0 and at most 31536000"
        ),
        (
            #"{"task": "a", "options": {"priority": 3000000000}}"#,
            "options.priority: expected an integer from -32768 to 32767"
        ),
        (#"{"task": "a", "options": {"priority": 1.5}}"#, "options.priority: expected an integer"),
        (#"{"task": "a", "options": {"countdown": 1e300}}"#, "options.countdown: expected seconds from 0 to 315360000"),
        (
            #"{"task": "a", "options": {"max_retries": 1001}}"#,
            "options.max_retries: expected an integer from 0 to 1000"
        ),
        (
            #"{"task": "a", "options": {"retry_backoff": -1}}"#,
            "options.retry_backoff: expected seconds from 0 to 86400"
        ),
        (#"{"task": "a", "options": {"eta": "2026-01-01T00:00:00"}}"#, "options.eta: expected a time"),
        (#"{"task": "a", "options": {"eta": "9999-01-01T00:00:00Z"}}"#, "options.eta: expected a time within 10 years"),
        (#"{"task": "a", "options": {"queue": ""}}"#, "options.queue: expected a queue name"),
        (#"{"task": "line\nbreak"}"#, "task: expected a task name (1 to 200 characters, no control characters)"),
        (#"{"group": [{"task": "a"}, {"task": "tab\there"}]}"#, "group[1].task: expected a task name"),
        // The name a header repeats is checked once: a bad one is still refused, first or later.
        (#"{"group": [{"task": ""}, {"task": ""}]}"#, "group[0].task: expected a task name"),
        (
            #"{"chord": [{"task": "a"}, {"task": "a"}, {"task": 7}], "body": {"task": "a"}}"#,
            "chord[2].task: expected a task name"
        ),
        (#"{"starmap": "x\u0007", "args": []}"#, "starmap: expected a task name"),
        (#"{"group": [{"task": "a"}, {"args": [1]}]}"#, #"group[1]: missing "task""#),
        (
            #"{"task": "a", "options": {"eta": "2026-01-01T00:00:00+16"}}"#,
            "options.eta: expected a time within 10 years"
        ),
    ])
    func malformedCanvasesSayWhereAndEnqueueNothing(canvas: String, message: String) throws {
        let c = try database.connect()
        let error = try #require(throws: CanvasError.self) {
            try Canvas.enqueue(json: JSONValue(parsing: canvas), on: c)
        }
        #expect(error.description.hasPrefix(message), "\(error.description)")
        #expect(try jobCount(c) == 0)
        #expect(try c.query("SELECT count(*) FROM canvas.chords")[0].decode(Int.self, 0) == 0)
    }

    @Test func theSwiftAPIWritesTheDocumentedJSON() throws {
        let canvas = Canvas.chord(
            [signature("canvas.add", 1, 2), starmap("canvas.add", [[1, 1]])],
            body: .signature(Signature("canvas.sum", options: SignatureOptions(queue: "q", immutable: true))),
            onError: Signature("canvas.identity"))
        let expected = try JSONValue(
            parsing: #"""
                {"chord": [{"task": "canvas.add", "args": [1, 2]}, {"starmap": "canvas.add", "args": [[1, 1]]}],
                 "body": {"task": "canvas.sum", "options": {"queue": "q", "immutable": true}},
                 "on_error": {"task": "canvas.identity"}}
                """#)
        #expect(canvas.json == expected)
    }

    @Test func aChordOfManyMembersIsOneStatement() throws {
        let c = try database.connect()
        let header = (0..<20_000).map { _ in signature("canvas.noop") }
        let started = Date()
        let handle = try chord(header, body: signature("canvas.noop")).enqueue(on: c)
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(try jobCount(c) == 20_000)
        let positions = try c.query(
            "SELECT min(position), max(position), count(DISTINCT position) FROM canvas.jobs")[0]
        #expect(try positions.decode(Int.self, 0) == 0)
        #expect(try positions.decode(Int.self, 1) == 19_999)
        #expect(try positions.decode(Int.self, 2) == 20_000)
        let status = try #require(try CanvasStatus.fetch(handle.id, on: c))
        #expect(status.kind == "root" && status.state == .pending)
    }

    @Test func spawnedWorkIsOnlyCommittedWithASuccess() throws {
        let c = try database.connect()
        let w = try Broker.registerWorker(hostname: "t", pid: 1, queues: ["default"], concurrency: 1, on: c)
        let id = try Enqueue.job(JobRequest("canvas.spawn"), on: c)
        let spawn = #"[{"task": "canvas.add", "args": [1, 2]}]"#
        var job = try #require(try Broker.claim(worker: w, queues: ["default"], limit: 1, on: c).first)
        // The first run spawned, then its process died: nothing it spawned exists.
        try Broker.finish(
            worker: w, [Outcome(jobID: id, attempt: job.attempt, kind: .crashed, error: "killed", spawnText: spawn)],
            on: c)
        #expect(try c.query("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.add'")[0].decode(Int.self, 0) == 0)
        job = try #require(try Broker.claim(worker: w, queues: ["default"], limit: 1, on: c).first)
        try Broker.finish(
            worker: w,
            [Outcome(jobID: id, attempt: job.attempt, kind: .succeeded, resultText: "null", spawnText: spawn)],
            on: c)
        // A repeated report of the same run (a retried batch) is fenced off.
        try Broker.finish(
            worker: w,
            [Outcome(jobID: id, attempt: job.attempt, kind: .succeeded, resultText: "null", spawnText: spawn)],
            on: c)
        #expect(try c.query("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.add'")[0].decode(Int.self, 0) == 1)
    }

    @Test func aTaskThatSpawnsAnInvalidCanvasFailsAloneNotItsBatch() throws {
        let c = try database.connect()
        let w = try Broker.registerWorker(hostname: "t", pid: 1, queues: ["default"], concurrency: 1, on: c)
        let bad = try Enqueue.job(JobRequest("canvas.spawn"), on: c)
        let good = try Enqueue.job(JobRequest("canvas.noop"), on: c)
        let jobs = try Broker.claim(worker: w, queues: ["default"], limit: 2, on: c)
        let recorded = try Broker.finish(
            worker: w,
            jobs.map {
                Outcome(
                    jobID: $0.id, attempt: $0.attempt, kind: .succeeded, resultText: "null",
                    spawnText: $0.id == bad ? #"[{"chain": []}]"# : nil)
            }, on: c)
        #expect(Set(recorded.map(\.jobID)) == [bad, good])
        #expect(try JobStatus.fetch(bad, on: c)?.state == .failed)
        #expect(
            try JobStatus.fetch(bad, on: c)?.error?.contains(
                "spawned a canvas that could not be enqueued: chain: expected a non-empty array") == true)
        #expect(try JobStatus.fetch(good, on: c)?.state == .succeeded)
    }

    @Test func membersOfAPendingChordAreNotPruned() throws {
        let c = try database.connect()
        let w = try Broker.registerWorker(hostname: "t", pid: 1, queues: ["default"], concurrency: 1, on: c)
        _ = try chord([signature("canvas.noop"), signature("canvas.noop")], body: signature("canvas.noop")).enqueue(
            on: c)
        let first = try #require(try Broker.claim(worker: w, queues: ["default"], limit: 1, on: c).first)
        try Broker.finish(worker: w, [Outcome(jobID: first.id, attempt: 1, kind: .succeeded, resultText: "1")], on: c)
        try c.execute("UPDATE canvas.jobs SET finished_at = now() - interval '3 days' WHERE id = \(first.id)")
        var pruner = Pruner(age: 60)
        #expect(try pruner.run(on: c).jobs == 0)
    }
}
