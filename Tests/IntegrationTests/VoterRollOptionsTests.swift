import Foundation
import PGCanvas
import Postgres
import TestSupport
import Testing
import VoterRolls

/// The six options from the talk, run by a real pgworker, their PDFs read back with poppler and
/// qpdf as a person's viewer would.
@Suite(.enabled(if: databaseTestsEnabled, "PGCANVAS_SKIP_DB_TESTS=1"), .serialized)
final class VoterRollOptionsTests {
    let database: TestDatabase
    let output: URL
    let worker: WorkerProcess

    init() throws {
        database = try TestDatabase()
        output = FileManager.default.temporaryDirectory.appendingPathComponent("rolls-\(UUID().uuidString)")
        try Seeder(names: try NameBank.bundled()).seed(try database.connect(), voters: 3_000, randomSeed: 11)
        worker = try WorkerProcess(
            databaseURL: database.url, arguments: ["-c", "4", "--output-dir", output.path, "--loglevel", "warning"])
    }

    deinit {
        database.drop()
        try? FileManager.default.removeItem(at: output)
    }

    func voteradmin(_ arguments: [String]) throws -> CommandResult {
        try runCommand(Binaries.url("voteradmin"), arguments, environment: ["DATABASE_URL": database.url])
    }

    func tool(_ name: String, _ args: [String]) throws -> CommandResult {
        try runCommand(URL(fileURLWithPath: "/usr/bin/\(name)"), args)
    }

    @discardableResult
    func query(_ q: Query) throws -> Rows { try database.connect().query(q) }

