import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// A chord's body runs exactly once whatever dies around it.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class ChordRobustnessTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    @Test func twoThousandMembersWhilePoolProcessesAreKilledAtRandom() throws {
        let c = try database.connect()
        let header = (0..<2000).map { i in
            chain([signature("canvas.sleep", 0.002), .signature(Signature("canvas.identity", [.int(i)]).immutable)])
        }
        let worker = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "4", "--loglevel", "warning"])
        let handle = try chord(header, body: signature("canvas.identity")).enqueue(on: c)
        var kills = 0
        var status = try #require(try CanvasStatus.fetch(handle.id, on: c))
        let deadline = Date().addingTimeInterval(120)
        while status.state == .pending, Date() < deadline {
            if kills < 25, let victim = worker.poolPIDs.randomElement() {
                kill(victim, SIGKILL)
                kills += 1
            }
            usleep(80_000)
            status = try #require(try CanvasStatus.fetch(handle.id, on: c))
        }
        #expect(status.state == .succeeded, "\(worker.log.suffix(3000))")
        #expect(kills >= 10)
        #expect(status.result == .array((0..<2000).map { .int($0) }))
        let bodies = try c.query(
            "SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.identity' AND jsonb_typeof(args->0) = 'array'")
        #expect(try bodies[0].decode(Int.self, 0) == 1)
        #expect(worker.log.contains("exited with 'signal 9"))
    }

    @Test func twoWorkersFinishingMembersOfOneChordRunOneBody() throws {
        let c = try database.connect()
        let handle = try chord(
            (0..<5000).map { i in signature("canvas.identity", .int(i)) }, body: signature("canvas.sum")
        )
        .enqueue(on: c)
        let a = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "3", "--loglevel", "warning"])
        let b = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "3", "--loglevel", "warning"])
        let status = try handle.wait(on: c, timeout: 120)
        #expect(status.state == .succeeded, "\(a.log.suffix(2000))\n\(b.log.suffix(2000))")
        #expect(status.result == .int((0..<5000).reduce(0, +)))
        #expect(try c.query("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'")[0].decode(Int.self, 0) == 1)
        #expect(
            try c.query("SELECT count(DISTINCT worker_id) FROM canvas.jobs WHERE task = 'canvas.identity'")[0]
                .decode(Int.self, 0) == 2)
    }
}
