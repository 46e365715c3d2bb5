import Foundation

/// When a schedule fires: every N seconds, or on a cron expression in a time zone.
///
/// ```swift
/// let everyFive = ScheduleRule.every(try ScheduleRule.parseInterval("5m"))   // .every(300)
/// let nightly = ScheduleRule.cron(try CronExpression("0 2 * * *"))
/// print(everyFive, nightly)   // every 300s cron '0 2 * * *' (UTC)
/// ```
public enum ScheduleRule: Sendable, Hashable, CustomStringConvertible {
    case every(Double)
    case cron(CronExpression)

    /// The intervals a schedule may have: 0.01 s to 3,650 days (as `canvas.schedules` checks), so
    /// that a beat is not asked to fire faster than it can, and no next time overflows a timestamp.
    public static let intervalRange: ClosedRange<Double> = 0.01...315_360_000

    /// "30s", "5m", "2h", "1d" or a plain number of seconds.
    /// - Throws: for an unreadable value or one outside `intervalRange`.
    public static func parseInterval(_ text: String) throws -> Double {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        var number = Substring(text.trimmingCharacters(in: .whitespaces))
        var scale = 1.0
        if let last = number.last, let unit = units[last] {
            scale = unit
            number = number.dropLast()
        }
        guard let value = Double(number), value.isFinite else {
            throw CanvasError("invalid interval '\(text)': use a number with s, m, h or d, like 30s or 5m")
        }
        guard value > 0 else { throw CanvasError("the interval must be more than zero, not '\(text)'") }
        let seconds = value * scale
        guard intervalRange.contains(seconds) else {
            throw CanvasError("the interval '\(text)' is out of range: use 0.01s to 3650d")
        }
        return seconds
    }

    /// The next tick strictly after `date`, for an interval counted from `anchor`.
    public func next(after date: Date, anchor: Date) -> Date? {
        switch self {
        case .every(let seconds):
            let elapsed = date.timeIntervalSince(anchor)
            let ticks = (elapsed / seconds).rounded(.down) + 1
            return anchor.addingTimeInterval(max(1, ticks) * seconds)
        case .cron(let expression):
            return expression.nextFire(after: date)
        }
    }

    public var description: String {
        switch self {
        case .every(let s): return "every \(s.truncatingRemainder(dividingBy: 1) == 0 ? String(Int(s)) : String(s))s"
        case .cron(let c): return "cron '\(c.text)' (\(c.timeZone.identifier))"
        }
    }
}
