import ArgumentParser
import CommandSupport
import Foundation
import PGCanvas
import VoterRolls

struct EnqueueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue", abstract: "Queue a task; with --wait, wait for it and print its result.")

    @OptionGroup var database: DatabaseOptions

    @Argument(help: "The task's name, e.g. canvas.add or assign_stations_and_generate_lists_with_chord.")
    var task: String?

    @Option(help: "A canvas in its JSON form (docs/canvas.md), from a file or '-' for standard input.")
    var canvas: String?

    @Option(help: "Positional arguments as a JSON array, e.g. '[1, 2]'.")
    var args: String = "[]"

    @Option(help: "Keyword arguments as a JSON object, e.g. '{\"label\": \"north\"}'.")
    var kwargs: String?

    @Option(help: "The queue to put the job in.")
    var queue: String = "default"

    // `.unconditional` so that "--priority -5" is a value, not an unknown flag; every number is
    // then checked by JobRules in validate().
    @Option(
        parsing: .unconditional, help: "Lower runs first (-32768 to 32767; default: 0).",
        transform: number(JobRules.Message.priority))
    var priority: Int = 0

    @Option(
        parsing: .unconditional, help: "Seconds to wait before the job may start.",
        transform: number(JobRules.Message.countdown))
    var countdown: Double?

    @Option(help: "The earliest time the job may start, ISO 8601 with a zone, e.g. 2026-12-01T09:00:00Z.")
    var eta: String?

    @Option(
        name: .customLong("max-retries"), parsing: .unconditional,
        help: "Retries after an error (0 to 1000; default: 3).",
        transform: number(JobRules.Message.maxRetries))
    var maxRetries: Int = 3

    @Option(
        name: .customLong("retry-backoff"), parsing: .unconditional,
        help: "Seconds before the first retry, doubled for each further one (default: 1).",
        transform: number(JobRules.Message.retryBackoff))
    var retryBackoff: Double = 1

    @Option(
        name: .customLong("time-limit"), parsing: .unconditional,
        help: "Seconds a run may take before it is killed (default: the worker's --time-limit).",
        transform: number(JobRules.Message.timeLimit))
    var timeLimit: Double?

    @Option(
        name: .customLong("soft-time-limit"), parsing: .unconditional,
        help: "Seconds after which the task is told to stop, before --time-limit kills it.",
        transform: number(JobRules.Message.softTimeLimit))
    var softTimeLimit: Double?

    @Option(
        help: ArgumentHelp(
            "Cancel the job if it has not started by then: seconds, or an ISO 8601 time with a zone.",
            valueName: "seconds-or-time"))
    var expires: String?

    @Flag(name: .customLong("ignore-result"), help: "Do not store the result.")
    var ignoreResult = false

    @Option(
        name: .customLong("unique-key"),
        help: "While a job with this key waits or runs, give its id instead of enqueueing another.")
    var uniqueKey: String?

    @Option(
        name: .customLong("unique-for"), parsing: .unconditional,
        help: "With --unique-key: nor within this many seconds of the last job with the key.",
        transform: number(JobRules.Message.uniqueFor))
    var uniqueFor: Double?

    @Flag(help: "Wait until the job has finished and print its outcome; exit 0 only if it succeeded.")
    var wait = false

    @Option(parsing: .unconditional, help: "With --wait: give up after this many seconds (exit 2).")
    var timeout: Double?

    @Flag(help: "Print the outcome as one JSON object.")
    var json = false

    func validate() throws {
        guard (task == nil) != (canvas == nil) else {
            throw ValidationError("give either a task name or --canvas FILE, not both or neither")
        }
        if canvas != nil, let ignored = jobOnlyFlagsGiven.first {
            // A canvas carries its own args and options; dropping the flag silently would enqueue
            // something other than what was asked for.
            throw ValidationError("\(ignored) applies to a task, not to --canvas (give it in the canvas's JSON)")
        }
        let parsedArgs: JSONValue
        do {
            parsedArgs = try JSONValue(parsing: args)
        } catch {
            throw ValidationError("--args is not valid JSON: \(error)")
        }
        guard parsedArgs.arrayValue != nil else {
            throw ValidationError("--args must be a JSON array of positional arguments, like '[1, 2]', not \(args)")
        }
        _ = try parsedKwargs()
        if let task {
            guard JobRules.isName(task) else { throw ValidationError(JobRules.Message.task) }
            guard AppTasks.registry().names.contains(task) else {
                throw ValidationError("unknown task '\(task)' (see 'voteradmin tasks')")
            }
        }
        do {
            try options().validate()
        } catch let error as CanvasError {
            throw ValidationError(error.description)
        }
        try requireSeconds(timeout, option: "--timeout")
    }

    /// `--kwargs` as an object, nil when not given.
    func parsedKwargs() throws -> [String: JSONValue]? {
        guard let kwargs else { return nil }
        let value: JSONValue
        do {
            value = try JSONValue(parsing: kwargs)
        } catch {
            throw ValidationError("--kwargs is not valid JSON: \(error)")
        }
        guard let object = value.objectValue else {
            throw ValidationError(
                "--kwargs must be a JSON object of keyword arguments, like '{\"a\": 1}', not \(kwargs)")
        }
        return object
    }

    /// Flags that set a single job's options, when given with a value other than the default.
    /// (`--args` and `--kwargs` apply to a canvas too: a partial call, as Celery's apply_async.)
    var jobOnlyFlagsGiven: [String] {
        var given: [String] = []
        if queue != "default" { given.append("--queue") }
        if priority != 0 { given.append("--priority") }
        if countdown != nil { given.append("--countdown") }
        if eta != nil { given.append("--eta") }
        if maxRetries != 3 { given.append("--max-retries") }
        if retryBackoff != 1 { given.append("--retry-backoff") }
        if timeLimit != nil { given.append("--time-limit") }
        if expires != nil { given.append("--expires") }
        if ignoreResult { given.append("--ignore-result") }
        if uniqueKey != nil { given.append("--unique-key") }
        if uniqueFor != nil { given.append("--unique-for") }
        if softTimeLimit != nil { given.append("--soft-time-limit") }
        return given
    }

    /// The job's options from the flags; the eta text is checked by `validate()` before `run()`.
    func options() throws -> JobOptions {
        var etaDate: Date?
        if let eta {
            guard let date = Self.parseTime(eta) else {
                throw ValidationError(
                    "--eta: expected an ISO 8601 time with a zone, like 2026-12-01T09:00:00Z, not \(eta)")
            }
            etaDate = date
        }
        var expiry: Expiry?
        if let expires {
            if let seconds = Double(expires) {
                expiry = .after(seconds)
            } else if let date = Self.parseTime(expires) {
                expiry = .at(date)
            } else {
                throw ValidationError(
                    "--expires: expected seconds or an ISO 8601 time with a zone, like 2026-12-01T09:00:00Z, not \(expires)"
                )
            }
        }
        return JobOptions(
            queue: queue, priority: priority, countdown: countdown, eta: etaDate, maxRetries: maxRetries,
            retryBackoff: retryBackoff, timeLimit: timeLimit, softTimeLimit: softTimeLimit, expires: expiry,
            ignoreResult: ignoreResult, uniqueKey: uniqueKey, uniqueFor: uniqueFor)
    }

    static func parseTime(_ text: String) -> Date? {
        let plain = ISO8601DateFormatter()
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions.insert(.withFractionalSeconds)
        return plain.date(from: text) ?? fractional.date(from: text)
    }

    func run() throws {
        if let canvas { return try enqueueCanvas(from: canvas) }
        guard let task else { return }
        let connection = try database.connect(applicationName: "voteradmin enqueue")
        try SchemaCheck.requireCanvasSchema(on: connection)
        let arguments = try JSONValue(parsing: args).arrayValue ?? []
        let started = Date()
        let id = try Enqueue.job(
            JobRequest(task, arguments, kwargs: try parsedKwargs() ?? [:], options: try options()), on: connection)
        guard wait || json else {
            print(id)
            return
        }
        let progress = CanvasProgress(connection: connection)
        let lineage = try Lineage.wait(for: id, on: connection, timeout: wait ? (timeout ?? .infinity) : 0) {
            if wait && !json { progress.show($0.spawned.last) }
        }
        progress.finish()
        let elapsed = Date().timeIntervalSince(started)
        if json {
            // One object for the whole lineage: its overall state and the final result.
            let state = lineage.succeeded ? "succeeded" : lineage.isFinished ? "failed" : lineage.job.state.rawValue
            let error = lineage.job.error ?? lineage.spawned.compactMap(\.error).first
            let object: JSONValue = [
                "id": .int(Int(id)), "task": .string(task), "state": .string(state),
                "result": lineage.finalResult ?? .null, "error": error.map(JSONValue.string) ?? .null,
                "attempt": .int(lineage.job.attempt), "elapsed_s": .double((elapsed * 1000).rounded() / 1000),
            ]
            print(object.jsonText)
        } else {
            OutcomePrinter.print(lineage.job, elapsed: nil, json: false)
            for canvas in lineage.spawned { OutcomePrinter.print(canvas, elapsed: nil, json: false) }
            if AppTasks.writeLists.contains(task), lineage.succeeded, let pages = lineage.finalResult?.intValue {
                print(String(format: "Total pages written: %d in %.3f s", pages, elapsed))
            } else {
                print(String(format: "elapsed: %.3f s", elapsed))
            }
        }
        if wait && !lineage.isFinished { throw ExitCode(2) }
        if wait && !lineage.succeeded { throw ExitCode(1) }
    }
}

