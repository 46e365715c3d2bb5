import Foundation

/// How a job should run: Celery's `apply_async` options.
public struct JobOptions: Sendable, Hashable {
    public var queue: String = "default"
    /// Lower runs first.
    public var priority: Int = 0
    /// Seconds to wait before the job may start (Celery's `countdown`).
    public var countdown: Double? = nil
    /// The earliest time the job may start (Celery's `eta`); wins over `countdown`.
    public var eta: Date? = nil
    /// Retries after an error (Celery's `max_retries`): the job runs at most maxRetries + 1 times.
    public var maxRetries: Int = 3
    /// Seconds before the first retry, doubled for each further one.
    public var retryBackoff: Double = 1
    /// Seconds a run may take before its pool process is killed.
    public var timeLimit: Double? = nil

    public init(
        queue: String = "default", priority: Int = 0, countdown: Double? = nil, eta: Date? = nil, maxRetries: Int = 3,
        retryBackoff: Double = 1, timeLimit: Double? = nil
    ) {
        self.queue = queue
        self.priority = priority
        self.countdown = countdown
        self.eta = eta
        self.maxRetries = maxRetries
        self.retryBackoff = retryBackoff
        self.timeLimit = timeLimit
    }

    /// - Throws: `CanvasError` for values the broker would refuse.
    public func validate() throws {
        if queue.isEmpty { throw CanvasError("the queue name must not be empty") }
        if maxRetries < 0 { throw CanvasError("max retries must be 0 or more, not \(maxRetries)") }
        if let countdown, countdown < 0 || !countdown.isFinite {
            throw CanvasError("countdown must be 0 or more seconds, not \(countdown)")
        }
        if retryBackoff < 0 || !retryBackoff.isFinite {
            throw CanvasError("retry backoff must be 0 or more seconds, not \(retryBackoff)")
        }
        if let timeLimit, timeLimit <= 0 || !timeLimit.isFinite {
            throw CanvasError("the time limit must be more than 0 seconds, not \(timeLimit)")
        }
    }
}

/// One job to enqueue: a task name, its positional arguments, and options.
public struct JobRequest: Sendable, Hashable {
    public var task: String
    public var args: [JSONValue]
    public var options: JobOptions

    public init(_ task: String, _ args: [JSONValue] = [], options: JobOptions = JobOptions()) {
        self.task = task
        self.args = args
        self.options = options
    }
}

/// A canvas-level mistake: bad options, a malformed canvas, waiting inside a task.
public struct CanvasError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
