import Dispatch
import Foundation
import Postgres

/// Anything a worker can run: a `TaskDefinition`, or a task an application registers by hand.
///
/// ```swift
/// struct Echo: WorkerTask {
///     func register(into registry: inout TaskRegistry) {
///         registry.register("legacy.echo") { _, args in .array(args) }
///     }
/// }
/// await PGWorker.main(tasks: [add, Echo()])
/// ```
public protocol WorkerTask: Sendable {
    /// Adds the task to a worker's registry.
    func register(into registry: inout TaskRegistry)
}

/// A task defined once, with Codable arguments and result and an async body. The same value
/// runs in a worker, makes typed signatures for any canvas, enqueues, and reads results back.
///
/// ```swift
/// struct Pair: Codable, Sendable { var a: Int; var b: Int }
/// let add = TaskDefinition("math.add") { (pair: Pair, ctx) async throws -> Int in pair.a + pair.b }
/// let total = TaskDefinition("math.total") { (values: [Int], ctx) async throws -> Int in values.reduce(0, +) }
///
/// let handle = try chord([add.signature(Pair(a: 1, b: 2)), add.signature(Pair(a: 3, b: 4))],
///                        body: total.signature()).enqueue(on: db)
/// let sum: Int = try await total.result(of: handle, on: db)   // 10
/// ```
///
/// On the wire a typed task takes one JSON argument, its `Arguments` encoded. When it runs after
/// another (a chain link, a chord body), the previous result comes first: `Arguments` is then
/// decoded from that result when the signature has no arguments of its own (`signature()`), or
/// from the list of both.
public struct TaskDefinition<Arguments: Codable & Sendable, Output: Codable & Sendable>: WorkerTask {
    public let name: String
    /// Defaults for every signature and enqueue of this task (queue, priority, retries, time limit).
    public var options: SignatureOptions
    /// Which errors retry automatically, how often and how far apart; nil keeps the broker's
    /// default (docs/retries.md).
    public var retryPolicy: RetryPolicy?
    let body: @Sendable (Arguments, TaskContext) async throws -> Output

    /// - Parameters:
    ///   - name: the task's name on the wire (`"math.add"`): 1 to 200 characters, no control characters.
    ///   - options: defaults for its signatures; `timeLimit` and `softTimeLimit` are also enforced
    ///     by the worker for jobs that do not carry their own.
    ///   - retry: the task's retry policy (Celery's `autoretry_for`, `retry_backoff`, …).
    ///   - body: the task's code; what it throws fails the run (retried as `retry` or the default
    ///     says). It is cancelled when its soft time limit passes.
    public init(
        _ name: String, options: SignatureOptions = SignatureOptions(), retry: RetryPolicy? = nil,
        _ body: @escaping @Sendable (Arguments, TaskContext) async throws -> Output
    ) {
        self.name = name
        self.options = options
        self.retryPolicy = retry
        self.body = body
    }

    /// A signature with these arguments, for any canvas. `options` override the definition's
    /// defaults field by field.
    /// - Throws: `CanvasError` when the arguments cannot be encoded as JSON.
    public func signature(_ arguments: Arguments, options: SignatureOptions? = nil) throws -> Canvas {
        .signature(Signature(name, [try TypedJSON.encode(arguments)], options: merged(options)))
    }

    /// The definition's defaults, with what `overrides` sets in their place.
    func merged(_ overrides: SignatureOptions?) -> SignatureOptions {
        guard let overrides else { return options }
        var o = options
        o.queue = overrides.queue ?? o.queue
        o.priority = overrides.priority ?? o.priority
        o.countdown = overrides.countdown ?? o.countdown
        o.maxRetries = overrides.maxRetries ?? o.maxRetries
        o.retryBackoff = overrides.retryBackoff ?? o.retryBackoff
        o.timeLimit = overrides.timeLimit ?? o.timeLimit
        o.softTimeLimit = overrides.softTimeLimit ?? o.softTimeLimit
        o.immutable = overrides.immutable || o.immutable
        o.expires = overrides.expires ?? o.expires
        o.ignoreResult = overrides.ignoreResult || o.ignoreResult
        o.uniqueKey = overrides.uniqueKey ?? o.uniqueKey
        o.uniqueFor = overrides.uniqueFor ?? o.uniqueFor
        return o
    }

