import Foundation
import Postgres

/// Fleet-wide rate limits, concurrency limits and paused queues: rows the claim obeys
/// (`canvas.claim_select`, functions/limits.sql), so every worker obeys them at once, and they
/// outlive every worker. The SQL functions behind them work the same from psql.
///
/// ```swift
/// try Limits.setRate(task: "voter_rolls.render", RateLimit.parse("100/m"), on: db)
/// try Limits.setConcurrency(.queue("pdf"), max: 4, on: db)
/// try Limits.pause(queue: "pdf", on: db)            // claims nothing until resumed
/// let all = try Limits.list(on: db)                 // what `voteradmin limit list` shows
/// ```
public enum Limits {
    /// What a concurrency limit counts: the running jobs of one queue, or of one task.
    public enum Scope: Sendable, Equatable, CustomStringConvertible {
        case queue(String)
        case task(String)

        public var kind: String {
            switch self {
            case .queue: "queue"
            case .task: "task"
            }
        }
        public var name: String {
            switch self {
            case .queue(let n), .task(let n): n
            }
        }
        public var description: String { "\(kind) \(name)" }

        /// The same check and message as `canvas.check_limit_name`.
        public func validate() throws {
            guard JobRules.isName(name) else {
                throw CanvasError(
                    "\(kind): expected a \(kind) name (1 to \(JobRules.maxNameLength) characters, no control characters)"
                )
            }
        }
    }

    public static let maxConcurrency = 1_000_000_000
    public static let concurrencyMessage = "concurrency: expected an integer from 1 to \(maxConcurrency)"

    public struct RateRow: Sendable, Equatable {
        public var task: String
        public var rate: RateLimit
        /// Jobs started in the current window (0 when the window the row counts is over).
        public var startedThisWindow: Int
    }
    public struct ConcurrencyRow: Sendable, Equatable {
        public var scope: Scope
        public var maxRunning: Int
        public var running: Int
    }
    public struct PausedQueue: Sendable, Equatable {
        public var queue: String
        public var pausedAt: Date
    }
    public struct Listing: Sendable {
        public var rates: [RateRow]
        public var concurrency: [ConcurrencyRow]
        public var paused: [PausedQueue]
    }

    public static func setRate(task: String, _ rate: RateLimit, on c: Connection) throws {
        try Scope.task(task).validate()
        try refusals { _ = try c.execute("SELECT canvas.set_rate_limit(\(task), \(rate.description))") }
    }

    /// - Returns: false when the task had no rate limit.
    @discardableResult
    public static func clearRate(task: String, on c: Connection) throws -> Bool {
        try c.query("SELECT canvas.clear_rate_limit(\(task))")[0].decode(Bool.self, 0)
    }

    public static func setConcurrency(_ scope: Scope, max: Int, on c: Connection) throws {
        try scope.validate()
        guard (1...maxConcurrency).contains(max) else { throw CanvasError(concurrencyMessage) }
        try refusals {
            _ = try c.execute(
                "SELECT canvas.set_concurrency_limit(\(scope.kind), \(scope.name), \(Int64(max))::integer)")
        }
    }

    /// - Returns: false when there was no such limit.
    @discardableResult
    public static func clearConcurrency(_ scope: Scope, on c: Connection) throws -> Bool {
        try c.query("SELECT canvas.clear_concurrency_limit(\(scope.kind), \(scope.name))")[0].decode(Bool.self, 0)
    }

    /// - Returns: false when the queue was already paused.
    @discardableResult
    public static func pause(queue: String, on c: Connection) throws -> Bool {
        try Scope.queue(queue).validate()
        return try refusals { try c.query("SELECT canvas.pause_queue(\(queue))")[0].decode(Bool.self, 0) }
    }

    /// Wakes the queue's workers. - Returns: false when the queue was not paused.
    @discardableResult
    public static func resume(queue: String, on c: Connection) throws -> Bool {
        try c.query("SELECT canvas.resume_queue(\(queue))")[0].decode(Bool.self, 0)
    }

    public static func list(on c: Connection) throws -> Listing {
        let rates = try c.query(
            """
            SELECT task, max_runs, per_seconds,
                   CASE WHEN window_index = floor(extract(epoch FROM now()) / per_seconds) THEN started ELSE 0 END
            FROM canvas.rate_limits ORDER BY task
            """
        ).map { row in
            RateRow(
                task: try row.decode(String.self, 0),
                rate: RateLimit(
                    count: try row.decode(Int.self, 1),
                    per: RateLimit.Window(seconds: try row.decode(Int.self, 2)) ?? .second),
                startedThisWindow: try row.decode(Int.self, 3))
        }
        // Counts of running jobs, for the few limited queues and tasks only.
        let concurrency = try c.query(
            """
            SELECT l.scope, l.name, l.max_running,
                   (SELECT count(*) FROM canvas.jobs j WHERE j.state = 'running'
                      AND CASE l.scope WHEN 'queue' THEN j.queue = l.name ELSE j.task = l.name END)
            FROM canvas.concurrency_limits l ORDER BY l.scope, l.name
            """
        ).map { row in
            let name = try row.decode(String.self, 1)
            return ConcurrencyRow(
                scope: try row.decode(String.self, 0) == "queue" ? .queue(name) : .task(name),
                maxRunning: try row.decode(Int.self, 2), running: try row.decode(Int.self, 3))
        }
        let paused = try c.query("SELECT queue, paused_at FROM canvas.paused_queues ORDER BY queue").map { row in
            PausedQueue(queue: try row.decode(String.self, 0), pausedAt: try row.decode(Date.self, 1))
        }
        return Listing(rates: rates, concurrency: concurrency, paused: paused)
    }

    /// The SQL side's refusals (SQLSTATE 22023) read as the Swift side's.
    static func refusals<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as PostgresError where error.sqlState == "22023" {
            throw CanvasError(error.message)
        }
    }
}

/// `100/m`: at most 100 jobs of a task start in each minute (windows aligned on the clock, by the
/// jobs' start times), across every worker.
public struct RateLimit: Sendable, Equatable, CustomStringConvertible {
    public enum Window: String, Sendable, CaseIterable {
        case second = "s"
        case minute = "m"
        case hour = "h"

        public var seconds: Int {
            switch self {
            case .second: 1
            case .minute: 60
            case .hour: 3600
            }
        }
        init?(seconds: Int) {
            guard let w = Window.allCases.first(where: { $0.seconds == seconds }) else { return nil }
            self = w
        }
    }

    public static let maxCount = 1_000_000_000
    public var count: Int
    public var per: Window

    public init(count: Int, per: Window) {
        self.count = count
        self.per = per
    }

    public var description: String { "\(count)/\(per.rawValue)" }

    /// The same rule and message as `canvas.parse_rate`.
    public static func parse(_ text: String) throws -> RateLimit {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 2, (1...10).contains(parts[0].utf8.count), parts[0].utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
            let n = Int(parts[0]), (1...maxCount).contains(n), let per = Window(rawValue: String(parts[1]))
        {
            return RateLimit(count: n, per: per)
        }
        throw CanvasError("rate: expected N/s, N/m or N/h with N from 1 to \(maxCount), not \"\(text)\"")
    }
}
