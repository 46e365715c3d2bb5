import Foundation

/// First and last names bundled with the package (Resources/first_names.txt, last_names.txt),
/// about 1,400 and 1,600 of them, from several languages so that lists show non-ASCII names.
public struct NameBank: Sendable {
    public let firstNames: [String]
    public let lastNames: [String]

    public static func bundled() throws -> NameBank {
        func lines(_ name: String) throws -> [String] {
            guard let url = Bundle.module.url(forResource: "Resources/\(name)", withExtension: "txt") else {
                throw SeedError("the bundled name list \(name).txt is missing from this build")
            }
            return try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map(String.init)
                .filter { !$0.isEmpty }
        }
        return NameBank(firstNames: try lines("first_names"), lastNames: try lines("last_names"))
    }

    public func personName(_ generator: inout SeededGenerator) -> String {
        let first = firstNames[Int(generator.next() % UInt64(firstNames.count))]
        let last = lastNames[Int(generator.next() % UInt64(lastNames.count))]
        return first + " " + last
    }
}