    /// A signature without arguments of its own: a chain link or chord body whose `Arguments`
    /// is the previous result.
    public func signature(options: SignatureOptions? = nil) -> Canvas {
        .signature(Signature(name, [], options: merged(options)))
    }

    /// A starmap: one job that runs this task for each of `arguments`, in order; its result is
    /// the list of their results (`[Output]`).
    public func starmap(_ arguments: [Arguments], options: SignatureOptions? = nil) throws -> Canvas {
        .starmap(
            task: name, argumentLists: try arguments.map { [try TypedJSON.encode($0)] },
            options: merged(options), onError: nil)
    }

    /// Enqueues one job (as a canvas of one signature).
    /// - Returns: a handle whose `get` gives the typed result.
    public func enqueue(_ arguments: Arguments, options: SignatureOptions? = nil, on c: Connection) async throws
        -> TaskHandle<Output>
    {
        TaskHandle(canvas: try signature(arguments, options: options).enqueue(on: c))
    }

    /// The typed result of a canvas that ends with this task (its last link, or a chord's body).
    public func result(of handle: CanvasHandle, on c: Connection, timeout: Double = .infinity) async throws
        -> Output
    {
        try await TaskHandle<Output>(canvas: handle).get(on: c, timeout: timeout)
    }

    /// What `Arguments` is decoded from: the one positional argument (or the list of them), or,
    /// for a call by keyword arguments only, their object (`{"a": 1, "b": 2}` for `Pair`).
    static func argumentValue(_ args: [JSONValue], _ kwargs: [String: JSONValue]) throws -> JSONValue {
        if kwargs.isEmpty { return args.count == 1 ? args[0] : .array(args) }
        if args.isEmpty { return .object(kwargs) }
        throw CanvasError("give either positional or keyword arguments to a typed task, not both")
    }

    public func register(into registry: inout TaskRegistry) {
        let body = self.body
        let name = self.name
        @Sendable func decode(_ args: [JSONValue], _ context: TaskContext) throws -> Arguments {
            do {
                return try TypedJSON.decode(Arguments.self, from: Self.argumentValue(args, context.kwargs))
            } catch {
                throw TaskError("\(name) cannot read its arguments: \(error)", retryable: false)
            }
        }
        @Sendable func encode(_ output: Output) throws -> JSONValue {
            do {
                return try TypedJSON.encode(output)
            } catch {
                // The same result would fail the same way on every retry.
                throw TaskError("\(name) returned a result that cannot be written as JSON: \(error)", retryable: false)
            }
        }
        var task = RegisteredTask(
            name, timeLimit: options.timeLimit, softTimeLimit: options.softTimeLimit, retry: retryPolicy
        ) { context, args in
            let arguments = try decode(args, context)
            let output = try runToCompletion(cancelAt: context.softDeadline) { [context] in
                try await body(arguments, context)
            }
            return try encode(output)
        }
        task.runAsync = { context, args in try encode(try await body(try decode(args, context), context)) }
        registry.register(task)
    }
}

/// A typed job or canvas handle: waits for the canvas to end and decodes its result.
///
/// ```swift
/// let handle: TaskHandle<Int> = try await add.enqueue(Pair(a: 1, b: 2), on: db)
/// let sum = try await handle.get(on: db, timeout: 30)   // 3; TaskFailure if the task failed
/// ```
public struct TaskHandle<Output: Codable & Sendable>: Sendable {
    public let canvas: CanvasHandle
    public var id: Int64 { canvas.id }

    public init(canvas: CanvasHandle) { self.canvas = canvas }

