import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// Unique jobs: a key stands for at most one waiting or running job (and, with unique_for, for
/// the last one enqueued within that window), whichever door the duplicates come through and
/// however many come at once.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"))
final class UniqueJobTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func jobsWithKey(_ key: String, on c: Connection) throws -> [Int64] {
        try c.query("SELECT id FROM canvas.jobs WHERE unique_key = \(key) ORDER BY id").map {
            try $0.decode(Int64.self, 0)
        }
    }

    /// One way in, picked by the seeded generator: canvas.enqueue, a canvas of one signature, the
    /// Swift bulk path (a plain INSERT, deduplicated by the trigger) or a plain INSERT from psql.
    /// - Returns: the id the door gave back, or nil for a plain INSERT, which gives none.
    static func enqueue(key: String, door: Int, on c: Connection) throws -> Int64? {
        switch door {
        case 0:
            return try c.query(
                "SELECT canvas.enqueue('canvas.noop', options => jsonb_build_object('unique_key', \(key)::text))"
            )[0].decode(Int64.self, 0)
        case 1:
            let root = try Canvas.enqueue(
                json: ["task": "canvas.noop", "options": ["unique_key": .string(key)]], on: c
            ).id
            // A new canvas's root, or the job a duplicate stands for: either way it names the job.
            let rows = try c.query("SELECT id FROM canvas.jobs WHERE id = \(root) OR chord_id = \(root)")
            return try rows.first?.decode(Int64.self, 0)
        case 2:
            return try Enqueue.job(JobRequest("canvas.noop", options: JobOptions(uniqueKey: key)), on: c)
        default:
            try c.execute("INSERT INTO canvas.jobs (task, unique_key) VALUES ('canvas.noop', \(key))")
            return nil
        }
    }

    @Test(arguments: [UInt64(11), 12, 13])
    func concurrentEnqueuesOfOneKeyMakeOneJob(seed: UInt64) throws {
        let keys = ["alpha", "beta", "gamma"]
        let threads = 6
        let perThread = 30
        let answers = Answers()
        let done = Counter()
        for t in 0..<threads {
            let c = try database.connect()
            Thread {
                var random = SplitMix64(state: seed &* 1000 &+ UInt64(t))
                do {
                    for _ in 0..<perThread {
                        let key = keys[Int(random.next() % UInt64(keys.count))]
                        let id = try Self.enqueue(key: key, door: Int(random.next() % 4), on: c)
                        answers.add(key, id)
                    }
                } catch {
                    answers.fail("\(error)")
                }
                done.add()
            }.start()
        }
        #expect(eventually(timeout: 120) { done.value == threads })
        #expect(answers.failures.isEmpty, "\(answers.failures.prefix(3))")
        let c = try database.connect()
        for key in keys {
            let jobs = try jobsWithKey(key, on: c)
            #expect(jobs.count == 1, "key \(key): \(jobs)")
            // Every door that answered named that one job.
            #expect(answers.ids(key).isSubset(of: Set(jobs)), "key \(key): \(answers.ids(key))")
        }
    }

    @Test func aKeyIsFreeOnceItsJobEndsUnlessItsWindowSaysOtherwise() throws {
        let c = try database.connect()
        let me = try Broker.registerWorker(
            hostname: "test", pid: 1, queues: ["default"], concurrency: 1, rescueAfter: 15, on: c)
        func runAll() throws {
            for job in try Broker.claim(worker: me, queues: ["default"], limit: 10, on: c) {
                _ = try Broker.finish(
                    worker: me, [Outcome(jobID: job.id, attempt: job.attempt, kind: .succeeded, resultText: "null")],
                    on: c)
            }
        }
        let first = try Enqueue.job(JobRequest("canvas.noop", options: JobOptions(uniqueKey: "nightly")), on: c)
        #expect(try Enqueue.job(JobRequest("canvas.noop", options: JobOptions(uniqueKey: "nightly")), on: c) == first)
        try runAll()
        let second = try Enqueue.job(JobRequest("canvas.noop", options: JobOptions(uniqueKey: "nightly")), on: c)
        #expect(second != first)
        try runAll()
        // Within a window, the last job stands for the key even after it ended.
        let windowed = JobOptions(uniqueKey: "nightly", uniqueFor: 3600)
        #expect(try Enqueue.job(JobRequest("canvas.noop", options: windowed), on: c) == second)
        try c.execute(
            "UPDATE canvas.jobs SET created_at = now() - interval '2 hours' WHERE id IN (\(first), \(second))")
        let third = try Enqueue.job(JobRequest("canvas.noop", options: windowed), on: c)
        #expect(third > second)

        // Retrying an old job of the key while another waits would make two: refused, by name.
        try c.execute("UPDATE canvas.jobs SET state = 'failed', finished_at = now() WHERE id = \(first)")
        let refused = try #require(throws: PostgresError.self) { try c.query("SELECT canvas.retry(\(first))") }
        #expect(refused.message.contains("unique_key \"nightly\", which stands for job \(third) now"))
        #expect(try jobsWithKey("nightly", on: c).count == 3)

        // A window needs READ COMMITTED: an older snapshot could not see the last job of the key.
        try c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        let isolated = try #require(throws: PostgresError.self) {
            try Enqueue.job(JobRequest("canvas.noop", options: windowed), on: c)
        }
        try c.execute("ROLLBACK")
        #expect(
            isolated.message == "options.unique_for: needs a READ COMMITTED transaction (this one is repeatable read)")

        // Inside a canvas a key is refused: a duplicate would leave the chord waiting forever.
        let nested = try #require(throws: CanvasError.self) {
            try group([signature("canvas.noop", options: SignatureOptions(uniqueKey: "k"))]).enqueue(on: c)
        }
        #expect(
            nested.description
                == "group[0].options.unique_key: only for a signature enqueued on its own, not inside a canvas")
    }
}

/// What the enqueueing threads were told, per key.
final class Answers: @unchecked Sendable {
    // Guarded by `lock`.
    private var byKey: [String: Set<Int64>] = [:]
    private var errors: [String] = []
    private let lock = NSLock()

    func add(_ key: String, _ id: Int64?) {
        guard let id else { return }
        lock.lock()
        byKey[key, default: []].insert(id)
        lock.unlock()
    }
    func fail(_ message: String) {
        lock.lock()
        errors.append(message)
        lock.unlock()
    }
    func ids(_ key: String) -> Set<Int64> {
        lock.lock()
        defer { lock.unlock() }
        return byKey[key, default: []]
    }
    var failures: [String] {
        lock.lock()
        defer { lock.unlock() }
        return errors
    }
}
