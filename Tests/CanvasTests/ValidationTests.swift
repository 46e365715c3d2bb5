import Foundation
import TestSupport
import Testing

@testable import PGCanvas

/// The message `validate()` throws, or nil when it passes.
func refusal(_ body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch let error as CanvasError {
        return error.description
    } catch {
        return "unexpected \(error)"
    }
}

/// Each rule of issue 9's "validation at the door", at and just past each bound. The messages are
/// spelled out here, not read from JobRules, so a change to the shared text fails a test.
@Suite struct JobRulesTests {
    static let task = "task: expected a task name (1 to 200 characters, no control characters)"
    static let queue = "options.queue: expected a queue name (1 to 200 characters, no control characters)"
    static let priority = "options.priority: expected an integer from -32768 to 32767"
    static let maxRetries = "options.max_retries: expected an integer from 0 to 1000"
    static let countdown = "options.countdown: expected seconds from 0 to 315360000"
    static let eta = "options.eta: expected a time within 10 years"
    static let timeLimit = "options.time_limit: expected seconds, more than 0 and at most 31536000"
    static let retryBackoff = "options.retry_backoff: expected seconds from 0 to 86400"

    func job(_ task: String = "canvas.add", _ options: JobOptions = JobOptions()) -> String? {
        refusal { try JobRequest(task, [1, 2], options: options).validate() }
    }

    @Test func theSharedMessagesReadAsAgreedWithSQL() {
        #expect(JobRules.Message.task == Self.task)
        #expect(JobRules.Message.queue == Self.queue)
        #expect(JobRules.Message.priority == Self.priority)
        #expect(JobRules.Message.maxRetries == Self.maxRetries)
        #expect(JobRules.Message.countdown == Self.countdown)
        #expect(JobRules.Message.eta == Self.eta)
        #expect(JobRules.Message.timeLimit == Self.timeLimit)
        #expect(JobRules.Message.retryBackoff == Self.retryBackoff)
    }

    @Test func namesAreOneTo200CharactersWithoutControls() {
        #expect(job("a") == nil)
        #expect(job(String(repeating: "x", count: 200)) == nil)
        // Counted as PostgreSQL counts: code points, not UTF-8 bytes.
        #expect(job(String(repeating: "😀", count: 200)) == nil)
        #expect(job("") == Self.task)
        #expect(job(String(repeating: "x", count: 201)) == Self.task)
        #expect(job(String(repeating: "😀", count: 201)) == Self.task)
        #expect(job("canvas.add", JobOptions(queue: String(repeating: "q", count: 200))) == nil)
        #expect(job("canvas.add", JobOptions(queue: "")) == Self.queue)
        #expect(job("canvas.add", JobOptions(queue: String(repeating: "q", count: 201))) == Self.queue)
        // The edges of both control ranges, anywhere in the name.
        #expect(job("a\u{20}b") == nil)
        #expect(job("a\u{7E}b") == nil)
        #expect(job("a\u{A0}b") == nil)
        for code in Array(0x00...0x1F) + Array(0x7F...0x9F) {
            let control = String(Unicode.Scalar(UInt8(code)))
            #expect(job("canvas.add" + control) == Self.task, "U+\(String(code, radix: 16))")
            #expect(job(control + "x") == Self.task, "U+\(String(code, radix: 16))")
            #expect(job("canvas.add", JobOptions(queue: "q" + control + "q")) == Self.queue)
        }
    }

