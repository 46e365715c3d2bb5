import Canvas
import CommandSupport
import Foundation
import Postgres

/// Shows how far a chord or group has got while waiting: members done of total, failures,
/// elapsed time and rate; a bar on a terminal, plain lines otherwise.
final class CanvasProgress {
    // Used from the waiting thread only.
    let connection: Connection
    let started = Date()
    let isTerminal = isatty(STDERR_FILENO) == 1
    var lastPrint = Date.distantPast
    var lastLine = ""
    var drewBar = false

    init(connection: Connection) { self.connection = connection }

    func show(_ canvas: CanvasStatus?) {
        guard let canvas else { return }
        let interval = isTerminal ? 0.1 : 1.0
        guard Date().timeIntervalSince(lastPrint) >= interval else { return }
        lastPrint = Date()
        var target = canvas
        if canvas.kind == "root", let inner = canvas.innerID,
            let status = try? CanvasStatus.fetch(inner, on: connection)
        {
            target = status
        }
        guard target.kind != "root", target.size > 0 else { return }
        let done = target.size - target.remaining
        let failed = target.memberStates["failed"] ?? 0
        let elapsed = Date().timeIntervalSince(started)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let text = String(
            format: "%@ %d: %@/%@ members done, %d failed, %.1f s, %.0f/s", target.kind, target.id,
            formatCount(done), formatCount(target.size), failed, elapsed, rate)
        if isTerminal {
            let width = 24
            let filled = Int(Double(width) * Double(done) / Double(target.size))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            FileHandle.standardError.write(Data("\r\(bar) \(text)\u{1B}[K".utf8))
            drewBar = true
        } else if text != lastLine {
            FileHandle.standardError.write(Data((text + "\n").utf8))
        }
        lastLine = text
    }

    func finish() {
        if drewBar { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
