import Foundation
import Logging

/// Log lines as a Celery user reads them: `[2026-11-25 21:22:17,742: INFO/MainProcess] message`,
/// followed by metadata as `key=value`.
public struct CeleryStyleLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let processName: String
    private let stream: FileHandle
    private static let lock = NSLock()

    public init(processName: String, level: Logger.Level, stream: FileHandle = .standardError) {
        self.processName = processName
        self.logLevel = level
        self.stream = stream
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let tail =
            merged.isEmpty
            ? ""
            : " "
                + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                .joined(separator: " ")
        let line = "[\(Self.timestamp()): \(Self.levelName(event.level))/\(processName)] \(event.message)\(tail)\n"
        Self.lock.lock()
        stream.write(Data(line.utf8))
        Self.lock.unlock()
    }

    static func levelName(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: return "DEBUG"
        case .info, .notice: return "INFO"
        case .warning: return "WARNING"
        case .error: return "ERROR"
        case .critical: return "CRITICAL"
        }
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var t = now.tv_sec
        var parts = tm()
        localtime_r(&t, &parts)
        return String(
            format: "%04d-%02d-%02d %02d:%02d:%02d,%03d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
            parts.tm_hour, parts.tm_min, parts.tm_sec, now.tv_nsec / 1_000_000)
    }
}

extension Logger.Level {
    /// Parses `--loglevel` values the way Celery spells them (DEBUG, INFO, WARNING, ERROR).
    public init?(celeryName: String) {
        switch celeryName.lowercased() {
        case "trace": self = .trace
        case "debug": self = .debug
        case "info": self = .info
        case "notice": self = .notice
        case "warning", "warn": self = .warning
        case "error": self = .error
        case "critical", "fatal": self = .critical
        default: return nil
        }
    }
}
