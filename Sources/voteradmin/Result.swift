import ArgumentParser
import CommandSupport
import Foundation
import PGCanvas
import VoterRolls

struct ResultCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "result", abstract: "Show a job's state, result or error, attempts and timings.")

    @OptionGroup var database: DatabaseOptions

    @Argument(parsing: .allUnrecognized, help: ArgumentHelp("The job or canvas id.", valueName: "id"))
    var idText: [String] = []
    var id: Int64 { (try? parseID(idText, what: "job or canvas id")) ?? 0 }

    func validate() throws { _ = try parseID(idText, what: "job or canvas id") }

    @Flag(help: "Print as one JSON object.")
    var json = false

    func run() throws {
        let connection = try database.connect(applicationName: "voteradmin result")
        try SchemaCheck.requireCanvasSchema(on: connection)
        if let status = try JobStatus.fetch(id, on: connection) {
            OutcomePrinter.print(status, elapsed: nil, json: json)
        } else if let status = try CanvasStatus.fetch(id, on: connection) {
            OutcomePrinter.print(status, elapsed: nil, json: json)
        } else {
            throw CommandFailure("no job or canvas with id \(id)")
        }
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Queues, live workers, running jobs and the latest failures.")

    @OptionGroup var database: DatabaseOptions

    func run() throws {
        let connection = try database.connect(applicationName: "voteradmin status")
        try SchemaCheck.requireCanvasSchema(on: connection)
        let report = try QueueReport.fetch(on: connection)
        let limits = try Limits.list(on: connection)
        let states = ["scheduled", "queued", "running", "succeeded", "failed", "cancelled"]
        print(
            "QUEUE".padding(toLength: 16, withPad: " ", startingAt: 0)
                + states.map { $0.padding(toLength: 11, withPad: " ", startingAt: 0) }.joined())
        if report.queues.isEmpty { print("(no jobs)") }
        let paused = Set(limits.paused.map(\.queue))
        for q in report.queues {
            print(
                q.queue.padding(toLength: 16, withPad: " ", startingAt: 0)
                    + states.map { formatCount(q.counts[$0] ?? 0).padding(toLength: 11, withPad: " ", startingAt: 0) }
                    .joined() + (paused.contains(q.queue) ? "PAUSED" : ""))
        }
        print("\nLIMITS AND PAUSED QUEUES")
        for line in LimitLines.render(limits) { print(line) }
        print("\nWORKERS")
        if report.workers.isEmpty { print("(none)") }
        for w in report.workers {
            print(
                String(
                    format: "  #%lld %@ pid %d, concurrency %d, queues %@: heartbeat %.1f s ago, %d running", w.id,
                    w.hostname, w.pid, w.concurrency, w.queues.joined(separator: ","), w.heartbeatAge, w.running))
        }
        print("\nLATEST FAILURES")
        if report.failures.isEmpty { print("(none)") }
        let formatter = ISO8601DateFormatter()
        for f in report.failures {
            print("  \(f.id) \(f.task) at \(formatter.string(from: f.finishedAt)): \(f.error)")
        }
    }
}

struct TasksCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tasks", abstract: "List the task names workers know.")
    func run() throws {
        for name in AppTasks.registry().names { print(name) }
    }
}