    @Test func integersAtAndPastTheirBounds() {
        for p in [-32768, -1, 0, 32767] { #expect(job("t", JobOptions(priority: p)) == nil) }
        for p in [-32769, 32768, 3_000_000_000, Int.min, Int.max] {
            #expect(job("t", JobOptions(priority: p)) == Self.priority, "\(p)")
        }
        for m in [0, 1000] { #expect(job("t", JobOptions(maxRetries: m)) == nil) }
        // Int.max is the --max-retries value that used to trap on "+ 1".
        for m in [-1, 1001, Int.min, Int.max] { #expect(job("t", JobOptions(maxRetries: m)) == Self.maxRetries) }
    }

    @Test func secondsAtAndPastTheirBounds() {
        let bad: [Double] = [.nan, .infinity, -.infinity, 1e300, -1e300]
        for c in [0, -0.0, 0.001, 315_360_000] { #expect(job("t", JobOptions(countdown: c)) == nil, "\(c)") }
        for c in bad + [(-0.0).nextDown, 315_360_000.nextUp, -1] {
            #expect(job("t", JobOptions(countdown: c)) == Self.countdown, "\(c)")
        }
        for t in [1e-6, 0.5, 31_536_000] {
            #expect(job("t", JobOptions(timeLimit: t)) == nil, "\(t)")
        }
        // Below a microsecond PostgreSQL's intervals cannot say it (canvas.is_seconds refuses it too).
        for t in bad + [0, -0.0, Double.leastNonzeroMagnitude, 9.99e-7, 31_536_000.nextUp, -1] {
            #expect(job("t", JobOptions(timeLimit: t)) == Self.timeLimit, "\(t)")
        }
        for b in [0, 0.1, 86400] { #expect(job("t", JobOptions(retryBackoff: b)) == nil, "\(b)") }
        for b in bad + [(-0.0).nextDown, 86400.nextUp, -1] {
            #expect(job("t", JobOptions(retryBackoff: b)) == Self.retryBackoff, "\(b)")
        }
    }

    @Test func etaNoLaterThanTenYears() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        func eta(_ date: Date) -> String? {
            refusal { try JobRequest("t", options: JobOptions(eta: date)).validate(now: now) }
        }
        #expect(eta(now) == nil)
        #expect(eta(now.addingTimeInterval(-86400 * 365 * 30)) == nil)  // in the past: runs at once
        #expect(eta(now.addingTimeInterval(315_360_000)) == nil)
        #expect(eta(now.addingTimeInterval(315_360_001)) == Self.eta)
        #expect(eta(Date.distantFuture) == Self.eta)
        #expect(eta(Date(timeIntervalSince1970: .infinity)) == Self.eta)
        #expect(eta(Date(timeIntervalSince1970: .nan)) == Self.eta)
        // The earliest a PostgreSQL timestamp this client writes can hold: 0001-01-01T00:00:00Z.
        let yearOne = Date(timeIntervalSince1970: -62_135_596_800)
        #expect(eta(yearOne) == nil)
        #expect(eta(yearOne.addingTimeInterval(-1)) == Self.eta)
        #expect(eta(Date(timeIntervalSince1970: -1e300)) == Self.eta)
    }

    @Test func argumentsThatJSONCannotHoldAreRefusedNotWrittenAsNull() {
        #expect(
            refusal { try JobRequest("t", [1, .array([.object(["x": .double(.infinity)])])]).validate() }
                == "args[1][0].x: expected a finite number, not inf (JSON has no infinity or NaN)")
        #expect(refusal { try JobRequest("t", [.double(.nan)]).validate() }?.hasPrefix("args[0]: ") == true)
        #expect(refusal { try JobRequest("t", [.double(1e308), .double(-0.0)]).validate() } == nil)
    }

    /// Random values near every bound and far from them, against the rules as the issue states
    /// them (the expectation is written here, independently of JobRules).
    @Test(arguments: [1, 42, 20_261_126])
    func seededRandomValuesFollowTheStatedRules(seed: UInt64) {
        var rng = SplitMix64(state: seed)
        func near(_ bounds: [Int]) -> Int {
            Bool.random(using: &rng)
                ? bounds.randomElement(using: &rng)! + Int.random(in: -3...3, using: &rng)
                : Int.random(in: Int.min...Int.max, using: &rng)
        }
        func nearSeconds(_ bounds: [Double]) -> Double {
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: return bounds.randomElement(using: &rng)! + Double.random(in: -1...1, using: &rng)
            case 1: return bounds.randomElement(using: &rng)!.nextUp
            case 2: return bounds.randomElement(using: &rng)!.nextDown
            default: return Double(bitPattern: rng.next())  // any double, NaN and infinities included
            }
        }
        for _ in 0..<2000 {
            let p = near([-32768, 32767])
            #expect((job("t", JobOptions(priority: p)) == nil) == (p >= -32768 && p <= 32767), "priority \(p)")
            let m = near([0, 1000])
            #expect((job("t", JobOptions(maxRetries: m)) == nil) == (m >= 0 && m <= 1000), "max_retries \(m)")
            let c = nearSeconds([0, 315_360_000])
            // Zero, or at least a microsecond: what an interval resolves.
            func resolvable(_ s: Double) -> Bool { s == 0 || s >= 1e-6 }
            #expect(
                (job("t", JobOptions(countdown: c)) == nil) == (c >= 0 && c <= 315_360_000 && resolvable(c)),
                "countdown \(c)")
            let t = nearSeconds([0, 31_536_000])
            #expect(
                (job("t", JobOptions(timeLimit: t)) == nil) == (t > 0 && t <= 31_536_000 && resolvable(t)),
                "time_limit \(t)")
            let b = nearSeconds([0, 86400])
            #expect(
                (job("t", JobOptions(retryBackoff: b)) == nil) == (b >= 0 && b <= 86400 && resolvable(b)),
                "retry_backoff \(b)")
            let length = Int.random(in: 0...202, using: &rng)
            var scalars = (0..<length).map { _ in Unicode.Scalar(UInt8.random(in: 0x20...0x7E, using: &rng)) }
            let withControl = length > 0 && Int.random(in: 0..<4, using: &rng) == 0
            if withControl {
                scalars[Int.random(in: 0..<length, using: &rng)] = Unicode.Scalar(
                    [UInt8(0), 9, 10, 13, 0x1F, 0x7F, 0x85, 0x9F].randomElement(using: &rng)!)
            }
            let name = String(String.UnicodeScalarView(scalars))
            let valid = length >= 1 && length <= 200 && !withControl
            #expect((job(name) == nil) == valid, "task \(name.debugDescription)")
        }
    }
}

