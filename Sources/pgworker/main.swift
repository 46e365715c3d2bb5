import Foundation
import PGCanvasWorker
import VoterRolls

/// The demo's worker: pgcanvas's own worker command line with the voter-roll tasks, plus the
/// demo's one flag, `--output-dir DIR` (where station lists go; pool processes inherit it
/// through the environment).
@main struct PGWorkerMain {
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        if let i = arguments.firstIndex(of: "--output-dir"), i + 1 < arguments.count {
            setenv("PGCANVAS_OUTPUT_DIR", arguments[i + 1], 1)
            arguments.removeSubrange(i...(i + 1))
        }
        PGWorker.main(registry: AppTasks.registry(), arguments: arguments)
    }
}
