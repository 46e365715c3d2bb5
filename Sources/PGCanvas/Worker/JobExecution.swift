import Foundation
import Logging
import Postgres

/// Runs one job's task code and says how the run ended, whichever pool runs it: a pool process
/// sends the report down its result pipe, an in-process pool hands it to the broker thread.
enum JobExecution {
    /// How a run ended, before the broker records it.
    struct Report {
        var kind: Outcome.Kind
        var seconds: Double
        var resultText: String? = nil
        var error: String? = nil
        var spawnText: String? = nil

        func outcome(for job: ClaimedJob) -> Outcome {
            Outcome(
                jobID: job.id, attempt: job.attempt, task: job.task, kind: kind, resultText: resultText, error: error,
                spawnText: spawnText)
        }
    }

    /// What a run needs once its task is known and its arguments are read.
    struct Prepared {
        var definition: RegisteredTask
        var arguments: [JSONValue]
        var context: TaskContext
        var label: String
        var started: UInt64
    }

    enum Preparation {
        case ready(Prepared)
        /// The run cannot start; this is how it ended.
        case done(Report)
    }

    /// Finds the task and reads the arguments. - Returns: what to run, or the report of a run
    /// that cannot start (an unknown task, unreadable arguments: both fail without a retry).
    static func prepare(
        _ job: WireFormat.JobMessage, registry: TaskRegistry, logger: Logger,
        connection: @escaping () throws -> Connection
    ) -> Preparation {
        let started = DispatchTime.now().uptimeNanoseconds
        let label = "\(job.task)[\(job.id)]"
        guard let definition = registry[job.task] else {
            logger.error("Received unregistered task of type '\(job.task)'.", metadata: ["job.id": "\(job.id)"])
            return .done(Report(kind: .fatal, seconds: elapsed(since: started), error: "unknown task '\(job.task)'"))
        }
        var kwargs: [String: JSONValue] = [:]
        let args: [JSONValue]
        do {
            guard let list = try JSONValue(parsingStored: job.argsText).arrayValue else {
                throw CanvasError("arguments are not a JSON array")
            }
            args = list
            if let text = job.kwargsText {
                guard let object = try JSONValue(parsingStored: text).objectValue else {
                    throw CanvasError("keyword arguments are not a JSON object")
                }
                kwargs = object
            }
        } catch {
            let message = "malformed arguments for \(job.task): \(error)"
            logger.error("Task \(label) raised unexpected: \(message)")
            return .done(Report(kind: .fatal, seconds: elapsed(since: started), error: message))
        }
        let context = TaskContext(
            jobID: job.id, task: job.task, attempt: job.attempt, kwargs: kwargs, logger: logger, registry: registry,
            softTimeLimit: job.softTimeLimit, connection: connection)
        return .ready(
            Prepared(definition: definition, arguments: args, context: context, label: label, started: started))
    }

    /// Runs the task on this thread (a typed task's async body is waited for here).
    /// - Parameter onStart: given by a threads pool, which must be able to cancel a typed task's
    ///   async body it gave up on: that body then runs as a task whose handle this receives. A
    ///   pool process needs none (it is killed instead).
    static func run(
        _ job: WireFormat.JobMessage, registry: TaskRegistry, logger: Logger,
        connection: @escaping () throws -> Connection, onStart: ((CancelHandle) -> Void)? = nil
    ) -> Report {
        switch prepare(job, registry: registry, logger: logger, connection: connection) {
        case .done(let report):
            return report
        case .ready(var prepared):
            let result: Result<JSONValue, any Error>
            if let onStart, let body = prepared.definition.runAsync {
                let context = prepared.context
                let arguments = prepared.arguments
                result = Result {
                    try runToCompletion(cancelAt: context.softDeadline, onStart: onStart) {
                        try await TaskExecution.$isTaskCode.withValue(true) { try await body(context, arguments) }
                    }
                }
            } else {
                result = TaskExecution.$isTaskCode.withValue(true) {
                    Result { try prepared.definition.run(&prepared.context, prepared.arguments) }
                }
            }
            return settle(result, prepared, logger: logger)
        }
    }

    /// Runs the task in an async pool: a typed task's async body natively, as a child task the
    /// pool can cancel (its soft time limit, a hard limit, a cancel in the database); any other
    /// body on `blockingQueue`, a thread of the runner's own, because synchronous code may block
    /// and must not hold one of Swift's few cooperative threads.
    /// - Parameter cancelledAtSoftLimit: whether the pool cancelled the body for its soft limit:
    ///   its CancellationError is then reported as SoftTimeLimitExceeded.
    static func runAsync(
        _ job: WireFormat.JobMessage, registry: TaskRegistry, logger: Logger,
        connection: @escaping () throws -> Connection, blockingQueue: DispatchQueue,
        cancelledAtSoftLimit: @escaping @Sendable () -> Bool, started onStart: (CancelHandle) -> Void
    ) async -> Report {
        if registry[job.task]?.neverBlocks == true {
            onStart(CancelHandle {})
            return run(job, registry: registry, logger: logger, connection: connection)
        }
        guard let body = registry[job.task]?.runAsync else {
            onStart(CancelHandle {})
            let connection = UncheckedSendable(connection)
            return await withCheckedContinuation { continuation in
                blockingQueue.async {
                    continuation.resume(
                        returning: run(job, registry: registry, logger: logger, connection: connection.value))
                }
            }
        }
        switch prepare(job, registry: registry, logger: logger, connection: connection) {
        case .done(let report):
            return report
        case .ready(let prepared):
            let context = prepared.context
            let arguments = prepared.arguments
            let child = Task {
                try await TaskExecution.$isTaskCode.withValue(true) { try await body(context, arguments) }
            }
            onStart(CancelHandle { child.cancel() })
            let result = await child.result
            return settle(result, prepared, logger: logger, cancelledAtSoftLimit: cancelledAtSoftLimit())
        }
    }

