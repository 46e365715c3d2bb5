/// The framing between the supervisor and its pool processes, over two pipes.
///
/// Every frame is a little-endian `UInt32` length, then that many bytes: a tag byte and the fields.
/// Supervisor → pool process (fd 3), tag `J`: id `Int64`, attempt `Int64`, the soft time limit in
/// seconds (`Double` bits, NaN when there is none), the task name as a `UInt32` length and its
/// bytes, the keyword arguments' JSON text as a `UInt32` length (`UInt32.max` when there are none)
/// and its bytes, then the arguments' JSON text (the rest of the frame).
/// Pool process → supervisor (fd 4), tag `R`: id `Int64`, attempt `Int64`, kind `UInt8`, seconds
/// (`Double` bits), then the result JSON, the error text and the spawned canvases' JSON array, each
/// a `UInt32` length (`UInt32.max` when absent) and its bytes.
///
/// Lengths, not separators, delimit the fields, so any bytes travel in any field, and neither side
/// looks at a byte of arguments or results: the supervisor passes them through as text.
enum WireFormat {
    static let jobTag = UInt8(ascii: "J")
    static let resultTag = UInt8(ascii: "R")
    private static let absent = UInt32.max
    /// The largest frame body a `UInt32` length can describe (`UInt32.max` marks an absent field).
    static let maxFrameBody = Int(UInt32.max - 1)

    /// - Parameter softTimeLimit: the run's soft time limit, as the supervisor settled it.
    static func appendJob(_ job: ClaimedJob, softTimeLimit: Double? = nil, to out: inout [UInt8]) {
        appendJob(
            id: job.id, attempt: job.attempt, softTimeLimit: softTimeLimit, task: job.task.utf8,
            kwargs: job.kwargsText?.utf8, args: job.argsText.utf8, to: &out)
    }

    /// Arguments come from one PostgreSQL value (at most 1 GB), so a job frame always fits its length.
    static func appendJob<Task: Collection<UInt8>, Args: Collection<UInt8>>(
        id: Int64, attempt: Int, softTimeLimit: Double? = nil, task: Task, kwargs: String.UTF8View? = nil, args: Args,
        to out: inout [UInt8]
    ) {
        let taskCount = task.count
        let body = 1 + 8 + 8 + 8 + 4 + taskCount + 4 + (kwargs?.count ?? 0) + args.count
        out.reserveCapacity(out.count + 4 + body)
        append(UInt32(body), to: &out)
        out.append(jobTag)
        append(id, to: &out)
        append(Int64(attempt), to: &out)
        append((softTimeLimit ?? .nan).bitPattern, to: &out)
        append(UInt32(taskCount), to: &out)
        out.append(contentsOf: task)
        appendField(kwargs, to: &out)
        out.append(contentsOf: args)
    }

    struct JobMessage {
        var id: Int64
        var attempt: Int
        var task: String
        var kwargsText: String?
        var argsText: String
        var softTimeLimit: Double? = nil
    }

    /// - Parameter frame: one frame's body, as `FrameDecoder` hands it over. - Returns: nil if it is no job.
    static func parseJob(_ frame: UnsafeRawBufferPointer) -> JobMessage? {
        var r = FrameReader(frame)
        guard r.byte() == jobTag, let id = r.int64(), let attempt = r.int64(), let soft = r.uint64(),
            let taskCount = r.uint32(), let task = r.bytes(Int(taskCount)), let kwargs = r.field()
        else { return nil }
        let softTimeLimit = Double(bitPattern: soft)
        return JobMessage(
            id: id, attempt: Int(truncatingIfNeeded: attempt), task: text(task), kwargsText: kwargs.map(text),
            argsText: text(r.rest()), softTimeLimit: softTimeLimit.isNaN ? nil : softTimeLimit)
    }

    /// Appends a result frame. A frame too large for its length becomes a `fatal` outcome saying so.
    static func appendResult(
        id: Int64, attempt: Int, kind: Outcome.Kind, seconds: Double, resultText: String?, error: String?,
        spawnText: String? = nil, to out: inout [UInt8]
    ) {
        let result = resultText?.utf8, error = error?.utf8, spawn = spawnText?.utf8
        let body = 1 + 8 + 8 + 1 + 8 + 12 + (result?.count ?? 0) + (error?.count ?? 0) + (spawn?.count ?? 0)
        guard body <= maxFrameBody else {
            appendResult(
                id: id, attempt: attempt, kind: .fatal, seconds: seconds, resultText: nil,
                error: "the outcome is too large to pass on (\(body) bytes)", to: &out)
            return
        }
        out.reserveCapacity(out.count + 4 + body)
        append(UInt32(body), to: &out)
        out.append(resultTag)
        append(id, to: &out)
        append(Int64(attempt), to: &out)
        out.append(code(kind))
        append(seconds.bitPattern, to: &out)
        appendField(result, to: &out)
        appendField(error, to: &out)
        appendField(spawn, to: &out)
    }

