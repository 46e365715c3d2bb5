import Foundation

/// The rules a job must meet before it is enqueued, written once for the Swift side.
///
/// `canvas.enqueue` and `canvas.validate_canvas` (functions/*.sql) apply the same bounds with the
/// same message texts, so a job refused by Swift, by the command line or by SQL reads the same.
/// The bounds keep every value inside what the `canvas.jobs` columns and the broker's date
/// arithmetic can hold, so a value that passes here can never overflow later.
///
/// ```swift
/// JobRules.isPriority(40_000)   // false: priority is a smallint
/// JobRules.isName("reports\n")   // false: no control characters in task or queue names
/// try JobRules.checkFinite(.double(.nan), at: "args[0]")   // throws "args[0]: expected a finite number, …"
/// ```
public enum JobRules {
    /// Task and queue names: 1 to this many characters (Unicode scalars, as PostgreSQL counts them).
    public static let maxNameLength = 200
    /// The `priority` column is a smallint's range so that no arithmetic on it can overflow.
    public static let priority = -32768...32767
    public static let maxRetries = 0...1000
    /// Ten years of 365 days, the furthest ahead a countdown or an eta may reach.
    public static let maxCountdown: Double = 315_360_000
    public static let maxTimeLimit: Double = 31_536_000
    public static let maxRetryBackoff: Double = 86_400

    /// The message texts, keyed by the option as it is spelled in JSON.
    /// The messages every client gives for a broken rule, word for word as the SQL checks do.
    public enum Message {
        public static let task = "task: " + taskName
        /// The rule for a task name wherever it stands (`task`, or `starmap` in a starmap).
        public static let taskName = "expected a task name (1 to \(maxNameLength) characters, no control characters)"
        public static let queue = "options.queue: " + queueName
        public static let queueName = "expected a queue name (1 to \(maxNameLength) characters, no control characters)"
        public static let priority =
            "options.priority: expected an integer from \(JobRules.priority.lowerBound) to \(JobRules.priority.upperBound)"
        public static let maxRetries =
            "options.max_retries: expected an integer from \(JobRules.maxRetries.lowerBound) to \(JobRules.maxRetries.upperBound)"
        public static let countdown = "options.countdown: expected seconds from 0 to \(seconds(maxCountdown))"
        public static let eta = "options.eta: expected a time within 10 years"
        public static let timeLimit =
            "options.time_limit: expected seconds, more than 0 and at most \(seconds(maxTimeLimit))"
        public static let softTimeLimit =
            "options.soft_time_limit: expected seconds, more than 0 and at most \(seconds(maxTimeLimit))"
        public static let softTimeLimitOrder = "options.soft_time_limit: expected less than options.time_limit"
        public static let retryBackoff = "options.retry_backoff: expected seconds from 0 to \(seconds(maxRetryBackoff))"
        public static let expiresSeconds =
            "options.expires: expected seconds from 0 to \(seconds(maxCountdown)), or a time"
        public static let expiresTime =
            "options.expires: expected seconds from 0 to \(seconds(maxCountdown)), or a time (ISO 8601, with a time zone) within 10 years"
        public static let uniqueKey =
            "options.unique_key: expected a key (1 to \(maxNameLength) characters, no control characters)"
        public static let uniqueKeyNested =
            "options.unique_key: only for a signature enqueued on its own, not inside a canvas"
        public static let uniqueFor = "options.unique_for: expected seconds from 0 to \(seconds(maxCountdown))"
        public static let uniqueForAlone = "options.unique_for: needs a unique_key"

        static func seconds(_ value: Double) -> String { String(Int(value)) }
    }

    /// A task or queue name: 1 to `maxNameLength` characters, none of them a control character.
    public static func isName(_ name: String) -> Bool {
        var count = 0
        for scalar in name.unicodeScalars {
            count += 1
            if count > maxNameLength || isControl(scalar) { return false }
        }
        return count > 0
    }

    /// C0 and C1 controls and DEL: a tab or newline in a name would split the lines of the
    /// supervisor's pipe and of every log line.
    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value <= 0x1F || (0x7F...0x9F).contains(scalar.value)
    }

    public static func isPriority(_ value: Int) -> Bool { priority.contains(value) }
    public static func isMaxRetries(_ value: Int) -> Bool { maxRetries.contains(value) }
    /// NaN fails every comparison, so each check below refuses it without saying so.
    public static func isCountdown(_ value: Double) -> Bool { value >= 0 && value <= maxCountdown && isSeconds(value) }
    public static func isTimeLimit(_ value: Double) -> Bool { value > 0 && value <= maxTimeLimit && isSeconds(value) }
    public static func isRetryBackoff(_ value: Double) -> Bool {
        value >= 0 && value <= maxRetryBackoff && isSeconds(value)
    }

    /// Zero, or at least a microsecond: what PostgreSQL's intervals resolve (canvas.is_seconds).
    static func isSeconds(_ value: Double) -> Bool { value == 0 || abs(value) >= 1e-6 }

    /// No later than ten years after `now`. A past eta means "now", but one before the year 1 cannot
    /// be written as a PostgreSQL timestamp by this client, so it is refused with the same message.
    public static func isEta(_ eta: Date, now: Date = Date()) -> Bool {
        let t = eta.timeIntervalSince1970
        return t >= earliestEta && t <= now.timeIntervalSince1970 + maxCountdown
    }

    /// 0001-01-01T00:00:00Z.
    static let earliestEta: Double = -62_135_596_800

    /// Refuses a number JSON text cannot hold (infinity, NaN), which would otherwise be written as
    /// `null` and change the value silently. - Parameter path: where `value` stands, like `args`.
    public static func checkFinite(_ value: JSONValue, at path: String) throws {
        switch value {
        case .double(let d) where !d.isFinite:
            throw CanvasError("\(path): expected a finite number, not \(d) (JSON has no infinity or NaN)")
        case .array(let items):
            for (i, item) in items.enumerated() { try checkFinite(item, at: "\(path)[\(i)]") }
        case .object(let members):
            for key in members.keys.sorted() { try checkFinite(members[key]!, at: "\(path).\(key)") }
        default: break
        }
    }
}
