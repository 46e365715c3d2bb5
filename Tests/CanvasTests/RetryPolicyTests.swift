import Foundation
import Logging
import Postgres
import TestSupport
import Testing

@testable import PGCanvas

/// Retry policies without a database: Celery's backoff formula, which errors a policy retries,
/// what a task's `ctx.retry` and its soft deadline turn into.
@Suite struct RetryPolicyTests {
    struct Transient: Error {}
    struct Permanent: Error {}
    class BaseError: Error, @unchecked Sendable {}
    final class DerivedError: BaseError, @unchecked Sendable {}

    /// Celery: countdown = min(backoff_max, backoff * 2^retries); with jitter, in [0, countdown].
    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func countdownsStayWithinTheCapAndTheExponentialCeiling(seed: UInt64) {
        var g = SplitMix64(state: seed)
        for _ in 0..<2000 {
            let backoff = [0, 0.001, 0.5, 1, 3, 60, 86_400].randomElement(using: &g)!
            let cap = [0, 0.1, 1, 600, 3600, 315_360_000].randomElement(using: &g)!
            let retries = Int.random(in: -2...80, using: &g)
            let ceiling = min(cap, backoff * pow(2, Double(min(max(retries, 0), 62))))
            let jittered = RetryPolicy.countdown(
                retries: retries, backoff: backoff, backoffMax: cap, jitter: true, using: &g)
            #expect(
                jittered >= 0 && jittered <= ceiling, "backoff \(backoff) cap \(cap) retries \(retries): \(jittered)")
            let exact = RetryPolicy.countdown(
                retries: retries, backoff: backoff, backoffMax: cap, jitter: false, using: &g)
            #expect(exact == ceiling)
        }
    }

    @Test func fullJitterSpreadsOverTheWholeRange() {
        var g = SplitMix64(state: 42)
        let policy = RetryPolicy.always(backoff: 1, backoffMax: 600)
        let samples = (0..<4000).map { _ in policy.countdown(retries: 3, using: &g) }
        // min(600, 1 * 2^3) = 8: uniform over [0, 8], so both ends are reached and the mean is near 4.
        #expect(samples.allSatisfy { $0 >= 0 && $0 <= 8 })
        #expect(samples.min()! < 0.1 && samples.max()! > 7.9)
        let mean = samples.reduce(0, +) / Double(samples.count)
        #expect(abs(mean - 4) < 0.2, "\(mean)")
        // The cap binds from the 10th retry on (2^10 > 600).
        #expect((0..<200).allSatisfy { _ in policy.countdown(retries: 40, using: &g) <= 600 })
    }

    @Test func nonsenseSettingsGiveNoNegativeOrEndlessCountdown() {
        var g = SplitMix64(state: 7)
        for (backoff, cap) in [(Double.nan, 10.0), (-5, 10), (1, .nan), (1, -1), (.infinity, .infinity)] {
            let c = RetryPolicy.countdown(retries: 5, backoff: backoff, backoffMax: cap, jitter: false, using: &g)
            #expect(c >= 0 && c <= JobRules.maxCountdown, "\(backoff) \(cap): \(c)")
        }
    }

    @Test func autoretryForMatchesTheNamedTypesAndTheirSubclasses() {
        let policy = RetryPolicy(autoretryFor: [Transient.self, BaseError.self])
        #expect(policy.autoretries(Transient()))
        #expect(policy.autoretries(DerivedError()))
        #expect(!policy.autoretries(Permanent()))
        #expect(!RetryPolicy.never.autoretries(Transient()))
        let predicate = RetryPolicy(autoretryWhen: { ($0 as? TaskError)?.message == "busy" })
        #expect(predicate.autoretries(TaskError("busy")))
        #expect(!predicate.autoretries(TaskError("idle")))
    }

    func decide(_ error: any Error, _ policy: RetryPolicy?, attempt: Int = 1) -> RetryDecision.Decided? {
        var g = SplitMix64(state: 1)
        return RetryDecision.outcome(for: error, policy: policy, attempt: attempt, message: "\(error)", using: &g)
    }

    @Test func aPolicyRetriesWhatItNamesAndFailsTheRestAtOnce() throws {
        let policy = RetryPolicy(autoretryFor: [Transient.self], maxRetries: 4, backoff: 2, backoffMax: 5)
        let retried = try #require(decide(Transient(), policy, attempt: 3))
        #expect(retried.kind == .retry)
        let terms = try #require(try JSONValue(parsing: retried.resultText ?? "").objectValue)
        #expect(terms["max_retries"] == .int(4))
        // Third run, two retries before it: min(5, 2 * 2^2) = 5.
        let countdown = try #require(terms["countdown"]?.doubleValue)
        #expect(countdown >= 0 && countdown <= 5)
        #expect(decide(Permanent(), policy)?.kind == .fatal)
        let always = RetryPolicy.always()
        let refused = decide(TaskError("bad", retryable: false), always)
        #expect(refused?.kind == .fatal)
        // Time limits fail at once unless named, and keep their kind.
        #expect(decide(TimeLimitExceeded(seconds: 1), policy)?.kind == .timeout)
        #expect(decide(SoftTimeLimitExceeded(seconds: 1), policy)?.kind == .timeout)
        let timeLimits = RetryPolicy(autoretryFor: [TimeLimitExceeded.self, SoftTimeLimitExceeded.self])
        #expect(decide(TimeLimitExceeded(seconds: 1), timeLimits)?.kind == .retry)
        #expect(decide(SoftTimeLimitExceeded(seconds: 1), timeLimits)?.kind == .retry)
        // No policy: the broker's default decides.
        #expect(decide(Transient(), nil) == nil)
    }

    @Test func ctxRetryCarriesItsTermsAndFallsBackToThePolicy() throws {
        let context = TaskContext(
            jobID: 1, task: "t", attempt: 2, logger: Logger(label: "test"), registry: TaskRegistry(),
            connection: { throw CanvasError("no database here") })
        let thrown = try #require(throws: TaskRetry.self) {
            try context.retry(countdown: 30, maxRetries: 5000, because: TaskError("quota"))
        }
        #expect(thrown.countdown == 30)
        #expect(thrown.maxRetries == 1000)
        #expect(thrown.reason == "quota")
        let explicit = try #require(decide(thrown, nil))
        #expect(
            explicit
                == .init(
                    kind: .retry, resultText: #"{"countdown":30.0,"max_retries":1000}"#, error: "quota", countdown: 30))
        // Without terms of its own, the policy's apply; without a policy, the broker's backoff.
        let bare = try #require(throws: TaskRetry.self) { try context.retry() }
        #expect(try #require(decide(bare, nil)).resultText == "{}")
        let policy = RetryPolicy.always(maxRetries: 2, backoff: 1, jitter: false)
        let fromPolicy = try #require(decide(bare, policy, attempt: 4))
        #expect(fromPolicy.resultText == #"{"countdown":8.0,"max_retries":2}"#)
        let clamped = try #require(throws: TaskRetry.self) { try context.retry(countdown: -3) }
        #expect(clamped.countdown == 0)
    }

    @Test func anAsyncBodyIsCancelledAtItsSoftDeadline() throws {
        let started = Date()
        let error = try #require(throws: CancellationError.self) {
            try runToCompletion(cancelAt: started.addingTimeInterval(0.2)) {
                try await Task.sleep(nanoseconds: 20_000_000_000)
            }
        }
        _ = error
        // Not before the deadline. No upper bound here: this test blocks a thread of Swift's
        // cooperative pool, which the whole test run shares, so the cancelled task may wait for
        // a thread. A pool process waits on its main thread instead; RetryTests times that.
        #expect(Date().timeIntervalSince(started) >= 0.19)
        // One that finishes first is not disturbed.
        #expect(try runToCompletion(cancelAt: Date().addingTimeInterval(5)) { 7 } == 7)
    }

    @Test func syncCodeSeesItsSoftDeadline() throws {
        let context = TaskContext(
            jobID: 1, task: "t", attempt: 1, logger: Logger(label: "test"), registry: TaskRegistry(),
            softTimeLimit: 0.1, connection: { throw CanvasError("no database here") })
        let deadline = try #require(context.softDeadline)
        #expect(abs(deadline.timeIntervalSinceNow - 0.1) < 0.05)
        #expect(!context.softTimeLimitExceeded)
        #expect(throws: Never.self) { try context.checkSoftTimeLimit() }
        usleep(150_000)
        #expect(context.softTimeLimitExceeded)
        let error = try #require(throws: SoftTimeLimitExceeded.self) { try context.checkSoftTimeLimit() }
        #expect("\(error)" == "SoftTimeLimitExceeded: soft time limit (0.1000s) exceeded")
        let unlimited = TaskContext(
            jobID: 1, task: "t", attempt: 1, logger: Logger(label: "test"), registry: TaskRegistry(),
            connection: { throw CanvasError("no database here") })
        #expect(unlimited.softDeadline == nil && !unlimited.softTimeLimitExceeded)
    }
}
