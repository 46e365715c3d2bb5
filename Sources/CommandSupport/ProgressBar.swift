import Foundation

/// A one-line progress bar on stderr when it is a terminal; otherwise a plain line every 10%.
public final class ProgressBar: @unchecked Sendable {
    // Only used from the thread doing the work it reports on.
    private let label: String
    private let isTerminal: Bool
    private let started = Date()
    private var lastDraw = Date.distantPast
    private var lastPlainDecile = -1

    public init(label: String, enabled: Bool = true) {
        self.label = label
        self.isTerminal = enabled && isatty(STDERR_FILENO) == 1
    }

    public func update(done: Int, total: Int) {
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
            FileHandle.standardError.write(Data(line.utf8))
            if done >= total { FileHandle.standardError.write(Data("\n".utf8)) }
        } else {
            let decile = Int(fraction * 10)
            if decile > lastPlainDecile, total >= 100_000 {
                lastPlainDecile = decile
                FileHandle.standardError.write(
                    Data("\(label): \(decile * 10)% (\(formatCount(done))/\(formatCount(total)))\n".utf8))
            }
        }
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
