import Foundation

/// How a job should run: Celery's `apply_async` options.
///
/// ```swift
/// let options = JobOptions(queue: "reports", priority: -10, maxRetries: 5, timeLimit: 600)
/// try options.validate()   // CanvasError for a value out of range, as canvas.enqueue would say
/// try Enqueue.job(JobRequest("canvas.add", [1, 2], options: options), on: db)
/// ```
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
    /// Seconds after which the task is told to stop, before the hard `timeLimit` kills it.
    public var softTimeLimit: Double? = nil
    /// A job not started by then is cancelled with reason "expired" (Celery's `expires`).
    public var expires: Expiry? = nil
    /// The result is not stored (Celery's `ignore_result`).
    public var ignoreResult: Bool = false
    /// At most one job with this key waiting or running: enqueueing another gives the first's id.
    public var uniqueKey: String? = nil
    /// With `uniqueKey`: nor within this many seconds of the last one enqueued, whatever its state.
    public var uniqueFor: Double? = nil

    public init(
        queue: String = "default", priority: Int = 0, countdown: Double? = nil, eta: Date? = nil, maxRetries: Int = 3,
        retryBackoff: Double = 1, timeLimit: Double? = nil, softTimeLimit: Double? = nil, expires: Expiry? = nil,
        ignoreResult: Bool = false, uniqueKey: String? = nil, uniqueFor: Double? = nil
    ) {
        self.queue = queue
        self.priority = priority
        self.countdown = countdown
        self.eta = eta
        self.maxRetries = maxRetries
        self.retryBackoff = retryBackoff
        self.timeLimit = timeLimit
        self.softTimeLimit = softTimeLimit
        self.expires = expires
        self.ignoreResult = ignoreResult
        self.uniqueKey = uniqueKey
        self.uniqueFor = uniqueFor
    }

    /// Checks every option against `JobRules`, the same rules `canvas.enqueue` applies.
    /// - Parameter now: the clock an eta is measured from.
    /// - Throws: `CanvasError` with the rule's message, like
    ///   "options.priority: expected an integer from -32768 to 32767".
    public func validate(now: Date = Date()) throws {
        if !JobRules.isName(queue) { throw CanvasError(JobRules.Message.queue) }
        if !JobRules.isPriority(priority) { throw CanvasError(JobRules.Message.priority) }
        if !JobRules.isMaxRetries(maxRetries) { throw CanvasError(JobRules.Message.maxRetries) }
        if let countdown, !JobRules.isCountdown(countdown) { throw CanvasError(JobRules.Message.countdown) }
        if let eta, !JobRules.isEta(eta, now: now) { throw CanvasError(JobRules.Message.eta) }
        if let timeLimit, !JobRules.isTimeLimit(timeLimit) { throw CanvasError(JobRules.Message.timeLimit) }
        if !JobRules.isRetryBackoff(retryBackoff) { throw CanvasError(JobRules.Message.retryBackoff) }
        if let softTimeLimit {
            if !JobRules.isTimeLimit(softTimeLimit) { throw CanvasError(JobRules.Message.softTimeLimit) }
            if let timeLimit, !(softTimeLimit < timeLimit) { throw CanvasError(JobRules.Message.softTimeLimitOrder) }
        }
        switch expires {
        case .after(let seconds) where !JobRules.isCountdown(seconds):
            throw CanvasError(JobRules.Message.expiresSeconds)
        case .at(let time) where !JobRules.isEta(time, now: now): throw CanvasError(JobRules.Message.expiresTime)
        default: break
        }
        if let uniqueKey, !JobRules.isName(uniqueKey) { throw CanvasError(JobRules.Message.uniqueKey) }
        if let uniqueFor {
            if !JobRules.isCountdown(uniqueFor) { throw CanvasError(JobRules.Message.uniqueFor) }
            if uniqueKey == nil { throw CanvasError(JobRules.Message.uniqueForAlone) }
        }
    }

    /// The options in their JSON form (docs/canvas.md), as `canvas.enqueue(options => …)` takes them.
    var json: JSONValue {
        var o: [String: JSONValue] = [
            "queue": .string(queue), "priority": .int(priority), "max_retries": .int(maxRetries),
            "retry_backoff": .double(retryBackoff),
        ]
        if let countdown { o["countdown"] = .double(countdown) }
        if let eta { o["eta"] = .string(JobOptions.timeText(eta)) }
        if let timeLimit { o["time_limit"] = .double(timeLimit) }
        if let softTimeLimit { o["soft_time_limit"] = .double(softTimeLimit) }
        if let expires { o["expires"] = expires.json }
        if ignoreResult { o["ignore_result"] = .bool(true) }
        if let uniqueKey { o["unique_key"] = .string(uniqueKey) }
        if let uniqueFor { o["unique_for"] = .double(uniqueFor) }
        return .object(o)
    }

    /// ISO 8601 with milliseconds and a zone: the form the SQL checks accept.
    static func timeText(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: date)
    }
}

/// When a job that has not started stops being worth running (Celery's `expires`).
public enum Expiry: Sendable, Hashable {
    /// Seconds after it is enqueued.
    case after(Double)
    case at(Date)

    var json: JSONValue {
        switch self {
        case .after(let seconds): .double(seconds)
        case .at(let time): .string(JobOptions.timeText(time))
        }
    }
}

/// One job to enqueue: a task name, its positional arguments, and options.
///
/// ```swift
/// let id = try Enqueue.job(JobRequest("canvas.add", [1, 2], options: JobOptions(queue: "math", countdown: 5)), on: db)
/// ```
public struct JobRequest: Sendable, Hashable {
    public var task: String
    public var args: [JSONValue]
    /// Keyword arguments (Celery's kwargs); the task reads them from `TaskContext.kwargs`.
    public var kwargs: [String: JSONValue]
    public var options: JobOptions

    public init(
        _ task: String, _ args: [JSONValue] = [], kwargs: [String: JSONValue] = [:], options: JobOptions = JobOptions()
    ) {
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.options = options
    }

    /// Checks the task name, the options and that every argument can be written as JSON.
    /// - Throws: `CanvasError` with the message of the first rule broken.
    public func validate(now: Date = Date()) throws {
        if !JobRules.isName(task) { throw CanvasError(JobRules.Message.task) }
        try options.validate(now: now)
        for (i, arg) in args.enumerated() { try JobRules.checkFinite(arg, at: "args[\(i)]") }
        try JobRules.checkFinite(.object(kwargs), at: "kwargs")
    }
}

/// A canvas-level mistake: bad options, a malformed canvas, waiting inside a task.
///
/// ```swift
/// let link = signature("canvas.add", 10, options: SignatureOptions(priority: 99_999))
/// do { try chain([signature("canvas.add", 1, 2), link]).validate() } catch let error as CanvasError {
///     print(error)   // chain[1].options.priority: expected an integer from -32768 to 32767
/// }
/// ```
public struct CanvasError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
