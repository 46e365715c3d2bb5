import Foundation

/// `pgworker --metrics-port`: `/metrics`, `/healthz` and `/readyz` over plain HTTP, answered one
/// at a time on a thread of their own.
///
/// A scrape every few seconds and a probe or two need no event loop: the thread blocks in
/// `accept`, reads one request (two seconds at most), answers and closes. It shares nothing with
/// the broker loop but `SharedState`'s lock for a few reads, so a slow scraper cannot slow claims.
///
/// `@unchecked Sendable`: `state` is set once, in `serve(state:)`, before the thread starts;
/// after that only the server's thread touches anything.
final class MetricsServer: @unchecked Sendable {
    let metrics: WorkerMetrics
    let configuration: WorkerConfiguration
    private var state: SharedState!
    private let listener: Int32

    /// Binds at once, before the worker registers or spawns anything: a port in use is a
    /// start-up error that leaves nothing behind.
    init(host: String, port: Int, metrics: WorkerMetrics, configuration: WorkerConfiguration) throws {
        self.metrics = metrics
        self.configuration = configuration
        // Close-on-exec: pool processes spawned later must not inherit the listening socket.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw CanvasError("--metrics-port: cannot open a socket") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(fd)
            throw CanvasError("--metrics-host: expected an IPv4 address, not '\(host)'")
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw CanvasError("--metrics-port: cannot listen on \(host):\(port): \(reason)")
        }
        listener = fd
    }

    /// Answers on a thread of its own from now on.
    func serve(state: SharedState) {
        self.state = state
        let thread = Thread { [self] in serve() }
        thread.name = "metrics"
        thread.start()
    }

    private func serve() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            answer(client)
            close(client)
        }
    }

    private func answer(_ client: Int32) {
        var request: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        while request.count < 16_384, !request.containsHeaderEnd {
            let n = read(client, &buffer, buffer.count)
            if n <= 0 { break }
            request.append(contentsOf: buffer[0..<n])
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self).split(separator: " ")
        guard line.count >= 2, line[0] == "GET" || line[0] == "HEAD" else {
            return respond(client, status: "405 Method Not Allowed", type: "text/plain", body: Array("GET only\n".utf8))
        }
        let path = line[1].split(separator: "?").first.map(String.init) ?? ""
        switch path {
        case "/metrics":
            respond(
                client, status: "200 OK", type: "text/plain; version=0.0.4; charset=utf-8",
                body: metrics.registry.emitToBuffer(), head: line[0] == "HEAD")
        case "/healthz":
            let (ok, why) = live()
            respond(
                client, status: ok ? "200 OK" : "503 Service Unavailable", type: "text/plain", body: Array(why.utf8))
        case "/readyz":
            let (ok, why) = ready()
            respond(
                client, status: ok ? "200 OK" : "503 Service Unavailable", type: "text/plain", body: Array(why.utf8))
        default:
            respond(client, status: "404 Not Found", type: "text/plain", body: Array("not found\n".utf8))
        }
    }

    /// Alive while both loops go round: the broker loop wakes at least every poll interval, the
    /// event loop at least every second; past rescue-after, other workers take the jobs anyway.
    func live() -> (Bool, String) {
        let silence = state.loopSilence
        if silence > configuration.rescueAfter {
            return (false, "not alive: a worker loop has not gone round for \(Int(silence)) s\n")
        }
        return (true, "ok\n")
    }

    /// Ready while alive, claiming (not shutting down) and heartbeating within three intervals.
    func ready() -> (Bool, String) {
        let (alive, why) = live()
        guard alive else { return (false, why) }
        guard state.claiming else { return (false, "not ready: shutting down\n") }
        let age = state.heartbeatAge
        let bound = 3 * configuration.heartbeatInterval
        guard age <= bound else {
            return (false, "not ready: last heartbeat \(Int(age)) s ago (more than \(formatSeconds(bound)) s)\n")
        }
        return (true, "ready\n")
    }

    private func respond(_ client: Int32, status: String, type: String, body: [UInt8], head: Bool = false) {
        var out = Array(
            "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
                .utf8)
        if !head { out.append(contentsOf: body) }
        var sent = 0
        while sent < out.count {
            let n = out[sent...].withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            sent += n
        }
    }
}

extension [UInt8] {
    fileprivate var containsHeaderEnd: Bool {
        guard count >= 4 else { return false }
        for i in 0...(count - 4) where self[i] == 13 && self[i + 1] == 10 && self[i + 2] == 13 && self[i + 3] == 10 {
            return true
        }
        return false
    }
}
