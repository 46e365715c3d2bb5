import Foundation
import PGCanvas
import Postgres

/// The filters of the jobs list, as they come from the query string.
struct JobFilter: Sendable, Equatable {
    var state: String?
    var queue: String?
    var task: String?
    /// Show jobs with ids below this one (keyset pagination, newest first).
    var before: Int64?

    /// Only known states filter; anything else is ignored rather than passed to SQL.
    init(state: String?, queue: String?, task: String?, before: Int64?) {
        self.state = state.flatMap { Store.allStates.contains($0) ? $0 : nil }
        self.queue = queue.flatMap { $0.isEmpty ? nil : $0 }
        self.task = task.flatMap { $0.isEmpty ? nil : $0 }
        self.before = before
    }
}

struct JobRow: Sendable {
    var id: Int64
    var queue: String
    var task: String
    var state: String
    var attempt: Int
    var maxAttempts: Int
    var createdAt: Date
    var finishedAt: Date?
    var error: String?
}

struct JobPage: Sendable {
    var rows: [JobRow]
    /// The keyset for the next page, when there is one.
    var nextBefore: Int64?
    /// Ids scanned down to without filling the page (a rare filter over many rows): the next
    /// page continues below it.
    var scannedTo: Int64?
}

struct JobDetail: Sendable {
    var id: Int64
    var queue: String
    var task: String
    var state: String
    var argsText: String
    var resultText: String?
    var error: String?
    var attempt: Int
    var maxAttempts: Int
    var crashes: Int
    var priority: Int
    var timeLimit: Double?
    var createdAt: Date
    var runAt: Date
    var startedAt: Date?
    var finishedAt: Date?
    var workerID: Int64?
    var workerName: String?
    var parentID: Int64?
    var chordID: Int64?
    var position: Int?
    var chainText: String?
    var onErrorText: String?
    var children: [JobRow]
    /// Canvases this job spawned (roots whose parent it is).
    var spawned: [Int64]
}

extension Store {
    static let pageSize = 50
    /// A filter no index serves (queue or task alone) looks at most this many ids per page, so a
    /// page stays fast however rare the match; the page says where it stopped.
    static let scanWindow: Int64 = 200_000

    static func jobs(_ filter: JobFilter, window: Int64 = scanWindow, on c: Connection) throws -> JobPage {
        var query = Query(unsafeSQL: "")
        var conditions: [String] = []
        if let state = filter.state { conditions.append("state = \(query.bind(state))") }
        if let queue = filter.queue { conditions.append("queue = \(query.bind(queue))") }
        if let task = filter.task { conditions.append("task = \(query.bind(task))") }
        let top: Int64 =
            try filter.before
            ?? (c.query("SELECT coalesce(max(id), 0) + 1 FROM canvas.jobs")[0].decode(
                Int64.self, 0))
        conditions.append("id < \(query.bind(top))")
        // States other than succeeded have an index of their own (partial, by state); succeeded is
        // most of the table, so walking the primary key finds a page of them at once.
        let windowed = filter.state == nil && (filter.queue != nil || filter.task != nil)
        let floor = top - window
        if windowed { conditions.append("id >= \(query.bind(floor))") }
        query.sql = """
            SELECT id, queue, task, state, attempt, max_attempts, created_at, finished_at, left(error, 200)
            FROM canvas.jobs WHERE \(conditions.joined(separator: " AND "))
            ORDER BY id DESC LIMIT \(query.bind(Int64(pageSize + 1)))
            """
        var rows = try c.query(query).map { row in
            JobRow(
                id: try row.decode(Int64.self, 0), queue: try row.decode(String.self, 1),
                task: try row.decode(String.self, 2), state: try row.decode(String.self, 3),
                attempt: try row.decode(Int.self, 4), maxAttempts: try row.decode(Int.self, 5),
                createdAt: try row.decode(Date.self, 6), finishedAt: try row.decodeIfPresent(Date.self, 7),
                error: try row.decodeIfPresent(String.self, 8))
        }
        var page = JobPage(rows: rows, nextBefore: nil, scannedTo: nil)
        if rows.count > pageSize {
            rows.removeLast()
            page.rows = rows
            page.nextBefore = rows.last?.id
        } else if windowed && floor > 1 {
            page.nextBefore = floor
            page.scannedTo = floor
        }
        return page
    }