    func pdfs() throws -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: output.path))?.filter { $0.hasSuffix(".pdf") }.sorted()
            ?? []
    }

    func pages(_ file: String) throws -> Int {
        let info = try tool("pdfinfo", [output.appendingPathComponent(file).path]).stdout
        let line = try #require(info.split(separator: "\n").first { $0.hasPrefix("Pages:") })
        return Int(line.split(separator: " ").last ?? "") ?? -1
    }

    /// Runs an option and checks every list it wrote. - Returns: the total pages it reported.
    func runWritingOption(_ task: String) throws -> Int {
        try? FileManager.default.removeItem(at: output)
        let result = try voteradmin(["enqueue", task, "--wait"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)\n\(worker.log.suffix(2000))")
        let line = try #require(result.stdout.split(separator: "\n").first { $0.hasPrefix("Total pages written: ") })
        let total = Int(line.split(separator: " ")[3]) ?? -1

        let stations = try query(
            "SELECT center_id, station_id, count(*) FROM station_assignment GROUP BY 1, 2 ORDER BY 1, 2")
        #expect(
            try pdfs()
                == stations.map { "center_\(try $0.decode(Int.self, 0))_\(try $0.decode(Int.self, 1)).pdf" }.sorted())
        var sum = 0
        for row in stations {
            let file = "center_\(try row.decode(Int.self, 0))_\(try row.decode(Int.self, 1)).pdf"
            let voters: Int = try row.decode(Int.self, 2)
            let n = try pages(file)
            #expect(n == (voters + 39) / 40, "\(file)")
            #expect(try tool("qpdf", ["--check", output.appendingPathComponent(file).path]).status == 0)
            sum += n
        }
        #expect(sum == total)
        // Every registered voter is in exactly one list.
        #expect(try query("SELECT count(*) FROM station_assignment")[0].decode(Int.self, 0) == 3_000)
        return total
    }

    @Test func everyOptionThatWritesListsWritesTheSamePages() throws {
        let totals = try [
            "all_in_one", "queue_tasks_by_center_with_chord", "assign_stations_and_generate_lists_with_starmap",
            "assign_stations_and_generate_lists_with_chord",
        ].map(runWritingOption)
        #expect(Set(totals).count == 1)
        #expect(totals[0] >= 75)

        // A list read back as text has its voters in order, non-ASCII names included.
        let station = try query(
            """
            SELECT center_id, station_id FROM station_assignment s JOIN voter v USING (voter_id)
            WHERE v.voter_name !~ '^[ -~]*$' GROUP BY 1, 2 ORDER BY count(*) DESC LIMIT 1
            """)[0]
        let center: Int = try station.decode(Int.self, 0)
        let stationID: Int = try station.decode(Int.self, 1)
        let names = try query(
            """
            SELECT v.voter_name FROM station_assignment s JOIN voter v USING (voter_id)
            WHERE s.center_id = \(center) AND s.station_id = \(stationID) ORDER BY v.voter_name, v.voter_id
            """
        ).map { try $0.decode(String.self, 0) }
        let text = try tool(
            "pdftotext", ["-layout", output.appendingPathComponent("center_\(center)_\(stationID).pdf").path, "-"]
        ).stdout
        var cursor = text.startIndex
        for name in names {
            let found = try #require(
                text.range(of: name, range: cursor..<text.endIndex), "\(name) missing or out of order")
            cursor = found.upperBound
        }
        #expect(names.contains { !$0.allSatisfy(\.isASCII) })

        // Rerunning overwrites the same files.
        let before = try pdfs()
        _ = try runWritingOption("assign_stations_and_generate_lists_with_chord")
        #expect(try pdfs() == before)
    }

    @Test func waitingOnTheCentresInsideATaskFailsAsInCelery() throws {
        let result = try voteradmin(["enqueue", "parallelize_tasks_by_center_with_join", "--wait"])
        #expect(result.status == 1)
        #expect(result.stdout.contains("error: Never call result.get() within a task!"))
        // The centre tasks were queued before the wait and still run.
        #expect(
            try eventually(timeout: 60) {
                try query(
                    "SELECT count(*) FROM canvas.jobs WHERE task = 'generate_lists_for_one_center' AND state = 'succeeded'"
                )[0]
                .decode(Int.self, 0) == 3
            })
    }

    @Test func assigningAllStationsInParallelLeavesOneAssignmentPerVoter() throws {
        try StationAssignment.refreshAll(on: database.connect())
        try query(
            "UPDATE station_assignment SET station_id = 99 WHERE voter_id IN (SELECT voter_id FROM station_assignment LIMIT 10)"
        )
        let result = try voteradmin(["enqueue", "assign_all_stations_in_parallel", "--wait"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(
            try query("SELECT count(*), count(DISTINCT voter_id) FROM station_assignment")[0].decode(Int.self, 0)
                == 3_000)
        #expect(try query("SELECT count(*) FROM station_assignment WHERE station_id = 99")[0].decode(Int.self, 0) == 0)
        let unassigned = try query(
            "SELECT count(*) FROM voter_registration r LEFT JOIN station_assignment s USING (voter_id) WHERE s.voter_id IS NULL"
        )
        #expect(try unassigned[0].decode(Int.self, 0) == 0)
    }

    @Test func aFailingSubTaskRunsTheChordErrorCallbackOnceAndNeverSumPages() throws {
        let result = try voteradmin(["enqueue", "group_with_error_in_sub_task", "--wait"])
        #expect(result.status == 1)
        usleep(500_000)
        #expect(
            try query("SELECT count(*) FROM canvas.jobs WHERE task = 'on_chord_error' AND state = 'succeeded'")[0]
                .decode(Int.self, 0) == 1)
        #expect(try query("SELECT count(*) FROM canvas.jobs WHERE task = 'sum_pages'")[0].decode(Int.self, 0) == 0)
        #expect(worker.log.contains("on_chord_error: job"))
    }

    @Test func debugTaskLogsItsRequest() throws {
        let result = try voteradmin(["enqueue", "debug_task", "--args", "[1]", "--wait"])
        #expect(result.status == 0)
        #expect(eventually(timeout: 5) { self.worker.log.contains("Request: {id:") })
    }
}
