import Foundation
import Logging
import Postgres

/// Celery's `--pool threads`, and an async pool: jobs run inside the worker process, on N threads
/// of its own or as up to N Swift concurrency tasks, taking them from one shared line.
///
/// No pipe, no frame and no process switch per job, which is what makes it faster than prefork for
/// short jobs; the price is isolation. A task that crashes takes the whole worker with it (its
/// jobs are rescued, as for any dead worker), and a run past its hard time limit or cancelled in
/// the database cannot be killed: the pool settles it at once (the same outcome prefork reports),
/// cancels an async body, forgets the runner and starts another in its place. Whatever the
/// forgotten run returns later is dropped: a run is settled by exactly one of its runner and the
/// supervisor, decided under the pool's lock.
///
/// `@unchecked Sendable`: every stored property is guarded by `lock`, except what a `Runner`
/// owns while it runs a job (its connection), which the supervisor touches only while it is idle.
final class InProcessPool: @unchecked Sendable {
    enum Kind: String, Sendable {
        case threads, async

        var workerName: String { self == .threads ? "ThreadPoolWorker" : "AsyncPoolWorker" }
    }

    /// One worker of the pool: a thread, or a long-lived Swift task.
    final class Runner: @unchecked Sendable {
        let id: Int
        /// Its place in the pool (its name); a replacement takes the place of a forgotten runner.
        let slot: Int
        let logger: Logger
        /// Running a job (guarded by the pool's lock). Only while it is not does the supervisor
        /// close an idle connection.
        var busy = false
        /// Its run was settled by the supervisor: it exits once that run returns.
        var retired = false
        /// When it last finished a job (uptime, ns), for the idle connection timeout.
        var idleSince = DispatchTime.now().uptimeNanoseconds
        /// Opened on a task's first use; set and cleared under the pool's lock, used by the runner
        /// while busy (and cancelled by the supervisor when it forgets the runner's run).
        var connection: Connection?
        /// An async pool runs synchronous bodies here, on a thread of their own, never on Swift's
        /// cooperative threads: blocking there (libpq, a typed task waited for) could hold them all.
        let blockingQueue: DispatchQueue

        init(id: Int, slot: Int, logger: Logger) {
            self.id = id
            self.slot = slot
            self.logger = logger
            self.blockingQueue = DispatchQueue(label: "pgcanvas.pool.\(slot).\(id)")
        }
    }

    /// A job handed to a runner, and, once it started, until when it may run.
    struct Run {
        var job: ClaimedJob
        var runner: Runner
        /// Set when the runner starts it: its limits count from then, not from the hand-off.
        var deadline: UInt64?
        var softDeadline: UInt64?
        /// Cancels an async body; nil until it started, or for synchronous code.
        var cancel: CancelHandle?
        var cancelRequested = false
        /// The runner's connection when the run was forgotten: its statement is cancelled.
        var leftConnection: Connection?
    }

    /// More runs than this left behind (settled while their code went on) and the worker restarts:
    /// each holds a thread, perhaps a connection, beyond what the worker registered.
    var runawayBound: Int { size }

    /// Why the supervisor settled a run itself.
    enum Stop { case timeLimit, cancel }

    let kind: Kind
    let size: Int
    private let registry: TaskRegistry
    private let state: SharedState
    private let database: ConnectionConfiguration
    private let connectionSlotWait: Double
    private let limits: RunLimits
    private let metrics: WorkerMetrics?
    /// The jobs the worker may hold at a pacing depth (`WorkerConfiguration.capacity`).
    private let capacity: @Sendable (Int) -> Int

    private let lock = NSCondition()
    private var line: [ClaimedJob] = []
    private var lineStart = 0
    private var running: [Int64: Run] = [:]
    private var runners: [Int: Runner] = [:]
    private var nextRunnerID = 0
    private var asyncWaiters: [(Runner, CheckedContinuation<ClaimedJob?, Never>)] = []
    private var closed = false
    private var pacing: Pacing
    /// When the supervisor's loop next wakes by itself (uptime, ns): a run with an earlier
    /// deadline wakes it.
    private var plannedWake: UInt64 = 0
    /// Runs forgotten by the supervisor that have not returned yet.
    private var runaways = 0
    /// When the supervisor asked Swift's cooperative threads for a moment and has not had it yet
    /// (uptime, ns): an async pool's way to see that blocked code holds every one of them.
    private var probeSent: UInt64?
    /// When the last probe ran: one a second is enough.
    private var probeAnswered: UInt64 = 0

