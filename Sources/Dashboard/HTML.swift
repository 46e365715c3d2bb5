/// A fragment of HTML. The one place where text becomes markup.
///
/// String interpolation escapes: `"<td>\(job.task)</td>"` shows a task name holding `<script>`
/// as text. Fragments nest without being escaped twice (`\(row)` where `row` is `HTML`), and
/// program-written markup that is not an `HTML` value needs the explicit `\(raw:)`. A value from
/// the database can therefore only reach a page as text, however it is spelled.
///
/// ```swift
/// let error = "<img src=x onerror=alert(1)>"
/// let cell: HTML = "<td class=\"error\">\(error)</td>"   // &lt;img src=x onerror=alert(1)&gt;
/// let page: HTML = "<table><tr>\(cell)</tr></table>"      // the cell is not escaped again
/// ```
public struct HTML: Sendable, ExpressibleByStringInterpolation, CustomStringConvertible {
    public private(set) var text: String

    public init(stringLiteral value: String) { text = value }

    public init(stringInterpolation: StringInterpolation) { text = stringInterpolation.text }

    /// Markup the program wrote itself (never data). Prefer interpolation.
    public init(raw: String) { text = raw }

    public static let empty = HTML(raw: "")

    public var description: String { text }

    public static func + (lhs: HTML, rhs: HTML) -> HTML { HTML(raw: lhs.text + rhs.text) }

    public struct StringInterpolation: StringInterpolationProtocol {
        var text = ""

        public init(literalCapacity: Int, interpolationCount: Int) {
            text.reserveCapacity(literalCapacity + interpolationCount * 16)
        }

        public mutating func appendLiteral(_ literal: String) { text += literal }

        /// Text: escaped for element content and for quoted attribute values alike.
        public mutating func appendInterpolation(_ value: String) { text += HTML.escape(value) }
        public mutating func appendInterpolation(_ value: Substring) { text += HTML.escape(String(value)) }
        public mutating func appendInterpolation(_ value: String?) { text += HTML.escape(value ?? "") }
        public mutating func appendInterpolation<T: BinaryInteger>(_ value: T) { text += String(value) }
        public mutating func appendInterpolation(_ value: Double) { text += HTML.escape(String(value)) }
        public mutating func appendInterpolation(_ value: HTML) { text += value.text }
        public mutating func appendInterpolation(_ values: [HTML]) { for v in values { text += v.text } }
        /// Program-written markup or script; never data.
        public mutating func appendInterpolation(raw: String) { text += raw }
    }

    /// Escapes the five characters that can end text or an attribute value in HTML.
    public static func escape(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 == 0x26 || $0 == 0x3C || $0 == 0x3E || $0 == 0x22 || $0 == 0x27 }) else {
            return s
        }
        var out = ""
        out.reserveCapacity(s.utf8.count + 16)
        for ch in s.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    /// Percent-encodes a value for a URL's query or path segment (then it is escaped as text too).
    public static func urlComponent(_ s: String) -> String {
        var allowed = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".unicodeScalars)
        allowed.remove("&")
        var out = ""
        for byte in s.utf8 {
            let scalar = Unicode.Scalar(byte)
            if byte < 0x80, allowed.contains(scalar) {
                out.unicodeScalars.append(scalar)
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

extension String {
    func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}
