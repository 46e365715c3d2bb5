import Foundation

/// What the supervisor's threads hand each other: claimed jobs one way, outcomes and hand-backs
/// the other. Guarded by one lock; each side wakes the other through a pipe.
final class SharedState: @unchecked Sendable {
    // Every stored property below is read and written only with `lock` held.
    private let lock = NSLock()
    /// Held across a re-registration (a round trip), never together with `lock` the other way round.
    private let registration = NSLock()
    private var inbox: [ClaimedJob] = []
    private var outcomes: [Outcome] = []
    private var releases: [(id: Int64, attempt: Int)] = []
    /// Jobs claimed and not yet finished or handed back (the broker's view of what we hold).
    private var held: [Int64: Int] = [:]
    private var _claiming = true
    private var _workerID: Int64
    private var _brokerStopped = false
    private var _fatalError: String?
    /// Jobs cancelled in the database while this worker holds them: to be stopped.
    private var cancelled: Set<Int64> = []
    private var capacity: Int
    /// When the broker loop and the supervisor's event loop last went round (uptime, ns): the
    /// heartbeat vouches for them, not only for the thread that sends it.
    private var brokerTick = DispatchTime.now().uptimeNanoseconds
    private var mainTick = DispatchTime.now().uptimeNanoseconds
    /// Jobs finished since the last heartbeat took them (see `FinishTally`).
    private var finished = FinishTally()
    /// When the last heartbeat reached the database (uptime, ns), for `/readyz`.
    private var heartbeatTick = DispatchTime.now().uptimeNanoseconds

    let mainWake: (read: Int32, write: Int32)
    let brokerWake: (read: Int32, write: Int32)

    init(workerID: Int64, capacity: Int) throws {
        _workerID = workerID
        self.capacity = capacity
        mainWake = try FD.pipe()
        brokerWake = try FD.pipe()
        for fd in [mainWake.read, mainWake.write, brokerWake.read, brokerWake.write] { FD.setNonBlocking(fd) }
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

    var brokerStopped: Bool {
        get { locked { _brokerStopped } }
        set { locked { _brokerStopped = newValue } }
    }

    var fatalError: String? {
        get { locked { _fatalError } }
        set { locked { _fatalError = newValue } }
    }

    func brokerLoopTicked() { locked { brokerTick = DispatchTime.now().uptimeNanoseconds } }
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
        let oldest = locked { min(brokerTick, mainTick) }
        return Double(DispatchTime.now().uptimeNanoseconds &- oldest) / 1e9
    }

    // MARK: broker thread side

    /// How many more jobs to claim now, counting `n` outcomes about to be finished as free.
    func wantedClaims(afterSettling n: Int) -> Int {
        locked { _claiming ? max(0, capacity - held.count + n) : 0 }
    }

    func deliver(_ jobs: [ClaimedJob]) {
        locked {
            inbox.append(contentsOf: jobs)
            for job in jobs { held[job.id] = job.attempt }
        }
        Self.poke(mainWake.write)
    }

    /// Holds a claimed job that will not be run, and reports how it ended.
    func refuse(_ job: ClaimedJob, _ outcome: Outcome) {
        locked {
            held[job.id] = job.attempt
            outcomes.append(outcome)
        }
        Self.poke(brokerWake.write)
    }

    func takeOutgoing() -> (outcomes: [Outcome], releases: [(id: Int64, attempt: Int)]) {
        locked {
            defer {
                outcomes.removeAll(keepingCapacity: true)
                releases.removeAll()
            }
            return (outcomes, releases)
        }
    }

    /// Puts back what could not be sent (the connection broke); it goes out first next time.
    func restoreOutgoing(_ o: [Outcome], _ r: [(id: Int64, attempt: Int)]) {
        locked {
            outcomes.insert(contentsOf: o, at: 0)
            releases.insert(contentsOf: r, at: 0)
        }
    }

    func settled(_ ids: [Int64]) { locked { for id in ids { held[id] = nil } } }

    var outcomeCount: Int { locked { outcomes.count } }
    var currentCapacity: Int { locked { capacity } }
    var hasOutgoing: Bool { locked { !outcomes.isEmpty || !releases.isEmpty } }
    var heldCount: Int { locked { held.count } }
    func isHeld(_ id: Int64, attempt: Int) -> Bool { locked { held[id] == attempt } }

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

    func report(_ outcome: Outcome) {
        let wasEmpty = locked {
            let empty = outcomes.isEmpty && releases.isEmpty
            outcomes.append(outcome)
            return empty
        }
        if wasEmpty { Self.poke(brokerWake.write) }
    }

    func handBack(_ jobs: [ClaimedJob]) {
        guard !jobs.isEmpty else { return }
        locked { releases.append(contentsOf: jobs.map { ($0.id, $0.attempt) }) }
        Self.poke(brokerWake.write)
    }

    func wakeBroker() { Self.poke(brokerWake.write) }

    static func poke(_ fd: Int32) {
        var byte: UInt8 = 1
        _ = write(fd, &byte, 1)
    }

    static func drain(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 256)
        while read(fd, &buffer, buffer.count) > 0 {}
    }
}
