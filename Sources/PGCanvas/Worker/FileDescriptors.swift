import Foundation

/// Small helpers over file descriptors for pipes between the supervisor and its pool.
enum FD {
    /// A pipe whose ends are close-on-exec and numbered above 9, so they can be dup2'ed onto
    /// fds 3 and 4 in a child without clobbering each other.
    static func pipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        try syscall("pipe") { Glibc.pipe(&fds) }
        defer {
            close(fds[0])
            close(fds[1])
        }
        let r = try syscall("fcntl") { fcntl(fds[0], F_DUPFD_CLOEXEC, 10) }
        do {
            return (r, try syscall("fcntl") { fcntl(fds[1], F_DUPFD_CLOEXEC, 10) })
        } catch {
            close(r)
            throw error
        }
    }

    /// Writes all of `bytes` to a blocking descriptor, retrying on EINTR and short writes.
    /// - Returns: false if the reader is gone.
    @discardableResult
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                guard
                    let n = try? syscall(
                        "write", { Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset) })
                else { return false }
                offset += n
            }
            return true
        }
    }

    static func setNonBlocking(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }
}
