import Foundation
import Postgres

/// Debian's PgBouncer as a child process of a test, with its default settings except where it
/// listens, how clients authenticate (trust, a user list) and the pool mode. It forwards every
/// database name to the server the tests use (`TestDatabase.adminConfiguration`).
public final class PgBouncer: @unchecked Sendable {
    // Only touched from the test's thread.
    public let port: Int
    public let user: String
    let directory: URL
    private(set) var pid: pid_t = 0
    private var stopped = false
    private var arguments: [String] = []
    private let executable: URL

    /// The binary: `PGCANVAS_PGBOUNCER`, else Debian's path, else the PATH.
    static var executable: URL? {
        if let path = ProcessInfo.processInfo.environment["PGCANVAS_PGBOUNCER"] { return URL(fileURLWithPath: path) }
        for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
            let url = URL(fileURLWithPath: dir).appendingPathComponent("pgbouncer")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return nil
    }

    /// - Parameter poolMode: "transaction" or "session".
    public init(poolMode: String) throws {
        guard let found = Self.executable else {
            throw SpawnError(description: "pgbouncer is not installed (apt-get install pgbouncer; scripts/deps.sh)")
        }
        executable = found
        // Where the tests' server listens, as the server itself says (socket or TCP).
        let admin = try Connection.connect(TestDatabase.adminConfiguration)
        let row = try admin.query(
            """
            SELECT coalesce(host(inet_server_addr()),
                            trim(split_part(current_setting('unix_socket_directories'), ',', 1))),
                   current_setting('port'), current_user
            """)[0]
        let upstreamHost = try row.decode(String.self, 0)
        let upstreamPort = try row.decode(String.self, 1)
        user = try row.decode(String.self, 2)

        directory = URL(fileURLWithPath: "/tmp").appendingPathComponent("pgbouncer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // PgBouncer refuses to run as root; as root it switches to the server's user, which must
        // read its files.
        chmod(directory.path, 0o755)
        port = try freeLoopbackPort()
        let ini = """
            [databases]
            * = host=\(upstreamHost) port=\(upstreamPort)

            [pgbouncer]
            listen_addr = 127.0.0.1
            listen_port = \(port)
            unix_socket_dir =
            auth_type = trust
            auth_file = \(directory.path)/userlist.txt
            pool_mode = \(poolMode)
            """
        try Data(ini.utf8).write(to: directory.appendingPathComponent("pgbouncer.ini"))
        try Data("\"\(user)\" \"\"\n".utf8).write(to: directory.appendingPathComponent("userlist.txt"))
        for file in ["pgbouncer.ini", "userlist.txt"] { chmod(directory.appendingPathComponent(file).path, 0o644) }

        if getuid() == 0 { arguments += ["-u", user == "root" ? "postgres" : user] }
        arguments.append(directory.appendingPathComponent("pgbouncer.ini").path)
        try start()
    }

    /// Starts the process (again, after `stop`) on the same port and waits until it accepts
    /// connections.
    public func start() throws {
        let log = open(logURL.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        defer { close(log) }
        pid = try spawnProcess(executable, arguments, environment: [:], stdout: log, stderr: log)
        stopped = false
        let probe = ConnectionConfiguration(conninfo: url(database: "postgres"))
        let ready = eventually(timeout: 10, interval: 0.05) {
            !processExists(pid) || (try? Connection.connect(probe)) != nil
        }
        guard ready, processExists(pid) else {
            stop()
            throw SpawnError(description: "pgbouncer did not start: \(self.log.suffix(1000))")
        }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    var logURL: URL { directory.appendingPathComponent("pgbouncer.log") }
    public var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    /// A URL for a database behind this PgBouncer.
    public func url(database: String) -> String { "postgresql://\(user)@127.0.0.1:\(port)/\(database)" }

    /// Stops the process: SIGTERM by default; SIGKILL for a crash (every connection cut at once).
    public func stop(signal: Int32 = SIGTERM) {
        guard !stopped else { return }
        stopped = true
        kill(pid, signal)
        if waitForChild(pid, timeout: 5) == nil {
            kill(pid, SIGKILL)
            _ = waitForChild(pid, timeout: 5)
        }
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice).
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SpawnError(description: "socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
            bind(fd, p, length) == 0 && getsockname(fd, p, &length) == 0
        }
    }
    guard bound else { throw SpawnError(description: "bind: \(String(cString: strerror(errno)))") }
    return Int(UInt16(bigEndian: address.sin_port))
}
