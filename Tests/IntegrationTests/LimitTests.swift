import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// Rate limits, concurrency limits and paused queues (issue 11, items 5, 6 and 8): through SQL,
/// the command line and Swift, across several real workers, and under claims racing each other.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class LimitTests {
    let database: TestDatabase

    init() throws { database = try TestDatabase() }
    deinit { database.drop() }

    func voteradmin(_ arguments: [String]) throws -> CommandResult {
        try runCommand(Binaries.url("voteradmin"), arguments, environment: ["DATABASE_URL": database.url])
    }

    func count(_ sql: String, on c: Connection) throws -> Int {
        try c.query(Query(unsafeSQL: sql))[0].decode(Int.self, 0)
    }

    func registerWorker(_ c: Connection, queues: [String] = ["default"]) throws -> Int64 {
        try Broker.registerWorker(hostname: "test", pid: 1, queues: queues, concurrency: 1, on: c)
    }

    func startWorker(_ extra: [String] = []) throws -> WorkerProcess {
        // Polls often: a window that opens (or a place that frees) sends no NOTIFY.
        try WorkerProcess(
            databaseURL: database.url, arguments: ["-c", "4", "--poll-interval", "0.05", "--loglevel", "info"] + extra)
    }

    func stop(_ worker: WorkerProcess) {
        worker.signal(SIGTERM)
        _ = worker.waitForExit(timeout: 20)
    }

    // MARK: SQL and Swift

    @Test func aRateLimitedTaskAtTheHeadOfAQueueDoesNotHoldBackTheOthers() throws {
        let c = try database.connect()
        let w = try registerWorker(c)
        // An hour's window, so that the test cannot straddle two windows.
        try Limits.setRate(task: "canvas.identity", RateLimit(count: 5, per: .hour), on: c)
        _ = try Enqueue.jobs((0..<50).map { JobRequest("canvas.identity", [.int($0)]) }, on: c)
        let others = try Enqueue.jobs((0..<10).map { JobRequest("canvas.add", [.int($0), 1]) }, on: c)
        let first = try Broker.claim(worker: w, queues: ["default"], limit: 20, on: c)
        #expect(first.filter { $0.task == "canvas.identity" }.count == 5)
        #expect(Set(first.filter { $0.task == "canvas.add" }.map(\.id)) == Set(others))
        // The five are the first five: a limited task keeps its order.
        #expect(first.filter { $0.task == "canvas.identity" }.map(\.argsText).sorted() == (0..<5).map { "[\($0)]" })
        #expect(try Broker.claim(worker: w, queues: ["default"], limit: 20, on: c).isEmpty)
        let listing = try Limits.list(on: c)
        #expect(listing.rates.map(\.task) == ["canvas.identity"])
        #expect(listing.rates.map(\.rate) == [RateLimit(count: 5, per: .hour)])
        #expect(listing.rates.map(\.startedThisWindow) == [5])
        // Raising the limit lets more start in the same window; clearing it lets all start.
        try Limits.setRate(task: "canvas.identity", RateLimit(count: 7, per: .hour), on: c)
        #expect(try Broker.claim(worker: w, queues: ["default"], limit: 20, on: c).count == 2)
        #expect(try Limits.clearRate(task: "canvas.identity", on: c))
        #expect(try !Limits.clearRate(task: "canvas.identity", on: c))
        #expect(try Broker.claim(worker: w, queues: ["default"], limit: 100, on: c).count == 43)
    }

    /// The limited claim reads through jobs_queued_idx, like the plain one, even where the
    /// planner's statistics make a sequential scan look cheap (one task and one queue in them, a
    /// limit on that task; written as `task <> ALL (skipped)`, the claim read all 100,000 rows):
    /// counted around the calls, in their own transaction, rather than an EXPLAIN of a copy.
    @Test func aLimitedClaimReadsTheIndexNotTheTable() throws {
        let c = try database.connect()
        let w = try registerWorker(c)
        try c.executeScript(
            """
            INSERT INTO canvas.jobs (task, queue) SELECT 'canvas.noop', 'other' FROM generate_series(1, 100000);
            ANALYZE canvas.jobs;
            INSERT INTO canvas.jobs (task) SELECT 'canvas.noop' FROM generate_series(1, 30);
            """)
        try Limits.setRate(task: "canvas.noop", RateLimit(count: 25, per: .hour), on: c)
        try Limits.setConcurrency(.queue("default"), max: 1000, on: c)
        let (claimed, scans, read) = try c.withTransaction { tx in
            func stats() throws -> (Int, Int) {
                let row = try tx.query(
                    """
                    SELECT pg_stat_get_xact_numscans('canvas.jobs'::regclass),
                           pg_stat_get_xact_tuples_fetched('canvas.jobs'::regclass)
                    """)[0]
                return (try row.decode(Int.self, 0), try row.decode(Int.self, 1))
            }
            let before = try stats()
            var claimed = 0
            // More calls than PostgreSQL's five custom plans, so the cached plan is the one measured.
            for _ in 0..<8 { claimed += try Broker.claim(worker: w, queues: ["default"], limit: 10, on: tx).count }
            let after = try stats()
            return (claimed, after.0 - before.0, after.1 - before.1)
        }
        #expect(claimed == 25)
        #expect(scans == 0, "sequential scans of canvas.jobs: \(scans)")
        #expect(read < 2000, "rows fetched: \(read)")
    }

    @Test func concurrencyLimitsOfAQueueAndOfATaskCountRunningJobs() throws {
        let c = try database.connect()
        let w = try registerWorker(c, queues: ["pdf", "default"])
        try Limits.setConcurrency(.queue("pdf"), max: 3, on: c)
        try Limits.setConcurrency(.task("canvas.sleep"), max: 2, on: c)
        _ = try Enqueue.jobs((0..<10).map { _ in JobRequest("canvas.noop", options: JobOptions(queue: "pdf")) }, on: c)
        _ = try Enqueue.jobs((0..<10).map { _ in JobRequest("canvas.sleep", [0]) }, on: c)
        _ = try Enqueue.jobs((0..<10).map { _ in JobRequest("canvas.noop") }, on: c)
        let claimed = try Broker.claim(worker: w, queues: ["pdf", "default"], limit: 100, on: c)
        #expect(claimed.count == 3 + 2 + 10)
        #expect(try Broker.claim(worker: w, queues: ["pdf", "default"], limit: 100, on: c).isEmpty)
        // Finishing one of each frees one place each.
        let pdf = try c.query("SELECT min(id) FROM canvas.jobs WHERE queue = 'pdf' AND state = 'running'")[0]
            .decode(Int64.self, 0)
        let sleep = try #require(claimed.first { $0.task == "canvas.sleep" })
        _ = try Broker.finish(
            worker: w,
            [
                Outcome(jobID: pdf, attempt: 1, kind: .succeeded, resultText: "null"),
                Outcome(jobID: sleep.id, attempt: 1, kind: .succeeded, resultText: "null"),
            ].sorted { $0.jobID < $1.jobID },
            on: c)
        let next = try Broker.claim(worker: w, queues: ["pdf", "default"], limit: 100, on: c)
        #expect(next.count == 2)
        #expect(Set(next.map(\.task)) == ["canvas.noop", "canvas.sleep"])
        let rows = try Limits.list(on: c).concurrency
        #expect(rows.map(\.running) == [3, 2])
        #expect(try Limits.clearConcurrency(.queue("pdf"), on: c))
        #expect(try Broker.claim(worker: w, queues: ["pdf"], limit: 100, on: c).count == 6)
    }

    @Test func pausedQueuesClaimNothingAndOthersGoOn() throws {
        let c = try database.connect()
        let w = try registerWorker(c, queues: ["a", "b"])
        _ = try Enqueue.jobs((0..<5).map { _ in JobRequest("canvas.noop", options: JobOptions(queue: "a")) }, on: c)
        _ = try Enqueue.jobs((0..<5).map { _ in JobRequest("canvas.noop", options: JobOptions(queue: "b")) }, on: c)
        #expect(try Limits.pause(queue: "a", on: c))
        #expect(try !Limits.pause(queue: "a", on: c))
        let claimed = try Broker.claim(worker: w, queues: ["a", "b"], limit: 100, on: c)
        #expect(claimed.count == 5)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE queue = 'a' AND state = 'queued'", on: c) == 5)
        #expect(try Limits.resume(queue: "a", on: c))
        #expect(try !Limits.resume(queue: "a", on: c))
        #expect(try Broker.claim(worker: w, queues: ["a", "b"], limit: 100, on: c).count == 5)
    }

    @Test func sqlAndSwiftRefuseTheSameInputWithTheSameWords() throws {
        let c = try database.connect()
        for rate in ["100/x", "-1/s", "0/s", "1000000001/s", "1.5/s", "/s", "100", "100/S", " 1/s", "1/s/s", ""] {
            let swift = (try? RateLimit.parse(rate)) == nil ? (catching { _ = try RateLimit.parse(rate) }) : nil
            var sqlMessage: String?
            do { _ = try c.query("SELECT canvas.set_rate_limit('t', \(rate))") } catch let e as PostgresError {
                #expect(e.sqlState == "22023")
                sqlMessage = e.message
            }
            #expect(
                swift != nil && swift == sqlMessage, "\(rate): \(swift ?? "accepted") vs \(sqlMessage ?? "accepted")")
        }
        for rate in ["1/s", "100/m", "1000000000/h"] {
            #expect(try RateLimit.parse(rate).description == rate)
            _ = try c.query("SELECT canvas.set_rate_limit('t', \(rate))")
        }
        for n in [0, -1, 1_000_000_001] {
            #expect(catching { try Limits.setConcurrency(.queue("q"), max: n, on: c) } == Limits.concurrencyMessage)
            #expect(
                catching { _ = try c.query("SELECT canvas.set_concurrency_limit('queue', 'q', \(Int64(n))::integer)") }
                    == Limits.concurrencyMessage)
        }
        let badName = "line\nbreak"
        #expect(catching { try Limits.pause(queue: badName, on: c) } == "queue: " + JobRules.Message.queueName)
        #expect(
            catching { _ = try c.query("SELECT canvas.pause_queue(\(badName))") } == "queue: "
                + JobRules.Message.queueName)
        #expect(
            catching { _ = try c.query("SELECT canvas.set_concurrency_limit('worker', 'q', 1)") }
                == #"scope: expected queue or task, not "worker""#)
        #expect(try count("SELECT count(*) FROM canvas.paused_queues", on: c) == 0)
    }

    func catching(_ body: () throws -> Void) -> String? {
        do { try body() } catch let e as CanvasError { return e.description } catch let e as PostgresError {
            return e.message
        } catch { return "\(error)" }
        return nil
    }

    /// Many claims at once, each on its own connection: a limit is never exceeded, and nothing
    /// unlimited is left behind. Seeded; a failure prints its seed.
    @Test func racingClaimsNeverExceedALimit() throws {
        let seed =
            UInt64(ProcessInfo.processInfo.environment["PGCANVAS_LIMIT_SEED"] ?? "") ?? UInt64.random(in: 1...1_000_000)
        var random = SplitMix64(state: seed)
        let setup = try database.connect()
        for round in 0..<4 {
            try setup.executeScript(
                """
                TRUNCATE canvas.jobs; DELETE FROM canvas.rate_limits; DELETE FROM canvas.concurrency_limits;
                """)
            let rateMax = Int.random(in: 1...12, using: &random)
            let taskMax = Int.random(in: 1...12, using: &random)
            let queueMax = Int.random(in: 1...12, using: &random)
            try Limits.setRate(task: "rated", RateLimit(count: rateMax, per: .hour), on: setup)
            try Limits.setConcurrency(.task("capped"), max: taskMax, on: setup)
            try Limits.setConcurrency(.queue("q2"), max: queueMax, on: setup)
            var requests: [JobRequest] = []
            for _ in 0..<20 { requests.append(JobRequest("rated")) }
            for _ in 0..<20 { requests.append(JobRequest("capped")) }
            for _ in 0..<20 { requests.append(JobRequest("free")) }
            for _ in 0..<20 { requests.append(JobRequest("free", options: JobOptions(queue: "q2"))) }
            requests.shuffle(using: &random)
            _ = try Enqueue.jobs(requests, on: setup)
            let threads = Int.random(in: 2...6, using: &random)
            let batches = (0..<threads).map { _ in Int.random(in: 1...30, using: &random) }
            let errors = Counter()
            let done = Counter()
            let go = Counter()
            for t in 0..<threads {
                let url = database
                Thread {
                    do {
                        let c = try url.connect()
                        let w = try Broker.registerWorker(
                            hostname: "race", pid: Int32(t), queues: ["default", "q2"], concurrency: 1, on: c)
                        while go.value == 0 { usleep(100) }
                        for _ in 0..<3 {
                            _ = try Broker.claim(worker: w, queues: ["default", "q2"], limit: batches[t], on: c)
                        }
                    } catch {
                        errors.add()
                    }
                    done.add()
                }.start()
            }
            go.add()
            #expect(eventually(timeout: 30) { done.value == threads })
            // One more claim with room for everything: whatever the race left behind that a limit allows.
            let last = try registerWorker(setup, queues: ["default", "q2"])
            _ = try Broker.claim(worker: last, queues: ["default", "q2"], limit: 1000, on: setup)
            let running = { (task: String, queue: String) in
                try self.count(
                    "SELECT count(*) FROM canvas.jobs WHERE state = 'running' AND task = '\(task)' AND queue = '\(queue)'",
                    on: setup)
            }
            let context = "seed \(seed), round \(round): limits \(rateMax)/h, \(taskMax) running, \(queueMax) in q2"
            #expect(errors.value == 0, "\(context)")
            #expect(try running("rated", "default") == rateMax, "\(context)")
            #expect(try running("capped", "default") == taskMax, "\(context)")
            #expect(try running("free", "q2") == queueMax, "\(context)")
            #expect(try running("free", "default") == 20, "\(context)")
            #expect(try count("SELECT started FROM canvas.rate_limits", on: setup) == rateMax, "\(context)")
        }
    }

    // MARK: Real workers

    /// 20/s across two workers: no second window holds more than 20 starts, the limited task runs
    /// on both workers, and the unlimited task queued behind it finishes first.
    @Test func aRateLimitHoldsAcrossTwoWorkersWithoutHoldingBackOtherTasks() throws {
        let c = try database.connect()
        #expect(try voteradmin(["limit", "set", "canvas.identity", "20/s"]).status == 0)
        _ = try Enqueue.jobs((0..<120).map { JobRequest("canvas.identity", [.int($0)]) }, on: c)
        _ = try Enqueue.jobs((0..<200).map { JobRequest("canvas.add", [.int($0), 1]) }, on: c)
        let workers = [try startWorker(), try startWorker()]
        defer { workers.forEach(stop) }
        let othersDone = try eventually(timeout: 15) {
            try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.add' AND state = 'succeeded'", on: c)
                == 200
        }
        #expect(othersDone, "\(workers[0].log.suffix(2000))")
        #expect(
            try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.identity' AND state = 'succeeded'", on: c)
                < 100)
        let allDone = try eventually(timeout: 30) {
            try count("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.identity' AND state = 'succeeded'", on: c)
                == 120
        }
        #expect(allDone)
        let perSecond = try c.query(
            """
            SELECT floor(extract(epoch FROM started_at))::bigint AS w, count(*) FROM canvas.jobs
            WHERE task = 'canvas.identity' GROUP BY 1 ORDER BY 1
            """
        ).map { try $0.decode(Int.self, 1) }
        #expect(perSecond.allSatisfy { $0 <= 20 }, "\(perSecond)")
        // Held at the limit, not below it: the windows between the first and the last (which
        // the test's start and end cut short) start within 5% of 20 jobs each, on average.
        #expect(perSecond.count <= 8, "\(perSecond)")
        let inner = perSecond.dropFirst().dropLast()
        #expect(!inner.isEmpty && Double(inner.reduce(0, +)) >= 0.95 * 20 * Double(inner.count), "\(perSecond)")
        #expect(
            try count("SELECT count(DISTINCT worker_id) FROM canvas.jobs WHERE task = 'canvas.identity'", on: c) == 2)
        #expect(try count("SELECT max(attempt) FROM canvas.jobs", on: c) == 1)
    }

    /// Samples the running count from outside while two workers drain the queue: the limit holds
    /// in every snapshot, is reached, and every job finishes.
    func drainUnderConcurrencyLimit(limit: [String], jobs: [JobRequest], counted: String, max: Int) throws {
        let c = try database.connect()
        let set = try voteradmin(["limit", "set-concurrency"] + limit + [String(max)])
        #expect(set.status == 0, "\(set.stderr)")
        _ = try Enqueue.jobs(jobs, on: c)
        let workers = [try startWorker(["--queues", "default,pdf"]), try startWorker(["--queues", "default,pdf"])]
        defer { workers.forEach(stop) }
        var highest = 0
        let finished = try eventually(timeout: 60, interval: 0.005) {
            highest = Swift.max(
                highest, try count("SELECT count(*) FROM canvas.jobs WHERE state = 'running' AND \(counted)", on: c))
            return try count("SELECT count(*) FROM canvas.jobs WHERE state = 'succeeded'", on: c) == jobs.count
        }
        #expect(finished, "\(workers[0].log.suffix(2000))")
        #expect(highest <= max && highest == max, "highest \(highest), limit \(max)")
        // From the jobs' own times as well (started_at is the claim's transaction time, and the
        // claim counts after its lock, so its start can precede the finish it saw by a few ms).
        let overlap = try count(
            """
            SELECT max((SELECT count(*) FROM canvas.jobs o WHERE \(counted.replacingOccurrences(of: "task", with: "o.task").replacingOccurrences(of: "queue", with: "o.queue"))
                        AND o.started_at <= j.started_at AND o.finished_at > j.started_at + interval '20 milliseconds'))
            FROM canvas.jobs j WHERE \(counted.replacingOccurrences(of: "task", with: "j.task").replacingOccurrences(of: "queue", with: "j.queue"))
            """, on: c)
        #expect(overlap <= max, "overlap \(overlap)")
        #expect(try count("SELECT count(DISTINCT worker_id) FROM canvas.jobs WHERE \(counted)", on: c) == 2)
    }

    @Test func aQueueConcurrencyLimitHoldsAcrossTwoWorkers() throws {
        try drainUnderConcurrencyLimit(
            limit: ["--queue", "pdf"],
            jobs: (0..<40).map { _ in JobRequest("canvas.sleep", [0.05], options: JobOptions(queue: "pdf")) }
                + (0..<40).map { JobRequest("canvas.add", [.int($0), 1]) },
            counted: "queue = 'pdf'", max: 3)
    }

    @Test func aTaskConcurrencyLimitHoldsAcrossTwoWorkersAndStarvesNothing() throws {
        var jobs: [JobRequest] = []
        for i in 0..<40 {
            jobs.append(JobRequest("canvas.sleep", [0.05]))
            jobs.append(JobRequest("canvas.add", [.int(i), 1]))
        }
        try drainUnderConcurrencyLimit(
            limit: ["--task", "canvas.sleep"], jobs: jobs, counted: "task = 'canvas.sleep'", max: 2)
    }

    @Test func aPausedQueueStaysPausedThroughAWorkerRestartAndDrainsOnResume() throws {
        let c = try database.connect()
        #expect(try voteradmin(["queue", "pause", "default"]).stdout == "Paused default\n")
        let jobs = try Enqueue.jobs((0..<20).map { JobRequest("canvas.add", [.int($0), 1]) }, on: c)
        let other = try Enqueue.job(JobRequest("canvas.add", [1, 1], options: JobOptions(queue: "other")), on: c)
        var worker = try startWorker(["--queues", "default,other"])
        #expect(try eventually(timeout: 10) { try JobStatus.fetch(other, on: c)?.state == .succeeded })
        usleep(1_000_000)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE queue = 'default' AND state = 'queued'", on: c) == 20)
        let status = try voteradmin(["status"])
        #expect(
            status.stdout.split(separator: "\n").contains { $0.hasPrefix("default ") && $0.hasSuffix("PAUSED") },
            "\(status.stdout)")
        #expect(status.stdout.contains("paused       queue default since"))
        stop(worker)
        worker = try startWorker(["--queues", "default,other"])
        defer { stop(worker) }
        usleep(1_500_000)
        #expect(try count("SELECT count(*) FROM canvas.jobs WHERE queue = 'default' AND state = 'queued'", on: c) == 20)
        #expect(try count("SELECT coalesce(max(attempt), 0) FROM canvas.jobs WHERE queue = 'default'", on: c) == 0)
        #expect(try voteradmin(["queue", "resume", "default"]).stdout == "Resumed default\n")
        let drained = try eventually(timeout: 10) {
            try jobs.allSatisfy { try JobStatus.fetch($0, on: c)?.state == .succeeded }
        }
        #expect(drained, "\(worker.log.suffix(2000))")
        #expect(try voteradmin(["queue", "resume", "default"]).stdout == "default was not paused\n")
    }

    // MARK: Command line

    @Test func theCommandsSayWhatTheyDidAndRefuseBadInputInOneLine() throws {
        let bad: [[String]] = [
            ["limit", "set", "t", "100/x"], ["limit", "set", "t", "-1/s"], ["limit", "set", "t", "0/s"],
            ["limit", "set", "t"], ["limit", "set", "t", "1/s", "2/s"], ["limit", "set", "bad\u{1}name", "1/s"],
            ["limit", "set-concurrency", "--queue", "pdf", "0"], ["limit", "set-concurrency", "--queue", "pdf", "-1"],
            ["limit", "set-concurrency", "--task", "t", "many"], ["limit", "set-concurrency", "pdf", "4"],
            ["limit", "set-concurrency", "--queue", "a", "--task", "b", "4"],
            ["limit", "set-concurrency", "--queue", "", "4"], ["limit", "set-concurrency", "--queue", "a\tb", "4"],
            ["limit", "clear-concurrency", "pdf"], ["queue", "pause", ""], ["queue", "pause", "a\nb"],
        ]
        for arguments in bad {
            let result = try voteradmin(arguments)
            #expect(result.status == 64, "\(arguments): \(result.status) \(result.stderr)")
            #expect(result.stderrLines.count == 1, "\(arguments): \(result.stderr)")
            #expect(result.stdout.isEmpty, "\(arguments)")
        }
        #expect(
            try voteradmin(["limit", "set", "t", "100/x"]).stderrLines
                == [
                    #"voteradmin: error: rate: expected N/s, N/m or N/h with N from 1 to 1000000000, not "100/x" (see 'voteradmin --help')"#
                ])
        let c = try database.connect()
        #expect(
            try count(
                "SELECT (SELECT count(*) FROM canvas.rate_limits) + (SELECT count(*) FROM canvas.concurrency_limits) + (SELECT count(*) FROM canvas.paused_queues)",
                on: c) == 0)

        #expect(try voteradmin(["limit", "list"]).stdout == "(no limits, no paused queues)\n")
        #expect(try voteradmin(["limit", "set", "render", "100/m"]).stdout == "Rate limit of render: 100/m\n")
        #expect(
            try voteradmin(["limit", "set-concurrency", "--queue", "pdf", "4"]).stdout
                == "Concurrency limit of queue pdf: 4\n")
        #expect(
            try voteradmin(["limit", "set-concurrency", "--task", "render", "2"]).stdout
                == "Concurrency limit of task render: 2\n")
        let list = try voteradmin(["limit", "list"]).stdout
        #expect(
            list == """
                  rate         task render: 100/m (0 started this window)
                  concurrency  queue pdf: 4 (0 running)
                  concurrency  task render: 2 (0 running)

                """, "\(list)")
        #expect(try voteradmin(["status"]).stdout.contains("  rate         task render: 100/m"))
        #expect(try voteradmin(["limit", "clear", "render"]).stdout == "Cleared the rate limit of render\n")
        let again = try voteradmin(["limit", "clear", "render"])
        #expect(again.status == 1)
        #expect(again.stderrLines == ["voteradmin: error: no rate limit on task 'render'"])
        #expect(
            try voteradmin(["limit", "clear-concurrency", "--queue", "pdf"]).stdout
                == "Cleared the concurrency limit of queue pdf\n")
        #expect(try voteradmin(["limit", "clear-concurrency", "--task", "render"]).status == 0)
        #expect(try voteradmin(["limit", "clear-concurrency", "--task", "render"]).status == 1)
    }
}
