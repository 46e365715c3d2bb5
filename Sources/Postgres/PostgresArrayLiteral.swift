/// PostgreSQL's text form of one-dimensional arrays: `{a,"b c",NULL}`.
enum PostgresArrayLiteral {
    static func encode(_ elements: [String?]) -> String {
        var out: [UInt8] = [UInt8(ascii: "{")]
        out.reserveCapacity(elements.count * 12 + 2)
        for (i, element) in elements.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            guard let element else {
                out.append(contentsOf: [78, 85, 76, 76])  // NULL
                continue
            }
            out.append(UInt8(ascii: "\""))
            for byte in element.utf8 {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { out.append(UInt8(ascii: "\\")) }
                out.append(byte)
            }
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }

    /// Splits a one-dimensional array literal into its element texts (nil for NULL).
    static func decode(_ text: String) throws -> [String?] {
        var scalars = Substring(text).unicodeScalars[...]
        // An explicit lower bound prefix such as "[0:2]=" may precede the braces.
        if scalars.first == "[", let eq = scalars.firstIndex(of: "=") {
            scalars = scalars[scalars.index(after: eq)...]
        }
        guard scalars.first == "{", scalars.last == "}" else {
            throw PostgresError(.decoding, message: "not an array literal")
        }
        scalars = scalars.dropFirst().dropLast()
        var result: [String?] = []
        if scalars.isEmpty { return result }
        var current = String.UnicodeScalarView()
        var quoted = false
        var wasQuoted = false
        var escaped = false
        var depth = 0
        for ch in scalars {
            if escaped {
                current.append(ch)
                escaped = false
            } else if ch == "\\" {
                escaped = true
            } else if ch == "\"" {
                quoted.toggle()
                wasQuoted = true
            } else if !quoted && ch == "{" {
                depth += 1
                current.append(ch)
            } else if !quoted && ch == "}" {
                depth -= 1
                current.append(ch)
            } else if ch == "," && !quoted && depth == 0 {
                let s = String(current)
                result.append(!wasQuoted && s == "NULL" ? nil : s)
                current = String.UnicodeScalarView()
                wasQuoted = false
            } else {
                current.append(ch)
            }
        }
        let s = String(current)
        result.append(!wasQuoted && s == "NULL" ? nil : s)
        return result
    }
}
