import ArgumentParser
import CommandSupport
import Foundation
import PGCanvas
import Postgres

struct CancelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel", abstract: "Cancel a job (queued or running) or a canvas, chord or group.")
    @OptionGroup var database: DatabaseOptions
    // Raw text, so that a negative or oversized id gets a clear message (see parseID).
    @Argument(parsing: .allUnrecognized, help: ArgumentHelp("A job or canvas id.", valueName: "id"))
    var idText: [String] = []
    var id: Int64 { (try? parseID(idText, what: "job or canvas id")) ?? 0 }

    func validate() throws { _ = try parseID(idText, what: "job or canvas id") }

    func run() throws {
        let connection = try database.connect(applicationName: "voteradmin cancel")
        try SchemaCheck.requireCanvasSchema(on: connection)
        let outcome = try connection.query("SELECT canvas.cancel(\(id))")[0].decodeIfPresent(String.self, 0)
        switch outcome {
        case nil: throw CommandFailure("no job or canvas with id \(id)")
        case "already finished": throw CommandFailure("\(id) has already finished; nothing to cancel")
        default: print("Cancelled \(id)")
        }
    }
}

struct RetryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry", abstract: "Requeue a failed job (and let its failed chord go on if it then succeeds).")
    @OptionGroup var database: DatabaseOptions
    @Argument(parsing: .allUnrecognized, help: ArgumentHelp("A job id.", valueName: "id"))
    var idText: [String] = []
    var id: Int64 { (try? parseID(idText, what: "job id")) ?? 0 }

    func validate() throws { _ = try parseID(idText, what: "job id") }

    func run() throws {
        let connection = try database.connect(applicationName: "voteradmin retry")
        try SchemaCheck.requireCanvasSchema(on: connection)
        let outcome = try connection.query("SELECT canvas.retry(\(id))")[0].decodeIfPresent(String.self, 0)
        switch outcome {
        case nil: throw CommandFailure("no job with id \(id)")
        case "not failed":
            throw CommandFailure("job \(id) has not failed; only failed or cancelled jobs can be retried")
        case let outcome?:
            // canvas.retry says which chord it left failed and why, after "requeued; ".
            print("Requeued \(id)" + outcome.dropFirst("requeued".count))
        }
    }
}

struct PurgeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "purge", abstract: "Remove queued jobs.")
    @OptionGroup var database: DatabaseOptions
    @Option(help: "Only this queue.") var queue: String?
    @Flag(help: "Do not ask for confirmation.") var yes = false

    func validate() throws {
        if let queue, !JobRules.isName(queue) { throw ValidationError("--queue: \(JobRules.Message.queueName)") }
    }

    func run() throws {
        let connection = try database.connect(applicationName: "voteradmin purge")
        try SchemaCheck.requireCanvasSchema(on: connection)
        if !yes {
            guard isatty(STDIN_FILENO) == 1 else {
                throw CommandFailure("purge removes queued jobs: confirm with --yes when not on a terminal")
            }
            let count: Int = try connection.query(
                "SELECT count(*) FROM canvas.jobs WHERE state IN ('scheduled', 'queued') AND (\(queue ?? "") = '' OR queue = \(queue ?? ""))"
            )[0]
            .decode(Int.self, 0)
            FileHandle.standardError.write(
                Data("Remove \(count) queued jobs\(queue.map { " from \($0)" } ?? "")? [y/N] ".utf8))
            guard let answer = readLine(), answer.lowercased().hasPrefix("y") else {
                print("Nothing removed.")
                return
            }
        }
        let n: Int = try connection.query("SELECT canvas.purge(nullif(\(queue ?? ""), ''))")[0].decode(Int.self, 0)
        print("Purged \(n) queued jobs\(queue.map { " from \($0)" } ?? "")")
    }
}

struct WaitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait", abstract: "Wait for a job (and everything it started) or a canvas, with progress.")
    @OptionGroup var database: DatabaseOptions
    @Argument(parsing: .allUnrecognized, help: ArgumentHelp("A job or canvas id.", valueName: "id"))
    var idText: [String] = []
    var id: Int64 { (try? parseID(idText, what: "job or canvas id")) ?? 0 }
    @Option(parsing: .unconditional, help: "Give up after this many seconds (exit 2).") var timeout: Double?

    func validate() throws {
        _ = try parseID(idText, what: "job or canvas id")
        try requireSeconds(timeout, option: "--timeout")
    }

    func run() throws {
        let connection = try database.connect(applicationName: "voteradmin wait")
        try SchemaCheck.requireCanvasSchema(on: connection)
        let started = Date()
        let progress = CanvasProgress(connection: connection)
        if try JobStatus.fetch(id, on: connection) != nil {
            let lineage = try Lineage.wait(for: id, on: connection, timeout: timeout ?? .infinity) {
                progress.show($0.spawned.last)
            }
            progress.finish()
            OutcomePrinter.print(lineage.job, elapsed: nil, json: false)
            for canvas in lineage.spawned { OutcomePrinter.print(canvas, elapsed: nil, json: false) }
            print(String(format: "elapsed: %.3f s", Date().timeIntervalSince(started)))
            if !lineage.isFinished { throw ExitCode(2) }
            if !lineage.succeeded { throw ExitCode(1) }
        } else if try CanvasStatus.fetch(id, on: connection) != nil {
            let status = try CanvasHandle(id: id).wait(on: connection, timeout: timeout ?? .infinity) {
                progress.show($0)
            }
            progress.finish()
            OutcomePrinter.print(status, elapsed: Date().timeIntervalSince(started), json: false)
            if status.state == .pending { throw ExitCode(2) }
            if status.state != .succeeded { throw ExitCode(1) }
        } else {
            throw CommandFailure("no job or canvas with id \(id)")
        }
    }
}
