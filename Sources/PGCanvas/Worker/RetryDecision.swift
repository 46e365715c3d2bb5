/// How a failed run is reported to `canvas.finish`, given its task's retry policy: the worker
/// decides what only it knows (the error's type, the task's policy), the broker what only it
/// knows (how many retries the job has left). A plain function of its inputs, tested without I/O.
///
/// ```swift
/// let policy = RetryPolicy(autoretryFor: [URLError.self], backoff: 2)
/// RetryDecision.outcome(for: URLError(.timedOut), policy: policy, attempt: 3, message: "timed out")
/// // kind .retry, resultText {"countdown": <random in 0…8>}, error "timed out"
/// RetryDecision.outcome(for: DecodingError…, policy: policy, attempt: 1, message: "…")   // kind .fatal
/// RetryDecision.outcome(for: URLError(.timedOut), policy: nil, attempt: 1, message: "…")   // nil: the default
/// ```
enum RetryDecision {
    struct Decided: Equatable {
        var kind: Outcome.Kind
        /// For `.retry`: `{"countdown": …, "max_retries": …}`, each only when known.
        var resultText: String?
        var error: String?
        /// For `.retry`: the countdown sent, when the worker chose one.
        var countdown: Double? = nil
    }

    /// - Parameters:
    ///   - attempt: the run's attempt (1 for the first run); `attempt - 1` retries came before it.
    ///   - message: the error as the job's `error` column shows it.
    /// - Returns: nil when neither the error (a `TaskRetry`) nor a policy decides: the caller's
    ///   default applies then (`error`, retried by the broker's default rules).
    static func outcome<G: RandomNumberGenerator>(
        for error: any Error, policy: RetryPolicy?, attempt: Int, message: String, using generator: inout G
    ) -> Decided? {
        let retries = max(attempt - 1, 0)
        if let retry = error as? TaskRetry {
            let countdown = retry.countdown ?? policy?.countdown(retries: retries, using: &generator)
            return Decided(
                kind: .retry,
                resultText: terms(countdown: countdown, maxRetries: retry.maxRetries ?? policy?.maxRetries),
                error: retry.reason, countdown: countdown)
        }
        guard let policy else { return nil }
        if let taskError = error as? TaskError, !taskError.retryable { return Decided(kind: .fatal, error: message) }
        if policy.autoretries(error) {
            let countdown = policy.countdown(retries: retries, using: &generator)
            return Decided(
                kind: .retry, resultText: terms(countdown: countdown, maxRetries: policy.maxRetries), error: message,
                countdown: countdown)
        }
        // Not named by the policy: failed at once. A time limit keeps its own kind, for the record.
        let isTimeLimit = error is TimeLimitExceeded || error is SoftTimeLimitExceeded
        return Decided(kind: isTimeLimit ? .timeout : .fatal, error: message)
    }

    static func outcome(for error: any Error, policy: RetryPolicy?, attempt: Int, message: String) -> Decided? {
        var generator = SystemRandomNumberGenerator()
        return outcome(for: error, policy: policy, attempt: attempt, message: message, using: &generator)
    }

    /// The `result` a `retry` outcome carries to `canvas.finish`.
    static func terms(countdown: Double?, maxRetries: Int?) -> String {
        var o: [String: JSONValue] = [:]
        if let countdown { o["countdown"] = .double(RetryPolicy.clampSeconds(countdown)) }
        if let maxRetries { o["max_retries"] = .int(maxRetries) }
        return JSONValue.object(o).jsonText
    }
}