    /// Waits for the result. Refused inside a task, as Celery refuses `result.get()` there.
    /// - Throws: `TaskFailure` with the task's error when the canvas failed or was cancelled;
    ///   `CanvasError` when `timeout` seconds pass first or the result does not decode.
    public func get(on c: Connection, timeout: Double = .infinity) async throws -> Output {
        try TaskExecution.refuseInsideTask()
        let deadline = Date().addingTimeInterval(timeout)
        var interval = 0.005
        while true {
            guard let status = try CanvasStatus.fetch(canvas.id, on: c) else {
                throw CanvasError("no canvas with id \(canvas.id)")
            }
            switch status.state {
            case .succeeded:
                do {
                    return try TypedJSON.decode(Output.self, from: status.result ?? .null)
                } catch {
                    throw CanvasError("the result of \(canvas.id) is not a \(Output.self): \(error)")
                }
            case .failed, .cancelled:
                throw TaskFailure(id: canvas.id, message: status.error ?? status.state.rawValue)
            case .pending:
                if Date() >= deadline { throw CanvasError("\(canvas.id) did not finish within \(timeout) s") }
                try await Task.sleep(nanoseconds: UInt64(min(interval, max(0, deadline.timeIntervalSinceNow)) * 1e9))
                interval = min(interval * 1.5, 0.1)
            }
        }
    }
}

/// A task's own failure, as `get` reports it: its message is what the task threw.
///
/// ```swift
/// let handle = TaskHandle<Int>(canvas: try signature("canvas.fail", "disk full").enqueue(on: db))
/// do { _ = try await handle.get(on: db) } catch let failure as TaskFailure {
///     print(failure.id, failure.message)   // handle.id, and the error the task threw ("disk full")
/// }
/// ```
public struct TaskFailure: Error, CustomStringConvertible, Sendable {
    public var id: Int64
    public var message: String
    public var description: String { message }
}

/// Codable values to and from the JSON the queue stores. Dates travel as ISO 8601 text with
/// milliseconds, which other languages read; text without fractions is read too.
enum TypedJSON {
    static func encode<T: Encodable>(_ value: T) throws -> JSONValue {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(formatter().string(from: date))
        }
        let data: Data
        do {
            data = try encoder.encode(value)
        } catch {
            throw CanvasError("cannot encode \(T.self) as JSON: \(error)")
        }
        return try JSONValue(parsing: String(decoding: data, as: UTF8.self))
    }

    static func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = formatter().date(from: text) ?? ISO8601DateFormatter().date(from: text) else {
                throw DecodingError.dataCorrupted(
                    .init(codingPath: decoder.codingPath, debugDescription: "not an ISO 8601 time: \(text)"))
            }
            return date
        }
        return try decoder.decode(T.self, from: Data(value.jsonText.utf8))
    }

    static func formatter() -> ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }
}

/// Runs async task code to completion from a pool process's synchronous run loop. The pool
/// process runs one job at a time on its main thread; the task runs on Swift's global executor
/// meanwhile, and the main thread waits for it.
/// - Parameters:
///   - cancelAt: the soft deadline: past it the task is cancelled (and still waited for; the hard
///     time limit is the supervisor's).
///   - onStart: receives a handle that cancels the task (a threads pool cancels a run it gave up on).
func runToCompletion<T: Sendable>(
    cancelAt deadline: Date? = nil, onStart: (CancelHandle) -> Void = { _ in },
    _ body: @escaping @Sendable () async throws -> T
) throws -> T {
    let box = CompletionBox<T>()
    let done = DispatchSemaphore(value: 0)
    let task = Task {
        do {
            box.result = .success(try await body())
        } catch {
            box.result = .failure(error)
        }
        done.signal()
    }
    onStart(CancelHandle { task.cancel() })
    if let deadline {
        let wait = DispatchTime.now() + max(0, deadline.timeIntervalSinceNow)
        if done.wait(timeout: wait) == .timedOut {
            task.cancel()
            done.wait()
        }
    } else {
        done.wait()
    }
    return try box.result!.get()
}

/// The outcome of `runToCompletion`'s task. `@unchecked Sendable`: written once by the task
/// before it signals the semaphore, read once by the waiting thread after it.
final class CompletionBox<T>: @unchecked Sendable {
    var result: Result<T, Error>?
}
