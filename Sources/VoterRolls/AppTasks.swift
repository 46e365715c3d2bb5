import PGCanvas

/// Every task a pgworker of this application runs: the built-in `canvas.*` tasks plus the voter
/// roll tasks. `voteradmin enqueue` checks names against the same list.
public enum AppTasks {
    public static func registry() -> TaskRegistry {
        var registry = TaskRegistry()
        VoterRollTasks.register(into: &registry)
        return registry
    }

    /// Tasks whose work ends in a page count, for `voteradmin enqueue --wait`'s last line.
    public static let writeLists: Set<String> = [
        "all_in_one", "parallelize_tasks_by_center_with_join", "queue_tasks_by_center_with_chord",
        "assign_stations_and_generate_lists_with_starmap", "assign_stations_and_generate_lists_with_chord",
        "group_with_error_in_sub_task", "generate_lists_for_one_center", "generate_lists_for_one_station",
    ]
}
