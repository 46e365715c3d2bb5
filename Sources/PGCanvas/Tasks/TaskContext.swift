import Foundation
import Logging
import Postgres

/// The running job as its task sees it: ids, the pool process's logger, a database connection,
/// and the work the task spawns (committed together with the task's success).
///
/// A class so that an async task can spawn work through it. `@unchecked Sendable`: its mutable
/// state (the spawned canvases, the pool process's connection) is reached only with `lock` held,
/// so child tasks of an async body may spawn at the same time. The connection it hands out is
/// still one libpq connection: use it from one child task at a time.
///
/// ```swift
/// let fanOut = TaskDefinition("centres.fan_out") { (limit: Int, ctx) async throws -> Int in
///     let rows = try ctx.connection().query("SELECT center_id FROM polling_center LIMIT \(limit)")
///     let ids = try rows.map { try $0.decode(Int.self, 0) }
///     ctx.spawn(group(ids.map { signature("assign_stations_for_one_center", .int($0)) }))   // if this succeeds
///     return ids.count
/// }
/// ```
public final class TaskContext: @unchecked Sendable {
    public let jobID: Int64
    public let task: String
    public let attempt: Int
    /// The job's keyword arguments (Celery's kwargs): empty when it has none.
    public let kwargs: [String: JSONValue]
    /// Logs tagged with the pool process (`WARNING/ForkPoolWorker-3`), as Celery shows task output.
    public let logger: Logger
    /// Every task this worker knows (starmap calls through it).
    public let registry: TaskRegistry
    let connectionProvider: () throws -> Connection
    /// Canvases to enqueue in the same transaction that records this task's success.
    public var spawned: [JSONValue] {
        lock.lock()
        defer { lock.unlock() }
        return spawnedCanvases
    }
    private var spawnedCanvases: [JSONValue] = []
    private let lock = NSLock()
    /// When this run's soft time limit passes (Celery's `soft_time_limit`), or nil without one.
    /// Past it an async body is cancelled (`Task.isCancelled`, `CancellationError`); sync code
    /// asks `softTimeLimitExceeded` or calls `checkSoftTimeLimit()`. The hard limit, if any,
    /// still kills the pool process later.
    public let softDeadline: Date?
    /// The soft time limit in seconds, when there is one.
    public let softTimeLimit: Double?

    public init(
        jobID: Int64, task: String, attempt: Int, kwargs: [String: JSONValue] = [:], logger: Logger,
        registry: TaskRegistry, softTimeLimit: Double? = nil, connection: @escaping () throws -> Connection
    ) {
        self.jobID = jobID
        self.task = task
        self.attempt = attempt
        self.kwargs = kwargs
        self.logger = logger
        self.registry = registry
        self.softTimeLimit = softTimeLimit
        self.softDeadline = softTimeLimit.map { Date().addingTimeInterval($0) }
        self.connectionProvider = connection
    }

    /// Whether the soft time limit has passed: sync code checks it between steps and wraps up.
    public var softTimeLimitExceeded: Bool { softDeadline.map { Date() >= $0 } ?? false }

    /// Throws `SoftTimeLimitExceeded` once the soft time limit has passed, as Celery raises it
    /// inside the task.
    public func checkSoftTimeLimit() throws {
        if softTimeLimitExceeded, let softTimeLimit { throw SoftTimeLimitExceeded(seconds: softTimeLimit) }
    }

    /// Ends this run as a retry, as Celery's `self.retry(countdown=…, max_retries=…, exc=…)`: the
    /// job runs again in `countdown` seconds, or fails with `because` when no retry is left.
    /// Nothing the run spawned is enqueued.
    ///
    /// ```swift
    /// } catch let error as Upstream where error.status == 503 {
    ///     try ctx.retry(countdown: 30, maxRetries: 10, because: error)
    /// }
    /// ```
    /// - Parameters:
    ///   - countdown: seconds until the retry; nil lets the task's `RetryPolicy` (or else the
    ///     job's exponential backoff) decide. Clamped to 0…315360000.
    ///   - maxRetries: overrides the task's and the job's `max_retries` for this decision.
    ///   - because: the error the job fails with when the retries are spent.
    /// - Throws: always `TaskRetry`; let it out of the task.
    public func retry(countdown: Double? = nil, maxRetries: Int? = nil, because: (any Error)? = nil) throws -> Never {
        throw TaskRetry(
            countdown: countdown.map(RetryPolicy.clampSeconds),
            maxRetries: maxRetries.map { min(max($0, JobRules.maxRetries.lowerBound), JobRules.maxRetries.upperBound) },
            reason: because.map { ($0 as? TaskError)?.message ?? "\($0)" },
            reasonType: because.map { String(describing: type(of: $0)) })
    }

    /// This pool process's own connection to the application database (opened on first use).
    public func connection() throws -> Connection {
        lock.lock()
        defer { lock.unlock() }
        return try connectionProvider()
    }

    /// Enqueues a canvas when, and only when, this task succeeds: committed together with its
    /// result, so a task that fails or crashes after spawning and is retried leaves no duplicate.
    public func spawn(_ canvas: Canvas) { spawn(json: canvas.json) }

    /// `spawn` for a canvas already in its JSON form.
    public func spawn(json: JSONValue) {
        lock.lock()
        spawnedCanvases.append(json)
        lock.unlock()
    }

    /// Enqueues a canvas at once, on this process's connection, as Celery's `.delay()` does: it
    /// runs even if this task then fails. Prefer `spawn`.
    public func enqueueNow(_ canvas: Canvas) throws -> CanvasHandle { try canvas.enqueue(on: connection()) }
}
