/// Unique pseudo-random ids in a fixed range without remembering the ones handed out: a
/// four-round Feistel permutation of [0, 2^bits) with cycle-walking into [0, count).
///
/// `UniqueIDs(lower: 10_000_000, upper: 99_999_999, key: k)[i]` for i = 0, 1, 2, … never repeats,
/// which is what 8-digit voter ids need at any scale up to the 90 million the format allows.
struct UniqueIDs {
    let lower: Int
    let count: UInt64
    let halfBits: UInt64
    let keys: [UInt64]

    init(lower: Int, upper: Int, key: UInt64) {
        precondition(upper >= lower)
        self.lower = lower
        count = UInt64(upper - lower + 1)
        var bits: UInt64 = 2
        while (1 << bits) < count { bits += 2 }
        halfBits = bits / 2
        var generator = SeededGenerator(seed: key)
        keys = (0..<4).map { _ in generator.next() }
    }

    var capacity: Int { Int(count) }

    subscript(index: Int) -> Int {
        precondition(index >= 0 && UInt64(index) < count)
        var x = UInt64(index)
        repeat { x = permute(x) } while x >= count
        return lower + Int(x)
    }

    private func permute(_ value: UInt64) -> UInt64 {
        let mask: UInt64 = (1 << halfBits) - 1
        var left = value >> halfBits
        var right = value & mask
        for key in keys {
            var h = (right &+ key) &* 0x9E37_79B9_7F4A_7C15
            h ^= h >> 29
            let newRight = (left ^ h) & mask
            left = right
            right = newRight
        }
        return (left << halfBits) | right
    }
}
