import Foundation
import PGCanvas
import Postgres
import RollPDF

/// The six ways from the Celery Canvas talk to split the voter-roll job into tasks, and their
/// building blocks, by the names `voteradmin enqueue` takes.
enum VoterRollTasks {
    static func register(into registry: inout TaskRegistry) {
        registry.onPoolProcessStart { StationListRenderer.warmUp() }
        registry.register("debug_task") { context, args in
            context.logger.warning(
                "Request: {id: \(context.jobID), task: \(context.task), attempt: \(context.attempt), args: \(JSONValue.array(args).jsonText)}"
            )
            return .null
        }

        // Option 1: one task does everything, centre by centre.
        registry.register("all_in_one") { context, _ in
            let c = try context.connection()
            let writer = RollWriter(outputDirectory: RollWriter.defaultDirectory, logger: context.logger)
            var total = 0
            for center in try StationAssignment.centers(on: c) { total += try writer.writeCenter(center, on: c) }
            context.logger.warning("Total pages written: \(total)")
            return .int(total)
        }

        // Option 2: one task per centre, then waiting for them inside a task, which is refused.
        registry.register("parallelize_tasks_by_center_with_join") { context, _ in
            let centers = try StationAssignment.centers(on: context.connection())
            // Enqueued at once, as Celery's .delay() does, so they run although this task fails.
            let handle = try context.enqueueNow(
                group(centers.map { signature("generate_lists_for_one_center", .int($0.id)) }))
            let status = try handle.wait(on: context.connection())
            return status.result ?? .null
        }

        // Option 3: a chord of one task per centre, body sum_pages.
        registry.register("queue_tasks_by_center_with_chord") { context, _ in
            let centers = try StationAssignment.centers(on: context.connection())
            context.spawn(
                chord(
                    centers.map { signature("generate_lists_for_one_center", .int($0.id)) },
                    body: signature("sum_pages")))
            return .int(centers.count)
        }

        // Option 4: clear every assignment, then assign each centre in parallel.
        registry.register("assign_all_stations_in_parallel") { context, _ in
            let c = try context.connection()
            try StationAssignment.deleteAll(on: c)
            let centers = try StationAssignment.centers(on: c)
            context.spawn(group(centers.map { signature("assign_stations_for_one_center", .int($0.id)) }))
            return .int(centers.count)
        }

        // Option 5A: assign in SQL, then one starmap over every (centre, station), then sum_pages.
        registry.register("assign_stations_and_generate_lists_with_starmap") { context, _ in
            let c = try context.connection()
            try StationAssignment.refreshAll(on: c)
            let pairs = try StationAssignment.stations(on: c)
            context.spawn(
                chain([
                    starmap("generate_lists_for_one_station", pairs.map { [.int($0.center), .int($0.station)] }),
                    signature("sum_pages"),
                ]))
            return .int(pairs.count)
        }

        // Option 5B: assign in SQL, then a chord of one task per (centre, station), body sum_pages.
        registry.register("assign_stations_and_generate_lists_with_chord") { context, _ in
            let c = try context.connection()
            try StationAssignment.refreshAll(on: c)
            let pairs = try StationAssignment.stations(on: c)
            context.spawn(chord(stationTasks(pairs), body: signature("sum_pages")))
            return .int(pairs.count)
        }

        // The station chord with one member that fails: on_chord_error runs once, sum_pages never.
        registry.register("group_with_error_in_sub_task") { context, _ in
            let c = try context.connection()
            try StationAssignment.refreshAll(on: c)
            let pairs = try StationAssignment.stations(on: c)
            context.spawn(
                Canvas.chord(
                    stationTasks(pairs) + [signature("raising_task")], body: signature("sum_pages"),
                    onError: Signature("on_chord_error")))
            return .int(pairs.count)
        }

        registry.register("generate_lists_for_one_center") { context, args in
            let c = try context.connection()
            let center = try centerArgument(args, task: "generate_lists_for_one_center", on: c)
            return .int(
                try RollWriter(outputDirectory: RollWriter.defaultDirectory, logger: context.logger)
                    .writeCenter(center, on: c))
        }

        registry.register("generate_lists_for_one_station") { context, args in
            guard args.count == 2, let station = args[1].intValue else {
                throw TaskError.badArguments("generate_lists_for_one_station", "a centre id and a station id")
            }
            let c = try context.connection()
            let center = try centerArgument([args[0]], task: "generate_lists_for_one_station", on: c)
            return .int(
                try RollWriter(outputDirectory: RollWriter.defaultDirectory, logger: context.logger)
                    .writeStation(center: center, station: station, on: c))
        }

        registry.register("assign_stations_for_one_center") { context, args in
            let c = try context.connection()
            let center = try centerArgument(args, task: "assign_stations_for_one_center", on: c)
            context.logger.warning("Assigning stations for \(center.id) (\(center.name))")
            try StationAssignment.refresh(center: center.id, on: c)
            return .null
        }

        registry.register("sum_pages") { context, args in
            guard args.count >= 1, let pages = args[0].arrayValue else {
                throw TaskError.badArguments("sum_pages", "the list of page counts")
            }
            // A starmap's result is itself a list: flatten one level.
            let total = pages.flatMap { $0.arrayValue ?? [$0] }.compactMap(\.intValue).reduce(0, +)
            context.logger.warning("sum_pages: Total pages written: \(total)")
            return .int(total)
        }

        registry.register("raising_task") { _, _ in
            throw TaskError("raising_task: this sub-task fails on purpose", retryable: false)
        }

        registry.register("on_chord_error") { context, args in
            let failure = args.first
            context.logger.error(
                "on_chord_error: job \(failure?["id"]?.jsonText ?? "?") (\(failure?["task"]?.stringValue ?? "?")) failed: \(failure?["error"]?.stringValue ?? "?")"
            )
            return .null
        }
    }

    static func stationTasks(_ pairs: [(center: Int, station: Int)]) -> [Canvas] {
        pairs.map { signature("generate_lists_for_one_station", .int($0.center), .int($0.station)) }
    }

    static func centerArgument(_ args: [JSONValue], task: String, on c: Connection) throws -> StationAssignment.Center {
        guard args.count == 1, let id = args[0].intValue else { throw TaskError.badArguments(task, "a centre id") }
        guard let center = try StationAssignment.center(id, on: c) else {
            throw TaskError("no polling centre \(id)", retryable: false)
        }
        return center
    }
}
