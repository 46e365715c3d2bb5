import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing
import VoterRolls

/// `voteradmin roles`: a real pgworker logged in through the worker role runs the station chord
/// (the station refresh included, through the owner's SECURITY DEFINER function), while DDL,
/// TRUNCATE and writes by the read-only role are refused by PostgreSQL.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class RolesTests {
    let database: TestDatabase
    // Roles belong to the whole server: names of this test's own, dropped with it.
    let tag = "t\(UInt32.random(in: 0...UInt32.max))"
    var owner: String { "pgc_owner_\(tag)" }
    var workerRole: String { "pgc_worker_\(tag)" }
    var reader: String { "pgc_reader_\(tag)" }
    var workerLogin: String { "pgc_wlogin_\(tag)" }
    var readerLogin: String { "pgc_rlogin_\(tag)" }

    init() throws { database = try TestDatabase() }

    deinit {
        database.drop()
        if let admin = try? Connection.connect(TestDatabase.adminConfiguration) {
            for role in [workerLogin, readerLogin, workerRole, reader, owner] {
                _ = try? admin.executeScript("DROP ROLE IF EXISTS \(quoteIdentifier(role))")
            }
        }
    }

    func voteradmin(_ arguments: [String], url: String? = nil) throws -> CommandResult {
        try runCommand(Binaries.url("voteradmin"), arguments, environment: ["DATABASE_URL": url ?? database.url])
    }

    /// The test database's URL with another user.
    func url(as user: String) throws -> String {
        var components = try #require(URLComponents(string: database.url))
        var items = (components.queryItems ?? []).filter { $0.name != "user" }
        items.append(URLQueryItem(name: "user", value: user))
        components.queryItems = items
        components.user = nil
        return try #require(components.string)
    }

    func refusal(_ sql: String, on c: Connection) -> String? {
        do {
            try c.executeScript(sql)
            return nil
        } catch let error as PostgresError {
            return error.sqlState
        } catch {
            return "\(error)"
        }
    }

    @Test func aWorkerLoggedInThroughTheWorkerRoleRunsTheStationChordWithoutDDL() throws {
        let roleArguments = ["roles", "--owner", owner, "--worker", workerRole, "--reader", reader]
        let first = try voteradmin(roleArguments)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("Roles ready"))
        let again = try voteradmin(roleArguments)
        #expect(again.status == 0, "run twice: \(again.stderr)")

        let admin = try database.connect()
        try admin.executeScript(
            """
            CREATE ROLE \(quoteIdentifier(workerLogin)) LOGIN IN ROLE \(quoteIdentifier(workerRole));
            CREATE ROLE \(quoteIdentifier(readerLogin)) LOGIN IN ROLE \(quoteIdentifier(reader));
            """)
        #expect(
            try admin.query("SELECT tableowner FROM pg_tables WHERE schemaname = 'canvas' AND tablename = 'jobs'")[0]
                .decode(String.self, 0) == owner)
        #expect(
            try admin.query("SELECT tableowner FROM pg_tables WHERE tablename = 'station_assignment'")[0].decode(
                String.self, 0) == owner)
        try Seeder(names: try NameBank.bundled()).seed(admin, voters: 2_000, randomSeed: 5)

        let output = FileManager.default.temporaryDirectory.appendingPathComponent("roles-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: output) }
        let workerURL = try url(as: workerLogin)
        let worker = try WorkerProcess(
            databaseURL: workerURL, arguments: ["-c", "2", "--output-dir", output.path, "--loglevel", "warning"])
        let result = try voteradmin(
            ["enqueue", "assign_stations_and_generate_lists_with_chord", "--wait"], url: workerURL)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)\n\(worker.log.suffix(3000))")
        #expect(result.stdout.contains("Total pages written: "))
        #expect(try admin.query("SELECT count(*) FROM station_assignment")[0].decode(Int.self, 0) == 2_000)
        let stations = try admin.query("SELECT count(DISTINCT (center_id, station_id)) FROM station_assignment")[0]
            .decode(Int.self, 0)
        let lists = (try? FileManager.default.contentsOfDirectory(atPath: output.path))?.filter { $0.hasSuffix(".pdf") }
        #expect(lists?.count == stations)
        #expect(
            try admin.query("SELECT count(*) FROM canvas.jobs WHERE state <> 'succeeded'")[0].decode(Int.self, 0) == 0)
        // The refresh rebuilt the keys as migration 0001 has them.
        #expect(
            try admin.query(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = 'station_assignment'::regclass AND contype IN ('p', 'f')"
            )[0].decode(Int.self, 0) == 3)
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 30) == 0, "\(worker.log.suffix(2000))")

        // What the worker role may not do: PostgreSQL refuses it (insufficient privilege).
        let asWorker = try Connection.connect(ConnectionConfiguration(conninfo: workerURL))
        for ddl in [
            "CREATE TABLE canvas.intruder (id int)", "CREATE TABLE public.intruder (id int)",
            "ALTER TABLE station_assignment DROP CONSTRAINT station_assignment_pkey", "TRUNCATE canvas.jobs",
            "DROP FUNCTION canvas.heartbeat(bigint, jsonb)", "CREATE INDEX ON canvas.jobs (task)",
            "INSERT INTO pgcanvas_migrations (version, name, checksum) VALUES (9999, 'x', 'x')",
        ] {
            #expect(refusal(ddl, on: asWorker) == "42501", "\(ddl)")
        }
        // …and what it may: rows, and the canvas functions.
        #expect(refusal("DELETE FROM canvas.jobs WHERE false", on: asWorker) == nil)
        #expect(try StationAssignment.refreshAll(on: asWorker) == 2_000)
        // The refresh replaced the table: the grants came with it.
        #expect(refusal("UPDATE station_assignment SET station_id = station_id WHERE false", on: asWorker) == nil)

        let asReader = try Connection.connect(ConnectionConfiguration(conninfo: try url(as: readerLogin)))
        #expect(try asReader.query("SELECT count(*) FROM canvas.jobs")[0].decode(Int.self, 0) > 0)
        #expect(try asReader.query("SELECT count(*) FROM voter")[0].decode(Int.self, 0) == 2_000)
        #expect(try asReader.query("SELECT count(*) FROM station_assignment")[0].decode(Int.self, 0) == 2_000)
        for write in [
            "DELETE FROM canvas.jobs", "UPDATE voter SET voter_name = 'x'",
            "SELECT refresh_station_assignments(500)", "CREATE TABLE canvas.intruder (id int)",
        ] {
            #expect(refusal(write, on: asReader) == "42501", "\(write)")
        }
        #expect(refusal("SELECT canvas.enqueue('[{\"task\": \"canvas.noop\"}]'::jsonb)", on: asReader) != nil)
    }

    @Test func aRoleNameThatIsNotPlainIsRefusedInOneLine() throws {
        for bad in ["Robert'); DROP TABLE voter;--", "1abc", "", String(repeating: "a", count: 64)] {
            let result = try voteradmin(["roles", "--worker", bad])
            #expect(result.status == 64, "\(bad): \(result.stderr)")
            #expect(result.stderrLines.count == 1, "\(result.stderr)")
            #expect(result.stderr.contains("is not a plain role name"), "\(result.stderr)")
        }
        let same = try voteradmin(["roles", "--worker", "x_role", "--reader", "x_role"])
        #expect(same.status == 64)
        #expect(same.stderr.contains("must be three different roles"))
        #expect(
            try database.connect().query("SELECT count(*) FROM pg_roles WHERE rolname = 'x_role'")[0].decode(
                Int.self, 0) == 0)
    }

    @Test func withoutTheSchemaItSaysToMigrateFirst() throws {
        let bare = try TestDatabase(migrated: false)
        defer { bare.drop() }
        let result = try voteradmin(
            ["roles", "--owner", owner, "--worker", workerRole, "--reader", reader], url: bare.url)
        #expect(result.status == 1)
        #expect(
            result.stderr == "voteradmin: error: the database has no canvas schema: run 'voteradmin migrate' first\n")
    }

    /// The owner runs migrations (function files dropped and made again included), and what it
    /// creates later is granted to the worker and reader roles by default privileges.
    @Test func theOwnerMigratesAndWhatItCreatesLaterIsGranted() throws {
        let roleArguments = ["roles", "--owner", owner, "--worker", workerRole, "--reader", reader]
        #expect(try voteradmin(roleArguments).status == 0)
        let admin = try database.connect()
        try admin.executeScript(
            """
            ALTER ROLE \(quoteIdentifier(owner)) LOGIN;
            CREATE ROLE \(quoteIdentifier(workerLogin)) LOGIN IN ROLE \(quoteIdentifier(workerRole));
            CREATE ROLE \(quoteIdentifier(readerLogin)) LOGIN IN ROLE \(quoteIdentifier(reader));
            DELETE FROM pgcanvas_functions;
            """)
        let migrated = try voteradmin(["migrate"], url: try url(as: owner))
        #expect(migrated.status == 0, "\(migrated.stderr)")
        #expect(migrated.stdout.contains("Applied pgcanvas: functions/broker.sql"), "\(migrated.stdout)")
        #expect(
            try admin.query(
                "SELECT count(*) FROM pg_proc WHERE pronamespace = 'canvas'::regnamespace AND proowner <> \(owner)::regrole"
            )[0].decode(Int.self, 0) == 0)

        let asOwner = try Connection.connect(ConnectionConfiguration(conninfo: try url(as: owner)))
        try asOwner.executeScript("CREATE TABLE canvas.added_later (id int)")
        let asWorker = try Connection.connect(ConnectionConfiguration(conninfo: try url(as: workerLogin)))
        #expect(refusal("INSERT INTO canvas.added_later VALUES (1)", on: asWorker) == nil)
        let asReader = try Connection.connect(ConnectionConfiguration(conninfo: try url(as: readerLogin)))
        #expect(try asReader.query("SELECT count(*) FROM canvas.added_later")[0].decode(Int.self, 0) == 1)
        #expect(refusal("INSERT INTO canvas.added_later VALUES (2)", on: asReader) == "42501")

        // A worker through the worker role still runs jobs on the functions made again.
        let workerURL = try url(as: workerLogin)
        let w = try WorkerProcess(databaseURL: workerURL, arguments: ["-c", "1", "--loglevel", "warning"])
        let handle = try chain([signature("canvas.add", 2, 3), signature("canvas.add", 10)]).enqueue(on: asWorker)
        let status = try handle.wait(on: asWorker, timeout: 60)
        #expect(status.state == .succeeded, "\(w.log.suffix(2000))")
        #expect(status.result == .int(15))
        w.signal(SIGTERM)
        #expect(w.waitForExit(timeout: 30) == 0)
        try admin.executeScript("DROP TABLE canvas.added_later")
    }
}
