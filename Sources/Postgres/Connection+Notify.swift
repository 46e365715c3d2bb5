import CLibPQ
import Foundation

/// A message sent with NOTIFY.
///
/// ```swift
/// try db.listen("reports")
/// if let note = try db.waitForNotification(timeout: 5) {   // nil after 5 s without one
///     print(note.channel, note.payload)   // after `NOTIFY reports, 'ready'`: reports ready
/// }
/// ```
public struct Notification: Sendable, Equatable {
    public var channel: String
    public var payload: String
    public var senderPID: Int32
}

extension Connection {
    /// Subscribes this connection to a channel.
    public func listen(_ channel: String) throws {
        try executeScript("LISTEN \(quoteIdentifier(channel))")
    }

    public func unlisten(_ channel: String) throws {
        try executeScript("UNLISTEN \(quoteIdentifier(channel))")
    }

    /// Waits up to `timeout` seconds for a notification on a channel this connection listens to.
    ///
    /// Blocks only the calling thread (it sleeps in `poll(2)` on the connection's socket).
    /// - Returns: the first pending notification, or nil when the time ran out.
    /// - Throws: `.connectionLost` when the server went away while waiting.
    public func waitForNotification(timeout: Double) throws -> Notification? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if PQconsumeInput(pg) != 1 { throw connectionError(query: nil) }
            if let n = PQnotifies(pg) {
                defer { PQfreemem(n) }
                return Notification(
                    channel: String(cString: n.pointee.relname), payload: String(cString: n.pointee.extra),
                    senderPID: n.pointee.be_pid)
            }
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { return nil }
            var fd = pollfd(fd: PQsocket(pg), events: Int16(POLLIN), revents: 0)
            guard fd.fd >= 0 else { throw connectionError(query: nil) }
            let rc = poll(&fd, 1, Int32(min(remaining * 1000, Double(Int32.max)).rounded(.up)))
            if rc < 0, errno != EINTR {
                throw PostgresError(.connectionLost, message: "poll failed: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Why `waitForActivity` returned.
    /// What ended a wait: a notification, the wake-up descriptor, or the timeout.
    public enum Activity: Sendable, Equatable {
        case notification(Notification)
        /// The extra file descriptor became readable (another thread wants attention).
        case woken
        case timedOut
    }

    /// Like `waitForNotification`, but also returns as soon as `wakeFD` is readable, so a thread
    /// can sleep on the server and on its own work queue at once. Does not read from `wakeFD`.
    public func waitForActivity(timeout: Double, wakeFD: Int32) throws -> Activity {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if PQconsumeInput(pg) != 1 { throw connectionError(query: nil) }
            if let n = PQnotifies(pg) {
                defer { PQfreemem(n) }
                return .notification(
                    Notification(
                        channel: String(cString: n.pointee.relname), payload: String(cString: n.pointee.extra),
                        senderPID: n.pointee.be_pid))
            }
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { return .timedOut }
            var fds = [
                pollfd(fd: PQsocket(pg), events: Int16(POLLIN), revents: 0),
                pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
            ]
            guard fds[0].fd >= 0 else { throw connectionError(query: nil) }
            let rc = poll(&fds, 2, Int32(min(remaining * 1000, Double(Int32.max)).rounded(.up)))
            if rc < 0, errno != EINTR {
                throw PostgresError(.connectionLost, message: "poll failed: \(String(cString: strerror(errno)))")
            }
            if rc > 0, fds[1].revents != 0 { return .woken }
        }
    }

    /// Takes every notification already received, without waiting.
    public func pendingNotifications() throws -> [Notification] {
        if PQconsumeInput(pg) != 1 { throw connectionError(query: nil) }
        var out: [Notification] = []
        while let n = PQnotifies(pg) {
            out.append(
                Notification(
                    channel: String(cString: n.pointee.relname), payload: String(cString: n.pointee.extra),
                    senderPID: n.pointee.be_pid))
            PQfreemem(n)
        }
        return out
    }
}

/// Quotes an SQL identifier ("my table" → "\"my table\"").
public func quoteIdentifier(_ name: String) -> String {
    "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}
