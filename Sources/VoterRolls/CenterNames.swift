/// School-like polling centre names: "Tri-County North Middle School", "Brumby Elementary School".
enum CenterNames {
    static let qualifiers = ["", "", "", "North ", "South ", "East ", "West ", "Central ", "Upper ", "Lower "]
    static let places = [
        "Tri-County", "Lakeview", "Riverside", "Oak Grove", "Maple Hill", "Cedar Creek", "Pine Ridge",
        "Willow Bend", "Fairview", "Greenfield", "Hillcrest", "Brookside", "Sunnyvale", "Clearwater",
        "Meadowbrook", "Springdale", "Westwood", "Stonebridge", "Harbor View", "Eagle Rock",
    ]
    static let kinds = [
        "Elementary School", "Middle School", "High School", "Early Childhood Family Center",
        "Community Center", "Public Library", "Academy", "Junior High School", "Recreation Center",
        "Intermediate School", "Primary School", "Charter School",
    ]

    /// `count` distinct names; a repeat gets a number ("… School No. 2").
    static func make(count: Int, names: NameBank, generator: inout SeededGenerator) -> [String] {
        var seen: [String: Int] = [:]
        var result: [String] = []
        result.reserveCapacity(count)
        for _ in 0..<count {
            let placeFromNames = generator.next() % 2 == 0
            let place =
                placeFromNames
                ? names.lastNames[Int(generator.next() % UInt64(names.lastNames.count))]
                : places[Int(generator.next() % UInt64(places.count))]
            let qualifier = qualifiers[Int(generator.next() % UInt64(qualifiers.count))]
            let kind = kinds[Int(generator.next() % UInt64(kinds.count))]
            var name = "\(place) \(qualifier)\(kind)"
            if let n = seen[name] {
                seen[name] = n + 1
                name += " No. \(n + 1)"
            } else {
                seen[name] = 1
            }
            result.append(name)
        }
        return result
    }
}
