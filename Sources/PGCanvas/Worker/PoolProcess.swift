import Foundation

/// The supervisor's handle on one pool process: a fresh process of the same binary (spawned,
/// never forked without exec), fed jobs on its fd 3 and answering on its fd 4.
///
/// Both of its pipe ends are non-blocking on this side: jobs the job pipe cannot take yet wait in
/// `outgoing` until poll says it can, so the supervisor never waits on a pool process and always
/// reads its results, even while that process is itself blocked writing them.
final class PoolProcess {
    let index: Int
    let pid: pid_t
    let toChild: Int32
    let fromChild: Int32
    var frames = FrameDecoder()
    /// Encoded jobs not yet written, from `outgoingStart` on.
    private var outgoing: [UInt8] = []
    private var outgoingStart = 0
    /// The job pipe failed (the process is gone): nothing more is written; poll sees its exit.
    private var jobPipeBroken = false
    /// Jobs sent and not yet answered, in the order the process runs them. Usually one; several
    /// when jobs are short enough that a pipe round trip per job would dominate.
    var inFlight: [ClaimedJob] = []
    /// When the job at the head of `inFlight` started, and when its time limit runs out.
    var startedAt: Date?
    var deadline: Date?
    /// Where it is in its life; changed only by `kill(for:)` and `reap()`.
    private(set) var state = State.running

    /// A pool process runs until the supervisor kills it on purpose or it dies; once reaped it has
    /// exited, remembering why it was killed so its death is reported as that and not as a crash.
    enum State: Equatable {
        case running
        /// Killed on purpose and not yet reaped: it must not be given more jobs.
        case killed(KillReason)
        case exited(killedFor: KillReason?)

        /// Killing it for `reason`. - Returns: whether the reason is new (send the signal then).
        /// A cancel outranks a time limit: the run was cancelled in the database already, and
        /// its report must say so.
        mutating func kill(for reason: KillReason) -> Bool {
            switch (self, reason) {
            case (.running, _), (.killed(.timeLimit), .cancel):
                self = .killed(reason)
                return true
            case (.killed, _), (.exited, _):
                return false
            }
        }

        mutating func reaped() {
            if case .killed(let reason) = self {
                self = .exited(killedFor: reason)
            } else if self == .running {
                self = .exited(killedFor: nil)
            }
        }

        var hasExited: Bool {
            if case .exited = self { return true }
            return false
        }

        /// Why the supervisor killed it, if it did.
        var killReason: KillReason? {
            switch self {
            case .running: nil
            case .killed(let reason), .exited(killedFor: .some(let reason)): reason
            case .exited(killedFor: nil): nil
            }
        }
    }

    enum KillReason: Equatable {
        /// Its job ran past its time limit.
        case timeLimit
        /// Its job was cancelled in the database.
        case cancel
    }

    var exited: Bool { state.hasExited }
    /// Killed on purpose and not yet reaped: it must not be given more jobs.
    var isDying: Bool { if case .killed = state { true } else { false } }

    var name: String { "ForkPoolWorker-\(index)" }

    /// Makes both pipe ends non-blocking: this side never waits on the process.
    init(index: Int, pid: pid_t, toChild: Int32, fromChild: Int32) {
        self.index = index
        self.pid = pid
        self.toChild = toChild
        self.fromChild = fromChild
        FD.setNonBlocking(toChild)
        FD.setNonBlocking(fromChild)
    }

    /// Starts `executable --pool-process index` with the job pipe on fd 3 and the result pipe on fd 4.
    static func spawn(index: Int, executable: String, arguments: [String], environment: [String: String]) throws
        -> PoolProcess
    {
        let jobs = try FD.pipe()
        let results = try FD.pipe()
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, jobs.read, 3)
        posix_spawn_file_actions_adddup2(&actions, results.write, 4)

