import Postgres

/// Refuses to work on a database that was never migrated, with the one line that says what to do.
///
/// ```swift
/// let db = try Connection.connect(.resolve(databaseURL: nil))
/// try SchemaCheck.requireCanvasSchema(on: db)   // CanvasError: "… run 'voteradmin migrate' first"
/// ```
public enum SchemaCheck {
    public static func requireCanvasSchema(on c: Connection) throws {
        let present: Bool = try c.query("SELECT to_regclass('canvas.jobs') IS NOT NULL")[0].decode(Bool.self, 0)
        if !present {
            throw CanvasError(
                "the database has no canvas schema: run 'voteradmin migrate' (or PGCanvasMigrations.apply) first")
        }
    }
}
