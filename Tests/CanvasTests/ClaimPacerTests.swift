import Foundation
import Testing

@testable import PGCanvas

/// The broker loop's claim decisions, without a database: what it claims, when it asks for
/// cancels and how long it waits, given what it saw.
@Suite struct ClaimPacerTests {
    let start = Date(timeIntervalSince1970: 1_000_000)

    /// Holds the pacer so that its mutating calls can sit inside `#expect`.
    final class Loop {
        var pacer: ClaimPacer
        init(poll: Double, heartbeat: Double) {
            pacer = ClaimPacer(pollInterval: poll, heartbeatInterval: heartbeat)
        }
        func decide(_ now: Date, want: Int) -> ClaimPacer.Decision { pacer.decide(now: now, want: want) }
        func claimed(_ count: Int, of wanted: Int) { pacer.claimed(count, of: wanted) }
        func wait(_ now: Date, hasOutgoing: Bool = false, stopping: Bool = false) -> ClaimPacer.Wait {
            pacer.wait(now: now, hasOutgoing: hasOutgoing, stopping: stopping)
        }
    }

    func loop(poll: Double = 2, heartbeat: Double = 10) -> Loop { Loop(poll: poll, heartbeat: heartbeat) }
    func at(_ seconds: Double) -> Date { start.addingTimeInterval(seconds) }

    @Test func theFirstRoundClaimsEveryFreeSlotAndLooksForCancels() {
        let l = loop()
        #expect(l.decide(at(0), want: 5) == .init(claim: 5, checkCancels: true))
    }

    @Test func aFullClaimClaimsAgainAtOnce() {
        let l = loop()
        _ = l.decide(at(0), want: 5)
        l.claimed(5, of: 5)
        #expect(l.wait(at(0)) == .none)
        #expect(l.pacer.shouldGatherOutcomes(stopping: false))
        #expect(l.decide(at(0.01), want: 3) == .init(claim: 3, checkCancels: false))
    }

    @Test func aPartialClaimWaitsForANotifyOrThePoll() {
        let l = loop(poll: 2)
        _ = l.decide(at(0), want: 5)
        l.claimed(2, of: 5)
        #expect(!l.pacer.shouldGatherOutcomes(stopping: false))
        #expect(l.wait(at(0.5)) == .upTo(1.5))
        // Nothing new and no poll due: the next round claims nothing, even with room.
        #expect(l.decide(at(0.5), want: 3) == .init(claim: 0, checkCancels: false))
        // The poll comes due: it claims and looks for cancels.
        #expect(l.decide(at(2), want: 3) == .init(claim: 3, checkCancels: true))
    }

    @Test func aRetryScheduledBeforeThePollIsClaimedWhenItComesDue() {
        let l = loop(poll: 2)
        _ = l.decide(at(0), want: 5)
        l.claimed(0, of: 5)
        l.pacer.retryScheduled(at: at(0.75))
        l.pacer.retryScheduled(at: at(1.5))
        #expect(l.wait(at(0.5)) == .upTo(0.25))
        #expect(l.decide(at(0.5), want: 5) == .init(claim: 0, checkCancels: false))
        #expect(l.decide(at(0.75), want: 5) == .init(claim: 5, checkCancels: false))
        l.claimed(0, of: 5)
        // Taken: back to the poll's own rhythm, restarted by that claim (only the soonest retry
        // is remembered; a later one is found by a claim no later than the next poll).
        #expect(l.wait(at(1)) == .upTo(1.75))
        #expect(l.decide(at(1), want: 5) == .init(claim: 0, checkCancels: false))
    }

    @Test func theIdleWaitIsAtMostTheHeartbeatInterval() {
        let l = loop(poll: 60, heartbeat: 5)
        _ = l.decide(at(0), want: 5)
        l.claimed(0, of: 5)
        #expect(l.wait(at(0)) == .upTo(5))
        #expect(l.wait(at(58)) == .upTo(2))
        #expect(l.wait(at(90)) == .upTo(0))
    }

    @Test func outcomesWaitingToBeSentMeanNoWait() {
        let l = loop()
        _ = l.decide(at(0), want: 5)
        l.claimed(0, of: 5)
        #expect(l.wait(at(0), hasOutgoing: true) == .none)
    }

    @Test func aNotifyClaimsOnlyWhenThereIsRoom() {
        let l = loop(poll: 2)
        _ = l.decide(at(0), want: 5)
        l.claimed(1, of: 5)
        l.pacer.queueNotified()
        #expect(l.decide(at(0.5), want: 0) == .init(claim: 0, checkCancels: false))
        // The notify is kept until a slot frees up…
        #expect(l.decide(at(0.6), want: 2) == .init(claim: 2, checkCancels: false))
        // …and used up by that claim.
        l.claimed(1, of: 2)
        #expect(l.decide(at(0.7), want: 2) == .init(claim: 0, checkCancels: false))
    }

    @Test func aDuePollWithoutRoomClaimsNothingButLooksForCancelsAndRestartsThePollTimer() {
        let l = loop(poll: 2)
        _ = l.decide(at(0), want: 5)
        l.claimed(5, of: 5)
        #expect(l.decide(at(3), want: 0) == .init(claim: 0, checkCancels: true))
        #expect(l.wait(at(3)) == .upTo(2))
        // The poll interval starts over: no cancel check right after.
        #expect(l.decide(at(3.1), want: 0) == .init(claim: 0, checkCancels: false))
    }

    @Test func aCancelNotifyLooksForCancelsOnceAtTheNextRound() {
        let l = loop(poll: 60)
        _ = l.decide(at(0), want: 0)
        l.pacer.cancelNotified()
        #expect(l.decide(at(1), want: 0).checkCancels)
        #expect(!l.decide(at(2), want: 0).checkCancels)
    }

    @Test func aLostConnectionClaimsAtTheNextRound() {
        let l = loop(poll: 60)
        _ = l.decide(at(0), want: 5)
        l.claimed(1, of: 5)
        #expect(l.decide(at(1), want: 4).claim == 0)
        l.pacer.connectionLost()
        #expect(l.decide(at(2), want: 4).claim == 4)
    }

    @Test func stoppingNeitherGathersNorWaitsLong() {
        let l = loop()
        #expect(!l.pacer.shouldGatherOutcomes(stopping: true))
        #expect(l.decide(at(0), want: 0).claim == 0)
        #expect(l.wait(at(0), stopping: true) == .upTo(0.05))
    }

    @Test func aClaimThatNeverLandedIsNoReasonToGoRoundAtOnce() {
        let l = loop(poll: 60)
        _ = l.decide(at(0), want: 5)
        l.claimed(5, of: 5)
        // The next round claims but its exchange fails: `claimed` is never called for it.
        #expect(l.decide(at(1), want: 4).claim == 4)
        #expect(l.wait(at(1)) != .none)
    }
}
