import Foundation
import Migrations
import Postgres
import TestSupport
import Testing
import VoterRolls

@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class MigrationTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase(migrated: false) }
    deinit { database.drop() }

    func tables(_ c: Connection) throws -> [String] {
        try c.query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
        ).map { try $0.decode(String.self, 0) }
    }

    @Test func appliesPendingFilesOnceAndIsThenANoOp() throws {
        let c = try database.connect()
        let migrator = try Migrator.bundled()
        let first = try migrator.migrate(c)
        #expect(first.migrations.map(\.version) == migrator.migrations.map(\.version))
        #expect(first.functionFiles == migrator.functions.map(\.fileName))
        // pgcanvas's schema alone: the voter-roll tables belong to the demo application.
        #expect(try c.query("SELECT to_regclass('canvas.jobs') IS NOT NULL")[0].decode(Bool.self, 0))
        #expect(try !tables(c).contains("voter_registration"))
        #expect(try migrator.migrate(c).isEmpty)
        let status = try migrator.status(c)
        #expect(status.pending.isEmpty)
        #expect(status.applied.count == migrator.migrations.count)
        #expect(status.pendingFunctionFiles.isEmpty)
    }

    @Test func twoConcurrentRunsApplyEachFileExactlyOnce() throws {
        let migrator = try Migrator.bundled()
        let migrations = migrator.migrations
        let config = database.configuration
        let results = ResultBox()
        let threads = (0..<3).map { _ in
            Thread {
                do {
                    let applied = try migrator.migrate(try Connection.connect(config))
                    results.add(applied.migrations.count)
                } catch {
                    results.add(-1)
                }
            }
        }
        threads.forEach { $0.start() }
        while results.values.count < 3 { Thread.sleep(forTimeInterval: 0.01) }
        #expect(results.values.sorted() == [0, 0, migrations.count])
        let c = try database.connect()
        #expect(try c.query("SELECT count(*) FROM pgcanvas_migrations")[0].decode(Int.self, 0) == migrations.count)
    }

    @Test func refusesToRunWhenAnAppliedFileChanged() throws {
        let c = try database.connect()
        let original = [Migration(version: 1, name: "one", sql: "CREATE TABLE one (x int);")]
        try Migrator(migrations: original).migrate(c)
        let edited = [
            Migration(version: 1, name: "one", sql: "CREATE TABLE one (x bigint);"),
            Migration(version: 2, name: "two", sql: "CREATE TABLE two (x int);"),
        ]
        let error = try #require(throws: MigrationError.self) { try Migrator(migrations: edited).migrate(c) }
        #expect(error.description.contains("0001_one.sql was changed after it was applied"))
        #expect(try !tables(c).contains("two"))
    }

    @Test func aFailingFileRollsBackAloneAndStopsTheRun() throws {
        let c = try database.connect()
        let migrations = [
            Migration(version: 1, name: "good", sql: "CREATE TABLE good (x int);"),
            Migration(version: 2, name: "bad", sql: "CREATE TABLE half (x int); SELECT no_such_function();"),
            Migration(version: 3, name: "later", sql: "CREATE TABLE later (x int);"),
        ]
        #expect(throws: PostgresError.self) { try Migrator(migrations: migrations).migrate(c) }
        #expect(try tables(c) == ["good", "pgcanvas_migrations"])
        #expect(try Migrator(migrations: migrations).status(c).pending.map(\.version) == [2, 3])
    }

    @Test func theCanvasFunctionsAreExactlyThoseInTheFunctionFiles() throws {
        let c = try database.connect()
        let migrator = try Migrator.bundled()
        try migrator.migrate(c)
        let pattern = #/CREATE (?:OR REPLACE )?FUNCTION canvas\.(\w+)\(/#
        let inFiles = migrator.functions.flatMap { $0.sql.matches(of: pattern).map { String($0.1) } }.sorted()
        let inDatabase = try c.query(
            "SELECT p.proname::text FROM pg_proc p WHERE p.pronamespace = 'canvas'::regnamespace ORDER BY 1"
        ).map { try $0.decode(String.self, 0) }
        #expect(!inFiles.isEmpty)
        #expect(inDatabase == inFiles)
        for migration in migrator.migrations {
            #expect(!migration.sql.contains("CREATE FUNCTION"), "\(migration.fileName) defines a function")
        }
    }

    @Test func aChangedFunctionFileReplacesEveryFunction() throws {
        let c = try database.connect()
        let schema = [Migration(version: 1, name: "schema", sql: "CREATE SCHEMA canvas;")]
        let first = [
            FunctionScript(name: "a", sql: "CREATE FUNCTION canvas.f() RETURNS int LANGUAGE sql AS 'SELECT 1';"),
            FunctionScript(
                name: "b", sql: "CREATE FUNCTION canvas.g() RETURNS int LANGUAGE sql AS 'SELECT canvas.f()';"),
        ]
        #expect(try Migrator(migrations: schema, functions: first).migrate(c).functionFiles.count == 2)
        #expect(try Migrator(migrations: schema, functions: first).migrate(c).isEmpty)
        // f changes its signature and g goes: nothing of the old set may stay behind.
        let second = [
            FunctionScript(
                name: "a", sql: "CREATE FUNCTION canvas.f(x int DEFAULT 2) RETURNS int LANGUAGE sql AS 'SELECT x';")
        ]
        #expect(
            try Migrator(migrations: schema, functions: second).status(c).pendingFunctionFiles == ["functions/a.sql"])
        #expect(try Migrator(migrations: schema, functions: second).migrate(c).functionFiles == ["functions/a.sql"])
        #expect(try c.query("SELECT canvas.f()")[0].decode(Int.self, 0) == 2)
        let names = try c.query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'canvas'::regnamespace"
        )
        .map { try $0.decode(String.self, 0) }
        #expect(names == ["canvas.f(integer)"])
    }

    @Test func aDatabaseMigratedBeforeTheFunctionFilesIsBroughtUpToDate() throws {
        let c = try database.connect()
        let migrator = try Migrator.bundled()
        try migrator.migrate(c)
        // As a database migrated by the earlier build records it: 0003 with its functions inside.
        try c.execute(
            "UPDATE pgcanvas_migrations SET checksum = 'c5320bd878d2995774589a65fe6b2d74' WHERE version = 3")
        try c.execute("DROP FUNCTION canvas.purge")
        #expect(try !migrator.status(c).pendingFunctionFiles.isEmpty)
        let applied = try migrator.migrate(c)
        #expect(applied.migrations.isEmpty)
        #expect(applied.functionFiles == migrator.functions.map(\.fileName))
        #expect(try c.query("SELECT to_regproc('canvas.purge') IS NOT NULL")[0].decode(Bool.self, 0))
        #expect(try migrator.migrate(c).isEmpty)
    }

    @Test func theApplicationsMigrationsTakeOverWhatAnEarlierBuildRecordedAsPGCanvass() throws {
        let c = try database.connect()
        let app = try VoterRollsMigrations.migrator()
        let voterRolls = try #require(app.migrations.first)
        // As the build before the split left a database: 0001_voter_rolls among pgcanvas's rows.
        try c.executeScript(voterRolls.sql)
        try c.executeScript(
            """
            CREATE TABLE public.pgcanvas_migrations (version integer PRIMARY KEY, name text NOT NULL,
                checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
            """)
        try c.execute(
            "INSERT INTO pgcanvas_migrations (version, name, checksum) VALUES (1, 'voter_rolls', md5(\(voterRolls.sql)))"
        )
        // pgcanvas's own migrator, run first (as an application's PGCanvasMigrations.apply would),
        // leaves that row to the application.
        let library = try Migrator.bundled()
        #expect(try PGCanvasMigrations.apply(on: c).migrations.map(\.version) == library.migrations.map(\.version))
        // 0001 is taken over as applied; only what came after it runs.
        #expect(try app.migrate(c).migrations.map(\.version) == app.migrations.dropFirst().map(\.version))
        #expect(try app.status(c).applied.map(\.migration.version) == app.migrations.map(\.version))
        #expect(try library.migrate(c).isEmpty && app.migrate(c).isEmpty)
        #expect(try PGCanvasMigrations.apply(on: c).isEmpty)
    }

    @Test func loadsNumberedFilesInOrderAndRejectsBadNames() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mig-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "SELECT 2;".write(to: dir.appendingPathComponent("0010_ten.sql"), atomically: true, encoding: .utf8)
        try "SELECT 1;".write(to: dir.appendingPathComponent("0002_two.sql"), atomically: true, encoding: .utf8)
        #expect(try Migration.load(from: dir).map(\.fileName) == ["0002_two.sql", "0010_ten.sql"])
        try "SELECT 3;".write(to: dir.appendingPathComponent("three.sql"), atomically: true, encoding: .utf8)
        #expect(throws: MigrationError.self) { try Migration.load(from: dir) }
    }
}

/// Collects values from several threads.
final class ResultBox: @unchecked Sendable {
    // Guarded by `lock`.
    private var storage: [Int] = []
    private let lock = NSLock()
    func add(_ value: Int) {
        lock.lock()
        storage.append(value)
        lock.unlock()
    }
    var values: [Int] {
        lock.lock()
        defer { lock.unlock() }
        return storage
    }
}
