import ArgumentParser
import Postgres

/// `--database-url`, shared by every subcommand that talks to PostgreSQL.
public struct DatabaseOptions: ParsableArguments {
    @Option(
        name: .customLong("database-url"),
        help: ArgumentHelp(
            "A postgres:// URI. Defaults to $DATABASE_URL, then to libpq's PGHOST, PGPORT, PGUSER, PGDATABASE.",
            valueName: "url"))
    public var databaseURL: String?

    public init() {}

    public func configuration(applicationName: String) -> ConnectionConfiguration {
        ConnectionConfiguration.resolve(databaseURL: databaseURL, applicationName: applicationName)
    }

    public func connect(applicationName: String) throws -> Connection {
        try Connection.connect(configuration(applicationName: applicationName))
    }
}
