import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// canvas.finish reads which follow-ups a batch needs in one pass and skips the rest (a batch of
/// chord members costs one root lock and one counter update). These tests mix every kind of run in
/// the same batches, at random, and check that every chord still ends exactly once.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class ChordFinishTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func worker(_ c: Connection) throws -> Int64 {
        try Broker.registerWorker(hostname: "test", pid: 1, queues: ["default"], concurrency: 1, on: c)
    }

    func count(_ sql: Query, on c: Connection) throws -> Int { try c.query(sql)[0].decode(Int.self, 0) }

    /// Chords of plain members, of chains and of groups, beside plain jobs, jobs with success
    /// callbacks and jobs that spawn, finished in random batches with random outcomes (successes,
    /// errors that retry, failures, crashes), until nothing is left to run.
    @Test(arguments: [UInt64(1), 2, 3, 4])
    func mixedBatchesEndEveryChordOnce(seed: UInt64) throws {
        var random = SplitMix64(state: seed)
        let c = try database.connect()
        try c.execute("SET client_min_messages = warning")
        try c.execute("TRUNCATE canvas.jobs, canvas.chords CASCADE")
        let w = try worker(c)
        let plainHeader = (0..<Int.random(in: 20...60, using: &random)).map { _ in #"{"task": "canvas.add"}"# }
        let canvases = [
            #"{"chord": [\#(plainHeader.joined(separator: ","))], "body": {"task": "canvas.sum"}}"#,
            #"""
            {"chord": [{"chain": [{"task": "canvas.add"}, {"task": "canvas.add"}]},
                       {"group": [{"task": "canvas.add"}, {"task": "canvas.add"}]},
                       {"task": "canvas.add", "options": {"max_retries": 2, "retry_backoff": 0}}],
             "body": {"task": "canvas.identity"}}
            """#,
            #"{"group": [\#(plainHeader.prefix(10).joined(separator: ","))]}"#,
            #"{"task": "canvas.add", "link": {"task": "canvas.identity"}}"#,
        ]
        var roots: [Int64] = []
        for _ in 0..<3 {
            for canvas in canvases {
                roots.append(try Canvas.enqueue(json: try JSONValue(parsing: canvas), on: c).id)
            }
        }
        _ = try (0..<20).map { _ in try Enqueue.job(JobRequest("canvas.noop"), on: c) }

        // Every run returns its own id, so a body's list shows whose results it got, in what order.
        var rounds = 0
        while true {
            rounds += 1
            #expect(rounds < 200, "seed \(seed): the canvases never settled")
            if rounds >= 200 { break }
            try c.execute("UPDATE canvas.jobs SET run_at = now() WHERE state = 'scheduled'")
            let claimed = try Broker.claim(worker: w, queues: ["default"], limit: 500, on: c).shuffled(using: &random)
            if claimed.isEmpty { break }
            var rest = claimed[...]
            while !rest.isEmpty {
                let batch = rest.prefix(Int.random(in: 1...40, using: &random))
                rest = rest.dropFirst(batch.count)
                let outcomes = batch.map { job -> Outcome in
                    let roll = Int.random(in: 0..<100, using: &random)
                    let isBody = job.task != "canvas.add" && job.task != "canvas.noop"
                    switch roll {
                    case 0..<3 where !isBody:
                        return Outcome(jobID: job.id, attempt: job.attempt, kind: .fatal, error: "seeded failure")
                    case 3..<8:
                        return Outcome(jobID: job.id, attempt: job.attempt, kind: .crashed, error: "seeded crash")
                    case 8..<12:
                        return Outcome(jobID: job.id, attempt: job.attempt, kind: .error, error: "seeded error")
                    case 12..<16 where !isBody:
                        return Outcome(
                            jobID: job.id, attempt: job.attempt, kind: .succeeded, resultText: String(job.id),
                            spawnText: #"[{"task": "canvas.noop", "args": ["spawned"]}]"#)
                    default:
                        return Outcome(
                            jobID: job.id, attempt: job.attempt, kind: .succeeded, resultText: String(job.id))
                    }
                }
                try Broker.finish(worker: w, outcomes.sorted { $0.jobID < $1.jobID }, on: c)
            }
        }

        #expect(
            try count("SELECT count(*) FROM canvas.jobs WHERE state IN ('scheduled', 'queued', 'running')", on: c) == 0)
        // Every chord ended once: a chord with a member that failed for good failed, and its
        // body never ran; any other chord ran one body, with its members' results in header order.
        for row in try c.query(
            "SELECT id, kind, state, remaining, body_id FROM canvas.chords WHERE kind IN ('chord', 'group') ORDER BY id"
        ) {
            let id = try row.decode(Int64.self, 0)
            let state = try row.decode(String.self, 2)
            let remaining = try row.decode(Int.self, 3)
            let failedMembers = try count(
                "SELECT count(*) FROM canvas.jobs WHERE chord_id = \(id) AND state = 'failed'", on: c)
            let slotsFailed = try count(
                """
                SELECT count(*) FROM canvas.chords WHERE (context->>'chord_id')::bigint = \(id) AND state = 'failed'
                """, on: c)
            if failedMembers + slotsFailed > 0 {
                #expect(state == "failed", "seed \(seed): chord \(id) is \(state) with a failed member")
                #expect(try row.decodeIfPresent(Int64.self, 4) == nil)
            } else {
                #expect(state == "succeeded", "seed \(seed): chord \(id) is \(state)")
                #expect(remaining == 0)
                if try row.decode(String.self, 1) == "chord" {
                    let body = try #require(try row.decodeIfPresent(Int64.self, 4))
                    // What the body got is every slot's result in header order, as stored now.
                    let matches = try c.query(
                        """
                        SELECT b.args->0 = (SELECT coalesce(jsonb_agg(coalesce(j.result, 'null') ORDER BY j.position), '[]')
                                            FROM canvas.jobs j WHERE j.chord_id = \(id) AND j.chain IS NULL)
                        FROM canvas.jobs b WHERE b.id = \(body)
                        """)[0].decode(Bool.self, 0)
                    #expect(matches, "seed \(seed): body of chord \(id)")
                }
            }
        }
        // Each header of plain members ran one body with its members' results (their ids) in order.
        let sums = try c.query(
            """
            SELECT ch.id, (b.args->0 = (SELECT jsonb_agg(to_jsonb(m.id) ORDER BY m.position) FROM canvas.jobs m
                                        WHERE m.chord_id = ch.id))
            FROM canvas.chords ch JOIN canvas.jobs b ON b.id = ch.body_id WHERE b.task = 'canvas.sum'
            """)
        for row in sums {
            let chord = try row.decode(Int64.self, 0)
            #expect(try row.decode(Bool.self, 1), "seed \(seed): chord \(chord)")
        }
        #expect(
            try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'", on: c)
                == (try count(
                    "SELECT count(*) FROM canvas.chords WHERE body->>'task' = 'canvas.sum' AND state = 'succeeded'",
                    on: c)))
        // Each success that spawned enqueued its canvas once; a run that did not succeed, none.
        let spawned = try count("SELECT count(*) FROM canvas.jobs WHERE args = '[\"spawned\"]'", on: c)
        let spawners = try count(
            """
            SELECT count(*) FROM canvas.jobs p
            WHERE p.state = 'succeeded' AND EXISTS (SELECT 1 FROM canvas.jobs s WHERE s.parent_id = p.id AND s.args = '["spawned"]')
            """, on: c)
        #expect(spawned == spawners)
        #expect(try count("SELECT count(*) FROM canvas.chords WHERE kind = 'root' AND state = 'pending'", on: c) == 0)
    }

    /// The member that failed a chord is retried by an operator after all its siblings finished:
    /// the counter still holds their successes, so its success alone runs the body, once.
    @Test(arguments: [UInt64(7), 8, 9])
    func aMemberRetriedAfterItsSiblingsFinishedRunsTheBodyOnce(seed: UInt64) throws {
        var random = SplitMix64(state: seed)
        let c = try database.connect()
        let w = try worker(c)
        let n = Int.random(in: 5...40, using: &random)
        let header = (0..<n).map { _ in #"{"task": "canvas.add"}"# }.joined(separator: ",")
        let root = try Canvas.enqueue(
            json: try JSONValue(parsing: #"{"chord": [\#(header)], "body": {"task": "canvas.sum"}}"#), on: c
        ).id
        let claimed = try Broker.claim(worker: w, queues: ["default"], limit: n, on: c)
        let victim = claimed.randomElement(using: &random)!
        var rest = claimed.filter { $0.id != victim.id }.shuffled(using: &random)[...]
        // The victim fails somewhere among its siblings' batches.
        let failAfter = Int.random(in: 0...rest.count, using: &random)
        var finished = 0
        while !rest.isEmpty || finished <= failAfter {
            if finished == failAfter {
                try Broker.finish(
                    worker: w, [Outcome(jobID: victim.id, attempt: victim.attempt, kind: .fatal, error: "x")], on: c)
                finished += 1
                continue
            }
            let batch = rest.prefix(Int.random(in: 1...7, using: &random))
            rest = rest.dropFirst(batch.count)
            try Broker.finish(
                worker: w,
                batch.map { Outcome(jobID: $0.id, attempt: $0.attempt, kind: .succeeded, resultText: String($0.id)) }
                    .sorted { $0.jobID < $1.jobID }, on: c)
            finished += 1
        }
        #expect(try count("SELECT count(*) FROM canvas.chords WHERE kind = 'chord' AND state = 'failed'", on: c) == 1)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'", on: c) == 0)
        #expect(try c.query("SELECT canvas.retry(\(victim.id))")[0].decodeIfPresent(String.self, 0) != nil)
        let again = try #require(try Broker.claim(worker: w, queues: ["default"], limit: 10, on: c).first)
        #expect(again.id == victim.id)
        try Broker.finish(
            worker: w, [Outcome(jobID: again.id, attempt: again.attempt, kind: .succeeded, resultText: "0")], on: c)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'", on: c) == 1)
        let body = try #require(try Broker.claim(worker: w, queues: ["default"], limit: 10, on: c).first)
        let expected = claimed.sorted { $0.id < $1.id }.map { $0.id == victim.id ? JSONValue.int(0) : .int(Int($0.id)) }
        #expect(try JSONValue(parsingStored: body.argsText) == .array([.array(expected)]))
        try Broker.finish(
            worker: w, [Outcome(jobID: body.id, attempt: body.attempt, kind: .succeeded, resultText: "1")], on: c)
        #expect(try CanvasStatus.fetch(root, on: c)?.state == .succeeded)
    }

    /// A cancel of the chord and the finish of its last member, at once, in both orders: either the
    /// body is enqueued once and the cancel finds the chord finished, or the chord is cancelled
    /// and the member's late report is dropped; never both, never neither.
    @Test(arguments: [true, false])
    func aCancelRacingTheLastFinish(finishFirst: Bool) throws {
        let c = try database.connect()
        let w = try worker(c)
        let root = try Canvas.enqueue(
            json: try JSONValue(
                parsing:
                    #"{"chord": [{"task": "canvas.add"}, {"task": "canvas.add"}, {"task": "canvas.add"}], "body": {"task": "canvas.sum"}}"#
            ), on: c
        ).id
        let chordID: Int64 = try c.query("SELECT id FROM canvas.chords WHERE kind = 'chord' AND id > \(root)")[0]
            .decode(Int64.self, 0)
        let claimed = try Broker.claim(worker: w, queues: ["default"], limit: 3, on: c).sorted { $0.id < $1.id }
        try Broker.finish(
            worker: w,
            claimed.dropLast().map { Outcome(jobID: $0.id, attempt: $0.attempt, kind: .succeeded, resultText: "1") },
            on: c)
        let last = claimed.last!
        let first = try database.connect()
        let config = database.configuration
        let finishLast = Query(
            "SELECT count(*) FROM canvas.finish(\(w), ARRAY[\(last.id)]::bigint[], ARRAY[\(last.attempt)]::integer[], ARRAY['succeeded'], ARRAY['1'::jsonb], ARRAY[NULL::text], ARRAY[NULL::jsonb])"
        )
        let cancel = Query("SELECT canvas.cancel(\(chordID))")
        try first.execute("BEGIN")
        let recorded: Int
        var cancelled: String?
        if finishFirst {
            recorded = try first.query(finishLast)[0].decode(Int.self, 0)
            let outcome = SharedValue<String?>(nil)
            let thread = Thread {
                outcome.value = try? Connection.connect(config).query(cancel)[0].decodeIfPresent(String.self, 0)
            }
            thread.start()
            #expect(eventually(timeout: 10) { (try? self.waitingOnLock(c)) == true })
            try first.execute("COMMIT")
            #expect(eventually(timeout: 10) { outcome.value != nil })
            cancelled = outcome.value ?? nil
            #expect(recorded == 1)
            #expect(cancelled == "already finished")
        } else {
            cancelled = try first.query(cancel)[0].decodeIfPresent(String.self, 0)
            let outcome = SharedValue<Int?>(nil)
            let thread = Thread {
                outcome.value = try? Connection.connect(config).query(finishLast)[0].decode(Int.self, 0)
            }
            thread.start()
            #expect(eventually(timeout: 10) { (try? self.waitingOnLock(c)) == true })
            try first.execute("COMMIT")
            #expect(eventually(timeout: 10) { outcome.value != nil })
            recorded = outcome.value ?? -1
            #expect(cancelled == "cancelled")
            #expect(recorded == 0)
        }
        let bodies = try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'", on: c)
        let state = try c.query("SELECT state FROM canvas.chords WHERE id = \(chordID)")[0].decode(String.self, 0)
        #expect(bodies == (finishFirst ? 1 : 0))
        #expect(state == (finishFirst ? "succeeded" : "cancelled"))
    }

    func waitingOnLock(_ c: Connection) throws -> Bool {
        try c.query(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")[0]
            .decode(Int.self, 0) > 0
    }
}

/// A value one thread sets and another reads.
final class SharedValue<T>: @unchecked Sendable {
    // Guarded by `lock`.
    private var stored: T
    private let lock = NSLock()
    init(_ value: T) { stored = value }
    var value: T {
        get {
            lock.lock()
            defer { lock.unlock() }
            return stored
        }
        set {
            lock.lock()
            stored = newValue
            lock.unlock()
        }
    }
}
