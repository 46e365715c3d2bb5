import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Migrations
import PGCanvas
import Postgres
import ServiceLifecycle

/// The web dashboard: pages, actions, live updates, `/metrics`, `/healthz` and `/readyz`.
///
/// ```swift
/// let config = try DashboardConfiguration(bind: "127.0.0.1:8080", database: .resolve(databaseURL: nil))
/// try await DashboardServer(configuration: config, logger: Logger(label: "dashboard")).run()
/// ```
public struct DashboardServer: Sendable {
    let configuration: DashboardConfiguration
    let logger: Logger
    let pool: DatabasePool
    let hub: LiveHub
    let metrics = DashboardMetrics()
    let layout: Layout
    /// A per-process secret: every form carries it and every POST must return it. Another site
    /// cannot read a page of ours, so it cannot know it (a synchronizer token).
    let csrfToken: String

    public init(configuration: DashboardConfiguration, logger: Logger) throws {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
        pool = DatabasePool(
            configuration: configuration.database.withApplicationName("pgcanvas-dashboard"),
            size: configuration.poolSize)
        var bytes = [UInt8](repeating: 0, count: 32)
        var generator = SystemRandomNumberGenerator()
        for i in bytes.indices { bytes[i] = generator.next() }
        csrfToken = bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
        var layout = Layout(readOnly: configuration.readOnly, csrfToken: csrfToken)
        layout.extraPages = configuration.extraPages.map { ($0.path, $0.title) }
        self.layout = layout
        let renderLayout = layout
        hub = LiveHub(
            configuration: configuration.database.withApplicationName("pgcanvas-dashboard-live"), logger: logger
        ) {
            c in renderLayout.overviewFragment(try Store.overview(on: c))
        }
    }

    /// Serves until SIGTERM or SIGINT. `onRunning` gets the port actually bound (for port 0).
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let router = Router()
        router.middlewares.add(SecurityHeaders())
        if let credentials = configuration.credentials {
            router.middlewares.add(BasicAuth(user: credentials.user, password: credentials.password))
        }
        addRoutes(to: router)
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
        // Shut down in reverse order: the hub first, which ends every event stream, then the
        // server, which waits for open responses.
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: app), .init(service: LiveHubService(hub: hub))],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    func html(_ body: HTML, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: body.text)))
    }

    func text(_ body: String, status: HTTPResponse.Status = .ok, type: String = "text/plain; charset=utf-8") -> Response
    {
        Response(status: status, headers: [.contentType: type], body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    func redirect(_ location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location])
    }

    /// A page, or a page saying what went wrong (the database is down, a statement timed out).
    func page(
        title: String, active: String, live: String? = nil, _ body: @escaping @Sendable (Connection) throws -> HTML?
    )
        async -> Response
    {
        do {
            guard let content = try await pool.withConnection(body) else {
                return html(
                    layout.page(title: "Not found", active: active, body: "<p>Nothing here.</p>"), status: .notFound)
            }
            return html(
                layout.page(title: title, active: active, body: "<div id=\"live\">\(content)</div>", live: live))
        } catch {
            logger.error("page failed", metadata: ["page": "\(title)", "error": "\(error)"])
            return html(
                layout.page(
                    title: title, active: active,
                    body: "<p class=\"problem\">Cannot read the database: \(String(describing: error))</p>"),
                status: .serviceUnavailable)
        }
    }

    func fragment(_ body: @escaping @Sendable (Connection) throws -> HTML?) async -> Response {
        do {
            guard let content = try await pool.withConnection(body) else { return text("not found", status: .notFound) }
            return html(content)
        } catch {
            return text("cannot read the database", status: .serviceUnavailable)
        }
    }
}

/// Runs the live-update hub beside the server, and ends every event stream when a shutdown
/// begins: the server waits for open responses, and a stream would otherwise never end.
struct LiveHubService: Service {
    let hub: LiveHub

    func run() async throws {
        hub.start()
        // Returns at the start of a graceful shutdown, or throws when cancelled: stop either way.
        try? await gracefulShutdown()
        hub.stop()
    }
}

extension ConnectionConfiguration {
    func withApplicationName(_ name: String) -> ConnectionConfiguration {
        var copy = self
        copy.applicationName = name
        return copy
    }
}

/// Headers that keep the pages from being framed, sniffed or made to run foreign script: with
/// `script-src 'self'`, even markup that escaped escaping could not run inline code.
struct SecurityHeaders<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var response = try await next(request, context)
        response.headers[.contentSecurityPolicy] =
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        response.headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
        return response
    }
}

/// Basic auth on everything but the probes (a kubelet probes without credentials).
struct BasicAuth<Context: RequestContext>: RouterMiddleware {
    let expected: [UInt8]

    init(user: String, password: String) {
        expected = Array(("Basic " + Data("\(user):\(password)".utf8).base64EncodedString()).utf8)
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        if request.uri.path == "/healthz" || request.uri.path == "/readyz" { return try await next(request, context) }
        let given = Array((request.headers[.authorization] ?? "").utf8)
        guard constantTimeEqual(given, expected) else {
            return Response(
                status: .unauthorized, headers: [.wwwAuthenticate: "Basic realm=\"pgcanvas\", charset=\"UTF-8\""])
        }
        return try await next(request, context)
    }
}

/// Compares without stopping at the first difference, so timing tells nothing about a secret.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = UInt8(a.count == b.count ? 0 : 1)
    for i in 0..<max(a.count, b.count) {
        difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
    }
    return difference == 0
}
