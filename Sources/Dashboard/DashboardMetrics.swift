import CoreMetrics
import Foundation
import Postgres
import Prometheus

/// The dashboard's `/metrics`: gauges read from the database at scrape time, named as
/// celery-exporter names them (docs/operations.md has the table), so its Grafana dashboards work.
///
/// Counters of finished runs come from the workers themselves (`pgworker --metrics-port`): the
/// database forgets finished jobs (retention), so counting rows here would go backwards.
///
/// `@unchecked Sendable`: `seen` is used only with `lock` held; the registry is thread-safe.
final class DashboardMetrics: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private let lock = NSLock()
    /// Series set at the last scrape, so that a queue or state that went away reads 0, not its last value.
    private var seen: [String: CoreMetrics.Gauge] = [:]

    init() {
        factory = PrometheusMetricsFactory(registry: registry)
    }

    /// Reads the gauges on `c` and returns the whole registry in the Prometheus text format.
    func scrape(on c: Connection) throws -> [UInt8] {
        var values: [(name: String, labels: [(String, String)], value: Double)] = []
        for row in try c.query(
            """
            SELECT queue, state, count(*)::float8 FROM canvas.jobs WHERE state = 'queued' GROUP BY 1, 2
            UNION ALL SELECT queue, state, count(*)::float8 FROM canvas.jobs WHERE state = 'scheduled' GROUP BY 1, 2
            UNION ALL SELECT queue, state, count(*)::float8 FROM canvas.jobs WHERE state = 'running' GROUP BY 1, 2
            """)
        {
            let queue: String = try row.decode(String.self, 0)
            let state: String = try row.decode(String.self, 1)
            let n: Double = try row.decode(Double.self, 2)
            // celery_queue_length is what Celery's broker holds: jobs ready to run. The other live
            // states have a series of their own.
            if state == "queued" { values.append(("celery_queue_length", [("queue_name", queue)], n)) }
            if state == "running" { values.append(("celery_active_count", [("queue_name", queue)], n)) }
            values.append(("pgcanvas_queue_jobs", [("queue_name", queue), ("state", state)], n))
        }
        for row in try c.query(
            """
            SELECT queue, extract(epoch FROM now() - min(run_at))::float8 FROM canvas.jobs
            WHERE state = 'queued' GROUP BY 1
            """)
        {
            values.append(
                (
                    "celery_queue_oldest_age_seconds", [("queue_name", try row.decode(String.self, 0))],
                    max(0, try row.decode(Double.self, 1))
                ))
        }
        let workers = try c.query(
            """
            SELECT count(*) FILTER (WHERE heartbeat_at > now() - make_interval(secs => 3 * heartbeat_interval))::float8,
                   count(*)::float8
            FROM canvas.workers
            """)[0]
        values.append(("celery_workers", [], try workers.decode(Double.self, 0)))
        values.append(("celery_workers_registered", [], try workers.decode(Double.self, 1)))
        for row in try c.query(
            "SELECT kind, count(*)::float8 FROM canvas.chords WHERE state = 'pending' GROUP BY 1")
        {
            values.append(
                ("celery_chords_pending", [("kind", try row.decode(String.self, 0))], try row.decode(Double.self, 1)))
        }
        let up: Double = 1
        values.append(("pgcanvas_dashboard_database_up", [], up))

        lock.lock()
        defer { lock.unlock() }
        var current: [String: CoreMetrics.Gauge] = [:]
        for v in values {
            let key = v.name + "|" + v.labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
            let gauge = seen[key] ?? CoreMetrics.Gauge(label: v.name, dimensions: v.labels, factory: factory)
            gauge.record(v.value)
            current[key] = gauge
        }
        for (key, gauge) in seen where current[key] == nil {
            // Gone since the last scrape (a queue emptied): it reads 0 rather than its old value.
            gauge.record(0)
            if !key.hasPrefix("celery_queue_oldest_age_seconds|") { current[key] = gauge }
        }
        seen = current
        return registry.emitToBuffer()
    }
}
