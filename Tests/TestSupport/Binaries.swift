import Foundation

/// The executables built beside the test bundle (`voteradmin`, `pgworker`), run as a user would.
public enum Binaries {
    public static var directory: URL {
        if let dir = ProcessInfo.processInfo.environment["PGCANVAS_BIN_DIR"] {
            return URL(fileURLWithPath: dir)
        }
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        // On macOS the bundle is a directory: …/debug/pgcanvasPackageTests.xctest/Contents/MacOS/…
        while dir.pathComponents.count > 1,
            !FileManager.default.fileExists(atPath: dir.appendingPathComponent("voteradmin").path)
        {
            if dir.lastPathComponent == "debug" || dir.lastPathComponent == "release" { break }
            dir = dir.deletingLastPathComponent()
        }
        return dir
    }

    public static func url(_ name: String) -> URL { directory.appendingPathComponent(name) }
}

/// What a finished command printed and how it exited.
public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var stderrLines: [String] { stderr.split(separator: "\n").map(String.init) }
}

/// Runs an executable to completion with extra environment variables.
public func runCommand(_ executable: URL, _ arguments: [String], environment: [String: String] = [:]) throws
    -> CommandResult
{
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env.merge(environment) { $1 }
    process.environment = env
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    // Read both pipes concurrently so a chatty child never blocks on a full pipe.
    nonisolated(unsafe) var errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return CommandResult(
        status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
}
