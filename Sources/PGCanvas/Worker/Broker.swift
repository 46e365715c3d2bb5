import Foundation
import Postgres

/// A job handed to this worker by `canvas.claim`.
///
/// ```swift
/// for job in try Broker.claim(worker: me, queues: ["default"], limit: 10, on: db) {
///     let args = try JSONValue(parsingStored: job.argsText)   // run job.task on args within job.timeLimit
/// }
/// ```
public struct ClaimedJob: Sendable {
    public var id: Int64
    public var task: String
    /// The JSON array text exactly as stored; only the pool process parses it.
    public var argsText: String
    /// The keyword arguments' JSON object text, nil when there are none.
    public var kwargsText: String? = nil
    public var attempt: Int
    public var timeLimit: Double?
    /// The job's own soft time limit (`options.soft_time_limit`).
    public var softTimeLimit: Double? = nil
    /// Seconds it waited since it became due (its `run_at`) until this claim.
    public var queueWait: Double? = nil

    /// The arguments' JSON text, positional and keyword, as the bound (pgcanvas.max_payload_bytes)
    /// counts them.
    public var argumentBytes: Int { argsText.utf8.count + (kwargsText?.utf8.count ?? 0) }
}

/// How one run ended, as `canvas.finish` records it.
///
/// ```swift
/// let done = Outcome(jobID: job.id, attempt: job.attempt, task: job.task, kind: .succeeded, resultText: "3")
/// let failed = Outcome(jobID: other.id, attempt: other.attempt, kind: .error, error: "upstream timed out")
/// let recorded = try Broker.finish(worker: me, [done, failed], on: db)   // a requeued job has its retryIn
/// ```
public struct Outcome: Sendable {
    public init(
        jobID: Int64, attempt: Int, task: String = "", kind: Kind, resultText: String? = nil, error: String? = nil,
        spawnText: String? = nil
    ) {
        self.jobID = jobID
        self.attempt = attempt
        self.task = task
        self.kind = kind
        self.resultText = resultText
        self.error = error
        self.spawnText = spawnText
    }

    /// How the run ended, as `canvas.finish` reads it (see docs/broker.md).
    public enum Kind: String, Sendable {
        case succeeded, error, timeout, fatal, crashed
        /// A retry the task asked for or its retry policy chose: `resultText` holds
        /// `{"countdown": seconds, "max_retries": n}` (both optional), `error` what the job fails
        /// with when no retry is left.
        case retry
    }
    public var jobID: Int64
    public var attempt: Int
    /// The task's name, for log lines only.
    public var task: String = ""
    public var kind: Kind
    /// JSON text of the result (succeeded only).
    public var resultText: String? = nil
    public var error: String? = nil
    /// JSON array text of the canvases the task spawned (committed with its success).
    public var spawnText: String? = nil
}

/// The Swift side of the broker protocol: thin calls to the `canvas.*` SQL functions, which hold
/// the rules. The worker uses it; so can a worker of your own, in any language, through the same
/// functions (docs/broker.md).
///
/// ```swift
/// let me = try Broker.registerWorker(hostname: "h", pid: getpid(), queues: ["default"], concurrency: 1, on: db)
/// for job in try Broker.claim(worker: me, queues: ["default"], limit: 10, on: db) { … }
/// ```
public struct Broker: Sendable {
    public static let channel = "canvas_jobs"
    /// `canvas.cancel` notifies here, with the id of the worker holding a cancelled running job.
    public static let cancelChannel = "canvas_cancel"

    /// - Parameters:
    ///   - heartbeatInterval: seconds between this worker's heartbeats.
    ///   - rescueAfter: seconds of silence after which other workers presume it dead and rescue its jobs.
    ///   - connections: the most connections the worker may hold (see `ConnectionBudget`).
    public static func registerWorker(
        hostname: String, pid: Int32, queues: [String], concurrency: Int, heartbeatInterval: Double = 2,
        rescueAfter: Double = 15, connections: Int = 0, on c: Connection
    ) throws -> Int64 {
        try c.query(
            """
            SELECT canvas.register_worker(\(hostname), \(pid), \(queues), \(Int32(clamping: concurrency)),
                                          \(heartbeatInterval), \(rescueAfter), \(Int32(clamping: connections)))
            """)[0].decode(Int64.self, 0)
    }

    /// The server's connection slots as a starting worker sees them (`canvas.connection_budget`).
    /// Call it in the transaction that registers the worker: it locks until that ends.
    public static func connectionBudget(on c: Connection) throws -> ConnectionBudget {
        let row = try c.query("SELECT usable, other_clients, workers_bound FROM canvas.connection_budget()")[0]
        return ConnectionBudget(
            usable: try row.decode(Int.self, 0), otherClients: try row.decode(Int.self, 1),
            workersBound: try row.decode(Int.self, 2))
    }

