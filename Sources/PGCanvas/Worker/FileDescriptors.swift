import Foundation

/// Small helpers over file descriptors for pipes between the supervisor and its pool.
enum FD {
    /// A pipe whose ends are close-on-exec and numbered above 9, so they can be dup2'ed onto
    /// fds 3 and 4 in a child without clobbering each other.
    static func pipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        guard Glibc.pipe(&fds) == 0 else { throw CanvasError("pipe failed: \(errnoText())") }
        let r = fcntl(fds[0], F_DUPFD_CLOEXEC, 10)
        let w = fcntl(fds[1], F_DUPFD_CLOEXEC, 10)
        close(fds[0])
        close(fds[1])
        return (r, w)
    }

    /// Writes all of `bytes` to a blocking descriptor, retrying on EINTR and short writes.
    /// - Returns: false if the reader is gone.
    @discardableResult
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += n
            }
            return true
        }
    }

    static func setNonBlocking(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}
