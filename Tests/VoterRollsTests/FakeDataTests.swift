import Testing

@testable import VoterRolls

@Suite struct FakeDataTests {
    @Test func uniqueIDsNeverRepeatAndStayInRange() {
        let ids = UniqueIDs(lower: 10_000, upper: 99_999, key: 99)
        var seen = Set<Int>()
        for i in 0..<ids.capacity {
            let id = ids[i]
            #expect((10_000...99_999).contains(id))
            seen.insert(id)
        }
        #expect(seen.count == 90_000)
    }

    @Test func uniqueIDsLookShuffled() {
        let ids = UniqueIDs(lower: 10_000_000, upper: 99_999_999, key: 1)
        let first = (0..<1000).map { ids[$0] }
        let ascending = zip(first, first.dropFirst()).filter { $0 < $1 }.count
        // A shuffled sequence rises about half the time; an arithmetic one always or never.
        #expect((400...600).contains(ascending))
    }

    @Test func seededGeneratorIsDeterministic() {
        var a = SeededGenerator(seed: 5)
        var b = SeededGenerator(seed: 5)
        var c = SeededGenerator(seed: 6)
        let xs = (0..<10).map { _ in a.next() }
        #expect(xs == (0..<10).map { _ in b.next() })
        #expect(xs != (0..<10).map { _ in c.next() })
        for _ in 0..<10_000 {
            let u = a.nextUnitInterval()
            #expect(u > 0 && u <= 1)
        }
    }

    @Test func dirichletWeightsFormADistributionAndPickFindsTheBucket() {
        var g = SeededGenerator(seed: 3)
        let cumulative = Seeder.dirichletCumulative(count: 50, generator: &g)
        #expect(cumulative.last == 1.0)
        #expect(zip(cumulative, cumulative.dropFirst()).allSatisfy { $0 <= $1 })
        #expect(Seeder.pick([0.2, 0.5, 1.0], 0.1) == 0)
        #expect(Seeder.pick([0.2, 0.5, 1.0], 0.2) == 0)
        #expect(Seeder.pick([0.2, 0.5, 1.0], 0.21) == 1)
        #expect(Seeder.pick([0.2, 0.5, 1.0], 1.0) == 2)
    }

    @Test func centreCountFollowsTheOriginal() {
        #expect(Seeder.centerCount(voters: 1) == 1)
        #expect(Seeder.centerCount(voters: 10_000) == 10)
        #expect(Seeder.centerCount(voters: 1_000_000) == 1000)
    }

    @Test func bundledNamesAreManyAndIncludeNonASCII() throws {
        let bank = try NameBank.bundled()
        #expect(bank.firstNames.count >= 1000)
        #expect(bank.lastNames.count >= 1000)
        for name in ["José", "Zoë", "Łukasz"] { #expect(bank.firstNames.contains(name)) }
        #expect(bank.lastNames.contains("Nguyễn"))
    }

    @Test func centreNamesAreDistinct() throws {
        var g = SeededGenerator(seed: 1)
        let names = CenterNames.make(count: 5000, names: try NameBank.bundled(), generator: &g)
        #expect(Set(names).count == 5000)
    }
}
