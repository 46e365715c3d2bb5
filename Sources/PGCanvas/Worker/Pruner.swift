import Foundation
import Postgres

/// Deletes what no one needs any more — finished jobs, finished chords, old schedule firings —
/// through `canvas.prune` (functions/retention.sql), one short batch per call.
///
/// A fleet finishes tens of thousands of jobs a second, so pruning runs in a loop of batches
/// rather than once a minute; each call stays well under 200 ms, so the maintenance thread that
/// runs the loop between two heartbeats never leaves a heartbeat late by more than its budget.
/// One pruner works at a time across the fleet (a transaction advisory lock); the others skip.
///
/// ```swift
/// var pruner = Pruner(age: 7 * 86_400, budget: 0.5)   // what finished over a week ago
/// while true {
///     if let report = try pruner.runIfDue(on: db) { print("pruned \(report.deleted) rows") }
///     Thread.sleep(forTimeInterval: 1)
/// }
/// ```
public struct Pruner: Sendable {
    /// Rows finished longer ago than this many seconds may be deleted.
    public var age: Double
    /// Finished jobs one call examines outside chords, chord members it deletes (reading at most
    /// this many of each chord's), and chords or firings it deletes, at most. About 20 ms of work
    /// on an idle server; kept small so one call never holds the maintenance thread long.
    public var batchSize: Int
    /// Seconds of batches one `runIfDue` may spend before it lets the thread heartbeat again.
    public var budget: Double
    /// Seconds to wait after a run that caught up (or found another pruner at work).
    public var idleInterval: Double

    /// Where the pass over finished jobs goes on: `finished_at` as the server printed it (a
    /// `Date` would round the microseconds and could stall on a row) and the id.
    private var cursor: (at: String, id: Int64)?
    private var nextRun = Date.distantPast

    public init(age: Double, batchSize: Int = 5000, budget: Double = 1, idleInterval: Double = 15) {
        self.age = age
        self.batchSize = batchSize
        self.budget = budget
        self.idleInterval = idleInterval
    }

    /// How many rows one call or one run deleted, and whether it had to stop before the end.
    public struct Report: Sendable, Equatable {
        public var jobs = 0
        public var chords = 0
        public var firings = 0
        /// Calls made.
        public var batches = 0
        /// Another pruner held the lock, so nothing was done.
        public var skipped = false
        /// A batch came back full: there is more to delete right now.
        public var more = false

        public init() {}

        public var deleted: Int { jobs + chords + firings }
    }

    /// One call to `canvas.prune`: a batch of finished jobs outside chords from the cursor on;
    /// once that pass is done, a batch of chord members, by chord; once that comes back short
    /// too, a batch of chords and one of schedule firings.
    public mutating func batch(on c: Connection) throws -> Report {
        let rows = try c.query(
            """
            SELECT jobs, chords, firings, next_at::text, next_id
            FROM canvas.prune(\(age) * interval '1 second', \(Int32(clamping: batchSize)),
                              \(cursor?.at as String?)::timestamptz, \(cursor?.id as Int64?))
            """)
        var report = Report()
        report.batches = 1
        guard let row = rows.first else {
            report.skipped = true
            return report
        }
        report.jobs = try row.decode(Int.self, 0)
        report.chords = try row.decode(Int.self, 1)
        report.firings = try row.decode(Int.self, 2)
        if let at = try row.decodeIfPresent(String.self, 3), let id = try row.decodeIfPresent(Int64.self, 4) {
            cursor = (at, id)
        } else {
            cursor = nil
        }
        // A full pass over chord members (after the pass over other jobs came back short) brings
        // the count of jobs to the batch size, with no cursor: there may be more of those too.
        report.more =
            cursor != nil || report.jobs >= batchSize || report.chords >= batchSize || report.firings >= batchSize
        return report
    }

    /// Batches until nothing is left, another pruner is found at work, or `budget` seconds pass.
    public mutating func run(on c: Connection) throws -> Report {
        let start = Date()
        var total = Report()
        repeat {
            let one = try batch(on: c)
            total.jobs += one.jobs
            total.chords += one.chords
            total.firings += one.firings
            total.batches += 1
            total.skipped = one.skipped
            total.more = one.more
        } while total.more && Date().timeIntervalSince(start) < budget
        return total
    }

    /// Runs when due: at once again after a run that ran out of budget with more to delete, so
    /// pruning keeps up with the finish rate; `idleInterval` later after one that caught up.
    /// - Returns: nil when not due yet.
    public mutating func runIfDue(on c: Connection, now: Date = Date()) throws -> Report? {
        guard now >= nextRun else { return nil }
        // Set before the run: a run that throws is tried again an interval later, not at once.
        nextRun = now.addingTimeInterval(idleInterval)
        let report = try run(on: c)
        if report.more { nextRun = Date() }
        return report
    }
}