    struct ResultMessage {
        var outcome: Outcome
        var seconds: Double
    }

    /// - Parameter frame: one frame's body. - Returns: nil if it is no result.
    static func parseResult(_ frame: UnsafeRawBufferPointer) -> ResultMessage? {
        var r = FrameReader(frame)
        guard r.byte() == resultTag, let id = r.int64(), let attempt = r.int64(), let kindCode = r.byte(),
            let kind = kind(kindCode), let bits = r.uint64(), let result = r.field(), let error = r.field(),
            let spawn = r.field(), r.isAtEnd
        else { return nil }
        return ResultMessage(
            outcome: Outcome(
                jobID: id, attempt: Int(truncatingIfNeeded: attempt), kind: kind,
                resultText: result.map(text), error: error.map(text), spawnText: spawn.map(text)),
            seconds: Double(bitPattern: bits))
    }

    /// Typed bytes take `String`'s one-pass validation; a raw buffer would be decoded a byte at a time.
    private static func text(_ bytes: UnsafeRawBufferPointer) -> String {
        String(decoding: bytes.assumingMemoryBound(to: UInt8.self), as: UTF8.self)
    }

    private static let kinds: [Outcome.Kind] = [.succeeded, .error, .timeout, .fatal, .crashed, .retry]

    private static func code(_ kind: Outcome.Kind) -> UInt8 {
        switch kind {
        case .succeeded: 0
        case .error: 1
        case .timeout: 2
        case .fatal: 3
        case .crashed: 4
        case .retry: 5
        }
    }

    private static func kind(_ code: UInt8) -> Outcome.Kind? { Int(code) < kinds.count ? kinds[Int(code)] : nil }

    private static func appendField(_ field: String.UTF8View?, to out: inout [UInt8]) {
        guard let field else { return append(absent, to: &out) }
        append(UInt32(field.count), to: &out)
        out.append(contentsOf: field)
    }

    @inline(__always)
    private static func append<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
    }
}

/// Reads the fields of one frame body in order; every read is bounds-checked.
struct FrameReader {
    private let bytes: UnsafeRawBufferPointer
    private var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var isAtEnd: Bool { offset == bytes.count }

    mutating func byte() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func int64() -> Int64? { integer(Int64.self) }
    mutating func uint64() -> UInt64? { integer(UInt64.self) }
    mutating func uint32() -> UInt32? { integer(UInt32.self) }

    private mutating func integer<T: FixedWidthInteger>(_: T.Type) -> T? {
        guard bytes.count - offset >= MemoryLayout<T>.size else { return nil }
        defer { offset += MemoryLayout<T>.size }
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    mutating func bytes(_ count: Int) -> UnsafeRawBufferPointer? {
        guard count >= 0, bytes.count - offset >= count else { return nil }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
    }

    /// A length-prefixed field. - Returns: `.some(nil)` for an absent field, nil when the frame is short.
    mutating func field() -> UnsafeRawBufferPointer?? {
        guard let count = uint32() else { return nil }
        if count == UInt32.max { return .some(nil) }
        guard let value = bytes(Int(count)) else { return nil }
        return .some(value)
    }

    mutating func rest() -> UnsafeRawBufferPointer {
        defer { offset = bytes.count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset...])
    }
}

/// Cuts the bytes read from a pipe into frames, whatever the sizes of the reads: keeps a partial
/// frame for the next read, and hands over frames that arrived whole without copying them.
struct FrameDecoder {
    private var pending: [UInt8] = []
    /// Beyond this, the buffer a large frame needed is given back once that frame is done.
    private static let keptCapacity = 1 << 20

    /// Bytes held for a frame not yet complete.
    var pendingCount: Int { pending.count }

    /// Calls `body` with each complete frame's body (the bytes after its length), in order. The
    /// buffer it gets is valid only during the call.
    mutating func feed(_ bytes: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        var start = 0
        let end = bytes.count
        if !pending.isEmpty {
            if pending.count < 4 {
                let take = min(4 - pending.count, end)
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[0..<take]))
                start = take
                if pending.count < 4 { return }
            }
            let total = 4 + Int(pending.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) })
            let take = min(total - pending.count, end - start)
            if pending.capacity < total { pending.reserveCapacity(total) }
            pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<start + take]))
            start += take
            if pending.count < total { return }
            try pending.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[4..<total])) }
            if pending.capacity > Self.keptCapacity {
                pending = []
            } else {
                pending.removeAll(keepingCapacity: true)
            }
        }
        while end - start >= 4 {
            let length = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: start, as: UInt32.self)))
            guard end - start - 4 >= length else { break }
            try body(UnsafeRawBufferPointer(rebasing: bytes[start + 4..<start + 4 + length]))
            start += 4 + length
        }
        if start < end { pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<end])) }
    }
}
