import Postgres

/// Polling stations within a centre: voters ordered by name, 500 a station, numbered from 1.
/// Computed by PostgreSQL in one statement, never row by row.
public enum StationAssignment {
    public static let votersPerStation = 500

    /// Replaces every assignment in one transaction: the table is emptied and filled by one
    /// INSERT … SELECT.
    ///
    /// Because the whole table is replaced, it is loaded the way PostgreSQL's "Populating a
    /// Database" advises: keys and foreign keys are dropped first and made again after, so they
    /// are built and checked once, set-wise, instead of once per row. At a million voters that is
    /// 3.9 s instead of 16.5 s. That takes the table owner's rights, which a worker does not have:
    /// the owner's `refresh_station_assignments` (SECURITY DEFINER, migrations 0016 and 0017) does
    /// it, and the worker role only executes it. Each row keeps the voter's place in the centre's
    /// name order (`voter_position`), which the station lists are printed by.
    /// - Returns: the voters assigned.
    @discardableResult
    public static func refreshAll(on c: Connection) throws -> Int {
        try c.query("SELECT refresh_station_assignments(\(Int32(votersPerStation)))")[0].decode(Int.self, 0)
    }

    /// Replaces the assignments of one centre (the per-centre tasks of options 1, 3 and 4).
    /// The parents are locked first (reading them takes no more), in the demo's order: a full
    /// refresh, which locks them before station_assignment, then waits for this one instead of
    /// the two deadlocking.
    public static func refresh(center: Int, on c: Connection) throws {
        try c.withTransaction { tx in
            try tx.execute("LOCK voter, polling_center, voter_registration IN ACCESS SHARE MODE")
            try tx.execute("DELETE FROM station_assignment WHERE center_id = \(center)")
            try tx.execute(
                """
                INSERT INTO station_assignment (voter_id, center_id, station_id, voter_position, voter_name)
                SELECT voter_id, center_id, (position - 1) / \(votersPerStation) + 1, position, voter_name
                FROM (SELECT r.voter_id, r.center_id, v.voter_name,
                             row_number() OVER (ORDER BY v.voter_name, v.voter_id)::integer AS position
                      FROM voter_registration r JOIN voter v USING (voter_id)
                      WHERE r.center_id = \(center)) ranked
                """)
        }
    }

    public static func deleteAll(on c: Connection) throws {
        try c.execute("DELETE FROM station_assignment")
    }

    public struct Center: Sendable {
        public var id: Int
        public var name: String
    }

    public static func centers(on c: Connection) throws -> [Center] {
        try c.query("SELECT center_id, center_name FROM polling_center ORDER BY center_id").map {
            Center(id: try $0.decode(Int.self, 0), name: try $0.decode(String.self, 1))
        }
    }

    public static func center(_ id: Int, on c: Connection) throws -> Center? {
        try c.query("SELECT center_id, center_name FROM polling_center WHERE center_id = \(id)").first.map {
            Center(id: try $0.decode(Int.self, 0), name: try $0.decode(String.self, 1))
        }
    }

    /// Every (centre, station) pair that has voters, in order.
    public static func stations(on c: Connection) throws -> [(center: Int, station: Int)] {
        try c.query("SELECT DISTINCT center_id, station_id FROM station_assignment ORDER BY 1, 2").map {
            (try $0.decode(Int.self, 0), try $0.decode(Int.self, 1))
        }
    }

    public static func stations(center: Int, on c: Connection) throws -> [Int] {
        try c.query(
            "SELECT DISTINCT station_id FROM station_assignment WHERE center_id = \(center) ORDER BY 1"
        ).map { try $0.decode(Int.self, 0) }
    }

    /// The voters of one station, in the order they are printed: the place in the centre's name
    /// order that the assignment stored (migration 0017), read in station-index order, so no
    /// station sorts its names again, with the names the assignment carries (migration 0019), so
    /// no station probes `voter` 500 times.
    public static func voterNames(center: Int, station: Int, on c: Connection) throws -> [String] {
        try c.query(
            """
            SELECT s.voter_name
            FROM station_assignment s
            WHERE s.center_id = \(center) AND s.station_id = \(station)
            ORDER BY s.voter_position
            """
        ).map { try $0.decode(String.self, 0) }
    }
}
