import Foundation
import Postgres
import TestSupport
import Testing

@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class ConnectionTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase(migrated: false) }
    deinit { database.drop() }

    @Test func failedConnectionNamesWhereItTriedAndHidesThePassword() throws {
        let config = ConnectionConfiguration(conninfo: "postgresql://alice:s3cret-pw@127.0.0.1:1/nowhere")
        let error = try #require(throws: PostgresError.self) { try Connection.connect(config) }
        #expect(error.code == .connectionFailed)
        #expect(error.description.contains("127.0.0.1"))
        #expect(error.description.contains("port 1"))
        #expect(!error.description.contains("s3cret-pw"))
        #expect(!error.debugDescription.contains("s3cret-pw"))
        #expect(!error.description.contains("\n"))
    }

    /// A failover set-up's URL (docs/operations.md): libpq gets it whole, tries each host in
    /// turn and keeps the one that takes writes. Nothing of ours may parse it on the way.
    @Test func aMultiHostURLSkipsAHostThatIsDownAndReachesTheOneThatTakesWrites() throws {
        let parsed = try #require(URLComponents(string: database.url))
        let query = Dictionary(
            (parsed.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        let host = try #require(query["host"] ?? parsed.host.flatMap { $0.isEmpty ? nil : $0 })
        let port = query["port"] ?? parsed.port.map(String.init) ?? "5432"
        let user = query["user"] ?? parsed.user
        let encodedHost = try #require(host.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
        let url =
            "postgresql://\(user.map { "\($0)@" } ?? "")127.0.0.1:1,\(encodedHost):\(port)/\(database.name)"
            + "?target_session_attrs=read-write&connect_timeout=5"
        let c = try Connection.connect(ConnectionConfiguration(conninfo: url))
        #expect(try c.query("SELECT current_database()")[0].decode(String.self, 0) == database.name)
        #expect(try c.query("SELECT pg_is_in_recovery()")[0].decode(Bool.self, 0) == false)
    }

    @Test func decodesEveryTypeItPromises() throws {
        let c = try database.connect()
        let when = Date(timeIntervalSince1970: 1_795_000_000.25)
        let rows = try c.query(
            """
            SELECT \("José Zoë Łukasz Nguyễn")::text AS t, \(Int32(7))::int AS i, \(Int(1) << 40)::bigint AS b,
                   \(true)::bool AS yes, \(2.5)::float8 AS d, \(when)::timestamptz AS ts,
                   \(PostgresJSON(text: #"{"a": [1, 2]}"#))::jsonb AS j,
                   \(["x", "y z", "\"q\""])::text[] AS ta, \([1, 2, 3])::bigint[] AS ia,
                   ARRAY[true, false] AS ba, ARRAY[1.5, 2.5]::float8[] AS da,
                   NULL::text AS n, \(String?.none as String?)::text AS bound_null
            """)
        let row = rows[0]
        #expect(try row.decode(String.self, "t") == "José Zoë Łukasz Nguyễn")
        #expect(try row.decode(Int32.self, "i") == 7)
        #expect(try row.decode(Int.self, "b") == 1 << 40)
        #expect(try row.decode(Bool.self, "yes") == true)
        #expect(try row.decode(Double.self, "d") == 2.5)
        #expect(try row.decode(Date.self, "ts") == when)
        #expect(try row.decode(PostgresJSON.self, "j").decode([String: [Int]].self) == ["a": [1, 2]])
        #expect(try row.decode([String].self, "ta") == ["x", "y z", "\"q\""])
        #expect(try row.decode([Int].self, "ia") == [1, 2, 3])
        let bools: [Bool] = try row.decode([Bool].self, "ba")
        #expect(bools == [true, false])
        let doubles: [Double] = try row.decode([Double].self, "da")
        #expect(doubles == [1.5, 2.5])
        let null = try row.decodeIfPresent(String.self, "n")
        #expect(null == nil)
        let boundNull = try row.decodeIfPresent(String.self, "bound_null")
        #expect(boundNull == nil)
        #expect(throws: PostgresError.self) { try row.decode(String.self, "n") }
        #expect(throws: PostgresError.self) { try row.decode(Int.self, "t") }
    }

    @Test func boundTextIsNeverExecuted() throws {
        let c = try database.connect()
        try c.executeScript("CREATE TABLE victim (x int)")
        let hostile = "1); DROP TABLE victim; --"
        let rows = try c.query("SELECT \(hostile)::text AS v")
        #expect(try rows[0].decode(String.self, "v") == hostile)
        #expect(try c.query("SELECT count(*) FROM victim")[0].decode(Int.self, 0) == 0)
    }

    @Test func serverErrorsCarrySQLStateMessageAndDetail() throws {
        let c = try database.connect()
        try c.executeScript("CREATE TABLE u (id int PRIMARY KEY)")
        try c.execute("INSERT INTO u VALUES (\(1))")
        let error = try #require(throws: PostgresError.self) { try c.execute("INSERT INTO u VALUES (\(1))") }
        #expect(error.code == .server)
        #expect(error.sqlState == PostgresError.State.uniqueViolation)
        #expect(error.message.contains("duplicate key"))
        #expect(error.detail == "Key (id)=(1) already exists.")
        // The connection is still usable after a statement error.
        #expect(try c.query("SELECT 1")[0].decode(Int.self, 0) == 1)
    }

    @Test func transactionsCommitOrRollBack() throws {
        let c = try database.connect()
        try c.executeScript("CREATE TABLE t (x int)")
        try c.withTransaction { tx in _ = try tx.execute("INSERT INTO t VALUES (\(1))") }
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try c.withTransaction { tx in
                try tx.execute("INSERT INTO t VALUES (\(2))")
                throw Boom()
            }
        }
        #expect(try c.query("SELECT array_agg(x) FROM t")[0].decode([Int].self, 0) == [1])
    }

    @Test func copyLoadsRowsWithAwkwardCharactersAndAbortsCleanly() throws {
        let c = try database.connect()
        try c.executeScript("CREATE TABLE v (id int, name text)")
        let names = ["tab\there", "new\nline", "back\\slash", "Nguyễn", ""]
        let loaded = try c.copyIn("COPY v (id, name) FROM STDIN") { w in
            for (i, name) in names.enumerated() { try w.write([String(i), name]) }
            try w.write(["99", nil])
        }
        #expect(loaded == names.count + 1)
        let back = try c.query("SELECT name FROM v WHERE id < 99 ORDER BY id").map { try $0.decode(String.self, 0) }
        #expect(back == names)
        #expect(try c.query("SELECT name IS NULL FROM v WHERE id = 99")[0].decode(Bool.self, 0))

        struct Stop: Error {}
        #expect(throws: Stop.self) {
            try c.copyIn("COPY v (id, name) FROM STDIN") { w in
                try w.write(["1000", "never"])
                throw Stop()
            }
        }
        #expect(try c.query("SELECT count(*) FROM v")[0].decode(Int.self, 0) == names.count + 1)
        // A bad row is a server error, and the connection survives it.
        let error = try #require(throws: PostgresError.self) {
            try c.copyIn("COPY v (id, name) FROM STDIN") { w in try w.write(["not a number", "x"]) }
        }
        #expect(error.sqlState == "22P02")
        #expect(try c.query("SELECT 1")[0].decode(Int.self, 0) == 1)
    }

    @Test func waitsForNotificationsWithATimeoutWithoutBlockingOthers() throws {
        let listener = try database.connect()
        try listener.listen("jobs")
        let started = Date()
        #expect(try listener.waitForNotification(timeout: 0.2) == nil)
        #expect(Date().timeIntervalSince(started) >= 0.19)

        // While this thread waits, another thread queries on its own connection and notifies.
        let config = database.configuration
        let other = Thread {
            guard let sender = try? Connection.connect(config) else { return }
            Thread.sleep(forTimeInterval: 0.1)
            _ = try? sender.query("SELECT pg_notify('jobs', 'hello')")
        }
        other.start()
        let note = try #require(try listener.waitForNotification(timeout: 5))
        #expect(note.channel == "jobs")
        #expect(note.payload == "hello")
        #expect(Date().timeIntervalSince(started) < 4)
    }

    @Test func lostConnectionIsATypedErrorAndANewOneWorks() throws {
        let victim = try database.connect()
        let killer = try database.connect()
        let pid = victim.backendPID
        let t = Thread {
            Thread.sleep(forTimeInterval: 0.3)
            _ = try? killer.query("SELECT pg_terminate_backend(\(pid))")
        }
        t.start()
        let error = try #require(throws: PostgresError.self) { try victim.query("SELECT pg_sleep(10)") }
        #expect(error.code == .connectionLost)
        #expect(error.isConnectionProblem)
        #expect(!victim.isHealthy)
        let fresh = try database.connect()
        #expect(try fresh.query("SELECT 41 + 1")[0].decode(Int.self, 0) == 42)
    }

    /// No session settings (PgBouncer's transaction pooling allows none): a database in any time
    /// zone decodes and round-trips instants exactly.
    @Test func timestampsDoNotDependOnTheServersTimeZone() throws {
        let admin = try database.connect()
        let when = Date(timeIntervalSince1970: 1_795_000_000.123456)
        for zone in ["Asia/Kathmandu", "America/St_Johns", "Europe/Paris", "UTC"] {
            try admin.executeScript("ALTER DATABASE \(quoteIdentifier(database.name)) SET TimeZone = '\(zone)'")
            let c = try database.connect()
            let row = try c.query(
                """
                SELECT current_setting('TimeZone'), \(when)::timestamptz, now(),
                       '1900-01-01 00:00:00+00'::timestamptz, \(when)::timestamptz::text
                """)[0]
            #expect(try row.decode(String.self, 0) == zone)
            let roundTripped = try row.decode(Date.self, 1)
            #expect(abs(roundTripped.timeIntervalSince1970 - when.timeIntervalSince1970) < 0.000_001, "\(zone)")
            #expect(abs(try row.decode(Date.self, 2).timeIntervalSinceNow) < 60, "\(zone)")
            #expect(try row.decode(Date.self, 3).timeIntervalSince1970 == -2_208_988_800, "\(zone)")
            if zone != "UTC" { #expect(try !row.decode(String.self, 4).hasSuffix("+00"), "\(zone)") }
        }
    }

    /// ISO is PostgreSQL's default DateStyle; a database set otherwise is refused at connect, in
    /// one line that says what to change, rather than misreading dates later.
    @Test func aDateStyleOtherThanISOIsRefusedInOneLine() throws {
        let admin = try database.connect()
        try admin.executeScript("ALTER DATABASE \(quoteIdentifier(database.name)) SET DateStyle = 'SQL, DMY'")
        defer {
            _ = try? admin.executeScript("ALTER DATABASE \(quoteIdentifier(database.name)) RESET DateStyle")
        }
        let error = try #require(throws: PostgresError.self) { try database.connect() }
        #expect(error.code == .misuse)
        #expect(!error.isConnectionProblem)
        #expect(error.description.contains("'SQL, DMY' (DateStyle)"))
        #expect(error.description.contains("SET DateStyle = 'ISO, MDY'"))
        #expect(!error.description.contains("\n"))
        try admin.executeScript("ALTER DATABASE \(quoteIdentifier(database.name)) SET DateStyle = 'ISO, DMY'")
        #expect(
            try database.connect().query("SELECT '2026-01-02'::date::text")[0].decode(String.self, 0) == "2026-01-02")
    }
}
