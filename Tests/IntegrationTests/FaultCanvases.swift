import Foundation
import TestSupport

extension SplitMix64 {
    /// True with probability `p`.
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &self) < p }
}

/// One generated canvas node, with what the checker needs to know about it.
///
/// Every leaf job carries a unique `time_limit` (leafBase + key): far beyond any run, so it never
/// fires, but it lets the checker find the job row of each leaf however the canvas was expanded.
/// Error callbacks are `canvas.noop` with a unique marker ("E12") after the failure info, so each
/// can be counted in canvas.jobs; they are spelled `on_error` or `link_error` (or one of each),
/// which add up. A third of the leaves carry a success callback (`link`), `canvas.noop` with the
/// marker "L<key>" after the leaf's result.
indirect enum FaultNode {
    case leaf(key: Int, kind: LeafKind, errbacks: [Int])
    case chain([FaultNode], errbacks: [Int])
    case group([FaultNode], errbacks: [Int])
    case chord([FaultNode], body: FaultNode, errbacks: [Int])

    enum LeafKind {
        /// canvas.identity returning its key.
        case value
        /// canvas.fail: raises on every attempt, so it fails for good after its retries.
        case fail(retries: Int)
        case sleep(Double)
        /// A starmap of canvas.identity over `count` values derived from the key.
        case starmap(count: Int)
        /// On the "purgeable" queue and scheduled a little later, so purges find it waiting.
        case purgeable(countdown: Double)
        /// A chord body's first task: canvas.noop, not immutable, so it receives the header's results.
        case body
    }

    static let leafBase = 100_000

    /// Whether a leaf with this key carries a success callback (its kind is drawn at random, so
    /// failing, slow, purged and starmap leaves all get some).
    static func hasLink(_ key: Int) -> Bool { key % 3 == 1 }

    var errbacks: [Int] {
        switch self {
        case .leaf(_, _, let e), .chain(_, let e), .group(_, let e), .chord(_, _, let e): e
        }
    }

    /// Every leaf below, bodies included.
    var leafKeys: [Int] {
        switch self {
        case .leaf(let key, _, _): [key]
        case .chain(let nodes, _), .group(let nodes, _): nodes.flatMap(\.leafKeys)
        case .chord(let header, let body, _): header.flatMap(\.leafKeys) + body.leafKeys
        }
    }

    /// Every node in the tree, this one first.
    var allNodes: [FaultNode] {
        switch self {
        case .leaf: [self]
        case .chain(let nodes, _), .group(let nodes, _): [self] + nodes.flatMap(\.allNodes)
        case .chord(let header, let body, _): [self] + header.flatMap(\.allNodes) + body.allNodes
        }
    }

    /// The JSON text of the result this node returns when it succeeds (nil for a failing leaf).
    var expectedResult: String? {
        switch self {
        case .leaf(let key, let kind, _):
            switch kind {
            case .value, .purgeable: return String(key)
            case .fail: return nil
            case .sleep, .body: return "null"
            case .starmap(let count):
                return "[" + (0..<count).map { String(key * 10 + $0) }.joined(separator: ",") + "]"
            }
        case .chain(let nodes, _): return nodes.last?.expectedResult
        case .group(let nodes, _):
            let parts = nodes.map(\.expectedResult)
            return parts.contains(where: { $0 == nil }) ? nil : "[" + parts.map { $0! }.joined(separator: ",") + "]"
        case .chord(_, let body, _): return body.expectedResult
        }
    }

    /// The key of the body's first task (the noop that receives the header's results).
    var bodyKey: Int? {
        guard case .chord(_, let body, _) = self else { return nil }
        switch body {
        case .leaf(let key, _, _): return key
        case .chain(let nodes, _): if case .leaf(let key, _, _) = nodes[0] { return key }
        default: break
        }
        return nil
    }

    /// The JSON form accepted by canvas.enqueue_canvas.
    var json: [String: Any] {
        var object: [String: Any]
        switch self {
        case .leaf(let key, let kind, _):
            var options: [String: Any] = ["time_limit": Self.leafBase + key, "immutable": true]
            switch kind {
            case .value:
                object = ["task": "canvas.identity", "args": [key]]
            case .fail(let retries):
                object = ["task": "canvas.fail", "args": ["F\(key)"]]
                options["max_retries"] = retries
                options["retry_backoff"] = 0.01
            case .sleep(let seconds):
                object = ["task": "canvas.sleep", "args": [seconds]]
            case .starmap(let count):
                object = ["starmap": "canvas.identity", "args": (0..<count).map { [key * 10 + $0] }]
                options["immutable"] = nil
            case .purgeable(let countdown):
                object = ["task": "canvas.identity", "args": [key]]
                options["queue"] = "purgeable"
                options["countdown"] = countdown
            case .body:
                object = ["task": "canvas.noop"]
                options["immutable"] = nil
            }
            object["options"] = options
            if Self.hasLink(key) { object["link"] = ["task": "canvas.noop", "args": ["L\(key)"]] }
        case .chain(let nodes, _): object = ["chain": nodes.map(\.json)]
        case .group(let nodes, _): object = ["group": nodes.map(\.json)]
        case .chord(let header, let body, _): object = ["chord": header.map(\.json), "body": body.json]
        }
        let callbacks: [[String: Any]] = errbacks.map { ["task": "canvas.noop", "args": ["E\($0)"]] }
        // Both spellings, and both at once, chosen by the first marker so the text stays stable.
        if let first = errbacks.first {
            switch (first % 3, callbacks.count) {
            case (0, 1): object["on_error"] = callbacks[0]
            case (1, _): object["link_error"] = callbacks
            case (2, 2...): (object["on_error"], object["link_error"]) = (callbacks[0], Array(callbacks[1...]))
            default: object["on_error"] = callbacks
            }
        }
        return object
    }

    var jsonText: String {
        let data = try! JSONSerialization.data(withJSONObject: json, options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}

/// Builds random canvases: nested groups, chains, chords and starmaps, some members failing (with
/// retries), some slow, some waiting on the purgeable queue, error callbacks sprinkled on any node.
struct FaultCanvasGenerator {
    var rng: SplitMix64
    var nextKey = 0
    var nextErrback = 0
    let maxDepth = 3

    init(seed: UInt64) { rng = SplitMix64(state: seed) }

    mutating func canvas() -> FaultNode { node(depth: 0) }

    mutating func errbacks() -> [Int] {
        guard rng.chance(0.25) else { return [] }
        let n = rng.chance(0.2) ? 2 : 1
        defer { nextErrback += n }
        return (0..<n).map { nextErrback + $0 }
    }

    mutating func key() -> Int {
        defer { nextKey += 1 }
        return nextKey
    }

    mutating func node(depth: Int) -> FaultNode {
        if depth >= maxDepth || rng.chance(depth == 0 ? 0.15 : 0.5) { return leaf() }
        let pick = Double.random(in: 0..<1, using: &rng)
        if pick < 0.35 {
            let n = Int.random(in: 2...4, using: &rng)
            return .chain((0..<n).map { _ in node(depth: depth + 1) }, errbacks: errbacks())
        } else if pick < 0.6 {
            let n = Int.random(in: 1...4, using: &rng)
            return .group((0..<n).map { _ in node(depth: depth + 1) }, errbacks: errbacks())
        } else {
            let n = rng.chance(0.05) ? 0 : Int.random(in: 1...4, using: &rng)
            let header = (0..<n).map { _ in node(depth: depth + 1) }
            return .chord(header, body: body(depth: depth + 1), errbacks: errbacks())
        }
    }

    mutating func body(depth: Int) -> FaultNode {
        let first = FaultNode.leaf(key: key(), kind: .body, errbacks: errbacks())
        guard rng.chance(0.4) else { return first }
        let n = Int.random(in: 1...2, using: &rng)
        return .chain([first] + (0..<n).map { _ in node(depth: depth + 1) }, errbacks: errbacks())
    }

    mutating func leaf() -> FaultNode {
        let pick = Double.random(in: 0..<1, using: &rng)
        let kind: FaultNode.LeafKind
        if pick < 0.05 {
            kind = .fail(retries: Int.random(in: 0...2, using: &rng))
        } else if pick < 0.13 {
            kind = .sleep(Double(Int.random(in: 5...60, using: &rng)) / 1000)
        } else if pick < 0.23 {
            kind = .starmap(count: Int.random(in: 1...3, using: &rng))
        } else if pick < 0.26 {
            kind = .purgeable(countdown: Double(Int.random(in: 2...15, using: &rng)) / 10)
        } else {
            kind = .value
        }
        return .leaf(key: key(), kind: kind, errbacks: errbacks())
    }
}
