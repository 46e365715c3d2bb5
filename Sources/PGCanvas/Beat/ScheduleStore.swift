import Foundation
import Postgres

/// A periodic task as stored in `canvas.schedules`.
///
/// ```swift
/// for schedule in try ScheduleStore.list(on: db) where schedule.enabled {
///     print(schedule.name, schedule.rule, schedule.nextFireAt, schedule.lastError ?? "")
/// }
/// ```
public struct Schedule: Sendable {
    public var id: Int64
    public var name: String
    public var canvas: JSONValue
    public var rule: ScheduleRule
    public var enabled: Bool
    public var lastFireAt: Date?
    public var nextFireAt: Date
    /// Why the latest firing failed, and when; cleared by the next firing that succeeds.
    public var lastError: String? = nil
    public var lastErrorAt: Date? = nil
}

/// Adding, listing and changing schedules (`voteradmin schedule …`).
///
/// ```swift
/// let nightly = ScheduleRule.cron(try CronExpression("0 2 * * *", timeZone: TimeZone(identifier: "Europe/Paris")!))
/// try ScheduleStore.add(name: "nightly-sum", canvas: signature("canvas.add", 1, 2).json, rule: nightly, on: db)
/// try ScheduleStore.setEnabled(name: "nightly-sum", false, on: db)   // paused; true resumes from the next tick
/// try ScheduleStore.remove(name: "nightly-sum", on: db)
/// ```
public enum ScheduleStore {
    /// - Throws: `CanvasError` for a duplicate name or a malformed canvas; nothing is stored then.
    @discardableResult
    public static func add(name: String, canvas: JSONValue, rule: ScheduleRule, on c: Connection) throws -> Schedule {
        guard !name.isEmpty else { throw CanvasError("a schedule needs a name") }
        // The database's clock, which the beats fire by: a host minutes off must not delay or
        // skip the first tick.
        let now = try databaseNow(c)
        guard let first = rule.next(after: now, anchor: now) else {
            throw CanvasError("the cron expression '\(rule)' never fires")
        }
        var every: Double? = nil
        var cron: String? = nil
        var zone = "UTC"
        switch rule {
        case .every(let s): every = s
        case .cron(let e):
            cron = e.text
            zone = e.timeZone.identifier
        }
        do {
            let id: Int64 = try c.withTransaction { tx in
                try tx.execute("SELECT canvas.validate_canvas(\(PostgresJSON(text: canvas.jsonText)), '')")
                return try tx.query(
                    """
                    INSERT INTO canvas.schedules (name, canvas, every_seconds, cron, time_zone, next_fire_at)
                    VALUES (\(name), \(PostgresJSON(text: canvas.jsonText)), \(every), \(cron), \(zone), \(first))
                    RETURNING id
                    """)[0].decode(Int64.self, 0)
            }
            return Schedule(
                id: id, name: name, canvas: canvas, rule: rule, enabled: true, lastFireAt: nil, nextFireAt: first)
        } catch let error as PostgresError where error.sqlState == PostgresError.State.uniqueViolation {
            throw CanvasError("a schedule named '\(name)' already exists")
        } catch let error as PostgresError where error.sqlState == "22023" {
            throw CanvasError(error.message)
        }
    }

    public static func list(on c: Connection) throws -> [Schedule] {
        try c.query(
            """
            SELECT id, name, canvas, every_seconds, cron, time_zone, enabled, last_fire_at, next_fire_at,
                   last_error, last_error_at
            FROM canvas.schedules ORDER BY name
            """
        ).map(decode)
    }

    static func decode(_ row: Row) throws -> Schedule {
        let rule: ScheduleRule
        if let every = try row.decodeIfPresent(Double.self, 3) {
            rule = .every(every)
        } else {
            let zone = TimeZone(identifier: try row.decode(String.self, 5)) ?? TimeZone(identifier: "UTC")!
            let text = try row.decode(String.self, 4)
            // The beat records why an unreadable one does not fire; listing must still show it.
            rule = .cron(
                (try? CronExpression(text, timeZone: zone)) ?? CronExpression(unreadable: text, timeZone: zone))
        }
        return Schedule(
            id: try row.decode(Int64.self, 0), name: try row.decode(String.self, 1),
            canvas: try JSONValue(parsingStored: try row.decode(PostgresJSON.self, 2).text), rule: rule,
            enabled: try row.decode(Bool.self, 6), lastFireAt: try row.decodeIfPresent(Date.self, 7),
            nextFireAt: try row.decode(Date.self, 8),
            lastError: try row.decodeIfPresent(String.self, 9),
            lastErrorAt: try row.decodeIfPresent(Date.self, 10))
    }

    static func databaseNow(_ c: Connection) throws -> Date {
        try c.query("SELECT clock_timestamp()")[0].decode(Date.self, 0)
    }

    public static func remove(name: String, on c: Connection) throws {
        guard try c.execute("DELETE FROM canvas.schedules WHERE name = \(name)") == 1 else {
            throw CanvasError("no schedule named '\(name)'")
        }
    }

    /// Enabling again starts from the next tick after now (missed ticks are not fired).
    public static func setEnabled(name: String, _ enabled: Bool, on c: Connection) throws {
        guard let schedule = try list(on: c).first(where: { $0.name == name }) else {
            throw CanvasError("no schedule named '\(name)'")
        }
        let now = try databaseNow(c)
        let next = schedule.rule.next(after: now, anchor: now) ?? schedule.nextFireAt
        try c.execute(
            """
            UPDATE canvas.schedules SET enabled = \(enabled),
                next_fire_at = CASE WHEN \(enabled) AND NOT enabled THEN \(next) ELSE next_fire_at END
            WHERE name = \(name)
            """)
    }
}
