import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// A chord's members are indexed by chord while they wait and once they finish, never while they
/// run, and finished ones only by chord (migration 0019): a member's claim and finish make the
/// index entries a plain job's make. Every path that looks for members in any state must still
/// find the running ones, through the running index, without reading the table, and the pruner
/// takes finished members by chord.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class ChordMemberIndexTests {
    let database: TestDatabase
    static let states = ["scheduled", "queued", "running", "succeeded", "failed", "cancelled"]

    init() throws {
        database = try TestDatabase()
        let c = try database.connect()
        try c.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        // Index entries are counted: no VACUUM may take dead ones away meanwhile.
        try c.execute("ALTER TABLE canvas.jobs SET (autovacuum_enabled = off)")
        // Other work in the table, so that reading it whole is never the cheap plan.
        try c.execute(
            """
            INSERT INTO canvas.jobs (task, state, finished_at)
            SELECT 'canvas.noop', 'succeeded', now() FROM generate_series(1, 20000)
            """)
    }
    deinit { database.drop() }

    func count(_ sql: Query, on c: Connection) throws -> Int { try c.query(sql)[0].decode(Int.self, 0) }

    /// Index entries, pointing at live rows or not yet vacuumed ones (pgstattuple).
    func entries(_ index: String, on c: Connection) throws -> Int {
        try count("SELECT tuple_count FROM pgstattuple(\(index)::regclass)", on: c)
    }

    func chordIndexes(on c: Connection) throws -> [Int] {
        [try entries("canvas.jobs_chord_waiting_idx", on: c), try entries("canvas.jobs_chord_done_idx", on: c)]
    }

    /// Scans by this transaction so far: sequential ones of canvas.jobs ("jobs"), and those
    /// through each of the indexes that find a chord's members.
    func scans(_ c: Connection) throws -> [String: Int] {
        try c.query(
            """
            SELECT relname, pg_stat_get_xact_numscans(oid) FROM pg_class
            WHERE relnamespace = 'canvas'::regnamespace
              AND relname IN ('jobs', 'jobs_chord_waiting_idx', 'jobs_chord_done_idx', 'jobs_running_idx')
            """
        ).reduce(into: [String: Int]()) { $0[try $1.decode(String.self, 0)] = try $1.decode(Int.self, 1) }
    }

    /// What `body` scanned, within one transaction.
    func scanned<T>(_ c: Connection, _ body: (Connection) throws -> T) throws -> (T, [String: Int]) {
        try c.withTransaction { tx in
            let before = try scans(tx)
            let value = try body(tx)
            return (value, try scans(tx).merging(before, uniquingKeysWith: -))
        }
    }

    /// The states the queries for a chord's members name, part by part (waiting, running,
    /// finished): cancel and retry (functions/control.sql), prune (functions/retention.sql),
    /// CanvasStatus and the dashboard (Store+Canvas.swift). A state added to canvas.jobs must be
    /// added there too, or its members are missed.
    @Test func theQueriesNameEveryStateAJobCanBeIn() throws {
        let c = try database.connect()
        let definition = try c.query(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'jobs_state_check'"
        )[0].decode(String.self, 0)
        let named = definition.split(separator: "'").enumerated().filter { $0.offset % 2 == 1 }.map {
            String($0.element)
        }
        #expect(Set(named) == Set(Self.states), "\(definition)")
    }

    /// A group of `n` no-op members on a queue of its own; returns its chord's id.
    func group(_ n: Int, queue: String = "members", on c: Connection) throws -> Int64 {
        let member = signature("canvas.noop", options: SignatureOptions(queue: queue))
        let handle = try PGCanvas.group(Array(repeating: member, count: n)).enqueue(on: c)
        return try #require(try CanvasStatus.fetch(handle.id, on: c)?.innerID)
    }

    @Test func claimingAMemberAddsNoEntryByChordAndFinishingOneAddsOne() throws {
        let c = try database.connect()
        try c.execute("VACUUM canvas.jobs")
        let w = try Broker.registerWorker(hostname: "test", pid: 1, queues: ["claimed"], concurrency: 1, on: c)
        let before = try chordIndexes(on: c)
        _ = try group(50, queue: "claimed", on: c)
        let enqueued = try chordIndexes(on: c)
        #expect(enqueued == [before[0] + 50, before[1]], "enqueued: waiting")
        let running = try entries("canvas.jobs_running_idx", on: c)
        let claimed = try Broker.claim(worker: w, queues: ["claimed"], limit: 50, on: c)
        #expect(claimed.count == 50)
        // The claim entered the running index (so pgstattuple sees new entries) and neither by chord.
        #expect(try entries("canvas.jobs_running_idx", on: c) == running + 50)
        let afterClaim = try chordIndexes(on: c)
        #expect(afterClaim == [before[0] + 50, before[1]], "claimed: no new entry by chord")
        let finishedOutside = try entries("canvas.jobs_finished_idx", on: c)
        try Broker.finish(
            worker: w,
            claimed.map { Outcome(jobID: $0.id, attempt: $0.attempt, kind: .succeeded, resultText: "1") }, on: c)
        // One entry each in the finished index; the group, complete, queued the job that hands its
        // list to the canvas's root (a member of the root).
        let finished = try chordIndexes(on: c)
        #expect(finished == [before[0] + 50 + 1, before[1] + 50], "finished: one entry each")
        #expect(try entries("canvas.jobs_finished_idx", on: c) == finishedOutside, "members are pruned by chord")
    }

    /// A chord with a member in each state, and one inside it with one running member: cancel takes
    /// the waiting and running ones of both, and reads no table to find them.
    @Test func cancelFindsRunningMembersThroughTheRunningIndex() throws {
        let c = try database.connect()
        let w = try Broker.registerWorker(hostname: "test", pid: 1, queues: ["other"], concurrency: 1, on: c)
        let handle = try chord(
            Self.states.map { _ in signature("canvas.noop") } + [PGCanvas.group([signature("canvas.noop")])],
            body: signature("canvas.sum")
        ).enqueue(on: c)
        let outer = try #require(try CanvasStatus.fetch(handle.id, on: c)?.innerID)
        let inner: Int64 = try c.query(
            "SELECT id FROM canvas.chords WHERE (context->>'chord_id')::bigint = \(outer) AND context ? 'chord_id'"
        )[0].decode(Int64.self, 0)
        try c.execute(
            """
            UPDATE canvas.jobs SET state = (\(Self.states))[position + 1],
                worker_id = CASE WHEN position = 2 THEN \(w) END,
                finished_at = CASE WHEN position >= 3 THEN now() END
            WHERE chord_id = \(outer)
            """)
        try c.execute("UPDATE canvas.jobs SET state = 'running', worker_id = \(w) WHERE chord_id = \(inner)")
        try c.execute("ANALYZE canvas.jobs")
        let (answer, used) = try scanned(c) { tx in
            try tx.query("SELECT canvas.cancel(\(outer))")[0].decode(String.self, 0)
        }
        #expect(answer == "cancelled")
        #expect(used["jobs"] == 0, "cancel read canvas.jobs whole: \(used)")
        #expect(used["jobs_chord_waiting_idx", default: 0] > 0 && used["jobs_running_idx", default: 0] > 0, "\(used)")
        let states = try c.query(
            "SELECT position, state FROM canvas.jobs WHERE chord_id = \(outer) ORDER BY position"
        ).map { try $0.decode(String.self, 1) }
        #expect(states == ["cancelled", "cancelled", "cancelled", "succeeded", "failed", "cancelled"])
        #expect(
            try count("SELECT count(*) FROM canvas.jobs WHERE chord_id = \(inner) AND state = 'cancelled'", on: c) == 1)
    }

    /// A finished chord past its age stays while any member is left, a running one too; it goes
    /// with its last member. The running members are read once for the batch, not per chord.
    @Test func pruneKeepsAChordWhileAMemberRuns() throws {
        let c = try database.connect()
        let w = try Broker.registerWorker(hostname: "test", pid: 1, queues: ["other"], concurrency: 1, on: c)
        let chords = try (0..<4).map { _ in try group(2, on: c) }
        // Each chord finished two hours ago; its members are gone but for one, in a state of its own.
        try c.execute(
            """
            UPDATE canvas.chords SET state = 'failed', finished_at = now() - interval '2 hours'
            WHERE id = ANY(\(chords)) OR (context->>'chord_id')::bigint = ANY(\(chords)) OR kind = 'root'
            """)
        try c.execute("DELETE FROM canvas.jobs WHERE chord_id = ANY(\(chords)) AND position = 1")
        try c.execute(
            """
            UPDATE canvas.jobs SET state = (ARRAY['queued', 'running', 'succeeded'])[k.n],
                worker_id = CASE WHEN k.n = 2 THEN \(w) END, finished_at = CASE WHEN k.n = 3 THEN now() END
            FROM unnest(\(Array(chords.prefix(3)))::bigint[]) WITH ORDINALITY AS k(id, n)
            WHERE chord_id = k.id
            """)
        try c.execute("DELETE FROM canvas.jobs WHERE chord_id = \(chords[3])")
        try c.execute("ANALYZE canvas.jobs")
        func remaining() throws -> [Int64] {
            try c.query("SELECT id FROM canvas.chords WHERE id = ANY(\(chords)) ORDER BY id").map {
                try $0.decode(Int64.self, 0)
            }
        }
        let (_, used) = try scanned(c) { tx in try tx.query("SELECT * FROM canvas.prune('1 hour')") }
        #expect(used["jobs"] == 0, "prune read canvas.jobs whole: \(used)")
        #expect(
            used["jobs_chord_waiting_idx", default: 0] > 0 && used["jobs_chord_done_idx", default: 0] > 0
                && used["jobs_running_idx", default: 0] > 0, "\(used)")
        #expect(try remaining() == Array(chords.prefix(3)), "the chord without members went; the others stay")
        try c.execute("UPDATE canvas.jobs SET state = 'succeeded', finished_at = now() WHERE chord_id = \(chords[1])")
        _ = try c.query("SELECT * FROM canvas.prune('1 hour')")
        #expect(try remaining() == Array(chords.prefix(3)), "its member finished within the age: kept")
        try c.execute("DELETE FROM canvas.jobs WHERE chord_id = \(chords[1])")
        _ = try c.query("SELECT * FROM canvas.prune('1 hour')")
        #expect(try remaining() == [chords[0], chords[2]])
    }

    /// A chord's members go by chord, in batches, those that finished within the age excepted
    /// (one that ran on after the chord failed). Each call reads a batch of a chord's members at
    /// most, so the members after a young one wait for it (at most the age); the chord goes with
    /// the last of them.
    @Test func pruneTakesAChordsMembersInBatches() throws {
        let c = try database.connect()
        let id = try group(120, on: c)
        try c.execute(
            "UPDATE canvas.jobs SET state = 'succeeded', finished_at = now() - interval '2 hours' WHERE chord_id = \(id)"
        )
        try c.execute("UPDATE canvas.jobs SET finished_at = now() WHERE chord_id = \(id) AND position = 7")
        try c.execute(
            "UPDATE canvas.chords SET state = 'failed', finished_at = now() - interval '2 hours' WHERE id = \(id)")
        func members() throws -> Int { try count("SELECT count(*) FROM canvas.jobs WHERE chord_id = \(id)", on: c) }
        var pruner = Pruner(age: 3600, batchSize: 50, budget: 60)
        let report = try pruner.run(on: c)
        #expect(report.jobs == 49 && !report.more, "slots 0 to 49 but the young 7th: \(report)")
        #expect(try members() == 71)
        #expect(try count("SELECT count(*) FROM canvas.chords WHERE id = \(id)", on: c) == 1)
        try c.execute("UPDATE canvas.jobs SET finished_at = now() - interval '2 hours' WHERE chord_id = \(id)")
        let last = try pruner.run(on: c)
        #expect(last.jobs == 71 && last.batches >= 2 && last.chords >= 1, "\(last)")
        #expect(try count("SELECT count(*) FROM canvas.chords WHERE id = \(id)", on: c) == 0)
    }

    /// A call that fills its batch with members ends there: chords and firings wait, so that no
    /// call probes every aged chord while members remain. And a chord whose members are not old
    /// enough yet (they ran on after it failed) costs at most a batch of reads a call.
    @Test func aFullBatchOfMembersEndsTheCallAndYoungMembersCostABatch() throws {
        let c = try database.connect()
        let old = try group(60, on: c)
        let young = try group(200, on: c)
        try c.execute(
            """
            UPDATE canvas.jobs SET state = 'succeeded',
                finished_at = CASE WHEN chord_id = \(old) THEN now() - interval '2 hours' ELSE now() END
            WHERE chord_id IN (\(old), \(young))
            """)
        try c.execute(
            """
            UPDATE canvas.chords SET state = 'failed', finished_at = now() - interval '3 hours'
            WHERE id IN (\(old), \(young)) OR kind = 'root'
            """)
        var pruner = Pruner(age: 3600, batchSize: 50)
        let (first, read) = try c.withTransaction { tx in
            let before = try count(
                "SELECT pg_stat_get_xact_tuples_returned('canvas.jobs_chord_done_idx'::regclass)", on: tx)
            let report = try pruner.batch(on: tx)
            return (
                report,
                try count("SELECT pg_stat_get_xact_tuples_returned('canvas.jobs_chord_done_idx'::regclass)", on: tx)
                    - before
            )
        }
        #expect(first.jobs == 50 && first.chords == 0 && first.firings == 0 && first.more, "\(first)")
        let second = try pruner.batch(on: c)
        #expect(second.jobs == 10 && !second.more, "\(second)")
        // The young chord's members: one batch of them read, none deleted.
        #expect(read <= 50 + 50, "entries of jobs_chord_done_idx read in one call: \(read)")
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE chord_id = \(young)", on: c) == 200)
        #expect(try count("SELECT count(*) FROM canvas.chords WHERE id = \(old)", on: c) == 0)
    }

    /// CanvasStatus counts members in every state, and reads no table to do it.
    @Test func statusCountsEveryState() throws {
        let c = try database.connect()
        let id = try group(Self.states.count * 2, on: c)
        try c.execute(
            "UPDATE canvas.jobs SET state = (\(Self.states))[position % 6 + 1] WHERE chord_id = \(id)")
        try c.execute("ANALYZE canvas.jobs")
        let (status, used) = try scanned(c) { tx in try CanvasStatus.fetch(id, on: tx) }
        #expect(status?.memberStates == Dictionary(uniqueKeysWithValues: Self.states.map { ($0, 2) }))
        #expect(used["jobs"] == 0, "status read canvas.jobs whole: \(used)")
        #expect(
            used["jobs_chord_waiting_idx", default: 0] > 0 && used["jobs_chord_done_idx", default: 0] > 0
                && used["jobs_running_idx", default: 0] > 0, "\(used)")
    }
}
