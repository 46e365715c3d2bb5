import Foundation
import Migrations
import Postgres
import TestSupport
import Testing

/// Random canvases under random faults, checked against the invariants of issue 9: every root ends
/// within a bound, no chord body runs twice, a failed canvas's error callbacks run exactly once, a
/// chord's body gets its members' results in order, no job is left running without a live worker.
///
/// PGCANVAS_FAULT_SEED replays a run (the seed is printed); PGCANVAS_FAULT_CANVASES sets how many
/// canvases (`make soak` runs 10,000). The run uses a PostgreSQL cluster of its own, because it
/// restarts the server once.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
struct FaultTests {
    @Test func randomCanvasesUnderRandomFaultsKeepTheirInvariants() throws {
        try runFaults(pools: ["prefork", "prefork --broker-connections 2"], defaultTotal: 200)
    }

    /// The same with the in-process pools (a threads and an async worker with two broker
    /// connections each, and a threads worker with one): no pool process to kill, but whole workers die, the server restarts,
    /// and runs are cancelled while they run (settled by the supervisor while their code goes on).
    @Test func inProcessPoolsUnderRandomFaultsKeepTheirInvariants() throws {
        try runFaults(
            pools: ["threads --broker-connections 2", "async --broker-connections 2", "threads"], defaultTotal: 120)
    }

    func runFaults(pools: [String], defaultTotal: Int) throws {
        let env = ProcessInfo.processInfo.environment
        let seed = env["PGCANVAS_FAULT_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 0...UInt64.max)
        let total = env["PGCANVAS_FAULT_CANVASES"].flatMap { Int($0) } ?? defaultTotal
        print(
            "fault test: seed \(seed), \(total) canvases, pools \(pools.joined(separator: "+")) (replay: PGCANVAS_FAULT_SEED=\(seed))"
        )

        let run = try FaultRun(seed: seed, total: total, pools: pools)
        try run.drive()
        let violations = try run.check()
        print(run.summary(violations: violations.count))
        #expect(
            violations.isEmpty,
            "seed \(seed): \(violations.count) violations (listed above)\n\(violations.prefix(5).joined(separator: "\n"))"
        )
    }

    /// Found by the test above (seed 6356121360025127557): a group followed by more links becomes a
    /// chord whose body is the rest of the chain, and that body inherited the chain's callbacks a
    /// second time (they ran twice) and the group's own (they ran for a later link's failure).
    @Test func aChainWhoseFirstLinkIsAGroupReportsALaterFailureOnce() throws {
        let database = try TestDatabase()
        defer { database.drop() }
        let c = try database.connect()
        let root = try c.query(
            """
            SELECT canvas.enqueue_canvas('{"chain": [
                {"group": [{"task": "canvas.noop"}], "on_error": {"task": "canvas.noop", "args": ["G"]}},
                {"task": "canvas.noop"},
                {"task": "canvas.fail", "args": ["boom"]}],
              "on_error": {"task": "canvas.noop", "args": ["E"]}}')
            """)[0].decode(Int64.self, 0)
        let worker = try c.query("SELECT canvas.register_worker('test', 1, '{default}', 1, 1, 100)")[0]
            .decode(Int64.self, 0)
        // Runs the canvas by hand: every job succeeds but canvas.fail, which fails for good.
        while true {
            let claimed = try c.query(
                "SELECT id, task, attempt FROM canvas.claim(\(worker), '{default}', 10) ORDER BY id")
            if claimed.isEmpty { break }
            let ids = try claimed.map { try $0.decode(Int64.self, 0) }
            let attempts = try claimed.map { try $0.decode(Int32.self, 2) }
            let outcomes = claimed.map { $0.text(1) == "canvas.fail" ? "fatal" : "succeeded" }
            let results = claimed.map { _ in PostgresJSON(text: "null") }
            let errors = claimed.map { $0.text(1) == "canvas.fail" ? "boom" : "" }
            let spawns = claimed.map { _ in PostgresJSON(text: "[]") }
            _ = try c.query(
                """
                SELECT * FROM canvas.finish(\(worker), \(ids), \(attempts), \(outcomes), \(results), \(errors), \(spawns))
                """)
        }
        let runs = try c.query(
            """
            SELECT count(*) FILTER (WHERE args->>1 = 'E'), count(*) FILTER (WHERE args->>1 = 'G')
            FROM canvas.jobs WHERE task = 'canvas.noop' AND jsonb_array_length(args) = 2
            """)[0]
        #expect(try runs.decode(Int.self, 0) == 1)
        #expect(try runs.decode(Int.self, 1) == 0)
        #expect(try c.query("SELECT state FROM canvas.chords WHERE id = \(root)")[0].text(0) == "failed")
    }
}

