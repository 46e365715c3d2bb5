import Logging

/// What a task function receives besides its arguments.
public typealias TaskFunction = @Sendable (inout TaskContext, [JSONValue]) throws -> JSONValue

/// A registered task: its name, its code, and its own time limit if it has one.
public struct TaskDefinition: Sendable {
    public var name: String
    public var timeLimit: Double?
    public var run: TaskFunction

    public init(_ name: String, timeLimit: Double? = nil, run: @escaping TaskFunction) {
        self.name = name
        self.timeLimit = timeLimit
        self.run = run
    }
}

/// The tasks a worker can run, by name. Every worker registers the built-in `canvas.*` tasks.
public struct TaskRegistry: Sendable {
    private var tasks: [String: TaskDefinition] = [:]

    public init(includingBuiltins: Bool = true) {
        if includingBuiltins { BuiltinTasks.register(into: &self) }
    }

    public mutating func register(_ definition: TaskDefinition) {
        tasks[definition.name] = definition
    }

    public mutating func register(_ name: String, timeLimit: Double? = nil, _ run: @escaping TaskFunction) {
        register(TaskDefinition(name, timeLimit: timeLimit, run: run))
    }

    /// Work a pool process does once when it starts, before its first job (loading fonts, say),
    /// so the first job does not pay for it.
    public private(set) var warmUps: [@Sendable () -> Void] = []

    public mutating func onPoolProcessStart(_ warmUp: @escaping @Sendable () -> Void) { warmUps.append(warmUp) }

    public subscript(name: String) -> TaskDefinition? { tasks[name] }
    public var names: [String] { tasks.keys.sorted() }
}

/// A failure a task reports. `retryable: false` fails the job at once (bad arguments).
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
