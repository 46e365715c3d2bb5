import Foundation

/// A one-line progress bar on stderr when it is a terminal; otherwise a plain line every 10%
/// (for totals of at least `plainLinesFrom`).
///
/// `@unchecked Sendable`: it is used from one thread at a time, the thread doing the work it
/// reports on, and never drawn from two threads at once.
public final class ProgressBar: @unchecked Sendable {
    private let label: String
    private let isTerminal: Bool
    private let started = Date()
    private var lastDraw = Date.distantPast
    private var lastPlainDecile = -1
    private let plainLinesFrom: Int
    private var drew = false

    public init(label: String, enabled: Bool = true, plainLinesFrom: Int = 100_000) {
        self.label = label
        self.isTerminal = enabled && isatty(STDERR_FILENO) == 1
        self.plainLinesFrom = plainLinesFrom
    }

    /// - Parameter detail: more to say after the count ("3 failed, 120/s").
    public func update(done: Int, total: Int, detail: String = "") {
        guard total > 0 else { return }
        let fraction = min(1, Double(done) / Double(total))
        if isTerminal {
            let now = Date()
            guard now.timeIntervalSince(lastDraw) > 0.1 || done >= total else { return }
            lastDraw = now
            let width = 30
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            let elapsed = now.timeIntervalSince(started)
            let line = String(
                format: "\r%@ %@ %3d%% %@/%@ %.1fs", label, bar, Int(fraction * 100), formatCount(done),
                formatCount(total), elapsed)
            FileHandle.standardError.write(Data((line + (detail.isEmpty ? "" : " " + detail) + "\u{1B}[K").utf8))
            drew = true
            if done >= total { finish() }
        } else {
            let decile = Int(fraction * 10)
            if decile > lastPlainDecile, total >= plainLinesFrom {
                lastPlainDecile = decile
                let tail = detail.isEmpty ? "" : " " + detail
                FileHandle.standardError.write(
                    Data("\(label): \(decile * 10)% (\(formatCount(done))/\(formatCount(total)))\(tail)\n".utf8))
            }
        }
    }

    /// Ends the bar's line on a terminal (once).
    public func finish() {
        if drew { FileHandle.standardError.write(Data("\n".utf8)) }
        drew = false
    }
}

/// 1234567 → "1,234,567".
public func formatCount(_ n: Int) -> String {
    let digits = String(n.magnitude)
    var out = ""
    for (i, ch) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(ch)
    }
    return n < 0 ? "-" + out : out
}
