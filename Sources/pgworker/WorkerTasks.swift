import Canvas

/// The tasks this worker binary knows besides the built-in `canvas.*` ones.
enum WorkerTasks {
    static func register(into registry: inout TaskRegistry) {}
}
