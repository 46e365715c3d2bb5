import ArgumentParser

/// Reads a job or canvas id taken as raw text (`@Argument(parsing: .allUnrecognized)`), so that
/// "-5" or a 30-digit number reaches `validate()` and gets this one line instead of ArgumentParser's
/// "Missing expected argument".
/// - Parameter what: how the message names the id, e.g. "job or canvas id".
/// - Throws: `ValidationError` (exit 64) unless `texts` is one whole number from 1 to Int64.max.
public func parseID(_ texts: [String], what: String) throws -> Int64 {
    let expected = "expected a \(what) (a whole number from 1 to \(Int64.max))"
    guard texts.count == 1 else {
        throw ValidationError(
            texts.isEmpty ? "missing the \(what)" : "\(expected), got \(texts.joined(separator: " "))")
    }
    guard let id = Int64(texts[0]), id >= 1 else { throw ValidationError("\(expected), not '\(texts[0])'") }
    return id
}

/// Refuses seconds that are negative or NaN (infinity is allowed: "wait for ever").
/// - Throws: `ValidationError` naming `option`.
public func requireSeconds(_ value: Double?, option: String) throws {
    if let value, !(value >= 0) { throw ValidationError("\(option): expected seconds, 0 or more, not \(value)") }
}

/// An option's transform that parses a number and, when the text is not one of type `T` (too many
/// digits for an Int, a word), adds the rule it must meet to ArgumentParser's one-line error.
/// - Parameter rule: the message of the rule the value is checked against later, in validate().
public func number<T: LosslessStringConvertible & Sendable>(_ rule: String) -> @Sendable (String) throws -> T {
    { text in
        guard let value = T(text) else { throw ValidationError(rule) }
        return value
    }
}
