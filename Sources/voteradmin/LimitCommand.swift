import ArgumentParser
import CommandSupport
import Foundation
import PGCanvas

/// A limit names its queue with `--queue NAME` or its task with `--task NAME`: one of the two.
struct LimitTarget: ParsableArguments {
    @Option(help: "Limit a queue: at most N of its jobs run at once.") var queue: String?
    @Option(help: "Limit a task: at most N of its jobs run at once.") var task: String?

    func scope() throws -> Limits.Scope {
        let scope: Limits.Scope
        switch (queue, task) {
        case (let q?, nil): scope = .queue(q)
        case (nil, let t?): scope = .task(t)
        default: throw ValidationError("name what to limit with either --queue NAME or --task NAME")
        }
        do { try scope.validate() } catch let error as CanvasError { throw ValidationError(error.description) }
        return scope
    }
}

struct LimitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "limit",
        abstract: "Fleet-wide rate and concurrency limits, obeyed by every worker's claim.",
        discussion: """
            A rate limit counts the jobs of one task started in each second, minute or hour (windows \
            on the clock): `limit set render 100/m`. A concurrency limit caps the running jobs of a \
            queue (--queue NAME) or of a task (--task NAME): `limit set-concurrency --queue pdf 4`. \
            Jobs over a limit wait in their queue without holding back other tasks' jobs.
            """,
        subcommands: [Set.self, Clear.self, SetConcurrency.self, ClearConcurrency.self, List.self])

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Limit how many jobs of a task start per second, minute or hour (N/s, N/m, N/h).")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The task name.") var task: String
        // Taken as it comes, so that "-1/s" reaches the rate's own message instead of reading as an option.
        @Argument(parsing: .allUnrecognized, help: "N/s, N/m or N/h, N from 1 to 1000000000.") var rate: [String]

        func parsed() throws -> RateLimit {
            guard rate.count == 1 else { throw ValidationError("give one rate, like 100/m") }
            do { return try RateLimit.parse(rate[0]) } catch let error as CanvasError {
                throw ValidationError(error.description)
            }
        }

        func validate() throws {
            do { try Limits.Scope.task(task).validate() } catch let error as CanvasError {
                throw ValidationError(error.description)
            }
            _ = try parsed()
        }

        func run() throws {
            let parsed = try parsed()
            let connection = try database.connect(applicationName: "voteradmin limit")
            try SchemaCheck.requireCanvasSchema(on: connection)
            do { try Limits.setRate(task: task, parsed, on: connection) } catch let e as CanvasError {
                throw CommandFailure(e.description, exitCode: CommandFailure.usage)
            }
            print("Rate limit of \(task): \(parsed)")
        }
    }

    struct Clear: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a task's rate limit.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The task name.") var task: String

        func run() throws {
            let connection = try database.connect(applicationName: "voteradmin limit")
            try SchemaCheck.requireCanvasSchema(on: connection)
            guard try Limits.clearRate(task: task, on: connection) else {
                throw CommandFailure("no rate limit on task '\(task)'")
            }
            print("Cleared the rate limit of \(task)")
        }
    }

    struct SetConcurrency: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-concurrency",
            abstract: "At most N jobs of a queue (--queue NAME) or of a task (--task NAME) running at once.")
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var target: LimitTarget
        // Taken as it comes, so that "-1" reaches the count's own message instead of reading as an option.
        @Argument(parsing: .allUnrecognized, help: "N, from 1 to 1000000000.") var max: [String]

        func count() throws -> Int {
            guard max.count == 1, let n = Int(max[0]), (1...Limits.maxConcurrency).contains(n) else {
                throw ValidationError(Limits.concurrencyMessage + ", not \"\(max.joined(separator: " "))\"")
            }
            return n
        }

        func validate() throws {
            _ = try target.scope()
            _ = try count()
        }

        func run() throws {
            let scope = try target.scope()
            let n = try count()
            let connection = try database.connect(applicationName: "voteradmin limit")
            try SchemaCheck.requireCanvasSchema(on: connection)
            do { try Limits.setConcurrency(scope, max: n, on: connection) } catch let e as CanvasError {
                throw CommandFailure(e.description, exitCode: CommandFailure.usage)
            }
            print("Concurrency limit of \(scope): \(n)")
        }
    }

    struct ClearConcurrency: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "clear-concurrency", abstract: "Remove a queue's or a task's concurrency limit.")
        @OptionGroup var database: DatabaseOptions
        @OptionGroup var target: LimitTarget

        func validate() throws { _ = try target.scope() }

        func run() throws {
            let scope = try target.scope()
            let connection = try database.connect(applicationName: "voteradmin limit")
            try SchemaCheck.requireCanvasSchema(on: connection)
            guard try Limits.clearConcurrency(scope, on: connection) else {
                throw CommandFailure("no concurrency limit on \(scope)")
            }
            print("Cleared the concurrency limit of \(scope)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Rate limits, concurrency limits, paused queues.")
        @OptionGroup var database: DatabaseOptions

        func run() throws {
            let connection = try database.connect(applicationName: "voteradmin limit")
            try SchemaCheck.requireCanvasSchema(on: connection)
            for line in LimitLines.render(try Limits.list(on: connection)) { print(line) }
        }
    }
}

struct QueueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue", abstract: "Pause and resume queues, for every worker at once.",
        subcommands: [Pause.self, Resume.self])

    struct Pause: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Claim nothing more from a queue (running jobs finish) until it is resumed.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The queue name.") var queue: String

        func validate() throws {
            do { try Limits.Scope.queue(queue).validate() } catch let error as CanvasError {
                throw ValidationError(error.description)
            }
        }

        func run() throws {
            let connection = try database.connect(applicationName: "voteradmin queue")
            try SchemaCheck.requireCanvasSchema(on: connection)
            let changed = try Limits.pause(queue: queue, on: connection)
            print(changed ? "Paused \(queue)" : "\(queue) was already paused")
        }
    }

    struct Resume: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Resume a paused queue.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The queue name.") var queue: String

        func run() throws {
            let connection = try database.connect(applicationName: "voteradmin queue")
            try SchemaCheck.requireCanvasSchema(on: connection)
            let changed = try Limits.resume(queue: queue, on: connection)
            print(changed ? "Resumed \(queue)" : "\(queue) was not paused")
        }
    }
}

/// The lines `limit list` and `status` print for limits and paused queues.
enum LimitLines {
    static func render(_ listing: Limits.Listing) -> [String] {
        var lines: [String] = []
        for r in listing.rates {
            lines.append("  rate         task \(r.task): \(r.rate) (\(r.startedThisWindow) started this window)")
        }
        for c in listing.concurrency {
            lines.append("  concurrency  \(c.scope): \(c.maxRunning) (\(c.running) running)")
        }
        for p in listing.paused {
            lines.append("  paused       queue \(p.queue) since \(ISO8601DateFormatter().string(from: p.pausedAt))")
        }
        if lines.isEmpty { lines.append("(no limits, no paused queues)") }
        return lines
    }
}
