import Foundation
import Logging
import Postgres

/// Where a worker runs its tasks (Celery's `--pool`).
package enum PoolKind: String, Sendable, CaseIterable {
    /// Pool processes: a task that crashes or hangs takes only its process (the default).
    case prefork
    /// Threads of the worker process (Celery's `threads`).
    case threads
    /// Swift concurrency tasks in the worker process: typed async tasks run natively.
    case async

    var inProcessKind: InProcessPool.Kind? {
        switch self {
        case .prefork: nil
        case .threads: .threads
        case .async: .async
        }
    }

    var bannerName: String {
        switch self {
        case .prefork: "prefork, spawned"
        case .threads: "threads"
        case .async: "async"
        }
    }
}

/// Everything a `pgworker` process needs to know, as parsed from its command line.
package struct WorkerConfiguration: Sendable {
    package var database: ConnectionConfiguration
    /// Pool processes, threads or async runners.
    package var concurrency: Int = 4
    package var pool: PoolKind = .prefork
    package var queues: [String] = ["default"]
    package var hostname: String = ProcessInfo.processInfo.hostName
    /// Jobs claimed beyond the pool's idle slots, so a pool process never waits for the database.
    package var prefetch: Int = 16
    /// The most jobs one pool process holds at once when jobs take microseconds (see `Pacing`).
    package var pipelineDepth: Int = 16
    /// Jobs claimed beyond the pool's slots and `prefetch` while jobs take microseconds: they wait
    /// in the worker's line, not in a pool process, and are done within milliseconds, while a
    /// batch that large spreads one round trip and one commit over many more jobs (100,000 no-op
    /// jobs: 27,000 jobs/s holding 144 at once, 36,000 holding 528; docs/benchmarks.md).
    package var shortJobPrefetch: Int = 384
    /// Broker connections, each with its own thread claiming and finishing (`SharedState`): one
    /// connection's round trips are served by one server process, on one core; two keep two busy.
    package var brokerConnections: Int = 1
    /// How long the broker thread lets outcomes gather into one batch while the queue is deep.
    package var flushDelay: Double = 0.004
    /// How long outcomes may gather while jobs still wait in this worker to start: a finished
    /// job's result, and what follows from it (a chain's next link, a chord's body), are recorded
    /// at most this much later. (River's batch completer waits 50 ms, up to 250 ms.)
    package var gatherLimit: Double = 0.05
    /// Seconds a run may take when neither the job nor its task sets a limit (nil: no limit).
    package var timeLimit: Double? = nil
    /// Seconds after which a run is told to stop when neither the job nor its task sets a soft limit.
    package var softTimeLimit: Double? = nil
    /// Seconds between polls when no NOTIFY arrives (also the fallback for poolers without LISTEN).
    package var pollInterval: Double = 1
    /// Never LISTEN; poll only (for connection poolers in transaction mode).
    package var pollOnly: Bool = false
    /// Check at start that the server has room for this worker's connections (`ConnectionBudget`).
    package var checkConnections: Bool = true
    /// Seconds a pool process keeps a database connection no task has used.
    package var idleConnectionTimeout: Double = 30
    /// Seconds a task waits for a server slot when refused with "too many clients".
    package var connectionSlotWait: Double = 20
    package var heartbeatInterval: Double = 2
    /// A worker whose heartbeat is older than this is presumed dead and its jobs are rescued.
    package var rescueAfter: Double = 15
    /// Seconds a warm shutdown (the first SIGTERM) may take, running jobs and unsent outcomes
    /// included; then the worker shuts down cold and exits. What it could not report is rescued.
    package var shutdownTimeout: Double = 30
    /// Finished jobs older than this are pruned (nil: never).
    package var pruneAfter: Double? = 86_400
    package var logLevel: Logger.Level = .info
    /// Also fire periodic tasks (any number of workers may).
    package var beat: Bool = false
    /// The binary to start pool processes from (this one).
    package var executablePath: String = CommandLine.arguments[0]
    /// `--metrics-port`: serve /metrics, /healthz and /readyz there (nil: no server, no counting).
    package var metricsPort: Int? = nil
    package var metricsHost: String = "127.0.0.1"

    package init(database: ConnectionConfiguration) {
        self.database = database
    }

    /// How many jobs the worker may hold at once: its slots, each `depth` deep (`Pacing`), and
    /// its prefetch; more while jobs take microseconds (`depth` > 1), for each broker connection,
    /// so that each lane's batches stay as large as one lane's alone.
    func capacity(depth: Int) -> Int {
        concurrency * depth + prefetch + (depth > 1 ? shortJobPrefetch * brokerConnections : 0)
    }

    /// - Throws: `CanvasError` for settings that cannot work.
    package func validate() throws {
        if concurrency < 1 || concurrency > 1024 { throw CanvasError("--concurrency must be between 1 and 1024") }
        if queues.isEmpty || queues.contains(where: \.isEmpty) { throw CanvasError("--queues needs queue names") }
        if prefetch < 0 { throw CanvasError("--prefetch must be 0 or more") }
        if !(1...8).contains(brokerConnections) { throw CanvasError("--broker-connections must be between 1 and 8") }
        if let timeLimit, timeLimit <= 0 { throw CanvasError("--time-limit must be more than 0 seconds") }
        if !(pollInterval > 0 && pollInterval <= 3600) {
            throw CanvasError("--poll-interval must be more than 0 seconds and at most 3600")
        }
        if !(heartbeatInterval > 0 && heartbeatInterval <= 3600) {
            throw CanvasError("--heartbeat-interval must be more than 0 seconds and at most 3600")
        }
        if !(rescueAfter <= 86_400) { throw CanvasError("--rescue-after must be at most 86400 seconds") }
        if let pruneAfter, !(pruneAfter > 0 && pruneAfter <= 315_360_000) {
            throw CanvasError("--prune-after must be 0 (never) or more, and at most 315360000 seconds")
        }
        if let timeLimit, !(timeLimit <= 31_536_000) {
            throw CanvasError("--time-limit must be at most 31536000 seconds")
        }
        if let softTimeLimit, !(softTimeLimit > 0 && softTimeLimit <= 31_536_000) {
            throw CanvasError("--soft-time-limit must be more than 0 seconds and at most 31536000")
        }
        if let softTimeLimit, let timeLimit, softTimeLimit >= timeLimit {
            throw CanvasError("--soft-time-limit must be less than --time-limit")
        }
        if !(idleConnectionTimeout > 0 && idleConnectionTimeout <= 86_400) {
            throw CanvasError("--idle-connection-timeout must be more than 0 seconds and at most 86400")
        }
        if !(connectionSlotWait >= 0 && connectionSlotWait <= 3600) {
            throw CanvasError("--connection-slot-wait must be from 0 to 3600 seconds")
        }
        if prefetch > 100_000 { throw CanvasError("--prefetch must be at most 100000") }
        if !(shutdownTimeout > 0 && shutdownTimeout <= 86_400) {
            throw CanvasError("--shutdown-timeout must be more than 0 seconds and at most 86400")
        }
        if let metricsPort, !(1...65535).contains(metricsPort) {
            throw CanvasError("--metrics-port must be between 1 and 65535")
        }
        if rescueAfter <= heartbeatInterval * 2 {
            throw CanvasError("--rescue-after must be more than twice the heartbeat interval (\(heartbeatInterval) s)")
        }
    }
}
