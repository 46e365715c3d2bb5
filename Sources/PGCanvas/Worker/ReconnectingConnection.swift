import Foundation
import Logging
import Postgres

/// A connection that is made again, with backoff, after the server went away.
final class ReconnectingConnection {
    // Owned by one thread, like the Connection it wraps.
    let configuration: ConnectionConfiguration
    let logger: Logger
    private(set) var connection: Connection?
    private var backoff = 0.1
    /// Called on every fresh connection (LISTEN, reconciliation).
    var onConnect: ((Connection) throws -> Void)?
    private(set) var connectedSince = Date()

    init(_ configuration: ConnectionConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// The live connection, connecting (once) if needed. - Throws: the connection error.
    func get() throws -> Connection {
        if let connection, connection.isHealthy { return connection }
        connection = nil
        let c = try Connection.connect(configuration)
        try onConnect?(c)
        connection = c
        connectedSince = Date()
        if backoff > 0.1 { logger.warning("reconnected to PostgreSQL") }
        backoff = 0.1
        return c
    }

    /// Drops the connection after a failure and sleeps before the next try (0.1 s, doubling, at most 5 s).
    /// - Parameter shouldStop: checked while sleeping, so shutdown is not delayed.
    func failed(_ error: Error, shouldStop: () -> Bool = { false }) {
        connection = nil
        logger.warning(
            "PostgreSQL is unavailable; retrying", metadata: ["error": "\(error)", "retry_in_s": "\(backoff)"])
        let until = Date().addingTimeInterval(backoff)
        while Date() < until, !shouldStop() { usleep(20_000) }
        backoff = min(backoff * 2, 5)
    }
}

extension Error {
    /// Connection trouble (retry after reconnecting) as opposed to a bug or a refused statement.
    var isConnectionProblem: Bool { (self as? PostgresError)?.isConnectionProblem ?? false }
    var isWorkerPresumedDead: Bool { (self as? PostgresError)?.sqlState == "PCW01" }
}
