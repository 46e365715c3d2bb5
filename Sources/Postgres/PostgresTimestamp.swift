import Foundation

/// Text format of `timestamptz` as the server sends it with `DateStyle=ISO` (checked when a
/// `Connection` opens) in whatever `TimeZone` the server, database or role sets: the offset it
/// writes is parsed, so no session setting is needed (PgBouncer's transaction pooling allows none).
/// Values sent carry their own offset (`+00`), which every `DateStyle` reads the same way.
enum PostgresTimestamp {
    static func format(_ date: Date) -> String {
        let seconds = date.timeIntervalSince1970
        var whole = seconds.rounded(.down)
        var micros = Int(((seconds - whole) * 1_000_000).rounded())
        if micros == 1_000_000 {
            whole += 1
            micros = 0
        }
        var t = time_t(whole)
        var parts = tm()
        gmtime_r(&t, &parts)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        let micro = String(micros)
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2)) "
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))."
            + String(repeating: "0", count: 6 - micro.count) + micro + "+00"
    }

    /// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM[:SS]]` (offsets in seconds are what the server
    /// writes for local mean time, before a zone's first standard offset).
    static func parse(_ text: String) -> Date? {
        let u = Array(text.utf8)
        guard u.count >= 19, u[4] == 45, u[7] == 45, u[13] == 58, u[16] == 58 else { return nil }
        func num(_ from: Int, _ to: Int) -> Int? {
            var v = 0
            for i in from..<to {
                guard u[i] >= 48, u[i] <= 57 else { return nil }
                v = v * 10 + Int(u[i] - 48)
            }
            return v
        }
        guard let year = num(0, 4), let month = num(5, 7), let day = num(8, 10), let hour = num(11, 13),
            let minute = num(14, 16), let second = num(17, 19)
        else { return nil }
        var i = 19
        var fraction = 0.0
        if i < u.count, u[i] == 46 {
            i += 1
            var scale = 0.1
            while i < u.count, u[i] >= 48, u[i] <= 57 {
                fraction += Double(u[i] - 48) * scale
                scale /= 10
                i += 1
            }
        }
        var offsetSeconds = 0
        if i < u.count, u[i] == 43 || u[i] == 45 {
            let sign = u[i] == 45 ? -1 : 1
            guard i + 3 <= u.count, let h = num(i + 1, i + 3) else { return nil }
            var seconds = h * 3600
            var at = i + 3
            for scale in [60, 1] {
                guard at + 3 <= u.count, u[at] == 58 else { break }
                guard let v = num(at + 1, at + 3) else { return nil }
                seconds += v * scale
                at += 3
            }
            offsetSeconds = sign * seconds
            i = at
        }
        if i < u.count { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let epoch = timegm(&parts)
        return Date(timeIntervalSince1970: Double(epoch - offsetSeconds) + fraction)
    }
}
