import Foundation

/// When the broker loop claims, how many jobs, when it asks which held jobs were cancelled, and
/// how long it may then wait for a NOTIFY. A value with no I/O: the loop feeds it what it saw.
///
/// One round of the loop: `decide(now:want:)`, the exchange, `claimed(_:)` when a claim went
/// through, then `wait(now:hasOutgoing:stopping:)`; a NOTIFY seen while waiting is reported with
/// `queueNotified()` or `cancelNotified()`.
struct ClaimPacer {
    let pollInterval: Double
    let heartbeatInterval: Double
    /// A NOTIFY for one of our queues arrived since the last claim (true at start and after a
    /// reconnect: notifications sent meanwhile were lost).
    private(set) var notified = true
    /// The last claim got all it asked for: the queue is probably deeper, so claim again at once.
    private(set) var lastClaimFull = true
    /// A NOTIFY asked this worker to look for cancelled jobs.
    private var cancelCheck = false
    private var lastPoll = Date.distantPast
    /// This round's claim, until `wait` has looked at it.
    private var claimedThisRound = false
    /// The soonest retry this worker scheduled: a claim then promotes it and takes it.
    private var retryDue: Date?

    init(pollInterval: Double, heartbeatInterval: Double) {
        self.pollInterval = pollInterval
        self.heartbeatInterval = heartbeatInterval
    }

    struct Decision: Equatable {
        /// How many jobs to claim in this round's exchange (0: none).
        var claim: Int
        /// Whether to ask which held jobs were cancelled.
        var checkCancels: Bool
    }

    enum Wait: Equatable {
        /// Go round again without waiting: outcomes are waiting, or the queue is deep.
        case none
        /// Wait this many seconds for a NOTIFY or a wake-up.
        case upTo(Double)
    }

    /// While the queue is deep, outcomes gather a few milliseconds before each round: one
    /// transaction per large batch costs far less than many small ones.
    func shouldGatherOutcomes(stopping: Bool) -> Bool { lastClaimFull && !stopping }

    /// - Parameter want: free slots (0 while stopping or when every slot is taken).
    mutating func decide(now: Date, want: Int) -> Decision {
        let pollDue = now.timeIntervalSince(lastPoll) >= pollInterval
        let retryNow = retryDue.map { now >= $0 } ?? false
        // A NOTIFY or a due poll claims only when there is room; a full last claim claims again.
        let claimNow = want > 0 && (notified || lastClaimFull || pollDue || retryNow)
        if claimNow && retryNow { retryDue = nil }
        if claimNow || (pollDue && want == 0) {
            notified = false
            lastPoll = now
        }
        let checkCancels = cancelCheck || pollDue
        cancelCheck = false
        claimedThisRound = false
        return Decision(claim: claimNow ? want : 0, checkCancels: checkCancels)
    }

    /// This round's claim went through and brought `count` of the `wanted` jobs.
    mutating func claimed(_ count: Int, of wanted: Int) {
        lastClaimFull = count == wanted
        claimedThisRound = true
    }

    /// How long to wait before the next round.
    func wait(now: Date, hasOutgoing: Bool, stopping: Bool) -> Wait {
        if hasOutgoing || (claimedThisRound && lastClaimFull) { return .none }
        if stopping { return .upTo(0.05) }
        // At least once a heartbeat interval even when idle: the heartbeat vouches that the
        // broker loop goes round.
        let untilPoll = max(0.0, pollInterval - now.timeIntervalSince(lastPoll))
        let untilRetry = retryDue.map { max(0.0, $0.timeIntervalSince(now)) } ?? .infinity
        return .upTo(min(heartbeatInterval, untilPoll, untilRetry))
    }

    /// A finish scheduled a retry of one of our jobs for `due`: claim then rather than at the
    /// next poll (the claim promotes it), whoever ends up taking it.
    mutating func retryScheduled(at due: Date) {
        retryDue = min(retryDue ?? due, due)
    }

    /// A NOTIFY for one of our queues.
    mutating func queueNotified() { notified = true }

    /// A NOTIFY saying a job this worker holds may have been cancelled.
    mutating func cancelNotified() { cancelCheck = true }

    /// The connection broke: NOTIFYs sent meanwhile were lost, so the next round claims.
    mutating func connectionLost() { notified = true }
}
