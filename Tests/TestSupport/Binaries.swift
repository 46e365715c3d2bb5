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
    let dir = FileManager.default.temporaryDirectory
    let outURL = dir.appendingPathComponent("cmd-\(UUID().uuidString).out")
    let errURL = dir.appendingPathComponent("cmd-\(UUID().uuidString).err")
    // Files, not pipes: a daemon the command starts (pg_ctl) can never hold them open against us.
    let out = open(outURL.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    let err = open(errURL.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    defer {
        try? FileManager.default.removeItem(at: outURL)
        try? FileManager.default.removeItem(at: errURL)
    }
    let pid: pid_t
    do {
        pid = try spawnProcess(executable, arguments, environment: environment, stdout: out, stderr: err)
    } catch {
        close(out)
        close(err)
        throw error
    }
    close(out)
    close(err)
    let status = waitForChild(pid, timeout: .infinity) ?? -1
    return CommandResult(
        status: status, stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
}
