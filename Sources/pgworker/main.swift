import ArgumentParser
import CommandSupport

struct PGWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pgworker", abstract: "Run pgcanvas jobs from PostgreSQL.", version: "0.1.0")
}

runCommandLine(PGWorker.self, name: "pgworker")
