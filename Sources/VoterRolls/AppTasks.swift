import Canvas

/// Every task a pgworker of this application runs: the built-in `canvas.*` tasks plus the voter
/// roll tasks. `voteradmin enqueue` checks names against the same list.
public enum AppTasks {
    public static func registry() -> TaskRegistry {
        let registry = TaskRegistry()
        return registry
    }
}