/// One run: the private server, the workers, the canvases and every fault and operator action taken,
/// so that the checker can tell a callback that should have run from one that should not.
final class FaultRun {
    let server: PrivateServer
    let configuration: ConnectionConfiguration
    var connection: Connection
    var generator: FaultCanvasGenerator
    var faults: SplitMix64
    let total: Int

    var canvases: [FaultNode] = []
    var rootIDs: [Int64] = []
    /// Leaf key → index of its canvas.
    var leafCanvas: [Int: Int] = [:]
    /// Jobs a direct canvas.cancel ended (their callbacks run, as for any failure).
    var cancelledJobs: Set<Int64> = []
    /// Canvases whose root a canvas.cancel ended (nothing inside reports).
    var cancelledCanvases: Set<Int> = []
    /// Leaf keys whose queued job a purge removed.
    var purgedKeys: Set<Int> = []
    /// Canvas index → operator retries issued inside it.
    var retries: [Int: Int] = [:]
    var workers: [WorkerProcess] = []
    var counts = (poolKills: 0, workerKills: 0, restarts: 0, purges: 0, severed: 0)
    var started = Date()
    var settleSeconds = 0.0
    var jobCount = 0
    var rootStates: [String: Int] = [:]
    var longestRoot = 0.0
    /// Canvases in which a job the model does not know of failed.
    var unmodelledFailures: Set<Int> = []
    var checked = (bodies: 0, callbacks: 0, callbackRuns: 0, links: 0)

    static let workerArguments = [
        "-c", "2", "--loglevel", "warning", "--heartbeat-interval", "0.5", "--rescue-after", "3",
        "--queues", "default,purgeable",
    ]
    /// How long the last canvases may take to end once faults stop.
    static let settleBound = 90.0

    /// Each worker's `--pool` (and options of its own), by its place in `workers`.
    let pools: [String]

    init(seed: UInt64, total: Int, pools: [String]) throws {
        self.pools = pools
        server = try PrivateServer()
        configuration = ConnectionConfiguration(conninfo: server.url)
        connection = try Connection.connect(configuration)
        try Migrator.bundled().migrate(connection)
        generator = FaultCanvasGenerator(seed: seed)
        faults = SplitMix64(state: seed ^ 0x5EED_FA17)
        self.total = total
    }

    // MARK: driving

    func drive() throws {
        workers = try pools.indices.map { try startWorker($0) }
        started = Date()
        let window = 200
        // Whole-worker kills and the server restart happen at fixed points of the run.
        let workerKillPoints = Set(stride(from: total / 3, to: total, by: 1_000))
        let restartPoint = total / 2
        var restarted = false
        while canvases.count < total {
            let pending = try pendingRoots()
            if pending < window {
                let before = canvases.count
                try enqueue(min(window - pending, 25, total - canvases.count))
                if workerKillPoints.contains(where: { $0 >= before && $0 < canvases.count }) { try killWorker() }
                if !restarted && restartPoint >= before && restartPoint < canvases.count {
                    try restartServer()
                    restarted = true
                }
            }
            try injectFaults()
            usleep(50_000)
        }
        // Faults go on for the tail too, for a short while, then the run must settle.
        let tailEnd = Date().addingTimeInterval(2)
        while Date() < tailEnd {
            try injectFaults()
            usleep(50_000)
        }
        let settleStart = Date()
        _ = try eventually(timeout: Self.settleBound, interval: 0.2) {
            try pendingRoots() == 0 && unfinishedJobs() == 0
        }
        settleSeconds = Date().timeIntervalSince(settleStart)
    }

    func startWorker(_ index: Int) throws -> WorkerProcess {
        try WorkerProcess(
            databaseURL: server.url,
            arguments: Self.workerArguments + ["--pool"] + pools[index].split(separator: " ").map(String.init))
    }

    func enqueue(_ n: Int) throws {
        let batch = (0..<n).map { _ in generator.canvas() }
        let texts = batch.map { PostgresJSON(text: $0.jsonText) }
        let rows = try db {
            try $0.query(
                "SELECT i, canvas.enqueue_canvas(c) FROM unnest(\(texts)::jsonb[]) WITH ORDINALITY u(c, i) ORDER BY i")
        }
        for (offset, node) in batch.enumerated() {
            let index = canvases.count
            canvases.append(node)
            rootIDs.append(try rows[offset].decode(Int64.self, 1))
            for key in node.leafKeys { leafCanvas[key] = index }
        }
    }

