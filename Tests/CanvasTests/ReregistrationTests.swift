import Foundation
import Testing

@testable import PGCanvas

/// A worker's broker and maintenance threads can learn at the same moment that it was presumed
/// dead (a network link that comes back): it must register again once, or the spare row, never
/// beaten for, would be rescued later and the worker would seem to have died twice.
@Suite struct ReregistrationTests {
    @Test func threadsThatLearnTogetherRegisterOnce() throws {
        let state = try SharedState(workerID: 7, capacity: 1)
        let registrations = Counter()
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            _ = state.reregister(replacing: 7) {
                usleep(20_000)  // a round trip, during which the others arrive
                return 100 + Int64(registrations.increment())
            }
        }
        #expect(registrations.value == 1)
        #expect(state.workerID == 101)
    }

    @Test func aRefusalForAnOlderRegistrationIsNotNews() throws {
        let state = try SharedState(workerID: 7, capacity: 1)
        #expect(state.reregister(replacing: 7) { 8 })
        #expect(
            !state.reregister(replacing: 7) {
                Issue.record("registered twice"); return 9
            })
        #expect(state.workerID == 8)
        #expect(state.reregister(replacing: 8) { 9 })
        #expect(state.workerID == 9)
    }

    @Test func aFailedRegistrationLeavesTheOldIDForTheNextTry() throws {
        struct Down: Error {}
        let state = try SharedState(workerID: 7, capacity: 1)
        #expect(throws: Down.self) { try state.reregister(replacing: 7) { throw Down() } }
        #expect(state.workerID == 7)
        #expect(state.reregister(replacing: 7) { 8 })
    }
}

private final class Counter: @unchecked Sendable {
    // Guarded by lock.
    private let lock = NSLock()
    private var count = 0
    func increment() -> Int {
        lock.lock()
        defer { lock.unlock() }
        count += 1
        return count
    }
    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }
}
