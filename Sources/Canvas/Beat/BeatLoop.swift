import Foundation
import Logging
import Postgres

/// Fires due schedules (`pgworker --beat`). Any number of these may run: each tick is a firing
/// row under a primary key, committed with what it enqueues, so every tick fires exactly once.
final class BeatLoop: @unchecked Sendable {
    // Touched only by the beat thread, except `stop` (a flag read in a loop).
    let logger: Logger
    private let db: ReconnectingConnection
    nonisolated(unsafe) private var stop = false

    init(configuration: WorkerConfiguration, logger: Logger) {
        self.logger = logger
        db = ReconnectingConnection(configuration.database, logger: logger)
    }

    func requestStop() { stop = true }

    func run() {
        logger.info("beat: Starting...")
        while !stop {
            do {
                let c = try db.get()
                try fireDue(c)
                sleepUntilNextTick(c)
            } catch  where error.isConnectionProblem {
                db.failed(error, shouldStop: { stop })
            } catch {
                logger.error("beat failed", metadata: ["error": "\(error)"])
                usleep(500_000)
            }
        }
    }

    /// Fires every due tick this beat can lock; another beat skips the locked ones.
    func fireDue(_ c: Connection) throws {
        try c.withTransaction { tx in
            for row in try tx.query("SELECT name, task, missed, canvas_id FROM canvas.fire_due_intervals(1000)") {
                self.log(
                    name: try row.decode(String.self, 0), task: try row.decode(String.self, 1),
                    missed: try row.decode(Int.self, 2), root: try row.decode(Int64.self, 3))
            }
        }
        try c.withTransaction { tx in
            let due = try tx.query(
                """
                SELECT id, name, canvas, every_seconds, cron, time_zone, enabled, last_fire_at, next_fire_at
                FROM canvas.schedules WHERE enabled AND cron IS NOT NULL AND next_fire_at <= clock_timestamp()
                ORDER BY next_fire_at LIMIT 500 FOR UPDATE SKIP LOCKED
                """
            ).map(ScheduleStore.decode)
            let now = Date()
            for schedule in due {
                let (next, missed) = Self.advance(schedule, now: now)
                let root: Int64? = try tx.query(
                    """
                    SELECT canvas.fire_schedule(\(schedule.id),
                        (SELECT next_fire_at FROM canvas.schedules WHERE id = \(schedule.id)), \(next), \(Int32(clamping: missed)))
                    """)[0].decodeIfPresent(Int64.self, 0)
                guard let root else { continue }
                self.log(
                    name: schedule.name, task: schedule.canvas["task"]?.stringValue ?? "canvas", missed: missed,
                    root: root)
            }
        }
    }

    func log(name: String, task: String, missed: Int, root: Int64) {
        if missed > 0 {
            logger.warning("beat: \(name) missed \(missed) ticks while no beat was running; firing once for them")
        }
        logger.info("Scheduler: Sending due task \(name) (\(task))", metadata: ["canvas.id": "\(root)"])
    }

    /// The next tick after now, and how many ticks between the due one and now were skipped.
    static func advance(_ schedule: Schedule, now: Date) -> (next: Date, missed: Int) {
        let due = schedule.nextFireAt
        switch schedule.rule {
        case .every(let seconds):
            let passed = Int((now.timeIntervalSince(due) / seconds).rounded(.down))
            return (due.addingTimeInterval(Double(passed + 1) * seconds), passed)
        case .cron(let expression):
            var missed = 0
            var t = due
            while let n = expression.nextFire(after: t), n <= now, missed < 10_000 {
                missed += 1
                t = n
            }
            return (expression.nextFire(after: now) ?? now.addingTimeInterval(86_400 * 366), missed)
        }
    }

    func sleepUntilNextTick(_ c: Connection) {
        let next = try? c.query(
            "SELECT extract(epoch FROM min(next_fire_at) - clock_timestamp())::float8 FROM canvas.schedules WHERE enabled"
        )[0].decodeIfPresent(Double.self, 0)
        let wait = min(1.0, max(0.002, next ?? 1.0))
        let until = Date().addingTimeInterval(wait)
        while !stop, Date() < until { usleep(UInt32(min(50_000, max(1_000, until.timeIntervalSinceNow * 1_000_000)))) }
    }
}
