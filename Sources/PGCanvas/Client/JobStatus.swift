import Foundation
import Postgres

/// A job as `voteradmin result` shows it.
///
/// ```swift
/// let id = try Enqueue.job(JobRequest("canvas.add", [1, 2]), on: db)
/// let status = try JobStatus.wait(for: id, on: db, timeout: 30)   // status.state == .succeeded, status.result == 3
/// let again = try JobStatus.fetch(id, on: db)   // nil for an unknown id
/// ```
public struct JobStatus: Sendable {
    /// The job's state as `canvas.jobs` stores it.
    public enum State: String, Sendable {
        /// `scheduled`: waiting for its countdown, eta or retry backoff; `queued`: ready to run.
        case scheduled, queued, running, succeeded, failed, cancelled
        public var isFinished: Bool { self == .succeeded || self == .failed || self == .cancelled }
    }

    public var id: Int64
    public var task: String
    public var queue: String
    public var state: State
    public var args: JSONValue
    public var result: JSONValue?
    public var error: String?
    /// What kind of error failed it: TimeLimitExceeded, WorkerLostError, TaskRevokedError, …
    public var errorType: String?
    /// Celery's name for the state (PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED), from
    /// `canvas.celery_state`: a job waiting to run again after an error is RETRY.
    public var celeryState: String
    public var kwargs: JSONValue?
    public var attempt: Int
    public var maxAttempts: Int
    public var crashes: Int
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?

    /// - Returns: nil when there is no job with that id.
    public static func fetch(_ id: Int64, on connection: Connection) throws -> JobStatus? {
        let rows = try connection.query(
            """
            SELECT id, task, queue, state, args, result, error, attempt, max_attempts, crashes,
                   created_at, started_at, finished_at, error_type, canvas.celery_state(state, attempt, error) AS celery,
                   kwargs
            FROM canvas.jobs WHERE id = \(id)
            """)
        guard let row = rows.first else { return nil }
        let resultText = try row.decodeIfPresent(PostgresJSON.self, "result")
        return JobStatus(
            id: try row.decode(Int64.self, "id"), task: try row.decode(String.self, "task"),
            queue: try row.decode(String.self, "queue"),
            state: State(rawValue: try row.decode(String.self, "state")) ?? .queued,
            args: try JSONValue(parsingStored: try row.decode(PostgresJSON.self, "args").text),
            result: try resultText.map { try JSONValue(parsingStored: $0.text) },
            error: try row.decodeIfPresent(String.self, "error"),
            errorType: try row.decodeIfPresent(String.self, "error_type"),
            celeryState: try row.decode(String.self, "celery"),
            kwargs: try row.decodeIfPresent(PostgresJSON.self, "kwargs").map { try JSONValue(parsingStored: $0.text) },
            attempt: try row.decode(Int.self, "attempt"), maxAttempts: try row.decode(Int.self, "max_attempts"),
            crashes: try row.decode(Int.self, "crashes"), createdAt: try row.decode(Date.self, "created_at"),
            startedAt: try row.decodeIfPresent(Date.self, "started_at"),
            finishedAt: try row.decodeIfPresent(Date.self, "finished_at"))
    }
}

/// Whether the current code is task code: waiting for results is refused there.
///
/// ```swift
/// if TaskExecution.isRunningTask {
///     ctx.spawn(signature("canvas.add", 1, 2))   // task code: waiting here would throw `refusal`
/// } else {
///     let status = try JobStatus.wait(for: id, on: db, timeout: 30)
/// }
/// ```
public enum TaskExecution {
    /// Set once, at start-up, by a pool process: everything it runs is task code.
    // `nonisolated(unsafe)`: written only by `PoolProcessMain.run` on the main thread before it
    // starts any other thread or runs any task, and only read afterwards.
    nonisolated(unsafe) public internal(set) static var processIsPoolProcess = false

    /// Bound while an in-process pool (threads, async) runs a task: the worker's own threads run
    /// no task code, so the process as a whole cannot say.
    @TaskLocal static var isTaskCode = false

    /// Whether the caller is task code, in a pool process or an in-process pool.
    public static var isRunningTask: Bool { processIsPoolProcess || isTaskCode }

    /// Celery's own words, so that users find the explanation they know.
    public static let refusal =
        "Never call result.get() within a task! See https://docs.celeryq.dev/en/latest/userguide/tasks.html#avoid-launching-synchronous-subtasks"

    static func refuseInsideTask() throws {
        // Not retryable: waiting would be refused again on every attempt.
        if isRunningTask { throw TaskError(refusal, retryable: false) }
    }
}

extension JobStatus {
    /// Blocks until the job finishes or `timeout` passes. Refused inside a task.
    /// - Returns: the final status, or the latest one when time ran out.
    public static func wait(
        for id: Int64, on connection: Connection, timeout: Double = .infinity,
        onPoll: ((JobStatus) -> Void)? = nil
    ) throws -> JobStatus {
        try pollUntilDone(timeout: timeout, onPoll: onPoll) {
            guard let status = try fetch(id, on: connection) else { throw CanvasError("no job with id \(id)") }
            return status
        } isDone: {
            $0.state.isFinished
        }
    }
}
