import Foundation
import Logging
import Testing

@testable import PGCanvas

/// Typed tasks as a worker runs them: JSON arguments in, the async body, a JSON result out.
@Suite struct TypedTaskTests {
    struct Inner: Codable, Sendable, Equatable {
        var tags: [String]
        var weight: Double?
    }

    struct Order: Codable, Sendable, Equatable {
        var id: Int64
        var big: Int64
        var note: String?
        var placed: Date
        var items: [Inner]
        var extra: [String: Int]
    }

    /// Runs a registered task the way a pool process does, in this process: on a thread of its own
    /// (a pool process's main thread), never on one of Swift's cooperative threads, which the
    /// task's async body needs free.
    func run(_ task: any WorkerTask, _ args: [JSONValue]) async throws -> JSONValue {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try Self.runBlocking(task, args) }) }.start()
        }
    }

    static func runBlocking(_ task: any WorkerTask, _ args: [JSONValue]) throws -> JSONValue {
        var registry = TaskRegistry(includingBuiltins: false)
        task.register(into: &registry)
        let name = registry.names[0]
        let context = TaskContext(
            jobID: 1, task: name, attempt: 1, logger: Logger(label: "test"), registry: registry,
            connection: { throw CanvasError("no database in this test") })
        var inout_ = context
        return try registry[name]!.run(&inout_, args)
    }

    @Test func argumentsAndResultsRoundTripThroughJSON() async throws {
        let echo = TaskDefinition("t.echo") { (order: Order, _) async throws -> Order in order }
        let order = Order(
            id: 7, big: Int64.max - 1, note: nil, placed: Date(timeIntervalSince1970: 1_764_000_000.125),
            items: [Inner(tags: ["a", "ü", "\t"], weight: 2.5), Inner(tags: [], weight: nil)],
            extra: ["x": -1])
        let wire = try TypedJSON.encode(order)
        let back = try await run(echo, [wire])
        #expect(try TypedJSON.decode(Order.self, from: back) == order)
        // Dates travel as ISO 8601 text, readable from any language.
        #expect(wire.objectValue?["placed"] == .string("2025-11-24T16:00:00.125Z"))
        // The signature carries the encoded arguments and the definition's options.
        let canvas = try echo.signature(order)
        guard case .signature(let s) = canvas else { throw CanvasError("not a signature") }
        #expect(s.task == "t.echo" && s.args == [wire])
    }

    @Test func anAsyncBodyThatAwaitsRunsToCompletion() async throws {
        let slow = TaskDefinition("t.slow") { (n: Int, _) async throws -> [Int] in
            try await Task.sleep(nanoseconds: 20_000_000)
            return Array(0..<n)
        }
        let started = Date()
        #expect(try await run(slow, [.int(3)]) == .array([.int(0), .int(1), .int(2)]))
        #expect(Date().timeIntervalSince(started) >= 0.02)
    }

    @Test func aChordBodyReadsThePreviousResultAsItsArguments() async throws {
        let total = TaskDefinition("t.total") { (values: [Int], _) async throws -> Int in values.reduce(0, +) }
        // What a chord body receives: one argument, the list of results.
        #expect(try await run(total, [.array([.int(1), .int(2), .int(3)])]) == .int(6))
    }

    @Test func errorsKeepTheTaskMessageAndBadArgumentsAreNotRetried() async throws {
        let failing = TaskDefinition("t.fail") { (_: Int, _) async throws -> Int in throw TaskError("no luck") }
        let error = try await #require(throws: TaskError.self) { try await run(failing, [.int(1)]) }
        #expect(error.message == "no luck" && error.retryable)
        let wrong = try await #require(throws: TaskError.self) { try await run(failing, [.string("one")]) }
        #expect(wrong.message.hasPrefix("t.fail cannot read its arguments"))
        #expect(!wrong.retryable)
    }

    @Test func aTypedStarmapRunsTheTaskForEachArgument() async throws {
        let double = TaskDefinition("t.double") { (n: Int, _) async throws -> Int in 2 * n }
        guard case .starmap(let task, let lists, _, _) = try double.starmap([1, 2, 3]) else {
            throw CanvasError("not a starmap")
        }
        #expect(task == "t.double" && lists == [[.int(1)], [.int(2)], [.int(3)]])
        // canvas.starmap, the built-in job a starmap becomes, calls the typed task for each list.
        let result = try await withCheckedThrowingContinuation { continuation in
            Thread {
                continuation.resume(
                    with: Result {
                        var registry = TaskRegistry()
                        double.register(into: &registry)
                        var context = TaskContext(
                            jobID: 1, task: "canvas.starmap", attempt: 1, logger: Logger(label: "test"),
                            registry: registry, connection: { throw CanvasError("no database") })
                        return try registry["canvas.starmap"]!.run(
                            &context, [.string("t.double"), .array(lists.map { .array($0) })])
                    })
            }.start()
        }
        #expect(result == .array([.int(2), .int(4), .int(6)]))
    }

    @Test func optionsGivenAtTheCallOverrideTheDefaultsFieldByField() throws {
        let task = TaskDefinition("t.merge", options: SignatureOptions(queue: "slow", maxRetries: 7, timeLimit: 5)) {
            (_: Int, _) async throws -> Int in 0
        }
        guard case .signature(let s) = try task.signature(1, options: SignatureOptions(queue: "fast")) else {
            throw CanvasError("not a signature")
        }
        #expect(s.options.queue == "fast" && s.options.maxRetries == 7 && s.options.timeLimit == 5)
    }

    @Test func datesWithoutFractionsAreReadToo() throws {
        struct Stamp: Codable, Equatable { var at: Date }
        let read = try TypedJSON.decode(Stamp.self, from: .object(["at": .string("2026-11-26T06:00:00Z")]))
        #expect(read.at == Date(timeIntervalSince1970: 1_795_672_800))
    }

    @Test func definitionOptionsAreTheSignaturesDefaultsAndTheWorkersTimeLimit() throws {
        let limited = TaskDefinition("t.limited", options: SignatureOptions(queue: "slow", timeLimit: 5)) {
            (_: Int, _) async throws -> Int in 0
        }
        guard case .signature(let s) = try limited.signature(1) else { throw CanvasError("not a signature") }
        #expect(s.options.queue == "slow")
        var registry = TaskRegistry(includingBuiltins: false)
        limited.register(into: &registry)
        #expect(registry["t.limited"]?.timeLimit == 5)
    }
}