    init(
        kind: Kind, size: Int, registry: TaskRegistry, state: SharedState, database: ConnectionConfiguration,
        connectionSlotWait: Double, pipelineDepth: Int, metrics: WorkerMetrics?, limits: RunLimits,
        capacity: @escaping @Sendable (Int) -> Int
    ) {
        self.kind = kind
        self.size = size
        self.registry = registry
        self.state = state
        self.database = database
        self.connectionSlotWait = connectionSlotWait
        self.metrics = metrics
        self.limits = limits
        self.capacity = capacity
        self.pacing = Pacing(maxDepth: pipelineDepth)
    }

    private func locked<T>(_ body: () -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body()
    }

    // MARK: the supervisor's side

    /// Starts every runner.
    func start() {
        for slot in 1...size { startRunner(slot: slot) }
    }

    /// Adds jobs to the line and wakes as many idle runners.
    func submit(_ jobs: [ClaimedJob]) {
        guard !jobs.isEmpty else { return }
        var handOff: [(CheckedContinuation<ClaimedJob?, Never>, ClaimedJob)] = []
        locked {
            line.append(contentsOf: jobs)
            while !asyncWaiters.isEmpty, let job = takeFromLine() {
                let (runner, continuation) = asyncWaiters.removeLast()
                assign(job, to: runner)
                handOff.append((continuation, job))
            }
            publishLine()
            if kind == .threads {
                if jobs.count >= size { lock.broadcast() } else { for _ in jobs { lock.signal() } }
            }
        }
        for (continuation, job) in handOff { continuation.resume(returning: job) }
    }

    /// Jobs in the line that no runner has taken: handed back at a shutdown.
    func takeQueued() -> [ClaimedJob] {
        locked {
            defer {
                line.removeAll()
                lineStart = 0
                publishLine()
            }
            return Array(line[lineStart...])
        }
    }

    /// Jobs cancelled in the database: those still in line leave it, those running are settled
    /// here and their runners forgotten. - Returns: both, for the supervisor to report.
    func cancel(_ ids: Set<Int64>) -> (queued: [ClaimedJob], running: [ClaimedJob]) {
        let (queued, stopped) = locked {
            let waitingLine = line[lineStart...]
            let queued = waitingLine.filter { ids.contains($0.id) }
            if !queued.isEmpty {
                line = waitingLine.filter { !ids.contains($0.id) }
                lineStart = 0
                publishLine()
            }
            return (queued, ids.compactMap { forget($0) })
        }
        replace(stopped)
        return (queued, stopped.map(\.job))
    }

    /// Settles what ran past its hard time limit (forgetting their runners) and cancels async
    /// bodies past their soft one. - Returns: the jobs whose hard limit passed.
    func enforceTimeLimits() -> [ClaimedJob] {
        let now = DispatchTime.now().uptimeNanoseconds
        var softStops: [CancelHandle] = []
        let expired = locked {
            var expired: [Run] = []
            for (id, run) in running {
                if let deadline = run.deadline, deadline <= now {
                    if let run = forget(id) { expired.append(run) }
                } else if let soft = run.softDeadline, soft <= now, !run.cancelRequested {
                    running[id]?.cancelRequested = true
                    if let cancel = run.cancel { softStops.append(cancel) }
                }
            }
            return expired
        }
        for stop in softStops { stop.cancel() }
        replace(expired)
        return expired.map(\.job)
    }

