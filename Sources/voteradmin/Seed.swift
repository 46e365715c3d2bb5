import ArgumentParser
import CommandSupport
import Foundation
import Migrations
import VoterRolls

struct Seed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replace the voter data with N fake voters in max(1, N/1000) polling centres.")

    @OptionGroup var database: DatabaseOptions

    // Taken as raw text so that "-5" reaches validate() and gets a clear message instead of
    // being read as an unknown flag.
    @Argument(
        parsing: .allUnrecognized,
        help: ArgumentHelp("How many voters to create (1 to 90,000,000).", valueName: "count"))
    var countText: [String] = []

    var count: Int { Int(countText.first ?? "") ?? 0 }

    @Option(name: .customLong("random-seed"), parsing: .unconditional, help: "Make the data reproducible.")
    var randomSeed: UInt64?

    func validate() throws {
        guard countText.count == 1 else {
            throw ValidationError(
                countText.isEmpty
                    ? "missing the voter count" : "expected one voter count, got \(countText.joined(separator: " "))")
        }
        let text = countText[0]
        let digits = text.hasPrefix("-") ? text.dropFirst() : Substring(text)
        // A whole number too long for Int is out of range, not "not a number".
        guard Int(text) != nil || (!digits.isEmpty && digits.allSatisfy(\.isASCII) && digits.allSatisfy(\.isNumber))
        else {
            throw ValidationError("the voter count must be a whole number, not '\(countText[0])'")
        }
        guard let count = Int(text), (1...Seeder.maxVoters).contains(count) else {
            throw ValidationError(
                "the voter count must be between 1 and \(formatCount(Seeder.maxVoters)) (voter ids have 8 digits), not \(countText[0])"
            )
        }
    }

    func run() throws {
        let connection = try database.connect(applicationName: "voteradmin seed")
        let statuses = try [VoterRollsMigrations.migrator(), Migrator.bundled()].map { try $0.status(connection) }
        let pending = statuses.reduce(0) { $0 + $1.pending.count + $1.pendingFunctionFiles.count }
        guard pending == 0 else {
            throw CommandFailure("the database is not migrated (\(pending) pending): run 'voteradmin migrate' first")
        }
        let started = Date()
        let bar = ProgressBar(label: "seeding")
        let summary = try Seeder(names: try NameBank.bundled()).seed(
            connection, voters: count, randomSeed: randomSeed, progress: { bar.update(done: $0, total: $1) })
        print(
            String(
                format: "Created %@ polling centres and %@ voters (largest centre %@ voters, smallest %@) in %.2f s",
                formatCount(summary.centers), formatCount(summary.voters), formatCount(summary.largestCenter),
                formatCount(summary.smallestCenter), Date().timeIntervalSince(started)))
    }
}
