import Foundation

/// How one signature should run; nil leaves the default (queue "default", priority 0, …).
///
/// ```swift
/// let urgent = SignatureOptions(queue: "priority", priority: -10, maxRetries: 0, timeLimit: 30)
/// let fixed = signature("canvas.add", 10, 20, options: SignatureOptions(immutable: true))   // no 3 prepended
/// let handle = try chain([signature("canvas.add", 1, 2, options: urgent), fixed]).enqueue(on: db)
/// ```
public struct SignatureOptions: Sendable, Hashable {
    public var queue: String?
    public var priority: Int?
    public var countdown: Double?
    public var maxRetries: Int?
    public var retryBackoff: Double?
    public var timeLimit: Double?
    /// Seconds after which the task is told to stop (`ctx.softTimeLimitExceeded`, cancellation);
    /// less than `timeLimit` when both are given.
    public var softTimeLimit: Double?
    /// An immutable signature does not receive the previous link's result (Celery's `.si()`).
    public var immutable: Bool
    /// Not started by then: cancelled with reason "expired", failing its canvas.
    public var expires: Expiry?
    /// The result is not stored; a chord it belongs to gets null in its slot.
    public var ignoreResult: Bool
    /// Only on a signature enqueued on its own: while a job with this key waits or runs (or within
    /// `uniqueFor` seconds of the last), enqueueing gives that job instead of a new one.
    public var uniqueKey: String?
    public var uniqueFor: Double?

    public init(
        queue: String? = nil, priority: Int? = nil, countdown: Double? = nil, maxRetries: Int? = nil,
        retryBackoff: Double? = nil, timeLimit: Double? = nil, softTimeLimit: Double? = nil, immutable: Bool = false,
        expires: Expiry? = nil, ignoreResult: Bool = false, uniqueKey: String? = nil, uniqueFor: Double? = nil
    ) {
        self.queue = queue
        self.priority = priority
        self.countdown = countdown
        self.maxRetries = maxRetries
        self.retryBackoff = retryBackoff
        self.timeLimit = timeLimit
        self.softTimeLimit = softTimeLimit
        self.immutable = immutable
        self.expires = expires
        self.ignoreResult = ignoreResult
        self.uniqueKey = uniqueKey
        self.uniqueFor = uniqueFor
    }

    var json: JSONValue? {
        var o: [String: JSONValue] = [:]
        if let queue { o["queue"] = .string(queue) }
        if let priority { o["priority"] = .int(priority) }
        if let countdown { o["countdown"] = .double(countdown) }
        if let maxRetries { o["max_retries"] = .int(maxRetries) }
        if let retryBackoff { o["retry_backoff"] = .double(retryBackoff) }
        if let timeLimit { o["time_limit"] = .double(timeLimit) }
        if let softTimeLimit { o["soft_time_limit"] = .double(softTimeLimit) }
        if immutable { o["immutable"] = .bool(true) }
        if let expires { o["expires"] = expires.json }
        if ignoreResult { o["ignore_result"] = .bool(true) }
        if let uniqueKey { o["unique_key"] = .string(uniqueKey) }
        if let uniqueFor { o["unique_for"] = .double(uniqueFor) }
        return o.isEmpty ? nil : .object(o)
    }
}

/// A task call that has not happened yet: Celery's signature.
///
/// ```swift
/// var call = Signature("canvas.add", [1, 2], options: SignatureOptions(queue: "math"))
/// call.onError = Signature("canvas.identity")   // enqueued once if canvas.add fails for good
/// let handle = try Canvas.signature(call).enqueue(on: db)
/// ```
public struct Signature: Sendable, Hashable {
    public var task: String
    public var args: [JSONValue]
    /// Keyword arguments (Celery's kwargs), read by the task from `TaskContext.kwargs`.
    public var kwargs: [String: JSONValue]
    public var options: SignatureOptions
    /// Success callbacks (Celery's `link`): each enqueued, as a canvas of its own, with this
    /// signature's result put first in its arguments.
    public var link: [Canvas] = []
    /// Error callbacks (Celery's `link_error`), enqueued once if this signature fails for good.
    /// Each receives `{"id", "task", "error", "error_type", "attempt"}` as its first argument.
    public var linkError: [Signature] = []

