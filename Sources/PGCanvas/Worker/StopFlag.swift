import Foundation

/// A request to stop, set by one thread (the supervisor's) and read in a loop by another (the
/// broker, maintenance and beat threads). `@unchecked Sendable`: its one stored value is read and
/// written only with `lock` held.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var requested = false

    func request() {
        lock.lock()
        requested = true
        lock.unlock()
    }

    var isRequested: Bool {
        lock.lock()
        defer { lock.unlock() }
        return requested
    }
}