    /// Seconds until the next deadline of a running job, at most `limit`; the loop sleeps that long.
    func secondsToNextDeadline(atMost limit: Double) -> Double {
        let now = DispatchTime.now().uptimeNanoseconds
        return locked {
            var wake = now + Self.nanoseconds(limit)
            for run in running.values {
                if let d = run.deadline { wake = min(wake, d) }
                if let d = run.softDeadline, !run.cancelRequested { wake = min(wake, d) }
            }
            plannedWake = wake
            return Double(wake &- min(wake, now)) / 1e9
        }
    }

    /// Settles every run here and forgets their runners (a cold shutdown). - Returns: their jobs.
    func abandonAll() -> [ClaimedJob] {
        let runs = locked { Array(running.keys).compactMap { forget($0) } }
        for run in runs { stop(run) }
        return runs.map(\.job)
    }

    var runningCount: Int { locked { running.count } }

    /// Whether code the pool could not stop has taken too much from it: more runs it settled
    /// (time limit, cancel) still going than it has runners, or Swift's cooperative threads all
    /// held (a probe task has not run for `seconds`) while such runs exist. An async body that
    /// blocks holds a cooperative thread (one per core); once they are all held nothing async runs
    /// again, in either pool (the threads pool awaits typed bodies there). Only the end of the
    /// process frees them. - Returns: why, when so.
    func starvation(after seconds: Double) -> String? {
        let now = DispatchTime.now().uptimeNanoseconds
        let (send, starved, left) = locked { () -> (Bool, Bool, Int) in
            guard let sent = probeSent else {
                guard now &- probeAnswered > 1_000_000_000 else { return (false, false, runaways) }
                probeSent = now
                return (true, false, runaways)
            }
            return (false, runaways > 0 && now &- sent > Self.nanoseconds(seconds), runaways)
        }
        if send {
            Task.detached { [self] in
                locked {
                    probeSent = nil
                    probeAnswered = DispatchTime.now().uptimeNanoseconds
                }
            }
        }
        if left > runawayBound {
            return
                "the \(kind.rawValue) pool left \(left) runs behind (settled at a time limit or cancel while their code went on), more than its \(size) runners; restarting the worker"
        }
        guard starved else { return nil }
        return
            "the \(kind.rawValue) pool is starved: for \(formatSeconds(seconds))s no Swift task could run while runs it settled (time limit, cancel) still hold its threads; restarting the worker"
    }

    /// Closes connections no task has used for `seconds`, so an idle pool holds no server slots.
    func closeIdleConnections(after seconds: Double) {
        let cutoff = DispatchTime.now().uptimeNanoseconds &- UInt64(seconds * 1e9)
        let idle: [Connection] = locked {
            var idle: [Connection] = []
            for runner in runners.values where !runner.busy && runner.idleSince <= cutoff {
                if let c = runner.connection {
                    idle.append(c)
                    runner.connection = nil
                }
            }
            return idle
        }
        _ = idle  // closed as the last reference goes, outside the lock
    }

    /// Stops every runner once it is idle (the worker is exiting).
    func close() {
        let waiters = locked {
            closed = true
            lock.broadcast()
            defer { asyncWaiters.removeAll() }
            return asyncWaiters
        }
        for (_, continuation) in waiters { continuation.resume(returning: nil) }
    }

    // MARK: internals, with `lock` held

    private func takeFromLine() -> ClaimedJob? {
        guard lineStart < line.count else { return nil }
        let job = line[lineStart]
        lineStart += 1
        if lineStart == line.count {
            line.removeAll(keepingCapacity: line.capacity <= 4096)
            lineStart = 0
        } else if lineStart > 1024 && lineStart * 2 > line.count {
            line.removeFirst(lineStart)
            lineStart = 0
        }
        publishLine()
        return job
    }

    /// Tells the broker how many jobs wait here for a runner (`SharedState.waitingToStart`).
    private func publishLine() { state.publishPoolLine(line.count - lineStart) }

    /// Hands `job` to `runner`: from now on the pool answers for it (settled by the runner, or by
    /// the supervisor if it cancels or abandons it before the runner is done).
    private func assign(_ job: ClaimedJob, to runner: Runner) {
        runner.busy = true
        running[job.id] = Run(job: job, runner: runner)
    }

