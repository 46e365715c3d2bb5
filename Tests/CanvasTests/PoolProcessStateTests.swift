import Foundation
import Testing

@testable import PGCanvas

/// A pool process's life as the supervisor sees it: why it was killed survives its reaping.
@Suite struct PoolProcessStateTests {
    typealias State = PoolProcess.State

    /// Holds a state so that its mutating calls can sit inside `#expect`.
    final class Box {
        var state = State.running
        func kill(for reason: PoolProcess.KillReason) -> Bool { state.kill(for: reason) }
        func reaped() { state.reaped() }
    }

    @Test func aCrashIsReapedWithNoKillReason() {
        let b = Box()
        b.reaped()
        #expect(b.state == .exited(killedFor: nil))
        #expect(b.state.hasExited && b.state.killReason == nil)
    }

    @Test func aTimeLimitKillIsRememberedPastTheExit() {
        let b = Box()
        #expect(b.kill(for: .timeLimit))
        #expect(b.state == .killed(.timeLimit))
        #expect(!b.kill(for: .timeLimit), "killed once, signalled once")
        b.reaped()
        #expect(b.state == .exited(killedFor: .timeLimit))
        #expect(b.state.killReason == .timeLimit)
    }

    @Test func aCancelOutranksATimeLimitButNotTheOtherWayRound() {
        let b = Box()
        #expect(b.kill(for: .timeLimit))
        #expect(b.kill(for: .cancel))
        #expect(b.state == .killed(.cancel))
        #expect(!b.kill(for: .timeLimit))
        #expect(b.state == .killed(.cancel))
        b.reaped()
        #expect(b.state.killReason == .cancel)
    }

    @Test func anExitedProcessIsNotKilledAgain() {
        let b = Box()
        b.reaped()
        #expect(!b.kill(for: .cancel))
        #expect(b.state == .exited(killedFor: nil))
    }

    @Test func aProcessKilledOnPurposeTakesNoMoreJobs() throws {
        let jobs = try FD.pipe()
        let results = try FD.pipe()
        defer { [jobs.read, jobs.write, results.read, results.write].forEach { close($0) } }
        // No process behind it: pid_t.max names none, so the SIGKILL goes nowhere.
        let p = PoolProcess(index: 1, pid: .max, toChild: jobs.write, fromChild: results.read)
        #expect(!p.isDying && !p.exited)
        p.kill(for: .cancel)
        #expect(p.isDying && !p.exited)
        #expect(p.state == .killed(.cancel))
    }
}
