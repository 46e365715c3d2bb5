import Foundation
import Postgres

/// Puts jobs in the queue, one or a hundred thousand in one statement.
///
/// ```swift
/// let ids = try Enqueue.jobs((1...1000).map { JobRequest("canvas.add", [.int($0), 1]) }, on: db)
/// ```
public enum Enqueue {
    /// Enqueues one job. - Returns: its id.
    @discardableResult
    public static func job(_ request: JobRequest, on connection: Connection) throws -> Int64 {
        try jobs([request], on: connection)[0]
    }

    /// Enqueues many jobs in one statement and one round trip, however many there are.
    /// The insert trigger sends one NOTIFY per queue for the whole statement.
    /// - Returns: the new ids, in the order of `requests`.
    /// - Throws: `CanvasError` if any request breaks `JobRules` ("job 3: options.priority: …", where 3
    ///   is its index in `requests`); nothing is enqueued then.
    public static func jobs(_ requests: [JobRequest], on connection: Connection) throws -> [Int64] {
        guard !requests.isEmpty else { return [] }
        let now = Date()
        for (i, request) in requests.enumerated() {
            do {
                try request.validate(now: now)
            } catch let error as CanvasError where requests.count > 1 {
                throw CanvasError("job \(i): \(error.description)")
            }
        }
        if requests.contains(where: { $0.options.uniqueKey != nil }) {
            // A duplicate gives the id of the job its key stands for, which only canvas.enqueue
            // answers: one statement per job, all in one transaction.
            return try connection.withTransaction { c in
                // All keys first, in the one order every enqueuer takes them (docs/broker.md).
                try c.execute("SELECT canvas.lock_unique_keys(\(requests.compactMap(\.options.uniqueKey)))")
                return try requests.map { r in
                    try c.query(
                        """
                        SELECT canvas.enqueue(\(r.task), \(PostgresJSON(text: JSONValue.array(r.args).jsonText)),
                                              kwargs => \(r.kwargs.isEmpty ? nil : PostgresJSON(text: JSONValue.object(r.kwargs).jsonText)),
                                              options => \(PostgresJSON(text: r.options.json.jsonText)))
                        """)[0].decode(Int64.self, 0)
                }
            }
        }
        // JobRules bound priority and max_retries well inside Int32, so these conversions are exact.
        let args = requests.map { PostgresJSON(text: JSONValue.array($0.args).jsonText) }
        let kwargs = requests.map { $0.kwargs.isEmpty ? nil : PostgresJSON(text: JSONValue.object($0.kwargs).jsonText) }
        // Times as given, seconds counted on the server's clock (as countdowns are).
        let expiresAt = requests.map { r -> Date? in if case .at(let time) = r.options.expires { time } else { nil } }
        let expiresIn = requests.map { r -> Double? in
            if case .after(let seconds) = r.options.expires { seconds } else { nil }
        }
        let rows: Rows
        if let options = requests.first?.options, requests.allSatisfy({ $0.options == options }) {
            // The usual bulk case: one set of options for every job, sent once instead of per row.
            rows = try connection.query(
                """
                INSERT INTO canvas.jobs (task, args, kwargs, queue, priority, run_at, max_attempts, retry_backoff,
                                         time_limit, soft_time_limit, expires_at, ignore_result)
                SELECT t, a, k, \(options.queue), \(Int32(options.priority)),
                       coalesce(\(options.eta), now() + coalesce(\(options.countdown), 0) * interval '1 second'),
                       \(Int32(options.maxRetries + 1)), \(options.retryBackoff), \(options.timeLimit),
                       \(options.softTimeLimit),
                       coalesce(\(expiresAt[0]), now() + \(expiresIn[0]) * interval '1 second'), \(options.ignoreResult)
                FROM unnest(\(requests.map(\.task)), \(args), \(kwargs)) WITH ORDINALITY AS r(t, a, k, n)
                ORDER BY n
                RETURNING id
                """)
        } else {
            rows = try connection.query(
                """
                INSERT INTO canvas.jobs (task, args, kwargs, queue, priority, run_at, max_attempts, retry_backoff,
                                         time_limit, soft_time_limit, expires_at, ignore_result)
                SELECT t, a, k, q, p, coalesce(eta, now() + coalesce(cd, 0) * interval '1 second'), m, rb, tl, stl,
                       coalesce(ea, now() + ei * interval '1 second'), ir
                FROM unnest(\(requests.map(\.task)), \(args), \(kwargs),
                            \(requests.map(\.options.queue)), \(requests.map { Int32($0.options.priority) }),
                            \(requests.map(\.options.eta)), \(requests.map(\.options.countdown)),
                            \(requests.map { Int32($0.options.maxRetries + 1) }),
                            \(requests.map(\.options.retryBackoff)), \(requests.map(\.options.timeLimit)),
                            \(requests.map(\.options.softTimeLimit)), \(expiresAt), \(expiresIn),
                            \(requests.map(\.options.ignoreResult)))
                     WITH ORDINALITY AS r(t, a, k, q, p, eta, cd, m, rb, tl, stl, ea, ei, ir, n)
                ORDER BY n
                RETURNING id
                """)
        }
        return try rows.map { try $0.decode(Int64.self, 0) }
    }
}
