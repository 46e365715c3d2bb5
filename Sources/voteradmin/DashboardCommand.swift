import ArgumentParser
import CommandSupport
import Dashboard
import Foundation
import Logging
import Postgres
import RollPDF
import VoterRolls

struct DashboardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "Serve the web dashboard: queues, workers, jobs, canvas pictures, schedules, /metrics.")
    @OptionGroup var database: DatabaseOptions

    @Option(
        help: ArgumentHelp(
            "Where to listen. Off loopback it needs PGCANVAS_DASHBOARD_USER and _PASSWORD.", valueName: "host:port"))
    var bind: String = "127.0.0.1:8080"

    @Flag(name: .customLong("read-only"), help: "Hide every action (retry, cancel, purge, schedules) and refuse them.")
    var readOnly = false

    @Option(name: .customLong("output-dir"), help: "Where the station lists are (pgworker's --output-dir).")
    var outputDir: String = RollWriter.defaultDirectory.path

    func run() throws {
        var config: DashboardConfiguration
        do {
            config = try DashboardConfiguration(
                bind: bind, database: database.configuration(applicationName: "pgcanvas-dashboard"))
            try config.readCredentials(from: ProcessInfo.processInfo.environment)
            try config.validate()
        } catch let error as DashboardConfigurationError {
            throw CommandFailure(error.description, exitCode: CommandFailure.usage)
        }
        config.readOnly = readOnly
        config.extraPages = [VoterRollsPage.page(outputDirectory: URL(fileURLWithPath: outputDir))]
        var logger = Logger(label: "pgcanvas.dashboard")
        logger.logLevel = .warning
        let server = try DashboardServer(configuration: config, logger: logger)
        let display = config.host.contains(":") ? "[\(config.host)]" : config.host
        let suffix = readOnly ? " (read-only)" : ""
        let done = DispatchSemaphore(value: 0)
        let failure = FailureBox()
        Task {
            do {
                try await server.run { port in
                    FileHandle.standardOutput.write(Data("Dashboard on http://\(display):\(port)/\(suffix)\n".utf8))
                }
            } catch {
                failure.set(error)
            }
            done.signal()
        }
        done.wait()
        if let error = failure.error { throw CommandFailure("dashboard stopped: \(error)") }
    }
}

/// The server's error, handed from its task to the blocked main thread (guarded by a lock).
private final class FailureBox: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: (any Error)?
    var error: (any Error)? { lock.withLock { stored } }
    func set(_ error: any Error) { lock.withLock { stored = error } }
}

/// The demo's page: each station's list, its voters and pages, and a link to its PDF.
enum VoterRollsPage {
    static func page(outputDirectory: URL) -> ExtraPage {
        ExtraPage(
            path: "/rolls", title: "Voter rolls",
            render: { c, _ in
                let present: Bool = try c.query("SELECT to_regclass('public.station_assignment') IS NOT NULL")[0]
                    .decode(Bool.self, 0)
                guard present else { return "<p>No voter-roll tables here (voteradmin migrate).</p>" }
                let totals = try c.query(
                    "SELECT (SELECT count(*) FROM polling_center), (SELECT count(*) FROM voter)")[0]
                // polling_center first: a statement locks its tables in the order it names them,
                // and the demo's order is parents first (docs/operations.md).
                let rows = try c.query(
                    """
                    SELECT s.center_id, p.center_name, s.station_id, count(*)
                    FROM polling_center p JOIN station_assignment s USING (center_id)
                    GROUP BY 1, 2, 3 ORDER BY 1, 3 LIMIT 2000
                    """)
                var body: [HTML] = []
                var pages = 0
                for row in rows {
                    let center: Int = try row.decode(Int.self, 0)
                    let station: Int = try row.decode(Int.self, 2)
                    let voters: Int = try row.decode(Int.self, 3)
                    let document = StationListDocument(
                        centerID: center, centerName: "", stationID: station,
                        voterNames: Array(repeating: "", count: voters))
                    pages += document.pageCount
                    let exists = FileManager.default.fileExists(
                        atPath: outputDirectory.appendingPathComponent(document.fileName).path)
                    let link: HTML =
                        exists
                        ? "<a class=\"pdf\" href=\"/rolls/files/\(document.fileName)\">\(document.fileName)</a>"
                        : "<span class=\"meta\">not written yet</span>"
                    body.append(
                        """
                        <tr data-center="\(center)" data-station="\(station)"><td class="num">\(center)</td>\
                        <td>\(try row.decode(String.self, 1))</td><td class="num">\(station)</td>\
                        <td class="num">\(voters)</td><td class="num">\(document.pageCount)</td><td>\(link)</td></tr>
                        """)
                }
                return """
                    <p>\(try totals.decode(Int.self, 0)) polling centres, \(try totals.decode(Int.self, 1)) voters, \
                    \(rows.count) stations assigned, \(pages) pages.</p>
                    <table id="stations"><tr><th class="num">centre</th><th>name</th><th class="num">station</th>\
                    <th class="num">voters</th><th class="num">pages</th><th>list</th></tr>\(body)</table>
                    """
            },
            file: { name in
                // Only the lists' own names: nothing else in (or outside) the folder is served.
                guard name.hasPrefix("center_"), name.hasSuffix(".pdf"),
                    name.dropFirst(7).dropLast(4).allSatisfy({ $0.isNumber || $0 == "_" })
                else { return nil }
                return outputDirectory.appendingPathComponent(name)
            })
    }
}
