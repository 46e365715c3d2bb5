import Foundation
import Logging
import Postgres

/// The supervisor's database thread: finishes outcomes in batches, hands jobs back, and claims
/// as many jobs as there are free slots, waking on NOTIFY or on the poll interval. With
/// `--broker-connections N` there are N of them (lanes), each on its own connection, sharing the
/// worker's registration, slots and outcomes (see `SharedState`).
///
/// `@unchecked Sendable`: the supervisor builds it and hands it to the broker thread, which alone
/// touches its mutable state (`db`, `maxPayloadBytes`); the supervisor only calls `requestStop()`,
/// which goes through `stopFlag` and `state`, both guarded by their locks.
final class BrokerLoop: @unchecked Sendable {
    let configuration: WorkerConfiguration
    let state: SharedState
    let logger: Logger
    let reregister: (Connection) throws -> Int64
    /// This loop's place among the broker lanes (0 for the first).
    let lane: Int
    private let db: ReconnectingConnection
    private let stopFlag = StopFlag()
    private var stop: Bool { stopFlag.isRequested }
    /// Batches in a row that failed with an error that may pass later (a statement timeout): after
    /// `Self.patience` of them, the batch is isolated like one refused for its data.
    private var failuresInARow = 0
    /// When the soonest retry this worker's finishes scheduled comes due (the broker loop's own
    /// thread only): the pacer claims then, so a short countdown is not stretched to the poll.
    private var retryDue: Date?
    static let patience = 3
    /// `pgcanvas.max_payload_bytes`, read on every connect: larger results fail their job.
    private var maxPayloadBytes = Int.max
    /// Counts outcomes and receipts when `--metrics-port` is given; set before the thread starts.
    var metrics: WorkerMetrics?

    init(
        configuration: WorkerConfiguration, state: SharedState, logger: Logger, lane: Int = 0,
        reregister: @escaping (Connection) throws -> Int64
    ) {
        self.configuration = configuration
        self.state = state
        self.logger = logger
        self.lane = lane
        self.reregister = reregister
        self.db = ReconnectingConnection(configuration.database, logger: logger)
        db.onConnect = { [unowned self, configuration, state, logger] c in
            if !configuration.pollOnly {
                try c.listen(Broker.channel)
                try c.listen(Broker.cancelChannel)
            }
            self.maxPayloadBytes = try Broker.maxPayloadBytes(on: c)
            try Self.reconcile(c, state: state, logger: logger)
        }
    }

    /// After a reconnect, a claim whose answer was lost may have left jobs marked as ours that we
    /// never received: hand those back, or nobody would ever run them. Only while no other lane
    /// has a claim under way: the jobs of one that has committed but not yet been delivered would
    /// look unreceived, and would run twice.
    static func reconcile(_ c: Connection, state: SharedState, logger: Logger) throws {
        try state.whileNoClaimIsUnderWay {
            let rows = try c.query(
                "SELECT id, attempt FROM canvas.jobs WHERE worker_id = \(state.workerID) AND state = 'running'")
            var unknown: [(id: Int64, attempt: Int)] = []
            for row in rows {
                let id: Int64 = try row.decode(Int64.self, 0)
                let attempt: Int = try row.decode(Int.self, 1)
                if !state.isHeld(id, attempt: attempt) { unknown.append((id, attempt)) }
            }
            if !unknown.isEmpty {
                let n = try Broker.release(worker: state.workerID, unknown, on: c)
                logger.warning("handed back jobs claimed before the connection broke", metadata: ["jobs": "\(n)"])
            }
        }
    }

    func requestStop() {
        stopFlag.request()
        state.wakeBroker()
    }

    /// Asks which of the jobs this worker holds were cancelled, and has them stopped.
    private func checkCancelled(_ c: Connection) throws {
        let held = state.heldIDs
        guard !held.isEmpty else { return }
        let rows = try c.query("SELECT id FROM canvas.jobs WHERE id = ANY(\(held)) AND state = 'cancelled'")
        state.requestCancel(try rows.map { try $0.decode(Int64.self, 0) })
    }

