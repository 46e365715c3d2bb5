/// Finds every task a canvas in JSON form would run, with where it stands (`body.task`,
/// `chain[1].task`, the paths the broker's own messages use), so a command can refuse names no
/// worker knows before enqueueing.
///
/// ```swift
/// let canvas = chain([signature("canvas.add", 1, 2), signature("math.double")]).json
/// CanvasTaskNames.find(in: canvas)   // [("chain[0].task", "canvas.add"), ("chain[1].task", "math.double")]
/// ```
public enum CanvasTaskNames {
    public static func find(in canvas: JSONValue) -> [(path: String, task: String)] {
        find(in: canvas, prefix: "")
    }

    /// The first task of the canvas (in `find`'s order) that `isKnown` refuses, with its path.
    /// Builds a path only for that one: a chord of 100,000 members is checked without making
    /// 100,000 path strings (`voteradmin enqueue --canvas` checks every file this way).
    public static func firstUnknown(
        in canvas: JSONValue, isKnown: (String) -> Bool
    ) -> (path: String, task: String)? {
        var trail: [String] = []
        return firstUnknown(in: canvas, trail: &trail, isKnown: isKnown)
    }

    private static func firstUnknown(
        in canvas: JSONValue, trail: inout [String], isKnown: (String) -> Bool
    ) -> (path: String, task: String)? {
        guard case .object(let o) = canvas else { return nil }
        func hit(_ key: String, _ task: String) -> (path: String, task: String) {
            (trail.joined() + key, task)
        }
        if let t = o["task"]?.stringValue, !isKnown(t) { return hit("task", t) }
        if let t = o["starmap"]?.stringValue, !isKnown(t) { return hit("starmap", t) }
        for key in ["group", "chain", "chord"] {
            guard case .array(let members)? = o[key] else { continue }
            for (i, member) in members.enumerated() {
                // Plain members (the bulk of a large header) need no path unless they are refused.
                if case .object(let m) = member, m.count == 1, let t = m["task"]?.stringValue {
                    if isKnown(t) { continue }
                }
                trail.append("\(key)[\(i)].")
                defer { trail.removeLast() }
                if let found = firstUnknown(in: member, trail: &trail, isKnown: isKnown) { return found }
            }
        }
        if let body = o["body"] {
            trail.append("body.")
            defer { trail.removeLast() }
            if let found = firstUnknown(in: body, trail: &trail, isKnown: isKnown) { return found }
        }
        // One error callback, or a list of them.
        if case .array(let list)? = o["on_error"] {
            for (i, e) in list.enumerated() {
                trail.append("on_error[\(i)].")
                defer { trail.removeLast() }
                if let found = firstUnknown(in: e, trail: &trail, isKnown: isKnown) { return found }
            }
        } else if let e = o["on_error"] {
            trail.append("on_error.")
            defer { trail.removeLast() }
            if let found = firstUnknown(in: e, trail: &trail, isKnown: isKnown) { return found }
        }
        return nil
    }

    static func find(in canvas: JSONValue, prefix: String) -> [(path: String, task: String)] {
        guard let o = canvas.objectValue else { return [] }
        var found: [(String, String)] = []
        if let t = o["task"]?.stringValue { found.append((prefix + "task", t)) }
        if let t = o["starmap"]?.stringValue { found.append((prefix + "starmap", t)) }
        for key in ["group", "chain", "chord"] {
            for (i, member) in (o[key]?.arrayValue ?? []).enumerated() {
                found += find(in: member, prefix: "\(prefix)\(key)[\(i)].")
            }
        }
        if let body = o["body"] { found += find(in: body, prefix: prefix + "body.") }
        // One error callback, or a list of them.
        if let list = o["on_error"]?.arrayValue {
            for (i, e) in list.enumerated() { found += find(in: e, prefix: "\(prefix)on_error[\(i)].") }
        } else if let e = o["on_error"] {
            found += find(in: e, prefix: prefix + "on_error.")
        }
        return found
    }
}
