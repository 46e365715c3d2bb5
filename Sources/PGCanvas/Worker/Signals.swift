import Foundation

/// SIGTERM and SIGINT arrive as bytes on a pipe, so the supervisor's poll loop handles them like
/// any other event (a signal handler may do almost nothing safely; write(2) is allowed).
enum Signals {
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
        while true {
            let n = read(pipeRead, &buffer, buffer.count)
            if n <= 0 { break }
            out.append(contentsOf: buffer[0..<n].map { Int32($0) })
        }
        return out
    }
}
