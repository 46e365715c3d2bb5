import TestSupport
import Testing

@testable import PGCanvas

@Suite struct JSONValueTests {
    @Test func parsesAndWritesEveryKindCompactlyWithSortedKeys() throws {
        let value = try JSONValue(parsing: #" {"b": [1, -2.5, true, false, null], "a": "x\ny \"q\" Zoë 😀"} "#)
        #expect(value["b"] == [1, -2.5, true, false, nil])
        #expect(value["a"] == "x\ny \"q\" Zoë 😀")
        #expect(value.jsonText == #"{"a":"x\ny \"q\" Zoë 😀","b":[1,-2.5,true,false,null]}"#)
        #expect(try JSONValue(parsing: value.jsonText) == value)
    }

    @Test func keepsLargeIntegersExact() throws {
        #expect(try JSONValue(parsing: "9007199254740993") == .int(9_007_199_254_740_993))
        #expect(try JSONValue(parsing: "1e3") == .double(1000))
    }

    @Test func decodesEscapesAndSurrogatePairs() throws {
        #expect(try JSONValue(parsing: #""\u00e9\ud83d\ude00\t\/""#) == .string("é😀\t/"))
    }

    // Integers of up to 18 digits are read in place, longer ones through the standard library:
    // both sides of that line, and of each end of the 64-bit range.
    @Test func readsIntegersAtTheEdgesOfTheirRange() throws {
        #expect(try JSONValue(parsing: "999999999999999999") == .int(999_999_999_999_999_999))
        #expect(try JSONValue(parsing: "-999999999999999999") == .int(-999_999_999_999_999_999))
        #expect(try JSONValue(parsing: "9223372036854775807") == .int(Int.max))
        #expect(try JSONValue(parsing: "-9223372036854775808") == .int(Int.min))
        #expect(try JSONValue(parsing: "-0") == .int(0))
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: "9223372036854775808") }
        #expect(try JSONValue(parsingStored: "9223372036854775808") == .double(9_223_372_036_854_775_808))
    }

    // A string is decoded straight from the input until its first escape: strings that start
    // plain and then escape, and control characters either side of that point.
    @Test func decodesStringsThatEscapeAfterAPlainStart() throws {
        let escaped = try JSONValue(parsing: #""plain then \"quoted\" and \u00e9""#)
        #expect(escaped == .string("plain then \"quoted\" and é"))
        #expect(try JSONValue(parsing: #"["", "é", "a\\"]"#) == ["", "é", "a\\"])
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: "\"a\tb\"") }
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: "\"a\\nb\u{1}\"") }
    }

    // Seeded random documents: what `jsonText` writes, the parser reads back equal.
    @Test(arguments: [1, 2, 3] as [UInt64])
    func readsBackWhatItWrites(seed: UInt64) throws {
        var rng = SplitMix64(state: seed)
        for _ in 0..<200 {
            let value = randomValue(depth: 0, &rng)
            #expect(try JSONValue(parsing: value.jsonText) == value)
            #expect(try JSONValue(parsingStored: value.jsonText) == value)
        }
    }

    @Test(arguments: [
        "", "[1,", "{\"a\" 1}", "tru", "nul", "[nulx]", "\"open", "[1] 2", "01x", "\"\\x\"", "{1: 2}", "-", "[-]",
    ])
    func refusesMalformedText(text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: text) }
    }

    @Test func neverWritesARawTabOrNewline() {
        let text = JSONValue.array(["a\tb\nc\r", .object(["k\t": "v\n"])]).jsonText
        #expect(!text.contains("\t") && !text.contains("\n") && !text.contains("\r"))
    }
}

private func randomValue(depth: Int, _ rng: inout SplitMix64) -> JSONValue {
    let pieces = ["a", "é", "😀", "\"", "\\", "\n", "\t", "\u{1}", " ", "/", "station"]
    switch Int.random(in: 0..<(depth < 3 ? 8 : 6), using: &rng) {
    case 0: return .null
    case 1: return .bool(Bool.random(using: &rng))
    case 2:
        // Any number of digits, 1 to 19, either sign.
        let bound = Int.max >> Int.random(in: 0...62, using: &rng)
        return .int(Int.random(in: -bound...bound, using: &rng))
    case 3: return .double(Double(Int.random(in: -1_000_000...1_000_000, using: &rng)) / 64)
    case 4, 5:
        return .string(
            (0..<Int.random(in: 0...6, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined())
    case 6: return .array((0..<Int.random(in: 0...5, using: &rng)).map { _ in randomValue(depth: depth + 1, &rng) })
    default:
        return .object(
            Dictionary(
                (0..<Int.random(in: 0...4, using: &rng)).map { k in ("k\(k)", randomValue(depth: depth + 1, &rng)) },
                uniquingKeysWith: { a, _ in a }))
    }
}
