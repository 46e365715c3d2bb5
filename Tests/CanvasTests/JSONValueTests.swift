import Testing

@testable import Canvas

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

    @Test func neverWritesARawTabOrNewlineSoPipeFramingHolds() {
        let text = JSONValue.array(["a\tb\nc\r", .object(["k\t": "v\n"])]).jsonText
        #expect(!text.contains("\t") && !text.contains("\n") && !text.contains("\r"))
    }
}

@Suite struct WireFormatTests {
    @Test func jobAndResultLinesRoundTrip() throws {
        let job = ClaimedJob(id: 42, task: "canvas.add", argsText: "[1, 2]", attempt: 3, timeLimit: nil)
        let line = WireFormat.jobLine(job)
        #expect(line.hasSuffix("\n"))
        let parsed = try #require(WireFormat.parseJob(line.dropLast()))
        #expect(parsed.id == 42 && parsed.attempt == 3 && parsed.task == "canvas.add" && parsed.argsText == "[1, 2]")

        let result = WireFormat.resultLine(
            id: 42, attempt: 3, kind: .error, seconds: 0.5, result: nil, error: "bad\tthing\nhappened",
            spawned: [["task": "canvas.noop"]])
        let message = try #require(WireFormat.parseResult(result.dropLast()))
        #expect(message.outcome.jobID == 42 && message.outcome.kind == .error)
        #expect(message.outcome.error == "bad\tthing\nhappened")
        #expect(message.outcome.spawnText == #"[{"task":"canvas.noop"}]"#)
        #expect(message.seconds == 0.5)
        #expect(WireFormat.parseResult("R\t1\tx") == nil)
    }

    @Test func lineBufferKeepsPartialLinesForTheNextRead() {
        var buffer = LineBuffer()
        var lines: [String] = []
        for chunk in ["J\t1\ta", "bc\nJ\t2", "\n\nJ\t3\n"] {
            Array(chunk.utf8).withUnsafeBytes { buffer.append($0) { lines.append(String($0)) } }
        }
        #expect(lines == ["J\t1\tabc", "J\t2", "", "J\t3"])
    }

    @Test func pacingPipelinesOnlyMicrosecondJobs() {
        var pacing = Pacing(maxDepth: 16)
        #expect(pacing.depth == 1)
        for _ in 0..<50 { pacing.record(seconds: 0.00002) }
        #expect(pacing.depth == 16)
        for _ in 0..<5 { pacing.record(seconds: 0.5) }
        #expect(pacing.depth == 1)
    }
}
