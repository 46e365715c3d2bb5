import Logging

/// What a task function receives besides its arguments.
///
/// ```swift
/// let double: TaskFunction = { ctx, args in
///     guard let n = args.first?.intValue else { throw TaskError.badArguments(ctx.task, "one integer") }
///     return .int(n * 2)
/// }
/// registry.register("math.double", double)
/// ```
public typealias TaskFunction = @Sendable (inout TaskContext, [JSONValue]) throws -> JSONValue

/// A task's code as an async function, run natively by an async pool.
public typealias AsyncTaskFunction = @Sendable (TaskContext, [JSONValue]) async throws -> JSONValue

/// A task as a worker holds it: its name, its code on JSON values, its own time limits and retry
/// policy if it has them. `TaskDefinition` (typed) and `register(_:_:)` (untyped) both end up as one.
///
/// ```swift
/// var registry = TaskRegistry()
/// registry.register(RegisteredTask("report.slow", timeLimit: 300) { ctx, args in .string("done") })
/// registry["report.slow"]?.timeLimit   // 300
/// ```
public struct RegisteredTask: Sendable {
    public var name: String
    public var timeLimit: Double?
    /// Seconds after which the run is told to stop (a job's own `soft_time_limit` wins).
    public var softTimeLimit: Double?
    /// Which errors retry and when; nil keeps the broker's default (docs/retries.md).
    public var retryPolicy: RetryPolicy?
    public var run: TaskFunction
    /// The task's async body, when it has one (typed tasks): `--pool async` awaits it as it is,
    /// where the other pools wait for `run`.
    public var runAsync: AsyncTaskFunction?
    /// Its synchronous body never blocks and returns at once (pure computation): an async pool
    /// runs it where it is, with no hop to another thread or task.
    public var neverBlocks = false

    public init(
        _ name: String, timeLimit: Double? = nil, softTimeLimit: Double? = nil, retry: RetryPolicy? = nil,
        run: @escaping TaskFunction
    ) {
        self.name = name
        self.timeLimit = timeLimit
        self.softTimeLimit = softTimeLimit
        self.retryPolicy = retry
        self.run = run
    }
}

/// The tasks a worker can run, by name. Every worker registers the built-in `canvas.*` tasks.
///
/// ```swift
/// var registry = TaskRegistry()
/// registry.register([add, total])                                   // typed TaskDefinitions
/// registry.register("legacy.echo") { ctx, args in .array(args) }   // untyped: JSON in, JSON out
/// PGWorker.main(registry: registry)
/// ```
public struct TaskRegistry: Sendable {
    private var tasks: [String: RegisteredTask] = [:]

    public init(includingBuiltins: Bool = true) {
        if includingBuiltins { BuiltinTasks.register(into: &self) }
    }

    public mutating func register(_ task: RegisteredTask) {
        tasks[task.name] = task
    }

    /// Registers an untyped task: JSON values in, a JSON value out.
    /// - Parameters:
    ///   - softTimeLimit: seconds after which the run is told to stop (`ctx.softTimeLimitExceeded`).
    ///   - retry: which errors retry automatically, how often and how far apart.
    public mutating func register(
        _ name: String, timeLimit: Double? = nil, softTimeLimit: Double? = nil, retry: RetryPolicy? = nil,
        _ run: @escaping TaskFunction
    ) {
        register(RegisteredTask(name, timeLimit: timeLimit, softTimeLimit: softTimeLimit, retry: retry, run: run))
    }

    /// Registers tasks defined with `TaskDefinition` (or anything else a worker can run).
    public mutating func register(_ tasks: [any WorkerTask]) {
        for task in tasks { task.register(into: &self) }
    }

    /// Work a pool process does once when it starts, before its first job (loading fonts, say),
    /// so the first job does not pay for it; an in-process pool does it once, in the supervisor.
    public private(set) var warmUps: [@Sendable () -> Void] = []

    public mutating func onPoolProcessStart(_ warmUp: @escaping @Sendable () -> Void) { warmUps.append(warmUp) }

    public subscript(name: String) -> RegisteredTask? { tasks[name] }
    public var names: [String] { tasks.keys.sorted() }
}

/// A failure a task reports. `retryable: false` fails the job at once (bad arguments).
///
/// ```swift
/// registry.register("math.sqrt") { ctx, args in
///     guard let x = args.first?.doubleValue else { throw TaskError.badArguments("math.sqrt", "one number") }
///     guard x >= 0 else { throw TaskError("math.sqrt of \(x)", retryable: false) }   // fails the job at once
///     return .double(x.squareRoot())
/// }
/// ```
public struct TaskError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var retryable: Bool

    public init(_ message: String, retryable: Bool = true) {
        self.message = message
        self.retryable = retryable
    }

    /// Arguments that can never work: retrying would not help.
    public static func badArguments(_ task: String, _ expected: String) -> TaskError {
        TaskError("\(task) expects \(expected)", retryable: false)
    }

    public var description: String { message }
}
