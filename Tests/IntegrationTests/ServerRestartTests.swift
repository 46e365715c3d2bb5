import Canvas
import Foundation
import Migrations
import Postgres
import TestSupport
import Testing

/// PostgreSQL going away mid-run: workers reconnect with backoff and nothing is lost.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
struct ServerRestartTests {
    @Test func everyJobSucceedsOnceAcrossAServerRestart() throws {
        let server = try PrivateServer()
        let config = ConnectionConfiguration(conninfo: server.url)
        try Migrator.bundled().migrate(try Connection.connect(config))
        let ids = try Enqueue.jobs(
            (0..<3000).map { _ in JobRequest("canvas.sleep", [0.004]) }, on: try Connection.connect(config))
        let worker = try WorkerProcess(
            databaseURL: server.url,
            arguments: ["-c", "4", "--loglevel", "warning", "--heartbeat-interval", "0.5", "--rescue-after", "3"])
        func succeeded() throws -> Int {
            try Connection.connect(config).query("SELECT count(*) FROM canvas.jobs WHERE state = 'succeeded'")[0]
                .decode(Int.self, 0)
        }
        #expect(try eventually(timeout: 30) { try succeeded() > 300 })
        try server.control("stop")
        sleep(3)
        try server.control("start")
        #expect(try eventually(timeout: 90, interval: 0.2) { try succeeded() == ids.count }, "\(worker.log)")
        let c = try Connection.connect(config)
        #expect(try c.query("SELECT count(*) FROM canvas.jobs WHERE state <> 'succeeded'")[0].decode(Int.self, 0) == 0)
        #expect(worker.log.contains("PostgreSQL is unavailable"))
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0, "\(worker.log)")
    }
}
