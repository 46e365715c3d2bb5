import Foundation
import Postgres

/// A canvas (its root, a chord or a group) as `voteradmin result` and `--wait` see it.
///
/// ```swift
/// let handle = try chord([signature("canvas.add", 1, 2), signature("canvas.add", 3, 4)],
///                        body: signature("canvas.sum")).enqueue(on: db)
/// let status = try CanvasStatus.fetch(handle.id, on: db)   // nil for an unknown id
/// // status?.state: .pending until the body has run, then .succeeded with status?.result == 10
/// ```
public struct CanvasStatus: Sendable {
    /// A chord's, group's or root's state: pending until everything in it ended.
    public enum State: String, Sendable {
        case pending, succeeded, failed, cancelled
    }

    public var id: Int64
    /// "root" (what enqueue_canvas returned), "chord", "group", or "job" for a job enqueued on its own.
    public var kind: String
    public var state: State
    public var size: Int
    public var remaining: Int
    /// For a root, the canvas's own result; for a group, the list of member results.
    public var result: JSONValue?
    public var error: String?
    public var bodyState: JobStatus.State?
    public var bodyID: Int64?
    /// Member jobs by state (links of member chains included).
    public var memberStates: [String: Int]
    public var createdAt: Date
    public var finishedAt: Date?
    /// For a root: the chord or group directly inside it, when there is one.
    public var innerID: Int64?

    /// Celery's name for the state: PENDING, SUCCESS, FAILURE or REVOKED.
    public var celeryState: String {
        switch state {
        case .pending: "PENDING"
        case .succeeded: "SUCCESS"
        case .failed: "FAILURE"
        case .cancelled: "REVOKED"
        }
    }

    public static func fetch(_ id: Int64, on c: Connection) throws -> CanvasStatus? {
        let rows = try c.query(
            """
            SELECT ch.kind, ch.state, ch.size, ch.remaining, ch.result, ch.error, ch.body_id, b.state,
                   ch.created_at, ch.finished_at,
                   (SELECT i.id FROM canvas.chords i WHERE (i.context->>'chord_id')::bigint = ch.id AND i.context ? 'chord_id' LIMIT 1)
            FROM canvas.chords ch LEFT JOIN canvas.jobs b ON b.id = ch.body_id
            WHERE ch.id = \(id)
            """)
        guard let row = rows.first else { return try fetchJob(id, on: c) }
        var states: [String: Int] = [:]
        // Each state named: waiting and finished members are in an index each, running ones only
        // by worker (migration 0019), and the planner reads the three only when told the states.
        for r in try c.query(
            """
            SELECT state, count(*) FROM canvas.jobs WHERE chord_id = \(id)
              AND (state IN ('scheduled', 'queued') OR state = 'running' OR state IN ('succeeded', 'failed', 'cancelled'))
            GROUP BY 1
            """)
        {
            states[try r.decode(String.self, 0)] = try r.decode(Int.self, 1)
        }
        let kind: String = try row.decode(String.self, 0)
        var result = try row.decodeIfPresent(PostgresJSON.self, 4).map { try JSONValue(parsingStored: $0.text) }
        if kind == "root", let list = result?.arrayValue, list.count == 1 { result = list[0] }
        return CanvasStatus(
            id: id, kind: kind, state: State(rawValue: try row.decode(String.self, 1)) ?? .pending,
            size: try row.decode(Int.self, 2), remaining: try row.decode(Int.self, 3), result: result,
            error: try row.decodeIfPresent(String.self, 5),
            bodyState: try row.decodeIfPresent(String.self, 7).flatMap(JobStatus.State.init(rawValue:)),
            bodyID: try row.decodeIfPresent(Int64.self, 6), memberStates: states,
            createdAt: try row.decode(Date.self, 8), finishedAt: try row.decodeIfPresent(Date.self, 9),
            innerID: try row.decodeIfPresent(Int64.self, 10))
    }
}

extension CanvasStatus {
    /// A job enqueued on its own, seen as a canvas of one (a unique key's duplicate can give one).
    static func fetchJob(_ id: Int64, on c: Connection) throws -> CanvasStatus? {
        guard let job = try JobStatus.fetch(id, on: c) else { return nil }
        let state: State =
            switch job.state {
            case .succeeded: .succeeded
            case .failed: .failed
            case .cancelled: .cancelled
            default: .pending
            }
        return CanvasStatus(
            id: id, kind: "job", state: state, size: 1, remaining: job.state.isFinished ? 0 : 1, result: job.result,
            error: job.error, bodyState: nil, bodyID: nil, memberStates: [job.state.rawValue: 1],
            createdAt: job.createdAt, finishedAt: job.finishedAt, innerID: nil)
    }
}

/// What enqueueing a canvas gives back: the id of its root, to wait on or look up.
///
/// ```swift
/// let handle = try chain([signature("canvas.add", 1, 2), signature("canvas.add", 10)]).enqueue(on: db)
/// let status = try handle.wait(on: db, timeout: 30)   // .succeeded, result 13
/// ```
public struct CanvasHandle: Sendable, Hashable {
    public var id: Int64

    public init(id: Int64) { self.id = id }

    /// Blocks until the whole canvas has finished (or failed), or `timeout` passes. Refused inside
    /// a task, as Celery refuses `result.get()` there.
    public func wait(
        on c: Connection, timeout: Double = .infinity, onPoll: ((CanvasStatus) -> Void)? = nil
    ) throws -> CanvasStatus {
        try pollUntilDone(timeout: timeout, onPoll: onPoll) {
            guard let status = try CanvasStatus.fetch(id, on: c) else { throw CanvasError("no canvas with id \(id)") }
            return status
        } isDone: {
            $0.state != .pending
        }
    }
}

extension Canvas {
    /// Enqueues the whole canvas in one statement, however large, through `canvas.enqueue_canvas`.
    /// - Throws: `CanvasError` naming where a malformed canvas is wrong; nothing is enqueued then.
    public func enqueue(on c: Connection) throws -> CanvasHandle {
        try validate()
        return try Canvas.enqueue(json: json, on: c)
    }

    /// Enqueues a canvas given in its JSON form. `args` and `kwargs` make it a partial call, as
    /// Celery's `apply_async(args, kwargs)`: `args` go first in the arguments of the signatures
    /// that start it, `kwargs` merge into theirs (the call's keys win).
    public static func enqueue(
        json: JSONValue, args: [JSONValue]? = nil, kwargs: [String: JSONValue]? = nil, on c: Connection
    ) throws -> CanvasHandle {
        try enqueue(jsonText: json.jsonText, args: args, kwargs: kwargs, on: c)
    }

    /// Enqueues a canvas given as JSON text (a file's contents), sent as it is: the database
    /// validates it as it does every canvas. Parse the text first (`JSONValue(parsing:)`) to
    /// refuse text that is not JSON with its position; the database would refuse it with its own error.
    public static func enqueue(
        jsonText: String, args: [JSONValue]? = nil, kwargs: [String: JSONValue]? = nil, on c: Connection
    ) throws -> CanvasHandle {
        do {
            let id: Int64 = try c.query(
                """
                SELECT canvas.enqueue_canvas(\(PostgresJSON(text: jsonText)),
                                             args => \(args.map { PostgresJSON(text: JSONValue.array($0).jsonText) }),
                                             kwargs => \(kwargs.map { PostgresJSON(text: JSONValue.object($0).jsonText) }))
                """)[0].decode(Int64.self, 0)
            return CanvasHandle(id: id)
        } catch let error as PostgresError where error.sqlState == "22023" {
            throw CanvasError(error.message)
        }
    }
}
