import Foundation
import Logging
import Migrations

/// The demo's own schema (centres, voters, registrations, station assignments), kept apart from
/// pgcanvas's: recorded in `public.voterrolls_migrations`, numbered from 1 on its own.
public enum VoterRollsMigrations {
    public static func migrator() throws -> Migrator {
        guard let url = Bundle.module.url(forResource: "Migrations", withExtension: nil) else {
            throw MigrationError("the voter-roll migrations are missing from this build")
        }
        // Builds before the split recorded 0001_voter_rolls among pgcanvas's own migrations.
        return Migrator(
            migrations: try Migration.load(from: url), table: "voterrolls_migrations", adopting: [1],
            logger: Logger(label: "voterrolls.migrate"))
    }
}