    func run() {
        var pacer = ClaimPacer(
            pollInterval: configuration.pollInterval, heartbeatInterval: configuration.heartbeatInterval)
        while true {
            state.brokerLoopTicked(lane: lane)
            let stopping = stop
            // The registration this round's statements speak for (the maintenance thread may
            // replace it meanwhile, after which a refusal is not news).
            let registration = state.workerID
            do {
                let c = try db.get()
                SharedState.drain(state.brokerWakes[lane].read)
                if pacer.shouldGatherOutcomes(stopping: stopping) { gatherOutcomes() }
                // Jobs a claim delivered after the dispatcher stopped would otherwise stay marked as
                // ours until a rescue: hand them back with the rest.
                if stopping { state.handBack(state.takeInbox()) }
                let (outcomes, releases) = state.takeOutgoing(lane: lane)
                // The slots this round claims stay reserved until its jobs are held (or the claim
                // failed), so that another lane claiming at the same time does not count them free.
                let want = state.reserveClaims(afterSettling: outcomes.count, lane: lane, claim: !stopping)
                let decision = pacer.decide(now: Date(), want: want)
                state.unreserve(want - decision.claim)
                var claimed = 0
                do {
                    defer {
                        // Slots a claim reserved and did not fill are free again: other lanes may
                        // have found none.
                        state.unreserve(decision.claim, unused: claimed < decision.claim, lane: lane)
                        state.endRound(lane: lane)
                    }
                    do {
                        if decision.checkCancels { try checkCancelled(c) }
                        try handBack(c, releases)
                    } catch {
                        state.restoreOutgoing(outcomes, releases, lane: lane)
                        throw error
                    }
                    if !outcomes.isEmpty || decision.claim > 0 {
                        claimed =
                            decision.claim > 0
                            ? try state.duringClaim { try exchange(c, outcomes, claim: decision.claim) }
                            : try exchange(c, outcomes, claim: 0)
                        if decision.claim > 0 { pacer.claimed(claimed, of: decision.claim) }
                        if let due = retryDue {
                            pacer.retryScheduled(at: due)
                            retryDue = nil
                        }
                    }
                }
                if stopping && state.stopLaneIfIdle(lane) { break }
                guard
                    case .upTo(let wait) = pacer.wait(
                        now: Date(), hasOutgoing: state.hasOutgoing(lane: lane), stopping: stopping)
                else { continue }
                switch try c.waitForActivity(timeout: wait, wakeFD: state.brokerWakes[lane].read) {
                case .notification(let n):
                    // Take every queued notification so one burst costs one claim.
                    for note in try [n] + c.pendingNotifications() {
                        if note.channel == Broker.cancelChannel {
                            if note.payload == String(state.workerID) { pacer.cancelNotified() }
                        } else if configuration.queues.contains(note.payload) {
                            pacer.queueNotified()
                        }
                    }
                case .woken, .timedOut:
                    break
                }
            } catch  where error.isWorkerPresumedDead {
                handlePresumedDead(registration)
            } catch  where error.isConnectionProblem {
                db.failed(error, shouldStop: { stop && state.laneMayStop(lane) })
                pacer.connectionLost()
                if stop && state.stopLaneIfIdle(lane) { break }
            } catch {
                // Locks, a missing schema, a shutting-down server: sending the batch again (it is
                // fenced) is right. Anything else never reaches here: exchange isolates it.
                logger.error("broker call failed", metadata: ["error": "\(error)"])
                db.failed(error, shouldStop: { stop && state.laneMayStop(lane) })
            }
        }
        SharedState.poke(state.mainWake.write)
    }

    /// Lets outcomes gather into one batch before a round, while the queue is deep: for
    /// `flushDelay`, and on, up to `gatherLimit`, while jobs still wait in this worker to start.
    /// The pool then has work without the broker, and a round would only make the batch smaller:
    /// with tasks of tens of milliseconds, one round per outcome or two was a third of the
    /// server's CPU for the broker (the voter rolls' station chord: 1,000 rounds for 2,530 jobs).
    private func gatherOutcomes() {
        // Each lane gathers its own outcomes, of the jobs it claimed: its share of the capacity.
        let target = max(8, state.currentCapacity / 2 / state.lanes)
        // A round trip takes a millisecond or two: the batch goes while a few jobs still wait.
        let margin = max(2, configuration.concurrency / 4)
        let start = DispatchTime.now().uptimeNanoseconds
        let short = start + UInt64(configuration.flushDelay * 1e9)
        let long = start + UInt64(max(configuration.flushDelay, configuration.gatherLimit) * 1e9)
        while state.outcomeCount(lane: lane) < target, !stop {
            let now = DispatchTime.now().uptimeNanoseconds
            if now >= long || (now >= short && state.waitingToStart < margin) { break }
            usleep(now < short ? 200 : 1000)
        }
    }

