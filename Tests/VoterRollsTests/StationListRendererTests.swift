import Foundation
import RollPDF
import TestSupport
import Testing

/// PDFs read back the way a person's viewer reads them: poppler's pdfinfo and pdftotext, qpdf.
@Suite struct StationListRendererTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rolls-\(UUID().uuidString)")

    func tool(_ name: String, _ args: [String]) throws -> CommandResult {
        try runCommand(URL(fileURLWithPath: "/usr/bin/\(name)"), args)
    }

    func document(voters: Int) -> StationListDocument {
        let special = ["José Álvarez", "Zoë Brontë", "Łukasz Żukowski", "Nguyễn Thị Mỹ"]
        let names = (0..<voters).map { i in i < special.count ? special[i] : "Voter Number \(i)" }
        return StationListDocument(
            centerID: 33956, centerName: "Tri-County North Middle School", stationID: 2, voterNames: names)
    }

    @Test(arguments: [1, 39, 40, 41, 500])
    func everyVoterIsPrintedOnCeilOfVotersOverFortyPages(voters: Int) throws {
        let doc = document(voters: voters)
        let pages = try StationListRenderer.write(doc, to: directory)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("center_33956_2.pdf").path
        #expect(pages == (voters + 39) / 40)
        let info = try tool("pdfinfo", [path])
        let fields = Dictionary(
            info.stdout.split(separator: "\n").compactMap { line -> (String, String)? in
                guard let colon = line.firstIndex(of: ":") else { return nil }
                return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
            }, uniquingKeysWith: { a, _ in a })
        #expect(fields["Pages"] == String(pages))
        #expect(fields["Page size"] == "792 x 612 pts (letter)")
        #expect(try tool("qpdf", ["--check", path]).status == 0)
        let text = try tool("pdftotext", ["-layout", path, "-"]).stdout
        var cursor = text.startIndex
        for name in doc.voterNames {
            let found = try #require(text.range(of: name, range: cursor..<text.endIndex), "missing \(name)")
            cursor = found.upperBound
        }
        #expect(text.contains("Voter Name") && text.contains("Signature"))
        if pages > 1 {
            #expect(text.contains("Tri-County North Middle School (33956) Voter List - Page-\(pages)"))
        } else {
            #expect(!text.contains("Voter List - Page-"))
        }
        // Nothing but the final file is left in the folder.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["center_33956_2.pdf"])
    }
}

@Suite struct AtomicWriteTests {
    @Test func aFailedWriteLeavesNeitherAHalfFileNorATemporaryOne() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("atomic-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let doc = StationListDocument(centerID: 10000, centerName: "X", stationID: 1, voterNames: ["A"])
        // A folder where the list should go makes the final rename fail after the PDF was drawn.
        try FileManager.default.createDirectory(
            at: directory.appendingPathComponent(doc.fileName).appendingPathComponent("occupied"),
            withIntermediateDirectories: true)
        #expect(throws: (any Error).self) { try StationListRenderer.write(doc, to: directory) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == [doc.fileName])
        var isDirectory: ObjCBool = false
        #expect(
            FileManager.default.fileExists(
                atPath: directory.appendingPathComponent(doc.fileName).path, isDirectory: &isDirectory))
        #expect(isDirectory.boolValue)
    }
}
