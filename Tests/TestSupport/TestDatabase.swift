import Foundation
import Migrations
import Postgres
import VoterRolls

/// A database of its own for one test or suite, created on the server that `DATABASE_URL`
/// (or libpq's PG* variables) names, and dropped by `drop()`.
///
/// Tests that need PostgreSQL fail when none is reachable. Only a local run that sets
/// `PGCANVAS_SKIP_DB_TESTS=1` skips them (see `databaseTestsEnabled`).
public final class TestDatabase: @unchecked Sendable {
    // Immutable after init; `drop()` is called once, by the test that made it.
    public let name: String
    public let configuration: ConnectionConfiguration
    let admin: ConnectionConfiguration

    /// The server to create test databases on.
    public static var adminConfiguration: ConnectionConfiguration {
        ConnectionConfiguration.resolve(databaseURL: nil, applicationName: "pgcanvas-tests")
    }

    /// Creates an empty database, and applies the bundled migrations when `migrated`.
    public init(migrated: Bool = true, function: String = #function) throws {
        admin = Self.adminConfiguration
        let slug = function.lowercased().filter { $0.isLetter || $0.isNumber }.prefix(30)
        name = "pgcanvas_t_\(slug)_\(UInt32.random(in: 0...UInt32.max))"
        let connection = try Connection.connect(admin)
        try connection.executeScript("CREATE DATABASE \(quoteIdentifier(name)) TEMPLATE template0")
        configuration = admin.withDatabase(name)
        if migrated {
            let connection = try connect()
            try VoterRollsMigrations.migrator().migrate(connection)
            try Migrator.bundled().migrate(connection)
        }
    }

    public func connect() throws -> Connection { try Connection.connect(configuration) }

    /// A `postgresql://` URL for this database, for child processes.
    public var url: String {
        let conninfo = admin.conninfo
        if conninfo.hasPrefix("postgres://") || conninfo.hasPrefix("postgresql://"),
            var parsed = URLComponents(string: conninfo)
        {
            parsed.path = "/" + name
            return parsed.string ?? conninfo
        }
        var components = URLComponents()
        components.scheme = "postgresql"
        components.host = ""
        components.path = "/" + name
        var items: [URLQueryItem] = []
        let env = ProcessInfo.processInfo.environment
        for (key, variable) in [("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER")] {
            if let value = env[variable] { items.append(URLQueryItem(name: key, value: value)) }
        }
        components.queryItems = items.isEmpty ? nil : items
        return components.string ?? "postgresql:///\(name)"
    }

    public func drop() {
        guard let connection = try? Connection.connect(admin) else { return }
        _ = try? connection.executeScript("DROP DATABASE IF EXISTS \(quoteIdentifier(name)) WITH (FORCE)")
    }
}

/// False only when a local run asked to skip database tests with `PGCANVAS_SKIP_DB_TESTS=1`.
/// CI never sets it, so a missing database fails there.
public let databaseTestsEnabled: Bool = ProcessInfo.processInfo.environment["PGCANVAS_SKIP_DB_TESTS"] != "1"
