import Foundation
import Logging
import Postgres

/// The supervisor's housekeeping thread, on its own connection so a slow batch never delays a
/// heartbeat: heartbeats, rescues the jobs of silent workers, prunes old results.
///
/// `@unchecked Sendable`: the supervisor builds it and hands it to the maintenance thread, which
/// alone touches its mutable state; the supervisor only calls `requestStop()`, which goes through
/// `stopFlag` (and `state`), both guarded by their locks.
final class Maintenance: @unchecked Sendable {
    let configuration: WorkerConfiguration
    let state: SharedState
    let logger: Logger
    let reregister: (Connection) throws -> Int64
    private let db: ReconnectingConnection
    private let stopFlag = StopFlag()
    private var stop: Bool { stopFlag.isRequested }
    // Each batch stays short and the run stops after half an interval, so heartbeats are at
    // most half an interval late while a backlog is pruned.
    private lazy var pruner = configuration.pruneAfter.map {
        Pruner(age: $0, budget: configuration.heartbeatInterval / 2)
    }
    private lazy var vacuumer = Vacuumer(interval: configuration.heartbeatInterval)
    /// Set while a VACUUM runs on its own thread (read and written under `vacuumLock`).
    private var vacuuming = false
    private let vacuumLock = NSLock()

    init(
        configuration: WorkerConfiguration, state: SharedState, logger: Logger,
        reregister: @escaping (Connection) throws -> Int64
    ) {
        self.configuration = configuration
        self.state = state
        self.logger = logger
        self.reregister = reregister
        db = ReconnectingConnection(configuration.database, logger: logger)
    }

    func requestStop() { stopFlag.request() }

    /// Runs a VACUUM of canvas.jobs on a thread and a short-lived connection of its own: on a
    /// large table it can take longer than `--rescue-after`, and on this thread it would hold
    /// back the heartbeats until other workers presumed this one dead and ran its jobs again.
    /// One at a time; the connection is one more than the worker registered, for the VACUUM's
    /// length (docs/operations.md).
    private func startVacuum(dead: Int) {
        let idle = vacuumLock.withLock {
            defer { vacuuming = true }
            return !vacuuming
        }
        guard idle else { return }
        let thread = Thread { [self, configuration, logger] in
            defer { vacuumLock.withLock { vacuuming = false } }
            do {
                let started = Date()
                try Vacuumer.vacuum(on: try Connection.connect(configuration.database))
                logger.debug(
                    "vacuumed canvas.jobs",
                    metadata: ["dead_rows": "\(dead)", "seconds": "\(Date().timeIntervalSince(started))"])
            } catch {
                logger.warning("could not vacuum canvas.jobs", metadata: ["error": "\(error)"])
            }
        }
        thread.name = "vacuum"
        thread.start()
    }

    func run() {
        while !stop {
            do {
                let c = try db.get()
                // A stuck broker loop would hold its jobs forever while this thread beats on:
                // beat only for a worker whose loops went round within its rescue-after, so a
                // loop stuck longer than that (not an idle one: it wakes every heartbeat
                // interval) gets its jobs rescued.
                let silence = state.loopSilence
                let id = state.workerID
                if silence > configuration.rescueAfter {
                    logger.error(
                        "a worker loop is stuck; not sending heartbeats, so other workers will rescue its jobs",
                        metadata: ["silent_s": "\(Int(silence))"])
                } else {
                    let finished = state.takeFinished()
                    let alive: Bool
                    do {
                        alive = try Broker.heartbeat(worker: id, counts: finished, on: c)
                    } catch {
                        state.restoreFinished(finished)
                        throw error
                    }
                    if alive {
                        state.heartbeatSent()
                    } else if try state.reregister(replacing: id, { try reregister(c) }) {
                        logger.error("this worker was presumed dead and its jobs were rescued; registering again")
                    }
                }
                // Right after a reconnect every worker's heartbeat looks stale (the server was
                // away for all of them): rescue only once this one has been connected long enough
                // for the others to have beaten again.
                if Date().timeIntervalSince(db.connectedSince) >= configuration.rescueAfter {
                    for (job, newState) in try Broker.rescue(on: c) {
                        if newState == "failed" {
                            logger.error("Job \(job) failed: its worker died too many times while running it")
                        } else {
                            logger.warning("Job \(job) rescued from a worker that stopped heartbeating; requeued")
                        }
                    }
                }
                // Short batches within half an interval, as pruning does: a large expired backlog is
                // worked off over several rounds and never delays a heartbeat by more than that.
                let expiryBudget = Date().addingTimeInterval(configuration.heartbeatInterval / 2)
                var expired = 0
                while !stop {
                    let n = try Broker.expireDue(limit: 200, on: c)
                    expired += n
                    if n < 200 || Date() >= expiryBudget { break }
                }
                if expired > 0 { logger.info("cancelled expired jobs", metadata: ["jobs": "\(expired)"]) }
                if let pruned = try pruner?.runIfDue(on: c), pruned.deleted > 0 {
                    logger.info(
                        "pruned finished work",
                        metadata: [
                            "pruned.jobs": "\(pruned.jobs)", "pruned.chords": "\(pruned.chords)",
                            "pruned.firings": "\(pruned.firings)",
                        ])
                }
                switch try vacuumer.runIfDue(on: c, perform: { [self] dead in startVacuum(dead: dead) }) {
                case .vacuumed:
                    break
                case .notPermitted:
                    logger.info("this role may not vacuum canvas.jobs; autovacuum keeps the claim index short")
                case .idle:
                    break
                }
            } catch  where error.isConnectionProblem {
                db.failed(error, shouldStop: { stop })
                continue
            } catch {
                logger.error("maintenance failed", metadata: ["error": "\(error)"])
            }
            let until = Date().addingTimeInterval(configuration.heartbeatInterval)
            while Date() < until, !stop { usleep(50_000) }
        }
    }
}
