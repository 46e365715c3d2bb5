import Foundation

/// SIGTERM and SIGINT arrive as bytes on a pipe, so the supervisor's poll loop handles them like
/// any other event (a signal handler may do almost nothing safely; write(2) is allowed).
enum Signals {
    // `nonisolated(unsafe)`: written once by `install()` on the main thread before any handler is
    // installed and before the threads that read them start; only read afterwards (a signal
    // handler cannot take a lock, so a plain global is the only thing it may read).
    nonisolated(unsafe) static var pipeWrite: Int32 = -1
    nonisolated(unsafe) static var pipeRead: Int32 = -1

    static func install() throws {
        let p = try FD.pipe()
        FD.setNonBlocking(p.read)
        FD.setNonBlocking(p.write)
        pipeRead = p.read
        pipeWrite = p.write
        signal(SIGPIPE, SIG_IGN)
        // A parent may have started us with these blocked (some process launchers do).
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGTERM)
        sigaddset(&unblock, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        for sig in [SIGTERM, SIGINT] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signo in
                // The bare write(2), not `syscall`: only async-signal-safe calls belong here, and a
                // full pipe already holds a byte that wakes the supervisor.
                var byte = UInt8(truncatingIfNeeded: signo)
                _ = write(Signals.pipeWrite, &byte, 1)
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = SA_RESTART
            sigaction(sig, &action, nil)
        }
    }

    /// The signals received since the last call.
    static func take() -> [Int32] {
        var buffer = [UInt8](repeating: 0, count: 16)
        var out: [Int32] = []
        while case .processed(let n) = try? syscall(blocking: false, "read", { read(pipeRead, &buffer, buffer.count) }),
            n > 0
        {
            out.append(contentsOf: buffer[0..<n].map { Int32($0) })
        }
        return out
    }
}