    /// Turns what the task returned or threw into the report the broker records.
    static func settle(
        _ result: Result<JSONValue, any Error>, _ prepared: Prepared, logger: Logger, cancelledAtSoftLimit: Bool = false
    ) -> Report {
        let seconds = elapsed(since: prepared.started)
        let label = prepared.label
        let context = prepared.context
        switch result {
        case .success(let value):
            let text = value.jsonText
            if logger.logLevel <= .info {
                logger.info("Task \(label) succeeded in \(formatSeconds(seconds))s: \(text)")
            }
            let spawned = context.spawned
            return Report(
                kind: .succeeded, seconds: seconds, resultText: text,
                spawnText: spawned.isEmpty ? nil : JSONValue.array(spawned).jsonText)
        case .failure(let error as PostgresError) where error.isConnectionProblem:
            // The database went away under the task (a restart, a failover): not the task's fault.
            // Retried at once without spending an attempt, bounded like crashes; the next job
            // connects again.
            let message = "the task lost its database connection: \(error)"
            logger.warning("Task \(label) will be retried: \(message)")
            return Report(kind: .crashed, seconds: seconds, error: message)
        case .failure(var error):
            // An async body cancelled at its soft deadline ends in CancellationError: it is the
            // soft time limit that stopped it, and the outcome says so.
            if error is CancellationError, context.softTimeLimitExceeded || cancelledAtSoftLimit,
                let soft = context.softTimeLimit
            {
                error = SoftTimeLimitExceeded(seconds: soft)
            }
            let message = (error as? TaskError)?.message ?? "\(error)"
            let decided =
                RetryDecision.outcome(
                    for: error, policy: prepared.definition.retryPolicy, attempt: context.attempt, message: message)
                ?? defaultOutcome(for: error, message: message)
            // A retry is logged by the supervisor once the broker has decided it (it may refuse:
            // no retries left).
            if decided.kind != .retry { logger.error("Task \(label) raised unexpected: \(message)") }
            return Report(
                kind: decided.kind, seconds: seconds, resultText: withErrorType(decided.resultText, of: error),
                error: decided.error)
        }
    }

    static func elapsed(since started: UInt64) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
    }

    /// A failed run's `result` slot, which only canvas.finish reads, also names the error's Swift
    /// type, for the job's `error_type` and its error callbacks (Celery passes the exception).
    static func typeName(of error: any Error) -> String { String(describing: type(of: error)) }

    static func withErrorType(_ resultText: String?, of error: any Error) -> String {
        var object = resultText.flatMap { try? JSONValue(parsing: $0).objectValue } ?? [:]
        // A retry that runs out fails with its reason (Celery's exc): name that, not TaskRetry.
        let retry = error as? TaskRetry
        object["error_type"] = .string(retry.map { $0.reasonType ?? "MaxRetriesExceededError" } ?? typeName(of: error))
        return JSONValue.object(object).jsonText
    }

    /// Without a retry policy: a time limit fails at once, a `TaskError` says whether it may be
    /// retried, and any other error is left to the broker's default rules.
    static func defaultOutcome(for error: any Error, message: String) -> RetryDecision.Decided {
        if error is SoftTimeLimitExceeded || error is TimeLimitExceeded {
            return RetryDecision.Decided(kind: .timeout, error: message)
        }
        if let taskError = error as? TaskError, !taskError.retryable {
            return RetryDecision.Decided(kind: .fatal, error: message)
        }
        return RetryDecision.Decided(kind: .error, error: message)
    }
}

/// A value handed to another thread that does not say it is Sendable: a task's connection
/// provider, used by one runner at a time.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Stops a running async body (it sees `Task.isCancelled` / `CancellationError`).
struct CancelHandle: Sendable {
    let cancel: @Sendable () -> Void

    init(_ cancel: @escaping @Sendable () -> Void) { self.cancel = cancel }
}

/// Which time limits a run has: the job's own, else its task's, else the worker's.
struct RunLimits: Sendable {
    let registry: TaskRegistry
    /// `--time-limit` and `--soft-time-limit`.
    let defaultHard: Double?
    let defaultSoft: Double?

    func hard(_ job: ClaimedJob) -> Double? { job.timeLimit ?? registry[job.task]?.timeLimit ?? defaultHard }
    func soft(_ job: ClaimedJob) -> Double? {
        job.softTimeLimit ?? registry[job.task]?.softTimeLimit ?? defaultSoft
    }
}

extension WireFormat.JobMessage {
    /// The job as a pool runs it, with the soft limit the supervisor chose for it.
    init(_ job: ClaimedJob, softTimeLimit: Double?) {
        self.init(
            id: job.id, attempt: job.attempt, task: job.task, kwargsText: job.kwargsText, argsText: job.argsText,
            softTimeLimit: softTimeLimit)
    }
}