    public init(
        _ task: String, _ args: [JSONValue] = [], kwargs: [String: JSONValue] = [:],
        options: SignatureOptions = SignatureOptions()
    ) {
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.options = options
    }

    /// The single-callback spelling of `linkError`: the first error callback, or replaces them all.
    public var onError: Signature? {
        get { linkError.first }
        set { linkError = newValue.map { [$0] } ?? [] }
    }

    /// The same call that ignores the previous link's result.
    public var immutable: Signature {
        var copy = self
        copy.options.immutable = true
        return copy
    }

    /// Celery's partial call (`sig.clone(args, kwargs)`): `args` put before the signature's own,
    /// `kwargs` merged into its own with the call's keys winning; an immutable signature is kept
    /// as it is.
    public func partial(_ args: [JSONValue] = [], kwargs: [String: JSONValue] = [:]) -> Signature {
        guard !options.immutable else { return self }
        var copy = self
        copy.args = args + self.args
        copy.kwargs.merge(kwargs) { _, call in call }
        return copy
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = ["task": .string(task)]
        if !args.isEmpty { o["args"] = .array(args) }
        if !kwargs.isEmpty { o["kwargs"] = .object(kwargs) }
        if let options = options.json { o["options"] = options }
        if !link.isEmpty { o["link"] = .array(link.map(\.json)) }
        if !linkError.isEmpty { o["link_error"] = .array(linkError.map(\.json)) }
        return .object(o)
    }
}

/// A workflow: a signature, or group, chain, chord and starmap built from signatures. Its JSON
/// form (`json`) is the one docs/canvas.md describes and `canvas.enqueue_canvas` accepts.
///
/// ```swift
/// let handle = try chord([signature("canvas.add", 1, 2), signature("canvas.add", 3, 4)],
///                        body: signature("canvas.sum")).enqueue(on: db)
/// let status = try handle.wait(on: db, timeout: 30)   // status.result == 10
/// ```
public indirect enum Canvas: Sendable, Hashable {
    case signature(Signature)
    case group([Canvas], onError: Signature?)
    case chain([Canvas], onError: Signature?)
    case chord([Canvas], body: Canvas, onError: Signature?)
    case starmap(task: String, argumentLists: [[JSONValue]], options: SignatureOptions, onError: Signature?)

    /// The same canvas with an error callback (replacing any it had).
    public func onError(_ callback: Signature) -> Canvas {
        switch self {
        case .signature(var s):
            s.onError = callback
            return .signature(s)
        case .group(let m, _): return .group(m, onError: callback)
        case .chain(let m, _): return .chain(m, onError: callback)
        case .chord(let h, let b, _): return .chord(h, body: b, onError: callback)
        case .starmap(let t, let a, let o, _): return .starmap(task: t, argumentLists: a, options: o, onError: callback)
        }
    }

    public var json: JSONValue {
        func with(_ o: [String: JSONValue], _ onError: Signature?) -> JSONValue {
            var o = o
            if let onError { o["on_error"] = onError.json }
            return .object(o)
        }
        switch self {
        case .signature(let s): return s.json
        case .group(let members, let e): return with(["group": .array(members.map(\.json))], e)
        case .chain(let links, let e): return with(["chain": .array(links.map(\.json))], e)
        case .chord(let header, let body, let e):
            return with(["chord": .array(header.map(\.json)), "body": body.json], e)
        case .starmap(let task, let lists, let options, let e):
            var o: [String: JSONValue] = ["starmap": .string(task), "args": .array(lists.map { .array($0) })]
            if let options = options.json { o["options"] = options }
            return with(o, e)
        }
    }
}

