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
