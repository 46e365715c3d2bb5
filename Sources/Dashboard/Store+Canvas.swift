import Foundation
import PGCanvas
import Postgres

/// Everything under one root, as stored: chord rows and the jobs in their slots.
struct CanvasGraph: Sendable {
    struct Chord: Sendable {
        var id: Int64
        var kind: String
        var state: String
        var size: Int
        var remaining: Int
        var parentChord: Int64? = nil
        var position: Int? = nil
        /// The body's JSON while it has not been created, and the id of what stands for it after.
        var bodyText: String? = nil
        var bodyID: Int64? = nil
        var onErrorText: String? = nil
        var error: String? = nil
        /// Links to run after the chord's body, as JSON.
        var chainText: String? = nil
        /// A group inside a chord or group, stored as a chord whose body is `canvas.identity`.
        var isInnerGroup = false
    }
    struct Job: Sendable {
        var id: Int64
        var task: String
        var state: String
        var chordID: Int64? = nil
        var position: Int? = nil
        /// Links still to run after this one, as JSON.
        var chainText: String? = nil
        var onErrorText: String? = nil
        var error: String? = nil
    }

    var rootID: Int64
    var chords: [Chord]
    var jobs: [Job]
    /// Jobs left out of the picture (beyond `memberLimit` in one chord), by chord and state.
    var omitted: [Int64: [String: Int]]
    /// Error callbacks that ran: jobs whose parent is a job of this canvas and that sit in no chord.
    var errbacks: [Job]
    var errbackParents: [Int64: Int64]
}

extension Store {
    /// Members drawn per chord; the rest are counted by state.
    static let memberLimit = 60
    static let chordLimit = 300

    static func canvas(root: Int64, on c: Connection) throws -> CanvasGraph? {
        let chordRows = try c.query(
            """
            WITH RECURSIVE down(id, depth) AS (
                SELECT \(root)::bigint, 0
                UNION ALL
                SELECT c.id, down.depth + 1 FROM canvas.chords c JOIN down ON (c.context->>'chord_id')::bigint = down.id
                WHERE c.context ? 'chord_id' AND down.depth < 64
            )
            SELECT c.id, c.kind, c.state, c.size, c.remaining, (c.context->>'chord_id')::bigint,
                   (c.context->>'position')::int, CASE WHEN c.body_id IS NULL THEN c.body::text END, c.body_id,
                   c.on_error::text, c.error, CASE WHEN c.body_id IS NULL THEN c.context->'chain' END::text,
                   coalesce(c.body->>'task' = 'canvas.identity', false)
            FROM down JOIN canvas.chords c ON c.id = down.id
            ORDER BY c.id LIMIT \(Int64(chordLimit))
            """)
        guard !chordRows.isEmpty else { return nil }
        let chords = try chordRows.map { r in
            CanvasGraph.Chord(
                id: try r.decode(Int64.self, 0), kind: try r.decode(String.self, 1),
                state: try r.decode(String.self, 2),
                size: try r.decode(Int.self, 3), remaining: try r.decode(Int.self, 4),
                parentChord: try r.decodeIfPresent(Int64.self, 5), position: try r.decodeIfPresent(Int.self, 6),
                bodyText: try r.decodeIfPresent(String.self, 7), bodyID: try r.decodeIfPresent(Int64.self, 8),
                onErrorText: try r.decodeIfPresent(String.self, 9), error: try r.decodeIfPresent(String.self, 10),
                chainText: try r.decodeIfPresent(String.self, 11), isInnerGroup: try r.decode(Bool.self, 12))
        }
        let ids = chords.map(\.id)
        // Per chord, the first members by slot, and a count by state beyond them. Waiting and
        // finished members are in an index each, by slot; running ones only by worker (migration
        // 0019), so those of every chord drawn are read once: each state's first members are read
        // on their own, then merged.
        let limit = Int64(memberLimit)
        let jobRows = try c.query(
            """
            WITH running AS MATERIALIZED (
                SELECT * FROM canvas.jobs j WHERE j.chord_id = ANY(\(ids)) AND j.state = 'running'
            )
            SELECT j.id, j.task, j.state, j.chord_id, j.position, j.chain::text, j.on_error::text, left(j.error, 300)
            FROM unnest(\(ids)::bigint[]) AS ch(id)
            CROSS JOIN LATERAL (
                SELECT * FROM (
                    (SELECT * FROM canvas.jobs j WHERE j.chord_id = ch.id AND j.state IN ('scheduled', 'queued')
                     ORDER BY j.position, j.id LIMIT \(limit))
                    UNION ALL
                    (SELECT * FROM running r WHERE r.chord_id = ch.id ORDER BY r.position, r.id LIMIT \(limit))
                    UNION ALL
                    (SELECT * FROM canvas.jobs j WHERE j.chord_id = ch.id AND j.state IN ('succeeded', 'failed', 'cancelled')
                     ORDER BY j.position, j.id LIMIT \(limit))
                ) m
                ORDER BY m.position, m.id LIMIT \(limit)
            ) j
            """)
        let jobs = try jobRows.map(job(from:))
        var omitted: [Int64: [String: Int]] = [:]
        let big = chords.filter { $0.size > memberLimit / 2 }.map(\.id)
        if !big.isEmpty {
            for r in try c.query(
                """
                SELECT chord_id, state, count(*) FROM canvas.jobs
                WHERE chord_id = ANY(\(big)) AND position >= \(Int32(memberLimit))
                  AND (state IN ('scheduled', 'queued') OR state = 'running' OR state IN ('succeeded', 'failed', 'cancelled'))
                GROUP BY 1, 2
                """)
            {
                omitted[try r.decode(Int64.self, 0), default: [:]][try r.decode(String.self, 1)] = try r.decode(
                    Int.self, 2)
            }
        }
        let withCallbacks =
            jobs.filter { $0.onErrorText != nil && $0.state == "failed" }.map(\.id)
            + chords.filter { $0.onErrorText != nil && $0.state != "pending" }.map(\.id)
        var errbacks: [CanvasGraph.Job] = []
        var parents: [Int64: Int64] = [:]
        if !withCallbacks.isEmpty {
            for r in try c.query(
                """
                SELECT id, task, state, chord_id, position, chain::text, on_error::text, left(error, 300), parent_id
                FROM canvas.jobs WHERE parent_id = ANY(\(withCallbacks)) AND chord_id IS NULL ORDER BY id LIMIT 50
                """)
            {
                let j = try job(from: r)
                errbacks.append(j)
                parents[j.id] = try r.decode(Int64.self, 8)
            }
        }
        return CanvasGraph(
            rootID: root, chords: chords, jobs: jobs, omitted: omitted, errbacks: errbacks, errbackParents: parents)
    }

    private static func job(from r: Row) throws -> CanvasGraph.Job {
        CanvasGraph.Job(
            id: try r.decode(Int64.self, 0), task: try r.decode(String.self, 1), state: try r.decode(String.self, 2),
            chordID: try r.decodeIfPresent(Int64.self, 3), position: try r.decodeIfPresent(Int.self, 4),
            chainText: try r.decodeIfPresent(String.self, 5), onErrorText: try r.decodeIfPresent(String.self, 6),
            error: try r.decodeIfPresent(String.self, 7))
    }
}
