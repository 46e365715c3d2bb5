import Foundation
import Postgres

/// How `voteradmin dashboard` runs: where it listens, who may use it, whether it may act.
///
/// ```swift
/// var config = try DashboardConfiguration(bind: "127.0.0.1:8080", database: .resolve(databaseURL: nil))
/// config.readOnly = true
/// try await DashboardServer(configuration: config).run()
/// ```
public struct DashboardConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var database: ConnectionConfiguration
    /// Hides every action and refuses every POST.
    public var readOnly = false
    /// Basic auth; required off loopback (`PGCANVAS_DASHBOARD_USER` / `PGCANVAS_DASHBOARD_PASSWORD`).
    public var credentials: (user: String, password: String)?
    /// Connections for page requests (the live updates have one more of their own).
    public var poolSize = 4
    /// Pages an application adds (the voter-roll demo adds its station lists).
    public var extraPages: [ExtraPage] = []

    /// - Throws: `DashboardConfigurationError` for a malformed `host:port`.
    public init(bind: String, database: ConnectionConfiguration) throws {
        guard let colon = bind.lastIndex(of: ":"), let port = Int(bind[bind.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw DashboardConfigurationError("--bind expects HOST:PORT (e.g. 127.0.0.1:8080), not '\(bind)'")
        }
        var host = String(bind[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw DashboardConfigurationError("--bind expects HOST:PORT, not '\(bind)'") }
        self.host = host
        self.port = port
        self.database = database
    }

    /// Reads the credentials from the environment (both or neither).
    public mutating func readCredentials(from environment: [String: String]) throws {
        let user = environment["PGCANVAS_DASHBOARD_USER"].flatMap { $0.isEmpty ? nil : $0 }
        let password = environment["PGCANVAS_DASHBOARD_PASSWORD"].flatMap { $0.isEmpty ? nil : $0 }
        switch (user, password) {
        case (let u?, let p?): credentials = (u, p)
        case (nil, nil): credentials = nil
        default:
            throw DashboardConfigurationError(
                "set both PGCANVAS_DASHBOARD_USER and PGCANVAS_DASHBOARD_PASSWORD, or neither")
        }
    }

    public var isLoopback: Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Refuses to serve an unauthenticated dashboard beyond this machine.
    public func validate() throws {
        if !isLoopback && credentials == nil {
            throw DashboardConfigurationError(
                "refusing to listen on \(host):\(port) without credentials: set PGCANVAS_DASHBOARD_USER and PGCANVAS_DASHBOARD_PASSWORD, or bind 127.0.0.1"
            )
        }
    }
}

/// One line saying what is wrong with the dashboard's settings.
public struct DashboardConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A page an application adds to the dashboard's navigation.
public struct ExtraPage: Sendable {
    public var path: String
    public var title: String
    /// Renders the page's body on a pool connection (blocking is fine there).
    public var render: @Sendable (Connection, [String: String]) throws -> HTML
    /// Files the page links to, served under `path/files/NAME`: name → local file URL, or nil.
    public var file: (@Sendable (String) -> URL?)?

    public init(
        path: String, title: String, render: @escaping @Sendable (Connection, [String: String]) throws -> HTML,
        file: (@Sendable (String) -> URL?)? = nil
    ) {
        self.path = path
        self.title = title
        self.render = render
        self.file = file
    }
}
