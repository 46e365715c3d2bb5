import CLibPQ

/// Buffers rows in COPY's text format and streams them to the server.
///
/// ```swift
/// let loaded = try db.copyIn("COPY voter (voter_id, voter_name) FROM STDIN") { writer in
///     for (id, name) in voters { try writer.write([String(id), name]) }   // a nil field is NULL
/// }
/// ```
public struct CopyWriter: ~Copyable {
    fileprivate var buffer: [UInt8] = []
    fileprivate let flush: ([UInt8]) throws -> Void
    private static let flushSize = 1 << 18

    fileprivate init(flush: @escaping ([UInt8]) throws -> Void) {
        self.flush = flush
        buffer.reserveCapacity(Self.flushSize + 4096)
    }

    /// Appends one row; nil fields are NULL.
    public mutating func write(_ fields: [String?]) throws {
        for (i, field) in fields.enumerated() {
            if i > 0 { buffer.append(9) }
            guard let field else {
                buffer.append(contentsOf: [92, 78])  // \N
                continue
            }
            for byte in field.utf8 {
                switch byte {
                case 92: buffer.append(contentsOf: [92, 92])
                case 10: buffer.append(contentsOf: [92, 110])
                case 13: buffer.append(contentsOf: [92, 114])
                case 9: buffer.append(contentsOf: [92, 116])
                default: buffer.append(byte)
                }
            }
        }
        buffer.append(10)
        if buffer.count >= Self.flushSize { try drain() }
    }

    fileprivate mutating func drain() throws {
        guard !buffer.isEmpty else { return }
        try flush(buffer)
        buffer.removeAll(keepingCapacity: true)
    }
}

extension Connection {
    /// Bulk-loads rows with `COPY … FROM STDIN` (text format).
    ///
    /// - Parameters:
    ///   - statement: a `COPY table (columns) FROM STDIN` statement.
    ///   - body: writes the rows. If it throws, the COPY is aborted and nothing is loaded.
    /// - Returns: the number of rows the server loaded.
    @discardableResult
    public func copyIn(_ statement: Query, _ body: (inout CopyWriter) throws -> Void) throws -> Int {
        let start = PQexec(pg, statement.sql)
        defer { PQclear(start) }
        guard let start, PQresultStatus(start) == PGRES_COPY_IN else {
            if let start { throw error(from: start, query: statement.sql) }
            throw connectionError(query: statement.sql)
        }
        var writer = CopyWriter { [pg] bytes in
            let ok = bytes.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { PQputCopyData(pg, $0.baseAddress, Int32($0.count)) }
            }
            if ok != 1 {
                throw PostgresError(
                    .connectionLost, message: "COPY failed: \(oneLine(String(cString: PQerrorMessage(pg))))")
            }
        }
        do {
            try body(&writer)
            try writer.drain()
        } catch {
            PQputCopyEnd(pg, "aborted by the client")
            drainResults()
            throw error
        }
        guard PQputCopyEnd(pg, nil) == 1 else { throw connectionError(query: statement.sql) }
        var loaded = 0
        var failure: PostgresError?
        while let result = PQgetResult(pg) {
            if PQresultStatus(result) == PGRES_COMMAND_OK {
                loaded = Int(String(cString: PQcmdTuples(result))) ?? 0
            } else if failure == nil {
                failure = error(from: result, query: statement.sql)
            }
            PQclear(result)
        }
        if let failure { throw failure }
        return loaded
    }

    func drainResults() {
        while let result = PQgetResult(pg) { PQclear(result) }
    }
}
