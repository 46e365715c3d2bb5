import Foundation
import Migrations
import PGCanvas
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

    @Test func sigtermEndsAWorkerWithinItsBoundWhilePostgreSQLIsDownAndLosesNothing() throws {
        let server = try PrivateServer()
        let config = ConnectionConfiguration(conninfo: server.url)
        try Migrator.bundled().migrate(try Connection.connect(config))
        let id = try Enqueue.job(JobRequest("canvas.sleep", [1.5]), on: try Connection.connect(config))
        let terms = ["--heartbeat-interval", "0.5", "--rescue-after", "3"]
        let worker = try WorkerProcess(
            databaseURL: server.url, arguments: ["-c", "1", "--loglevel", "info", "--shutdown-timeout", "3"] + terms)
        #expect(
            try eventually(timeout: 15) { try JobStatus.fetch(id, on: Connection.connect(config))?.state == .running })
        try server.control("stop")
        let signalled = Date()
        worker.signal(SIGTERM)
        // The run ends while the server is away; its outcome cannot be sent. The bound holds anyway.
        let status = worker.waitForExit(timeout: 20)
        let took = Date().timeIntervalSince(signalled)
        #expect(status != nil, "\(worker.log)")
        #expect(took < 3 + 3, "took \(took) s\n\(worker.log)")
        #expect(worker.log.contains("outcomes not sent within the shutdown bound"), "\(worker.log)")
        // Nothing lost: once the server is back, another worker rescues the job and runs it.
        try server.control("start")
        let next = try WorkerProcess(databaseURL: server.url, arguments: ["-c", "1", "--loglevel", "info"] + terms)
        #expect(
            try eventually(timeout: 30, interval: 0.2) {
                try JobStatus.fetch(id, on: Connection.connect(config))?.state == .succeeded
            }, "\(next.log)")
    }

    @Test func aSecondSignalStopsAWorkerAtOnceWhilePostgreSQLIsDown() throws {
        let server = try PrivateServer()
        let config = ConnectionConfiguration(conninfo: server.url)
        try Migrator.bundled().migrate(try Connection.connect(config))
        let id = try Enqueue.job(JobRequest("canvas.sleep", [30]), on: try Connection.connect(config))
        let worker = try WorkerProcess(
            databaseURL: server.url, arguments: ["-c", "1", "--loglevel", "info", "--shutdown-timeout", "600"])
        #expect(
            try eventually(timeout: 15) { try JobStatus.fetch(id, on: Connection.connect(config))?.state == .running })
        try server.control("stop")
        worker.signal(SIGTERM)
        usleep(500_000)
        let second = Date()
        worker.signal(SIGINT)
        #expect(worker.waitForExit(timeout: 10) != nil, "\(worker.log)")
        #expect(Date().timeIntervalSince(second) < 3, "\(worker.log)")
        #expect(worker.log.contains("Cold shutdown"))
    }
}
