import Foundation

/// What the supervisor's threads hand each other: claimed jobs one way, outcomes and hand-backs
/// the other. Guarded by one lock; each side wakes the other through a pipe.
///
/// With more than one broker connection (`--broker-connections`), each connection's loop (a
/// lane) claims on its own, and a job's outcome or hand-back goes back through the lane that
/// claimed it, so each lane finishes and claims in its own rhythm while the other's round trip is
/// on the server. Two things keep the lanes from stepping on each other: claims reserve their
/// slots before they go out, so the lanes together never hold more than the capacity; and a lane
/// that reconnects reconciles (hands back jobs marked as ours that nobody received) only while no
/// other lane has a claim under way, whose jobs would look unreceived.
final class SharedState: @unchecked Sendable {
    // Every stored property below is read and written only with `lock` held.
    private let lock = NSLock()
    /// Held across a re-registration (a round trip), never together with `lock` the other way round.
    private let registration = NSLock()
    private var inbox: [ClaimedJob] = []
    /// Per lane: what goes back through it.
    private var outcomes: [[Outcome]]
    private var releases: [[(id: Int64, attempt: Int)]]
    /// Jobs claimed and not yet finished or handed back (the broker's view of what we hold), with
    /// the lane that claimed each.
    private var held: [Int64: (attempt: Int, lane: Int)] = [:]
    /// Held jobs a hand-back has been asked for and not yet settled: for a reconcile they are not
    /// held (see `isHeld`).
    private var handingBack: Set<Int64> = []
    private var _claiming = true
    private var _workerID: Int64
    private var _fatalError: String?
    /// Jobs cancelled in the database while this worker holds them: to be stopped.
    private var cancelled: Set<Int64> = []
    private var capacity: Int
    /// Claimed jobs waiting in the supervisor's line and in the in-process pool's line, as each
    /// last published them (`waitingToStart`).
    private var supervisorLine = 0
    private var poolLine = 0
    /// Slots claims under way have reserved: they count as held until their jobs are delivered.
    private var reserved = 0
    /// Per lane: held jobs whose outcomes it is sending this round; their slots count as free,
    /// for every lane, until they are settled (then they are no longer held) or put back.
    private var settling: [Int]
    /// When each broker lane and the supervisor's event loop last went round (uptime, ns): the
    /// heartbeat vouches for them, not only for the thread that sends it.
    private var brokerTicks: [UInt64]
    private var mainTick = DispatchTime.now().uptimeNanoseconds
    /// Lanes that have stopped: what would go back through them goes through the first lane,
    /// which stops last.
    private var laneStopped: [Bool]
    /// Guards `claimsUnderWay` and `reconcileUnderWay` (never taken together with `lock`).
    private let gate = NSCondition()
    private var claimsUnderWay = 0
    private var reconcileUnderWay = false
    /// Jobs finished since the last heartbeat took them (see `FinishTally`).
    private var finished = FinishTally()
    /// When the last heartbeat reached the database (uptime, ns), for `/readyz`.
    private var heartbeatTick = DispatchTime.now().uptimeNanoseconds

    let mainWake: (read: Int32, write: Int32)
    /// One pipe per broker lane: a lane that drains its own cannot swallow another's wake-up.
    let brokerWakes: [(read: Int32, write: Int32)]
    var lanes: Int { brokerWakes.count }

    init(workerID: Int64, capacity: Int, lanes: Int = 1) throws {
        precondition(lanes >= 1)
        _workerID = workerID
        self.capacity = capacity
        brokerTicks = Array(repeating: DispatchTime.now().uptimeNanoseconds, count: lanes)
        outcomes = Array(repeating: [], count: lanes)
        settling = Array(repeating: 0, count: lanes)
        laneStopped = Array(repeating: false, count: lanes)
        releases = Array(repeating: [], count: lanes)
        mainWake = try FD.pipe()
        brokerWakes = try (0..<lanes).map { _ in try FD.pipe() }
        for fd in [mainWake.read, mainWake.write] + brokerWakes.flatMap({ [$0.read, $0.write] }) {
            FD.setNonBlocking(fd)
        }
    }

    private func locked<T>(_ body: () -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body()
    }

    var workerID: Int64 {
        get { locked { _workerID } }
        set { locked { _workerID = newValue } }
    }

