import Foundation

/// What one printed voter roll holds: a polling station's voters, in order.
public struct StationListDocument: Sendable {
    public var centerID: Int
    public var centerName: String
    public var stationID: Int
    public var voterNames: [String]

    public init(centerID: Int, centerName: String, stationID: Int, voterNames: [String]) {
        self.centerID = centerID
        self.centerName = centerName
        self.stationID = stationID
        self.voterNames = voterNames
    }

    public static let rowsPerPage = 40

    /// ceil(voters / 40), and one page for an empty station. Every voter is printed: the last
    /// page simply holds fewer rows (the original dropped `voters mod pages` of them).
    public var pageCount: Int { max(1, (voterNames.count + Self.rowsPerPage - 1) / Self.rowsPerPage) }

    /// `center_<center_id>_<station_id>.pdf`.
    public var fileName: String { "center_\(centerID)_\(stationID).pdf" }

    /// The footer of page `n` (1-based), or nil when the list fits on one page.
    public func footer(page n: Int) -> String? {
        pageCount > 1 ? "\(centerName) (\(centerID)) Voter List - Page-\(n)" : nil
    }
}
