import Foundation
import Logging
import Postgres
import RollPDF

/// Writes station lists from the database, logging what the original sample prints.
public struct RollWriter {
    public var outputDirectory: URL
    public var logger: Logger

    public init(outputDirectory: URL, logger: Logger) {
        self.outputDirectory = outputDirectory
        self.logger = logger
    }

    /// Where lists go: `PGCANVAS_OUTPUT_DIR` (pgworker's `--output-dir`), else `output/`.
    public static var defaultDirectory: URL {
        URL(fileURLWithPath: ProcessInfo.processInfo.environment["PGCANVAS_OUTPUT_DIR"] ?? "output")
    }

    /// - Returns: the pages written.
    public func writeStation(center: StationAssignment.Center, station: Int, on c: Connection) throws -> Int {
        let names = try StationAssignment.voterNames(center: center.id, station: station, on: c)
        logger.warning(
            "Writing center list for \(center.name) (\(center.id)), station \(station) with \(names.count) voters")
        return try StationListRenderer.write(
            StationListDocument(centerID: center.id, centerName: center.name, stationID: station, voterNames: names),
            to: outputDirectory)
    }

    /// Assigns the centre's stations, then writes each list. - Returns: the pages written.
    public func writeCenter(_ center: StationAssignment.Center, on c: Connection) throws -> Int {
        logger.warning("Writing center list for \(center.name) (\(center.id))")
        logger.warning("Assigning stations for \(center.id) (\(center.name))")
        try StationAssignment.refresh(center: center.id, on: c)
        var pages = 0
        for station in try StationAssignment.stations(center: center.id, on: c) {
            pages += try writeStation(center: center, station: station, on: c)
        }
        return pages
    }
}
