import Foundation
import Logging

extension Supervisor {
    /// Dispatches until shutdown is complete: every pool process idle (warm) or killed (cold).
    func eventLoop() {
        while true {
            state.eventLoopTicked()
            let now = Date()
            let nextDeadline = pool.compactMap(\.deadline).min()
            var timeout = max(0, min(1.0, nextDeadline.map { $0.timeIntervalSince(now) } ?? 1.0))
            if let inProcess { timeout = inProcess.secondsToNextDeadline(atMost: timeout) }
            if poolIncomplete && shutdown == .running && state.fatalError == nil {
                spawnNextPoolProcess()
                timeout = 0
            }
            _ = pollOnce(timeout: timeout)
            handleSignals()
            stopCancelled()
            enforceTimeLimits()
            takeClaimedJobs()
            dispatch()
            state.publishSupervisorLine(waiting.count - waitingStart)
            if let inProcess, shutdown != .cold, let stalled = inProcess.starvation(after: Self.starvedAfter) {
                // Runs it cannot stop hold what it needs: nothing to wait for. What it holds goes
                // back now, and its exit status tells its service manager to start it again.
                state.fatalError = stalled
                logger.critical("\(stalled)")
                shutDownCold()
            }
            if let fatal = state.fatalError, shutdown == .running {
                // The worker cannot go on (a pool process cannot be started): it stops as on a
                // first SIGTERM, letting running jobs finish, and exits 70.
                logger.critical("\(fatal)")
                beginWarmShutdown()
            }
            if shutdown == .warm, let deadline = shutdownDeadline, Date() >= deadline {
                logger.warning(
                    "worker: warm shutdown took longer than \(formatSeconds(configuration.shutdownTimeout))s; shutting down cold"
                )
                shutDownCold()
            }
            inProcess?.closeIdleConnections(after: configuration.idleConnectionTimeout)
            if shutdown != .running, pool.allSatisfy({ $0.inFlight.isEmpty }), (inProcess?.runningCount ?? 0) == 0 {
                return
            }
        }
    }

    /// Waits for pool output, room in a job pipe, claimed jobs or signals, and handles pool I/O.
    /// Every live pool process is read from on every call, whatever it still has to be sent: it
    /// may be blocked writing results until then.
    func pollOnce(timeout: Double) -> Bool {
        let live = pool.indices.filter { !pool[$0].exited }
        var fds: [pollfd] = []
        fds.reserveCapacity(live.count * 2 + 2)
        for i in live { fds.append(pollfd(fd: pool[i].fromChild, events: Int16(POLLIN), revents: 0)) }
        // Poll ignores a negative fd: a job pipe is watched only while jobs wait for room in it.
        for i in live {
            fds.append(pollfd(fd: pool[i].hasOutgoing ? pool[i].toChild : -1, events: Int16(POLLOUT), revents: 0))
        }
        fds.append(pollfd(fd: state.mainWake.read, events: Int16(POLLIN), revents: 0))
        fds.append(pollfd(fd: Signals.pipeRead, events: Int16(POLLIN), revents: 0))
        let rc = poll(&fds, nfds_t(fds.count), Int32((timeout * 1000).rounded(.up)))
        guard rc > 0 else { return false }
        for (slot, i) in live.enumerated() {
            let p = pool[i]
            // A failed write means the process is gone; its end of file below settles its jobs.
            if fds[live.count + slot].revents != 0 { p.flush() }
            guard fds[slot].revents != 0 else { continue }
            let open = p.readAvailable { frame in handleResult(frame, from: p) }
            if open {
                if shutdown != .cold { topUp(p) }
            } else {
                poolProcessExited(at: i)
            }
        }
        if fds[live.count * 2].revents != 0 { SharedState.drain(state.mainWake.read) }
        return true
    }

    func handleResult(_ frame: UnsafeRawBufferPointer, from p: PoolProcess) {
        guard let message = WireFormat.parseResult(frame) else {
            // The two sides disagree on the framing: nothing it sends can be trusted to answer
            // its jobs, so it is stopped and its jobs are settled as for any crash.
            logger.error("unreadable message from \(p.name) (\(frame.count) bytes); stopping it")
            p.kill()
            return
        }
        guard let job = p.job, job.id == message.outcome.jobID else { return }
        p.finishedHead(timeLimit: timeLimit(for:))
        if pacing.record(seconds: message.seconds) {
            // Short jobs sit several to a pool process: let the broker claim that many more.
            let capacity = configuration.capacity(depth: pacing.depth)
            state.setCapacity(capacity)
            // Jobs got long: what was claimed for short ones beyond the new capacity goes back
            // to the queue for idle workers, rather than wait here behind long runs.
            let room = max(0, capacity - pool.reduce(0) { $0 + $1.inFlight.count })
            if waiting.count - waitingStart > room {
                let surplus = Array(waiting[(waitingStart + room)...])
                waiting.removeLast(surplus.count)
                state.handBack(surplus)
            }
        }
        var outcome = message.outcome
        outcome.task = job.task
        metrics?.recordRuntime(task: job.task, seconds: message.seconds)
        state.report(outcome)
    }

