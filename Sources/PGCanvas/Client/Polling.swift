import Foundation

/// The one way waiting is done here: refused inside a task, then `fetch` polled with a backoff
/// from 5 ms to 100 ms until `isDone` holds or `timeout` passes.
/// - Returns: the last value fetched (done, or the latest when time ran out).
func pollUntilDone<T>(
    timeout: Double, onPoll: ((T) -> Void)?, fetch: () throws -> T, isDone: (T) -> Bool
) throws -> T {
    try TaskExecution.refuseInsideTask()
    let deadline = Date().addingTimeInterval(timeout)
    var interval = 0.005
    while true {
        let value = try fetch()
        onPoll?(value)
        if isDone(value) || Date() >= deadline { return value }
        Thread.sleep(forTimeInterval: min(interval, max(0, deadline.timeIntervalSinceNow)))
        interval = min(interval * 1.5, 0.1)
    }
}
