/// The line protocol between the supervisor and its pool processes, over two pipes.
///
/// Supervisor → pool process (fd 3): `J\t<id>\t<attempt>\t<task>\t<args JSON>\n`.
/// Pool process → supervisor (fd 4):
/// `R\t<id>\t<attempt>\t<kind>\t<seconds>\t<result JSON>\t<error JSON>\t<spawned canvases JSON>\n`.
/// JSON text from PostgreSQL and from `JSONValue` never holds a raw tab or newline, so tabs and
/// newlines frame the fields; the supervisor never parses task arguments or results.
enum WireFormat {
    static func jobLine(_ job: ClaimedJob) -> String {
        "J\t\(job.id)\t\(job.attempt)\t\(job.task)\t\(job.argsText)\n"
    }

    struct JobMessage {
        var id: Int64
        var attempt: Int
        var task: String
        var argsText: Substring
    }

    static func parseJob(_ line: Substring) -> JobMessage? {
        let f = line.split(separator: "\t", maxSplits: 4, omittingEmptySubsequences: false)
        guard f.count == 5, f[0] == "J", let id = Int64(f[1]), let attempt = Int(f[2]) else { return nil }
        return JobMessage(id: id, attempt: attempt, task: String(f[3]), argsText: f[4])
    }

    static func resultLine(
        id: Int64, attempt: Int, kind: Outcome.Kind, seconds: Double, result: JSONValue?, error: String?,
        spawned: [JSONValue] = []
    ) -> String {
        var errorText = ""
        if let error { JSONValue.writeString(error, to: &errorText) }
        let spawnText = spawned.isEmpty ? "" : JSONValue.array(spawned).jsonText
        return
            "R\t\(id)\t\(attempt)\t\(kind.rawValue)\t\(seconds)\t\(result?.jsonText ?? "")\t\(errorText)\t\(spawnText)\n"
    }

    struct ResultMessage {
        var outcome: Outcome
        var seconds: Double
    }

    static func parseResult(_ line: Substring) -> ResultMessage? {
        let f = line.split(separator: "\t", omittingEmptySubsequences: false)
        guard f.count == 8, f[0] == "R", let id = Int64(f[1]), let attempt = Int(f[2]),
            let kind = Outcome.Kind(rawValue: String(f[3])), let seconds = Double(f[4])
        else { return nil }
        var error: String? = nil
        if !f[6].isEmpty { error = (try? JSONValue(parsing: String(f[6])))?.stringValue ?? String(f[6]) }
        return ResultMessage(
            outcome: Outcome(
                jobID: id, attempt: attempt, kind: kind, resultText: f[5].isEmpty ? nil : String(f[5]), error: error,
                spawnText: f[7].isEmpty ? nil : String(f[7])),
            seconds: seconds)
    }
}

/// Splits bytes read from a pipe into lines, keeping a partial last line for the next read.
struct LineBuffer {
    private var pending: [UInt8] = []

    mutating func append(_ bytes: UnsafeRawBufferPointer, _ body: (Substring) -> Void) {
        var start = bytes.startIndex
        for i in bytes.indices where bytes[i] == 10 {
            if pending.isEmpty {
                body(Substring(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)))
            } else {
                pending.append(contentsOf: bytes[start..<i])
                body(Substring(String(decoding: pending, as: UTF8.self)))
                pending.removeAll(keepingCapacity: true)
            }
            start = i + 1
        }
        if start < bytes.endIndex { pending.append(contentsOf: bytes[start..<bytes.endIndex]) }
    }
}
