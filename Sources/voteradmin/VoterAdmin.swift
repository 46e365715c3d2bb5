import ArgumentParser
import CommandSupport
import Foundation
import Logging

@main
enum Main {
    static func main() {
        LoggingSystem.bootstrap { _ in CeleryStyleLogHandler(processName: "voteradmin", level: .warning) }
        runCommandLine(VoterAdmin.self, name: "voteradmin")
    }
}

struct VoterAdmin: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "voteradmin",
        abstract: "Manage the voter-roll demo and its pgcanvas queue.",
        version: "0.1.0",
        subcommands: [
            Migrate.self, Seed.self, EnqueueCommand.self, ResultCommand.self, StatusCommand.self, TasksCommand.self,
            WaitCommand.self, CancelCommand.self, RetryCommand.self, PurgeCommand.self, ScheduleCommand.self,
            LimitCommand.self, QueueCommand.self, RolesCommand.self, DashboardCommand.self,
        ]
    )
}
