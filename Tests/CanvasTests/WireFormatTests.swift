import Foundation
import Logging
import TestSupport
import Testing

@testable import PGCanvas

/// The supervisor ↔ pool process framing: any bytes in any field, read in any pieces.
@Suite struct WireFormatTests {
    static let awkward: [Unicode.Scalar] = [
        "\t", "\n", "\r", "\0", "\u{7F}", "\u{85}", "\u{2028}", "\"", "\\", "é", "😀",
    ]

    /// Text that is mostly framing hazards; now and then empty, and 1 MiB when `large` (the first
    /// field of each test, so every test has one).
    static func text(_ g: inout SplitMix64, large: Bool = false) -> String {
        var s = String.UnicodeScalarView()
        let length = large ? 512 : Int.random(in: 0..<10, using: &g) == 0 ? 0 : Int.random(in: 1..<300, using: &g)
        for _ in 0..<length {
            if Bool.random(using: &g) {
                s.append(awkward.randomElement(using: &g)!)
            } else {
                s.append(Unicode.Scalar(UInt8.random(in: 0x20...0x7E, using: &g)))
            }
        }
        // Repeating a random piece keeps a 1 MiB field cheap to make in a debug build.
        guard large else { return String(s) }
        let piece = String(s)
        return String(repeating: piece, count: (1 << 20) / piece.utf8.count + 1)
    }

    /// Any bytes, invalid UTF-8 included; 1 MiB when `large`. A large field has few invalid
    /// sequences: each costs a thrown error inside `String(decoding:)`, for which Swift Testing
    /// captures a backtrace.
    static func bytes(_ g: inout SplitMix64, large: Bool = false) -> [UInt8] {
        let hazards: [UInt8] = [0, 9, 10, 13, 0x80, 0xC0, 0xFF, 0xFE, 0xED, 0xA0]
        let count = large ? 4096 : Int.random(in: 0..<300, using: &g)
        let piece = (0..<count).map { _ in
            if large {
                return Int.random(in: 0..<512, using: &g) == 0
                    ? hazards.randomElement(using: &g)! : UInt8.random(in: 0x20...0x7E, using: &g)
            }
            return Bool.random(using: &g) ? hazards.randomElement(using: &g)! : UInt8.random(in: 0...255, using: &g)
        }
        return large ? Array([[UInt8]](repeating: piece, count: 256).joined()) : piece
    }

    /// Feeds `stream` to a decoder in pieces of random sizes, from 1 byte to beyond a pipe's 64 KiB.
    static func decode(_ stream: [UInt8], _ g: inout SplitMix64, _ body: (UnsafeRawBufferPointer) -> Void)
        -> FrameDecoder
    {
        var decoder = FrameDecoder()
        var offset = 0
        stream.withUnsafeBytes { all in
            while offset < all.count {
                let size: Int
                switch Int.random(in: 0..<4, using: &g) {
                case 0: size = Int.random(in: 1...8, using: &g)
                case 1: size = Int.random(in: 1...300, using: &g)
                case 2: size = 65536
                default: size = Int.random(in: 1...200_000, using: &g)
                }
                let end = min(all.count, offset + size)
                decoder.feed(UnsafeRawBufferPointer(rebasing: all[offset..<end]), body)
                offset = end
            }
        }
        return decoder
    }