    /// - Parameter counts: jobs finished since the last beat, by task, for `canvas.finish_counts`
    ///   (the dashboard's throughput); empty adds nothing.
    /// - Returns: false when the worker's row is gone (it was presumed dead and rescued).
    public static func heartbeat(worker: Int64, counts: FinishTally = FinishTally(), on c: Connection) throws -> Bool {
        guard !counts.isEmpty else {
            return try c.query("SELECT canvas.heartbeat(\(worker))")[0].decode(Bool.self, 0)
        }
        return try c.query("SELECT canvas.heartbeat(\(worker), \(PostgresJSON(text: counts.jsonText)))")[0].decode(
            Bool.self, 0)
    }

    public static func claim(worker: Int64, queues: [String], limit: Int, on c: Connection) throws -> [ClaimedJob] {
        guard limit > 0 else { return [] }
        let rows = try c.query(
            """
            SELECT id, task, args, kwargs, attempt, time_limit, soft_time_limit, waited
            FROM canvas.claim(\(worker), \(queues), \(Int32(clamping: limit)))
            """)
        return try rows.map { row in
            ClaimedJob(
                id: try row.decode(Int64.self, 0), task: try row.decode(String.self, 1),
                argsText: try row.decode(String.self, 2), kwargsText: try row.decodeIfPresent(String.self, 3),
                attempt: try row.decode(Int.self, 4), timeLimit: try row.decodeIfPresent(Double.self, 5),
                softTimeLimit: try row.decodeIfPresent(Double.self, 6),
                queueWait: try row.decodeIfPresent(Double.self, 7))
        }.sorted { $0.id < $1.id }
    }

    /// What `canvas.finish` did with one run.
    public struct Recorded: Sendable {
        public var jobID: Int64
        public var state: String
        /// Seconds until the retry, when the job was requeued.
        public var retryIn: Double?
    }

    /// Records a batch of outcomes in one transaction. - Returns: the runs that were still this
    /// worker's to finish (the others were fenced off), with what became of each job.
    @discardableResult
    public static func finish(worker: Int64, _ outcomes: [Outcome], on c: Connection) throws -> [Recorded] {
        guard !outcomes.isEmpty else { return [] }
        let rows = try c.query(
            """
            SELECT id, state, retry_in FROM canvas.finish(\(worker), \(outcomes.map(\.jobID)), \(outcomes.map { Int32(clamping: $0.attempt) }),
                                 \(outcomes.map(\.kind.rawValue)), \(outcomes.map { $0.resultText.map(PostgresJSON.init(text:)) }),
                                 \(outcomes.map(\.error)), \(outcomes.map { $0.spawnText.map(PostgresJSON.init(text:)) }))
            """)
        return try rows.map {
            Recorded(
                jobID: try $0.decode(Int64.self, 0), state: try $0.decode(String.self, 1),
                retryIn: try $0.decodeIfPresent(Double.self, 2))
        }
    }

    /// Finishes a batch and claims up to `limit` more in one round trip and one transaction.
    public static func finishAndClaim(
        worker: Int64, _ outcomes: [Outcome], queues: [String], limit: Int, on c: Connection
    ) throws -> (recorded: [Recorded], claimed: [ClaimedJob]) {
        let rows = try c.query(
            """
            SELECT kind, id, state, retry_in, task, args, kwargs, attempt, time_limit, soft_time_limit, waited
            FROM canvas.finish_and_claim(
                \(worker), \(outcomes.map(\.jobID)), \(outcomes.map { Int32(clamping: $0.attempt) }),
                \(outcomes.map(\.kind.rawValue)), \(outcomes.map { $0.resultText.map(PostgresJSON.init(text:)) }),
                \(outcomes.map(\.error)), \(outcomes.map { $0.spawnText.map(PostgresJSON.init(text:)) }),
                \(queues), \(Int32(clamping: max(0, limit))))
            """)
        var recorded: [Recorded] = []
        var claimed: [ClaimedJob] = []
        for row in rows {
            if try row.decode(String.self, 0) == "finished" {
                recorded.append(
                    Recorded(
                        jobID: try row.decode(Int64.self, 1), state: try row.decode(String.self, 2),
                        retryIn: try row.decodeIfPresent(Double.self, 3)))
            } else {
                claimed.append(
                    ClaimedJob(
                        id: try row.decode(Int64.self, 1), task: try row.decode(String.self, 4),
                        argsText: try row.decode(String.self, 5), kwargsText: try row.decodeIfPresent(String.self, 6),
                        attempt: try row.decode(Int.self, 7), timeLimit: try row.decodeIfPresent(Double.self, 8),
                        softTimeLimit: try row.decodeIfPresent(Double.self, 9),
                        queueWait: try row.decodeIfPresent(Double.self, 10)))
            }
        }
        claimed.sort { $0.id < $1.id }
        return (recorded, claimed)
    }

