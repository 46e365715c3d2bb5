import ArgumentParser
import CommandSupport
import Foundation
import Migrations
import VoterRolls

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply pending migrations (safe to run twice, and twice at once).")

    @OptionGroup var database: DatabaseOptions

    @Flag(help: "List applied and pending migrations; change nothing.")
    var status = false

    func run() throws {
        let connection = try database.connect(applicationName: "voteradmin migrate")
        // The demo's own schema first: it takes over what earlier builds recorded as pgcanvas's.
        let sets = [("voter rolls", try VoterRollsMigrations.migrator()), ("pgcanvas", try Migrator.bundled())]
        if status {
            let formatter = ISO8601DateFormatter()
            for (label, migrator) in sets {
                let state = try migrator.status(connection)
                for (migration, appliedAt) in state.applied {
                    print("applied  \(label): \(migration.fileName)  \(formatter.string(from: appliedAt))")
                }
                for migration in state.pending { print("pending  \(label): \(migration.fileName)") }
                for file in state.pendingFunctionFiles { print("pending  \(label): \(file)") }
            }
            return
        }
        var total = 0
        var nothing = true
        for (label, migrator) in sets {
            let applied = try migrator.migrate(connection)
            for migration in applied.migrations { print("Applied \(label): \(migration.fileName)") }
            for file in applied.functionFiles { print("Applied \(label): \(file)") }
            nothing = nothing && applied.isEmpty
            total += migrator.migrations.count
        }
        if nothing { print("Nothing to migrate: all \(total) migrations are applied.") }
    }
}