    @Test(arguments: [1, 2, 3, 4, 5] as [UInt64])
    func jobFramesCarryAnyTextInTaskNamesAndArguments(seed: UInt64) throws {
        var g = SplitMix64(state: seed)
        let jobs = (0..<40).map { i in
            ClaimedJob(
                id: Int64.random(in: .min ... .max, using: &g), task: Self.text(&g, large: i == 3),
                argsText: Self.text(&g, large: i == 0),
                attempt: i, timeLimit: nil)
        }
        // Every other job carries a soft time limit; the rest have none, which must stay nil.
        let softLimits = jobs.indices.map { $0 % 2 == 0 ? Double.random(in: 0.001...31_536_000, using: &g) : nil }
        var stream: [UInt8] = []
        for (job, soft) in zip(jobs, softLimits) { WireFormat.appendJob(job, softTimeLimit: soft, to: &stream) }
        var decoded: [WireFormat.JobMessage] = []
        let decoder = Self.decode(stream, &g) { decoded.append(try! #require(WireFormat.parseJob($0))) }
        #expect(decoder.pendingCount == 0)
        try #require(decoded.count == jobs.count)
        for ((job, soft), message) in zip(zip(jobs, softLimits), decoded) {
            #expect(message.id == job.id && message.attempt == job.attempt)
            #expect(message.task == job.task && message.argsText == job.argsText)
            #expect(message.softTimeLimit == soft)
        }
    }

    @Test(arguments: [11, 12, 13] as [UInt64])
    func invalidUTF8InAJobFrameIsRepairedAndTheFramesAfterItStayIntact(seed: UInt64) throws {
        var g = SplitMix64(state: seed)
        let fields = (0..<30).map { i in (task: Self.bytes(&g, large: i == 5), args: Self.bytes(&g, large: i == 0)) }
        var stream: [UInt8] = []
        for (i, f) in fields.enumerated() {
            WireFormat.appendJob(id: Int64(i), attempt: 1, task: f.task, args: f.args, to: &stream)
        }
        var decoded: [WireFormat.JobMessage] = []
        _ = Self.decode(stream, &g) { decoded.append(try! #require(WireFormat.parseJob($0))) }
        try #require(decoded.count == fields.count)
        for (i, (f, message)) in zip(fields, decoded).enumerated() {
            #expect(message.id == Int64(i))
            // Bytes, not String ==, which would compare 1 MiB of U+FFFD by canonical equivalence.
            #expect(Array(message.task.utf8) == Array(String(decoding: f.task, as: UTF8.self).utf8))
            #expect(Array(message.argsText.utf8) == Array(String(decoding: f.args, as: UTF8.self).utf8))
        }
    }

    @Test(arguments: [21, 22, 23] as [UInt64])
    func framesOfArbitraryBytesComeOutExactlyAsTheyWentIn(seed: UInt64) {
        var g = SplitMix64(state: seed)
        let bodies = (0..<40).map { i in Self.bytes(&g, large: i == 1) }
        var stream: [UInt8] = []
        for body in bodies {
            withUnsafeBytes(of: UInt32(body.count).littleEndian) { stream.append(contentsOf: $0) }
            stream.append(contentsOf: body)
        }
        var decoded: [[UInt8]] = []
        let decoder = Self.decode(stream, &g) { decoded.append(Array($0)) }
        #expect(decoded == bodies)
        #expect(decoder.pendingCount == 0)
    }

    @Test(arguments: [31, 32, 33, 34, 35] as [UInt64])
    func resultFramesCarryAnyTextAndTellAbsentFromEmpty(seed: UInt64) throws {
        var g = SplitMix64(state: seed)
        let kinds: [Outcome.Kind] = [.succeeded, .error, .timeout, .fatal, .crashed, .retry]
        func maybe(_ g: inout SplitMix64, large: Bool = false) -> String? {
            large || Bool.random(using: &g) ? Self.text(&g, large: large) : nil
        }
        var outcomes: [(Outcome, Double)] = []
        for i in 0..<40 {
            let result = maybe(&g, large: i == 0)
            let error = maybe(&g, large: i == 1)
            let spawn = maybe(&g, large: i == 2)
            let outcome = Outcome(
                jobID: Int64(i) - 20, attempt: Int.random(in: 0...1000, using: &g),
                kind: kinds.randomElement(using: &g)!,
                resultText: result, error: error, spawnText: spawn)
            outcomes.append((outcome, Double.random(in: 0...1e6, using: &g)))
        }
        var stream: [UInt8] = []
        for (o, seconds) in outcomes {
            WireFormat.appendResult(
                id: o.jobID, attempt: o.attempt, kind: o.kind, seconds: seconds, resultText: o.resultText,
                error: o.error, spawnText: o.spawnText, to: &stream)
        }
        var decoded: [WireFormat.ResultMessage] = []
        let decoder = Self.decode(stream, &g) { decoded.append(try! #require(WireFormat.parseResult($0))) }
        #expect(decoder.pendingCount == 0)
        try #require(decoded.count == outcomes.count)
        for ((o, seconds), message) in zip(outcomes, decoded) {
            let m = message.outcome
            #expect(m.jobID == o.jobID)
            #expect(m.attempt == o.attempt)
            #expect(m.kind == o.kind)
            #expect(message.seconds == seconds)
            #expect(m.resultText == o.resultText)
            #expect(m.error == o.error)
            #expect(m.spawnText == o.spawnText)
        }
    }

    @Test func aTruncatedOrOverlongFrameIsRefusedNotMisread() {
        var frame: [UInt8] = []
        WireFormat.appendResult(
            id: 7, attempt: 1, kind: .error, seconds: 0.25, resultText: nil, error: "bad\tthing\nhappened",
            spawnText: "[]", to: &frame)
        let body = Array(frame.dropFirst(4))
        body.withUnsafeBytes { #expect(WireFormat.parseResult($0)?.outcome.error == "bad\tthing\nhappened") }
        for cut in 0..<body.count {
            body.withUnsafeBytes {
                #expect(WireFormat.parseResult(UnsafeRawBufferPointer(rebasing: $0[0..<cut])) == nil)
            }
        }
        (body + [0]).withUnsafeBytes { #expect(WireFormat.parseResult($0) == nil) }
        // A result is no job, and a job is no result.
        body.withUnsafeBytes { #expect(WireFormat.parseJob($0) == nil) }
        var job: [UInt8] = []
        WireFormat.appendJob(id: 1, attempt: 1, task: Array("canvas.noop".utf8), args: Array("[]".utf8), to: &job)
        job.dropFirst(4).withUnsafeBytes { #expect(WireFormat.parseResult($0) == nil) }
    }

    /// The pool process's side, as `PoolProcessMain.run` drives it: job frames in random pieces in,
    /// result frames out, whatever the bytes of the task names and arguments.
    @Test(arguments: [41, 42, 43] as [UInt64])
    func aPoolProcessAnswersEveryJobWhateverItsNameAndArguments(seed: UInt64) throws {
        var g = SplitMix64(state: seed)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let registry = TaskRegistry(includingBuiltins: true)
        enum Expected {
            case result(String)
            case failure(Outcome.Kind, String)
        }
        var stream: [UInt8] = []
        var expected: [Expected] = []
        for i in 0..<40 {
            switch i == 0 ? 3 : Int.random(in: 0..<4, using: &g) {
            case 0:
                // A name nothing registers, with every hazard a name could hold (invalid UTF-8 too).
                let name = Self.bytes(&g)
                WireFormat.appendJob(id: Int64(i), attempt: 1, task: name, args: Array("[]".utf8), to: &stream)
                expected.append(.failure(.fatal, "unknown task '\(String(decoding: name, as: UTF8.self))'"))
            case 1:
                let args = Self.bytes(&g)
                WireFormat.appendJob(
                    id: Int64(i), attempt: 1, task: Array("canvas.identity".utf8), args: args, to: &stream)
                expected.append(.failure(.fatal, "malformed arguments for canvas.identity"))
            default:
                let value = JSONValue.string(Self.text(&g, large: i == 0))
                let job = ClaimedJob(
                    id: Int64(i), task: "canvas.identity", argsText: JSONValue.array([value]).jsonText, attempt: 1,
                    timeLimit: nil)
                WireFormat.appendJob(job, to: &stream)
                expected.append(.result(value.jsonText))
            }
        }
        var decoder = FrameDecoder()
        var replies: [UInt8] = []
        var offset = 0
        try stream.withUnsafeBytes { all in
            while offset < all.count {
                let end = min(all.count, offset + Int.random(in: 1...100_000, using: &g))
                let readable = PoolProcessMain.handleInput(
                    UnsafeRawBufferPointer(rebasing: all[offset..<end]), decoder: &decoder, replies: &replies,
                    registry: registry, logger: logger, connection: { throw CanvasError("no database here") })
                try #require(readable)
                offset = end
            }
        }
        var results: [Outcome] = []
        _ = Self.decode(replies, &g) { results.append(try! #require(WireFormat.parseResult($0)).outcome) }
        try #require(results.count == expected.count)
        for (i, (outcome, want)) in zip(results, expected).enumerated() {
            #expect(outcome.jobID == Int64(i))
            switch want {
            case .result(let text):
                #expect(outcome.kind == .succeeded && outcome.resultText == text && outcome.error == nil)
            case .failure(let kind, let prefix):
                #expect(outcome.kind == kind && outcome.resultText == nil)
                #expect(outcome.error?.hasPrefix(prefix) == true, "\(outcome.error ?? "nil")")
            }
        }
    }

    @Test func aPoolProcessStopsAtAFrameThatIsNoJob() {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        var stream: [UInt8] = []
        WireFormat.appendJob(id: 1, attempt: 1, task: Array("canvas.noop".utf8), args: Array("[]".utf8), to: &stream)
        WireFormat.appendResult(
            id: 2, attempt: 1, kind: .succeeded, seconds: 0, resultText: "1", error: nil, to: &stream)
        var decoder = FrameDecoder()
        var replies: [UInt8] = []
        let readable = stream.withUnsafeBytes {
            PoolProcessMain.handleInput(
                $0, decoder: &decoder, replies: &replies, registry: TaskRegistry(includingBuiltins: true),
                logger: logger, connection: { throw CanvasError("no database here") })
        }
        #expect(!readable)
        var results: [Outcome] = []
        replies.withUnsafeBytes { decoder.feed($0) { results.append(WireFormat.parseResult($0)!.outcome) } }
        #expect(results.map(\.jobID) == [1] && results.first?.kind == .succeeded)
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

/// The supervisor's end of a job pipe, against a pool process that is not reading.
@Suite struct JobPipeTests {
    @Test func sendingMoreThanThePipeHoldsReturnsAtOnceAndGoesOutAsThePipeDrains() throws {
        signal(SIGPIPE, SIG_IGN)
        let jobs = try FD.pipe()
        let results = try FD.pipe()
        defer { [jobs.write, results.read, results.write].forEach { close($0) } }
        // No process behind it: pid_t.max names none, should anything signal it.
        let p = PoolProcess(index: 1, pid: .max, toChild: jobs.write, fromChild: results.read)
        let sent = (0..<8).map { i in
            ClaimedJob(
                id: Int64(i), task: "canvas.identity\t\n",
                argsText: JSONValue.array([.string(String(repeating: "\(i)\t", count: 128 << 10))]).jsonText,
                attempt: 1, timeLimit: nil)
        }
        let started = ContinuousClock.now
        #expect(p.send(sent, timeLimit: { _ in nil }))
        #expect(ContinuousClock.now - started < .seconds(1))
        #expect(p.hasOutgoing, "2 MiB cannot fit in a pipe")
        #expect(p.inFlight.count == 8)

        // Drain as a pool process would, writing more whenever there is room.
        var decoder = FrameDecoder()
        var received: [WireFormat.JobMessage] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        defer { buffer.deallocate() }
        while received.count < sent.count {
            let n = read(jobs.read, buffer.baseAddress, buffer.count)
            try #require(n > 0)
            decoder.feed(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) {
                received.append(WireFormat.parseJob($0)!)
            }
            #expect(p.flush())
        }
        #expect(!p.hasOutgoing)
        #expect(received.map(\.id) == sent.map(\.id))
        #expect(received.map(\.task) == sent.map(\.task))
        #expect(received.map(\.argsText) == sent.map(\.argsText))

        // The process is gone: the write fails, nothing stays queued, the job stays in flight
        // for the exit handling to settle.
        close(jobs.read)
        #expect(!p.send([sent[0]], timeLimit: { _ in nil }))
        #expect(!p.hasOutgoing)
        #expect(p.inFlight.count == 9)
    }
}

@Suite struct ResultBoundTests {
    @Test func aResultAboveTheBoundFailsItsJobAndKeepsNothingOfIt() {
        let big = Outcome(
            jobID: 7, attempt: 2, kind: .succeeded, resultText: "\"" + String(repeating: "é", count: 600) + "\"",
            spawnText: "[]")
        let failed = BrokerLoop.bounded(big, limit: 1000)
        #expect(failed.kind == .fatal)
        #expect(failed.resultText == nil && failed.spawnText == nil)
        // Bytes, not characters: 600 two-byte characters and two quotes.
        #expect(failed.error == "the result is too large (1202 bytes; the limit is 1000, pgcanvas.max_payload_bytes)")
        #expect(failed.jobID == 7 && failed.attempt == 2)
        let small = Outcome(jobID: 8, attempt: 1, kind: .succeeded, resultText: "42")
        #expect(BrokerLoop.bounded(small, limit: 1000).kind == .succeeded)
    }
}