extension EnqueueCommand {
    func enqueueCanvas(from source: String) throws {
        let text: String
        if source == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            guard let data = FileManager.default.contents(atPath: source) else {
                throw CommandFailure("cannot read the canvas file \(source)")
            }
            text = String(decoding: data, as: UTF8.self)
        }
        let canvasJSON: JSONValue
        do {
            canvasJSON = try JSONValue(parsing: text)
        } catch {
            throw CommandFailure("the canvas is not valid JSON: \(error)", exitCode: CommandFailure.usage)
        }
        let known = Set(AppTasks.registry().names)
        if let unknown = CanvasTaskNames.firstUnknown(in: canvasJSON, isKnown: known.contains) {
            throw CommandFailure(
                "\(unknown.path): unknown task '\(unknown.task)' (see 'voteradmin tasks')",
                exitCode: CommandFailure.usage)
        }
        let connection = try database.connect(applicationName: "voteradmin enqueue")
        try SchemaCheck.requireCanvasSchema(on: connection)
        let started = Date()
        let handle: CanvasHandle
        do {
            let callArgs = try JSONValue(parsing: args).arrayValue ?? []
            // The file's own text, parsed above, goes as it is: writing 100,000 members out again
            // would cost as much as reading them.
            handle = try Canvas.enqueue(
                jsonText: text, args: callArgs.isEmpty ? nil : callArgs, kwargs: try parsedKwargs(), on: connection)
        } catch let error as CanvasError {
            throw CommandFailure(error.description, exitCode: CommandFailure.usage)
        }
        guard wait || json else {
            print(handle.id)
            return
        }
        let progress = CanvasProgress(connection: connection)
        let status = try handle.wait(on: connection, timeout: wait ? (timeout ?? .infinity) : 0) {
            if wait && !json { progress.show($0) }
        }
        progress.finish()
        OutcomePrinter.print(status, elapsed: Date().timeIntervalSince(started), json: json)
        if wait && status.state == .pending { throw ExitCode(2) }
        if wait && status.state != .succeeded { throw ExitCode(1) }
    }
}
