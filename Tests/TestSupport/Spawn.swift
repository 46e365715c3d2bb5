import Foundation
import PGCanvas

/// Starts a program with posix_spawn (Foundation's Process can stall reaping children when tests
/// start processes from several threads at once). stdin is /dev/null.
/// - Parameters:
///   - stdout, stderr: file descriptors the child writes to.
/// - Returns: the child's pid.
func spawnProcess(
    _ executable: URL, _ arguments: [String], environment: [String: String], stdout: Int32, stderr: Int32
) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, stdout, 1)
    posix_spawn_file_actions_adddup2(&actions, stderr, 2)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var noSignals = sigset_t()
    sigemptyset(&noSignals)
    posix_spawnattr_setsigmask(&attributes, &noSignals)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for s in [SIGTERM, SIGINT, SIGPIPE, SIGCHLD] { sigaddset(&defaults, s) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    var env = ProcessInfo.processInfo.environment
    env.merge(environment) { $1 }
    let argv = [executable.path] + arguments
    let envp = env.map { "\($0.key)=\($0.value)" }
    var pid: pid_t = 0
    let rc = withCStringArray(argv) { a in
        withCStringArray(envp) { e in posix_spawn(&pid, executable.path, &actions, &attributes, a, e) }
    }
    guard rc == 0 else {
        throw SpawnError(description: "cannot start \(executable.path): \(String(cString: strerror(rc)))")
    }
    return pid
}

/// Waits for a child. - Returns: its exit status (128 + signal when killed), or nil on timeout.
func waitForChild(_ pid: pid_t, timeout: Double) -> Int32? {
    let deadline = Date().addingTimeInterval(timeout)
    var status: Int32 = 0
    while true {
        let rc = waitpid(pid, &status, timeout.isInfinite ? 0 : WNOHANG)
        if rc == pid {
            let signal = status & 0x7f
            return signal != 0 ? 128 + signal : (status >> 8) & 0xff
        }
        if rc < 0 && errno != EINTR { return -1 }
        if Date() >= deadline { return nil }
        usleep(10_000)
    }
}

public struct SpawnError: Error, CustomStringConvertible {
    public var description: String
}
