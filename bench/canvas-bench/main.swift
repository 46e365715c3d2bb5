import Foundation
import PGCanvas
import Postgres
import RollPDF

/// Benchmark driver: `canvas-bench enqueue N` (bulk enqueue from Swift),
/// `canvas-bench latency K` (enqueue-to-start with an idle worker already running),
/// `canvas-bench chord N`, `canvas-bench pdf N`, and `canvas-bench rounds N [BATCH [chord]]`: the
/// broker protocol alone, N no-op jobs finished and claimed BATCH at a time by one connection, as
/// a worker's broker thread does, with PostgreSQL's CPU per round. It empties canvas.jobs.
/// `canvas-bench json N`: the worker's JSON parser alone, on a chord body's arguments as the
/// database stores them (N results: nulls, then numbers, then strings).
let usage = "usage: canvas-bench enqueue N | latency K | chord N | pdf N | json N | rounds N [BATCH [chord]]\n"
let arguments = CommandLine.arguments
// Only `rounds` takes more than its count.
guard arguments.count == 3 || (arguments.count <= 5 && arguments[1] == "rounds"), let n = Int(arguments[2]), n > 0
else {
    FileHandle.standardError.write(Data(usage.utf8))
    exit(64)
}
if arguments[1] == "pdf" {
    // The PDF writer alone, on this one thread: n lists of 500 voters (13 pages each).
    let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("pdf-bench-\(getpid())")
    defer { try? FileManager.default.removeItem(at: directory) }
    let names = (0..<500).map { "Voter Name Number \($0) Nguyễn" }
    let started = Date()
    var pages = 0
    for i in 0..<n {
        pages += try StationListRenderer.write(
            StationListDocument(
                centerID: 10_000 + i % 90_000, centerName: "Benchmark Elementary School", stationID: 1,
                voterNames: names),
            to: directory)
    }
    let seconds = Date().timeIntervalSince(started)
    print(
        String(
            format: "pdf writer, one thread: %d lists, %d pages in %.2f s = %.0f pages/s", n, pages, seconds,
            Double(pages) / seconds))
    exit(0)
}
if arguments[1] == "json" {
    // As jsonb prints them: "[[null, null, …]]" is what a body of N no-op members is handed.
    let kinds: [(String, (Int) -> String)] = [
        ("nulls", { _ in "null" }), ("integers", { String($0 * 7919) }), ("strings", { "\"station \($0) Nguyễn\"" }),
    ]
    for (kind, element) in kinds {
        let text = "[[" + (0..<n).map(element).joined(separator: ", ") + "]]"
        var best = Double.infinity
        for _ in 0..<5 {
            let started = DispatchTime.now().uptimeNanoseconds
            _ = try JSONValue(parsingStored: text)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
        }
        print(
            String(
                format: "json parse, %d %@: %.2f ms (best of 5), %.0f MB/s", n, kind, best * 1000,
                Double(text.utf8.count) / best / 1e6))
    }
    exit(0)
}
let connection = try Connection.connect(ConnectionConfiguration.resolve(databaseURL: nil))

switch arguments[1] {
case "enqueue":
    let requests = (0..<n).map { _ in JobRequest("canvas.noop") }
    let started = Date()
    _ = try Enqueue.jobs(requests, on: connection)
    let seconds = Date().timeIntervalSince(started)
    print(
        String(
            format: "swift bulk enqueue: %d jobs in %.3f s = %.0f jobs/s (one statement)", n, seconds,
            Double(n) / seconds))
case "latency":
    var samples: [Double] = []
    for _ in 0..<n {
        let id = try Enqueue.job(JobRequest("canvas.noop"), on: connection)
        while true {
            let row = try connection.query(
                "SELECT extract(epoch FROM started_at - created_at)::float8 FROM canvas.jobs WHERE id = \(id) AND started_at IS NOT NULL"
            )
            if let first = row.first {
                samples.append(try first.decode(Double.self, 0))
                break
            }
            usleep(500)
        }
        usleep(20_000)
    }
    samples.sort()
    func pct(_ p: Double) -> Double { samples[min(samples.count - 1, Int(Double(samples.count) * p))] * 1000 }
    print(
        String(
            format: "enqueue-to-start latency over %d jobs: p50 %.2f ms, p99 %.2f ms, max %.2f ms", n, pct(0.5),
            pct(0.99), samples.last! * 1000))
case "chord":
    // A chord of N canvas.noop members with a canvas.noop body; a worker must be running.
    let header = (0..<n).map { _ in signature("canvas.noop") }
    let started = Date()
    let handle = try chord(header, body: signature("canvas.noop")).enqueue(on: connection)
    let enqueued = Date().timeIntervalSince(started)
    let status = try handle.wait(on: connection, timeout: 600)
    let total = Date().timeIntervalSince(started)
    print(
        String(
            format: "chord of %d: enqueue %.3f s, body %@ %.3f s after enqueue began (%.0f members/s)", n, enqueued,
            status.state.rawValue, total, Double(n) / total))
case "rounds":
    let batch = arguments.count > 3 ? Int(arguments[3]) ?? 0 : 3
    let asChord = arguments.count > 4 && arguments[4] == "chord"
    guard batch > 0, arguments.count < 5 || asChord else {
        FileHandle.standardError.write(Data(usage.utf8))
        exit(64)
    }
    try connection.execute("TRUNCATE canvas.jobs, canvas.chords")
    if asChord {
        _ = try chord((0..<n).map { _ in signature("canvas.noop") }, body: signature("canvas.noop")).enqueue(
            on: connection)
    } else {
        _ = try Enqueue.jobs((0..<n).map { _ in JobRequest("canvas.noop") }, on: connection)
    }
    let worker = try Broker.registerWorker(
        hostname: "canvas-bench", pid: getpid(), queues: ["default"], concurrency: batch, on: connection)
    defer { _ = try? connection.query("SELECT canvas.deregister_worker(\(worker))") }
    // PostgreSQL's CPU for this connection, when the server runs on this machine.
    let backend = try connection.query("SELECT pg_backend_pid()")[0].decode(Int32.self, 0)
    func serverCPU() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(backend)/stat", encoding: .utf8) else { return nil }
        let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
    let cpuBefore = serverCPU()
    let started = Date()
    var held: [ClaimedJob] = []
    var rounds = 0
    var finished = 0
    repeat {
        let outcomes = held.map { Outcome(jobID: $0.id, attempt: $0.attempt, kind: .succeeded, resultText: "null") }
        let round = try Broker.finishAndClaim(
            worker: worker, outcomes, queues: ["default"], limit: batch, on: connection)
        finished += round.recorded.count
        held = round.claimed
        rounds += 1
    } while !held.isEmpty
    let seconds = Date().timeIntervalSince(started)
    let cpu = cpuBefore.flatMap { before in serverCPU().map { $0 - before } }
    print(
        String(
            format: "rounds: %d %@ finished %d at a time in %d rounds, %.2f s: %.3f ms a round, %@", finished,
            asChord ? "jobs of a chord (its members and body)" : "plain jobs", batch, rounds, seconds,
            seconds * 1000 / Double(rounds),
            cpu.map { String(format: "PostgreSQL CPU %.3f ms a round", $0 * 1000 / Double(rounds)) }
                ?? "PostgreSQL CPU not readable here"))
default:
    FileHandle.standardError.write(Data(usage.utf8))
    exit(64)
}
