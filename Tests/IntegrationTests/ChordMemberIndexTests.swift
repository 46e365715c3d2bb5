import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// A chord's members are indexed by chord while they wait and once they finish, never while they
/// run (migration 0019): a claim of a member costs what a claim of a plain job costs. Every path
/// that looks for members in any state must still find the running ones, through the running
/// index, without reading the table.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class ChordMemberIndexTests {
    let database: TestDatabase
    static let states = ["scheduled", "queued", "running", "succeeded", "failed", "cancelled"]

    init() throws {
        database = try TestDatabase()
        let c = try database.connect()
        try c.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
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

    /// Sequential scans of canvas.jobs by this transaction so far.
    func tableScans(_ c: Connection) throws -> Int {
        try count("SELECT pg_stat_get_xact_numscans('canvas.jobs'::regclass)", on: c)
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
        try Broker.finish(
            worker: w,
            claimed.map { Outcome(jobID: $0.id, attempt: $0.attempt, kind: .succeeded, resultText: "1") }, on: c)
        // One entry each in the finished index; the group, complete, queued the job that hands its
        // list to the canvas's root (a member of the root).
        let finished = try chordIndexes(on: c)
        #expect(finished == [before[0] + 50 + 1, before[1] + 50], "finished: one entry each")
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
        let (answer, scans) = try c.withTransaction { tx in
            let before = try tableScans(tx)
            let answer = try tx.query("SELECT canvas.cancel(\(outer))")[0].decode(String.self, 0)
            return (answer, try tableScans(tx) - before)
        }
        #expect(answer == "cancelled")
        #expect(scans == 0, "cancel read canvas.jobs whole")
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
        let scans = try c.withTransaction { tx in
            let before = try tableScans(tx)
            _ = try tx.query("SELECT * FROM canvas.prune('1 hour')")
            return try tableScans(tx) - before
        }
        #expect(scans == 0, "prune read canvas.jobs whole")
        #expect(try remaining() == Array(chords.prefix(3)), "the chord without members went; the others stay")
        try c.execute("UPDATE canvas.jobs SET state = 'succeeded', finished_at = now() WHERE chord_id = \(chords[1])")
        _ = try c.query("SELECT * FROM canvas.prune('1 hour')")
        #expect(try remaining() == Array(chords.prefix(3)), "its member finished within the age: kept")
        try c.execute("DELETE FROM canvas.jobs WHERE chord_id = \(chords[1])")
        _ = try c.query("SELECT * FROM canvas.prune('1 hour')")
        #expect(try remaining() == [chords[0], chords[2]])
    }

    /// CanvasStatus counts members in every state, and reads no table to do it.
    @Test func statusCountsEveryState() throws {
        let c = try database.connect()
        let id = try group(Self.states.count * 2, on: c)
        try c.execute(
            "UPDATE canvas.jobs SET state = (\(Self.states))[position % 6 + 1] WHERE chord_id = \(id)")
        try c.execute("ANALYZE canvas.jobs")
        let (status, scans) = try c.withTransaction { tx in
            let before = try tableScans(tx)
            let status = try CanvasStatus.fetch(id, on: tx)
            return (status, try tableScans(tx) - before)
        }
        #expect(status?.memberStates == Dictionary(uniqueKeysWithValues: Self.states.map { ($0, 2) }))
        #expect(scans == 0, "status read canvas.jobs whole")
    }
}