    /// Hands jobs back to the queue, while no claim is under way on any lane. A hand-back is
    /// fenced on (worker, attempt) and takes the attempt back one, so one sent again after its
    /// answer was lost would match this worker's new claim of the same job on another lane: only
    /// jobs still held as the runs handed back are sent.
    private func handBack(_ c: Connection, _ releases: [(id: Int64, attempt: Int)]) throws {
        guard !releases.isEmpty else { return }
        try state.whileNoClaimIsUnderWay {
            let sendable = state.stillHeld(releases, by: lane)
            if !sendable.isEmpty {
                let n = try Broker.release(worker: state.workerID, sendable, on: c)
                logger.info("handed jobs back to the queue", metadata: ["jobs": "\(n)"])
            }
            state.settled(sendable, by: lane)
        }
    }

    /// Finishes and claims in one round trip. - Returns: jobs claimed.
    private func exchange(_ c: Connection, _ taken: [Outcome], claim limit: Int) throws -> Int {
        // Ascending ids: the job rows are locked in the order every other path locks them.
        let outcomes = taken.map { Self.bounded($0, limit: maxPayloadBytes) }.sorted { $0.jobID < $1.jobID }
        let runs = outcomes.map { (id: $0.jobID, attempt: $0.attempt) }
        var result: (recorded: [Broker.Recorded], claimed: [ClaimedJob])
        do {
            result = try Broker.finishAndClaim(
                worker: state.workerID, outcomes, queues: configuration.queues, limit: limit, on: c)
        } catch let error as PostgresError
            where !error.isTransient && !outcomes.isEmpty
            && (!error.mayPassLater || failuresInARow + 1 >= Self.patience)
        {
            // Refused for good (the data; a timeout or an internal error that came back every
            // time): find the outcome that causes it, fail that one alone, record the rest.
            failuresInARow = 0
            do {
                result.recorded = try recordIsolating(c, outcomes[...])
            } catch {
                state.restoreOutgoing(outcomes, [], lane: lane)
                throw error
            }
            state.settled(runs, by: lane, endingRound: true)
            result.claimed =
                limit > 0
                ? try Broker.claim(worker: state.workerID, queues: configuration.queues, limit: limit, on: c) : []
        } catch {
            // finish is fenced, so sending the same batch again cannot apply twice.
            if (error as? PostgresError)?.mayPassLater == true { failuresInARow += 1 }
            state.restoreOutgoing(outcomes, [], lane: lane)
            throw error
        }
        failuresInARow = 0
        state.settled(runs, by: lane, endingRound: true)
        logger.debug(
            "exchanged",
            metadata: ["finished": "\(outcomes.count)", "claimed": "\(result.claimed.count)", "lane": "\(lane)"])
        if !outcomes.isEmpty {
            logRecorded(outcomes, result.recorded)
            // Successes alone (the hot path) schedule nothing: only runs that did not succeed are looked at.
            if outcomes.contains(where: { $0.kind != .succeeded }),
                let soonest = result.recorded.lazy.filter({ $0.state == "scheduled" }).compactMap(\.retryIn).min()
            {
                retryDue = Date().addingTimeInterval(max(0, soonest))
            }
            var tally = FinishTally()
            tally.add(outcomes, result.recorded)
            state.addFinished(tally)
            metrics?.recordFinished(tally)
        }
        if let metrics, !result.claimed.isEmpty { metrics.recordReceived(result.claimed) }
        if !result.claimed.isEmpty {
            if logger.logLevel <= .info {
                for job in result.claimed { logger.info("Task \(job.task)[\(job.id)] received") }
            }
            // Arguments (positional and keyword) above the bound, written by a client that does not
            // check it, fail their job here, before any pool process has to hold them.
            let limit = maxPayloadBytes
            if result.claimed.contains(where: { $0.argumentBytes > limit }) {
                let tooLarge = result.claimed.filter { $0.argumentBytes > limit }
                state.deliver(result.claimed.filter { $0.argumentBytes <= limit }, lane: lane)
                for job in tooLarge {
                    let error =
                        "the arguments are too large (\(job.argumentBytes) bytes; the limit is \(limit), pgcanvas.max_payload_bytes)"
                    logger.error("Task \(job.task)[\(job.id)] failed: \(error)")
                    state.refuse(
                        job, Outcome(jobID: job.id, attempt: job.attempt, task: job.task, kind: .fatal, error: error),
                        lane: lane)
                }
            } else {
                state.deliver(result.claimed, lane: lane)
            }
        }
        return result.claimed.count
    }

