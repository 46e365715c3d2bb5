import Foundation
import Postgres
import TestSupport
import Testing
import VoterRolls

@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class SeedTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func count(_ c: Connection, _ sql: Query) throws -> Int { try c.query(sql)[0].decode(Int.self, 0) }

    @Test func createsVotersCentresAndOneRegistrationEach() throws {
        let c = try database.connect()
        let summary = try Seeder(names: try NameBank.bundled()).seed(c, voters: 12_345, randomSeed: 7)
        #expect(summary.voters == 12_345)
        #expect(summary.centers == 12)
        #expect(try count(c, "SELECT count(*) FROM voter") == 12_345)
        #expect(try count(c, "SELECT count(*) FROM polling_center") == 12)
        #expect(try count(c, "SELECT count(*) FROM voter_registration") == 12_345)
        #expect(try count(c, "SELECT count(DISTINCT voter_id) FROM voter_registration") == 12_345)
        #expect(try count(c, "SELECT count(*) FROM voter WHERE voter_id NOT BETWEEN 10000000 AND 99999999") == 0)
        #expect(try count(c, "SELECT count(*) FROM polling_center WHERE center_id NOT BETWEEN 10000 AND 99999") == 0)
        // Few names repeat, and some are not ASCII.
        #expect(try count(c, "SELECT count(DISTINCT voter_name) FROM voter") > 12_000)
        #expect(try count(c, "SELECT count(*) FROM voter WHERE voter_name !~ '^[ -~]*$'") > 100)
        // Dirichlet(1,…,1) makes centres uneven: the largest is several times the smallest.
        #expect(summary.largestCenter > 3 * summary.smallestCenter)
        let names = try c.query("SELECT center_name FROM polling_center").map { try $0.decode(String.self, 0) }
        #expect(
            names.allSatisfy {
                $0.contains("School") || $0.contains("Center") || $0.contains("Library") || $0.contains("Academy")
            })
    }

    @Test func theSameSeedGivesTheSameDataAndAnotherSeedDoesNot() throws {
        let c = try database.connect()
        let seeder = Seeder(names: try NameBank.bundled())
        let fingerprint: Query = """
            SELECT md5(string_agg(v.voter_id || ':' || v.voter_name || ':' || r.center_id, ',' ORDER BY v.voter_id))
            FROM voter v JOIN voter_registration r USING (voter_id)
            """
        try seeder.seed(c, voters: 3_000, randomSeed: 42)
        let first: String = try c.query(fingerprint)[0].decode(String.self, 0)
        try seeder.seed(c, voters: 3_000, randomSeed: 42)
        let again: String = try c.query(fingerprint)[0].decode(String.self, 0)
        try seeder.seed(c, voters: 3_000, randomSeed: 43)
        let other: String = try c.query(fingerprint)[0].decode(String.self, 0)
        #expect(first == again)
        #expect(first != other)
    }

    @Test func aFailedSeedLeavesTheEarlierDataAsItWas() throws {
        let c = try database.connect()
        let seeder = Seeder(names: try NameBank.bundled())
        try seeder.seed(c, voters: 2_000, randomSeed: 1)
        // Make the registration load fail part-way, after voters were already copied.
        try c.executeScript(
            "ALTER TABLE voter_registration ADD CONSTRAINT test_only_low_ids CHECK (voter_id < 60000000) NOT VALID")
        #expect(throws: PostgresError.self) { try seeder.seed(c, voters: 5_000, randomSeed: 2) }
        #expect(try count(c, "SELECT count(*) FROM voter") == 2_000)
        #expect(try count(c, "SELECT count(*) FROM voter_registration") == 2_000)
    }

    @Test func rejectsCountsTheIdFormatsCannotHold() throws {
        let c = try database.connect()
        let seeder = Seeder(names: try NameBank.bundled())
        #expect(throws: SeedError.self) { try seeder.seed(c, voters: 0) }
        #expect(throws: SeedError.self) { try seeder.seed(c, voters: Seeder.maxVoters + 1) }
    }
}

/// The order a reader expects on a printed list: accents and case do not push a name to the end.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class NameOrderTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    @Test func assignmentAndListsSortNamesAsAReaderDoes() throws {
        let c = try database.connect()
        let names = ["Zoe Abbott", "Émile Zola", "Adrienne Rich", "Adán Ruiz", "ana Lopez", "Eve Arden", "Åsa Berg"]
        try c.execute("INSERT INTO polling_center VALUES (10001, 'Lincoln School')")
        for (i, name) in names.enumerated() {
            try c.execute("INSERT INTO voter VALUES (\(Int32(10_000_000 + i)), \(name))")
            try c.execute("INSERT INTO voter_registration VALUES (\(Int32(10_000_000 + i)), 10001)")
        }
        try StationAssignment.refreshAll(on: c)
        let printed = try StationAssignment.voterNames(center: 10001, station: 1, on: c)
        #expect(
            printed == ["Adán Ruiz", "Adrienne Rich", "ana Lopez", "Åsa Berg", "Émile Zola", "Eve Arden", "Zoe Abbott"])
    }
}

