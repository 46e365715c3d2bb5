import Foundation
import Logging
import Postgres

/// Fires due schedules (`pgworker --beat`). Any number of these may run: each tick is a firing
/// row under a primary key, committed with what it enqueues, so every tick fires exactly once.
///
/// Schedule times come only from the database's clock: the host's clock (`hostClock`) times
/// nothing but this loop's own sleeps, so a host minutes off fires every tick on time, once.
///
/// `@unchecked Sendable`: the supervisor builds it and hands it to the beat thread, which alone
/// touches its mutable state; the supervisor only calls `requestStop()`, which goes through
/// `stopFlag`, guarded by its lock.
final class BeatLoop: @unchecked Sendable {
    let logger: Logger
    private let db: ReconnectingConnection
    private let stopFlag = StopFlag()
    private var stop: Bool { stopFlag.isRequested }
    let hostClock: @Sendable () -> Date

    /// - Parameter hostClock: the host's clock; by default `Date()` shifted by
    ///   `PGCANVAS_HOST_CLOCK_SKEW` seconds, which lets a test run a beat on a host whose clock is off.
    init(configuration: WorkerConfiguration, logger: Logger, hostClock: (@Sendable () -> Date)? = nil) {
        self.logger = logger
        db = ReconnectingConnection(configuration.database, logger: logger)
        let skew = ProcessInfo.processInfo.environment["PGCANVAS_HOST_CLOCK_SKEW"].flatMap(Double.init) ?? 0
        self.hostClock = hostClock ?? { Date().addingTimeInterval(skew) }
    }

    func requestStop() { stopFlag.request() }

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

    /// Fires every due tick this beat can lock; another beat skips the locked ones. A tick that
    /// fails is recorded on its schedule by the database functions and does not stop the others.
    func fireDue(_ c: Connection) throws {
        try c.withTransaction { tx in
            for row in try tx.query("SELECT * FROM canvas.fire_due_intervals(1000)") { try self.log(row) }
        }
        try c.withTransaction { tx in
            var ids: [Int64] = []
            var fireAts: [Date] = []
            var nexts: [Date] = []
            var misseds: [Int32] = []
            var errors: [String?] = []
            for row in try tx.query("SELECT * FROM canvas.due_crons(500)") {
                let now = try row.decode(Date.self, 0)
                let due = try row.decode(Date.self, 4)
                ids.append(try row.decode(Int64.self, 1))
                fireAts.append(due)
                do {
                    let zone = TimeZone(identifier: try row.decode(String.self, 3)) ?? TimeZone(identifier: "UTC")!
                    let cron = try CronExpression(try row.decode(String.self, 2), timeZone: zone)
                    let (next, missed) = Self.advance(cron, due: due, now: now)
                    nexts.append(next)
                    misseds.append(Int32(clamping: missed))
                    errors.append(nil)
                } catch {
                    // Stored by hand past `voteradmin schedule add`: said on the schedule, and
                    // looked at again in an hour, in case it was mended.
                    nexts.append(now.addingTimeInterval(3600))
                    misseds.append(0)
                    errors.append("\(error)")
                }
            }
            guard !ids.isEmpty else { return }
            for row in try tx.query(
                "SELECT * FROM canvas.fire_ticks(\(ids), \(fireAts), \(nexts), \(misseds), \(errors))")
            {
                try self.log(row)
            }
        }
    }

    /// Logs a row of `canvas.fire_ticks`: (name, task, missed, canvas id, error).
    func log(_ row: Row) throws {
        let name = try row.decode(String.self, 0)
        let task = try row.decode(String.self, 1)
        let missed = try row.decode(Int.self, 2)
        if missed > 0 {
            logger.warning("beat: \(name) missed \(missed) ticks while no beat was running; firing once for them")
        }
        if let error = try row.decodeIfPresent(String.self, 4) {
            logger.error("beat: \(name) (\(task)) could not fire, tried again at its next tick: \(error)")
        } else {
            let root = try row.decodeIfPresent(Int64.self, 3) ?? 0
            logger.info("Scheduler: Sending due task \(name) (\(task))", metadata: ["canvas.id": "\(root)"])
        }
    }

    /// The first tick after `now` (the database's), and how many ticks between the due one and
    /// `now` were skipped. `now` is at or after `due`, so the next tick is always after the due one.
    static func advance(_ cron: CronExpression, due: Date, now: Date) -> (next: Date, missed: Int) {
        var missed = 0
        var t = due
        while let n = cron.nextFire(after: t), n <= now, missed < 10_000 {
            missed += 1
            t = n
        }
        return (cron.nextFire(after: max(now, due)) ?? now.addingTimeInterval(86_400 * 366), missed)
    }

    /// Sleeps until the earliest next tick, as a duration measured on the database's clock.
    func sleepUntilNextTick(_ c: Connection) {
        let next = try? c.query(
            "SELECT extract(epoch FROM min(next_fire_at) - clock_timestamp())::float8 FROM canvas.schedules WHERE enabled"
        )[0].decodeIfPresent(Double.self, 0)
        let wait = min(1.0, max(0.002, next ?? 1.0))
        let until = hostClock().addingTimeInterval(wait)
        while !stop, hostClock() < until {
            usleep(UInt32(min(50_000, max(1_000, until.timeIntervalSince(hostClock()) * 1_000_000))))
        }
    }
}
