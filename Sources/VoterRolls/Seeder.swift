import Foundation
import Logging
import Postgres

public struct SeedError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Fills the voter database with fake data, as the original's `create_fake_voter_data` does.
public struct Seeder: Sendable {
    /// 8-digit voter ids allow 90 million voters.
    public static let maxVoters = 90_000_000

    public struct Summary: Sendable, Equatable {
        public var centers: Int
        public var voters: Int
        public var largestCenter: Int
        public var smallestCenter: Int
    }

    public var names: NameBank
    public var logger: Logger

    public init(names: NameBank, logger: Logger = Logger(label: "pgcanvas.seed")) {
        self.names = names
        self.logger = logger
    }

    public static func centerCount(voters: Int) -> Int { max(1, voters / 1000) }

    /// Replaces all voter data with `voters` fake voters in one transaction: a seed that fails
    /// leaves the earlier data as it was.
    ///
    /// - Parameters:
    ///   - randomSeed: the same seed gives the same data; nil draws one.
    ///   - progress: called now and then with (voters written, voters total).
    /// - Throws: `SeedError` for a count out of range, `PostgresError` from the server.
    @discardableResult
    public func seed(
        _ connection: Connection, voters: Int, randomSeed: UInt64? = nil,
        progress: ((Int, Int) -> Void)? = nil
    ) throws -> Summary {
        guard (1...Self.maxVoters).contains(voters) else {
            throw SeedError("the voter count must be between 1 and \(Self.maxVoters) (voter ids have 8 digits)")
        }
        let seed = randomSeed ?? UInt64.random(in: 0...UInt64.max)
        var generator = SeededGenerator(seed: seed)
        let centerCount = Self.centerCount(voters: voters)

        let centerIDs = UniqueIDs(lower: 10_000, upper: 99_999, key: generator.next())
        let voterIDs = UniqueIDs(lower: 10_000_000, upper: 99_999_999, key: generator.next())
        let centerNames = CenterNames.make(count: centerCount, names: names, generator: &generator)
        let cumulative = Self.dirichletCumulative(count: centerCount, generator: &generator)

        var perCenter = [Int](repeating: 0, count: centerCount)
        try connection.withTransaction { tx in
            // Tables locked in the demo's order, parents first (docs/operations.md): a full station
            // refresh running meanwhile waits instead of deadlocking.
            try tx.executeScript("TRUNCATE voter, polling_center, voter_registration, station_assignment")
            try tx.copyIn("COPY polling_center (center_id, center_name) FROM STDIN") { w in
                for i in 0..<centerCount { try w.write([String(centerIDs[i]), centerNames[i]]) }
            }
            // Voters and their registrations are drawn together, then loaded table by table.
            var registrations: [Int32] = []
            registrations.reserveCapacity(voters)
            let step = max(1, voters / 200)
            try tx.copyIn("COPY voter (voter_id, voter_name) FROM STDIN") { w in
                for i in 0..<voters {
                    try w.write([String(voterIDs[i]), names.personName(&generator)])
                    let center = Self.pick(cumulative, generator.nextUnitInterval())
                    registrations.append(Int32(center))
                    perCenter[center] += 1
                    if i % step == 0 { progress?(i / 2, voters) }
                }
            }
            try tx.copyIn("COPY voter_registration (voter_id, center_id) FROM STDIN") { w in
                for i in 0..<voters {
                    try w.write([String(voterIDs[i]), String(centerIDs[Int(registrations[i])])])
                    if i % step == 0 { progress?(voters / 2 + i / 2, voters) }
                }
            }
            try tx.executeScript("ANALYZE polling_center; ANALYZE voter; ANALYZE voter_registration")
        }
        progress?(voters, voters)
        logger.info(
            "seeded",
            metadata: ["seed.voters": "\(voters)", "seed.centers": "\(centerCount)", "seed.random_seed": "\(seed)"])
        return Summary(
            centers: centerCount, voters: voters, largestCenter: perCenter.max() ?? 0,
            smallestCenter: perCenter.min() ?? 0)
    }

    /// Centre weights from Dirichlet(1, …, 1) — normalised Exponential(1) draws — as a
    /// cumulative distribution, so some centres are large and some tiny.
    static func dirichletCumulative(count: Int, generator: inout SeededGenerator) -> [Double] {
        var weights = (0..<count).map { _ in -Foundation.log(generator.nextUnitInterval()) }
        let total = weights.reduce(0, +)
        var running = 0.0
        for i in weights.indices {
            running += weights[i] / total
            weights[i] = running
        }
        weights[count - 1] = 1.0
        return weights
    }

    /// The first index whose cumulative weight reaches `u` (binary search).
    static func pick(_ cumulative: [Double], _ u: Double) -> Int {
        var low = 0
        var high = cumulative.count - 1
        while low < high {
            let mid = (low + high) / 2
            if cumulative[mid] < u { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
