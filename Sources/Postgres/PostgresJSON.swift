import Foundation

/// A `jsonb` value carried as its JSON text.
///
/// The layer does not impose a JSON model: decode the text with `JSONDecoder`, or keep it as
/// text and let the server work on it.
///
/// ```swift
/// struct Totals: Codable { var pages: Int }
/// let sent = try PostgresJSON(encoding: Totals(pages: 12))   // sent.text == #"{"pages":12}"#
/// let stored = try db.query("SELECT \(sent)")[0].decode(PostgresJSON.self, 0)
/// let totals = try stored.decode(Totals.self)   // Totals(pages: 12)
/// ```
public struct PostgresJSON: Hashable, Sendable, PostgresArrayElement, CustomStringConvertible {
    public var text: String

    public init(text: String) { self.text = text }

    /// Encodes a value with `JSONEncoder` (keys sorted, so equal values give equal text).
    public init<T: Encodable>(encoding value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        self.text = String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    public func decode<T: Decodable>(_ type: T.Type = T.self) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(text.utf8))
        } catch {
            throw PostgresError(.decoding, message: "cannot decode jsonb as \(T.self): \(error)")
        }
    }

    public static var postgresType: UInt32 { OID.jsonb }
    public static var postgresArrayType: UInt32 { OID.jsonbArray }
    public var postgresText: String? { text }
    public var description: String { text }
}
