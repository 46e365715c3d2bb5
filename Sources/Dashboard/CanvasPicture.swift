import Foundation
import PGCanvas

/// A canvas drawn as SVG on the server: chords and groups as boxes whose rows are their members
/// (slots), a chain as boxes joined by arrows, each job coloured by state, a chord's progress in
/// its header, a body not yet created and error callbacks as dashed boxes.
struct CanvasPicture {
    indirect enum Node {
        case job(CanvasGraph.Job)
        /// Not created yet: a chain link still to run, or a chord's body.
        case pending(label: String, role: String, note: String)
        case chord(CanvasGraph.Chord, slots: [[Node]], more: [String: Int])
    }

    static let jobWidth = 220.0
    static let jobHeight = 44.0
    static let arrow = 28.0
    static let gap = 10.0
    static let pad = 10.0
    static let header = 28.0
    static let footer = 18.0

    let graph: CanvasGraph
    private let chordsBySlot: [Int64: [Int: [CanvasGraph.Chord]]]
    private let jobsBySlot: [Int64: [Int: [CanvasGraph.Job]]]
    private let errbacksByParent: [Int64: [CanvasGraph.Job]]

    init(graph: CanvasGraph) {
        self.graph = graph
        var chords: [Int64: [Int: [CanvasGraph.Chord]]] = [:]
        for ch in graph.chords {
            guard let parent = ch.parentChord else { continue }
            chords[parent, default: [:]][ch.position ?? 0, default: []].append(ch)
        }
        var jobs: [Int64: [Int: [CanvasGraph.Job]]] = [:]
        for j in graph.jobs {
            guard let chord = j.chordID else { continue }
            jobs[chord, default: [:]][j.position ?? 0, default: []].append(j)
        }
        chordsBySlot = chords
        jobsBySlot = jobs
        errbacksByParent = Dictionary(grouping: graph.errbacks, by: { graph.errbackParents[$0.id] ?? 0 })
    }

    /// The whole picture, or nil when the root is not among the chords read.
    func svg() -> HTML? {
        guard let root = graph.chords.first(where: { $0.id == graph.rootID }) else { return nil }
        let tree = node(for: root, depth: 0)
        let size = measure(tree)
        let width = size.w + 2 * Self.pad
        let height = size.h + 2 * Self.pad
        var out: HTML = """
            <svg xmlns="http://www.w3.org/2000/svg" class="canvas-picture" width="\(Int(width))" height="\(Int(height))" \
            viewBox="0 0 \(Int(width)) \(Int(height))" role="img" aria-label="canvas \(graph.rootID)">
            <defs><marker id="arrowhead" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">\
            <path d="M0,0 L8,4 L0,8 z" fill="#6b7280"/></marker></defs>

            """
        out = out + draw(tree, x: Self.pad, y: Self.pad)
        return out + "</svg>"
    }

    private func node(for chord: CanvasGraph.Chord, depth: Int) -> Node {
        let shown = min(chord.size, Store.memberLimit)
        var slots: [[Node]] = []
        for position in 0..<max(shown, chord.kind == "root" ? 1 : 0) {
            var items: [(Int64, Node)] = []
            for j in jobsBySlot[chord.id]?[position] ?? [] { items.append((j.id, .job(j))) }
            for ch in chordsBySlot[chord.id]?[position] ?? [] where depth < 32 {
                items.append((ch.id, node(for: ch, depth: depth + 1)))
            }
            items.sort { $0.0 < $1.0 }
            var row = items.map(\.1)
            if let last = row.last {
                switch last {
                case .job(let j):
                    let note = j.state == "failed" || j.state == "cancelled" ? "won't run" : "not yet"
                    for link in Self.links(j.chainText) {
                        row.append(.pending(label: link, role: "next link", note: note))
                    }
                case .chord(let ch, _, _) where ch.bodyText != nil:
                    let note = ch.state == "pending" ? "not yet" : "won't run"
                    row.append(.pending(label: Self.label(ch.bodyText), role: "body", note: note))
                    for link in Self.links(ch.chainText) {
                        row.append(.pending(label: link, role: "next link", note: note))
                    }
                default: break
                }
            }
            if row.isEmpty { row.append(.pending(label: "…", role: "member", note: "not yet")) }
            slots.append(row)
        }
        return .chord(chord, slots: slots, more: graph.omitted[chord.id] ?? [:])
    }

