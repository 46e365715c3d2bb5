import Canvas
import Foundation
import Postgres
import TestSupport
import Testing

/// Periodic tasks fired by several beat processes at once, each tick exactly once.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class BeatTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func beatWorker() throws -> WorkerProcess {
        try WorkerProcess(
            databaseURL: database.url,
            arguments: ["-c", "1", "--beat", "--heartbeat-interval", "0.5", "--rescue-after", "3"])
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
}