    static func job(_ id: Int64, on c: Connection) throws -> JobDetail? {
        let rows = try c.query(
            """
            SELECT j.id, j.queue, j.task, j.state, j.args::text, j.result::text, j.error, j.attempt, j.max_attempts,
                   j.crashes, j.priority, j.time_limit, j.created_at, j.run_at, j.started_at, j.finished_at,
                   j.worker_id, w.hostname || ' (pid ' || w.pid || ')', j.parent_id, j.chord_id, j.position,
                   j.chain::text, j.on_error::text
            FROM canvas.jobs j LEFT JOIN canvas.workers w ON w.id = j.worker_id
            WHERE j.id = \(id)
            """)
        guard let r = rows.first else { return nil }
        let children = try c.query(
            """
            SELECT id, queue, task, state, attempt, max_attempts, created_at, finished_at, left(error, 200)
            FROM canvas.jobs WHERE parent_id = \(id) ORDER BY id LIMIT 100
            """
        ).map { row in
            JobRow(
                id: try row.decode(Int64.self, 0), queue: try row.decode(String.self, 1),
                task: try row.decode(String.self, 2), state: try row.decode(String.self, 3),
                attempt: try row.decode(Int.self, 4), maxAttempts: try row.decode(Int.self, 5),
                createdAt: try row.decode(Date.self, 6), finishedAt: try row.decodeIfPresent(Date.self, 7),
                error: try row.decodeIfPresent(String.self, 8))
        }
        let spawned = try c.query(
            "SELECT id FROM canvas.chords WHERE parent_id = \(id) AND kind = 'root' ORDER BY id LIMIT 100"
        ).map { try $0.decode(Int64.self, 0) }
        return JobDetail(
            id: try r.decode(Int64.self, 0), queue: try r.decode(String.self, 1), task: try r.decode(String.self, 2),
            state: try r.decode(String.self, 3), argsText: try r.decode(String.self, 4),
            resultText: try r.decodeIfPresent(String.self, 5), error: try r.decodeIfPresent(String.self, 6),
            attempt: try r.decode(Int.self, 7), maxAttempts: try r.decode(Int.self, 8),
            crashes: try r.decode(Int.self, 9), priority: try r.decode(Int.self, 10),
            timeLimit: try r.decodeIfPresent(Double.self, 11), createdAt: try r.decode(Date.self, 12),
            runAt: try r.decode(Date.self, 13), startedAt: try r.decodeIfPresent(Date.self, 14),
            finishedAt: try r.decodeIfPresent(Date.self, 15), workerID: try r.decodeIfPresent(Int64.self, 16),
            workerName: try r.decodeIfPresent(String.self, 17), parentID: try r.decodeIfPresent(Int64.self, 18),
            chordID: try r.decodeIfPresent(Int64.self, 19), position: try r.decodeIfPresent(Int.self, 20),
            chainText: try r.decodeIfPresent(String.self, 21), onErrorText: try r.decodeIfPresent(String.self, 22),
            children: children, spawned: spawned)
    }

    /// The outermost chord row above a job or chord: its canvas's root (or a top-level chord).
    static func canvasRoot(of id: Int64, on c: Connection) throws -> Int64? {
        try c.query(
            """
            WITH RECURSIVE up(id, depth) AS (
                SELECT coalesce((SELECT chord_id FROM canvas.jobs WHERE id = \(id)),
                                (SELECT id FROM canvas.chords WHERE id = \(id))), 0
                UNION ALL
                SELECT (c.context->>'chord_id')::bigint, up.depth + 1
                FROM canvas.chords c JOIN up ON c.id = up.id
                WHERE c.context ? 'chord_id' AND up.depth < 1000
            )
            SELECT id FROM up WHERE id IS NOT NULL ORDER BY depth DESC LIMIT 1
            """
        ).first?.decodeIfPresent(Int64.self, 0)
    }
}
