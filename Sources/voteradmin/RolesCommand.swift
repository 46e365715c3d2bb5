import ArgumentParser
import CommandSupport
import Foundation
import Postgres

/// `voteradmin roles`: least-privilege roles for this database, created if missing and granted
/// afresh (run it again after each `voteradmin migrate`):
///
/// - the owner owns the `canvas` schema and the demo's tables, functions and sequences; it runs
///   migrations (DDL);
/// - the worker may execute the `canvas` functions and the owner's
///   `refresh_station_assignments`, and read and write rows (no DDL, no TRUNCATE, no ownership);
/// - the reader may only read (dashboards, reports).
///
/// The roles are NOLOGIN groups: log in with roles of your own made members of them
/// (`CREATE ROLE app_worker LOGIN IN ROLE pgcanvas_worker`); migrations run as the owner itself.
struct RolesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "roles",
        abstract: "Create the owner, worker and read-only roles and grant them what they need (run after migrate).")

    @OptionGroup var database: DatabaseOptions

    @Option(help: "The role that owns the schema and runs migrations.")
    var owner = "pgcanvas_owner"

    @Option(help: "The role workers log in through (DML and the canvas functions, no DDL).")
    var worker = "pgcanvas_worker"

    @Option(help: "The read-only role (dashboards, reports).")
    var reader = "pgcanvas_reader"

    func validate() throws {
        for (option, name) in [("--owner", owner), ("--worker", worker), ("--reader", reader)] {
            guard Self.isPlainName(name) else {
                throw ValidationError(
                    "\(option) '\(name)' is not a plain role name (lower-case letters, digits and _, at most 63)")
            }
        }
        guard Set([owner, worker, reader]).count == 3 else {
            throw ValidationError("--owner, --worker and --reader must be three different roles")
        }
    }

    static func isPlainName(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 63, !(48...57).contains(first) else { return false }
        return name.utf8.allSatisfy { (97...122).contains($0) || (48...57).contains($0) || $0 == 95 }
    }

    func run() throws {
        let c = try database.connect(applicationName: "voteradmin roles")
        guard try c.query("SELECT to_regnamespace('canvas') IS NOT NULL")[0].decode(Bool.self, 0) else {
            throw CommandFailure("the database has no canvas schema: run 'voteradmin migrate' first")
        }
        do {
            try c.withTransaction { tx in
                try tx.executeScript(Self.script(owner: owner, worker: worker, reader: reader))
            }
        } catch let error as PostgresError where error.sqlState == "42501" {
            throw CommandFailure(
                "not allowed to set up roles: \(error.message) (run 'voteradmin roles' as a superuser, "
                    + "or as a role with CREATEROLE that owns the schema)")
        }
        print("Roles ready: \(owner) owns the schema, \(worker) runs tasks, \(reader) reads.")
    }

    /// The whole set-up, idempotent. Role names are plain identifiers (validated), so quoting
    /// them is enough; nothing else comes from outside.
    static func script(owner: String, worker: String, reader: String) -> String {
        let o = quoteIdentifier(owner)
        let w = quoteIdentifier(worker)
        let r = quoteIdentifier(reader)
        return """
            DO $roles$
            BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '\(owner)') THEN CREATE ROLE \(o) NOLOGIN; END IF;
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '\(worker)') THEN CREATE ROLE \(w) NOLOGIN; END IF;
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '\(reader)') THEN CREATE ROLE \(r) NOLOGIN; END IF;
            END
            $roles$;

            -- The owner takes over the canvas schema and what the migrations made in the app's
            -- schema (tables, their sequences, types, functions; not extensions' objects).
            ALTER SCHEMA canvas OWNER TO \(o);
            DO $own$
            DECLARE
                item record;
            BEGIN
                FOR item IN
                    SELECT format('ALTER %s %s OWNER TO %I',
                                  CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                                 WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'c' THEN 'TYPE'
                                                 ELSE 'TABLE' END,
                                  c.oid::regclass, '\(owner)') AS statement
                    FROM pg_class c
                    WHERE c.relnamespace IN ('canvas'::regnamespace, current_schema()::regnamespace)
                      AND c.relkind IN ('r', 'p', 'v', 'm', 'c', 'S')
                      -- Identity and serial sequences follow their table; extensions keep theirs.
                      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                        AND d.deptype IN ('a', 'i', 'e'))
                    UNION ALL
                    SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, '\(owner)')
                    FROM pg_proc p
                    WHERE p.pronamespace IN ('canvas'::regnamespace, current_schema()::regnamespace)
                      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
                LOOP
                    EXECUTE item.statement;
                END LOOP;
                EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO %I', current_schema(), '\(owner)');
                -- PostgreSQL 15's default, made explicit for older servers: nobody else creates here.
                EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', current_schema());
                EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I, %I', current_schema(), '\(worker)', '\(reader)');
                EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
                               current_schema(), '\(worker)');
                EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', current_schema(), '\(worker)');
                EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', current_schema(), '\(reader)');
                EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I '
                               'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I', '\(owner)', current_schema(), '\(worker)');
                EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I '
                               'GRANT USAGE, SELECT ON SEQUENCES TO %I', '\(owner)', current_schema(), '\(worker)');
                EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I GRANT SELECT ON TABLES TO %I',
                               '\(owner)', current_schema(), '\(reader)');
                -- What only migrations write.
                IF to_regclass('pgcanvas_migrations') IS NOT NULL THEN
                    EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON pgcanvas_migrations FROM %I', '\(worker)');
                END IF;
                IF to_regclass('pgcanvas_functions') IS NOT NULL THEN
                    EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON pgcanvas_functions FROM %I', '\(worker)');
                END IF;
                IF to_regclass('voterrolls_migrations') IS NOT NULL THEN
                    EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON voterrolls_migrations FROM %I', '\(worker)');
                END IF;
                IF to_regprocedure('refresh_station_assignments(integer)') IS NOT NULL THEN
                    EXECUTE format('GRANT EXECUTE ON FUNCTION refresh_station_assignments(integer) TO %I', '\(worker)');
                END IF;
            END
            $own$;

            -- The connection budget counts every client on the server (pg_stat_activity); without
            -- this a worker sees other roles' sessions without their kind and would undercount.
            GRANT pg_read_all_stats TO \(w);
            GRANT USAGE ON SCHEMA canvas TO \(w), \(r);
            GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA canvas TO \(w);
            GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA canvas TO \(w);
            GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA canvas TO \(w);
            GRANT SELECT ON ALL TABLES IN SCHEMA canvas TO \(r);
            -- Function files are dropped and made again by every migrate that changes one: new
            -- objects of the owner's get the same grants.
            ALTER DEFAULT PRIVILEGES FOR ROLE \(o) IN SCHEMA canvas
                GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO \(w);
            ALTER DEFAULT PRIVILEGES FOR ROLE \(o) IN SCHEMA canvas GRANT USAGE, SELECT ON SEQUENCES TO \(w);
            ALTER DEFAULT PRIVILEGES FOR ROLE \(o) IN SCHEMA canvas GRANT EXECUTE ON FUNCTIONS TO \(w);
            ALTER DEFAULT PRIVILEGES FOR ROLE \(o) IN SCHEMA canvas GRANT SELECT ON TABLES TO \(r);
            -- Neither may create anything, in any schema of this database.
            REVOKE CREATE ON SCHEMA canvas FROM \(w), \(r);
            """
    }
}
