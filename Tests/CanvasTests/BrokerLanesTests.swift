import Foundation
import Postgres
import TestSupport
import Testing

@testable import PGCanvas

/// What the broker lanes of one worker (`--broker-connections`) share in `SharedState`: each job
/// goes back through the lane that claimed it, the lanes together never reserve more than the
/// capacity, a reconcile never runs beside a claim under way, and stopping loses nothing.
@Suite struct BrokerLanesTests {
    func job(_ id: Int64, attempt: Int = 1) -> ClaimedJob {
        ClaimedJob(id: id, task: "canvas.noop", argsText: "[]", attempt: attempt, timeLimit: nil)
    }

    func done(_ id: Int64, attempt: Int = 1) -> Outcome {
        Outcome(jobID: id, attempt: attempt, task: "canvas.noop", kind: .succeeded, resultText: "null")
    }

    @Test func brokerConnectionsAreCheckedBudgetedAndEachBringsItsShortJobPrefetch() throws {
        var configuration = WorkerConfiguration(database: ConnectionConfiguration(conninfo: "dbname=x"))
        configuration.concurrency = 8
        configuration.prefetch = 16
        for bad in [0, 9] {
            configuration.brokerConnections = bad
            #expect(throws: CanvasError.self) { try configuration.validate() }
        }
        configuration.brokerConnections = 2
        try configuration.validate()
        #expect(configuration.capacity(depth: 1) == 8 + 16)
        #expect(configuration.capacity(depth: 16) == 8 * 16 + 16 + 2 * configuration.shortJobPrefetch)
        #expect(ConnectionBudget.fixed(beat: false) == 2)
        #expect(ConnectionBudget.fixed(beat: false, brokerConnections: 2) == 3)
        #expect(ConnectionBudget.fixed(beat: true, brokerConnections: 2) == 4)
    }

    @Test func aJobGoesBackThroughTheLaneThatClaimedIt() throws {
        let state = try SharedState(workerID: 1, capacity: 10, lanes: 2)
        state.deliver([job(1), job(2)], lane: 0)
        state.deliver([job(3)], lane: 1)
        #expect(state.takeInbox().map(\.id) == [1, 2, 3])
        state.report(done(3))
        state.report(done(1))
        state.handBack([job(2)])
        #expect(state.takeOutgoing(lane: 1).outcomes.map(\.jobID) == [3])
        let first = state.takeOutgoing(lane: 0)
        #expect(first.outcomes.map(\.jobID) == [1])
        #expect(first.releases.map(\.id) == [2])
        // A job no longer held (its outcome will be refused by the fence) goes through the first.
        state.report(done(99))
        #expect(state.takeOutgoing(lane: 0).outcomes.map(\.jobID) == [99])
    }

    @Test func aStoppedLanesJobsGoThroughTheFirstLaneWhichStopsLast() throws {
        let state = try SharedState(workerID: 1, capacity: 10, lanes: 2)
        state.deliver([job(1)], lane: 1)
        _ = state.takeInbox()
        state.report(done(1))
        #expect(!state.stopLaneIfIdle(1), "lane 1 has an outcome to send")
        let sent = state.takeOutgoing(lane: 1)
        #expect(sent.outcomes.count == 1)
        state.settled([(1, 1)], by: 1)
        #expect(!state.stopLaneIfIdle(0), "the first lane stops after the others")
        #expect(state.stopLaneIfIdle(1))
        #expect(!state.brokerStopped)
        // Lane 1 has gone: what it claimed and still holds goes back through lane 0.
        state.deliver([job(2)], lane: 1)
        state.handBack(state.takeInbox())
        #expect(state.takeOutgoing(lane: 0).releases.map(\.id) == [2])
        #expect(state.stopLaneIfIdle(0))
        #expect(state.brokerStopped)
    }

    @Test func lanesShareTheCapacityAndCountOutcomesBeingSentAsFree() throws {
        let state = try SharedState(workerID: 1, capacity: 10, lanes: 2)
        let a = state.reserveClaims(afterSettling: 0, lane: 0)
        let b = state.reserveClaims(afterSettling: 0, lane: 1)
        #expect(a == 5 && b == 5, "each lane takes its share")
        #expect(state.reserveClaims(afterSettling: 0, lane: 1) == 0, "nothing left while both claims are under way")
        state.deliver((1...5).map { job($0) }, lane: 0)
        state.unreserve(a)
        state.deliver((6...10).map { job($0) }, lane: 1)
        state.unreserve(b)
        #expect(state.reserveClaims(afterSettling: 0, lane: 1) == 0, "every slot is held")
        state.endRound(lane: 1)
        // Lane 0 sends three outcomes: their slots are free for either lane meanwhile, once.
        let c = state.reserveClaims(afterSettling: 3, lane: 0)
        #expect(c == 3)
        #expect(state.reserveClaims(afterSettling: 0, lane: 1) == 0)
        state.endRound(lane: 1)
        // Settled, they are no longer held and no longer settling, in one step: another lane
        // reserving between the settling and the end of the round finds nothing twice.
        state.settled([(1, 1), (2, 1), (3, 1)], by: 0, endingRound: true)
        #expect(state.reserveClaims(afterSettling: 0, lane: 1) == 0)
        state.endRound(lane: 1)
        state.unreserve(c)
        state.endRound(lane: 0)
        #expect(state.accounting == (7, 0, 0))
        #expect(state.reserveClaims(afterSettling: 0, claim: false) == 0, "a stopping lane claims nothing")
    }