/// The place each assignment keeps (migration 0017) is what lists are printed by: it must be the
/// centre's name order, the same whichever refresh made it.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class StationPlaceTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func assignments(_ c: Connection) throws -> [[Int]] {
        try c.query(
            "SELECT voter_id, center_id, station_id, voter_position FROM station_assignment ORDER BY voter_id"
        ).map { row in try (0..<4).map { try row.decode(Int.self, $0) } }
    }

    @Test func theFullAndThePerCentreRefreshGiveEachVoterTheSamePlaceInNameOrder() throws {
        let c = try database.connect()
        try Seeder(names: try NameBank.bundled()).seed(c, voters: 4_000, randomSeed: 3)
        try StationAssignment.refreshAll(on: c)
        let full = try assignments(c)
        #expect(full.count == 4_000)

        // Places run 1…n within each centre, in (name, id) order, and give the station.
        let misplaced = try c.query(
            """
            SELECT count(*) FROM (
                SELECT s.voter_position, s.station_id,
                       row_number() OVER (PARTITION BY s.center_id ORDER BY v.voter_name, v.voter_id) AS expected
                FROM station_assignment s JOIN voter v USING (voter_id)) x
            WHERE voter_position <> expected OR station_id <> (expected - 1) / \(StationAssignment.votersPerStation) + 1
            """)[0].decode(Int.self, 0)
        #expect(misplaced == 0)

        // Each station prints its voters in the centre's name order.
        for (center, station) in try StationAssignment.stations(on: c) {
            let sorted = try c.query(
                """
                SELECT v.voter_name FROM station_assignment s JOIN voter v USING (voter_id)
                WHERE s.center_id = \(center) AND s.station_id = \(station) ORDER BY v.voter_name, v.voter_id
                """
            ).map { try $0.decode(String.self, 0) }
            #expect(try StationAssignment.voterNames(center: center, station: station, on: c) == sorted)
        }

        // The per-centre refresh (all_in_one, options 3 and 4) stores the same rows.
        try c.execute("UPDATE station_assignment SET voter_position = voter_position + 1000")
        for center in try StationAssignment.centers(on: c) { try StationAssignment.refresh(center: center.id, on: c) }
        #expect(try assignments(c) == full)
    }

    /// The table as `\d` shows it: columns, constraints and indexes, each with its definition.
    func definition(_ c: Connection) throws -> [String] {
        try c.query(
            """
            SELECT format('%s %s %s %s', attname, format_type(atttypid, atttypmod), attnotnull,
                          (SELECT collname FROM pg_collation WHERE oid = attcollation))
            FROM pg_attribute WHERE attrelid = 'station_assignment'::regclass AND attnum > 0 AND NOT attisdropped
            UNION ALL
            SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = 'station_assignment'::regclass
            UNION ALL
            SELECT indexrelid::regclass::text || ' ' || pg_get_indexdef(indexrelid) FROM pg_index
            WHERE indrelid = 'station_assignment'::regclass
            ORDER BY 1
            """
        ).map { try $0.decode(String.self, 0) }
    }

    /// The full refresh builds a new table and gives it the old one's name: it has the
    /// definition the migrations give (columns, collation, keys, checks, the station index), and
    /// a session that waited on the old table's lock reads the new one when the refresh commits.
    @Test func theFullRefreshLeavesTheTableAsMigratedAndAWaitingReaderReadsTheNewOne() throws {
        let c = try database.connect()
        try Seeder(names: try NameBank.bundled()).seed(c, voters: 3_000, randomSeed: 7)
        let migrated = try definition(c)
        #expect(migrated.contains { $0.hasPrefix("station_assignment_voter_id_fkey FOREIGN KEY (voter_id)") })
        try StationAssignment.refreshAll(on: c)
        #expect(try definition(c) == migrated)
        #expect(try c.query("SELECT count(*) FROM station_assignment")[0].decode(Int.self, 0) == 3_000)

        try c.execute("BEGIN")
        try StationAssignment.refreshAll(on: c)
        let reader = try inThread(database.url) { try $0.query("SELECT count(*) FROM station_assignment") }
        #expect(try waitsOnALock(reader.pid), "the reader waits on the refresh's lock")
        try c.execute("COMMIT")
        #expect(try reader.result(timeout: 10)[0].decode(Int.self, 0) == 3_000)
    }

    /// A statement run on a connection of its own, in a thread, that may wait on a lock.
    final class Session: @unchecked Sendable {
        let done = DispatchSemaphore(value: 0)
        let outcome = SharedValue<Result<Rows, Error>?>(nil)
        let backend = SharedValue<Int?>(nil)
        /// The session's server process, once it has connected (-1 if it could not, in 10 s).
        var pid: Int {
            let deadline = Date().addingTimeInterval(10)
            while backend.value == nil && outcome.value == nil && Date() < deadline { usleep(1000) }
            return backend.value ?? -1
        }
        func result(timeout: Double) throws -> Rows {
            guard done.wait(timeout: .now() + timeout) == .success else { throw CanvasTestTimeout() }
            return try outcome.value!.get()
        }
    }
    struct CanvasTestTimeout: Error {}

    func inThread(_ url: String, _ body: @escaping @Sendable (Connection) throws -> Rows) throws -> Session {
        let session = Session()
        Thread.detachNewThread {
            session.outcome.value = Result {
                let c = try Connection.connect(ConnectionConfiguration(conninfo: url))
                session.backend.value = try c.query("SELECT pg_backend_pid()")[0].decode(Int.self, 0)
                return try body(c)
            }
            session.done.signal()
        }
        return session
    }

    func waitsOnALock(_ pid: Int) throws -> Bool {
        let monitor = try database.connect()
        return try eventually(timeout: 10) {
            try monitor.query("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = \(pid)").first?
                .decode(Bool.self, 0) == true
        }
    }

    /// The refresh takes voter and polling_center before station_assignment, as a rename or a
    /// cascading delete does: a transaction that read voter and goes on to station_assignment
    /// while a refresh starts is let finish first, instead of the two deadlocking (the refresh
    /// would otherwise hold station_assignment and wait for voter to drop its old foreign keys).
    @Test func aRefreshStartingWhileATransactionReadsVoterLetsItFinish() throws {
        let c = try database.connect()
        try Seeder(names: try NameBank.bundled()).seed(c, voters: 2_000, randomSeed: 9)
        try StationAssignment.refreshAll(on: c)
        try c.execute("BEGIN")
        #expect(try c.query("SELECT count(*) FROM voter")[0].decode(Int.self, 0) == 2_000)
        let refresh = try inThread(database.url) { try $0.query("SELECT refresh_station_assignments(500)") }
        #expect(try waitsOnALock(refresh.pid), "the refresh waits for the reader of voter")
        #expect(try c.query("SELECT count(*) FROM station_assignment")[0].decode(Int.self, 0) == 2_000)
        try c.execute(
            "UPDATE voter SET voter_name = 'Ångström Renamed' WHERE voter_id = (SELECT min(voter_id) FROM voter)")
        try c.execute("COMMIT")
        #expect(try refresh.result(timeout: 30)[0].decode(Int.self, 0) == 2_000)
        #expect(
            try c.query("SELECT count(*) FROM station_assignment WHERE voter_name = 'Ångström Renamed'")[0].decode(
                Int.self, 0) == 1)
    }

    /// The refresh gives the new table the old one's grants exactly: to a role whose name needs
    /// quoting, without one the old table did not have (a privilege revoked stays revoked).
    @Test func theFullRefreshKeepsTheTablesGrantsExactly() throws {
        let c = try database.connect()
        try Seeder(names: try NameBank.bundled()).seed(c, voters: 1_000, randomSeed: 11)
        let role = "Roll Viewer-\(UInt32.random(in: 0...UInt32.max))"
        let quoted = "\"\(role)\""
        try c.execute("CREATE ROLE \(unescaped: quoted) NOLOGIN")
        // The owner's default privileges give every new table of the schema SELECT and UPDATE
        // for the role, as `voteradmin roles` does for the worker: the new table starts with
        // both, and the refresh must take back the UPDATE the old table no longer had.
        let defaults = "ALTER DEFAULT PRIVILEGES IN SCHEMA public"
        try c.execute("\(unescaped: defaults) GRANT SELECT, UPDATE ON TABLES TO \(unescaped: quoted)")
        defer {
            do {
                try c.execute("\(unescaped: defaults) REVOKE ALL ON TABLES FROM \(unescaped: quoted)")
                try c.execute("REVOKE ALL ON station_assignment FROM \(unescaped: quoted)")
                try c.execute("DROP ROLE \(unescaped: quoted)")
            } catch {
                Issue.record("could not drop the test's role \(quoted): \(error)")
            }
        }
        try c.execute("GRANT SELECT, UPDATE ON station_assignment TO \(unescaped: quoted)")
        try c.execute("REVOKE UPDATE ON station_assignment FROM \(unescaped: quoted)")
        func grants() throws -> [String] {
            try c.query(
                """
                SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
                       || ' ' || a.privilege_type || ' ' || a.is_grantable
                FROM pg_class t, aclexplode(t.relacl) a WHERE t.oid = 'station_assignment'::regclass ORDER BY 1
                """
            ).map { try $0.decode(String.self, 0) }
        }
        let before = try grants()
        #expect(before.contains("\(quoted) SELECT false"))
        #expect(!before.contains("\(quoted) UPDATE false"))
        try StationAssignment.refreshAll(on: c)
        #expect(try grants() == before)
    }

    /// Full refreshes, per-centre refreshes and renames at once, each on its own connection,
    /// as tasks of the demo's options and an application would run them: they take the tables
    /// in one order (parents first), so none deadlocks, and the assignments end complete.
    @Test func fullAndPerCentreRefreshesAndRenamesRunTogetherWithoutDeadlock() throws {
        let c = try database.connect()
        try Seeder(names: try NameBank.bundled()).seed(c, voters: 3_000, randomSeed: 13)
        try StationAssignment.refreshAll(on: c)
        let centers = try StationAssignment.centers(on: c).map(\.id)
        let voters = try c.query("SELECT voter_id FROM voter ORDER BY voter_id").map { try $0.decode(Int.self, 0) }
        let url = database.url
        let failures = SharedValue<[String]>([])
        let group = DispatchGroup()
        func run(_ name: String, _ body: @escaping @Sendable (Connection, inout SplitMix64) throws -> Void) {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                var random = SplitMix64(state: UInt64(name.utf8.count))
                do {
                    let own = try Connection.connect(ConnectionConfiguration(conninfo: url))
                    try body(own, &random)
                } catch {
                    let message = "\(name): \(error)"
                    failures.value = failures.value + [message]
                }
            }
        }
        run("full") { own, _ in for _ in 0..<8 { try StationAssignment.refreshAll(on: own) } }
        run("per centre") { own, random in
            for _ in 0..<60 {
                try StationAssignment.refresh(center: centers[Int(random.next() % UInt64(centers.count))], on: own)
            }
        }
        run("renames") { own, random in
            for i in 0..<60 {
                let voter = voters[Int(random.next() % UInt64(voters.count))]
                try own.execute("UPDATE voter SET voter_name = \("Renamed \(i)") WHERE voter_id = \(voter)")
            }
        }
        #expect(group.wait(timeout: .now() + 120) == .success)
        #expect(failures.value.isEmpty, "\(failures.value)")
        // Whatever ran last, every voter is assigned once, under its current name.
        let stale = try c.query(
            "SELECT count(*) FROM voter v LEFT JOIN station_assignment s USING (voter_id) WHERE s.voter_name IS DISTINCT FROM v.voter_name"
        )[0].decode(Int.self, 0)
        #expect(stale == 0)
        #expect(try c.query("SELECT count(*) FROM station_assignment")[0].decode(Int.self, 0) == 3_000)
    }

    /// Stations print the names their assignment carries; a voter renamed after the assignment
    /// prints under the new name, in the place it had, until the next refresh moves it.
    @Test func aVoterRenamedAfterTheAssignmentPrintsUnderTheNewNameInItsPlace() throws {
        let c = try database.connect()
        try Seeder(names: try NameBank.bundled()).seed(c, voters: 2_000, randomSeed: 5)
        try StationAssignment.refreshAll(on: c)
        let first = try c.query(
            "SELECT voter_id, center_id, station_id, voter_position FROM station_assignment WHERE voter_position = 1 LIMIT 1"
        )[0]
        let (voter, center, station) = (
            try first.decode(Int.self, 0), try first.decode(Int.self, 1), try first.decode(Int.self, 2)
        )
        let before = try StationAssignment.voterNames(center: center, station: station, on: c)

        try c.execute("UPDATE voter SET voter_name = 'Zwölfer Renamed' WHERE voter_id = \(voter)")
        var expected = before
        expected[0] = "Zwölfer Renamed"
        #expect(try StationAssignment.voterNames(center: center, station: station, on: c) == expected)
        // The next refresh moves the voter to its new place.
        try StationAssignment.refreshAll(on: c)
        #expect(try StationAssignment.voterNames(center: center, station: station, on: c).first != "Zwölfer Renamed")
        let moved = try c.query(
            "SELECT voter_name FROM station_assignment WHERE voter_id = \(voter)")[0].decode(String.self, 0)
        #expect(moved == "Zwölfer Renamed")
    }
}
