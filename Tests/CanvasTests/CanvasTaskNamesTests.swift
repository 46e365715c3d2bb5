import Foundation
import PGCanvas
import TestSupport
import Testing

/// `voteradmin enqueue --canvas` refuses the first task name no worker knows, with its path.
/// `firstUnknown` builds that one path only; it must name what `find` would have named first.
@Suite struct CanvasTaskNamesTests {
    static let names = ["canvas.add", "canvas.noop", "x.unknown", "y.unknown"]

    /// A random canvas of every shape a path can pass through: groups, chains, chords with their
    /// bodies, error callbacks alone or in lists, signatures and starmaps.
    static func canvas(depth: Int, _ random: inout SplitMix64) -> JSONValue {
        let name = JSONValue.string(names.randomElement(using: &random)!)
        if depth == 0 || Int.random(in: 0..<3, using: &random) == 0 {
            var signature: [String: JSONValue] =
                Bool.random(using: &random) || depth == 0 ? ["task": name] : ["starmap": name, "args": [[1]]]
            switch Int.random(in: 0..<4, using: &random) {
            case 0: signature["on_error"] = ["task": .string(names.randomElement(using: &random)!)]
            case 1: signature["on_error"] = .array([["task": .string(names.randomElement(using: &random)!)]])
            default: break
            }
            return .object(signature)
        }
        let members = JSONValue.array(
            (0..<Int.random(in: 1...4, using: &random)).map { _ in canvas(depth: depth - 1, &random) })
        switch Int.random(in: 0..<3, using: &random) {
        case 0: return ["group": members]
        case 1: return ["chain": members]
        default: return ["chord": members, "body": canvas(depth: depth - 1, &random)]
        }
    }

    @Test(arguments: [UInt64(1), 2, 3, 4, 5])
    func firstUnknownNamesWhatFindNamesFirst(seed: UInt64) {
        var random = SplitMix64(state: seed)
        for _ in 0..<200 {
            let c = Self.canvas(depth: 4, &random)
            let known: Set<String> = ["canvas.add", "canvas.noop"]
            let expected = CanvasTaskNames.find(in: c).first { !known.contains($0.task) }
            let found = CanvasTaskNames.firstUnknown(in: c, isKnown: known.contains)
            #expect(found?.path == expected?.path && found?.task == expected?.task, "\(c.jsonText)")
        }
    }

    @Test func anUnknownNameDeepInALargeHeaderIsNamedByItsPath() {
        let header = JSONValue.array(
            Array(repeating: ["task": "canvas.noop"], count: 1000) + [
                ["chain": [["task": "canvas.noop"], ["task": "x.y"]]]
            ])
        let found = CanvasTaskNames.firstUnknown(
            in: ["chord": header, "body": ["task": "canvas.noop"]], isKnown: { $0 == "canvas.noop" })
        #expect(found?.path == "chord[1000].chain[1].task")
        #expect(found?.task == "x.y")
    }
}