    /// Registers the worker again after the registration `dead` was presumed dead, unless another
    /// thread already has: the broker and maintenance threads can learn it at the same moment (a
    /// link that comes back), and a second registration would leave a row nobody beats for.
    /// - Returns: whether this call registered.
    func reregister(replacing dead: Int64, _ register: () throws -> Int64) rethrows -> Bool {
        registration.lock()
        defer { registration.unlock() }
        guard workerID == dead else { return false }
        workerID = try register()
        return true
    }

    var claiming: Bool { locked { _claiming } }

    /// Jobs the worker may hold at once (pool slots plus prefetch); grows when jobs are short.
    func setCapacity(_ value: Int) { locked { capacity = value } }
    func stopClaiming() { locked { _claiming = false } }

    /// Every broker lane has stopped.
    var brokerStopped: Bool { locked { laneStopped.allSatisfy { $0 } } }

    /// Stops `lane` if nothing waits to go back through it (and, for the first lane, once every
    /// other lane has stopped: it takes over what would have gone through them).
    /// - Returns: whether the lane stopped.
    func stopLaneIfIdle(_ lane: Int) -> Bool {
        locked {
            guard laneMayStopLocked(lane) else { return false }
            laneStopped[lane] = true
            return true
        }
    }

    /// Whether `stopLaneIfIdle` would stop the lane now (a lane that cannot reach the database
    /// while stopping gives up waiting for it only then).
    func laneMayStop(_ lane: Int) -> Bool { locked { laneMayStopLocked(lane) } }

    private func laneMayStopLocked(_ lane: Int) -> Bool {
        guard outcomes[lane].isEmpty, releases[lane].isEmpty else { return false }
        return lane != 0 || !laneStopped.dropFirst().contains(false)
    }

    /// The lane a job's outcome or hand-back goes through: the one that claimed it, while it runs.
    private func route(_ id: Int64) -> Int {
        let lane = held[id]?.lane ?? 0
        return laneStopped[lane] ? 0 : lane
    }

    var fatalError: String? {
        get { locked { _fatalError } }
        set { locked { _fatalError = newValue } }
    }

    func brokerLoopTicked(lane: Int) { locked { brokerTicks[lane] = DispatchTime.now().uptimeNanoseconds } }
    func eventLoopTicked() { locked { mainTick = DispatchTime.now().uptimeNanoseconds } }

    /// Broker thread: what a batch finished.
    func addFinished(_ tally: FinishTally) {
        guard !tally.isEmpty else { return }
        locked { finished.merge(tally) }
    }

    /// Maintenance thread: what the next heartbeat carries.
    func takeFinished() -> FinishTally {
        locked {
            defer { finished = FinishTally() }
            return finished
        }
    }

    /// Maintenance thread: a heartbeat that did not go through carries it next time.
    func restoreFinished(_ tally: FinishTally) { addFinished(tally) }

    func heartbeatSent() { locked { heartbeatTick = DispatchTime.now().uptimeNanoseconds } }

    /// Seconds since the last heartbeat reached the database (since start-up before the first).
    var heartbeatAge: Double {
        Double(DispatchTime.now().uptimeNanoseconds &- locked { heartbeatTick }) / 1e9
    }

    /// Seconds since the slower of the two loops last went round.
    var loopSilence: Double {
        // A lane that has stopped (shutdown) no longer goes round, and is not waited for.
        let oldest = locked {
            zip(brokerTicks, laneStopped).filter { !$0.1 }.map(\.0).reduce(mainTick, min)
        }
        return Double(DispatchTime.now().uptimeNanoseconds &- oldest) / 1e9
    }

    // MARK: broker thread side

    /// How many more jobs to claim now, counting the `n` outcomes the caller is about to finish
    /// (and those other lanes are finishing) as free, and reserves them: they count as held, for
    /// the other lanes, until `unreserve` gives them back. A lane takes at most its share of the
    /// capacity at once, so that the lanes take turns.
    func reserveClaims(afterSettling n: Int, lane: Int = 0, claim: Bool = true) -> Int {
        locked {
            settling[lane] = n
            let share = (capacity + lanes - 1) / lanes
            let free = capacity - held.count - reserved + settling.reduce(0, +)
            let want = _claiming && claim ? min(share, max(0, free)) : 0
            reserved += want
            return want
        }
    }

