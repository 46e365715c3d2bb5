import Foundation

/// Tasks every worker has, for tests, benchmarks and smoke checks.
enum BuiltinTasks {
    static func register(into registry: inout TaskRegistry) {
        registry.register("canvas.noop") { _, _ in .null }
        registry.register("canvas.add") { _, args in
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
        registry.register("canvas.sum") { _, args in
            guard args.count == 1, let list = args[0].arrayValue else {
                throw TaskError.badArguments("canvas.sum", "one list of numbers")
            }
            return try sum(list)
        }
        registry.register("canvas.identity") { _, args in
            guard args.count == 1 else { throw TaskError.badArguments("canvas.identity", "one argument") }
            return args[0]
        }
        registry.register("canvas.sleep") { _, args in
            guard args.count == 1, let seconds = args[0].doubleValue, seconds >= 0 else {
                throw TaskError.badArguments("canvas.sleep", "a number of seconds")
            }
            Thread.sleep(forTimeInterval: seconds)
            return .null
        }
        registry.register("canvas.fail") { _, args in
            throw TaskError(args.first?.stringValue ?? args.first?.jsonText ?? "canvas.fail was called")
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
