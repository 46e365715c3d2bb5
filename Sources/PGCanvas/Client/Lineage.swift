import Foundation
import Postgres

/// Everything a job set in motion: the canvases it spawned (and they spawned), followed through
/// `parent_id`. `voteradmin enqueue NAME --wait` waits for all of it.
///
/// ```swift
/// let spawn = JobRequest("canvas.spawn", [chain([signature("canvas.add", 1, 2), signature("canvas.add", 10)]).json])
/// let id = try Enqueue.job(spawn, on: db)
/// let lineage = try Lineage.wait(for: id, on: db, timeout: 60)   // the job, then the chain it spawned
/// // lineage.succeeded == true, lineage.finalResult == 13 (the spawned chain's result)
/// ```
public struct Lineage: Sendable {
    public var job: JobStatus
    /// The canvases the job (or anything it started) enqueued, oldest first.
    public var spawned: [CanvasStatus]
    /// Jobs started by the job, directly or not, that have not finished.
    public var unfinished: Int

    public var isFinished: Bool {
        job.state.isFinished && unfinished == 0 && spawned.allSatisfy { $0.state != .pending }
    }

    public var succeeded: Bool { job.state == .succeeded && spawned.allSatisfy { $0.state == .succeeded } }

    /// The result of the last canvas spawned, or the job's own when it spawned none.
    public var finalResult: JSONValue? { spawned.last.map { $0.result } ?? job.result }

    public static func fetch(_ id: Int64, on c: Connection) throws -> Lineage? {
        guard let job = try JobStatus.fetch(id, on: c) else { return nil }
        let rows = try c.query(
            """
            WITH RECURSIVE d(id) AS (
                SELECT \(id)::bigint
                UNION SELECT j.id FROM canvas.jobs j JOIN d ON j.parent_id = d.id
            )
            SELECT (SELECT coalesce(array_agg(c.id ORDER BY c.id), '{}') FROM canvas.chords c
                    WHERE c.kind = 'root' AND c.parent_id IN (SELECT id FROM d)),
                   (SELECT count(*) FROM canvas.jobs j WHERE j.id IN (SELECT id FROM d)
                    AND j.id <> \(id) AND j.state IN ('scheduled', 'queued', 'running'))
            """)
        let roots: [Int64] = try rows[0].decode([Int64].self, 0)
        return Lineage(
            job: job, spawned: try roots.compactMap { try CanvasStatus.fetch($0, on: c) },
            unfinished: try rows[0].decode(Int.self, 1))
    }

    /// This lineage with its spawned canvases read again, when one of them is still pending;
    /// nil when none is (or one has gone), so that only a full `fetch` can say it has finished.
    func stillPending(on c: Connection) throws -> Lineage? {
        guard !spawned.isEmpty else { return nil }
        var again = self
        again.spawned = try spawned.compactMap { try CanvasStatus.fetch($0.id, on: c) }
        guard again.spawned.count == spawned.count, again.spawned.contains(where: { $0.state == .pending }) else {
            return nil
        }
        return again
    }

    /// Blocks until the job and everything it started have finished. Refused inside a task.
    public static func wait(
        for id: Int64, on c: Connection, timeout: Double = .infinity, onPoll: ((Lineage) -> Void)? = nil
    ) throws -> Lineage {
        var last: Lineage?
        return try pollUntilDone(timeout: timeout, onPoll: onPoll) {
            // While a canvas the job spawned is pending, the lineage cannot have finished, and
            // reading those canvases again is enough: walking every descendant on every poll cost
            // the server 3.5 CPU-s while a million voters' 2,530-member chord ran. The full walk
            // runs again once they have all ended, and decides.
            if let known = last, known.job.state.isFinished, let pending = try known.stillPending(on: c) {
                last = pending
                return pending
            }
            guard let lineage = try fetch(id, on: c) else { throw CanvasError("no job with id \(id)") }
            last = lineage
            return lineage
        } isDone: {
            $0.isFinished
        }
    }
}
