import Foundation
import PGCanvas

/// Two numbers to add.
public struct Pair: Codable, Sendable {
    public var a: Int
    public var b: Int
    public init(a: Int, b: Int) {
        self.a = a
        self.b = b
    }
}

/// What the summary task returns: the total, how many parts it had, and when it was made.
public struct Summary: Codable, Sendable, Equatable {
    public var total: Int
    public var parts: Int
    public var at: Date
}

/// Adds two numbers, after a short nap that shows async code running in a pool process.
public let add = TaskDefinition("hello.add", options: SignatureOptions(maxRetries: 2)) {
    (pair: Pair, context) async throws -> Int in
    try await Task.sleep(nanoseconds: 10_000_000)
    return pair.a + pair.b
}

/// Sums the results of a chord's header.
public let summarize = TaskDefinition("hello.summarize") { (values: [Int], context) async throws -> Summary in
    context.logger.warning("summing \(values.count) parts")
    return Summary(total: values.reduce(0, +), parts: values.count, at: Date())
}

/// Always fails, so the command can show a task's error coming back from `get`.
public let refuse = TaskDefinition("hello.refuse", options: SignatureOptions(maxRetries: 0)) {
    (reason: String, context) async throws -> Int in
    throw TaskError("refused: \(reason)")
}

/// Everything the worker runs.
public let helloTasks: [any WorkerTask] = [add, summarize, refuse]
