import Foundation
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
        state.settled([1], by: 1)
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
        let a = state.reserveClaims(afterSettling: 0)
        let b = state.reserveClaims(afterSettling: 0)
        #expect(a == 5 && b == 5, "each lane takes its share")
        #expect(state.reserveClaims(afterSettling: 0) == 0, "nothing left while both claims are under way")
        state.deliver((1...5).map { job($0) }, lane: 0)
        state.unreserve(a)
        state.deliver((6...10).map { job($0) }, lane: 1)
        state.unreserve(b)
        #expect(state.reserveClaims(afterSettling: 0) == 0, "every slot is held")
        // Lane 0 sends three outcomes: their slots are free for either lane meanwhile.
        let c = state.reserveClaims(afterSettling: 3)
        #expect(c == 3)
        #expect(state.reserveClaims(afterSettling: 0) == 0)
        state.settled([1, 2, 3], by: 0)
        state.unreserve(c, settled: 3)
        #expect(state.reservations == (0, 0))
        #expect(state.reserveClaims(afterSettling: 0, claim: false) == 0, "a stopping lane claims nothing")
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

    /// Two lanes and a pool run side by side on threads, seeded: every job claimed comes back
    /// exactly once through the lane that claimed it, and at the end nothing is held or reserved.
    @Test(arguments: [UInt64(1), 2, 3, 0xC0FFEE])
    func seededLanesLoseNothingAndSendNothingTwice(seed: UInt64) throws {
        let lanes = 2
        let state = try SharedState(workerID: 1, capacity: 40, lanes: lanes)
        let next = Counter()
        let total = 5_000
        let sent = Log()
        let stop = Flag()
        let group = DispatchGroup()
        for lane in 0..<lanes {
            DispatchQueue.global().async(group: group) {
                var random = SplitMix64(state: seed &+ UInt64(lane))
                var idle = 0
                while true {
                    let (outcomes, releases) = state.takeOutgoing(lane: lane)
                    let want = state.reserveClaims(afterSettling: outcomes.count, claim: !stop.isSet)
                    let claim = want == 0 ? 0 : Int.random(in: 0...want, using: &random)
                    state.unreserve(want - claim)
                    state.duringClaim {
                        let ids = (0..<claim).compactMap { _ -> Int64? in
                            let n = next.increment()
                            return n <= total ? Int64(n) : nil
                        }
                        state.deliver(ids.map { job($0) }, lane: lane)
                    }
                    for o in outcomes { sent.append("\(lane):\(o.jobID)") }
                    state.settled(outcomes.map(\.jobID) + releases.map(\.id), by: lane)
                    state.unreserve(claim, settled: outcomes.count)
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
        #expect(state.heldCount == 0)
        #expect(state.reservations == (0, 0))
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
