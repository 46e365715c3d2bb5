import Foundation
import Logging
import Postgres

/// The life of a pool process: read jobs from fd 3, run them, answer on fd 4, until the
/// supervisor closes the pipe or dies.
package enum PoolProcessMain {
    /// - Parameters:
    ///   - idleConnectionTimeout: seconds the process keeps a database connection that no task
    ///     used, so an idle pool holds no server slots.
    ///   - connectionSlotWait: seconds a task waits for a slot on a server with too many clients.
    package static func run(
        index: Int, registry: TaskRegistry, database: ConnectionConfiguration, idleConnectionTimeout: Double = 30,
        connectionSlotWait: Double = slotWait, logger: Logger
    ) -> Never {
        TaskExecution.processIsPoolProcess = true
        signal(SIGINT, SIG_IGN)  // Ctrl-C reaches the whole process group; the supervisor decides.
        signal(SIGTERM, SIG_IGN)
        signal(SIGPIPE, SIG_IGN)
        watchParent()
        Allocator.keepFreedMemory()
        for warmUp in registry.warmUps { warmUp() }

        var connection: Connection?
        let configuration = ConnectionConfiguration(
            conninfo: database.conninfo, applicationName: "pgworker ForkPoolWorker-\(index)")
        let provider: () throws -> Connection = {
            if let c = connection, c.isHealthy { return c }
            connection = nil
            let c = try connectWaitingForASlot(configuration, logger: logger, slotWait: connectionSlotWait)
            connection = c
            return c
        }

        var decoder = FrameDecoder()
        var replies: [UInt8] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        let idleMilliseconds = Int32(clamping: Int((idleConnectionTimeout * 1000).rounded(.up)))
        while true {
            if connection != nil {
                var waiting = pollfd(fd: 3, events: Int16(POLLIN), revents: 0)
                let ready = poll(&waiting, 1, idleMilliseconds)
                if ready == 0 { connection = nil }  // closed: the server slot is free for others
            }
            guard let n = try? syscall("read", { read(3, buffer.baseAddress, buffer.count) }) else { exit(1) }
            if n == 0 { exit(0) }
            replies.removeAll(keepingCapacity: replies.capacity <= 1 << 20)
            let readable = handleInput(
                UnsafeRawBufferPointer(rebasing: buffer[0..<n]), decoder: &decoder, replies: &replies,
                registry: registry, logger: logger, connection: provider)
            // Blocking is safe here: the supervisor reads results whatever it has left to send.
            if !FD.writeAll(4, replies) { exit(0) }
            // A frame that is no job means the two sides disagree: exiting lets the supervisor
            // settle the jobs it sent as it does for any crash, instead of waiting for answers.
            if !readable { exit(70) }
        }
    }

    /// Runs every job that arrived whole in `bytes` (with what `decoder` kept from earlier reads)
    /// and appends their result frames to `replies`.
    /// - Returns: false when a frame is not a job (the rest of the input is not run).
    static func handleInput(
        _ bytes: UnsafeRawBufferPointer, decoder: inout FrameDecoder, replies: inout [UInt8], registry: TaskRegistry,
        logger: Logger, connection: @escaping () throws -> Connection
    ) -> Bool {
        var readable = true
        decoder.feed(bytes) { frame in
            guard readable else { return }
            guard let job = WireFormat.parseJob(frame) else {
                logger.error("unreadable message from the supervisor", metadata: ["bytes": "\(frame.count)"])
                readable = false
                return
            }
            runJob(job, registry: registry, logger: logger, connection: connection, into: &replies)
        }
        return readable
    }

    static func runJob(
        _ job: WireFormat.JobMessage, registry: TaskRegistry, logger: Logger,
        connection: @escaping () throws -> Connection, into replies: inout [UInt8]
    ) {
        let report = JobExecution.run(job, registry: registry, logger: logger, connection: connection)
        WireFormat.appendResult(
            id: job.id, attempt: job.attempt, kind: report.kind, seconds: report.seconds,
            resultText: report.resultText, error: report.error, spawnText: report.spawnText, to: &replies)
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

extension PoolProcessMain {
    /// Seconds a task waits for a free server slot when PostgreSQL (or PgBouncer) refuses it with
    /// "too many clients" before its run counts as a crash.
    static let slotWait = 20.0

    /// Connects; while the server says it has too many clients, tries again with backoff for up
    /// to `slotWait` seconds: such a refusal is the fleet's, not the job's, and mostly brief.
    /// - Throws: the last connection error (a connection problem: the run is retried without
    ///   spending an attempt).
    static func connectWaitingForASlot(
        _ configuration: ConnectionConfiguration, logger: Logger, slotWait: Double = slotWait
    ) throws -> Connection {
        let deadline = Date().addingTimeInterval(slotWait)
        var pause = 0.05
        var warned = false
        while true {
            do {
                return try Connection.connect(configuration)
            } catch let error as PostgresError
                where error.sqlState == PostgresError.State.tooManyConnections && Date() < deadline
            {
                if !warned {
                    logger.warning(
                        "no free PostgreSQL connection for the task; waiting for one",
                        metadata: ["error": "\(error)", "wait_s": "\(slotWait)"])
                    warned = true
                }
                usleep(UInt32(min(pause, max(0, deadline.timeIntervalSinceNow)) * 1_000_000))
                pause = min(pause * 2, 1)
            }
        }
    }
}
