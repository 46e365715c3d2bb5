import ArgumentParser
import CommandSupport
import Foundation
import Logging
import PGCanvas
import Postgres

/// The `pgworker` command line, run with an application's own tasks. An application's worker is
/// a few lines:
///
/// ```swift
/// import PGCanvasWorker
///
/// @main struct Worker {
///     static func main() async { await PGWorker.main(tasks: [add, sum]) }
/// }
/// ```
///
/// It takes every `pgworker` flag (`--concurrency`, `--queues`, `--beat`, …), logs as Celery
/// does, and runs tasks in pool processes: fresh processes of the same binary.
public enum PGWorker {
    /// Runs the worker with these tasks and the built-in `canvas.*` ones, then exits.
    ///
    /// On the main thread (hence `@MainActor`): the supervisor's loop, and a pool process's job
    /// loop, block the thread they run on, and a typed task's async body needs Swift's
    /// cooperative threads free while that loop waits for it. A task must therefore not need the
    /// main actor.
    /// - Parameter arguments: the command line without the program name.
    @MainActor
    public static func main(
        tasks: [any WorkerTask], arguments: [String] = Array(CommandLine.arguments.dropFirst())
    ) async -> Never {
        var registry = TaskRegistry()
        for task in tasks { task.register(into: &registry) }
        main(registry: registry, arguments: arguments)
    }

