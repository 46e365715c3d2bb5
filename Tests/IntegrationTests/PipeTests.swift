import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing

/// The pipes between a real supervisor and its one pool process, under arguments and results
/// larger than a pipe holds.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class PipeTests {
    let database: TestDatabase
    let worker: WorkerProcess

    init() throws {
        database = try TestDatabase()
        worker = try WorkerProcess(
            databaseURL: database.url, arguments: ["-c", "1", "--poll-interval", "0.2", "--loglevel", "warning"])
    }
    deinit { database.drop() }

    /// `size` bytes of JSON-escaped hazards and plain text, different for each `i` (no NUL: jsonb
    /// refuses `\u0000`).
    func argument(_ i: Int, size: Int) -> String {
        let unit = "\(i)\t\n\u{1}\"\\é😀 "
        return String(String(repeating: unit, count: size / unit.utf8.count + 1).prefix(size))
    }

    /// Short jobs first, so the supervisor pipelines the most jobs a pool process may hold: that is
    /// when it wrote many large jobs in one blocking write while the process blocked writing results.
    func warmUp(_ c: Connection) throws {
        let ids = try Enqueue.jobs((0..<100).map { _ in JobRequest("canvas.noop") }, on: c)
        let done = try eventually(timeout: 30) {
            try c.query("SELECT count(*) FROM canvas.jobs WHERE id = ANY(\(ids)) AND state = 'succeeded'")[0]
                .decode(Int.self, 0) == ids.count
        }
        try #require(done, "\(worker.log.suffix(2000))")
    }

    /// The worker still takes work after the large canvas, and stops when asked.
    func expectHealthyAfterwards(_ c: Connection) throws {
        let plain = try Enqueue.job(JobRequest("canvas.add", [2, 2]), on: c)
        #expect(
            try eventually(timeout: 10) { try JobStatus.fetch(plain, on: c)?.result == .int(4) },
            "\(worker.log.suffix(2000))")
        worker.signal(SIGTERM)
        #expect(worker.waitForExit(timeout: 15) == 0, "\(worker.log.suffix(2000))")
    }

    @Test func sixtyFourJobsOf16KiBOnOnePoolProcessAllComeBackIntact() throws {
        let c = try database.connect()
        try warmUp(c)
        let args = (0..<64).map { argument($0, size: 16 << 10) }
        let started = Date()
        let status = try group(args.map { signature("canvas.identity", .string($0)) }).enqueue(on: c)
            .wait(on: c, timeout: 30)
        #expect(status.state == .succeeded, "\(status.error ?? "") \(worker.log.suffix(2000))")
        #expect(Date().timeIntervalSince(started) < 20)
        let results = try #require(status.result?.arrayValue)
        #expect(results.count == 64)
        #expect(results == args.map { JSONValue.string($0) })
        try expectHealthyAfterwards(c)
    }

    @Test func resultsOf1MiBComeBackIntact() throws {
        let c = try database.connect()
        try warmUp(c)
        let args = (0..<4).map { argument($0, size: 1 << 20) }
        let status = try group(args.map { signature("canvas.identity", .string($0)) }).enqueue(on: c)
            .wait(on: c, timeout: 60)
        #expect(status.state == .succeeded, "\(status.error ?? "") \(worker.log.suffix(2000))")
        let results = try #require(status.result?.arrayValue)
        #expect(results.count == 4)
        #expect(results == args.map { JSONValue.string($0) })
        try expectHealthyAfterwards(c)
    }
}
