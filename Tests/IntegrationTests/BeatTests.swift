import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// Periodic tasks fired by several beat processes at once, each tick exactly once.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class BeatTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func beatWorker(on database: TestDatabase? = nil, hostClockSkew: Double? = nil) throws -> WorkerProcess {
        let db = database ?? self.database
        var environment: [String: String] = [:]
        if let hostClockSkew { environment["PGCANVAS_HOST_CLOCK_SKEW"] = String(hostClockSkew) }
        return try WorkerProcess(
            databaseURL: db.url,
            arguments: ["-c", "1", "--beat", "--heartbeat-interval", "0.5", "--rescue-after", "3"],
            environment: environment)
    }

    func voteradmin(_ arguments: [String]) throws -> CommandResult {
        try runCommand(Binaries.url("voteradmin"), arguments, environment: ["DATABASE_URL": database.url])
    }

    /// Fire times of one schedule's firings, in seconds since 1970, oldest first.
    func firings(_ name: String, on c: Connection, failed: Bool = false) throws -> [Double] {
        try c.query(
            """
            SELECT extract(epoch FROM f.fire_at)::float8 FROM canvas.schedule_firings f
            JOIN canvas.schedules s ON s.id = f.schedule_id
            WHERE s.name = \(name) AND (f.error IS NOT NULL) = \(failed) ORDER BY f.fire_at
            """
        ).map { try $0.decode(Double.self, 0) }
    }

    /// Adds a schedule as a careless script would, past the checks of `voteradmin schedule add`.
    func insertSchedule(
        _ name: String, canvas: String, every: Double? = nil, cron: String? = nil, dueAt: String = "now()",
        on c: Connection
    ) throws {
        try c.execute(
            """
            INSERT INTO canvas.schedules (name, canvas, every_seconds, cron, next_fire_at)
            VALUES (\(name), \(canvas)::jsonb, \(every), \(cron), \(dueAt)::timestamptz)
            """)
    }

    @Test func twoBeatsFireEachTickOnceAndOneCarriesOnWhenTheOtherDies() throws {
        let c = try database.connect()
        try ScheduleStore.add(name: "tick", canvas: ["task": "canvas.noop"], rule: .every(1), on: c)
        let a = try beatWorker()
        let b = try beatWorker()
        sleep(10)
        a.signal(SIGKILL)
        _ = a.waitForExit(timeout: 5)
        sleep(10)
        b.signal(SIGTERM)
        #expect(b.waitForExit(timeout: 10) == 0)
        let fires = try c.query(
            "SELECT extract(epoch FROM fire_at)::float8 FROM canvas.schedule_firings ORDER BY fire_at"
        ).map { try $0.decode(Double.self, 0) }
        #expect(fires.count >= 18, "\(fires.count) firings")
        // Consecutive ticks, exactly one second apart: no duplicate, no gap.
        for (x, y) in zip(fires, fires.dropFirst()) { #expect(abs((y - x) - 1) < 0.001, "gap \(y - x)") }
        let roots = try c.query("SELECT count(*) FROM canvas.chords WHERE kind = 'root'")[0].decode(Int.self, 0)
        #expect(roots == fires.count)
        let lag = try c.query(
            "SELECT max(extract(epoch FROM fired_at - fire_at))::float8 FROM canvas.schedule_firings WHERE missed = 0"
        )[0].decode(Double.self, 0)
        #expect(lag < 1.0)
        #expect(
            a.log.contains("Scheduler: Sending due task tick") || b.log.contains("Scheduler: Sending due task tick"))
    }

    @Test func afterEveryBeatWasDownMissedTicksFireOnce() throws {
        let c = try database.connect()
        try ScheduleStore.add(name: "late", canvas: ["task": "canvas.noop"], rule: .every(1), on: c)
        try c.execute("UPDATE canvas.schedules SET next_fire_at = now() - interval '10.5 seconds'")
        let w = try beatWorker()
        #expect(
            try eventually(timeout: 10) {
                try c.query("SELECT count(*) FROM canvas.schedule_firings")[0].decode(Int.self, 0) >= 2
            })
        let first = try c.query("SELECT missed FROM canvas.schedule_firings ORDER BY fire_at LIMIT 1")[0].decode(
            Int.self, 0)
        #expect((9...11).contains(first))
        #expect(eventually(timeout: 5) { w.log.contains("late missed") && w.log.contains("firing once for them") })
    }

    /// One schedule whose canvas is refused, one whose cron cannot be read: each stores its error,
    /// is tried again at its next tick (not in a loop), and every other schedule fires on time.
    @Test func aScheduleWhoseFiringFailsStoresItsErrorAndTheOthersFire() throws {
        let c = try database.connect()
        // What follows (start-up, five seconds of firings) must stay inside one minute of the
        // server's clock, or the every-minute cron rightly fires twice.
        let second = try c.query("SELECT extract(second FROM clock_timestamp())::float8")[0].decode(Double.self, 0)
        if second > 45 { usleep(UInt32((61 - second) * 1_000_000)) }
        let minute = try c.query("SELECT date_trunc('minute', now())::text")[0].decode(String.self, 0)
        try ScheduleStore.add(name: "good-every", canvas: ["task": "canvas.noop"], rule: .every(1), on: c)
        try insertSchedule("bad-every", canvas: #"{"task": ""}"#, every: 1, on: c)
        try ScheduleStore.add(
            name: "good-cron", canvas: ["task": "canvas.noop"], rule: .cron(CronExpression("* * * * *")), on: c)
        try insertSchedule("bad-cron", canvas: #"{"task": ""}"#, cron: "* * * * *", dueAt: minute, on: c)
        try insertSchedule(
            "unreadable-cron", canvas: #"{"task": "canvas.noop"}"#, cron: "61 * * * *", dueAt: minute, on: c)
        try c.execute("UPDATE canvas.schedules SET next_fire_at = \(minute)::timestamptz WHERE name = 'good-cron'")
        let w = try beatWorker()
        sleep(5)

        let good = try firings("good-every", on: c)
        #expect(good.count >= 3, "\(good.count) firings\n\(w.log)")
        for (x, y) in zip(good, good.dropFirst()) { #expect(abs((y - x) - 1) < 0.001, "gap \(y - x)") }
        // The failing schedule is tried once per tick, like the good one, never in a tight loop.
        let bad = try firings("bad-every", on: c, failed: true)
        #expect(bad.count >= 3 && bad.count <= good.count + 2, "\(bad.count) failed firings, \(good.count) good")
        for (x, y) in zip(bad, bad.dropFirst()) { #expect(abs((y - x) - 1) < 0.001, "gap \(y - x)") }
        #expect(try firings("bad-every", on: c).isEmpty)
        #expect(try firings("good-cron", on: c).count == 1)

        let rows = try c.query(
            """
            SELECT name, last_error, last_error_at IS NOT NULL,
                   extract(epoch FROM next_fire_at - \(minute)::timestamptz)::float8
            FROM canvas.schedules ORDER BY name
            """)
        var errors: [String: String] = [:]
        for row in rows {
            let name = try row.decode(String.self, 0)
            let error = try row.decodeIfPresent(String.self, 1)
            let next = try row.decode(Double.self, 3)
            errors[name] = error
            #expect(try row.decode(Bool.self, 2) == (error != nil), "\(name): when it failed")
            switch name {
            case "good-cron", "bad-cron": #expect(next == 60, "\(name) next in \(next) s")
            case "unreadable-cron": #expect(next >= 3600 && next < 3700, "\(name) next in \(next) s")
            default: break
            }
        }
        #expect(errors["good-every"] == nil && errors["good-cron"] == nil)
        #expect(errors["bad-every"]?.contains("task: expected a task name") == true, "\(errors)")
        #expect(errors["bad-cron"]?.contains("expected a task name") == true, "\(errors)")
        #expect(errors["unreadable-cron"]?.contains("bad minute field") == true, "\(errors)")
        // Each refused tick also names its cause in the worker's log.
        #expect(w.log.contains("bad-every") && w.log.contains("expected a task name"), "\(w.log)")

        let list = try voteradmin(["schedule", "list"])
        #expect(list.status == 0, "\(list.stderr)")
        for name in ["bad-every", "bad-cron", "unreadable-cron"] {
            let line = list.stdout.split(separator: "\n").first { $0.hasPrefix(name + " ") }
            #expect(line?.contains("error ") == true && line?.contains(errors[name] ?? "?") == true, "\(list.stdout)")
        }
        #expect(list.stdout.split(separator: "\n").first { $0.hasPrefix("good-every ") }?.contains("error") == false)

        // Mended, it fires at its next tick and its error is cleared.
        try c.execute(#"UPDATE canvas.schedules SET canvas = '{"task": "canvas.noop"}' WHERE name = 'bad-every'"#)
        #expect(
            try eventually(timeout: 5) {
                try !firings("bad-every", on: c).isEmpty
                    && c.query("SELECT last_error IS NULL FROM canvas.schedules WHERE name = 'bad-every'")[0].decode(
                        Bool.self, 0)
            })
        w.signal(SIGTERM)
        #expect(w.waitForExit(timeout: 10) == 0)
    }

    /// Two beats on hosts whose clocks are 5 minutes behind and 5 minutes ahead of the database's,
    /// each on a database of its own: every cron and interval tick fires exactly once, on time.
    @Test func aHostClockMinutesOffNeitherStallsNorSkipsNorDoublesATick() throws {
        let other = try TestDatabase()
        defer { other.drop() }
        var beats: [(TestDatabase, WorkerProcess, Connection, Double)] = []
        for (db, skew) in [(database, -300.0), (other, 300.0)] {
            let c = try db.connect()
            try ScheduleStore.add(
                name: "cron", canvas: ["task": "canvas.noop"], rule: .cron(CronExpression("* * * * *")), on: c)
            try ScheduleStore.add(name: "every", canvas: ["task": "canvas.noop"], rule: .every(1), on: c)
            // Due at the start of this minute, so the second tick comes within a minute.
            try c.execute("UPDATE canvas.schedules SET next_fire_at = date_trunc('minute', now()) WHERE name = 'cron'")
            beats.append((db, try beatWorker(on: db, hostClockSkew: skew), c, skew))
        }
        let c = try database.connect()
        let first = try c.query("SELECT extract(epoch FROM date_trunc('minute', now()))::float8")[0].decode(
            Double.self, 0)
        let wait = try c.query("SELECT \(first + 63) - extract(epoch FROM now())::float8")[0].decode(Double.self, 0)
        usleep(UInt32(max(0, wait) * 1_000_000))

        for (_, w, c, skew) in beats {
            let cron = try firings("cron", on: c)
            #expect(
                cron == [first, first + 60], "host \(skew) s off: cron fired at \(cron.map { $0 - first })\n\(w.log)")
            let next = try c.query(
                "SELECT extract(epoch FROM next_fire_at)::float8 FROM canvas.schedules WHERE name = 'cron'")[0].decode(
                    Double.self, 0)
            #expect(next == first + 120, "host \(skew) s off: next cron tick at \(next - first)")
            let every = try firings("every", on: c)
            let now = try c.query("SELECT extract(epoch FROM now())::float8")[0].decode(Double.self, 0)
            // From its first tick, one second after it was added, to the latest: every tick.
            let added = try c.query(
                "SELECT extract(epoch FROM created_at)::float8 FROM canvas.schedules WHERE name = 'every'")[0].decode(
                    Double.self, 0)
            #expect(abs((every.first ?? 0) - (added + 1)) < 0.1, "host \(skew) s off: first tick \(every.first ?? 0)")
            #expect(every.last ?? 0 > now - 1.5, "host \(skew) s off: \(every.count) interval firings")
            for (x, y) in zip(every, every.dropFirst()) {
                #expect(abs((y - x) - 1) < 0.001, "host \(skew) s off: gap \(y - x)")
            }
            let late = try c.query(
                "SELECT extract(epoch FROM max(fired_at) - max(fire_at))::float8 FROM canvas.schedule_firings")[0]
                .decode(Double.self, 0)
            #expect(late < 1, "host \(skew) s off: latest firing \(late) s late")
            w.signal(SIGTERM)
            #expect(w.waitForExit(timeout: 10) == 0)
        }
    }

    /// Values out of range are one line and exit 64, and store nothing.
    @Test func outOfRangeScheduleValuesAreOneLineAndExit64() throws {
        let cases: [[String]] = [
            ["--every", "1e20s"], ["--every", "0.001s"], ["--every", "3651d"], ["--every", "nan"], ["--every", "inf"],
            ["--cron", "0 0 30 2 *"], ["--cron", "0 0 31 4,6,9,11 *"],
        ]
        for option in cases {
            let result = try voteradmin(["schedule", "add", "x", "--task", "canvas.noop"] + option)
            #expect(result.status == 64, "\(option): \(result.status) \(result.stderr)")
            #expect(result.stderrLines.count == 1, "\(option): \(result.stderr)")
        }
        #expect(try database.connect().query("SELECT count(*) FROM canvas.schedules")[0].decode(Int.self, 0) == 0)
        // The bounds themselves are accepted.
        #expect(try voteradmin(["schedule", "add", "fast", "--task", "canvas.noop", "--every", "0.01s"]).status == 0)
        #expect(try voteradmin(["schedule", "add", "slow", "--task", "canvas.noop", "--every", "3650d"]).status == 0)
        #expect(
            try voteradmin(["schedule", "add", "leap", "--task", "canvas.noop", "--cron", "0 0 29 2 *"]).status == 0)
    }
}
