import Foundation

/// A system call that failed, with the errno it left (read once, right after the call).
struct SyscallError: Error, CustomStringConvertible {
    let function: String
    let errno: Int32

    var description: String { "\(function) failed: \(String(cString: strerror(errno)))" }
}

/// What a call on a non-blocking descriptor did: its result, or nothing because it would block.
enum IOResult<T: FixedWidthInteger>: Equatable {
    case processed(T)
    case wouldBlock
}

/// Makes a system call the way every caller here needs it (swift-nio's `syscall(blocking:)`):
/// retried while a signal interrupts it (EINTR), errno read once and turned into a thrown
/// `SyscallError`. On a non-blocking descriptor (`blocking: false`), EAGAIN is no failure: it
/// returns `.wouldBlock`.
///
/// Not for signal handlers: they keep to the bare async-signal-safe call.
@inline(__always)
func syscall<T: FixedWidthInteger>(
    blocking: Bool, _ function: String, _ body: () -> T
) throws(SyscallError) -> IOResult<T> {
    while true {
        let result = body()
        guard result < 0 else { return .processed(result) }
        let error = Glibc.errno
        switch error {
        case EINTR:
            continue
        case EAGAIN where !blocking, EWOULDBLOCK where !blocking:
            return .wouldBlock
        default:
            throw SyscallError(function: function, errno: error)
        }
    }
}

/// `syscall(blocking: true, …)` for a call whose descriptor blocks: its result, never `.wouldBlock`.
@inline(__always)
@discardableResult
func syscall<T: FixedWidthInteger>(_ function: String, _ body: () -> T) throws(SyscallError) -> T {
    guard case .processed(let result) = try syscall(blocking: true, function, body) else {
        // A blocking call never reports EAGAIN as "would block": it is an error there.
        throw SyscallError(function: function, errno: EAGAIN)
    }
    return result
}
