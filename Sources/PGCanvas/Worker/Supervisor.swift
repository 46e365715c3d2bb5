import Foundation
import Logging
import Postgres

/// Celery's MainProcess: owns the pool, the broker thread and the housekeeping thread, dispatches
/// claimed jobs to idle pool processes, enforces time limits, replaces dead pool processes, and
/// shuts down warm (first SIGTERM/SIGINT) or cold (second).
package final class Supervisor {
    let configuration: WorkerConfiguration
    let registry: TaskRegistry
    let logger: Logger
    var pool: [PoolProcess] = []
    /// With `--pool threads` or `--pool async`, in place of pool processes.
    var inProcess: InProcessPool?
    let limits: RunLimits
    var waiting: [ClaimedJob] = []
    var waitingStart = 0
    var state: SharedState!
    var shutdown: Shutdown = .running
    /// When the warm shutdown runs out of time (set by the first signal).
    var shutdownDeadline: Date?
    var pacing: Pacing
    /// Present with `--metrics-port` only.
    var metrics: WorkerMetrics?

    enum Shutdown { case running, warm, cold }

    package init(configuration: WorkerConfiguration, registry: TaskRegistry, logger: Logger) {
        self.configuration = configuration
        self.registry = registry
        self.logger = logger
        self.pacing = Pacing(maxDepth: configuration.pipelineDepth)
        self.limits = RunLimits(
            registry: registry, defaultHard: configuration.timeLimit, defaultSoft: configuration.softTimeLimit)
    }

    /// Runs until shut down. - Returns: the process exit status. - Throws: start-up failures.
    package func run() throws -> Int32 {
        try configuration.validate()
        let fixed = ConnectionBudget.fixed(beat: configuration.beat, brokerConnections: configuration.brokerConnections)
        let bound = fixed + configuration.concurrency
        let metricsServer = try configuration.metricsPort.map { port in
            let metrics = WorkerMetrics(hostname: configuration.hostname, concurrency: configuration.concurrency)
            self.metrics = metrics
            return try MetricsServer(
                host: configuration.metricsHost, port: port, metrics: metrics, configuration: configuration)
        }
        let register: (Connection) throws -> Int64 = { [configuration] c in
            try Broker.registerWorker(
                hostname: configuration.hostname, pid: getpid(), queues: configuration.queues,
                concurrency: configuration.concurrency, heartbeatInterval: configuration.heartbeatInterval,
                rescueAfter: configuration.rescueAfter, connections: bound, on: c)
        }
        let workerID: Int64
        do {
            workerID = try registerWithinBudget(register, fixed: fixed, bound: bound)
        } catch let error as PostgresError
            where error.sqlState == PostgresError.State.undefinedFunction
            || error.sqlState == "3F000"
        {
            throw CanvasError(
                "the database has no canvas schema: run 'voteradmin migrate' (or PGCanvasMigrations.apply) first")
        }
        state = try SharedState(
            workerID: workerID, capacity: configuration.capacity(depth: 1), lanes: configuration.brokerConnections)
        try Signals.install()
        printBanner(workerID: workerID)
        let lanes = configuration.brokerConnections
        let holders =
            [lanes == 1 ? "the broker" : "\(lanes) broker connections", "maintenance"]
            + (configuration.beat ? ["beat"] : [])
        logger.info(
            "connections: \(fixed) for \(holders.dropLast().joined(separator: ", ")) and \(holders.last ?? "") + up to \(configuration.concurrency) for tasks (connected only when a task uses the database)"
        )

        try startPool()

        if let server = metricsServer {
            server.serve(state: state)
            logger.info(
                "serving /metrics, /healthz and /readyz on \(configuration.metricsHost):\(configuration.metricsPort ?? 0)"
            )
        }
        let brokers = (0..<configuration.brokerConnections).map { lane in
            let broker = BrokerLoop(
                configuration: configuration, state: state, logger: logger, lane: lane, reregister: register)
            broker.metrics = metrics
            return broker
        }
        let maintenance = Maintenance(configuration: configuration, state: state, logger: logger, reregister: register)
        for broker in brokers {
            let brokerThread = Thread { broker.run() }
            brokerThread.name = brokers.count == 1 ? "broker" : "broker-\(broker.lane + 1)"
            brokerThread.start()
        }
        let maintenanceThread = Thread { maintenance.run() }
        maintenanceThread.name = "maintenance"
        maintenanceThread.start()
        let beat = configuration.beat ? BeatLoop(configuration: configuration, logger: logger) : nil
        if let beat {
            let beatThread = Thread { beat.run() }
            beatThread.name = "beat"
            beatThread.start()
        }
        logger.info("pgworker@\(configuration.hostname) ready.")

        eventLoop()

        // Every run has ended: let the broker thread send what is left and stop, within the bound
        // (PostgreSQL may be unreachable). A further signal stops the wait at once.
        beat?.requestStop()
        for broker in brokers { broker.requestStop() }
        while !state.brokerStopped {
            if let deadline = shutdownDeadline, Date() >= deadline {
                logger.warning("worker: outcomes not sent within the shutdown bound; their jobs will be rescued")
                break
            }
            state.eventLoopTicked()
            _ = pollOnce(timeout: 0.1)
            if !Signals.take().isEmpty {
                logger.warning("worker: Cold shutdown (MainProcess)")
                break
            }
        }
        maintenance.requestStop()
        for p in pool where !p.exited { p.closeAndReap(wait: false) }
        inProcess?.close()
        // Its row gone, anything it still held is rescued by the next worker that looks.
        // On a server at its connection limit a new connection may be refused for a moment (other
        // workers are stopping too and still hold theirs): try a few times, or the row would count
        // against the connection budget of the next worker to start until its heartbeat goes stale.
        var quick = configuration.database
        quick.connectTimeout = 2
        for attempt in 1...5 {
            do {
                try Broker.deregister(worker: state.workerID, on: try Connection.connect(quick))
                break
            } catch {
                if attempt == 5 {
                    logger.warning("worker: could not remove its registration", metadata: ["error": "\(error)"])
                } else {
                    usleep(300_000)
                }
            }
        }
        logger.info("worker: stopped", metadata: ["worker.id": "\(state.workerID)"])
        // EX_SOFTWARE: stopped by a fault of its own, so a service manager starts it again.
        return state.fatalError == nil ? 0 : 70
    }

    /// Registers the worker if the server has room for its connections (unless told not to
    /// check), on a connection of its own that is closed on return: it is no part of the budget.
    /// - Throws: `CanvasError` with one line when the worker does not fit.
    private func registerWithinBudget(_ register: (Connection) throws -> Int64, fixed: Int, bound: Int) throws -> Int64
    {
        let setup = try Connection.connect(configuration.database)
        guard configuration.checkConnections else { return try register(setup) }
        return try setup.withTransaction { tx in
            let budget = try Broker.connectionBudget(on: tx)
            guard bound <= budget.free else {
                throw CanvasError(budget.refusal(need: bound, fixed: fixed, concurrency: configuration.concurrency))
            }
            return try register(tx)
        }
    }

    /// Spawns the first pool process (proof that spawning works; the event loop starts the rest
    /// while the first already runs jobs, see `spawnNextPoolProcess`), or starts the in-process
    /// pool's runners.
    private func startPool() throws {
        guard let kind = configuration.pool.inProcessKind else {
            pool.append(try spawn(index: 1))
            return
        }
        // Tasks run in this process.
        Allocator.keepFreedMemory()
        for warmUp in registry.warmUps { warmUp() }
        let capacity: @Sendable (Int) -> Int = { [configuration] depth in configuration.capacity(depth: depth) }
        let runners = InProcessPool(
            kind: kind, size: configuration.concurrency, registry: registry, state: state,
            database: ConnectionConfiguration(conninfo: configuration.database.conninfo, applicationName: "pgworker"),
            connectionSlotWait: configuration.connectionSlotWait, pipelineDepth: configuration.pipelineDepth,
            metrics: metrics, limits: limits, capacity: capacity)
        runners.start()
        inProcess = runners
    }

    /// Whether pool processes are still to be started (prefork, just after start-up).
    var poolIncomplete: Bool { configuration.pool == .prefork && pool.count < configuration.concurrency }

    /// Spawns the next pool process: one per turn of the event loop, so jobs start in those that
    /// run while the rest exec (a fraction of a second for eight on a busy machine). One that
    /// cannot be started now (the first could) stops the worker as a failed replacement does.
    func spawnNextPoolProcess() {
        do {
            pool.append(try spawn(index: pool.count + 1))
        } catch {
            state.fatalError = "cannot start pool process \(pool.count + 1): \(error)"
        }
    }

    func spawn(index: Int) throws -> PoolProcess {
        var environment = ProcessInfo.processInfo.environment
        if !configuration.database.conninfo.isEmpty {
            environment["PGCANVAS_POOL_DATABASE_URL"] = configuration.database.conninfo
        }
        return try PoolProcess.spawn(
            index: index, executable: configuration.executablePath,
            arguments: [
                "--pool-process", String(index), "--loglevel", "\(configuration.logLevel)",
                "--idle-connection-timeout", String(configuration.idleConnectionTimeout),
                "--connection-slot-wait", String(configuration.connectionSlotWait),
            ],
            environment: environment)
    }

    func timeLimit(for job: ClaimedJob) -> Double? { limits.hard(job) }

    /// The job's own, else its task's, else the worker's `--soft-time-limit`.
    func softTimeLimit(for job: ClaimedJob) -> Double? { limits.soft(job) }

    func printBanner(workerID: Int64) {
        let lines =
            [
                " -------------- pgworker@\(configuration.hostname) v0.1.0",
                "--- ***** ----- worker id \(workerID), pid \(getpid())",
                "-- ******* ---- .> broker:      postgresql (canvas schema)",
                "- *** --- * --- .> concurrency: \(configuration.concurrency) (\(configuration.pool.bannerName))",
                "- ** ---------- .> queues:      \(configuration.queues.joined(separator: ", "))",
                "",
                "[tasks]",
            ] + registry.names.map { "  . \($0)" } + [""]
        if configuration.logLevel <= .info {
            FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        }
    }
}
