import Foundation

/// A real `pgworker` process started by a test, with its output kept in a file for assertions.
public final class WorkerProcess: @unchecked Sendable {
    // Only touched from the test's thread.
    public let pid: pid_t
    public let logURL: URL
    private var exitStatus: Int32?

    /// - Parameter executable: the worker binary beside the tests (`pgworker`, or
    ///   `pgcanvas-testworker` for tasks only tests need).
    public init(
        databaseURL: String, arguments: [String], environment: [String: String] = [:], executable: String = "pgworker"
    ) throws {
        logURL = FileManager.default.temporaryDirectory.appendingPathComponent("pgworker-\(UUID().uuidString).log")
        let log = open(logURL.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        defer { close(log) }
        pid = try spawnProcess(
            Binaries.url(executable), arguments, environment: environment.merging(["DATABASE_URL": databaseURL]) { $1 },
            stdout: log, stderr: log)
    }

    deinit {
        let pool = poolPIDs
        if exitStatus == nil {
            kill(pid, SIGKILL)
            _ = waitForChild(pid, timeout: 5)
        }
        for child in pool where processExists(child) { kill(child, SIGKILL) }
        try? FileManager.default.removeItem(at: logURL)
    }

    public var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    public func signal(_ signal: Int32) { kill(pid, signal) }

    /// Waits for the process to exit. - Returns: its exit status (128 + signal), or nil on timeout.
    public func waitForExit(timeout: Double) -> Int32? {
        if let exitStatus { return exitStatus }
        exitStatus = waitForChild(pid, timeout: timeout)
        return exitStatus
    }

    /// The pool processes (children of the supervisor).
    public var poolPIDs: [pid_t] { childPIDs(of: pid) }
}

/// Direct children of a process, from /proc.
public func childPIDs(of pid: pid_t) -> [pid_t] {
    let path = "/proc/\(pid)/task/\(pid)/children"
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
    return text.split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
}

/// True while a process exists and is not a zombie.
public func processExists(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
    guard let close = stat.lastIndex(of: ")") else { return false }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    return fields.first != "Z"
}

/// Polls `condition` until it holds or `timeout` passes. - Returns: whether it held.
@discardableResult
public func eventually(timeout: Double, interval: Double = 0.05, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        usleep(UInt32(interval * 1_000_000))
    }
    return try condition()
}
