import Foundation
import HelloTasks
import PGCanvas
import Postgres

// Runs a chord of typed adds with a typed body, mixes in an untyped built-in task, shows a
// task's error coming back from `get`, and exits 0 only if every result is what it should be.
let db = try Connection.connect(ConnectionConfiguration.resolve(databaseURL: nil, applicationName: "hello"))
let n = Int(CommandLine.arguments.dropFirst().first ?? "") ?? 10

let header = try (1...n).map { try add.signature(Pair(a: $0, b: $0)) }
let handle = try chord(header, body: summarize.signature()).enqueue(on: db)
let summary = try await summarize.result(of: handle, on: db, timeout: 120)
print("chord of \(n): total \(summary.total) from \(summary.parts) parts")

// Typed and untyped tasks in one canvas: canvas.add is a built-in JSON task.
let mixed = try chain([try add.signature(Pair(a: 2, b: 3)), signature("canvas.add", .int(10))]).enqueue(on: db)
let fifteen: JSONValue? = try mixed.wait(on: db, timeout: 60).result
print("typed then untyped: \(fifteen?.jsonText ?? "nothing")")

var failed = false
do {
    _ = try await refuse.enqueue("no reason", on: db).get(on: db, timeout: 60)
} catch let failure as TaskFailure {
    print("hello.refuse failed as it should: \(failure.message)")
    failed = true
}

let expected = (1...n).reduce(0) { $0 + 2 * $1 }
guard summary.total == expected, summary.parts == n, fifteen == .int(15), failed else {
    print("unexpected results")
    exit(1)
}
print("all results as expected")
