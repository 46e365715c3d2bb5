import Foundation

/// A Swift type that can be read from a column's text-format value.
///
/// ```swift
/// struct VoterID: PostgresDecodable {
///     var raw: Int64
///     init(postgresText text: String) throws { raw = try Int64(postgresText: text) }
/// }
/// let first = try db.query("SELECT voter_id FROM voter LIMIT 1")[0].decode(VoterID.self, 0)
/// ```
public protocol PostgresDecodable {
    init(postgresText text: String) throws
}

func decodingError<T>(_ text: String, _ type: T.Type) -> PostgresError {
    let shown = text.count > 40 ? String(text.prefix(40)) + "…" : text
    return PostgresError(.decoding, message: "cannot decode '\(shown)' as \(T.self)")
}

extension String: PostgresDecodable {
    public init(postgresText text: String) { self = text }
}

extension Int: PostgresDecodable {
    public init(postgresText text: String) throws {
        guard let v = Int(text) else { throw decodingError(text, Int.self) }
        self = v
    }
}

extension Int64: PostgresDecodable {
    public init(postgresText text: String) throws {
        guard let v = Int64(text) else { throw decodingError(text, Int64.self) }
        self = v
    }
}

extension Int32: PostgresDecodable {
    public init(postgresText text: String) throws {
        guard let v = Int32(text) else { throw decodingError(text, Int32.self) }
        self = v
    }
}

extension Bool: PostgresDecodable {
    public init(postgresText text: String) throws {
        switch text {
        case "t", "true": self = true
        case "f", "false": self = false
        default: throw decodingError(text, Bool.self)
        }
    }
}

extension Double: PostgresDecodable {
    public init(postgresText text: String) throws {
        switch text {
        case "NaN": self = .nan
        case "Infinity": self = .infinity
        case "-Infinity": self = -.infinity
        default:
            guard let v = Double(text) else { throw decodingError(text, Double.self) }
            self = v
        }
    }
}

extension Date: PostgresDecodable {
    public init(postgresText text: String) throws {
        guard let v = PostgresTimestamp.parse(text) else { throw decodingError(text, Date.self) }
        self = v
    }
}

extension PostgresJSON: PostgresDecodable {
    public init(postgresText text: String) { self.init(text: text) }
}

extension Array: PostgresDecodable where Element: PostgresDecodable {
    public init(postgresText text: String) throws {
        self = try PostgresArrayLiteral.decode(text).map { element in
            guard let element else {
                throw PostgresError(.decoding, message: "NULL element in array of non-optional \(Element.self)")
            }
            return try Element(postgresText: element)
        }
    }
}