    func poolProcessExited(at index: Int) {
        let p = pool[index]
        let how = p.reap()
        let sent = p.takeInFlight()
        if let job = sent.first {
            switch p.state.killReason {
            case .cancel:
                logger.warning("Task \(job.task)[\(job.id)] cancelled: its pool process \(p.name) was stopped")
                // Cancelled in the database already: this report is fenced off and only settles it.
                state.report(
                    Outcome(jobID: job.id, attempt: job.attempt, task: job.task, kind: .crashed, error: "cancelled"))
            case .timeLimit:
                reportTimeLimit(job)
            case nil where shutdown == .cold:
                state.handBack([job])
            case nil:
                let error =
                    "pool process \(p.name) (pid \(p.pid)) died with \(how) while running \(job.task)[\(job.id)]"
                logger.error("Process '\(p.name)' pid:\(p.pid) exited with '\(how)'")
                state.report(Outcome(jobID: job.id, attempt: job.attempt, task: job.task, kind: .crashed, error: error))
            }
            // Jobs queued behind it never started: they go back without counting a run.
            state.handBack(Array(sent.dropFirst()))
        } else if shutdown == .running {
            logger.error("Process '\(p.name)' pid:\(p.pid) exited with '\(how)'")
        }
        guard shutdown != .cold else { return }
        do {
            pool[index] = try spawn(index: p.index)
        } catch {
            state.fatalError = "cannot replace a pool process: \(error)"
        }
    }

    /// Stops claiming, hands back what has not started, and lets running jobs finish within
    /// `--shutdown-timeout`.
    func beginWarmShutdown() {
        shutdown = .warm
        shutdownDeadline = Date().addingTimeInterval(configuration.shutdownTimeout)
        logger.warning("worker: Warm shutdown (MainProcess)")
        state.stopClaiming()
        let unstarted = Array(waiting[waitingStart...]) + state.takeInbox() + (inProcess?.takeQueued() ?? [])
        waiting.removeAll()
        waitingStart = 0
        state.publishSupervisorLine(0)
        state.handBack(unstarted)
    }

    /// A run went past its hard time limit: it fails at once unless the task's policy names
    /// TimeLimitExceeded, as in Celery.
    func reportTimeLimit(_ job: ClaimedJob) {
        let limit = timeLimit(for: job)
        let error = "Hard time limit (\(limit.map { formatSeconds($0) } ?? "?")s) exceeded for \(job.task)[\(job.id)]"
        logger.error("\(error)")
        let exceeded = TimeLimitExceeded(seconds: limit ?? 0)
        let outcome = RetryDecision.outcome(
            for: exceeded, policy: registry[job.task]?.retryPolicy, attempt: job.attempt,
            message: "TimeLimitExceeded: " + error)
        state.report(
            Outcome(
                jobID: job.id, attempt: job.attempt, task: job.task, kind: outcome?.kind ?? .timeout,
                resultText: JobExecution.withErrorType(outcome?.resultText, of: exceeded),
                error: outcome?.error ?? error))
    }

    func handleSignals() {
        for _ in Signals.take() {
            switch shutdown {
            case .running:
                beginWarmShutdown()
            case .warm, .cold:
                logger.warning("worker: Cold shutdown (MainProcess)")
                shutDownCold()
                // A second signal also means: do not wait for the database on the way out, beyond
                // a moment to hand the running jobs back if it answers.
                shutdownDeadline = Date().addingTimeInterval(Self.handBackGrace)
            }
        }
    }

    /// Seconds an in-process pool's probe of Swift's cooperative threads may go unanswered, while
    /// runs it could not stop still go on, before the worker restarts to be rid of them
    /// (`InProcessPool.starvation`).
    static let starvedAfter = 10.0

    /// How long a cold shutdown waits for the hand-back of running jobs to reach the database.
    static let handBackGrace = 1.0