    /// Runs the worker with a registry built by hand (untyped tasks, warm-ups), then exits.
    public static func main(
        registry: TaskRegistry, arguments: [String] = Array(CommandLine.arguments.dropFirst())
    ) -> Never {
        runCommandLine(WorkerCommand.self, name: "pgworker", arguments: arguments) { command in
            try command.run(registry: registry)
        }
    }
}

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pgworker",
        abstract: "Run pgcanvas jobs from PostgreSQL: one supervisor and N pool processes, threads or async runners.",
        version: "0.1.0")

    @OptionGroup var database: DatabaseOptions

    @Option(name: [.short, .long], help: "Pool processes, threads or async runners (Celery's -c).")
    var concurrency: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(
        name: [.customShort("P"), .long],
        help: "prefork (processes, isolated: the default), threads, or async (Swift tasks in this process).")
    var pool: String = PoolKind.prefork.rawValue

    @Option(name: [.short, .long], help: "Comma-separated queues to take jobs from.")
    var queues: String = "default"

    @Option(name: [.short, .long], help: "The name this worker shows in logs and canvas.workers.")
    var hostname: String = ProcessInfo.processInfo.hostName

    @Option(name: [.short, .long], help: "DEBUG, INFO, WARNING or ERROR.")
    var loglevel: String = "info"

    @Option(
        help:
            "Jobs to claim beyond the idle pool slots (default: 2 × concurrency, and up to 384 more while jobs take microseconds)."
    )
    var prefetch: Int?

    @Option(
        name: .customLong("broker-connections"),
        help:
            "Connections that claim and finish jobs, each on its own thread (default 1; 2 for more than one core's worth of short jobs)."
    )
    var brokerConnections: Int = 1

    @Option(name: .customLong("time-limit"), help: "Seconds a job may run before its pool process is killed.")
    var timeLimit: Double?

    @Option(
        name: .customLong("soft-time-limit"),
        help: "Seconds after which a job is told to stop (ctx.softTimeLimitExceeded, cancellation).")
    var softTimeLimit: Double?

    @Option(name: .customLong("poll-interval"), help: "Seconds between polls when no NOTIFY arrives.")
    var pollInterval: Double = 1

    @Flag(name: .customLong("poll-only"), help: "Never LISTEN (for poolers in transaction mode); only poll.")
    var pollOnly = false

    @Flag(
        name: .customLong("no-connection-check"),
        help: "Start even if max_connections has no room for this worker's connections (behind PgBouncer).")
    var noConnectionCheck = false

    @Option(
        name: .customLong("idle-connection-timeout"),
        help: "Seconds a pool process keeps a database connection no task has used.")
    var idleConnectionTimeout: Double = 30

    // How long a task waits for a server slot when refused with "too many clients" (tests).
    @Option(name: .customLong("connection-slot-wait"), help: .hidden)
    var connectionSlotWait: Double = 20

    @Option(name: .customLong("rescue-after"), help: "Seconds of silence after which a worker is presumed dead.")
    var rescueAfter: Double = 15

    @Option(name: .customLong("heartbeat-interval"), help: "Seconds between heartbeats.")
    var heartbeatInterval: Double = 2

    @Option(
        name: .customLong("shutdown-timeout"),
        help: "Seconds the first SIGTERM may take (running jobs, unsent results) before a cold shutdown.")
    var shutdownTimeout: Double = 30

    @Option(name: .customLong("prune-after"), help: "Seconds after which finished jobs are deleted (0: never).")
    var pruneAfter: Double = 86_400

    @Flag(help: "Also fire periodic tasks (safe to run in any number of workers: each tick fires once).")
    var beat = false

    @Option(
        name: .customLong("metrics-port"),
        help: "Serve /metrics (Prometheus), /healthz and /readyz on this port.")
    var metricsPort: Int?

    @Option(name: .customLong("metrics-host"), help: "The IPv4 address --metrics-port listens on (0.0.0.0: all).")
    var metricsHost: String = "127.0.0.1"

    @Option(name: .customLong("pool-process"), help: .hidden)
    var poolProcess: Int?

    var level: Logger.Level { Logger.Level(celeryName: loglevel) ?? .info }

    func validate() throws {
        guard Logger.Level(celeryName: loglevel) != nil else {
            throw ValidationError("unknown --loglevel '\(loglevel)' (use DEBUG, INFO, WARNING or ERROR)")
        }
        guard PoolKind(rawValue: pool) != nil else {
            throw ValidationError("unknown --pool '\(pool)' (use prefork, threads or async)")
        }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1, not \(concurrency)") }
        guard pruneAfter == 0 || pruneAfter > 0 else {
            throw ValidationError("--prune-after must be 0 (never) or more seconds")
        }
        do {
            try configuration().validate()
        } catch let error as CanvasError {
            throw ValidationError(error.description)
        }
    }

    /// The worker's settings from the command line (pool processes take theirs from the supervisor).
    func configuration() -> WorkerConfiguration {
        var config = WorkerConfiguration(database: database.configuration(applicationName: "pgworker"))
        config.concurrency = concurrency
        config.pool = PoolKind(rawValue: pool) ?? .prefork
        config.queues = queues.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        config.hostname = hostname
        config.brokerConnections = brokerConnections
        config.prefetch = prefetch ?? 2 * concurrency
        // A prefetch given is taken as exact (`--prefetch 0`: hold only what runs).
        if prefetch != nil { config.shortJobPrefetch = 0 }
        config.timeLimit = timeLimit
        config.softTimeLimit = softTimeLimit
        config.pollInterval = pollInterval
        config.pollOnly = pollOnly
        config.checkConnections = !noConnectionCheck
        config.idleConnectionTimeout = idleConnectionTimeout
        config.connectionSlotWait = connectionSlotWait
        config.rescueAfter = rescueAfter
        config.heartbeatInterval = heartbeatInterval
        config.shutdownTimeout = shutdownTimeout
        config.pruneAfter = pruneAfter > 0 ? pruneAfter : nil
        config.logLevel = level
        config.beat = beat
        config.metricsPort = metricsPort
        config.metricsHost = metricsHost
        config.executablePath = Bundle.main.executablePath ?? CommandLine.arguments[0]
        return config
    }

    func run() throws {
        throw ValidationError("pgworker runs through PGWorker.main")
    }

    func run(registry: TaskRegistry) throws {
        if let index = poolProcess {
            let name = "ForkPoolWorker-\(index)"
            LoggingSystem.bootstrap { [level] _ in CeleryStyleLogHandler(processName: name, level: level) }
            let url = ProcessInfo.processInfo.environment["PGCANVAS_POOL_DATABASE_URL"]
            PoolProcessMain.run(
                index: index, registry: registry,
                database: ConnectionConfiguration.resolve(databaseURL: url, applicationName: "pgworker \(name)"),
                idleConnectionTimeout: idleConnectionTimeout, connectionSlotWait: connectionSlotWait,
                logger: Logger(label: "pgcanvas.pool"))
        }
        // An in-process pool's runners log under their own names, as pool processes do.
        LoggingSystem.bootstrap { [level] label in
            let runner = label.hasPrefix("pgcanvas.pool.") ? String(label.dropFirst("pgcanvas.pool.".count)) : nil
            return CeleryStyleLogHandler(processName: runner ?? "MainProcess", level: level)
        }
        let status = try Supervisor(
            configuration: configuration(), registry: registry, logger: Logger(label: "pgcanvas.worker")
        )
        .run()
        if status != 0 { throw ExitCode(status) }
    }
}
