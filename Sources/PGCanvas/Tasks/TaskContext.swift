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

    public init(
        jobID: Int64, task: String, attempt: Int, kwargs: [String: JSONValue] = [:], logger: Logger,
        registry: TaskRegistry, connection: @escaping () throws -> Connection
    ) {
        self.jobID = jobID
        self.task = task
        self.attempt = attempt
        self.kwargs = kwargs
        self.logger = logger
        self.registry = registry
        self.connectionProvider = connection
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
