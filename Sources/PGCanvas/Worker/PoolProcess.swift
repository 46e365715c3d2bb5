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
    /// Set when the supervisor killed it on purpose (time limit), so its death is not a crash.
    var killedForTimeLimit = false
    /// Set when its job was cancelled and the supervisor killed it to stop the run.
    var killedForCancel = false
    /// Killed on purpose and not yet reaped: it must not be given more jobs.
    var isDying: Bool { killedForTimeLimit || killedForCancel }
    var exited = false

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
        let rc = withCStrings(argv) { cArgv in
            withCStrings(envp) { cEnv in posix_spawn(&pid, executable, &actions, nil, cArgv, cEnv) }
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
    func send(_ jobs: [ClaimedJob], timeLimit: (ClaimedJob) -> Double?) -> Bool {
        guard !jobs.isEmpty else { return true }
        let wasIdle = inFlight.isEmpty
        inFlight.append(contentsOf: jobs)
        if wasIdle { startHead(timeLimit) }
        guard !jobPipeBroken else { return false }
        for job in jobs { WireFormat.appendJob(job, to: &outgoing) }
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
            let n = outgoing.withUnsafeBytes {
                write(toChild, $0.baseAddress! + outgoingStart, $0.count - outgoingStart)
            }
            if n > 0 {
                outgoingStart += n
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                // Most of a large queue went out: drop the sent head so the queue does not only grow.
                if outgoingStart >= 65536 && outgoingStart * 2 >= outgoing.count {
                    outgoing.removeFirst(outgoingStart)
                    outgoingStart = 0
                }
                return true
            } else {
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

    /// One read buffer for every pool process: only the supervisor's event loop reads their pipes,
    /// and a frame is handled before the next read.
    nonisolated(unsafe) private static let readBuffer = UnsafeMutableRawBufferPointer.allocate(
        byteCount: 65536, alignment: 8)

    /// Reads what is available. - Returns: false at end of file (the process exited or died).
    func readAvailable(_ onFrame: (UnsafeRawBufferPointer) -> Void) -> Bool {
        let buffer = Self.readBuffer
        while true {
            let n = read(fromChild, buffer.baseAddress, buffer.count)
            if n > 0 {
                frames.feed(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), onFrame)
                if n < buffer.count { return true }
                continue
            }
            if n == 0 { return false }
            if errno == EINTR { continue }
            return errno == EAGAIN || errno == EWOULDBLOCK
        }
    }

    func kill(_ signal: Int32 = SIGKILL) { _ = Glibc.kill(pid, signal) }

    /// Closes the job pipe (the process exits when it has nothing left) and reaps it.
    func closeAndReap(wait: Bool) {
        dropOutgoing()
        close(toChild)
        var status: Int32 = 0
        if wait {
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        } else {
            _ = waitpid(pid, &status, WNOHANG)
        }
        close(fromChild)
    }

    /// How the process ended, once it has (for the crash log line).
    func reap() -> String {
        var status: Int32 = 0
        var rc: pid_t
        repeat { rc = waitpid(pid, &status, 0) } while rc < 0 && errno == EINTR
        dropOutgoing()
        close(toChild)
        close(fromChild)
        exited = true
        if rc < 0 { return "exited" }
        let signal = status & 0x7f
        if signal != 0 { return "signal \(signal) (\(String(cString: strsignal(signal))))" }
        return "exit code \((status >> 8) & 0xff)"
    }
}

/// Calls `body` with a NULL-terminated array of C strings that live for the call.
func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
    let pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) } + [nil]
    defer { pointers.forEach { free($0) } }
    return body(pointers)
}
