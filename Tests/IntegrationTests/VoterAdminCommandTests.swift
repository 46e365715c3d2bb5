import Foundation
import Postgres
import TestSupport
import Testing

/// The `voteradmin` executable as a user runs it: one clear line on stderr and a non-zero exit
/// for bad input, and nothing changed.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class VoterAdminCommandTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase(migrated: false) }
    deinit { database.drop() }

    func voteradmin(_ arguments: [String], url: String? = nil) throws -> CommandResult {
        try runCommand(Binaries.url("voteradmin"), arguments, environment: ["DATABASE_URL": url ?? database.url])
    }

    func voterCount() throws -> Int {
        try database.connect().query("SELECT count(*) FROM voter")[0].decode(Int.self, 0)
    }

    @Test func migrateSeedAndStatusWork() throws {
        let migrate = try voteradmin(["migrate"])
        #expect(migrate.status == 0, "\(migrate.stderr)")
        #expect(migrate.stdout.contains("Applied 0001_voter_rolls.sql"))
        let again = try voteradmin(["migrate"])
        #expect(again.status == 0)
        #expect(again.stdout.contains("Nothing to migrate"))
        let status = try voteradmin(["migrate", "--status"])
        #expect(status.stdout.contains("applied  0001_voter_rolls.sql"))
        let seed = try voteradmin(["seed", "1500", "--random-seed", "3"])
        #expect(seed.status == 0, "\(seed.stderr)")
        #expect(seed.stdout.contains("Created 1 polling centres and 1,500 voters"))
        #expect(try voterCount() == 1500)
    }

    @Test func seedBeforeMigrateSaysToMigrateFirst() throws {
        let result = try voteradmin(["seed", "10"])
        #expect(result.status == 1)
        #expect(result.stderrLines.count == 1)
        #expect(result.stderr.hasPrefix("voteradmin: error: the database is not migrated ("))
        #expect(result.stderr.contains("run 'voteradmin migrate' first"))
    }

    @Test(arguments: [
        ["seed", "0"], ["seed", "-5"], ["seed", "abc"], ["seed", "90000001"], ["seed"], ["frobnicate"],
    ])
    func badInputIsOneLineAndChangesNothing(arguments: [String]) throws {
        #expect(try voteradmin(["migrate"]).status == 0)
        #expect(try voteradmin(["seed", "20", "--random-seed", "1"]).status == 0)
        let result = try voteradmin(arguments)
        #expect(result.status == 64)
        #expect(result.stderrLines.count == 1)
        #expect(result.stderr.hasPrefix("voteradmin: error: "))
        #expect(result.stdout.isEmpty)
        #expect(try voterCount() == 20)
    }

    @Test func anUnreachableDatabaseIsOneLineWithoutThePassword() throws {
        let result = try voteradmin(["seed", "10"], url: "postgresql://voter:hunter2@127.0.0.1:1/none")
        #expect(result.status == 1)
        #expect(result.stderrLines.count == 1)
        #expect(result.stderr.contains("cannot connect to PostgreSQL"))
        #expect(result.stderr.contains("127.0.0.1"))
        #expect(!result.stderr.contains("hunter2"))
    }
}