    /// The runner is about to run `job`: its limits start now. - Returns: false when the job was
    /// settled before its runner got to it (cancelled, or abandoned at a shutdown): the runner
    /// must not run it, and stops, as it was retired with it.
    private func start(_ job: ClaimedJob, on runner: Runner) -> Bool {
        lock.lock()
        guard let run = running[job.id], run.runner === runner, !runner.retired else {
            runaways -= 1
            lock.unlock()
            return false
        }
        let now = DispatchTime.now().uptimeNanoseconds
        let deadline = limits.hard(run.job).map { now &+ Self.nanoseconds($0) }
        let soft = kind == .async ? limits.soft(run.job).map { now &+ Self.nanoseconds($0) } : nil
        running[job.id]?.deadline = deadline
        running[job.id]?.softDeadline = soft
        let wake = [deadline, soft].compactMap { $0 }.min().map { $0 < plannedWake } ?? false
        if wake { plannedWake = 0 }
        lock.unlock()
        // The supervisor's loop sleeps until the next deadline it knew of: this one may be sooner.
        if wake { SharedState.poke(state.mainWake.write) }
        return true
    }

    /// Sets the worker's capacity for the new depth; when jobs got long, hands back what was
    /// claimed for short ones beyond it, for idle workers rather than to wait here.
    private func depthChanged() {
        let held = capacity(pacing.depth)
        state.setCapacity(held)
        let room = max(0, held - running.count)
        let waitingCount = line.count - lineStart
        guard waitingCount > room else { return }
        let surplus = Array(line[(lineStart + room)...])
        line.removeLast(surplus.count)
        publishLine()
        state.handBack(surplus)
    }

    /// Seconds as nanoseconds, bounded (a limit of a century is as good as none).
    static func nanoseconds(_ seconds: Double) -> UInt64 { UInt64(max(0, min(seconds, 3e9)) * 1e9) }

    /// Takes the run of `id` away from its runner, which is retired. - Returns: the run.
    private func forget(_ id: Int64) -> Run? {
        guard let run = running.removeValue(forKey: id) else { return nil }
        run.runner.retired = true
        runners[run.runner.id] = nil
        runaways += 1
        var forgotten = run
        forgotten.leftConnection = run.runner.connection
        return forgotten
    }

    private func startRunner(slot: Int) {
        let runner = locked {
            nextRunnerID += 1
            let runner = Runner(
                id: nextRunnerID, slot: slot,
                logger: Logger(label: "pgcanvas.pool.\(kind.workerName)-\(slot)"))
            runners[runner.id] = runner
            return runner
        }
        switch kind {
        case .threads:
            let thread = Thread { [self] in threadLoop(runner) }
            thread.name = "\(kind.workerName)-\(slot)"
            thread.start()
        case .async:
            Task.detached { [self] in await asyncLoop(runner) }
        }
    }

    /// Gives each forgotten run's place to a new runner, and stops what can be stopped of it.
    private func replace(_ runs: [Run]) {
        for run in runs {
            stop(run)
            if !locked({ closed }) { startRunner(slot: run.runner.slot) }
        }
    }

    /// Cancels a forgotten run's async body, and the statement it may have left running, which
    /// would hold a connection beyond the worker's budget, and its locks (this usually ends the
    /// run too).
    private func stop(_ run: Run) {
        run.cancel?.cancel()
        run.leftConnection?.cancel()
    }

    // MARK: the runners' side

    private func threadLoop(_ runner: Runner) {
        while let job = nextJob(for: runner) {
            guard start(job, on: runner) else { break }
            let report = JobExecution.run(
                message(for: job), registry: registry, logger: runner.logger, connection: connectionProvider(runner)
            ) { [self] cancel in started(job, on: runner, cancel: cancel) }
            guard finish(job, on: runner, report) else { break }
        }
        dropConnection(of: runner)
    }

