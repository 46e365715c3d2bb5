/// A JSON value: task arguments, results and canvases travel as this.
///
/// Integers stay integers (a task that adds two 8-digit ids gets exact results), and the text
/// form is written without spaces in a stable key order, so equal values serialise equally.
///
/// ```swift
/// let value: JSONValue = ["ids": [12345678, 87654321], "name": "Ann", "ratio": 0.5]
/// print(value.jsonText)   // {"ids":[12345678,87654321],"name":"Ann","ratio":0.5}
/// let parsed = try JSONValue(parsing: #"{"x": [1, 2]}"#)   // parsed["x"]?.arrayValue?.count == 2
/// ```
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// Parses JSON text. An integer beyond 64 bits or a number beyond a Double (`1e400`) is an
    /// error naming the number, never a silently rounded float or a null.
    /// - Throws: `JSONParseError` naming the offset of the first problem.
    public init(parsing text: String) throws {
        var parser = JSONParser(Array(text.utf8))
        self = try parser.parseDocument()
    }

    /// Parses JSON text that PostgreSQL wrote. jsonb prints every number in plain notation, so a
    /// value accepted as `1e300` comes back as a 1 and 300 zeros: such an integer beyond 64 bits
    /// is read as the Double it denotes. Text from people goes through `init(parsing:)`.
    public init(parsingStored text: String) throws {
        var parser = JSONParser(Array(text.utf8))
        parser.wideIntegersAsDoubles = true
        self = try parser.parseDocument()
    }

    /// Compact JSON text. JSON has no infinity or NaN: such a Double is written as `null`, which is
    /// why enqueueing refuses arguments holding one (`JobRules.checkFinite`).
    public var jsonText: String {
        var out = ""
        write(to: &out)
        return out
    }

    func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d):
            if d.isFinite {
                if d == d.rounded(), abs(d) < 1e15 { out += String(Int(d)) + ".0" } else { out += "\(d)" }
            } else {
                out += "null"
            }
        case .string(let s): Self.writeString(s, to: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(to: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, key) in members.keys.sorted().enumerated() {
                if i > 0 { out += "," }
                Self.writeString(key, to: &out)
                out += ":"
                members[key]!.write(to: &out)
            }
            out += "}"
        }
    }

    static func writeString(_ s: String, to out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}

extension JSONValue {
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }
    public var intValue: Int? {
        switch self {
        case .int(let i): return i
        case .double(let d) where d == d.rounded() && abs(d) < 9e15: return Int(d)
        default: return nil
        }
    }
    public var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }
    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }
    public var objectValue: [String: JSONValue]? {
        if case .object(let o) = self { return o }
        return nil
    }
    public subscript(key: String) -> JSONValue? { objectValue?[key] }
}

extension JSONValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral, CustomStringConvertible
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { $1 }))
    }
    public var description: String { jsonText }
}

/// Why a text is not JSON, with the byte offset of the first problem: `invalid JSON at byte 4: …`.
///
/// ```swift
/// do {
///     _ = try JSONValue(parsing: "[1, 2")
/// } catch let error as JSONParseError {
///     print(error)   // invalid JSON at byte 5: unterminated array
/// }
/// ```
public struct JSONParseError: Error, CustomStringConvertible {
    public var offset: Int
    public var reason: String
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}
