import ArgumentParser
import CommandSupport
import Foundation
import PGCanvas
import VoterRolls

struct ScheduleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedule", abstract: "Periodic tasks, fired by any pgworker started with --beat.",
        subcommands: [Add.self, List.self, Remove.self, Enable.self, Disable.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a schedule.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "A unique name, e.g. debug-every-30-seconds.") var name: String
        @Option(help: "The task to run.") var task: String?
        @Option(help: "Its arguments as a JSON array.") var args: String = "[]"
        @Option(help: "A canvas in its JSON form instead of a task (a file, or '-' for standard input).")
        var canvas: String?
        @Option(help: "The queue for the task.") var queue: String?
        @Option(help: "Fire every DURATION: 30s, 5m, 2h, 1d.") var every: String?
        @Option(help: "Fire on a five-field cron expression, e.g. \"0 9 * * MON-FRI\".") var cron: String?
        @Option(help: "The cron expression's time zone, e.g. Europe/Paris (default UTC).") var tz: String = "UTC"

        func rule() throws -> ScheduleRule {
            guard (every == nil) != (cron == nil) else { throw ValidationError("give either --every or --cron") }
            if let every { return .every(try validation { try ScheduleRule.parseInterval(every) }) }
            guard let zone = TimeZone(identifier: tz) else { throw ValidationError("unknown time zone '\(tz)'") }
            return .cron(try validation { try CronExpression(cron ?? "", timeZone: zone) })
        }

        func validation<T>(_ body: () throws -> T) throws -> T {
            do { return try body() } catch let error as CanvasError { throw ValidationError(error.description) }
        }

        func validate() throws {
            guard (task == nil) != (canvas == nil) else { throw ValidationError("give either --task or --canvas") }
            if let task, !AppTasks.registry().names.contains(task) {
                throw ValidationError("unknown task '\(task)' (see 'voteradmin tasks')")
            }
            guard (try? JSONValue(parsing: args))?.arrayValue != nil else {
                throw ValidationError("--args must be a JSON array, like '[1, 2]'")
            }
            _ = try rule()
        }

        func run() throws {
            var json: JSONValue
            if let canvas {
                let data =
                    canvas == "-"
                    ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: canvas)
                guard let data, let parsed = try? JSONValue(parsing: String(decoding: data, as: UTF8.self)) else {
                    throw CommandFailure("cannot read a JSON canvas from \(canvas)")
                }
                json = parsed
            } else {
                var options: JSONValue? = nil
                if let queue { options = ["queue": .string(queue)] }
                var object: [String: JSONValue] = ["task": .string(task ?? ""), "args": try JSONValue(parsing: args)]
                if let options { object["options"] = options }
                json = .object(object)
            }
            let connection = try database.connect(applicationName: "voteradmin schedule")
            try SchemaCheck.requireCanvasSchema(on: connection)
            do {
                let schedule = try ScheduleStore.add(name: name, canvas: json, rule: try rule(), on: connection)
                print(
                    "Added \(schedule.name): \(schedule.rule), first at \(ISO8601DateFormatter().string(from: schedule.nextFireAt))"
                )
            } catch let error as CanvasError {
                throw CommandFailure(error.description)
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List schedules.")
        @OptionGroup var database: DatabaseOptions
        func run() throws {
            let connection = try database.connect(applicationName: "voteradmin schedule")
            try SchemaCheck.requireCanvasSchema(on: connection)
            let schedules = try ScheduleStore.list(on: connection)
            if schedules.isEmpty { print("(no schedules)") }
            let f = ISO8601DateFormatter()
            for s in schedules {
                let what = s.canvas["task"]?.stringValue ?? "canvas"
                var line =
                    "\(s.name)  \(s.enabled ? "enabled " : "disabled")  \(s.rule)  \(what)  last \(s.lastFireAt.map(f.string(from:)) ?? "never")  next \(f.string(from: s.nextFireAt))"
                if let error = s.lastError {
                    // One line per schedule: the message may hold newlines (a task's own text).
                    let at = s.lastErrorAt.map(f.string(from:)) ?? "?"
                    line += "  error \(at): \(error.split(whereSeparator: \.isNewline).joined(separator: " "))"
                }
                print(line)
            }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a schedule.")
        @OptionGroup var database: DatabaseOptions
        @Argument var name: String
        func run() throws {
            let connection = try database.connect(applicationName: "voteradmin schedule")
            try SchemaCheck.requireCanvasSchema(on: connection)
            do { try ScheduleStore.remove(name: name, on: connection) } catch let e as CanvasError {
                throw CommandFailure(e.description)
            }
            print("Removed \(name)")
        }
    }

    struct Enable: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a schedule (from its next tick on).")
        @OptionGroup var database: DatabaseOptions
        @Argument var name: String
        func run() throws { try toggle(database, name, true) }
    }

    struct Disable: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a schedule.")
        @OptionGroup var database: DatabaseOptions
        @Argument var name: String
        func run() throws { try toggle(database, name, false) }
    }
}

private func toggle(_ database: DatabaseOptions, _ name: String, _ enabled: Bool) throws {
    let connection = try database.connect(applicationName: "voteradmin schedule")
    try SchemaCheck.requireCanvasSchema(on: connection)
    do { try ScheduleStore.setEnabled(name: name, enabled, on: connection) } catch let e as CanvasError {
        throw CommandFailure(e.description)
    }
    print("\(enabled ? "Enabled" : "Disabled") \(name)")
}
