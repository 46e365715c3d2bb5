import Foundation
import PGCanvas

/// How `enqueue --wait` and `result` print a job.
enum OutcomePrinter {
    static func print(_ status: CanvasStatus, elapsed: Double?, json: Bool) {
        if json {
            var object: [String: JSONValue] = [
                "id": .int(Int(status.id)), "kind": .string(status.kind), "state": .string(status.state.rawValue),
                "celery_state": .string(status.celeryState), "result": status.result ?? .null,
                "error": status.error.map(JSONValue.string) ?? .null,
            ]
            if let elapsed { object["elapsed_s"] = .double((elapsed * 1000).rounded() / 1000) }
            Swift.print(JSONValue.object(object).jsonText)
            return
        }
        Swift.print("canvas \(status.id) (\(status.kind)): \(status.state.rawValue) (\(status.celeryState))")
        if status.kind != "root" {
            let done = status.size - status.remaining
            let failed = status.memberStates["failed"] ?? 0
            Swift.print(
                "members: \(done) done, \(failed) failed, \(max(0, status.size - done - failed)) pending of \(status.size)"
            )
            if let bodyID = status.bodyID {
                Swift.print("body: job \(bodyID) \(status.bodyState?.rawValue ?? "?")")
            } else if status.kind == "chord" {
                Swift.print("body: not enqueued")
            }
        } else if let inner = status.innerID {
            Swift.print("inside: chord or group \(inner) (voteradmin result \(inner))")
        }
        if let result = status.result { Swift.print("result: \(result.jsonText)") }
        if let error = status.error { Swift.print("error: \(error)") }
        if let elapsed { Swift.print(String(format: "elapsed: %.3f s", elapsed)) }
    }

    static func print(_ status: JobStatus, elapsed: Double?, json: Bool) {
        if json {
            var object: [String: JSONValue] = [
                "id": .int(Int(status.id)), "task": .string(status.task), "state": .string(status.state.rawValue),
                "celery_state": .string(status.celeryState), "result": status.result ?? .null,
                "error": status.error.map(JSONValue.string) ?? .null,
                "error_type": status.errorType.map(JSONValue.string) ?? .null, "attempt": .int(status.attempt),
            ]
            if let elapsed { object["elapsed_s"] = .double((elapsed * 1000).rounded() / 1000) }
            Swift.print(JSONValue.object(object).jsonText)
            return
        }
        Swift.print("job \(status.id) \(status.task): \(status.state.rawValue) (\(status.celeryState))")
        if let kwargs = status.kwargs { Swift.print("kwargs: \(kwargs.jsonText)") }
        if let result = status.result { Swift.print("result: \(result.jsonText)") }
        if let error = status.error { Swift.print("error: \(error)") }
        if let errorType = status.errorType { Swift.print("error type: \(errorType)") }
        Swift.print(
            "attempts: \(status.attempt) of \(status.maxAttempts)"
                + (status.crashes > 0 ? ", \(status.crashes) crashes" : ""))
        if let started = status.startedAt, let finished = status.finishedAt {
            Swift.print(
                String(
                    format: "ran: %.3f s (queued %.3f s)", finished.timeIntervalSince(started),
                    started.timeIntervalSince(status.createdAt)))
        }
        if let elapsed { Swift.print(String(format: "elapsed: %.3f s", elapsed)) }
    }
}
