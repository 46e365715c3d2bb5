import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// Workers and clients through Debian's PgBouncer with its default settings: in transaction
/// pooling mode (no session state, `--poll-only`) the broker's exactly-once guarantees hold; in
/// session mode LISTEN/NOTIFY still wakes workers.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class PgBouncerTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    @Test func twoPollOnlyWorkersDrainAChordExactlyOnceThroughTransactionPooling() throws {
        let bouncer = try PgBouncer(poolMode: "transaction")
        let url = bouncer.url(database: database.name)
        // The client side goes through PgBouncer too: enqueue, status and wait.
        let c = try Connection.connect(ConnectionConfiguration(conninfo: url))
        let members = 3000
        let handle = try chord(
            (0..<members).map { i in signature("canvas.identity", .int(i)) }, body: signature("canvas.sum")
        )
        .enqueue(on: c)
        let arguments = ["--poll-only", "-c", "4", "--loglevel", "warning"]
        let a = try WorkerProcess(databaseURL: url, arguments: arguments)
        let b = try WorkerProcess(databaseURL: url, arguments: arguments)
        let status = try handle.wait(on: c, timeout: 180)
        let logs = "\(a.log.suffix(2000))\n\(b.log.suffix(2000))\n\(bouncer.log.suffix(2000))"
        #expect(status.state == .succeeded, "\(logs)")
        #expect(status.result == .int((0..<members).reduce(0, +)))

        // Checked directly on the server, not through the pooler.
        let direct = try database.connect()
        let row = try direct.query(
            """
            SELECT count(*), count(DISTINCT args->>0), count(*) FILTER (WHERE state = 'succeeded' AND attempt = 1),
                   count(DISTINCT worker_id)
            FROM canvas.jobs WHERE task = 'canvas.identity'
            """)[0]
        #expect(try row.decode(Int.self, 0) == members)
        #expect(try row.decode(Int.self, 1) == members)
        #expect(try row.decode(Int.self, 2) == members, "every member claimed and run once")
        #expect(try row.decode(Int.self, 3) == 2, "both workers took part")
        let bodies = try direct.query(
            "SELECT count(*), count(*) FILTER (WHERE attempt = 1) FROM canvas.jobs WHERE task = 'canvas.sum'")[0]
        #expect(try bodies.decode(Int.self, 0) == 1)
        #expect(try bodies.decode(Int.self, 1) == 1)
        for worker in [a, b] {
            #expect(!worker.log.contains("unsupported startup parameter"), "\(worker.log.suffix(2000))")
            #expect(!worker.log.contains("PostgreSQL is unavailable"), "\(worker.log.suffix(2000))")
            #expect(!worker.log.contains("ERROR"), "\(worker.log.suffix(2000))")
        }
        // A warm shutdown through the pooler deregisters both.
        a.signal(SIGTERM)
        b.signal(SIGTERM)
        #expect(a.waitForExit(timeout: 30) == 0)
        #expect(b.waitForExit(timeout: 30) == 0)
        #expect(try direct.query("SELECT count(*) FROM canvas.workers")[0].decode(Int.self, 0) == 0)
        #expect(!bouncer.log.contains("unsupported startup parameter"), "\(bouncer.log.suffix(2000))")
        // Its default log_connections: the workers' connections went through it.
        #expect(bouncer.log.contains("login attempt: db=\(database.name)"), "\(bouncer.log.suffix(2000))")
    }

    /// With a 30-second poll, a job runs at once only when a NOTIFY wakes the worker: session
    /// pooling keeps LISTEN; transaction pooling with `--poll-only` waits for the poll.
    @Test func sessionPoolingKeepsListenTransactionPoolingWaitsForThePoll() throws {
        for mode in ["session", "transaction"] {
            let bouncer = try PgBouncer(poolMode: mode)
            let url = bouncer.url(database: database.name)
            var arguments = ["-c", "1", "--poll-interval", "30", "--loglevel", "info"]
            if mode == "transaction" { arguments.append("--poll-only") }
            let worker = try WorkerProcess(databaseURL: url, arguments: arguments)
            #expect(eventually(timeout: 30) { worker.log.contains("ready.") }, "\(worker.log.suffix(2000))")
            // Past the first poll, which follows start-up.
            usleep(1_500_000)
            let c = try Connection.connect(ConnectionConfiguration(conninfo: url))
            let handle = try signature("canvas.identity", .string(mode)).enqueue(on: c)
            let ranSoon = eventually(timeout: 4) {
                (try? CanvasStatus.fetch(handle.id, on: c))??.state == .succeeded
            }
            if mode == "session" {
                #expect(ranSoon, "NOTIFY should wake a worker through session pooling: \(worker.log.suffix(2000))")
            } else {
                #expect(!ranSoon, "without LISTEN only the 30-second poll finds the job")
            }
            worker.signal(SIGTERM)
            #expect(worker.waitForExit(timeout: 30) == 0, "\(worker.log.suffix(2000))")
        }
    }

    /// PgBouncer killed mid-chord (every client and server connection cut) and started again on
    /// the same port: the workers reconnect through it, and every member and the body still run
    /// once.
    @Test func aPgBouncerKilledMidChordLosesAndRepeatsNothing() throws {
        let bouncer = try PgBouncer(poolMode: "transaction")
        let url = bouncer.url(database: database.name)
        let direct = try database.connect()
        let members = 3000
        let handle = try chord(
            (0..<members).map { i in
                chain([signature("canvas.sleep", 0.002), .signature(Signature("canvas.identity", [.int(i)]).immutable)])
            }, body: signature("canvas.identity")
        )
        .enqueue(on: direct)
        let arguments = ["--poll-only", "-c", "3", "--loglevel", "warning"]
        let a = try WorkerProcess(databaseURL: url, arguments: arguments)
        let b = try WorkerProcess(databaseURL: url, arguments: arguments)
        func identities() throws -> Int {
            try direct.query("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.identity' AND state = 'succeeded'")[
                0
            ].decode(Int.self, 0)
        }
        #expect(try eventually(timeout: 60) { try identities() > members / 4 })
        bouncer.stop(signal: SIGKILL)
        usleep(1_000_000)
        try bouncer.start()
        let status = try handle.wait(on: direct, timeout: 180)
        #expect(status.state == .succeeded, "\(a.log.suffix(2000))\n\(b.log.suffix(2000))")
        #expect(status.result == .array((0..<members).map { .int($0) }))
        let row = try direct.query(
            """
            SELECT count(*), count(DISTINCT args->>0), count(*) FILTER (WHERE state = 'succeeded')
            FROM canvas.jobs WHERE task = 'canvas.identity' AND jsonb_typeof(args->0) = 'number'
            """)[0]
        #expect(try row.decode(Int.self, 0) == members)
        #expect(try row.decode(Int.self, 1) == members)
        #expect(try row.decode(Int.self, 2) == members)
        let bodies = try direct.query(
            "SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.identity' AND jsonb_typeof(args->0) = 'array'")
        #expect(try bodies[0].decode(Int.self, 0) == 1)
        // The cut was felt, and survived.
        #expect((a.log + b.log).contains("PostgreSQL is unavailable"), "\(a.log.suffix(2000))")
        for w in [a, b] {
            w.signal(SIGTERM)
            #expect(w.waitForExit(timeout: 30) == 0, "\(w.log.suffix(2000))")
        }
    }

    /// Nothing is set per session, so a database whose DateStyle is not ISO cannot be read: the
    /// worker says so in one line at start and exits, rather than misreading dates later.
    @Test func aDatabaseWritingDatesInAnotherStyleStopsTheWorkerAtStartInOneLine() throws {
        let admin = try database.connect()
        try admin.executeScript("ALTER DATABASE \(quoteIdentifier(database.name)) SET DateStyle = 'German, DMY'")
        let w = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "1", "--loglevel", "info"])
        #expect(w.waitForExit(timeout: 20) == 1, "\(w.log)")
        #expect(
            w.log
                == "pgworker: error: the server writes dates as 'German, DMY' (DateStyle); pgcanvas reads ISO only: "
                + "ALTER DATABASE … SET DateStyle = 'ISO, MDY' (or ALTER ROLE …)\n")
        try admin.executeScript("ALTER DATABASE \(quoteIdentifier(database.name)) RESET DateStyle")
    }
}