        let argv = [executable] + arguments
        let envp = environment.map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        let rc = withCStringArray(argv) { cArgv in
            withCStringArray(envp) { cEnv in posix_spawn(&pid, executable, &actions, nil, cArgv, cEnv) }
        }
        close(jobs.read)
        close(results.write)
        guard rc == 0 else {
            close(jobs.write)
            close(results.read)
            throw CanvasError("cannot start a pool process from \(executable): \(String(cString: strerror(rc)))")
        }
        return PoolProcess(index: index, pid: pid, toChild: jobs.write, fromChild: results.read)
    }

    /// The job it is running, when it is running one.
    var job: ClaimedJob? { inFlight.first }

    /// Queues jobs and writes what the pipe takes now; the rest goes out as poll reports room.
    /// - Returns: false when the process is gone (its jobs stay in flight until its exit is handled).
    /// - Parameter softTimeLimit: each job's soft limit, carried to the process in the job frame.
    func send(
        _ jobs: [ClaimedJob], timeLimit: (ClaimedJob) -> Double?, softTimeLimit: (ClaimedJob) -> Double? = { _ in nil }
    ) -> Bool {
        guard !jobs.isEmpty else { return true }
        let wasIdle = inFlight.isEmpty
        inFlight.append(contentsOf: jobs)
        if wasIdle { startHead(timeLimit) }
        guard !jobPipeBroken else { return false }
        for job in jobs { WireFormat.appendJob(job, softTimeLimit: softTimeLimit(job), to: &outgoing) }
        return flush()
    }

    /// Whether jobs wait for room in the job pipe (poll for POLLOUT).
    var hasOutgoing: Bool { outgoingStart < outgoing.count }

    /// Writes queued jobs until the pipe is full, never blocking.
    /// - Returns: false when the process is gone; its queue is dropped then.
    @discardableResult
    func flush() -> Bool {
        guard !jobPipeBroken else { return false }
        while outgoingStart < outgoing.count {
            let written = try? outgoing.withUnsafeBytes { bytes throws(SyscallError) in
                try syscall(blocking: false, "write") {
                    write(toChild, bytes.baseAddress! + outgoingStart, bytes.count - outgoingStart)
                }
            }
            switch written {
            case .processed(let n) where n > 0:
                outgoingStart += n
            case .wouldBlock:
                // Most of a large queue went out: drop the sent head so the queue does not only grow.
                if outgoingStart >= 65536 && outgoingStart * 2 >= outgoing.count {
                    outgoing.removeFirst(outgoingStart)
                    outgoingStart = 0
                }
                return true
            case .processed, nil:
                jobPipeBroken = true
                dropOutgoing()
                return false
            }
        }
        if outgoing.capacity > 1 << 20 {
            outgoing = []
        } else {
            outgoing.removeAll(keepingCapacity: true)
        }
        outgoingStart = 0
        return true
    }

    private func dropOutgoing() {
        outgoing = []
        outgoingStart = 0
    }

    /// The head job answered: the next one (if any) starts now.
    func finishedHead(timeLimit: (ClaimedJob) -> Double?) {
        inFlight.removeFirst()
        startHead(timeLimit)
    }

    private func startHead(_ timeLimit: (ClaimedJob) -> Double?) {
        guard let head = inFlight.first else {
            startedAt = nil
            deadline = nil
            return
        }
        startedAt = Date()
        deadline = timeLimit(head).map { Date().addingTimeInterval($0) }
    }

    /// Forgets every job sent (the process died or was killed). - Returns: them, head first.
    func takeInFlight() -> [ClaimedJob] {
        defer {
            inFlight.removeAll()
            startedAt = nil
            deadline = nil
        }
        return inFlight
    }

    /// One read buffer for every pool process. `nonisolated(unsafe)`: only the supervisor's event
    /// loop, on one thread, reads their pipes, and a frame is handled before the next read.
    nonisolated(unsafe) private static let readBuffer = UnsafeMutableRawBufferPointer.allocate(
        byteCount: 65536, alignment: 8)

    /// Reads what is available. - Returns: false at end of file (the process exited or died).
    func readAvailable(_ onFrame: (UnsafeRawBufferPointer) -> Void) -> Bool {
        let buffer = Self.readBuffer
        while true {
            switch try? syscall(blocking: false, "read", { read(fromChild, buffer.baseAddress, buffer.count) }) {
            case .processed(0), nil:
                return false
            case .processed(let n):
                frames.feed(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), onFrame)
                if n < buffer.count { return true }
            case .wouldBlock:
                return true
            }
        }
    }

    func kill(_ signal: Int32 = SIGKILL) { _ = Glibc.kill(pid, signal) }

    /// Kills it on purpose, so its death is reported as `reason` and it is given no more jobs.
    func kill(for reason: KillReason) {
        if state.kill(for: reason) { kill() }
    }

    /// Closes the job pipe (the process exits when it has nothing left) and reaps it.
    func closeAndReap(wait: Bool) {
        dropOutgoing()
        close(toChild)
        var status: Int32 = 0
        _ = try? syscall("waitpid") { waitpid(pid, &status, wait ? 0 : WNOHANG) }
        close(fromChild)
    }

    /// How the process ended, once it has (for the crash log line).
    func reap() -> String {
        var status: Int32 = 0
        let waited = try? syscall("waitpid") { waitpid(pid, &status, 0) }
        dropOutgoing()
        close(toChild)
        close(fromChild)
        state.reaped()
        if waited == nil { return "exited" }
        let signal = status & 0x7f
        if signal != 0 { return "signal \(signal) (\(String(cString: strsignal(signal))))" }
        return "exit code \((status >> 8) & 0xff)"
    }
}