/// The Swift canvas builder checks every signature with the same rules, naming where it is.
@Suite struct CanvasValidationTests {
    func check(_ canvas: Canvas) -> String? { refusal { try canvas.validate() } }

    @Test func aGoodCanvasPasses() {
        let good = chord(
            [signature("canvas.add", 1, 2, options: SignatureOptions(priority: -32768, timeLimit: 31_536_000))],
            body: chain([signature("canvas.sum"), starmap("canvas.add", [[1, 2]])]))
        #expect(check(good) == nil)
    }

    @Test func problemsAreNamedByWhereTheyStand() {
        #expect(check(signature("bad\tname")) == JobRulesTests.task)
        #expect(
            check(
                chain([signature("canvas.add"), signature("canvas.add", options: SignatureOptions(priority: 40000))]))
                == "chain[1].options.priority: expected an integer from -32768 to 32767")
        #expect(
            check(chord([signature("canvas.add")], body: signature("canvas.sum\n")))
                == "body.task: expected a task name (1 to 200 characters, no control characters)")
        #expect(
            check(group([signature("a"), group([signature("b", options: SignatureOptions(countdown: 1e300))])]))
                == "group[1].group[0].options.countdown: expected seconds from 0 to 315360000")
        #expect(
            check(chain([signature("a")]).onError(Signature("", [])))
                == "on_error.task: expected a task name (1 to 200 characters, no control characters)")
        #expect(
            check(starmap("canvas.add", [[1], [2, .double(-.infinity)]]))
                == "args[1][1]: expected a finite number, not -inf (JSON has no infinity or NaN)")
        #expect(
            check(starmap("", [[1]]))
                == "starmap: expected a task name (1 to 200 characters, no control characters)")
        #expect(
            check(chord([signature("a", options: SignatureOptions(maxRetries: Int.max))], body: signature("b")))
                == "chord[0].options.max_retries: expected an integer from 0 to 1000")
        #expect(
            check(signature("a", options: SignatureOptions(timeLimit: 0)))
                == "options.time_limit: expected seconds, more than 0 and at most 31536000")
        #expect(
            check(signature("a", options: SignatureOptions(retryBackoff: .nan)))
                == "options.retry_backoff: expected seconds from 0 to 86400")
        #expect(
            check(signature("a", options: SignatureOptions(queue: "")))
                == "options.queue: expected a queue name (1 to 200 characters, no control characters)")
    }
}

