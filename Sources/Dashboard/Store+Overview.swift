import Foundation
import PGCanvas
import Postgres

/// What the overview shows, read in one go on one connection.
struct Overview: Sendable {
    struct QueueRow: Sendable {
        var queue: String
        /// Scheduled, queued and running jobs; each count stops at `Store.countCap`.
        var counts: [String: Int]
        /// How long the job at the head of the queue (the next to run) has been due.
        var headAge: Double?
    }
    struct Minute: Sendable {
        var start: Int64
        var succeeded: Int
        var failed: Int
    }
    struct TaskRow: Sendable {
        var task: String
        var succeeded: Int
        var failed: Int
        var retried: Int
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
    /// The last hour's finished jobs by task, as workers reported them.
    var tasks: [TaskRow]
    var workers: [WorkerRow]
    var failures: [Failure]
    /// Pending chords, groups and canvases (up to `Store.countCap`).
    var pendingChords: Int
}

/// The dashboard's reads. Every list is bounded and served by an index (docs/operations.md has
/// the measurements): live states are counted up to a cap, and throughput comes from
/// `canvas.finish_counts` (what workers report with their heartbeats), never from scanning
/// finished jobs, which a burn-down adds by the million.
enum Store {
    static let liveStates = ["scheduled", "queued", "running"]
    static let finishedStates = ["succeeded", "failed", "cancelled"]
    static let allStates = liveStates + finishedStates
    /// Counts on the overview stop here ("10000+"): counting a long queue exactly, every second
    /// while a page is open, would cost the workers more than the number is worth.
    static let countCap = 10_000

    static func overview(on c: Connection) throws -> Overview {
        let cap = Int64(countCap + 1)
        var byQueue: [String: Overview.QueueRow] = [:]
        func add(_ queue: String, _ state: String, _ n: Int) {
            byQueue[queue, default: .init(queue: queue, counts: [:])].counts[state, default: 0] += n
        }
        // Each queue with queued jobs, found by skipping through jobs_queued_idx (queue, priority,
        // id) one queue at a time; then a capped count and the head of the queue.
        for row in try c.query(
            """
            WITH RECURSIVE q(queue) AS (
                (SELECT queue FROM canvas.jobs WHERE state = 'queued' ORDER BY queue LIMIT 1)
                UNION ALL
                SELECT (SELECT j.queue FROM canvas.jobs j WHERE j.state = 'queued' AND j.queue > q.queue
                        ORDER BY j.queue LIMIT 1)
                FROM q WHERE q.queue IS NOT NULL
            )
            SELECT q.queue,
                   (SELECT count(*) FROM (SELECT 1 FROM canvas.jobs j WHERE j.state = 'queued' AND j.queue = q.queue
                                          LIMIT \(cap)) x),
                   (SELECT extract(epoch FROM now() - j.run_at)::float8 FROM canvas.jobs j
                    WHERE j.state = 'queued' AND j.queue = q.queue ORDER BY j.priority, j.id LIMIT 1)
            FROM q WHERE q.queue IS NOT NULL
            """)
        {
            let queue: String = try row.decode(String.self, 0)
            add(queue, "queued", try row.decode(Int.self, 1))
            byQueue[queue]?.headAge = try row.decodeIfPresent(Double.self, 2).map { max(0, $0) }
        }
        for row in try c.query(
            """
            SELECT queue, 'scheduled', count(*) FROM (
                SELECT queue FROM canvas.jobs WHERE state = 'scheduled' LIMIT \(cap)) s GROUP BY queue
            UNION ALL SELECT queue, 'running', count(*) FROM canvas.jobs WHERE state = 'running' GROUP BY queue
            """)
        {
            add(try row.decode(String.self, 0), try row.decode(String.self, 1), try row.decode(Int.self, 2))
        }
        let thisMinute: Int64 = try c.query("SELECT extract(epoch FROM date_trunc('minute', now()))::int8")[0]
            .decode(Int64.self, 0)
        var minutes = (0..<60).map {
            Overview.Minute(start: thisMinute - Int64(59 - $0) * 60, succeeded: 0, failed: 0)
        }
        var tasks: [String: Overview.TaskRow] = [:]
        for row in try c.query(
            """
            SELECT extract(epoch FROM minute)::int8, task, succeeded, failed, retried FROM canvas.finish_counts
            WHERE minute >= to_timestamp(\(thisMinute - 59 * 60))
            """)
        {
            let task: String = try row.decode(String.self, 1)
            let (ok, failed, retried) = (
                try row.decode(Int.self, 2), try row.decode(Int.self, 3), try row.decode(Int.self, 4)
            )
            tasks[task, default: .init(task: task, succeeded: 0, failed: 0, retried: 0)].succeeded += ok
            tasks[task]?.failed += failed
            tasks[task]?.retried += retried
            let slot = Int((try row.decode(Int64.self, 0) - minutes[0].start) / 60)
            guard minutes.indices.contains(slot) else { continue }
            minutes[slot].succeeded += ok
            minutes[slot].failed += failed
        }
        let pending: Int = try c.query(
            "SELECT count(*) FROM (SELECT 1 FROM canvas.chords WHERE state = 'pending' LIMIT \(cap)) x")[0].decode(
                Int.self, 0)
        return Overview(
            queues: byQueue.keys.sorted().map { byQueue[$0]! }, minutes: minutes,
            tasks: tasks.values.sorted { ($0.succeeded + $0.failed, $1.task) > ($1.succeeded + $1.failed, $0.task) },
            workers: try workers(on: c), failures: try latestFailures(limit: 10, on: c), pendingChords: pending)
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
