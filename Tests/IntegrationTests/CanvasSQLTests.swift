import Canvas
import Foundation
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
        (#"{"chord": [{"task": "canvas.add"}], "body": {"args": [1]}}"#, #"chord.body: missing "task""#),
        (#"{"chain": []}"#, "chain.chain: expected a non-empty array"),
        (#"{"group": [{"task": "canvas.add"}, {"task": 5}]}"#, "group.group[1].task: expected a task name"),
        (#"{"chord": [{"task": "canvas.add"}]}"#, #"chord: a chord needs a "body""#),
        (#"{"task": "canvas.add", "args": {"a": 1}}"#, "canvas.args: expected a JSON array"),
        (#"{"starmap": "canvas.add", "args": [[1], 2]}"#, "starmap.args[1]: expected an argument list"),
        (#"{"task": "canvas.add", "on_error": {"args": []}}"#, #"canvas.on_error: expected a signature with "task""#),
        (#"{"task": "canvas.add", "options": {"countdown": -1}}"#, "canvas.options.countdown"),
        (#"{"task": "a", "group": []}"#, "group: give only one of"),
        (#"[1, 2]"#, "canvas: expected an object"),
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
        #expect(try JobStatus.fetch(bad, on: c)?.error?.contains("invalid canvas") == true)
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