/// Celery's canvas vocabulary as free functions: `chord(stations.map { … }, body: sumPages)`.
public func signature(_ task: String, _ args: JSONValue..., options: SignatureOptions = SignatureOptions()) -> Canvas {
    .signature(Signature(task, args, options: options))
}
public func group(_ members: [Canvas]) -> Canvas { .group(members, onError: nil) }
public func chain(_ links: [Canvas]) -> Canvas { .chain(links, onError: nil) }
public func chord(_ header: [Canvas], body: Canvas) -> Canvas { .chord(header, body: body, onError: nil) }
public func starmap(_ task: String, _ argumentLists: [[JSONValue]], options: SignatureOptions = SignatureOptions())
    -> Canvas
{
    .starmap(task: task, argumentLists: argumentLists, options: options, onError: nil)
}

extension Canvas {
    /// Checks every task name and option in the canvas against `JobRules`, as
    /// `canvas.validate_canvas` does, and that every argument can be written as JSON (an infinite
    /// Double would otherwise become `null`).
    /// - Throws: `CanvasError` naming where the problem is: "chain[1].options.priority: expected …".
    public func validate() throws {
        try validate(at: "", now: Date())
    }

    func validate(at path: String, now: Date) throws {
        switch self {
        case .signature(let s): try s.validate(at: path, now: now)
        case .group(let members, let e), .chain(let members, let e):
            let key = if case .group = self { "group" } else { "chain" }
            for (i, m) in members.enumerated() { try m.validate(at: "\(path)\(key)[\(i)].", now: now) }
            try e?.validate(at: path + "on_error.", now: now)
        case .chord(let header, let body, let e):
            for (i, m) in header.enumerated() { try m.validate(at: "\(path)chord[\(i)].", now: now) }
            try body.validate(at: path + "body.", now: now)
            try e?.validate(at: path + "on_error.", now: now)
        case .starmap(let task, let lists, let options, let e):
            if !JobRules.isName(task) { throw CanvasError("\(path)starmap: \(JobRules.Message.taskName)") }
            try options.validate(at: path, now: now)
            for (i, list) in lists.enumerated() {
                for (j, arg) in list.enumerated() { try JobRules.checkFinite(arg, at: "\(path)args[\(i)][\(j)]") }
            }
            try e?.validate(at: path + "on_error.", now: now)
        }
    }
}

extension Signature {
    func validate(at path: String, now: Date) throws {
        if !JobRules.isName(task) { throw CanvasError(path + JobRules.Message.task) }
        try options.validate(at: path, now: now)
        for (i, arg) in args.enumerated() { try JobRules.checkFinite(arg, at: "\(path)args[\(i)]") }
        try JobRules.checkFinite(.object(kwargs), at: "\(path)kwargs")
        for (i, callback) in link.enumerated() { try callback.validate(at: "\(path)link[\(i)].", now: now) }
        for (i, callback) in linkError.enumerated() {
            try callback.validate(at: "\(path)link_error[\(i)].", now: now)
        }
    }
}

extension SignatureOptions {
    /// The defaults stand in for options left out, so the rules live in `JobOptions.validate` only.
    func validate(at path: String, now: Date) throws {
        let options = JobOptions(
            queue: queue ?? "default", priority: priority ?? 0, countdown: countdown, maxRetries: maxRetries ?? 3,
            retryBackoff: retryBackoff ?? 1, timeLimit: timeLimit, softTimeLimit: softTimeLimit, expires: expires,
            ignoreResult: ignoreResult, uniqueKey: uniqueKey, uniqueFor: uniqueFor)
        do {
            try options.validate(now: now)
        } catch let error as CanvasError {
            throw CanvasError(path + error.description)
        }
        // Inside a canvas a duplicate would leave its chord or chain waiting for a job not its own.
        if uniqueKey != nil, !path.isEmpty { throw CanvasError(path + JobRules.Message.uniqueKeyNested) }
    }
}
