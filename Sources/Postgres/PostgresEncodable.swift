import Foundation

/// A Swift value that can be sent as a bound parameter, in PostgreSQL's text format.
///
/// ```swift
/// struct VoterID: PostgresEncodable {
///     var raw: Int64
///     static var postgresType: UInt32 { Int64.postgresType }   // int8
///     var postgresText: String? { String(raw) }
/// }
/// let rows = try db.query("SELECT voter_name FROM voter WHERE voter_id = \(VoterID(raw: 42))")
/// ```
public protocol PostgresEncodable: Sendable {
    /// The type OID the server should read the parameter as.
    static var postgresType: UInt32 { get }
    /// The text-format representation, or nil for SQL NULL.
    var postgresText: String? { get }
}

/// A type that can be an element of a PostgreSQL array parameter.
///
/// ```swift
/// extension VoterID: PostgresArrayElement {   // the VoterID of `PostgresEncodable`
///     static var postgresArrayType: UInt32 { Int64.postgresArrayType }   // int8[]
/// }
/// let ids = [VoterID(raw: 1), VoterID(raw: 2)]
/// let rows = try db.query("SELECT voter_name FROM voter WHERE voter_id = ANY(\(ids))")
/// ```
public protocol PostgresArrayElement: PostgresEncodable {
    static var postgresArrayType: UInt32 { get }
}

enum OID {
    static let bool: UInt32 = 16
    static let int8: UInt32 = 20
    static let int4: UInt32 = 23
    static let text: UInt32 = 25
    static let float8: UInt32 = 701
    static let timestamptz: UInt32 = 1184
    static let jsonb: UInt32 = 3802
    static let boolArray: UInt32 = 1000
    static let int4Array: UInt32 = 1007
    static let textArray: UInt32 = 1009
    static let int8Array: UInt32 = 1016
    static let float8Array: UInt32 = 1022
    static let timestamptzArray: UInt32 = 1185
    static let jsonbArray: UInt32 = 3807
}

extension String: PostgresArrayElement {
    public static var postgresType: UInt32 { OID.text }
    public static var postgresArrayType: UInt32 { OID.textArray }
    public var postgresText: String? { self }
}

extension Int: PostgresArrayElement {
    public static var postgresType: UInt32 { OID.int8 }
    public static var postgresArrayType: UInt32 { OID.int8Array }
    public var postgresText: String? { String(self) }
}

extension Int64: PostgresArrayElement {
    public static var postgresType: UInt32 { OID.int8 }
    public static var postgresArrayType: UInt32 { OID.int8Array }
    public var postgresText: String? { String(self) }
}

extension Int32: PostgresArrayElement {
    public static var postgresType: UInt32 { OID.int4 }
    public static var postgresArrayType: UInt32 { OID.int4Array }
    public var postgresText: String? { String(self) }
}

extension Bool: PostgresArrayElement {
    public static var postgresType: UInt32 { OID.bool }
    public static var postgresArrayType: UInt32 { OID.boolArray }
    public var postgresText: String? { self ? "t" : "f" }
}

extension Double: PostgresArrayElement {
    public static var postgresType: UInt32 { OID.float8 }
    public static var postgresArrayType: UInt32 { OID.float8Array }
    public var postgresText: String? {
        if isNaN { return "NaN" }
        if isInfinite { return self > 0 ? "Infinity" : "-Infinity" }
        return "\(self)"
    }
}

extension Date: PostgresArrayElement {
    public static var postgresType: UInt32 { OID.timestamptz }
    public static var postgresArrayType: UInt32 { OID.timestamptzArray }
    public var postgresText: String? { PostgresTimestamp.format(self) }
}

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    public static var postgresType: UInt32 { Wrapped.postgresType }
    public var postgresText: String? { self?.postgresText }
}

extension Optional: PostgresArrayElement where Wrapped: PostgresArrayElement {
    public static var postgresArrayType: UInt32 { Wrapped.postgresArrayType }
}

extension Array: PostgresEncodable where Element: PostgresArrayElement {
    public static var postgresType: UInt32 { Element.postgresArrayType }
    public var postgresText: String? { PostgresArrayLiteral.encode(self.map(\.postgresText)) }
}
