import CoreMetrics
import Foundation
import Prometheus

/// The worker's own metrics, served by `pgworker --metrics-port`, named as celery-exporter names
/// them (docs/operations.md): outcomes by task, run time and queue wait by task, jobs received,
/// pool size.
///
/// Made only when the port is given: without it the supervisor and broker loop hold nil and pay
/// one nil check per batch. The outcome and receipt caches are filled by the broker lanes, under
/// a lock of their own (uncontended with one lane); run times come from the supervisor's event
/// loop or an in-process pool's runners, under another. The Prometheus metrics themselves are
/// atomics.
///
/// `@unchecked Sendable`: `runtimes` is touched only with `runtimesLock` held (the supervisor's
/// thread, or an in-process pool's runners), `counters` and `queueWaits` only with `cachesLock`
/// held (the broker lanes); everything else is immutable or thread-safe.
final class WorkerMetrics: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private var runtimes: [String: CoreMetrics.Recorder] = [:]
    private let runtimesLock = NSLock()
    private let cachesLock = NSLock()
    private var counters: [String: TaskCounters] = [:]
    private var queueWaits: [String: CoreMetrics.Recorder] = [:]
    let poolSize: CoreMetrics.Gauge
    let up: CoreMetrics.Gauge

    /// Seconds, from a millisecond to ten minutes: tasks run from microseconds to minutes.
    static let runtimeBuckets: [Double] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
    ]

    /// Seconds, from a millisecond to an hour: a job waits from nothing to a long backlog.
    static let queueWaitBuckets: [Double] = [
        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
    ]

    struct TaskCounters {
        var received: CoreMetrics.Counter
        var succeeded: CoreMetrics.Counter
        var failed: CoreMetrics.Counter
        var retried: CoreMetrics.Counter
    }

    init(hostname: String, concurrency: Int) {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.valueHistogramBuckets["celery_task_runtime"] = Self.runtimeBuckets
        factory.valueHistogramBuckets["celery_task_queue_wait"] = Self.queueWaitBuckets
        self.factory = factory
        poolSize = CoreMetrics.Gauge(
            label: "celery_worker_pool_size", dimensions: [("hostname", hostname)], factory: factory)
        up = CoreMetrics.Gauge(label: "celery_worker_up", dimensions: [("hostname", hostname)], factory: factory)
        poolSize.record(concurrency)
        up.record(1)
    }

    /// One run's time, as the pool that ran it measured it.
    func recordRuntime(task: String, seconds: Double) {
        let recorder = runtimesLock.withLock {
            if let known = runtimes[task] { return known }
            let recorder = CoreMetrics.Recorder(
                label: "celery_task_runtime", dimensions: [("name", task)], aggregate: true, factory: factory)
            runtimes[task] = recorder
            return recorder
        }
        recorder.record(seconds)
    }

    /// Broker lanes: jobs claimed, and how long each waited since it became due.
    func recordReceived(_ jobs: [ClaimedJob]) {
        for job in jobs {
            counters(for: job.task).received.increment()
            if let waited = job.queueWait { queueWait(for: job.task).record(waited) }
        }
    }

    private func queueWait(for task: String) -> CoreMetrics.Recorder {
        cachesLock.withLock {
            if let known = queueWaits[task] { return known }
            let made = CoreMetrics.Recorder(
                label: "celery_task_queue_wait", dimensions: [("name", task)], aggregate: true, factory: factory)
            queueWaits[task] = made
            return made
        }
    }

    /// Broker lanes: what `canvas.finish` made of a batch (a job requeued is a retry).
    func recordFinished(_ tally: FinishTally) {
        for (task, counts) in tally.byTask {
            let c = counters(for: task)
            if counts.succeeded > 0 { c.succeeded.increment(by: Int64(counts.succeeded)) }
            if counts.failed > 0 { c.failed.increment(by: Int64(counts.failed)) }
            if counts.retried > 0 { c.retried.increment(by: Int64(counts.retried)) }
        }
    }

    private func counters(for task: String) -> TaskCounters {
        cachesLock.withLock { cachedCounters(for: task) }
    }

    /// With `cachesLock` held.
    private func cachedCounters(for task: String) -> TaskCounters {
        if let known = counters[task] { return known }
        let dimensions = [("name", task)]
        let made = TaskCounters(
            received: CoreMetrics.Counter(
                label: "celery_task_received_total", dimensions: dimensions, factory: factory),
            succeeded: CoreMetrics.Counter(
                label: "celery_task_succeeded_total", dimensions: dimensions, factory: factory),
            failed: CoreMetrics.Counter(label: "celery_task_failed_total", dimensions: dimensions, factory: factory),
            retried: CoreMetrics.Counter(label: "celery_task_retried_total", dimensions: dimensions, factory: factory))
        counters[task] = made
        return made
    }
}
