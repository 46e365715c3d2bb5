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

    @Test(arguments: ["", "[1,", "{\"a\" 1}", "tru", "\"open", "[1] 2", "01x", "\"\\x\"", "{1: 2}"])
    func refusesMalformedText(text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: text) }
    }

    @Test func neverWritesARawTabOrNewline() {
        let text = JSONValue.array(["a\tb\nc\r", .object(["k\t": "v\n"])]).jsonText
        #expect(!text.contains("\t") && !text.contains("\n") && !text.contains("\r"))
    }
}
