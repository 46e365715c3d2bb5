import Foundation

/// Where to connect, resolved the way libpq users expect: an explicit URL, else `DATABASE_URL`,
/// else libpq's own `PGHOST`/`PGPORT`/`PGUSER`/`PGDATABASE`/`PGPASSWORD` (an empty conninfo).
///
/// ```swift
/// var config = ConnectionConfiguration(conninfo: "postgres://app@db.internal:5432/voters", applicationName: "reports")
/// config.connectTimeout = 5
/// let db = try Connection.connect(config)
/// let fromEnvironment = ConnectionConfiguration.resolve(databaseURL: nil)   // DATABASE_URL, else PG* variables
/// ```
public struct ConnectionConfiguration: Sendable {
    /// A `postgres://` URI or a `key=value` conninfo string; empty means "libpq's defaults".
    public var conninfo: String
    /// Shown in `pg_stat_activity.application_name`.
    public var applicationName: String
    /// Seconds to wait for the server while connecting, unless the conninfo sets
    /// `connect_timeout` itself (nil: libpq's default, which waits as long as the network does).
    public var connectTimeout: Int?

    public init(conninfo: String, applicationName: String = "pgcanvas") {
        self.conninfo = conninfo
        self.applicationName = applicationName
    }

    /// - Parameters:
    ///   - databaseURL: the value of a `--database-url` option, if given.
    ///   - environment: the process environment (injectable for tests).
    public static func resolve(
        databaseURL: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
        applicationName: String = "pgcanvas"
    ) -> ConnectionConfiguration {
        if let databaseURL, !databaseURL.isEmpty {
            return ConnectionConfiguration(conninfo: databaseURL, applicationName: applicationName)
        }
        if let url = environment["DATABASE_URL"], !url.isEmpty {
            return ConnectionConfiguration(conninfo: url, applicationName: applicationName)
        }
        return ConnectionConfiguration(conninfo: "", applicationName: applicationName)
    }

    /// The same server and credentials with another database name (used by tests to create
    /// one database per suite).
    public func withDatabase(_ name: String) -> ConnectionConfiguration {
        var copy = self
        copy.overrideDatabase = name
        return copy
    }

    var overrideDatabase: String?
}
