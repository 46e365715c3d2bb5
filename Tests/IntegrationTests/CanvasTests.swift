import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// Celery's canvas semantics, run by real pgworker processes.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class CanvasTests {
    let database: TestDatabase
    let worker: WorkerProcess

    init() throws {
        database = try TestDatabase()
        worker = try WorkerProcess(databaseURL: database.url, arguments: ["-c", "4", "--poll-interval", "0.2"])
    }
    deinit { database.drop() }

    func run(_ canvas: Canvas, timeout: Double = 30) throws -> CanvasStatus {
        let c = try database.connect()
        let status = try canvas.enqueue(on: c).wait(on: c, timeout: timeout)
        #expect(status.state != .pending, "timed out: \(worker.log.suffix(2000))")
        return status
    }

    /// The same canvas sent as JSON text through SQL, as any language could.
    func runJSON(_ text: String, timeout: Double = 30) throws -> CanvasStatus {
        let c = try database.connect()
        let id: Int64 = try c.query("SELECT canvas.enqueue_canvas(\(PostgresJSON(text: text)))")[0].decode(
            Int64.self, 0)
        return try CanvasHandle(id: id).wait(on: c, timeout: timeout)
    }

    func count(_ q: Query) throws -> Int { try database.connect().query(q)[0].decode(Int.self, 0) }

    @Test func groupResultsComeInMemberOrderWhateverOrderTheyFinish() throws {
        // Earlier members sleep longer, so they finish last.
        let members = (0..<6).map { i in
            chain([
                signature("canvas.sleep", .double(0.3 - Double(i) * 0.05)),
                .signature(Signature("canvas.identity", [.int(i)]).immutable),
            ])
        }
        let status = try run(group(members))
        #expect(status.state == .succeeded)
        #expect(status.result == [0, 1, 2, 3, 4, 5])
        let viaJSON = try runJSON(
            #"{"group": [{"task": "canvas.add", "args": [1, 1]}, {"task": "canvas.add", "args": [2, 2]}]}"#)
        #expect(viaJSON.result == [2, 4])
    }

    @Test func chainPrependsEachResultUnlessImmutable() throws {
        let status = try run(
            chain([
                signature("canvas.add", 1, 1), signature("canvas.add", 10),
                .signature(Signature("canvas.add", [100, 200]).immutable), signature("canvas.add", 1000),
            ]))
        #expect(status.result == 1300)
        let viaJSON = try runJSON(
            #"{"chain": [{"task": "canvas.add", "args": [2, 3]}, {"task": "canvas.add", "args": [5]}]}"#)
        #expect(viaJSON.result == 10)
    }

    @Test func aFailingLinkStopsTheChainAndRunsItsErrorCallbackOnce() throws {
        let c = try database.connect()
        let failing = Canvas.chain(
            [
                signature("canvas.add", 1, 1),
                signature("canvas.fail", "link broke", options: SignatureOptions(maxRetries: 0, immutable: true)),
                signature("canvas.add", 5),
            ], onError: Signature("canvas.identity"))
        let status = try failing.enqueue(on: c).wait(on: c, timeout: 30)
        #expect(status.state == .failed)
        #expect(status.error == "link broke")
        usleep(500_000)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.add' AND args = '[2, 5]'") == 0)
        let callbacks = try c.query("SELECT args FROM canvas.jobs WHERE task = 'canvas.identity'")
        #expect(callbacks.count == 1)
        let info = try JSONValue(parsing: try callbacks[0].decode(PostgresJSON.self, 0).text)
        #expect(info.arrayValue?.first?["task"] == "canvas.fail")
        #expect(info.arrayValue?.first?["error"] == "link broke")
        #expect(info.arrayValue?.first?["id"]?.intValue != nil)
    }

    @Test func chordBodyGetsHeaderResultsInOrderExactlyOnce() throws {
        let header = (0..<20).map { i in signature("canvas.add", .int(i), .int(i)) }
        let status = try run(chord(header, body: signature("canvas.sum")))
        #expect(status.result == .int((0..<20).map { $0 * 2 }.reduce(0, +)))
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'") == 1)
        let viaJSON = try runJSON(
            #"{"chord": [{"task": "canvas.add", "args": [1, 2]}, {"task": "canvas.add", "args": [3, 4]}], "body": {"task": "canvas.identity"}}"#
        )
        #expect(viaJSON.result == [3, 7])
    }

    @Test func emptyHeaderRunsTheBodyAtOnceWithAnEmptyList() throws {
        #expect(try run(chord([], body: signature("canvas.identity"))).result == [])
        #expect(try runJSON(#"{"chord": [], "body": {"task": "canvas.sum"}}"#).result == 0)
    }

    @Test func headerMembersMayBeChainsAndAChordMayBeAChainLink() throws {
        // In a chain, a chord's header members receive the previous result, as in Celery; these
        // are immutable so they ignore it.
        let fixed = SignatureOptions(immutable: true)
        let inner = chord(
            [
                chain([signature("canvas.add", 1, 1, options: fixed), signature("canvas.add", 1)]),
                signature("canvas.add", 10, 10, options: fixed),
            ],
            body: signature("canvas.identity"))
        let status = try run(chain([signature("canvas.noop"), inner, signature("canvas.sum")]))
        #expect(status.result == 23, "\(status)")
    }

    @Test func aMemberThatFailsForGoodFailsTheChordOnceAndTheOthersStillFinish() throws {
        let c = try database.connect()
        let header = [
            signature("canvas.sleep", 0.3),
            signature("canvas.fail", "member broke", options: SignatureOptions(maxRetries: 1, retryBackoff: 0.05)),
            signature("canvas.add", 2, 2),
        ]
        let handle = try Canvas.chord(header, body: signature("canvas.sum"), onError: Signature("canvas.identity"))
            .enqueue(on: c)
        let status = try handle.wait(on: c, timeout: 30)
        #expect(status.state == .failed)
        #expect(
            try eventually(timeout: 10) {
                try count(
                    "SELECT count(*) FROM canvas.jobs WHERE task IN ('canvas.sleep', 'canvas.add') AND state = 'succeeded'"
                ) == 2
            })
        usleep(300_000)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.sum'") == 0)
        let callbacks = try c.query("SELECT args FROM canvas.jobs WHERE task = 'canvas.identity'")
        #expect(callbacks.count == 1)
        let info = try JSONValue(parsing: try callbacks[0].decode(PostgresJSON.self, 0).text).arrayValue?.first
        #expect(info?["task"] == "canvas.fail")
        #expect(info?["error"] == "member broke")
        let inner = try #require(status.innerID)
        let chordStatus = try #require(try CanvasStatus.fetch(inner, on: c))
        #expect(chordStatus.state == .failed)
        #expect(chordStatus.bodyID == nil)
    }

    @Test func starmapCallsTheTaskForEachArgumentListInOneJob() throws {
        let status = try run(starmap("canvas.add", [[1, 2], [3, 4], [5, 6]]))
        #expect(status.result == [3, 7, 11])
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.starmap'") == 1)
        #expect(try runJSON(#"{"starmap": "canvas.add", "args": [[10, 1]]}"#).result == [11])
    }

    @Test func spawnedWorkIsCommittedWithTheTasksSuccess() throws {
        let spawned = #"{"group": [{"task": "canvas.add", "args": [40, 2]}]}"#
        let status = try runJSON(#"{"task": "canvas.spawn", "args": [\#(spawned)]}"#)
        #expect(status.state == .succeeded)
        #expect(
            try eventually(timeout: 10) {
                try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.add' AND result = '42'") == 1
            })
        let parent: Int = try count("SELECT id FROM canvas.jobs WHERE task = 'canvas.spawn'")
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.add' AND parent_id = \(parent)") == 1)
    }

    @Test func waitingInsideATaskIsRefusedAsCeleryRefusesIt() throws {
        let c = try database.connect()
        let other = try signature("canvas.add", 1, 2).enqueue(on: c)
        let status = try run(signature("canvas.join", .int(Int(other.id))))
        #expect(status.state == .failed)
        #expect(status.error?.hasPrefix("Never call result.get() within a task!") == true)
        #expect(status.error?.contains("avoid-launching-synchronous-subtasks") == true)
        // Outside a task, waiting works.
        #expect(try other.wait(on: c, timeout: 10).result == 3)
    }
}
