import Foundation
import PGCanvas
import PGCanvasWorker

/// A pgworker with tasks whose retry policies and time limits the integration tests need
/// (RetryTests): the real worker command line and runtime, with these tasks beside the built-ins.

struct Transient: Error, CustomStringConvertible {
    var description: String { "Transient: try again" }
}

struct Permanent: Error, CustomStringConvertible {
    var description: String { "Permanent: never works" }
}

struct Failure: Codable, Sendable {
    /// "transient" (named by the policy) or "permanent" (not named).
    var kind: String
}

/// Autoretry for `Transient` only, at most 2 retries, backoff from 0.05 s capped at 0.1 s.
let flaky = TaskDefinition(
    "test.autoretry",
    retry: RetryPolicy(autoretryFor: [Transient.self], maxRetries: 2, backoff: 0.05, backoffMax: 0.1)
) { (failure: Failure, ctx) async throws -> Int in
    if failure.kind == "transient" { throw Transient() }
    throw Permanent()
}

/// Retries its time limits: the second run is killed too, and then the job fails.
let slowButRetried = TaskDefinition(
    "test.hard_limit_retried", options: SignatureOptions(timeLimit: 0.5),
    retry: RetryPolicy(autoretryFor: [TimeLimitExceeded.self], maxRetries: 1, backoff: 0, jitter: false)
) { (seconds: Double, ctx) async throws -> Int in
    // Blocks its thread, as CPU-bound code would: only the supervisor's kill ends it.
    usleep(UInt32(min(seconds, 4000) * 1e6))
    return 0
}

/// An async body past its soft limit is cancelled; it does not catch the CancellationError.
let softAsync = TaskDefinition(
    "test.soft_async", options: SignatureOptions(timeLimit: 20, softTimeLimit: 0.5)
) { (seconds: Double, ctx) async throws -> String in
    try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
    return "slept"
}

/// A typed body asks for a retry until its run's attempt reaches `n`, then returns the attempt.
let retryTyped = TaskDefinition("test.retry_typed") { (n: Int, ctx) async throws -> Int in
    if ctx.attempt < n { try ctx.retry(countdown: 0.05, because: Transient()) }
    return ctx.attempt
}

/// An async body that blocks its thread and ignores cancellation: in an in-process pool it holds
/// one of Swift's cooperative threads until it returns.
let blockTyped = TaskDefinition("test.block_typed") { (seconds: Double, ctx) async throws -> Int in
    usleep(UInt32(min(seconds, 4000) * 1e6))
    return 0
}

var registry = TaskRegistry()
registry.register([flaky, slowButRetried, softAsync, retryTyped, blockTyped])

// [countdown, max_retries, message, succeed_on_attempt]: asks for a retry (Celery's
// self.retry(countdown=…, max_retries=…, exc=…)) until the run's attempt reaches the last
// argument, then returns the attempt. A countdown or max_retries of null leaves it unset.
registry.register("test.retry") { ctx, args in
    let succeedOn = args.count > 3 ? args[3].intValue : nil
    if let succeedOn, ctx.attempt >= succeedOn { return .int(ctx.attempt) }
    try ctx.retry(
        countdown: args.first?.doubleValue, maxRetries: args.count > 1 ? args[1].intValue : nil,
        because: args.count > 2 ? args[2].stringValue.map { TaskError($0) } : nil)
}

// Sync code under a soft limit: works in small steps until told the limit passed, then returns
// what it got done and how far past its deadline it noticed.
registry.register("test.soft_sync") { ctx, args in
    guard let deadline = ctx.softDeadline else { return .string("no soft deadline") }
    var steps = 0
    while !ctx.softTimeLimitExceeded {
        Thread.sleep(forTimeInterval: 0.01)
        steps += 1
    }
    return .object([
        "stopped": .string("soft time limit exceeded"), "steps": .int(steps),
        "late": .double(Date().timeIntervalSince(deadline)),
    ])
}

// Sync code that checks in the Celery way: SoftTimeLimitExceeded is thrown into it.
registry.register("test.soft_check") { ctx, _ in
    while true {
        try ctx.checkSoftTimeLimit()
        Thread.sleep(forTimeInterval: 0.01)
    }
}

// Uses the application database (ConnectionBudgetTests): returns the server process that served it.
registry.register("test.db_backend") { ctx, _ in
    .int(Int(try ctx.connection().query("SELECT pg_backend_pid()")[0].decode(Int32.self, 0)))
}

// Blocks its thread for [seconds], deaf to cancellation, as CPU-bound code is: in an in-process
// pool only the settling of its run (time limit, cancel) ends its hold on the job.
registry.register("test.block") { _, args in
    Thread.sleep(forTimeInterval: args.first?.doubleValue ?? 1)
    return .string("finished")
}

// Waits for a job's result inside a task: refused in every pool, as Celery refuses result.get().
registry.register("test.wait_inside") { ctx, args in
    guard let id = args.first?.intValue else { throw TaskError.badArguments("test.wait_inside", "a job id") }
    return .string("\(try JobStatus.wait(for: Int64(id), on: try ctx.connection(), timeout: 1).state)")
}

PGWorker.main(registry: registry)
