import Foundation
import Postgres
import TestSupport
import Testing

@testable import Dashboard
@testable import PGCanvas

/// The dashboard's reads against a real PostgreSQL: keyset pages that neither skip nor repeat a
/// job, throughput from heartbeats, canvas pictures from the stored rows.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class StoreTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    static let states = ["scheduled", "queued", "running", "succeeded", "failed", "cancelled"]
    static let queues = ["default", "reports", "<b>odd</b>"]
    static let tasks = ["canvas.add", "canvas.sum", "rare.task"]

    /// Every page of every filter, concatenated, is exactly the filtered table, newest first: with
    /// the normal window and with one so small that most pages stop at it.
    @Test(arguments: [Store.scanWindow, 37])
    func keysetPagesCoverEachMatchOnce(window: Int64) throws {
        let c = try database.connect()
        var random = SplitMix64(state: 0xda5b_0a2d + UInt64(window))
        var rows: [String] = []
        for _ in 0..<1_500 {
            let state = Self.states[Int(random.next() % 100) < 80 ? 3 : Int(random.next() % 6)]
            let queue = Self.queues[Int(random.next() % 3)]
            let task = Self.tasks[Int(random.next() % 100) < 2 ? 2 : Int(random.next() % 2)]
            rows.append("('\(queue)', '\(task)', '\(state)')")
        }
        // Insert as the states are, bypassing the broker: the list reads states, it runs nothing.
        try c.executeScript(
            """
            ALTER TABLE canvas.jobs DISABLE TRIGGER USER;
            INSERT INTO canvas.jobs (queue, task, state) VALUES \(rows.joined(separator: ", "));
            ALTER TABLE canvas.jobs ENABLE TRIGGER USER;
            """)
        for _ in 0..<40 {
            let filter = JobFilter(
                state: random.next() % 2 == 0 ? Self.states[Int(random.next() % 6)] : nil,
                queue: random.next() % 2 == 0 ? Self.queues[Int(random.next() % 3)] : nil,
                task: random.next() % 3 == 0 ? Self.tasks[Int(random.next() % 3)] : nil, before: nil)
            var expected = Query(unsafeSQL: "")
            var conditions = ["true"]
            if let s = filter.state { conditions.append("state = \(expected.bind(s))") }
            if let q = filter.queue { conditions.append("queue = \(expected.bind(q))") }
            if let t = filter.task { conditions.append("task = \(expected.bind(t))") }
            expected.sql = "SELECT id FROM canvas.jobs WHERE \(conditions.joined(separator: " AND ")) ORDER BY id DESC"
            let want = try c.query(expected).map { try $0.decode(Int64.self, 0) }

            var got: [Int64] = []
            var page = try Store.jobs(filter, window: window, on: c)
            var pages = 1
            while true {
                #expect(page.rows.count <= Store.pageSize)
                #expect(
                    page.rows.allSatisfy { r in
                        filter.state.map { $0 == r.state } ?? true && filter.queue.map { $0 == r.queue } ?? true
                            && filter.task.map { $0 == r.task } ?? true
                    })
                got += page.rows.map(\.id)
                guard let next = page.nextBefore, pages < 10_000 else { break }
                var f = filter
                f.before = next
                page = try Store.jobs(f, window: window, on: c)
                pages += 1
            }
            #expect(got == want, "filter \(filter), window \(window): \(got.count) of \(want.count) in \(pages) pages")
        }
    }

    @Test func unknownStatesAreIgnoredNotSentToSQL() {
        let filter = JobFilter(state: "running'; DROP TABLE canvas.jobs; --", queue: "", task: nil, before: nil)
        #expect(filter.state == nil && filter.queue == nil)
    }

    /// What workers report with their heartbeats is what the overview's chart and task table show.
    @Test func heartbeatsFeedTheThroughput() throws {
        let c = try database.connect()
        let worker = try Broker.registerWorker(hostname: "h", pid: 1, queues: ["default"], concurrency: 1, on: c)
        var first = FinishTally()
        first.add(
            [
                Outcome(jobID: 1, attempt: 1, task: "<i>t</i>", kind: .succeeded),
                Outcome(jobID: 2, attempt: 1, task: "<i>t</i>", kind: .error),
                Outcome(jobID: 3, attempt: 1, task: "other", kind: .error),
            ],
            [
                Broker.Recorded(jobID: 1, state: "succeeded"), Broker.Recorded(jobID: 2, state: "queued", retryIn: 1),
                Broker.Recorded(jobID: 3, state: "failed"),
            ])
        #expect(first.byTask["<i>t</i>"] == FinishTally.Counts(succeeded: 1, failed: 0, retried: 1))
        #expect(try Broker.heartbeat(worker: worker, counts: first, on: c))
        #expect(try Broker.heartbeat(worker: worker, counts: first, on: c))
        #expect(try Broker.heartbeat(worker: worker, on: c))
        let overview = try Store.overview(on: c)
        let t = try #require(overview.tasks.first { $0.task == "<i>t</i>" })
        #expect((t.succeeded, t.failed, t.retried) == (2, 0, 2))
        #expect(overview.tasks.first { $0.task == "other" }?.failed == 2)
        #expect(
            overview.minutes.count == 60 && overview.minutes.last.map { ($0.succeeded, $0.failed) } ?? (0, 0) == (2, 2))
        let layout = Layout(readOnly: true, csrfToken: "x")
        #expect(layout.overviewFragment(overview).text.contains("&lt;i&gt;t&lt;/i&gt;"))
        // Anything but an object adds nothing (a worker of another language sending rubbish).
        try c.execute("SELECT canvas.heartbeat(\(worker), '[1, 2]'::jsonb)")
        #expect(try c.query("SELECT sum(succeeded) FROM canvas.finish_counts")[0].decode(Int.self, 0) == 2)
    }

    /// A chord not yet run: every member queued, the body still to come, and the root found from
    /// any member.
    @Test func aChordIsDrawnFromItsRows() throws {
        let c = try database.connect()
        let handle = try chord(
            [
                signature("canvas.add", 1, 2), chain([signature("canvas.add", 3, 4), signature("canvas.add", 5)]),
                signature("canvas.fail", "<script>x</script>"),
            ],
            body: signature("canvas.sum")
        ).enqueue(on: c)
        let member: Int64 = try c.query("SELECT min(id) FROM canvas.jobs")[0].decode(Int64.self, 0)
        #expect(try Store.canvasRoot(of: member, on: c) == handle.id)
        let graph = try #require(try Store.canvas(root: handle.id, on: c))
        #expect(graph.jobs.count == 3 && graph.jobs.allSatisfy { $0.state == "queued" })
        let svg = try #require(CanvasPicture(graph: graph).svg()).text
        #expect(svg.components(separatedBy: "class=\"member\"").count - 1 == 3)
        #expect(svg.contains("data-role=\"body\"") && svg.contains("canvas.sum"))
        #expect(svg.contains("data-role=\"next link\""), "the chain's second link, not created yet")
        #expect(svg.contains("data-done=\"0\" data-size=\"3\""))
        #expect(!svg.contains("<script>"))
    }

    /// Members are found in every state, running ones too, though those are in no index by chord
    /// (migration 0019): drawn when among the first, counted when beyond them.
    @Test func aChordShowsItsMembersInEveryState() throws {
        let c = try database.connect()
        let small = try group((0..<6).map { _ in signature("canvas.noop") }).enqueue(on: c)
        let big = try group((0..<(Store.memberLimit + 40)).map { _ in signature("canvas.noop") }).enqueue(on: c)
        let smallID = try #require(try CanvasStatus.fetch(small.id, on: c)?.innerID)
        let bigID = try #require(try CanvasStatus.fetch(big.id, on: c)?.innerID)
        // The first six slots of each take the six states; the big one's slots 70 and 71 run.
        try c.execute(
            """
            UPDATE canvas.jobs SET state = (\(Self.states))[position + 1],
                worker_id = CASE WHEN position = 2 THEN 1 END
            WHERE chord_id IN (\(smallID), \(bigID)) AND position < 6
            """)
        try c.execute(
            "UPDATE canvas.jobs SET state = 'running', worker_id = 1 WHERE chord_id = \(bigID) AND position IN (70, 71)"
        )
        // Other work in the table, so that reading it whole is never the cheap plan: the picture
        // reads each state's members through its index.
        try c.execute(
            """
            INSERT INTO canvas.jobs (task, state, finished_at)
            SELECT 'canvas.noop', 'succeeded', now() FROM generate_series(1, 20000)
            """)
        try c.execute("ANALYZE canvas.jobs")
        func tableScans(_ tx: Connection) throws -> Int {
            try tx.query("SELECT pg_stat_get_xact_numscans('canvas.jobs'::regclass)")[0].decode(Int.self, 0)
        }
        let scans = try c.withTransaction { tx in
            let before = try tableScans(tx)
            _ = try Store.canvas(root: big.id, on: tx)
            return try tableScans(tx) - before
        }
        #expect(scans == 0, "the picture read canvas.jobs whole")
        let graph = try #require(try Store.canvas(root: small.id, on: c))
        #expect(graph.jobs.map(\.state).sorted() == Self.states.sorted())
        let bigGraph = try #require(try Store.canvas(root: big.id, on: c))
        let drawn = bigGraph.jobs.filter { $0.chordID == bigID }
        #expect(drawn.map(\.position) == (0..<Store.memberLimit).map { Optional($0) })
        #expect(drawn.prefix(6).map(\.state) == Self.states)
        #expect(bigGraph.omitted[bigID] == ["queued": 38, "running": 2])
        let states = try CanvasStatus.fetch(bigID, on: c)?.memberStates
        #expect(
            states == [
                "scheduled": 1, "queued": Store.memberLimit + 40 - 7, "running": 3, "succeeded": 1, "failed": 1,
                "cancelled": 1,
            ])
    }
}
