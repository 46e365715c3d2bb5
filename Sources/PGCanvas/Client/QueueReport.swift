import Foundation
import Postgres

/// What `voteradmin status` shows: jobs per queue and state, live workers, latest failures.
///
/// ```swift
/// let report = try QueueReport.fetch(on: db, failures: 10)
/// for q in report.queues { print(q.queue, q.counts["queued", default: 0], q.counts["running", default: 0]) }
/// for w in report.workers where w.heartbeatAge > 60 { print("silent worker", w.hostname, w.pid) }
/// for f in report.failures { print(f.id, f.task, f.error) }
/// ```
public struct QueueReport: Sendable {
    /// One queue's jobs by state.
    public struct QueueCounts: Sendable {
        public var queue: String
        public var counts: [String: Int]
    }
    /// A live worker as `canvas.workers` shows it.
    public struct Worker: Sendable {
        public var id: Int64
        public var hostname: String
        public var pid: Int
        public var concurrency: Int
        public var queues: [String]
        public var heartbeatAge: Double
        public var running: Int
    }
    /// A job that failed for good, with its error.
    public struct Failure: Sendable {
        public var id: Int64
        public var task: String
        public var error: String
        public var finishedAt: Date
    }

    public var queues: [QueueCounts]
    public var workers: [Worker]
    public var failures: [Failure]

    public static func fetch(on c: Connection, failures limit: Int = 5) throws -> QueueReport {
        guard limit >= 0 else { throw CanvasError("the number of failures to show must be 0 or more, not \(limit)") }
        var byQueue: [String: [String: Int]] = [:]
        for row in try c.query("SELECT queue, state, count(*) FROM canvas.jobs GROUP BY 1, 2 ORDER BY 1, 2") {
            byQueue[try row.decode(String.self, 0), default: [:]][try row.decode(String.self, 1)] = try row.decode(
                Int.self, 2)
        }
        let workers = try c.query(
            """
            SELECT w.id, w.hostname, w.pid, w.concurrency, w.queues,
                   extract(epoch FROM now() - w.heartbeat_at)::float8,
                   (SELECT count(*) FROM canvas.jobs j WHERE j.worker_id = w.id AND j.state = 'running')
            FROM canvas.workers w ORDER BY w.id
            """
        ).map { row in
            Worker(
                id: try row.decode(Int64.self, 0), hostname: try row.decode(String.self, 1),
                pid: try row.decode(Int.self, 2), concurrency: try row.decode(Int.self, 3),
                queues: try row.decode([String].self, 4), heartbeatAge: try row.decode(Double.self, 5),
                running: try row.decode(Int.self, 6))
        }
        let failures = try c.query(
            """
            SELECT id, task, coalesce(error, ''), finished_at FROM canvas.jobs
            WHERE state = 'failed' ORDER BY id DESC LIMIT \(Int64(limit))
            """
        ).map { row in
            Failure(
                id: try row.decode(Int64.self, 0), task: try row.decode(String.self, 1),
                error: try row.decode(String.self, 2), finishedAt: try row.decode(Date.self, 3))
        }
        return QueueReport(
            queues: byQueue.keys.sorted().map { QueueCounts(queue: $0, counts: byQueue[$0]!) }, workers: workers,
            failures: failures)
    }
}