    private func measure(_ node: Node) -> (w: Double, h: Double) {
        switch node {
        case .job(let j):
            let callbacks = Double(errbacksByParent[j.id]?.count ?? 0)
            return (
                Self.jobWidth,
                Self.jobHeight + (j.onErrorText != nil ? Self.footer : 0)
                    + callbacks * (Self.jobHeight + Self.gap)
            )
        case .pending:
            return (Self.jobWidth, Self.jobHeight)
        case .chord(let ch, let slots, let more):
            var w = Double(Self.title(ch).count + ch.state.count) * 7.5 + 150
            var h = Self.header + Self.pad
            let columns = gridColumns(slots)
            if columns > 1 {
                let rows = (slots.count + columns - 1) / columns
                w = max(w, Double(columns) * Self.jobWidth + Double(columns - 1) * Self.gap + 2 * Self.pad)
                h += Double(rows) * Self.jobHeight + Double(rows - 1) * Self.gap
            } else {
                for (i, row) in slots.enumerated() {
                    let sizes = row.map(measure)
                    w = max(
                        w, sizes.map(\.w).reduce(0, +) + Double(max(0, sizes.count - 1)) * Self.arrow + 2 * Self.pad)
                    h += (sizes.map(\.h).max() ?? 0) + (i > 0 ? Self.gap : 0)
                }
            }
            if !more.isEmpty { h += Self.gap + Self.jobHeight }
            if ch.onErrorText != nil { h += Self.footer }
            return (w, h + Self.pad)
        }
    }

    private func draw(_ node: Node, x: Double, y: Double) -> HTML {
        switch node {
        case .job(let j):
            var out: HTML = """
                <a href="/jobs/\(j.id)" class="member" data-job-id="\(j.id)" data-state="\(j.state)" data-task="\(j.task)">\
                <title>#\(j.id) \(j.task): \(j.state)\(j.error.map { "\n" + $0 } ?? "")</title>\
                <rect x="\(f(x))" y="\(f(y))" width="\(f(Self.jobWidth))" height="\(f(Self.jobHeight))" rx="6" \
                class="state-\(j.state)"/>\
                <text x="\(f(x + 8))" y="\(f(y + 18))" class="task">\(Self.short(j.task, 27))</text>\
                <text x="\(f(x + 8))" y="\(f(y + 35))" class="meta">#\(j.id) · \(j.state)</text></a>

                """
            var below = y + Self.jobHeight
            if let onError = j.onErrorText {
                out =
                    out + """
                        <text x="\(f(x + 4))" y="\(f(below + 13))" class="errback-note">on error → \(Self.short(Self.label(onError), 22))</text>

                        """
                below += Self.footer
            }
            for cb in errbacksByParent[j.id] ?? [] {
                out =
                    out + """
                        <line x1="\(f(x + 20))" y1="\(f(below))" x2="\(f(x + 20))" y2="\(f(below + Self.gap))" class="errback-line"/>
                        """
                out = out + draw(.job(cb), x: x, y: below + Self.gap)
                below += Self.gap + Self.jobHeight
            }
            return out
        case .pending(let label, let role, let note):
            return """
                <g class="pending" data-role="\(role)"><title>\(role) (\(note)): \(label)</title>\
                <rect x="\(f(x))" y="\(f(y))" width="\(f(Self.jobWidth))" height="\(f(Self.jobHeight))" rx="6" class="not-created"/>\
                <text x="\(f(x + 8))" y="\(f(y + 18))" class="task">\(Self.short(label, 24))</text>\
                <text x="\(f(x + 8))" y="\(f(y + 35))" class="meta">\(role) · \(note)</text></g>

                """
        case .chord(let ch, let slots, let more):
            let size = measure(node)
            let done = ch.size - ch.remaining
            let title = Self.title(ch)
            var out: HTML = """
                <g class="chord" data-chord-id="\(ch.id)" data-kind="\(ch.kind)" data-state="\(ch.state)" \
                data-done="\(done)" data-size="\(ch.size)">\
                <title>\(ch.kind) #\(ch.id): \(ch.state)\(ch.error.map { "\n" + $0 } ?? "")</title>\
                <rect x="\(f(x))" y="\(f(y))" width="\(f(size.w))" height="\(f(size.h))" rx="8" class="box box-\(ch.state)"/>\
                <text x="\(f(x + Self.pad))" y="\(f(y + 18))" class="chord-title">\(title) · \(ch.state)</text>

                """
            if ch.kind != "root", ch.size > 0 {
                let barX = x + size.w - 110
                out =
                    out + """
                        <rect x="\(f(barX))" y="\(f(y + 8))" width="100" height="10" rx="3" class="progress-bg"/>\
                        <rect x="\(f(barX))" y="\(f(y + 8))" width="\(f(100 * Double(done) / Double(ch.size)))" height="10" rx="3" \
                        class="progress"/>

                        """
            }
            var rowY = y + Self.header
            let columns = gridColumns(slots)
            if columns > 1 {
                // Many one-job members: down, then across, in the order of their slots.
                let rows = (slots.count + columns - 1) / columns
                for (i, row) in slots.enumerated() {
                    out =
                        out
                        + draw(
                            row[0], x: x + Self.pad + Double(i / rows) * (Self.jobWidth + Self.gap),
                            y: rowY + Double(i % rows) * (Self.jobHeight + Self.gap))
                }
                rowY += Double(rows) * Self.jobHeight + Double(rows - 1) * Self.gap
            }
            for (i, row) in (columns > 1 ? [] : slots).enumerated() {
                if i > 0 { rowY += Self.gap }
                var itemX = x + Self.pad
                var rowHeight = 0.0
                for (k, item) in row.enumerated() {
                    let s = measure(item)
                    if k > 0 {
                        out =
                            out + """
                                <line x1="\(f(itemX - Self.arrow + 2))" y1="\(f(rowY + Self.jobHeight / 2))" \
                                x2="\(f(itemX - 3))" y2="\(f(rowY + Self.jobHeight / 2))" class="arrow" marker-end="url(#arrowhead)"/>

                                """
                    }
                    out = out + draw(item, x: itemX, y: rowY)
                    itemX += s.w + Self.arrow
                    rowHeight = max(rowHeight, s.h)
                }
                rowY += rowHeight
            }
            if !more.isEmpty {
                rowY += Self.gap
                let counts = more.keys.sorted().map { "\(more[$0]!) \($0)" }.joined(separator: ", ")
                out =
                    out + """
                        <g class="more"><rect x="\(f(x + Self.pad))" y="\(f(rowY))" width="\(f(size.w - 2 * Self.pad))" \
                        height="\(f(Self.jobHeight))" rx="6" class="not-created"/>\
                        <text x="\(f(x + Self.pad + 8))" y="\(f(rowY + 27))" class="meta">and more members: \(counts)</text></g>

                        """
                rowY += Self.jobHeight
            }
            if let onError = ch.onErrorText {
                out =
                    out + """
                        <text x="\(f(x + Self.pad))" y="\(f(rowY + 14))" class="errback-note">on error → \(Self.short(Self.label(onError), 40))</text>

                        """
            }
            return out + "</g>\n"
        }
    }

