import ArgumentParser
import Foundation

/// Runs a command line so that every failure is one line on stderr and a non-zero exit:
/// usage mistakes exit 64 (with a pointer to --help, not the whole usage text), domain
/// failures exit 1. `--help` and `--version` print in full and exit 0.
public func runCommandLine<Command: ParsableCommand>(_ type: Command.Type, name: String) -> Never {
    runCommandLine(type, name: name, arguments: Array(CommandLine.arguments.dropFirst())) { command in
        var command = command
        try command.run()
    }
}

/// `runCommandLine` for a command whose `run` needs more than its arguments (a worker's task
/// registry): parses `arguments` as `Command`, then calls `run` with it.
public func runCommandLine<Command: ParsableCommand>(
    _ type: Command.Type, name: String, arguments: [String], run: (Command) throws -> Void
) -> Never {
    do {
        var parsed = try type.parseAsRoot(arguments)
        if let command = parsed as? Command {
            try run(command)
        } else {
            try parsed.run()  // --help, --version, help: ArgumentParser's own commands
        }
        exit(0)
    } catch {
        var code = type.exitCode(for: error)
        if let failure = error as? CommandFailure { code = ExitCode(failure.exitCode) }
        if code == .success {
            print(type.fullMessage(for: error))
            exit(0)
        }
        let message = oneLineMessage(type.message(for: error))
        if message.isEmpty { exit(code.rawValue) }  // ExitCode(n): the command already said why.
        var line = "\(name): error: \(message)"
        if code == .validationFailure && !message.contains("(see '") { line += " (see '\(name) --help')" }
        FileHandle.standardError.write(Data((line + "\n").utf8))
        exit(code.rawValue)
    }
}

func oneLineMessage(_ text: String) -> String {
    var message = text.split(separator: "\n").first.map(String.init) ?? text
    for prefix in ["Error: ", "error: "] where message.hasPrefix(prefix) {
        message.removeFirst(prefix.count)
    }
    return message.trimmingCharacters(in: .whitespaces)
}

/// A failure of the program's own domain: exit status 1, or 64 (`usage`) for input the command
/// refuses (a malformed canvas file, say) that argument parsing could not catch.
public struct CommandFailure: Error, CustomStringConvertible {
    public static let usage: Int32 = 64
    public var description: String
    public var exitCode: Int32
    public init(_ description: String, exitCode: Int32 = 1) {
        self.description = description
        self.exitCode = exitCode
    }
}