    /// Kills the pool processes that are running jobs and hands every job back.
    func shutDownCold() {
        shutdown = .cold
        // Past a warm shutdown's bound, or with none: a moment for the hand-back, no more.
        let graceEnd = Date().addingTimeInterval(Self.handBackGrace)
        if shutdownDeadline.map({ $0 < graceEnd }) ?? true { shutdownDeadline = graceEnd }
        state.stopClaiming()
        state.handBack(Array(waiting[waitingStart...]) + state.takeInbox() + (inProcess?.takeQueued() ?? []))
        waiting.removeAll()
        waitingStart = 0
        state.publishSupervisorLine(0)
        // Runs in this process cannot be killed: they are handed back, and what they return is dropped.
        if let inProcess { state.handBack(inProcess.abandonAll()) }
        let busy = pool.filter { !$0.inFlight.isEmpty && !$0.exited }
        for p in busy { p.kill() }
        for p in busy {
            state.handBack(p.takeInFlight())
            _ = p.reap()
        }
    }

    /// Stops runs cancelled in the database: kills the pool process running one, and drops one
    /// still waiting here.
    func stopCancelled() {
        let ids = state.takeCancelled()
        guard !ids.isEmpty else { return }
        let remaining = waiting[waitingStart...].filter { !ids.contains($0.id) }
        for job in waiting[waitingStart...] where ids.contains(job.id) {
            logger.warning("Task \(job.task)[\(job.id)] cancelled before it started")
            state.report(
                Outcome(jobID: job.id, attempt: job.attempt, task: job.task, kind: .crashed, error: "cancelled"))
        }
        waiting = Array(remaining)
        waitingStart = 0
        for p in pool where !p.exited {
            if let head = p.job, ids.contains(head.id) { p.kill(for: .cancel) }
        }
        if let inProcess {
            let (queued, running) = inProcess.cancel(ids)
            for job in queued { logger.warning("Task \(job.task)[\(job.id)] cancelled before it started") }
            for job in running {
                logger.warning(
                    "Task \(job.task)[\(job.id)] cancelled: settled now; an in-process pool cannot stop its code, whose outcome is dropped"
                )
            }
            // Cancelled in the database already: these reports are fenced off and only settle them.
            for job in queued + running {
                state.report(
                    Outcome(jobID: job.id, attempt: job.attempt, task: job.task, kind: .crashed, error: "cancelled"))
            }
        }
    }

    func enforceTimeLimits() {
        let now = Date()
        for p in pool where !p.inFlight.isEmpty {
            if let deadline = p.deadline, deadline <= now { p.kill(for: .timeLimit) }
        }
        for job in inProcess?.enforceTimeLimits() ?? [] { reportTimeLimit(job) }
    }

    func takeClaimedJobs() {
        let fresh = state.takeInbox()
        guard !fresh.isEmpty else { return }
        if shutdown != .running {
            state.handBack(fresh)
            return
        }
        if waitingStart > 1024 {
            waiting.removeFirst(waitingStart)
            waitingStart = 0
        }
        waiting.append(contentsOf: fresh)
    }

    func dispatch() {
        guard shutdown == .running else { return }
        if let inProcess {
            // The pool's own line is the waiting line: any idle runner takes the next job.
            inProcess.submit(Array(waiting[waitingStart...]))
            waiting.removeAll(keepingCapacity: true)
            waitingStart = 0
            return
        }
        for p in pool where !p.exited {
            topUp(p)
            if waitingStart >= waiting.count { return }
        }
    }

    /// Gives a pool process as many waiting jobs as the pacing allows it to hold.
    func topUp(_ p: PoolProcess) {
        guard shutdown == .running, !p.exited, !p.isDying else { return }
        let room = pacing.depth - p.inFlight.count
        guard room > 0, waitingStart < waiting.count else { return }
        let end = min(waiting.count, waitingStart + room)
        let batch = Array(waiting[waitingStart..<end])
        waitingStart = end
        if !p.send(batch, timeLimit: timeLimit(for:), softTimeLimit: softTimeLimit(for:)) {
            // The process is gone; poll notices its exit and the jobs are dealt with then.
            logger.warning("could not hand jobs to \(p.name); they will be retried")
        }
    }
}

/// How many jobs a pool process may hold at once. One while jobs take real time (a job never
/// waits behind another); more when they take microseconds, where a pipe round trip per job
/// would cost more than the jobs themselves.
struct Pacing {
    let maxDepth: Int
    private var average: Double = 0.05
    private(set) var depth = 1

    init(maxDepth: Int) { self.maxDepth = max(1, maxDepth) }

    /// - Returns: whether the depth changed.
    @discardableResult
    mutating func record(seconds: Double) -> Bool {
        average = average * 0.9 + seconds * 0.1
        let old = depth
        depth = average < 0.002 ? maxDepth : 1
        return depth != old
    }
}
