import Foundation

/// How many connections a worker may hold, and whether the server has room for them.
///
/// A worker holds one connection for each broker thread (`--broker-connections`, 1 by default)
/// and one for its maintenance thread (one more with `--beat`); each pool process connects only when a task asks for
/// `ctx.connection()`, and lets it go after `--idle-connection-timeout`. The bound is therefore
/// fixed + concurrency. At start the worker checks it against `max_connections`, less the slots
/// reserved for superusers, less what other clients use now, less the bound of every live worker:
/// a worker that does not fit exits at once instead of failing jobs with "too many clients".
public struct ConnectionBudget: Sendable, Equatable {
    /// `max_connections − superuser_reserved_connections (− reserved_connections)`.
    public var usable: Int
    /// Client connections open now that are not this database's workers' (`pgworker…`).
    public var otherClients: Int
    /// The bounds live workers registered.
    public var workersBound: Int

    public init(usable: Int, otherClients: Int, workersBound: Int) {
        self.usable = usable
        self.otherClients = otherClients
        self.workersBound = workersBound
    }

    /// Connections the worker's own threads hold for its whole life: the broker's (one per
    /// `--broker-connections`), the maintenance thread's, and beat's.
    public static func fixed(beat: Bool, brokerConnections: Int = 1) -> Int { brokerConnections + 1 + (beat ? 1 : 0) }

    /// Slots left for one more worker.
    public var free: Int { usable - otherClients - workersBound }

    /// The line a worker that does not fit exits with.
    public func refusal(need: Int, fixed: Int, concurrency: Int) -> String {
        "PostgreSQL has no room for this worker: it needs up to \(need) connections (\(fixed) + \(concurrency) "
            + "for -c \(concurrency)), and \(max(0, free)) of the server's \(usable) are free (other clients use "
            + "\(otherClients), running workers may use \(workersBound)); lower -c, raise max_connections, or see "
            + "'Connection budget' in docs/operations.md"
    }
}