/// Numbers JSON text can hold but a JSONValue cannot are refused with the number named, never
/// turned into a float or null.
@Suite struct JSONNumberEdgeTests {
    func reason(_ text: String) -> String? {
        do {
            _ = try JSONValue(parsing: text)
            return nil
        } catch let error as JSONParseError {
            return error.description
        } catch {
            return "unexpected \(error)"
        }
    }

    @Test func integersFitIn64BitsOrAreRefused() throws {
        #expect(try JSONValue(parsing: "9223372036854775807") == .int(Int.max))
        #expect(try JSONValue(parsing: "-9223372036854775808") == .int(Int.min))
        #expect(
            reason("[1, 9223372036854775808]")
                == "invalid JSON at byte 4: the integer 9223372036854775808 is out of range "
                + "(integers must fit in 64 bits, -9223372036854775808 to 9223372036854775807)")
        #expect(reason("-9223372036854775809")?.contains("the integer -9223372036854775809 is out of range") == true)
        #expect(reason("{\"a\": 123456789012345678901234567890}")?.contains("123456789012345678901234567890") == true)
    }

    @Test func numbersBeyondADoubleAreRefused() throws {
        #expect(try JSONValue(parsing: "1.7976931348623157e308") == .double(.greatestFiniteMagnitude))
        #expect(
            reason("1e400")
                == "invalid JSON at byte 0: the number 1e400 is too large (beyond a 64-bit floating point)")
        #expect(reason("[-1.5E+999]")?.contains("the number -1.5E+999 is too large") == true)
        // Too small to tell from zero is rounding, as for 0.1, not a change of kind.
        #expect(try JSONValue(parsing: "1e-400") == .double(0))
        // A float written with a decimal point stays a float even when it is integral and huge.
        #expect(try JSONValue(parsing: "1e300") == .double(1e300))
    }

    @Test func aVeryLongNumberStillMakesAOneLineMessage() throws {
        let digits = String(repeating: "7", count: 10_000)
        let message = try #require(reason(digits))
        #expect(message.count < 200)
        #expect(message.contains("7777…7777"))
        #expect(message.contains("(10000 characters)"))
        #expect(!message.contains("\n"))
    }

    /// Random digit strings of up to 30 digits: exact when they fit in Int64, refused when not,
    /// judged by comparing the digits with Int64's as text.
    @Test(arguments: [7, 99, 2026])
    func seededRandomIntegers(seed: UInt64) throws {
        var rng = SplitMix64(state: seed)
        for _ in 0..<3000 {
            let negative = Bool.random(using: &rng)
            let count = Int.random(in: 1...30, using: &rng)
            var digits = String(Int.random(in: 1...9, using: &rng))
            for _ in 1..<count { digits += String(Int.random(in: 0...9, using: &rng)) }
            let limit = negative ? "9223372036854775808" : "9223372036854775807"
            let fits = digits.count < limit.count || (digits.count == limit.count && digits <= limit)
            let text = (negative ? "-" : "") + digits
            if fits {
                #expect(try JSONValue(parsing: text).jsonText == text)
            } else {
                #expect(reason(text)?.contains("is out of range") == true, "\(text)")
            }
        }
    }
}
