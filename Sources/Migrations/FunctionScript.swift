import Foundation

/// One file of SQL functions: `functions/broker.sql` holds the broker protocol, and so on, one
/// file per concern. Unlike numbered migrations, these are applied again whenever any of them
/// changes, so each function is written once and edited in place.
///
/// ```swift
/// let scripts = try FunctionScript.bundled()
/// print(scripts.map(\.fileName))   // ["functions/beat.sql", "functions/broker.sql", …]
/// let migrator = Migrator(migrations: try Migration.bundled(), functions: scripts)   // as Migrator.bundled() does
/// ```
public struct FunctionScript: Sendable, Equatable {
    public var name: String
    public var sql: String

    public var fileName: String { "functions/\(name).sql" }

    public init(name: String, sql: String) {
        self.name = name
        self.sql = sql
    }

    /// Reads every `name.sql` in a folder, ordered by name.
    public static func load(from directory: URL) throws -> [FunctionScript] {
        let files: [String]
        do {
            files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw MigrationError("cannot read functions folder \(directory.path)")
        }
        return try files.filter { $0.hasSuffix(".sql") }.sorted().map { file in
            FunctionScript(
                name: String(file.dropLast(4)),
                sql: try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8))
        }
    }

    /// The function files shipped inside this package.
    public static func bundled() throws -> [FunctionScript] {
        guard let url = Bundle.module.url(forResource: "SQL", withExtension: nil) else {
            throw MigrationError("the bundled migrations are missing from this build")
        }
        return try load(from: url.appendingPathComponent("functions"))
    }
}
