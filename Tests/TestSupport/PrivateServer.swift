import Foundation

/// A PostgreSQL cluster of a test's own (initdb in a temporary folder, Unix socket only), for
/// tests that stop and restart the server, which they must never do to the shared one.
public final class PrivateServer: @unchecked Sendable {
    // Only touched from the test's thread.
    public let dataDirectory: URL
    public let port: Int
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/pgdev.sh")

    public init() throws {
        let base = URL(fileURLWithPath: "/tmp").appendingPathComponent("pgc-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        chmod(base.path, 0o755)
        dataDirectory = base.appendingPathComponent("data")
        port = Int.random(in: 20_000...40_000)
        try control("start")
    }

    deinit {
        try? control("stop")
        try? FileManager.default.removeItem(at: dataDirectory.deletingLastPathComponent())
    }

    public var url: String {
        (try? runCommand(Self.script, ["url"], environment: environment).stdout.trimmingCharacters(
            in: .whitespacesAndNewlines)) ?? ""
    }

    var environment: [String: String] {
        ["PGCANVAS_PGDATA": dataDirectory.path, "PGCANVAS_PGPORT": String(port), "PGCANVAS_DBNAME": "pgcanvas"]
    }

    public func control(_ action: String) throws {
        let result = try runCommand(Self.script, [action], environment: environment)
        if result.status != 0 {
            throw PrivateServerError(description: "pgdev.sh \(action) failed: \(result.stderr)")
        }
    }
}

public struct PrivateServerError: Error, CustomStringConvertible {
    public var description: String
}
