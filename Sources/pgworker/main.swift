import Foundation
import PGCanvasWorker
import VoterRolls

/// The demo's worker: pgcanvas's own worker command line with the voter-roll tasks, plus the
/// demo's one flag, `--output-dir DIR` (where station lists go; pool processes inherit it
/// through the environment).
@main struct PGWorkerMain {
    static func main() {
        var arguments: [String] = []
        var rest = CommandLine.arguments.dropFirst()[...]
        // `--output-dir DIR` or `--output-dir=DIR`, as ArgumentParser would take it; the last wins.
        while let argument = rest.popFirst() {
            if argument == "--output-dir" {
                guard let directory = rest.popFirst() else {
                    FileHandle.standardError.write(
                        Data("pgworker: error: Missing value for '--output-dir <dir>'\n".utf8))
                    exit(64)
                }
                setenv("PGCANVAS_OUTPUT_DIR", directory, 1)
            } else if argument.hasPrefix("--output-dir=") {
                setenv("PGCANVAS_OUTPUT_DIR", String(argument.dropFirst("--output-dir=".count)), 1)
            } else {
                arguments.append(argument)
            }
        }
        PGWorker.main(registry: AppTasks.registry(), arguments: arguments)
    }
}
