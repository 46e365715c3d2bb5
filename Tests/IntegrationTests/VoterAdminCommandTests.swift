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
        #expect(migrate.stdout.contains("Applied voter rolls: 0001_voter_rolls.sql"))
        #expect(migrate.stdout.contains("Applied pgcanvas: 0002_canvas_broker.sql"))
        let again = try voteradmin(["migrate"])
        #expect(again.status == 0)
        #expect(again.stdout.contains("Nothing to migrate"))
        let status = try voteradmin(["migrate", "--status"])
        #expect(status.stdout.contains("applied  voter rolls: 0001_voter_rolls.sql"))
        #expect(status.stdout.contains("applied  pgcanvas: 0011_canvas_retention.sql"))
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

    /// Ids and counts out of range are refused in validate(), before any connection: one line, exit 64.
    @Test(arguments: [
        (["cancel", "-5"], "expected a job or canvas id (a whole number from 1 to 9223372036854775807), not '-5'"),
        (["cancel", "0"], "expected a job or canvas id (a whole number from 1 to 9223372036854775807), not '0'"),
        (
            ["retry", "9223372036854775808"],
            "expected a job id (a whole number from 1 to 9223372036854775807), not '9223372036854775808'"
        ),
        (["retry"], "missing the job id"),
        (["result", "1e3"], "expected a job or canvas id (a whole number from 1 to 9223372036854775807), not '1e3'"),
        (["wait", "1", "2"], "expected a job or canvas id (a whole number from 1 to 9223372036854775807), got 1 2"),
        (["wait", "1", "--timeout", "nan"], "--timeout: expected seconds, 0 or more, not nan"),
        (["wait", "1", "--timeout", "-2"], "--timeout: expected seconds, 0 or more, not -2.0"),
        (
            ["purge", "--yes", "--queue", ""],
            "--queue: expected a queue name (1 to 200 characters, no control characters)"
        ),
        (
            ["seed", "99999999999999999999"],
            "the voter count must be between 1 and 90,000,000 (voter ids have 8 digits), not 99999999999999999999"
        ),
        (["seed", "10", "--random-seed", "-1"], "The value '-1' is invalid for '--random-seed"),
        (["seed", "10", "--random-seed", "18446744073709551616"], "The value '18446744073709551616' is invalid"),
    ])
    func outOfRangeIdsAndCountsAreOneLine(arguments: [String], message: String) throws {
        // An unreachable database: the refusal must come before any connection is tried.
        let result = try voteradmin(arguments, url: "postgresql://x:pw@127.0.0.1:1/none")
        #expect(result.status == 64, "\(result.stderr)")
        #expect(result.stderrLines.count == 1, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("voteradmin: error: " + message), "\(result.stderr)")
        #expect(result.stdout.isEmpty)
    }

    /// Purge with a bad queue name removes nothing, and a valid id still reaches the database.
    @Test func refusedCommandsChangeNothing() throws {
        #expect(try voteradmin(["migrate"]).status == 0)
        let c = try database.connect()
        let id = try c.query("SELECT canvas.enqueue('canvas.add', '[1, 2]')")[0].decode(Int64.self, 0)
        #expect(try voteradmin(["purge", "--yes", "--queue", "a\nb"]).status == 64)
        #expect(try voteradmin(["cancel", "-\(id)"]).status == 64)
        #expect(try c.query("SELECT state FROM canvas.jobs WHERE id = \(id)")[0].decode(String.self, 0) == "queued")
        let cancel = try voteradmin(["cancel", String(id)])
        #expect(cancel.status == 0, "\(cancel.stderr)")
        #expect(cancel.stdout == "Cancelled \(id)\n")
        let missing = try voteradmin(["result", "9223372036854775807"])
        #expect(missing.status == 1)
        #expect(missing.stderrLines == ["voteradmin: error: no job or canvas with id 9223372036854775807"])
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