    /// Gives back `n` slots reserved by `reserveClaims`: the claim went out and its jobs are held
    /// now, failed, or asked for fewer. `unused`: some of them are free again, and the other
    /// lanes (which may have found none free) are woken.
    func unreserve(_ n: Int, unused: Bool = false, lane: Int = 0) {
        guard n != 0 else { return }
        locked { reserved -= n }
        if unused { wakeOtherLanes(than: lane) }
    }

    /// Ends the lane's round: outcomes it did not settle were put back, and count as held again.
    func endRound(lane: Int) { locked { settling[lane] = 0 } }

    /// A claim's round trip on one lane, from sending it to `deliver`: a reconcile on another lane
    /// waits until none is under way.
    func duringClaim<T>(_ body: () throws -> T) rethrows -> T {
        gate.lock()
        while reconcileUnderWay { gate.wait() }
        claimsUnderWay += 1
        gate.unlock()
        defer {
            gate.lock()
            claimsUnderWay -= 1
            gate.broadcast()
            gate.unlock()
        }
        return try body()
    }

    /// Runs `body` (a reconcile) while no lane has a claim under way and none starts: every job
    /// a committed claim marked as ours has then been delivered, or its answer was lost.
    func whileNoClaimIsUnderWay<T>(_ body: () throws -> T) rethrows -> T {
        gate.lock()
        while reconcileUnderWay { gate.wait() }
        reconcileUnderWay = true
        while claimsUnderWay > 0 { gate.wait() }
        gate.unlock()
        defer {
            gate.lock()
            reconcileUnderWay = false
            gate.broadcast()
            gate.unlock()
        }
        return try body()
    }

    func deliver(_ jobs: [ClaimedJob], lane: Int = 0) {
        locked {
            inbox.append(contentsOf: jobs)
            for job in jobs {
                held[job.id] = (job.attempt, lane)
                handingBack.remove(job.id)
            }
        }
        Self.poke(mainWake.write)
    }

    /// Holds a claimed job that will not be run, and reports how it ended.
    func refuse(_ job: ClaimedJob, _ outcome: Outcome, lane: Int = 0) {
        locked {
            held[job.id] = (job.attempt, lane)
            outcomes[route(job.id)].append(outcome)
        }
        wakeBroker()
    }

    func takeOutgoing(lane: Int = 0) -> (outcomes: [Outcome], releases: [(id: Int64, attempt: Int)]) {
        locked {
            defer {
                outcomes[lane].removeAll(keepingCapacity: true)
                releases[lane].removeAll()
            }
            return (outcomes[lane], releases[lane])
        }
    }

    /// Puts back what could not be sent (the connection broke); it goes out first next time.
    func restoreOutgoing(_ o: [Outcome], _ r: [(id: Int64, attempt: Int)], lane: Int = 0) {
        locked {
            outcomes[lane].insert(contentsOf: o, at: 0)
            releases[lane].insert(contentsOf: r, at: 0)
        }
    }

    /// Runs finished or handed back through `lane`: their slots are free, for any lane to claim,
    /// and the lane's outcomes no longer count as settling. A job is let go only if it is still
    /// held as the run that was sent: another lane may have claimed it again meanwhile (a finish
    /// that requeued it, a hand-back), and that claim is held, not this one. The other lanes are
    /// woken (one that found no free slot waits for nothing else).
    /// `endingRound`: these are the outcomes the lane's round counted as settling (in one step,
    /// or another lane could count their slots free twice).
    func settled(_ runs: [(id: Int64, attempt: Int)], by lane: Int = 0, endingRound: Bool = false) {
        let freed = locked {
            var freed = 0
            for run in runs {
                guard let entry = held[run.id], entry.attempt == run.attempt,
                    entry.lane == lane || laneStopped[entry.lane]
                else { continue }
                held[run.id] = nil
                handingBack.remove(run.id)
                freed += 1
            }
            if endingRound { settling[lane] = 0 }
            return freed
        }
        if freed > 0 { wakeOtherLanes(than: lane) }
    }

    private func wakeOtherLanes(than lane: Int) {
        for (other, wake) in brokerWakes.enumerated() where other != lane { Self.poke(wake.write) }
    }

