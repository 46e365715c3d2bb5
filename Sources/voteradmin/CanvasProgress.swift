import CommandSupport
import Foundation
import PGCanvas
import Postgres

/// Shows how far a chord or group has got while waiting (members done of total, failures,
/// rate), through the same ProgressBar the seed uses.
final class CanvasProgress {
    // Used from the waiting thread only.
    let connection: Connection
    let started = Date()
    var bar: ProgressBar?
    var barFor: Int64?

    init(connection: Connection) { self.connection = connection }

    func show(_ canvas: CanvasStatus?) {
        guard var target = canvas else { return }
        if target.kind == "root", let inner = target.innerID,
            let status = try? CanvasStatus.fetch(inner, on: connection)
        {
            target = status
        }
        guard target.kind != "root", target.size > 0 else { return }
        if barFor != target.id {
            bar?.finish()
            bar = ProgressBar(label: "\(target.kind) \(target.id)", plainLinesFrom: 0)
            barFor = target.id
        }
        let done = target.size - target.remaining
        let elapsed = Date().timeIntervalSince(started)
        let detail = String(
            format: "members done, %d failed, %.0f/s", target.memberStates["failed"] ?? 0,
            elapsed > 0 ? Double(done) / elapsed : 0)
        bar?.update(done: done, total: target.size, detail: detail)
    }

    func finish() { bar?.finish() }
}
