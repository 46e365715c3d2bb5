/// Finds every task a canvas in JSON form would run, with where it stands
/// (`chord.body.task`), so a command can refuse names no worker knows before enqueueing.
public enum CanvasTaskNames {
    public static func find(in canvas: JSONValue, path: String = "canvas") -> [(path: String, task: String)] {
        guard let o = canvas.objectValue else { return [] }
        var found: [(String, String)] = []
        if let t = o["task"]?.stringValue { found.append((path + ".task", t)) }
        if let t = o["starmap"]?.stringValue { found.append((path + ".starmap", t)) }
        for key in ["group", "chain", "chord"] {
            for (i, member) in (o[key]?.arrayValue ?? []).enumerated() {
                found += find(in: member, path: "\(path).\(key)[\(i)]")
            }
        }
        if let body = o["body"] { found += find(in: body, path: path + ".body") }
        if let e = o["on_error"] { found += find(in: e, path: path + ".on_error") }
        return found
    }
}