    /// Of `releases` (hand-backs), those still held as the run this lane would hand back. Called
    /// while no claim is under way: one sent again after its answer was lost must not hand back
    /// the same job claimed anew by another lane (a hand-back takes the attempt back one, so the
    /// new claim has the attempt the old one had).
    func stillHeld(_ releases: [(id: Int64, attempt: Int)], by lane: Int) -> [(id: Int64, attempt: Int)] {
        locked {
            releases.filter { run in
                guard let entry = held[run.id] else { return false }
                return entry.attempt == run.attempt && (entry.lane == lane || laneStopped[entry.lane])
            }
        }
    }

    func outcomeCount(lane: Int = 0) -> Int { locked { outcomes[lane].count } }
    var currentCapacity: Int { locked { capacity } }

    /// Claimed jobs that any free slot can start: delivered and not yet taken, or waiting in the
    /// supervisor's or the in-process pool's line. While some do, the pool has work without
    /// another claim. Jobs queued in a pool process's pipe behind its running job do not count:
    /// no other process can take them.
    var waitingToStart: Int { locked { inbox.count + supervisorLine + poolLine } }

    func publishSupervisorLine(_ n: Int) { locked { supervisorLine = n } }
    func publishPoolLine(_ n: Int) { locked { poolLine = n } }
    func hasOutgoing(lane: Int = 0) -> Bool { locked { !outcomes[lane].isEmpty || !releases[lane].isEmpty } }
    /// Jobs held, slots reserved by claims under way, and outcomes being sent, at one moment
    /// (for tests).
    var accounting: (held: Int, reserved: Int, settling: Int) {
        locked { (held.count, reserved, settling.reduce(0, +)) }
    }
    /// Whether a reconcile should take the job as received: held as that attempt, and no
    /// hand-back pending for it. A hand-back whose answer was lost leaves its entry until it is
    /// sent again; meanwhile another lane may claim the same job with the same attempt (a
    /// hand-back takes it back one) and lose that answer too. Taken as not held, the job is
    /// handed back by the reconcile, and the pending hand-back then matches nothing.
    func isHeld(_ id: Int64, attempt: Int) -> Bool {
        locked { held[id]?.attempt == attempt && !handingBack.contains(id) }
    }

    /// The ids of jobs this worker holds now.
    var heldIDs: [Int64] { locked { Array(held.keys) } }

    func requestCancel(_ ids: [Int64]) {
        guard !ids.isEmpty else { return }
        locked { cancelled.formUnion(ids) }
        Self.poke(mainWake.write)
    }

    // MARK: main thread side

    func takeCancelled() -> Set<Int64> {
        locked {
            defer { cancelled.removeAll() }
            return cancelled
        }
    }

    func takeInbox() -> [ClaimedJob] {
        locked {
            defer { inbox.removeAll(keepingCapacity: true) }
            return inbox
        }
    }

    /// The outcome of a run, to be finished through the lane that claimed its job (the first
    /// lane for a job no longer held: its finish is refused by the fence anyway).
    func report(_ outcome: Outcome) {
        let (lane, wasEmpty) = locked {
            let lane = route(outcome.jobID)
            let empty = outcomes[lane].isEmpty && releases[lane].isEmpty
            outcomes[lane].append(outcome)
            return (lane, empty)
        }
        if wasEmpty { Self.poke(brokerWakes[lane].write) }
    }

    func handBack(_ jobs: [ClaimedJob]) {
        guard !jobs.isEmpty else { return }
        let lanes = locked {
            var lanes = Set<Int>()
            for job in jobs {
                let lane = route(job.id)
                releases[lane].append((job.id, job.attempt))
                if held[job.id]?.attempt == job.attempt { handingBack.insert(job.id) }
                lanes.insert(lane)
            }
            return lanes
        }
        for lane in lanes { Self.poke(brokerWakes[lane].write) }
    }

    /// Wakes every broker lane: whichever comes first takes what is waiting.
    func wakeBroker() { for wake in brokerWakes { Self.poke(wake.write) } }

    static func poke(_ fd: Int32) {
        var byte: UInt8 = 1
        _ = write(fd, &byte, 1)
    }

    static func drain(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 256)
        while read(fd, &buffer, buffer.count) > 0 {}
    }
}
