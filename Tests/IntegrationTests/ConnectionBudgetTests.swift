import Foundation
import Migrations
import PGCanvas
import Postgres
import TestSupport
import Testing

/// A worker's connections are bounded (2, 3 with --beat, + one per pool process), checked at
/// start against a server of its own with `max_connections = 12` (9 for ordinary roles): workers
/// that fit start, one that does not exits at once with one line, and a task refused a
/// connection ("too many clients") waits for a slot without spending an attempt.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class ConnectionBudgetTests {
    let server: PrivateServer
    let config: ConnectionConfiguration

    init() throws {
        server = try PrivateServer()
        try Connection.connect(ConnectionConfiguration(conninfo: server.url)).executeScript(
            "ALTER SYSTEM SET max_connections = 12")
        try server.control("stop")
        try server.control("start")
        config = ConnectionConfiguration(conninfo: server.url, applicationName: "budget-test")
        try Migrator.bundled().migrate(try Connection.connect(config))
    }

    func worker(_ arguments: [String]) throws -> WorkerProcess {
        try WorkerProcess(
            databaseURL: server.url, arguments: arguments + ["--loglevel", "info"], executable: "pgcanvas-testworker")
    }

    func ready(_ worker: WorkerProcess) -> Bool {
        eventually(timeout: 30) { worker.log.contains(" ready.") || worker.waitForExit(timeout: 0) != nil }
            && worker.log.contains(" ready.")
    }

    @Test func workersThatFitStartAndOneThatDoesNotExitsAtStartInOneLine() throws {
        let c = try Connection.connect(config)
        #expect(
            try c.query("SELECT usable, other_clients, workers_bound FROM canvas.connection_budget()")[0].decode(
                Int.self, 0) == 9)
        // 4 + 4 of the 9 usable slots; this test's connection takes the last one.
        let a = try worker(["-c", "2"])
        #expect(ready(a), "\(a.log.suffix(2000))")
        #expect(
            a.log.contains(
                "connections: 2 for the broker and maintenance + up to 2 for tasks (connected only when a task uses the database)"
            ), "\(a.log.suffix(2000))")
        let b = try worker(["-c", "1", "--beat"])
        #expect(ready(b), "\(b.log.suffix(2000))")
        #expect(b.log.contains("connections: 3 for the broker, maintenance and beat + up to 1 for tasks"))

        let refused = try worker(["-c", "1"])
        let status = refused.waitForExit(timeout: 20)
        #expect(status == 1, "\(refused.log.suffix(2000))")
        let lines = refused.log.split(separator: "\n")
        #expect(
            lines.last
                == "pgworker: error: PostgreSQL has no room for this worker: it needs up to 3 connections (2 + 1 for -c 1), and 0 of the server's 9 are free (other clients use 1, running workers may use 8); lower -c, raise max_connections, or see 'Connection budget' in docs/operations.md",
            "\(refused.log)")
        #expect(!refused.log.contains(" ready."))
        #expect(try c.query("SELECT count(*) FROM canvas.workers")[0].decode(Int.self, 0) == 2)

        // The workers that started run tasks that use the database, each in a pool process.
        let handle = try group((0..<6).map { _ in signature("test.db_backend") }).enqueue(on: c)
        let done = try handle.wait(on: c, timeout: 60)
        #expect(done.state == .succeeded, "\(a.log.suffix(2000))\n\(b.log.suffix(2000))")

        // A worker told not to check starts anyway (for poolers in front of the server).
        let unchecked = try worker(["-c", "1", "--no-connection-check"])
        #expect(ready(unchecked), "\(unchecked.log.suffix(2000))")
        for w in [a, b, unchecked] { w.signal(SIGTERM) }
        for w in [a, b, unchecked] { #expect(w.waitForExit(timeout: 30) == 0, "\(w.log.suffix(2000))") }

        // Once they are gone the same worker fits.
        let later = try worker(["-c", "1"])
        #expect(ready(later), "\(later.log.suffix(2000))")
        later.signal(SIGTERM)
        #expect(later.waitForExit(timeout: 30) == 0)
    }

    /// Workers starting at once count each other (the budget's lock): of four wanting 3 of the 8
    /// free slots each, exactly two start.
    @Test func workersStartingTogetherCountEachOther() throws {
        let c = try Connection.connect(config)
        let workers = try (0..<4).map { _ in try worker(["-c", "1"]) }
        #expect(
            eventually(timeout: 40) {
                workers.allSatisfy { $0.log.contains(" ready.") || $0.waitForExit(timeout: 0) != nil }
            })
        let started = workers.filter { $0.log.contains(" ready.") }
        let refused = workers.filter { $0.log.contains("PostgreSQL has no room for this worker") }
        #expect(started.count == 2, "\(workers.map { $0.log.suffix(500) })")
        #expect(refused.count == 2)
        for w in refused { #expect(w.waitForExit(timeout: 10) == 1) }
        #expect(try c.query("SELECT count(*) FROM canvas.workers")[0].decode(Int.self, 0) == 2)
        for w in started { w.signal(SIGTERM) }
        for w in started { #expect(w.waitForExit(timeout: 30) == 0) }
    }

    /// The server full ("too many clients", SQLSTATE 53300): the task's pool process waits for a
    /// slot; the job runs once the slots come back, on its first attempt, with no crash counted.
    /// An unused connection is closed after --idle-connection-timeout.
    @Test func aTaskRefusedAConnectionWaitsForASlotWithoutSpendingAnAttempt() throws {
        let c = try Connection.connect(config)
        let w = try worker(["-c", "1", "--idle-connection-timeout", "1"])
        #expect(ready(w), "\(w.log.suffix(2000))")
        // Take every slot (superusers may use the reserved ones too).
        var fillers: [Connection] = []
        var refusal: PostgresError?
        while refusal == nil, fillers.count < 20 {
            do {
                fillers.append(try Connection.connect(config))
            } catch let error as PostgresError {
                refusal = error
            }
        }
        let error = try #require(refusal)
        #expect(error.sqlState == PostgresError.State.tooManyConnections, "\(error)")
        #expect(error.isConnectionProblem)

        let handle = try signature("test.db_backend").enqueue(on: c)
        #expect(
            eventually(timeout: 10) { w.log.contains("no free PostgreSQL connection for the task; waiting for one") },
            "\(w.log.suffix(2000))")
        let job = try c.query("SELECT id FROM canvas.jobs")[0].decode(Int64.self, 0)
        #expect(try JobStatus.fetch(job, on: c)?.state == .running)
        fillers.removeAll()
        let status = try handle.wait(on: c, timeout: 30)
        #expect(status.state == .succeeded, "\(w.log.suffix(2000))")
        let row = try #require(try JobStatus.fetch(job, on: c))
        #expect(row.attempt == 1)
        #expect(row.crashes == 0)
        let backend = try #require(status.result?.intValue)

        // Idle for more than a second: the pool process let its connection go.
        func connected() throws -> Bool {
            try c.query("SELECT count(*) FROM pg_stat_activity WHERE pid = \(Int32(backend))")[0].decode(Int.self, 0)
                == 1
        }
        #expect(try eventually(timeout: 10) { try !connected() })
        w.signal(SIGTERM)
        #expect(w.waitForExit(timeout: 30) == 0)
    }

    /// The server stays full past the task's wait for a slot: the run counts as a lost connection,
    /// so the job is tried again at once without spending an attempt, and succeeds once a slot
    /// comes back.
    @Test func aTaskThatFindsNoSlotInTimeIsRetriedWithoutSpendingAnAttempt() throws {
        let c = try Connection.connect(config)
        let w = try worker(["-c", "1", "--connection-slot-wait", "0.3"])
        #expect(ready(w), "\(w.log.suffix(2000))")
        var fillers: [Connection] = []
        while fillers.count < 20, let filler = try? Connection.connect(config) { fillers.append(filler) }
        let handle = try signature("test.db_backend").enqueue(on: c)
        let job = try c.query("SELECT id FROM canvas.jobs")[0].decode(Int64.self, 0)
        // One run that found no slot in time.
        #expect(
            try eventually(timeout: 15) { try (JobStatus.fetch(job, on: c)?.crashes ?? 0) >= 1 },
            "\(w.log.suffix(2000))")
        fillers.removeAll()
        let status = try handle.wait(on: c, timeout: 30)
        let row = try #require(try JobStatus.fetch(job, on: c))
        // Released within a poll of the first crash: far from canvas.max_crashes() (3).
        #expect(status.state == .succeeded, "\(w.log.suffix(2000))")
        #expect(row.crashes >= 1)
        #expect(row.attempt - row.crashes == 1, "attempt \(row.attempt), crashes \(row.crashes)")
        #expect(w.log.contains("the task lost its database connection"), "\(w.log.suffix(2000))")
        #expect(w.log.contains("SQLSTATE 53300"), "\(w.log.suffix(2000))")
        w.signal(SIGTERM)
        #expect(w.waitForExit(timeout: 30) == 0)
    }

    /// An idle timeout that cannot work is one line and exit 64, before anything connects.
    @Test func badIdleConnectionTimeoutsAreOneLineAndExit64() throws {
        for value in ["0", "-1", "nan", "1e9", "soon"] {
            let result = try runCommand(
                Binaries.url("pgworker"), ["--idle-connection-timeout", value],
                environment: ["DATABASE_URL": server.url])
            #expect(result.status == 64, "\(value): \(result.stderr)")
            #expect(result.stderrLines.count == 1, "\(value): \(result.stderr)")
            #expect(result.stderr.contains("--idle-connection-timeout"), "\(value): \(result.stderr)")
        }
        #expect(try Connection.connect(config).query("SELECT count(*) FROM canvas.workers")[0].decode(Int.self, 0) == 0)
    }
}