    private func asyncLoop(_ runner: Runner) async {
        while let job = await nextJobAsync(for: runner) {
            guard start(job, on: runner) else { break }
            let report = await JobExecution.runAsync(
                message(for: job), registry: registry, logger: runner.logger, connection: connectionProvider(runner),
                blockingQueue: runner.blockingQueue,
                cancelledAtSoftLimit: { [self] in locked { running[job.id]?.cancelRequested == true } }
            ) { cancel in started(job, on: runner, cancel: cancel) }
            guard finish(job, on: runner, report) else { break }
        }
        dropConnection(of: runner)
    }

    private func dropConnection(of runner: Runner) {
        let connection = locked {
            defer { runner.connection = nil }
            return runner.connection
        }
        _ = connection  // closed here, outside the lock, as its last reference goes
    }

    private func message(for job: ClaimedJob) -> WireFormat.JobMessage {
        WireFormat.JobMessage(job, softTimeLimit: limits.soft(job))
    }

    private func nextJob(for runner: Runner) -> ClaimedJob? {
        locked {
            while true {
                if closed || runner.retired { return nil }
                if let job = takeFromLine() {
                    assign(job, to: runner)
                    return job
                }
                lock.wait()
            }
        }
    }

    private func nextJobAsync(for runner: Runner) async -> ClaimedJob? {
        // With jobs in line (a busy queue) the runner takes the next one without suspending.
        let ready = locked { () -> ClaimedJob? in
            guard !closed, !runner.retired, let job = takeFromLine() else { return nil }
            assign(job, to: runner)
            return job
        }
        if let ready { return ready }
        return await withCheckedContinuation { (continuation: CheckedContinuation<ClaimedJob?, Never>) in
            lock.lock()
            if closed || runner.retired {
                lock.unlock()
                continuation.resume(returning: nil)
            } else if let job = takeFromLine() {
                assign(job, to: runner)
                lock.unlock()
                continuation.resume(returning: job)
            } else {
                asyncWaiters.append((runner, continuation))
                lock.unlock()
            }
        }
    }

    /// An async body started: the supervisor can now cancel it (at once if it already asked, or
    /// if the run is no longer this runner's).
    private func started(_ job: ClaimedJob, on runner: Runner, cancel: CancelHandle) {
        let now = locked {
            guard let run = running[job.id], run.runner === runner else { return true }
            running[job.id]?.cancel = cancel
            return run.cancelRequested
        }
        if now { cancel.cancel() }
    }

    /// Hands the runner's report to the broker unless the supervisor settled the run first. The
    /// report reaches the broker's outbox before the run leaves `running`, under the pool's lock:
    /// a supervisor that sees no run left (a shutdown) then knows every report is in the outbox.
    /// - Returns: whether the runner goes on (false once it was forgotten).
    private func finish(_ job: ClaimedJob, on runner: Runner, _ report: JobExecution.Report) -> Bool {
        let (settles, goesOn) = locked {
            runner.busy = false
            runner.idleSince = DispatchTime.now().uptimeNanoseconds
            guard let run = running[job.id], run.runner === runner, run.job.attempt == job.attempt else {
                runaways -= 1
                return (false, false)
            }
            state.report(report.outcome(for: job))
            running[job.id] = nil
            if pacing.record(seconds: report.seconds) { depthChanged() }
            return (true, !runner.retired)
        }
        if settles {
            metrics?.recordRuntime(task: job.task, seconds: report.seconds)
        } else {
            runner.logger.warning(
                "Task \(job.task)[\(job.id)] returned after it was settled (time limit or cancel); its outcome is dropped"
            )
        }
        return goesOn
    }

    private func connectionProvider(_ runner: Runner) -> () throws -> Connection {
        let configuration = ConnectionConfiguration(
            conninfo: database.conninfo, applicationName: "pgworker \(kind.workerName)-\(runner.slot)")
        let slotWait = connectionSlotWait
        return { [self] in
            if let c = locked({ runner.connection }), c.isHealthy { return c }
            dropConnection(of: runner)
            let c = try PoolProcessMain.connectWaitingForASlot(configuration, logger: runner.logger, slotWait: slotWait)
            locked { runner.connection = c }
            return c
        }
    }
}
