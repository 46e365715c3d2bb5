import Foundation

/// A five-field cron expression (minute hour day-of-month month day-of-week) in a time zone.
///
/// Fields take `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, and lists `a,b`; months and
/// weekdays also take names (`JAN`, `MON`); weekday 0 and 7 are Sunday. As in Vixie cron, when
/// both day fields are restricted a day matches if either does. Times are matched in the
/// schedule's time zone: a wall-clock time skipped by a DST change does not fire, and one that
/// occurs twice fires at each occurrence.
///
/// ```swift
/// let weekdays = try CronExpression("30 9 * * 1-5", timeZone: TimeZone(identifier: "Europe/Paris")!)
/// let next = weekdays.nextFire(after: Date())   // the next 09:30 in Paris, Monday to Friday
/// ```
public struct CronExpression: Sendable, Hashable, CustomStringConvertible {
    public let text: String
    public let timeZone: TimeZone
    let minutes: Set<Int>
    let hours: Set<Int>
    let days: Set<Int>
    let months: Set<Int>
    let weekdays: Set<Int>
    let daysRestricted: Bool
    let weekdaysRestricted: Bool

    public var description: String { text }

    /// - Throws: `CanvasError` naming the field that is wrong.
    public init(_ text: String, timeZone: TimeZone = TimeZone(identifier: "UTC")!) throws {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw CanvasError("invalid cron expression '\(text)': expected 5 fields (minute hour day month weekday)")
        }
        let monthNames = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
        let dayNames = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
        self.text = text
        self.timeZone = timeZone
        minutes = try Self.parse(fields[0], "minute", 0...59, names: [], nameBase: 0, in: text)
        hours = try Self.parse(fields[1], "hour", 0...23, names: [], nameBase: 0, in: text)
        days = try Self.parse(fields[2], "day of month", 1...31, names: [], nameBase: 0, in: text)
        months = try Self.parse(fields[3], "month", 1...12, names: monthNames, nameBase: 1, in: text)
        let rawWeekdays = try Self.parse(fields[4], "day of week", 0...7, names: dayNames, nameBase: 0, in: text)
        weekdays = Set(rawWeekdays.map { $0 % 7 })
        daysRestricted = fields[2] != "*"
        weekdaysRestricted = fields[4] != "*"
        // Every day and month pairing that exists comes round within four years (29 February),
        // so an expression that has no time in the next five never fires ("0 0 30 2 *").
        guard nextFire(after: Date()) != nil else {
            throw CanvasError("invalid cron expression '\(text)': it never fires (no such day)")
        }
    }

    /// An expression that matches nothing, for a stored text that cannot be read (inserted past
    /// `voteradmin schedule add`), so that listing schedules still shows it.
    init(unreadable text: String, timeZone: TimeZone) {
        self.text = text
        self.timeZone = timeZone
        (minutes, hours, days, months, weekdays) = ([], [], [], [], [])
        (daysRestricted, weekdaysRestricted) = (false, false)
    }

    static func parse(
        _ field: String, _ name: String, _ range: ClosedRange<Int>, names: [String], nameBase: Int, in text: String
    ) throws -> Set<Int> {
        func fail() -> CanvasError {
            CanvasError(
                "invalid cron expression '\(text)': bad \(name) field '\(field)' (allowed \(range.lowerBound)-\(range.upperBound))"
            )
        }
        func value(_ s: Substring) throws -> Int {
            if let n = Int(s), range.contains(n) { return n }
            if let i = names.firstIndex(of: s.uppercased()) { return i + nameBase }
            throw fail()
        }
        var result = Set<Int>()
        for part in field.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2, !pieces[0].isEmpty else { throw fail() }
            var step = 1
            if pieces.count == 2 {
                guard let s = Int(pieces[1]), s > 0 else { throw fail() }
                step = s
            }
            var low: Int
            var high: Int
            if pieces[0] == "*" {
                (low, high) = (range.lowerBound, range.upperBound)
            } else if let dash = pieces[0].firstIndex(of: "-") {
                low = try value(pieces[0][..<dash])
                high = try value(pieces[0][pieces[0].index(after: dash)...])
                guard low <= high else { throw fail() }
            } else {
                low = try value(pieces[0])
                high = pieces.count == 2 ? range.upperBound : low
            }
            result.formUnion(stride(from: low, through: high, by: step))
        }
        return result
    }

    /// The first minute strictly after `date` that matches. - Returns: nil if none within 5 years.
    public func nextFire(after date: Date) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        var t = Date(timeIntervalSince1970: (date.timeIntervalSince1970 / 60).rounded(.down) * 60 + 60)
        let limit = date.addingTimeInterval(5 * 366 * 86_400)
        while t < limit {
            let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: t)
            guard let month = c.month, let day = c.day, let hour = c.hour, let minute = c.minute,
                let weekday = c.weekday
            else { return nil }
            if !months.contains(month) {
                let firstOfMonth = calendar.date(from: DateComponents(year: c.year, month: month, day: 1)) ?? t
                t = calendar.date(byAdding: .month, value: 1, to: firstOfMonth) ?? t.addingTimeInterval(86_400)
                continue
            }
            if !dayMatches(day: day, weekday: weekday - 1) {
                t =
                    calendar.date(byAdding: .day, value: 1, to: calendar.startOfDay(for: t))
                    ?? t.addingTimeInterval(86_400)
                continue
            }
            if !hours.contains(hour) {
                t = Date(timeIntervalSince1970: (t.timeIntervalSince1970 / 3600).rounded(.down) * 3600 + 3600)
                continue
            }
            if !minutes.contains(minute) {
                t = t.addingTimeInterval(60)
                continue
            }
            return t
        }
        return nil
    }

    func dayMatches(day: Int, weekday: Int) -> Bool {
        switch (daysRestricted, weekdaysRestricted) {
        case (true, true): return days.contains(day) || weekdays.contains(weekday)
        case (true, false): return days.contains(day)
        case (false, true): return weekdays.contains(weekday)
        case (false, false): return true
        }
    }
}