    func injectFaults() throws {
        if faults.chance(0.15) { killPoolProcess() }
        if faults.chance(0.04) { try severWorkerConnection() }
        if faults.chance(0.05), !rootIDs.isEmpty {
            let index = Int.random(in: max(0, rootIDs.count - 300)..<rootIDs.count, using: &faults)
            let answer = try db { try $0.query("SELECT canvas.cancel(\(rootIDs[index]))")[0].text(0) }
            if answer == "cancelled" { cancelledCanvases.insert(index) }
        }
        if faults.chance(0.08), let (id, _) = try pickLeafJob(states: ["scheduled", "queued", "running"]) {
            let answer = try db { try $0.query("SELECT canvas.cancel(\(id))")[0].text(0) }
            if answer == "cancelled" { cancelledJobs.insert(id) }
        }
        if faults.chance(0.08), let (id, key) = try pickLeafJob(states: ["failed"]) {
            let answer = try db { try $0.query("SELECT canvas.retry(\(id))")[0].text(0) }
            // "requeued", or "requeued; its chord N stays failed: why": a retry either way.
            if answer?.hasPrefix("requeued") == true, let index = leafCanvas[key] { retries[index, default: 0] += 1 }
        }
        if faults.chance(0.03) { try purge() }
    }

    /// A random leaf job in one of `states`, with its key.
    func pickLeafJob(states: [String]) throws -> (Int64, Int)? {
        let rows = try db {
            try $0.query(
                """
                SELECT id, (time_limit - \(FaultNode.leafBase))::bigint FROM canvas.jobs
                WHERE state = ANY (\(states)) AND time_limit >= \(FaultNode.leafBase) ORDER BY id DESC LIMIT 40
                """)
        }
        guard !rows.isEmpty else { return nil }
        let row = rows[Int.random(in: 0..<rows.count, using: &faults)]
        return (try row.decode(Int64.self, 0), try row.decode(Int.self, 1))
    }

    /// Purges the purgeable queue, learning exactly which leaves it removed: in one repeatable-read
    /// snapshot the waiting jobs are read, then purged; a concurrent change aborts both.
    func purge() throws {
        do {
            try connection.executeScript("BEGIN ISOLATION LEVEL REPEATABLE READ")
            let rows = try connection.query(
                """
                SELECT (time_limit - \(FaultNode.leafBase))::bigint FROM canvas.jobs
                WHERE queue = 'purgeable' AND state IN ('scheduled', 'queued') AND time_limit >= \(FaultNode.leafBase)
                """)
            let removed = try connection.query("SELECT canvas.purge('purgeable')")[0].decode(Int.self, 0)
            try connection.executeScript("COMMIT")
            let keys = try rows.map { try $0.decode(Int.self, 0) }
            #expect(removed == keys.count, "purge removed \(removed) jobs, the snapshot held \(keys.count)")
            purgedKeys.formUnion(keys)
            counts.purges += 1
        } catch let error as PostgresError where error.sqlState == "40001" || error.sqlState == "40P01" {
            try? connection.executeScript("ROLLBACK")
        }
    }

