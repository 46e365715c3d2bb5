import Foundation
import PGCanvas
import Postgres

/// What the overview shows, read in one go on one connection.
struct Overview: Sendable {
    struct QueueRow: Sendable {
        var queue: String
        /// Live states (scheduled, queued, running): all of them; finished states: the last hour.
        var counts: [String: Int]
        var oldestQueuedAge: Double?
    }
    struct Minute: Sendable {
        var start: Int64
        var succeeded: Int
        var failed: Int
    }
    struct WorkerRow: Sendable {
        var id: Int64
        var hostname: String
        var pid: Int
        var concurrency: Int
        var queues: [String]
        var running: Int
        var heartbeatAge: Double
        var startedAt: Date
        var heartbeatInterval: Double
    }
    struct Failure: Sendable {
        var id: Int64
        var task: String
        var queue: String
        var error: String
        var finishedAt: Date?
    }

    var queues: [QueueRow]
    /// Sixty minutes, oldest first, ending with the current one.
    var minutes: [Minute]
    var workers: [WorkerRow]
    var failures: [Failure]
    var pendingChords: Int
    var now: Date
}

/// The dashboard's reads. Every list is bounded and served by an index (docs/operations.md has
/// the plans); nothing here scans the finished jobs of more than the last hour.
enum Store {
    static let liveStates = ["scheduled", "queued", "running"]
    static let finishedStates = ["succeeded", "failed", "cancelled"]
    static let allStates = liveStates + finishedStates

    static func overview(on c: Connection) throws -> Overview {
        var byQueue: [String: Overview.QueueRow] = [:]
        func add(_ queue: String, _ state: String, _ n: Int) {
            byQueue[queue, default: .init(queue: queue, counts: [:])].counts[state, default: 0] += n
        }
        // Live states through their partial indexes (queued, scheduled, running).
        for row in try c.query(
            """
            SELECT queue, 'queued', count(*), extract(epoch FROM now() - min(run_at))::float8
              FROM canvas.jobs WHERE state = 'queued' GROUP BY queue
            UNION ALL SELECT queue, 'scheduled', count(*), NULL FROM canvas.jobs WHERE state = 'scheduled' GROUP BY queue
            UNION ALL SELECT queue, 'running', count(*), NULL FROM canvas.jobs WHERE state = 'running' GROUP BY queue
            """)
        {
            let queue: String = try row.decode(String.self, 0)
            add(queue, try row.decode(String.self, 1), try row.decode(Int.self, 2))
            if let age = try row.decodeIfPresent(Double.self, 3) { byQueue[queue]?.oldestQueuedAge = age }
        }
        // The last hour's finished jobs through jobs_finished_idx, by minute for the chart.
        let nowRow = try c.query("SELECT now(), extract(epoch FROM date_trunc('minute', now()))::int8")[0]
        let now: Date = try nowRow.decode(Date.self, 0)
        let thisMinute: Int64 = try nowRow.decode(Int64.self, 1)
        var minutes = (0..<60).map { Overview.Minute(start: thisMinute - Int64(59 - $0) * 60, succeeded: 0, failed: 0) }
        for row in try c.query(
            """
            SELECT queue, state, extract(epoch FROM date_trunc('minute', finished_at))::int8, count(*)
            FROM canvas.jobs
            WHERE state IN ('succeeded', 'failed', 'cancelled')
              AND finished_at >= to_timestamp(\(thisMinute - 59 * 60))
            GROUP BY 1, 2, 3
            """)
        {
            let state: String = try row.decode(String.self, 1)
            let n: Int = try row.decode(Int.self, 3)
            add(try row.decode(String.self, 0), state, n)
            let slot = Int((try row.decode(Int64.self, 2) - minutes[0].start) / 60)
            guard minutes.indices.contains(slot) else { continue }
            if state == "succeeded" { minutes[slot].succeeded += n }
            if state == "failed" { minutes[slot].failed += n }
        }
        let pending: Int = try c.query("SELECT count(*) FROM canvas.chords WHERE state = 'pending'")[0].decode(
            Int.self, 0)
        return Overview(
            queues: byQueue.keys.sorted().map { byQueue[$0]! }, minutes: minutes, workers: try workers(on: c),
            failures: try latestFailures(limit: 10, on: c), pendingChords: pending, now: now)
    }

    static func workers(on c: Connection) throws -> [Overview.WorkerRow] {
        try c.query(
            """
            SELECT w.id, w.hostname, w.pid, w.concurrency, w.queues,
                   (SELECT count(*) FROM canvas.jobs j WHERE j.worker_id = w.id AND j.state = 'running'),
                   extract(epoch FROM now() - w.heartbeat_at)::float8, w.started_at, w.heartbeat_interval
            FROM canvas.workers w ORDER BY w.hostname, w.pid, w.id
            """
        ).map { row in
            Overview.WorkerRow(
                id: try row.decode(Int64.self, 0), hostname: try row.decode(String.self, 1),
                pid: try row.decode(Int.self, 2), concurrency: try row.decode(Int.self, 3),
                queues: try row.decode([String].self, 4), running: try row.decode(Int.self, 5),
                heartbeatAge: try row.decode(Double.self, 6), startedAt: try row.decode(Date.self, 7),
                heartbeatInterval: try row.decode(Double.self, 8))
        }
    }

    /// The newest failures by id, through jobs_failed_idx (migration 0015).
    static func latestFailures(limit: Int, on c: Connection) throws -> [Overview.Failure] {
        try c.query(
            """
            SELECT id, task, queue, left(coalesce(error, ''), 300), finished_at FROM canvas.jobs
            WHERE state = 'failed' ORDER BY id DESC LIMIT \(Int64(limit))
            """
        ).map { row in
            Overview.Failure(
                id: try row.decode(Int64.self, 0), task: try row.decode(String.self, 1),
                queue: try row.decode(String.self, 2), error: try row.decode(String.self, 3),
                finishedAt: try row.decodeIfPresent(Date.self, 4))
        }
    }
}
