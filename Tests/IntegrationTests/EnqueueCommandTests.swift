import Canvas
import Foundation
import Postgres
import TestSupport
import Testing

/// `voteradmin enqueue`, `result` and `status` as a user runs them.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class EnqueueCommandTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func voteradmin(_ arguments: [String], url: String? = nil) throws -> CommandResult {
        try runCommand(Binaries.url("voteradmin"), arguments, environment: ["DATABASE_URL": url ?? database.url])
    }

    func jobCount() throws -> Int {
        try database.connect().query("SELECT count(*) FROM canvas.jobs")[0].decode(Int.self, 0)
    }

    @Test func enqueuePrintsTheIdAndWaitPrintsTheOutcome() throws {
        let plain = try voteradmin(["enqueue", "canvas.add", "--args", "[1, 2]"])
        #expect(plain.status == 0, "\(plain.stderr)")
        let id = try #require(Int64(plain.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(try JobStatus.fetch(id, on: database.connect())?.args == [1, 2])

        let worker = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "1"])
        let waited = try voteradmin(["enqueue", "canvas.add", "--args", "[20, 22]", "--wait", "--json"])
        #expect(waited.status == 0, "\(waited.stderr)")
        let object = try JSONValue(parsing: waited.stdout)
        #expect(object["state"] == "succeeded")
        #expect(object["result"] == 42)
        #expect(object["error"] == .null)
        #expect(object["elapsed_s"]?.doubleValue != nil)

        let failed = try voteradmin(["enqueue", "canvas.fail", "--args", "[\"nope\"]", "--max-retries", "0", "--wait"])
        #expect(failed.status == 1)
        #expect(failed.stdout.contains("failed"))
        #expect(failed.stdout.contains("error: nope"))

        let result = try voteradmin(["result", String(id)])
        #expect(result.status == 0)
        #expect(result.stdout.contains("succeeded"))
        #expect(result.stdout.contains("result: 3"))

        let status = try voteradmin(["status"])
        #expect(status.status == 0)
        #expect(status.stdout.contains("default"))
        #expect(status.stdout.contains("heartbeat"))
        #expect(status.stdout.contains("canvas.fail"))
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }

    @Test(arguments: [
        ["enqueue", "no.such.task"], ["enqueue", "canvas.add", "--args", "{not json"],
        ["enqueue", "canvas.add", "--args", "{\"a\": 1}"], ["enqueue", "canvas.add", "--countdown", "-1"],
        ["enqueue", "canvas.add", "--max-retries", "-2"],
    ])
    func badInputIsOneLineAndEnqueuesNothing(arguments: [String]) throws {
        let result = try voteradmin(arguments)
        #expect(result.status == 64)
        #expect(result.stderrLines.count == 1, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("voteradmin: error: "))
        #expect(try jobCount() == 0)
    }

    @Test func anUnmigratedOrUnreachableDatabaseIsOneLine() throws {
        let bare = try TestDatabase(migrated: false)
        defer { bare.drop() }
        let unmigrated = try voteradmin(["enqueue", "canvas.noop"], url: bare.url)
        #expect(unmigrated.status == 1)
        #expect(
            unmigrated.stderrLines == [
                "voteradmin: error: the database has no canvas schema: run 'voteradmin migrate' first"
            ])
        let unreachable = try voteradmin(["enqueue", "canvas.noop"], url: "postgresql://x:pw@127.0.0.1:1/none")
        #expect(unreachable.status == 1)
        #expect(unreachable.stderrLines.count == 1)
        let worker = try runCommand(Binaries.url("pgworker"), ["-c", "1"], environment: ["DATABASE_URL": bare.url])
        #expect(worker.status == 1)
        #expect(
            worker.stderrLines == ["pgworker: error: the database has no canvas schema: run 'voteradmin migrate' first"]
        )
    }

    @Test func unknownResultIdIsOneLine() throws {
        let result = try voteradmin(["result", "999999"])
        #expect(result.status == 1)
        #expect(result.stderrLines == ["voteradmin: error: no job or canvas with id 999999"])
    }
}
