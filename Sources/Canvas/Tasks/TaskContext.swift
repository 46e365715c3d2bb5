import Logging
import Postgres

/// The running job as its task sees it: ids, the pool process's logger, a database connection,
/// and the work the task spawns (committed together with the task's success).
public struct TaskContext {
    public let jobID: Int64
    public let task: String
    public let attempt: Int
    /// Logs tagged with the pool process (`WARNING/ForkPoolWorker-3`), as Celery shows task output.
    public let logger: Logger
    let connectionProvider: () throws -> Connection

    public init(jobID: Int64, task: String, attempt: Int, logger: Logger, connection: @escaping () throws -> Connection)
    {
        self.jobID = jobID
        self.task = task
        self.attempt = attempt
        self.logger = logger
        self.connectionProvider = connection
    }

    /// This pool process's own connection to the application database (opened on first use).
    public func connection() throws -> Connection { try connectionProvider() }
}
