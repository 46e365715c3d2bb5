import Foundation

/// One numbered SQL file: `0001_voter_rolls.sql` is version 1, named "voter_rolls".
///
/// ```swift
/// let first = Migration(version: 1, name: "reports", sql: "CREATE TABLE report (id bigint PRIMARY KEY)")
/// print(first.fileName)   // 0001_reports.sql
/// try Migrator(migrations: [first], table: "reports_migrations").migrate(db)
/// ```
public struct Migration: Sendable, Equatable {
    public var version: Int
    public var name: String
    public var sql: String

    public var fileName: String { String(format: "%04d_%@.sql", version, name) }

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    /// Reads every `NNNN_name.sql` in a folder, ordered by version.
    /// - Throws: `MigrationError` for a badly named file or two files with one version.
    public static func load(from directory: URL) throws -> [Migration] {
        let files: [String]
        do {
            files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw MigrationError("cannot read migrations folder \(directory.path)")
        }
        var migrations: [Migration] = []
        for file in files where file.hasSuffix(".sql") {
            let stem = file.dropLast(4)
            guard let underscore = stem.firstIndex(of: "_"), let version = Int(stem[..<underscore]), version > 0
            else {
                throw MigrationError("migration file '\(file)' is not named NNNN_name.sql")
            }
            let sql = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
            migrations.append(
                Migration(version: version, name: String(stem[stem.index(after: underscore)...]), sql: sql))
        }
        migrations.sort { $0.version < $1.version }
        for (a, b) in zip(migrations, migrations.dropFirst()) where a.version == b.version {
            throw MigrationError("two migration files have version \(a.version): \(a.fileName), \(b.fileName)")
        }
        return migrations
    }

    /// The migrations shipped inside this package.
    public static func bundled() throws -> [Migration] {
        guard let url = Bundle.module.url(forResource: "SQL", withExtension: nil) else {
            throw MigrationError("the bundled migrations are missing from this build")
        }
        return try load(from: url)
    }
}

/// A migration that cannot be applied: a badly named file, one changed after it was applied, one newer than this build.
///
/// ```swift
/// do {
///     try Migrator(migrations: [edited], table: "reports_migrations").migrate(db)
/// } catch let error as MigrationError {
///     print(error)   // migration 0001_reports.sql was changed after it was applied (…)
/// }
/// ```
public struct MigrationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
