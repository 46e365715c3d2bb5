import Foundation
import Logging
import Postgres

/// The life of a pool process: read jobs from fd 3, run them, answer on fd 4, until the
/// supervisor closes the pipe or dies.
public enum PoolProcessMain {
    public static func run(index: Int, registry: TaskRegistry, database: ConnectionConfiguration, logger: Logger)
        -> Never
    {
        TaskExecution.processIsPoolProcess = true
        signal(SIGINT, SIG_IGN)  // Ctrl-C reaches the whole process group; the supervisor decides.
        signal(SIGTERM, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
        watchParent()
        for warmUp in registry.warmUps { warmUp() }

        var connection: Connection?
        let provider: () throws -> Connection = {
            if let c = connection, c.isHealthy { return c }
            let c = try Connection.connect(
                ConnectionConfiguration(
                    conninfo: database.conninfo, applicationName: "pgworker ForkPoolWorker-\(index)"))
            connection = c
            return c
        }

        var lines = LineBuffer()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(3, $0.baseAddress, $0.count) }
            if n == 0 { exit(0) }
            if n < 0 {
                if errno == EINTR { continue }
                exit(1)
            }
            var replies = ""
            buffer.withUnsafeBytes { raw in
                lines.append(UnsafeRawBufferPointer(rebasing: raw[0..<n])) { line in
                    guard let job = WireFormat.parseJob(line) else {
                        logger.error("unreadable message from the supervisor", metadata: ["line": "\(line.prefix(80))"])
                        return
                    }
                    replies += runJob(job, registry: registry, logger: logger, connection: provider)
                }
            }
            if !FD.writeAll(4, replies) { exit(0) }
        }
    }

    static func runJob(
        _ job: WireFormat.JobMessage, registry: TaskRegistry, logger: Logger,
        connection: @escaping () throws -> Connection
    ) -> String {
        let started = DispatchTime.now().uptimeNanoseconds
        func elapsed() -> Double { Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9 }
        let label = "\(job.task)[\(job.id)]"
        guard let definition = registry[job.task] else {
            let message = "unknown task '\(job.task)'"
            logger.error("Received unregistered task of type '\(job.task)'.", metadata: ["job.id": "\(job.id)"])
            return WireFormat.resultLine(
                id: job.id, attempt: job.attempt, kind: .fatal, seconds: elapsed(), result: nil, error: message)
        }
        let args: [JSONValue]
        do {
            guard let list = try JSONValue(parsing: String(job.argsText)).arrayValue else {
                throw CanvasError("arguments are not a JSON array")
            }
            args = list
        } catch {
            let message = "malformed arguments for \(job.task): \(error)"
            logger.error("Task \(label) raised unexpected: \(message)")
            return WireFormat.resultLine(
                id: job.id, attempt: job.attempt, kind: .fatal, seconds: elapsed(), result: nil, error: message)
        }
        var context = TaskContext(
            jobID: job.id, task: job.task, attempt: job.attempt, logger: logger, registry: registry,
            connection: connection)
        do {
            let result = try definition.run(&context, args)
            let seconds = elapsed()
            if logger.logLevel <= .info {
                logger.info("Task \(label) succeeded in \(formatSeconds(seconds))s: \(result.jsonText)")
            }
            return WireFormat.resultLine(
                id: job.id, attempt: job.attempt, kind: .succeeded, seconds: seconds, result: result, error: nil,
                spawned: context.spawned)
        } catch let error as TaskError {
            logger.error("Task \(label) raised unexpected: \(error.message)")
            return WireFormat.resultLine(
                id: job.id, attempt: job.attempt, kind: error.retryable ? .error : .fatal, seconds: elapsed(),
                result: nil, error: error.message)
        } catch let error as PostgresError where error.isConnectionProblem {
            // The database went away under the task (a restart, a failover): not the task's fault.
            // Retried at once without spending an attempt, bounded like crashes; the next job
            // connects again.
            let message = "the task lost its database connection: \(error)"
            logger.warning("Task \(label) will be retried: \(message)")
            return WireFormat.resultLine(
                id: job.id, attempt: job.attempt, kind: .crashed, seconds: elapsed(), result: nil, error: message)
        } catch {
            let message = "\(error)"
            logger.error("Task \(label) raised unexpected: \(message)")
            return WireFormat.resultLine(
                id: job.id, attempt: job.attempt, kind: .error, seconds: elapsed(), result: nil, error: message)
        }
    }

    /// Exits when the supervisor is gone, even while a task is running (no orphans).
    static func watchParent() {
        let parent = getppid()
        let thread = Thread {
            while true {
                if getppid() != parent { exit(0) }
                usleep(200_000)
            }
        }
        thread.stackSize = 64 * 1024
        thread.start()
    }
}

/// 0.000412 → "0.000412", 12.3456789 → "12.346": Celery prints seconds with enough digits to read.
func formatSeconds(_ s: Double) -> String {
    if s < 0.001 { return String(format: "%.6f", s) }
    if s < 1 { return String(format: "%.4f", s) }
    return String(format: "%.3f", s)
}