    /// Fails one run whose outcome `finish` could not record, and its canvas, naming the cause.
    /// - Returns: false when the run was no longer this worker's.
    @discardableResult
    public static func failUnrecordable(worker: Int64, _ outcome: Outcome, cause: String, on c: Connection) throws
        -> Bool
    {
        try c.query(
            """
            SELECT canvas.fail_unrecordable(\(worker), \(outcome.jobID), \(Int32(clamping: outcome.attempt)), \(cause))
            """)[0].decodeIfPresent(String.self, 0) != nil
    }

    /// The most bytes a job's arguments or result may take (`pgcanvas.max_payload_bytes`).
    public static func maxPayloadBytes(on c: Connection) throws -> Int {
        try c.query("SELECT canvas.max_payload_bytes()")[0].decode(Int.self, 0)
    }

    /// Hands jobs back without counting the run. - Returns: how many were handed back.
    @discardableResult
    public static func release(worker: Int64, _ jobs: [(id: Int64, attempt: Int)], on c: Connection) throws -> Int {
        guard !jobs.isEmpty else { return 0 }
        let jobs = jobs.sorted { $0.id < $1.id }
        return try c.query(
            "SELECT canvas.release(\(worker), \(jobs.map(\.id)), \(jobs.map { Int32(clamping: $0.attempt) }))")[0]
            .decode(Int.self, 0)
    }

    /// Requeues the jobs of workers silent for longer than the rescue-after each registered with.
    /// - Returns: (job id, new state) for each rescued job.
    public static func rescue(on c: Connection) throws -> [(Int64, String)] {
        try c.query("SELECT job_id, new_state FROM canvas.rescue()").map {
            (try $0.decode(Int64.self, 0), try $0.decode(String.self, 1))
        }
    }

    /// Cancels up to `limit` waiting jobs whose expiry passed, in one short transaction (claims
    /// only read past them). - Returns: how many expired.
    @discardableResult
    public static func expireDue(limit: Int = 200, on c: Connection) throws -> Int {
        try c.query("SELECT canvas.expire_due(\(Int32(clamping: limit)))")[0].decode(Int.self, 0)
    }

    public static func deregister(worker: Int64, on c: Connection) throws {
        try c.execute("SELECT canvas.deregister_worker(\(worker))")
    }
}

/// Jobs finished by task, as `canvas.finish` recorded them: succeeded, failed for good, or
/// requeued for a retry. The broker loop adds each batch; heartbeats carry it to the database.
///
/// ```swift
/// var tally = FinishTally()
/// tally.add(outcomes, recorded)   // after Broker.finish
/// _ = try Broker.heartbeat(worker: me, counts: tally, on: db)
/// ```
public struct FinishTally: Sendable, Equatable {
    public struct Counts: Sendable, Equatable {
        public var succeeded = 0
        public var failed = 0
        public var retried = 0
    }
    public private(set) var byTask: [String: Counts] = [:]

    public init() {}

    public var isEmpty: Bool { byTask.isEmpty }

    public mutating func add(_ outcomes: [Outcome], _ recorded: [Broker.Recorded]) {
        guard !recorded.isEmpty else { return }
        var tasks: [Int64: String] = [:]
        tasks.reserveCapacity(outcomes.count)
        for o in outcomes { tasks[o.jobID] = o.task }
        for r in recorded {
            guard let task = tasks[r.jobID] else { continue }
            switch r.state {
            case "succeeded": byTask[task, default: Counts()].succeeded += 1
            case "queued", "scheduled": byTask[task, default: Counts()].retried += 1
            case "failed", "cancelled": byTask[task, default: Counts()].failed += 1
            default: break
            }
        }
    }

    public mutating func merge(_ other: FinishTally) {
        for (task, c) in other.byTask {
            byTask[task, default: Counts()].succeeded += c.succeeded
            byTask[task, default: Counts()].failed += c.failed
            byTask[task, default: Counts()].retried += c.retried
        }
    }

    /// `{"task": [succeeded, failed, retried], …}`, as `canvas.heartbeat` takes it.
    var jsonText: String {
        JSONValue.object(
            byTask.mapValues { .array([.int($0.succeeded), .int($0.failed), .int($0.retried)]) }
        ).jsonText
    }
}
