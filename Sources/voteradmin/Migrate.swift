import ArgumentParser
import CommandSupport
import Foundation
import Migrations

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply pending migrations (safe to run twice, and twice at once).")

    @OptionGroup var database: DatabaseOptions

    @Flag(help: "List applied and pending migrations; change nothing.")
    var status = false

    func run() throws {
        let connection = try database.connect(applicationName: "voteradmin migrate")
        let migrator = try Migrator.bundled()
        if status {
            let state = try migrator.status(connection)
            let formatter = ISO8601DateFormatter()
            for (migration, appliedAt) in state.applied {
                print("applied  \(migration.fileName)  \(formatter.string(from: appliedAt))")
            }
            for migration in state.pending { print("pending  \(migration.fileName)") }
            for file in state.pendingFunctionFiles { print("pending  \(file)") }
            return
        }
        let applied = try migrator.migrate(connection)
        for migration in applied.migrations { print("Applied \(migration.fileName)") }
        for file in applied.functionFiles { print("Applied \(file)") }
        if applied.isEmpty {
            print("Nothing to migrate: all \(migrator.migrations.count) migrations are applied.")
        }
    }
}
