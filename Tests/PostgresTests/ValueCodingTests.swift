import Foundation
import Testing

@testable import Postgres

/// Text-format encoding and decoding, without a server.
@Suite struct ValueCodingTests {
    @Test func arrayLiteralRoundTripsAwkwardStrings() throws {
        let values: [String?] = [
            "plain", "with space", "quote \" inside", "back\\slash", "{braces}", "a,b", "NULL", nil, "",
        ]
        let literal = PostgresArrayLiteral.encode(values)
        #expect(try PostgresArrayLiteral.decode(literal) == values)
    }

    @Test func arrayLiteralDecodesServerForms() throws {
        #expect(try PostgresArrayLiteral.decode("{}") == [])
        #expect(try PostgresArrayLiteral.decode("{1,2,NULL}") == ["1", "2", nil])
        #expect(try PostgresArrayLiteral.decode("[0:1]={a,b}") == ["a", "b"])
        #expect(throws: PostgresError.self) { try PostgresArrayLiteral.decode("1,2") }
    }

    @Test func timestampsRoundTripToTheMicrosecond() throws {
        let date = Date(timeIntervalSince1970: 1_795_000_000.123456)
        let text = PostgresTimestamp.format(date)
        #expect(text == "2026-11-18 11:06:40.123456+00")
        let parsed = try #require(PostgresTimestamp.parse(text))
        #expect(abs(parsed.timeIntervalSince1970 - date.timeIntervalSince1970) < 0.000_001)
        let offset = try #require(PostgresTimestamp.parse("2026-11-18 13:06:40+02"))
        #expect(offset.timeIntervalSince1970 == 1_795_000_000)
        #expect(PostgresTimestamp.parse("yesterday") == nil)
    }

    /// Whatever `TimeZone` the server runs in, the offset it writes decides the instant.
    @Test func timestampsParseEveryOffsetTheServerWrites() throws {
        let instant = 1_795_000_000.0
        for (text, expected) in [
            ("2026-11-18 16:51:40+05:45", instant),  // Asia/Kathmandu
            ("2026-11-18 07:36:40-03:30", instant),  // America/St_Johns
            ("2026-11-18 11:06:40.5+00", instant + 0.5),
            ("2026-11-18 11:06:40", instant),  // timestamp without time zone
            ("1900-01-01 00:00:00+00:09:21", -2_208_989_361.0),  // Europe/Paris before 1911
            ("1900-01-01 00:00:00-00:09:21", -2_208_988_239.0),
        ] {
            let parsed = try #require(PostgresTimestamp.parse(text), "\(text)")
            #expect(parsed.timeIntervalSince1970 == expected, "\(text)")
        }
        for bad in [
            "2026-11-18 11:06:40+", "2026-11-18 11:06:40+5", "2026-11-18 11:06:40+05:4", "infinity",
            "2026-11-18 11:06:40+00 BC", "2026-11-18 11:06:40+00:0x",
        ] {
            #expect(PostgresTimestamp.parse(bad) == nil, "\(bad)")
        }
    }

    @Test func interpolationBindsValuesInsteadOfSplicingThem() {
        let name = "Robert'); DROP TABLE voter;--"
        let query: Query = "SELECT * FROM voter WHERE voter_name = \(name) AND voter_id = \(42)"
        #expect(query.sql == "SELECT * FROM voter WHERE voter_name = $1 AND voter_id = $2")
        #expect(query.parameters.map(\.text) == [name, "42"])
    }

    @Test func configurationPrefersFlagThenDatabaseURLThenLibpqDefaults() {
        let env = ["DATABASE_URL": "postgresql:///from_env"]
        #expect(
            ConnectionConfiguration.resolve(databaseURL: "postgresql:///flag", environment: env).conninfo
                == "postgresql:///flag")
        #expect(
            ConnectionConfiguration.resolve(databaseURL: nil, environment: env).conninfo == "postgresql:///from_env")
        #expect(ConnectionConfiguration.resolve(databaseURL: nil, environment: [:]).conninfo == "")
    }
}

/// Which refusals may pass if sent again (the broker resends those) and which would not (it
/// isolates those to the one outcome that causes them).
@Suite struct TransientErrorTests {
    func server(_ state: String) -> PostgresError { PostgresError(.server, message: "x", sqlState: state) }

    @Test func locksShutdownsResourcesAndMissingSchemaAreTransient() {
        for state in ["40P01", "40001", "55P03", "53200", "57P01", "57P03", "42883", "3F000", "08006"] {
            #expect(server(state).isTransient, "\(state)")
        }
        #expect(PostgresError(.connectionLost, message: "gone").isTransient)
    }

    @Test func dataTimeoutsAndInternalErrorsAreNot() {
        for state in ["22003", "22023", "23514", "54000", "P0001", "57014", "XX000"] {
            #expect(!server(state).isTransient, "\(state)")
        }
        // A statement timeout or an internal error is tried again a few times before it counts.
        #expect(server("57014").mayPassLater && server("XX000").mayPassLater)
        #expect(!server("22003").mayPassLater && !server("23514").mayPassLater)
        #expect(!PostgresError(.decoding, message: "bad").isTransient)
    }
}
