import Foundation
import Logging
import NIOCore
import Postgres

/// Server-sent events for every open page, from one LISTEN connection.
///
/// The hub's thread listens on `canvas_jobs` (new and requeued jobs) and `canvas_dashboard`
/// (worker heartbeats, the dashboard's own actions). When something arrived and at least one
/// browser is connected, it reads the overview once, renders it once, and sends it to every
/// browser, at most once a second. Browsers never query the database on their own schedule.
///
/// `@unchecked Sendable`: `subscribers` and `nextID` are used only with `lock` held; the
/// connection belongs to the hub's thread alone.
final class LiveHub: @unchecked Sendable {
    static let channels = ["canvas_jobs", "canvas_dashboard"]
    private let configuration: ConnectionConfiguration
    private let render: @Sendable (Connection) throws -> HTML
    private let logger: Logger
    private let lock = NSLock()
    private var subscribers: [Int: AsyncStream<ByteBuffer>.Continuation] = [:]
    private var nextID = 0
    private var stopped = false
    /// Most recent rendering, sent at once to a browser that connects.
    private var latest: ByteBuffer?
    /// A browser connected since the last round: render for it without waiting for a change.
    private var newcomer = false

    init(
        configuration: ConnectionConfiguration, logger: Logger, render: @escaping @Sendable (Connection) throws -> HTML
    ) {
        self.configuration = configuration
        self.render = render
        self.logger = logger
    }

    var subscriberCount: Int { lock.withLock { subscribers.count } }

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "dashboard-live"
        thread.start()
    }

    func stop() {
        let ending = lock.withLock {
            stopped = true
            defer { subscribers.removeAll() }
            return Array(subscribers.values)
        }
        // Outside the lock: finishing runs each stream's onTermination, which takes it.
        for c in ending { c.finish() }
    }

    /// A stream of SSE frames for one browser; it ends when the browser goes away.
    func subscribe() -> AsyncStream<ByteBuffer> {
        let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .bufferingNewest(8))
        let id: Int = lock.withLock {
            nextID += 1
            subscribers[nextID] = continuation
            newcomer = true
            return nextID
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.lock.withLock { self?.subscribers.removeValue(forKey: id) }
        }
        continuation.yield(ByteBuffer(string: "retry: 3000\n\n"))
        if let latest = lock.withLock({ latest }) { continuation.yield(latest) }
        return stream
    }

    private func broadcast(_ frame: ByteBuffer) {
        let targets = lock.withLock { Array(subscribers.values) }
        for c in targets { c.yield(frame) }
    }

    /// An SSE frame: one `data:` line per line of the payload.
    static func frame(event: String, data: String) -> ByteBuffer {
        var text = "event: \(event)\n"
        for line in data.split(separator: "\n", omittingEmptySubsequences: false) { text += "data: \(line)\n" }
        return ByteBuffer(string: text + "\n")
    }

    private func run() {
        var connection: Connection?
        var dirty = true
        var lastSent = Date.distantPast
        var lastWrite = Date()
        var lastText = ""
        while !lock.withLock({ stopped }) {
            do {
                if connection == nil || connection?.isHealthy == false {
                    var config = configuration
                    config.connectTimeout = config.connectTimeout ?? 5
                    let c = try Connection.connect(config)
                    try c.executeScript("SET statement_timeout = '10s'; SET jit = off")
                    for channel in Self.channels { try c.listen(channel) }
                    connection = c
                    dirty = true
                }
                guard let c = connection else { continue }
                if let first = try c.waitForNotification(timeout: 1) {
                    _ = first
                    _ = try c.pendingNotifications()
                    dirty = true
                }
                if lock.withLock({ () -> Bool in
                    defer { newcomer = false }
                    return newcomer
                }) {
                    dirty = true
                    lastSent = .distantPast
                }
                let now = Date()
                if dirty, subscriberCount > 0, now.timeIntervalSince(lastSent) >= 1 {
                    dirty = false
                    lastSent = now
                    let html = try render(c)
                    // Heartbeats arrive every few seconds whether or not anything moved: send
                    // only what changed, so pages are not redrawn under the reader's cursor.
                    if html.text != lastText {
                        lastText = html.text
                        let frame = Self.frame(event: "overview", data: html.text)
                        lock.withLock { latest = frame }
                        broadcast(frame)
                        broadcast(Self.frame(event: "change", data: ""))
                        lastWrite = now
                    }
                }
                if now.timeIntervalSince(lastWrite) >= 15 {
                    // A comment keeps proxies from closing a quiet stream, and writing is how a
                    // browser that left is noticed (its stream then ends and is forgotten).
                    lastWrite = now
                    broadcast(ByteBuffer(string: ": ping\n\n"))
                }
                if subscriberCount == 0 {
                    lock.withLock { latest = nil }
                    lastText = ""
                }
            } catch {
                logger.warning("live updates: \(error); reconnecting")
                connection = nil
                Thread.sleep(forTimeInterval: 1)
            }
        }
    }
}
