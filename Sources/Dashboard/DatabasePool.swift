import Foundation
import Postgres

/// A few libpq connections, each used by one request at a time on a thread of its own.
///
/// libpq blocks the calling thread, so a query never runs on NIO's event loops or Swift's
/// cooperative pool: `withConnection` hands the work to a dedicated thread and suspends the
/// request until it is done. At most `size` queries run at once; the others wait their turn,
/// which bounds what any number of browsers can ask of the database.
///
/// `@unchecked Sendable`: `idle` and `waiters` are touched only with `lock` held, and each
/// connection is used by the one thread that took it from `idle` until it puts it back.
final class DatabasePool: @unchecked Sendable {
    private let configuration: ConnectionConfiguration
    private let lock = NSLock()
    private var idle: [Connection?]
    private let work = DispatchQueue(label: "pgcanvas.dashboard.db", attributes: .concurrent)
    private let slots: DispatchSemaphore
    /// Seconds a statement may run before the server cancels it: a slow page fails, it does not pile up.
    let statementTimeout: Double

    init(configuration: ConnectionConfiguration, size: Int, statementTimeout: Double = 10) {
        var configuration = configuration
        if configuration.connectTimeout == nil { configuration.connectTimeout = 5 }
        self.configuration = configuration
        self.idle = Array(repeating: nil, count: max(1, size))
        self.slots = DispatchSemaphore(value: max(1, size))
        self.statementTimeout = statementTimeout
    }

    /// Runs `body` with a connection on a pool thread. A broken connection is replaced next time.
    func withConnection<T: Sendable>(_ body: @escaping @Sendable (Connection) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            work.async { [self] in
                slots.wait()
                defer { slots.signal() }
                var connection = take()
                do {
                    if connection == nil || connection?.isHealthy == false {
                        let fresh = try Connection.connect(configuration)
                        // JIT compiles the costlier plans for 100 ms and more; these queries run in a few.
                        try fresh.executeScript(
                            "SET statement_timeout = '\(Int(statementTimeout * 1000))ms'; SET jit = off")
                        connection = fresh
                    }
                    let value = try body(connection!)
                    give(back: connection)
                    continuation.resume(returning: value)
                } catch {
                    give(back: connection?.isHealthy == true ? connection : nil)
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    private func take() -> Connection? {
        lock.lock()
        defer { lock.unlock() }
        return idle.popLast() ?? nil
    }

    private func give(back connection: Connection?) {
        lock.lock()
        defer { lock.unlock() }
        idle.append(connection)
    }
}
