import Foundation

/// Tasks every worker has, for tests, benchmarks and smoke checks.
enum BuiltinTasks {
    static func register(into registry: inout TaskRegistry) {
        // Code that never blocks runs where it is in an async pool, on its cooperative threads
        // (anything else runs there on a thread of the runner's own: a hop per job).
        func nonBlocking(_ name: String, _ body: @escaping TaskFunction) {
            var task = RegisteredTask(name, run: body)
            task.neverBlocks = true
            registry.register(task)
        }
        nonBlocking("canvas.noop") { _, _ in .null }
        nonBlocking("canvas.add") { _, args in
            guard args.count == 2 else { throw TaskError.badArguments("canvas.add", "two numbers") }
            if let a = args[0].intValue, let b = args[1].intValue, case .int = args[0], case .int = args[1] {
                let (sum, overflow) = a.addingReportingOverflow(b)
                if !overflow { return .int(sum) }
            }
            guard let a = args[0].doubleValue, let b = args[1].doubleValue else {
                throw TaskError.badArguments("canvas.add", "two numbers")
            }
            return .double(a + b)
        }
        nonBlocking("canvas.sum") { _, args in
            guard args.count == 1, let list = args[0].arrayValue else {
                throw TaskError.badArguments("canvas.sum", "one list of numbers")
            }
            return try sum(list)
        }
        // What a call received, positional and keyword: shows how partial calls and chains merge.
        nonBlocking("canvas.echo") { context, args in
            .object(["args": .array(args), "kwargs": .object(context.kwargs)])
        }
        nonBlocking("canvas.identity") { _, args in
            guard args.count == 1 else { throw TaskError.badArguments("canvas.identity", "one argument") }
            return args[0]
        }
        @Sendable func sleepSeconds(_ args: [JSONValue]) throws -> Double {
            guard args.count == 1, let seconds = args[0].doubleValue, seconds >= 0 else {
                throw TaskError.badArguments("canvas.sleep", "a number of seconds")
            }
            return seconds
        }
        var sleep = RegisteredTask("canvas.sleep") { _, args in
            Thread.sleep(forTimeInterval: try sleepSeconds(args))
            return .null
        }
        // In an async pool it waits without holding a thread, and a cancel ends it.
        sleep.runAsync = { _, args in
            try await Task.sleep(nanoseconds: UInt64(min(try sleepSeconds(args), 1e9) * 1e9))
            return .null
        }
        registry.register(sleep)
        nonBlocking("canvas.fail") { _, args in
            throw TaskError(args.first?.stringValue ?? args.first?.jsonText ?? "canvas.fail was called")
        }
        registry.register("canvas.starmap") { context, args in
            // One job that calls a task for each argument list in order: Celery's starmap.
            guard args.count == 2, let task = args[0].stringValue, let lists = args[1].arrayValue else {
                throw TaskError.badArguments("canvas.starmap", "a task name and a list of argument lists")
            }
            guard let definition = context.registry[task] else {
                throw TaskError("unknown task '\(task)'", retryable: false)
            }
            var results: [JSONValue] = []
            results.reserveCapacity(lists.count)
            for (i, list) in lists.enumerated() {
                guard let arguments = list.arrayValue else {
                    throw TaskError.badArguments("canvas.starmap", "argument lists (item \(i) is not a list)")
                }
                results.append(try definition.run(&context, arguments))
            }
            return .array(results)
        }
        nonBlocking("canvas.spawn") { context, args in
            // Enqueues the canvas (JSON form) it is given, committed with its own success.
            guard args.count == 1, args[0].objectValue != nil else {
                throw TaskError.badArguments("canvas.spawn", "one canvas in its JSON form")
            }
            context.spawn(json: args[0])
            return .null
        }
        registry.register("canvas.join") { context, args in
            // Waits for a job or canvas: inside a task that is refused, as Celery refuses
            // result.get(). It exists so that the refusal can be seen (and tested) from a worker.
            guard args.count == 1, let id = args[0].intValue else {
                throw TaskError.badArguments("canvas.join", "a job or canvas id")
            }
            let status = try CanvasHandle(id: Int64(id)).wait(on: context.connection())
            return status.result ?? .null
        }
        registry.register("canvas.crash") { _, _ in
            // Dies the way a segfaulting extension or the OOM killer would take a pool process down.
            kill(getpid(), SIGKILL)
            return .null
        }
    }

    static func sum(_ list: [JSONValue]) throws -> JSONValue {
        var intSum = 0
        var doubleSum = 0.0
        var allInts = true
        for item in list {
            switch item {
            case .int(let i):
                let (s, overflow) = intSum.addingReportingOverflow(i)
                if overflow { allInts = false } else { intSum = s }
                doubleSum += Double(i)
            case .double(let d):
                allInts = false
                doubleSum += d
            case .null:
                continue
            default:
                throw TaskError.badArguments("canvas.sum", "one list of numbers")
            }
        }
        return allInts ? .int(intSum) : .double(doubleSum)
    }
}