    /// How many claimed jobs any free slot can start, which lets outcomes gather into larger
    /// rounds (`BrokerLoop.gatherOutcomes`): those delivered and not yet taken, and those in the
    /// supervisor's and the in-process pool's lines as each last published them. Jobs queued in
    /// a pool process's pipe behind a long run are not among them: no idle process can take
    /// them, and the broker must not wait on them.
    @Test func jobsWaitingToStartAreThoseAnyFreeSlotCanTake() throws {
        let state = try SharedState(workerID: 1, capacity: 24, lanes: 2)
        #expect(state.waitingToStart == 0)
        state.deliver((1...14).map { job($0) }, lane: 0)
        state.deliver((15...20).map { job($0) }, lane: 1)
        #expect(state.waitingToStart == 20, "delivered, not yet taken")
        _ = state.takeInbox()
        #expect(state.waitingToStart == 0, "taken, and not yet published as waiting")
        // Of the 20, 4 run, 13 sit in one pool process's pipe behind a long run, 3 wait in line.
        state.publishSupervisorLine(3)
        #expect(state.waitingToStart == 3)
        state.publishPoolLine(5)
        #expect(state.waitingToStart == 8)
        state.publishSupervisorLine(0)
        state.publishPoolLine(0)
        state.deliver([job(21)], lane: 0)
        #expect(state.waitingToStart == 1)
    }

    /// A finish that requeued a job, or a hand-back, lets another lane claim it again before
    /// the first lane has settled it: the settling must not let go of the new claim.
    @Test func settlingARunLeavesAnotherLanesNewClaimOfTheSameJobHeld() throws {
        let state = try SharedState(workerID: 1, capacity: 10, lanes: 2)
        state.deliver([job(7, attempt: 1)], lane: 0)
        state.report(done(7, attempt: 1))
        let sent = state.takeOutgoing(lane: 0)
        // Lane 0's finish requeued job 7 (a retry); lane 1 claims it, attempt 2, before lane 0
        // settles.
        state.deliver([job(7, attempt: 2)], lane: 1)
        state.settled(sent.outcomes.map { ($0.jobID, $0.attempt) }, by: 0, endingRound: true)
        #expect(state.isHeld(7, attempt: 2))
        // A hand-back takes the attempt back one: lane 1's new claim has the attempt lane 0's had.
        state.deliver([job(8, attempt: 3)], lane: 0)
        state.handBack([job(8, attempt: 3)])
        let handedBack = state.takeOutgoing(lane: 0).releases
        state.deliver([job(8, attempt: 3)], lane: 1)
        #expect(state.stillHeld(handedBack, by: 0).isEmpty, "sent again, it would hand back lane 1's claim")
        state.settled(handedBack, by: 0)
        #expect(state.isHeld(8, attempt: 3))
        #expect(state.stillHeld([(8, 3)], by: 1).count == 1)
    }

