import Foundation

/// When a task's errors retry by themselves, how often, and how long apart: Celery's
/// `autoretry_for`, `max_retries`, `retry_backoff`, `retry_backoff_max` and `retry_jitter`.
///
/// A task with a policy is judged by its worker: an error the policy names is retried after
/// `countdown(retries:)`; any other error fails the job at once, without a retry. A task without
/// one keeps the broker's default (docs/retries.md): every error retries up to the job's
/// `max_retries` with exponential backoff, and a time limit fails at once.
///
/// ```swift
/// struct Upstream: Error { var status: Int }
/// let fetch = TaskDefinition(
///     "feeds.fetch", retry: RetryPolicy(autoretryFor: [Upstream.self, URLError.self], maxRetries: 5, backoff: 2)
/// ) { (url: String, ctx) async throws -> Int in … }
/// // Upstream(status: 503) → retried in a random 0…2 s, then 0…4 s, 0…8 s, … (at most 600 s); 5 retries at most.
/// // DecodingError → failed at once.
/// ```
public struct RetryPolicy: Sendable {
    /// Whether an error the task threw is retried (Celery's `autoretry_for`).
    public var autoretries: @Sendable (any Error) -> Bool
    /// Retries at most (Celery's `Task.max_retries`); nil leaves the job's own `max_retries`.
    public var maxRetries: Int?
    /// Seconds of the first retry's countdown, doubled for each further retry (`retry_backoff`).
    public var backoff: Double
    /// The most seconds any countdown may take (`retry_backoff_max`, 600 in Celery).
    public var backoffMax: Double
    /// Full jitter (`retry_jitter`): the countdown is a random value in [0, countdown], so that
    /// many jobs failing together do not all come back together.
    public var jitter: Bool

    /// - Parameters:
    ///   - autoretryFor: the error types that retry; any other error fails the job at once. Add
    ///     `TimeLimitExceeded.self` or `SoftTimeLimitExceeded.self` to retry time limits too.
    public init(
        autoretryFor types: [any Error.Type], maxRetries: Int? = nil, backoff: Double = 1, backoffMax: Double = 600,
        jitter: Bool = true
    ) {
        self.init(
            autoretryWhen: { error in types.contains { RetryPolicy.error(error, is: $0) } }, maxRetries: maxRetries,
            backoff: backoff, backoffMax: backoffMax, jitter: jitter)
    }

    /// - Parameter autoretryWhen: decides for each error whether it retries.
    public init(
        autoretryWhen: @escaping @Sendable (any Error) -> Bool, maxRetries: Int? = nil, backoff: Double = 1,
        backoffMax: Double = 600, jitter: Bool = true
    ) {
        self.autoretries = autoretryWhen
        self.maxRetries = maxRetries
        self.backoff = backoff
        self.backoffMax = backoffMax
        self.jitter = jitter
    }

    /// Celery's default: nothing retries unless the task calls `ctx.retry`.
    public static let never = RetryPolicy(autoretryWhen: { _ in false })

    /// Every error retries (Celery's `autoretry_for=(Exception,)`).
    public static func always(
        maxRetries: Int? = nil, backoff: Double = 1, backoffMax: Double = 600, jitter: Bool = true
    )
        -> RetryPolicy
    {
        RetryPolicy(
            autoretryWhen: { _ in true }, maxRetries: maxRetries, backoff: backoff, backoffMax: backoffMax,
            jitter: jitter)
    }

    /// Opens the existential metatype so that `is` also matches subclasses and protocol types.
    private static func error<E: Error>(_ error: any Error, is _: E.Type) -> Bool { error is E }

    /// Seconds to wait before retry number `retries + 1`, as Celery's
    /// `get_exponential_backoff_interval`: `min(backoffMax, backoff * 2^retries)`, then with
    /// jitter a random value in [0, that].
    /// - Parameter retries: how many retries came before this one (0 for the first).
    public func countdown<G: RandomNumberGenerator>(retries: Int, using generator: inout G) -> Double {
        Self.countdown(retries: retries, backoff: backoff, backoffMax: backoffMax, jitter: jitter, using: &generator)
    }

    public func countdown(retries: Int) -> Double {
        var generator = SystemRandomNumberGenerator()
        return countdown(retries: retries, using: &generator)
    }

    /// The formula alone. Never negative, never NaN, never more than `backoffMax` (nor ten years).
    public static func countdown<G: RandomNumberGenerator>(
        retries: Int, backoff: Double, backoffMax: Double, jitter: Bool, using generator: inout G
    ) -> Double {
        let cap = clampSeconds(backoffMax)
        // 2^62 already exceeds any cap; the exponent is bounded so the power stays finite.
        let exponential =
            clampSeconds(backoff) * Double(sign: .plus, exponent: min(max(retries, 0), 62), significand: 1)
        let ceiling = min(cap, exponential)
        guard jitter, ceiling > 0 else { return ceiling }
        return Double.random(in: 0...ceiling, using: &generator)
    }

    /// A countdown the broker can store: 0 to ten years; NaN counts as 0.
    static func clampSeconds(_ seconds: Double) -> Double {
        guard seconds.isFinite || seconds == .infinity else { return 0 }
        return min(max(seconds, 0), JobRules.maxCountdown)
    }
}

/// Thrown by `TaskContext.retry`: ends the run as a retry, as Celery's `Retry` does. A task that
/// catches errors should let this one through.
public struct TaskRetry: Error, CustomStringConvertible, Sendable {
    /// Seconds until the retry; nil lets the task's policy (or the job's backoff) decide.
    public var countdown: Double?
    /// Overrides how many retries the job may have, for this decision only.
    public var maxRetries: Int?
    /// What the job fails with when no retry is left (Celery's `exc`).
    public var reason: String?
    /// The Swift type of that error, for the job's `error_type` and its error callbacks.
    public var reasonType: String?

    public init(countdown: Double? = nil, maxRetries: Int? = nil, reason: String? = nil, reasonType: String? = nil) {
        self.countdown = countdown
        self.maxRetries = maxRetries
        self.reason = reason
        self.reasonType = reasonType
    }

    public var description: String {
        let when = countdown.map { "Retry in \(formatSeconds($0))s" } ?? "Retry"
        return reason.map { "\(when): \($0)" } ?? when
    }
}

/// A run passed its hard time limit and its pool process was killed (Celery's
/// `TimeLimitExceeded`). Name it in a `RetryPolicy` to have such runs retried.
public struct TimeLimitExceeded: Error, CustomStringConvertible, Sendable {
    public var seconds: Double
    public init(seconds: Double) { self.seconds = seconds }
    public var description: String { "TimeLimitExceeded: hard time limit (\(formatSeconds(seconds))s) exceeded" }
}

/// A run passed its soft time limit (Celery's `SoftTimeLimitExceeded`): thrown by
/// `TaskContext.checkSoftTimeLimit()`, and what a `CancellationError` from an async task body
/// becomes once its soft deadline has passed. Name it in a `RetryPolicy` to retry such runs.
public struct SoftTimeLimitExceeded: Error, CustomStringConvertible, Sendable {
    public var seconds: Double
    public init(seconds: Double) { self.seconds = seconds }
    public var description: String { "SoftTimeLimitExceeded: soft time limit (\(formatSeconds(seconds))s) exceeded" }
}