    /// Columns for a chord whose many members are single plain jobs (a chord over stations,
    /// say): a grid reads better than a column hundreds of boxes long. 1: draw rows as usual.
    private func gridColumns(_ slots: [[Node]]) -> Int {
        guard slots.count > 10 else { return 1 }
        let plain = slots.allSatisfy { row in
            guard row.count == 1 else { return false }
            switch row[0] {
            case .job(let j): return j.onErrorText == nil && errbacksByParent[j.id] == nil
            case .pending: return true
            case .chord: return false
            }
        }
        return plain ? min(5, (slots.count + 9) / 10) : 1
    }

    /// A group inside a chord is stored as a chord whose body is `canvas.identity`: it is drawn as the group it was.
    static func title(_ ch: CanvasGraph.Chord) -> String {
        let done = ch.size - ch.remaining
        switch ch.kind {
        case "root": return "canvas #\(ch.id)"
        case "group": return "group #\(ch.id) · \(done)/\(ch.size) done"
        case _ where ch.isInnerGroup: return "group #\(ch.id) · \(done)/\(ch.size) done"
        default: return "chord #\(ch.id) · header \(done)/\(ch.size)"
        }
    }

    private func f(_ v: Double) -> String { String(format: "%.1f", v) }

    static func short(_ s: String, _ n: Int) -> String { s.count > n ? String(s.prefix(n - 1)) + "…" : s }

    /// A canvas's JSON as a short label: its task, or what kind of canvas it is.
    static func label(_ text: String?) -> String {
        guard let text, let value = try? JSONValue(parsingStored: text) else { return "?" }
        return label(value)
    }

    static func label(_ value: JSONValue) -> String {
        if let list = value.arrayValue { return list.map(label).joined(separator: ", ") }
        if let task = value["task"]?.stringValue { return task }
        if let task = value["starmap"]?.stringValue { return "starmap \(task)" }
        if let links = value["chain"]?.arrayValue { return "chain of \(links.count)" }
        if let members = value["group"]?.arrayValue { return "group of \(members.count)" }
        if let members = value["chord"]?.arrayValue { return "chord of \(members.count)" }
        return "?"
    }

    /// The links of a job's `chain` column, each as a label.
    static func links(_ text: String?) -> [String] {
        guard let text, let list = (try? JSONValue(parsingStored: text))?.arrayValue else { return [] }
        return list.map(label)
    }
}