    /// A worker's own connection (a broker lane's or the maintenance thread's) is cut, as a
    /// network blip or an operator's pg_terminate_backend would: a claim's answer may be lost.
    func severWorkerConnection() throws {
        let pids = try db {
            try $0.query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgworker' AND backend_type = 'client backend'"
            ).map { try $0.decode(Int32.self, 0) }
        }
        guard !pids.isEmpty else { return }
        let pid = pids[Int.random(in: 0..<pids.count, using: &faults)]
        _ = try db { try $0.query("SELECT pg_terminate_backend(\(pid))") }
        counts.severed += 1
    }

    func killPoolProcess() {
        let pool = workers.flatMap(\.poolPIDs)
        guard !pool.isEmpty else { return }
        kill(pool[Int.random(in: 0..<pool.count, using: &faults)], SIGKILL)
        counts.poolKills += 1
    }

    /// A whole worker dies as its machine would: supervisor and pool processes at once. Another takes
    /// its place; its running jobs wait for rescue.
    func killWorker() throws {
        let index = Int.random(in: 0..<workers.count, using: &faults)
        let victim = workers[index]
        let pool = victim.poolPIDs
        victim.signal(SIGKILL)
        for pid in pool { kill(pid, SIGKILL) }
        _ = victim.waitForExit(timeout: 10)
        workers[index] = try startWorker(index)
        counts.workerKills += 1
    }

    func restartServer() throws {
        try server.control("stop")
        sleep(1)
        try server.control("start")
        connection = try Connection.connect(configuration)
        counts.restarts += 1
    }

    /// Runs a statement, reconnecting once if the connection broke (the server restart).
    func db<T>(_ body: (Connection) throws -> T) throws -> T {
        do {
            return try body(connection)
        } catch let error as PostgresError where error.isConnectionProblem {
            eventually(timeout: 30, interval: 0.2) {
                (try? Connection.connect(configuration)).map { connection = $0 } != nil
            }
            return try body(connection)
        }
    }

    func pendingRoots() throws -> Int {
        try db { try $0.query("SELECT count(*) FROM canvas.chords WHERE kind = 'root' AND state = 'pending'")[0] }
            .decode(Int.self, 0)
    }

    func unfinishedJobs() throws -> Int {
        try db { try $0.query("SELECT count(*) FROM canvas.jobs WHERE state IN ('scheduled', 'queued', 'running')")[0] }
            .decode(Int.self, 0)
    }

    // MARK: checking

    /// What happened to one leaf, as far as error callbacks are concerned.
    struct LeafRecord {
        var rows = 0
        var state: String?
        var id: Int64?
    }

    func check() throws -> [String] {
        var violations: [String] = []
        var shown: Set<Int> = []
        var shownText: [String] = []
        func canvasText(_ index: Int) -> String {
            if shown.insert(index).inserted {
                shownText.append("canvas #\(index) (root \(rootIDs[index])): \(canvases[index].jsonText)")
            }
            return "canvas #\(index)"
        }

        // Every root ended, and nothing is left queued or running, least of all on a dead worker.
        // (Success callbacks are canvases of their own, with roots of their own: they must end too.)
        var rootState: [Int64: String] = [:]
        let generated = Set(rootIDs)
        var pendingCallbacks = 0
        for row in try connection.query("SELECT id, state FROM canvas.chords WHERE kind = 'root'") {
            let id = try row.decode(Int64.self, 0)
            rootState[id] = row.text(1)
            if generated.contains(id) {
                rootStates[row.text(1) ?? "", default: 0] += 1
            } else if row.text(1) == "pending" {
                pendingCallbacks += 1
            }
        }
        if pendingCallbacks > 0 { violations.append("\(pendingCallbacks) callback canvases did not end") }
        let orphans = try connection.query(
            """
            SELECT count(*) FROM canvas.jobs j WHERE j.state = 'running'
              AND NOT EXISTS (SELECT 1 FROM canvas.workers w WHERE w.id = j.worker_id)
            """)[0].decode(Int.self, 0)
        if orphans > 0 { violations.append("\(orphans) jobs running without a live worker") }
        let unfinished = try unfinishedJobs()
        if unfinished > 0 {
            violations.append(
                "\(unfinished) jobs still scheduled, queued or running \(Self.settleBound) s after faults stopped")
        }
        jobCount = try connection.query("SELECT count(*) FROM canvas.jobs")[0].decode(Int.self, 0)
        longestRoot =
            try connection.query(
                "SELECT coalesce(max(extract(epoch FROM finished_at - created_at)), 0)::float8 FROM canvas.chords WHERE kind = 'root'"
            )[0].decode(Double.self, 0)

        var leaves: [Int: LeafRecord] = [:]
        for row in try connection.query(
            """
            SELECT (time_limit - \(FaultNode.leafBase))::bigint, state, id FROM canvas.jobs
            WHERE time_limit >= \(FaultNode.leafBase)
            """)
        {
            let key = try row.decode(Int.self, 0)
            leaves[key, default: LeafRecord()].rows += 1
            leaves[key]!.state = row.text(1)
            leaves[key]!.id = try row.decode(Int64.self, 2)
        }
        // A job the canvas adds itself (the identity body that reports a nested group's list) can
        // fail too, when its pool process was killed canvas.max_crashes() times. The model has no
        // leaf for it, so its canvas is judged like one an operator retried: bounds, not equalities.
        var rootIndex: [Int64: Int] = [:]
        for (index, id) in rootIDs.enumerated() { rootIndex[id] = index }
        for row in try connection.query(
            """
            WITH RECURSIVE up(id, slot) AS (
                SELECT c.id, (c.context->>'chord_id')::bigint FROM canvas.chords c
                WHERE c.id IN (SELECT chord_id FROM canvas.jobs
                               WHERE state = 'failed' AND time_limit IS NULL AND chord_id IS NOT NULL)
                UNION
                SELECT c.id, (c.context->>'chord_id')::bigint FROM canvas.chords c JOIN up ON c.id = up.slot
            )
            SELECT id FROM up WHERE slot IS NULL
            """)
        {
            if let index = rootIndex[try row.decode(Int64.self, 0)] {
                unmodelledFailures.insert(index)
            }
        }
        var errbackRuns: [Int: Int] = [:]
        for row in try connection.query(
            """
            SELECT substr(args->>1, 2)::integer, count(*) FROM canvas.jobs
            WHERE task = 'canvas.noop' AND jsonb_array_length(args) = 2 AND args->>1 ~ '^E[0-9]+$' GROUP BY 1
            """)
        {
            errbackRuns[try row.decode(Int.self, 0)] = try row.decode(Int.self, 1)
        }

        /// A leaf whose failure was reported (callbacks run, canvas failed): failed for good,
        /// cancelled on its own, or purged. A job cancelled with its whole canvas reports nothing.
        func reported(_ key: Int) -> Bool {
            if purgedKeys.contains(key) { return true }
            guard let leaf = leaves[key] else { return false }
            return leaf.state == "failed" || (leaf.state == "cancelled" && cancelledJobs.contains(leaf.id!))
        }

        // Bodies: the body's first task received [the header's results in order], checked by the
        // server's jsonb equality.
        var bodyKeys: [Int] = []
        var bodyArgs: [PostgresJSON] = []

        for (index, canvas) in canvases.enumerated() {
            let root = rootIDs[index]
            let state = rootState[root] ?? "missing"
            let retried = (retries[index] ?? 0) + (unmodelledFailures.contains(index) ? 1 : 0)
            if !["succeeded", "failed", "cancelled"].contains(state) {
                violations.append("root did not end (\(state)): \(canvasText(index))")
                continue
            }
            let anyReported = canvas.leafKeys.contains(where: reported)
            if retried == 0 {
                let expected =
                    cancelledCanvases.contains(index) ? "cancelled" : anyReported ? "failed" : "succeeded"
                if state != expected {
                    violations.append("root is \(state), expected \(expected): \(canvasText(index))")
                }
            }
            if state == "succeeded" {
                for key in canvas.leafKeys where leaves[key]?.rows != 1 || leaves[key]?.state != "succeeded" {
                    violations.append(
                        "leaf \(key) of a succeeded canvas: \(leaves[key]?.rows ?? 0) rows, \(leaves[key]?.state ?? "none"): \(canvasText(index))"
                    )
                }
            }
            for key in canvas.leafKeys where (leaves[key]?.rows ?? 0) > 1 {
                violations.append("leaf \(key) has \(leaves[key]!.rows) jobs: \(canvasText(index))")
            }
            // A chord's body's own callbacks also hear of its header's failures.
            var scope: [Int: [Int]] = [:]
            for node in canvas.allNodes {
                for marker in node.errbacks { scope[marker] = node.leafKeys }
            }
            for node in canvas.allNodes {
                if case .chord(let header, let body, _) = node {
                    for marker in body.errbacks { scope[marker] = node.leafKeys + header.flatMap(\.leafKeys) }
                }
            }
            for node in canvas.allNodes {
                for marker in node.errbacks {
                    let failedInside = scope[marker]!.contains(where: reported)
                    let runs = errbackRuns[marker] ?? 0
                    let ok =
                        retried == 0
                        ? runs == (failedInside ? 1 : 0) : runs <= 1 + retried && (!failedInside || runs >= 1)
                    if !ok {
                        violations.append(
                            "error callback E\(marker) ran \(runs) times (failure inside: \(failedInside), retries: \(retried)): \(canvasText(index))"
                        )
                    }
                }
                guard case .chord(let header, _, _) = node, let bodyKey = node.bodyKey else { continue }
                let bodyRuns = leaves[bodyKey]?.rows ?? 0
                if bodyRuns > 1 {
                    violations.append("chord body \(bodyKey) ran \(bodyRuns) times: \(canvasText(index))")
                }
                if retried == 0 && bodyRuns > 0 && header.flatMap(\.leafKeys).contains(where: reported) {
                    violations.append("chord body \(bodyKey) ran after its header failed: \(canvasText(index))")
                }
                if bodyRuns == 1 {
                    let results = header.map { $0.expectedResult ?? "\"a failing member\"" }
                    bodyKeys.append(bodyKey)
                    bodyArgs.append(PostgresJSON(text: "[[" + results.joined(separator: ",") + "]]"))
                }
            }
        }
        for row in try connection.query(
            """
            SELECT e.k, j.args::text, e.x::text FROM unnest(\(bodyKeys)::bigint[], \(bodyArgs)::jsonb[]) e(k, x)
            JOIN canvas.jobs j ON j.time_limit = \(FaultNode.leafBase) + e.k WHERE j.args <> e.x
            """)
        {
            let key = try row.decode(Int.self, 0)
            violations.append(
                "chord body \(key) got \(row.text(1) ?? ""), expected \(row.text(2) ?? ""): \(canvasText(leafCanvas[key]!))"
            )
        }
        // Success callbacks: one run for a leaf that succeeded, with its result first; none for
        // any other (a leaf's job succeeds at most once, whatever retries and rescues did).
        var linkRuns: [Int: Int] = [:]
        for row in try connection.query(
            """
            SELECT substr(args->>1, 2)::integer, count(*) FROM canvas.jobs
            WHERE task = 'canvas.noop' AND jsonb_array_length(args) = 2 AND args->>1 ~ '^L[0-9]+$' GROUP BY 1
            """)
        {
            linkRuns[try row.decode(Int.self, 0)] = try row.decode(Int.self, 1)
        }
        var linkKeys: [Int] = []
        var linkArgs: [PostgresJSON] = []
        for (index, canvas) in canvases.enumerated() {
            for key in canvas.leafKeys where FaultNode.hasLink(key) {
                let succeeded = leaves[key]?.state == "succeeded"
                let runs = linkRuns[key] ?? 0
                if runs != (succeeded ? 1 : 0) {
                    violations.append(
                        "success callback L\(key) ran \(runs) times (leaf \(leaves[key]?.state ?? "none")): \(canvasText(index))"
                    )
                }
                let leaf = canvas.allNodes.first {
                    if case .leaf(let k, _, _) = $0 { k == key } else { false }
                }
                if runs == 1, let expected = leaf?.expectedResult {
                    linkKeys.append(key)
                    linkArgs.append(PostgresJSON(text: "[\(expected), \"L\(key)\"]"))
                }
            }
        }
        for row in try connection.query(
            """
            SELECT e.k, j.args::text, e.x::text FROM unnest(\(linkKeys)::bigint[], \(linkArgs)::jsonb[]) e(k, x)
            JOIN canvas.jobs j ON j.task = 'canvas.noop' AND j.args->>1 = 'L' || e.k WHERE j.args <> e.x
            """)
        {
            let key = try row.decode(Int.self, 0)
            violations.append(
                "success callback L\(key) got \(row.text(1) ?? ""), expected \(row.text(2) ?? ""): \(canvasText(leafCanvas[key]!))"
            )
        }
        checked = (
            bodyKeys.count, canvases.reduce(0) { $0 + $1.allNodes.reduce(0) { $0 + $1.errbacks.count } },
            errbackRuns.values.reduce(0, +), linkRuns.values.reduce(0, +)
        )
        if !violations.isEmpty {
            print(
                (["fault test violations:"] + violations + ["canvases concerned:"] + shownText.prefix(10))
                    .joined(separator: "\n"))
        }
        return violations
    }

    func summary(violations: Int) -> String {
        let ends = ["succeeded", "failed", "cancelled"].map { "\(rootStates[$0, default: 0]) \($0)" }
        return """
            fault test: \(canvases.count) canvases (\(ends.joined(separator: ", "))), \(jobCount) jobs, \(String(format: "%.1f", Date().timeIntervalSince(started))) s \
            (settled \(String(format: "%.1f", settleSeconds)) s after faults stopped, longest canvas \(String(format: "%.1f", longestRoot)) s); \(counts.poolKills) pool processes \
            and \(counts.workerKills) workers killed, \(counts.severed) worker connections cut, \(counts.restarts) server restart, \(cancelledCanvases.count) canvases \
            and \(cancelledJobs.count) jobs cancelled, \(retries.values.reduce(0, +)) retries, \(counts.purges) purges \
            (\(purgedKeys.count) jobs); \(unmodelledFailures.count) canvases failed by their own jobs' crashes; \(checked.bodies) chord bodies and \(checked.callbacks) error callbacks \
            checked (\(checked.callbackRuns) callback runs), \(checked.links) success callback runs; \(violations) invariant violations
            """
    }
}