    /// Records outcomes in ever smaller batches until the one whose recording fails is alone, and
    /// fails that one with the cause. Each call commits on its own; finish is fenced, so a run
    /// recorded before a connection broke is not recorded twice when the batch is sent again.
    private func recordIsolating(_ c: Connection, _ outcomes: ArraySlice<Outcome>) throws -> [Broker.Recorded] {
        do {
            return try Broker.finish(worker: state.workerID, Array(outcomes), on: c)
        } catch let error as PostgresError where !error.isTransient {
            guard outcomes.count == 1, let outcome = outcomes.first else {
                let middle = outcomes.startIndex + outcomes.count / 2
                return try recordIsolating(c, outcomes[..<middle]) + recordIsolating(c, outcomes[middle...])
            }
            logger.error("Task \(outcome.task)[\(outcome.jobID)] failed: its outcome could not be recorded: \(error)")
            do {
                guard try Broker.failUnrecordable(worker: state.workerID, outcome, cause: "\(error)", on: c) else {
                    return []
                }
            } catch let second as PostgresError where !second.isTransient {
                // Nothing more can be written for this run: its job stays running under this worker
                // until an operator cancels it or the worker restarts (then it is rescued).
                logger.critical(
                    "cannot record that a job failed", metadata: ["job.id": "\(outcome.jobID)", "error": "\(second)"])
                return []
            }
            return [Broker.Recorded(jobID: outcome.jobID, state: "failed", retryIn: nil)]
        }
    }

    /// A result larger than `pgcanvas.max_payload_bytes` fails its job instead of the batch.
    static func bounded(_ outcome: Outcome, limit: Int) -> Outcome {
        guard let text = outcome.resultText, text.utf8.count > limit else { return outcome }
        var failed = outcome
        failed.kind = .fatal
        failed.resultText = nil
        failed.spawnText = nil
        failed.error =
            "the result is too large (\(text.utf8.count) bytes; the limit is \(limit), pgcanvas.max_payload_bytes)"
        return failed
    }

    private func logRecorded(_ outcomes: [Outcome], _ recorded: [Broker.Recorded]) {
        if recorded.count < outcomes.count {
            logger.warning(
                "results for jobs no longer held by this worker were discarded",
                metadata: ["jobs": "\(outcomes.count - recorded.count)"])
        }
        guard outcomes.contains(where: { $0.kind != .succeeded }) else { return }
        let byID = Dictionary(outcomes.map { ($0.jobID, $0) }, uniquingKeysWith: { $1 })
        for r in recorded {
            guard let o = byID[r.jobID], o.kind != .succeeded else { continue }
            let error = o.error ?? o.kind.rawValue
            if r.state == "queued" || r.state == "scheduled" {
                logger.warning(
                    "Task \(o.task)[\(r.jobID)] retry: Retry in \(formatSeconds(max(0, r.retryIn ?? 0)))s: \(error)")
            } else if r.state == "failed" {
                logger.error("Task \(o.task)[\(r.jobID)] failed: \(error)")
            }
        }
    }

    private func handlePresumedDead(_ dead: Int64) {
        do {
            let c = try db.get()
            if try state.reregister(replacing: dead, { try reregister(c) }) {
                logger.error("this worker was presumed dead and its jobs were rescued; registering again")
            }
        } catch {
            db.failed(error)
        }
    }
}