    @Test func aReconcileWaitsForAClaimUnderWayAndHoldsBackTheNext() throws {
        let state = try SharedState(workerID: 1, capacity: 10, lanes: 2)
        let order = Log()
        let claimStarted = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) {
            state.duringClaim {
                claimStarted.signal()
                usleep(150_000)  // the round trip, during which the other lane reconnects
                state.deliver([job(1)], lane: 1)
                order.append("claim delivered")
            }
        }
        claimStarted.wait()
        let reconcileStarted = DispatchSemaphore(value: 0)
        DispatchQueue.global().async(group: group) {
            state.whileNoClaimIsUnderWay {
                reconcileStarted.signal()
                order.append("reconcile sees job 1 held: \(state.isHeld(1, attempt: 1))")
                usleep(100_000)
                order.append("reconcile done")
            }
        }
        reconcileStarted.wait()
        state.duringClaim { order.append("next claim") }
        group.wait()
        #expect(
            order.entries == ["claim delivered", "reconcile sees job 1 held: true", "reconcile done", "next claim"])
    }

    /// A hand-back whose answer was lost stays pending; a reconcile takes its job as not held, so
    /// another lane's lost claim of the same job (same attempt) is handed back, not kept forever.
    @Test func aPendingHandBackIsNotHeldForAReconcile() throws {
        let state = try SharedState(workerID: 1, capacity: 10, lanes: 2)
        state.deliver([job(5, attempt: 2)], lane: 0)
        #expect(state.isHeld(5, attempt: 2))
        state.handBack(state.takeInbox())
        #expect(!state.isHeld(5, attempt: 2))
        // Claimed again (by either lane): held, no hand-back pending for the new claim.
        state.deliver([job(5, attempt: 2)], lane: 1)
        #expect(state.isHeld(5, attempt: 2))
    }

    @Test func aStoppingLaneMayStopOnlyWhenNothingWaitsAndTheFirstLast() throws {
        let state = try SharedState(workerID: 1, capacity: 10, lanes: 2)
        #expect(!state.laneMayStop(0))
        #expect(state.laneMayStop(1))
        state.deliver([job(1)], lane: 1)
        state.report(done(1))
        #expect(!state.laneMayStop(1))
        _ = state.takeOutgoing(lane: 1)
        #expect(state.stopLaneIfIdle(1))
        #expect(state.laneMayStop(0))
        // A stopped lane no longer counts in the loops' silence the heartbeat vouches for.
        usleep(300_000)
        state.brokerLoopTicked(lane: 0)
        state.eventLoopTicked()
        #expect(state.loopSilence < 0.25)
    }

    /// Two lanes and a pool run side by side on threads, seeded: every job claimed comes back
    /// exactly once through the lane that claimed it, and at the end nothing is held or reserved.
    @Test(arguments: [UInt64(1), 2, 3, 0xC0FFEE])
    func seededLanesLoseNothingAndSendNothingTwice(seed: UInt64) throws {
        let lanes = 2
        let capacity = 40
        let state = try SharedState(workerID: 1, capacity: capacity, lanes: lanes)
        let next = Counter()
        let total = 5_000
        let sent = Log()
        let claimed = Log()
        let stop = Flag()
        let group = DispatchGroup()
        for lane in 0..<lanes {
            DispatchQueue.global().async(group: group) {
                var random = SplitMix64(state: seed &+ UInt64(lane))
                var idle = 0
                while true {
                    let (outcomes, releases) = state.takeOutgoing(lane: lane)
                    let want = state.reserveClaims(afterSettling: outcomes.count, lane: lane, claim: !stop.isSet)
                    let claim = want == 0 ? 0 : Int.random(in: 0...want, using: &random)
                    state.unreserve(want - claim)
                    state.duringClaim {
                        let ids = (0..<claim).compactMap { _ -> Int64? in
                            let n = next.increment()
                            return n <= total ? Int64(n) : nil
                        }
                        for id in ids { claimed.append("\(lane):\(id)") }
                        state.deliver(ids.map { job($0) }, lane: lane)
                    }
                    for o in outcomes { sent.append("\(lane):\(o.jobID)") }
                    state.settled(releases, by: lane)
                    state.settled(outcomes.map { ($0.jobID, $0.attempt) }, by: lane, endingRound: true)
                    state.unreserve(claim)
                    state.endRound(lane: lane)
                    // Never more held than the capacity, once the outcomes being sent are gone.
                    let books = state.accounting
                    if books.held - books.settling > capacity {
                        Issue.record(
                            "lane \(lane): \(books.held) held, \(books.settling) settling, capacity \(capacity)")
                    }
                    if stop.isSet {
                        if state.stopLaneIfIdle(lane) { return }
                        idle += 1
                        if idle > 200_000 {
                            Issue.record("lane \(lane) never stopped")
                            return
                        }
                    }
                    if Int.random(in: 0..<4, using: &random) == 0 { usleep(50) }
                }
            }
        }
        // The pool: runs what was delivered and reports it, in random order.
        var random = SplitMix64(state: seed ^ 0xF00D)
        var ran = 0
        while ran < total {
            var jobs = state.takeInbox()
            jobs.shuffle(using: &random)
            for j in jobs { state.report(done(j.id)) }
            ran += jobs.count
            if jobs.isEmpty { usleep(100) }
        }
        stop.set()
        group.wait()
        let entries = sent.entries
        #expect(entries.count == total)
        #expect(Set(entries.map { $0.split(separator: ":")[1] }).count == total, "an outcome sent twice")
        #expect(state.accounting == (0, 0, 0))
        // Each outcome went back through the lane that claimed its job.
        #expect(Set(entries) == Set(claimed.entries))
        #expect(state.brokerStopped)
    }
}

private final class Log: @unchecked Sendable {
    // Guarded by lock.
    private let lock = NSLock()
    private var items: [String] = []
    func append(_ s: String) { lock.withLock { items.append(s) } }
    var entries: [String] { lock.withLock { items } }
}

private final class Counter: @unchecked Sendable {
    // Guarded by lock.
    private let lock = NSLock()
    private var count = 0
    func increment() -> Int {
        lock.withLock {
            count += 1; return count
        }
    }
}

private final class Flag: @unchecked Sendable {
    // Guarded by lock.
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
