import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// `voteradmin enqueue --canvas` and `voteradmin result` on canvases, as a user runs them.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class CanvasCommandTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func voteradmin(_ arguments: [String]) throws -> CommandResult {
        try runCommand(Binaries.url("voteradmin"), arguments, environment: ["DATABASE_URL": database.url])
    }

    func file(_ text: String) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("canvas-\(UUID().uuidString).json")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    @Test func waitPrintsTheBodysResultForAChordTheListForAGroupTheLastLinkForAChain() throws {
        let worker = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "2"])
        let cases: [(String, JSONValue)] = [
            (
                #"{"chord": [{"task": "canvas.add", "args": [1, 2]}, {"task": "canvas.add", "args": [3, 4]}], "body": {"task": "canvas.sum"}}"#,
                10
            ),
            (
                #"{"group": [{"task": "canvas.add", "args": [1, 2]}, {"task": "canvas.identity", "args": ["x"]}]}"#,
                [3, "x"]
            ),
            (#"{"chain": [{"task": "canvas.add", "args": [1, 2]}, {"task": "canvas.add", "args": [4]}]}"#, 7),
        ]
        for (canvas, expected) in cases {
            let result = try voteradmin(["enqueue", "--canvas", try file(canvas), "--wait", "--json"])
            #expect(result.status == 0, "\(result.stderr)")
            let object = try JSONValue(parsing: result.stdout)
            #expect(object["state"] == "succeeded")
            #expect(object["result"] == expected)
        }
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 10) == 0)
    }

    @Test func resultOnAChordShowsItsMembersAndBody() throws {
        let c = try database.connect()
        let handle = try chord([signature("canvas.noop"), signature("canvas.noop")], body: signature("canvas.sum"))
            .enqueue(on: c)
        let inner = try #require(try CanvasStatus.fetch(handle.id, on: c)?.innerID)
        let pending = try voteradmin(["result", String(inner)])
        #expect(pending.status == 0)
        #expect(pending.stdout.contains("canvas \(inner) (chord): pending"))
        #expect(pending.stdout.contains("members: 0 done, 0 failed, 2 pending of 2"))
        #expect(pending.stdout.contains("body: not enqueued"))
        let worker = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "2"])
        _ = try handle.wait(on: c, timeout: 30)
        let done = try voteradmin(["result", String(inner)])
        #expect(done.stdout.contains("members: 2 done, 0 failed, 0 pending of 2"))
        #expect(done.stdout.contains("succeeded"))
        _ = worker
    }

    @Test(arguments: [
        (
            #"{"chord": [{"task": "canvas.add"}], "body": {"args": [1]}}"#,
            #"voteradmin: error: body: missing "task""#
        ),
        (#"{"group": [{"task": "no.such"}]}"#, "voteradmin: error: group[0].task: unknown task 'no.such'"),
        (
            #"{"chord": [{"task": "canvas.noop"}, {"task": "canvas.noop"}, {"chain": [{"task": "canvas.noop"}, {"task": "x.y"}]}], "body": {"task": "canvas.noop"}}"#,
            "voteradmin: error: chord[2].chain[1].task: unknown task 'x.y'"
        ),
        (#"{"chain": [1, 2"#, "voteradmin: error: the canvas is not valid JSON"),
    ])
    func badCanvasesAreOneLineAndEnqueueNothing(canvas: String, message: String) throws {
        let result = try voteradmin(["enqueue", "--canvas", try file(canvas)])
        #expect(result.status == 64)
        #expect(result.stderrLines.count == 1, "\(result.stderr)")
        #expect(result.stderr.hasPrefix(message), "\(result.stderr)")
        #expect(try database.connect().query("SELECT count(*) FROM canvas.jobs")[0].decode(Int.self, 0) == 0)
    }
}
