import Foundation
import PGCanvas
import Postgres
import RollPDF

/// Benchmark driver: `canvas-bench enqueue N` (bulk enqueue from Swift) and
/// `canvas-bench latency K` (enqueue-to-start with an idle worker already running).
let arguments = CommandLine.arguments
guard arguments.count == 3, let n = Int(arguments[2]), n > 0 else {
    FileHandle.standardError.write(Data("usage: canvas-bench enqueue N | latency K | chord N | pdf N\n".utf8))
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
default:
    FileHandle.standardError.write(Data("usage: canvas-bench enqueue N | latency K | chord N | pdf N\n".utf8))
    exit(64)
}
