import Foundation

/// The pages' bodies, from what the store read. Every value goes through `HTML` interpolation.
extension Layout {
    func overviewFragment(_ o: Overview) -> HTML {
        let queued = o.queues.reduce(0) { $0 + ($1.counts["queued"] ?? 0) }
        let running = o.queues.reduce(0) { $0 + ($1.counts["running"] ?? 0) }
        let oldest = o.queues.compactMap(\.headAge).max()
        let lastHour = o.tasks.reduce((0, 0, 0)) { ($0.0 + $1.succeeded, $0.1 + $1.failed, $0.2 + $1.retried) }
        let cards: HTML = """
            <div class="cards">
            <div class="card"><div class="n" id="total-queued">\(Layout.count(queued))</div><div class="l">queued</div></div>
            <div class="card"><div class="n">\(running)</div><div class="l">running</div></div>
            <div class="card"><div class="n">\(Layout.age(oldest))</div><div class="l">longest wait at a queue's head</div></div>
            <div class="card"><div class="n" id="succeeded-hour">\(lastHour.0)</div><div class="l">succeeded, last hour</div></div>
            <div class="card"><div class="n" id="failed-hour">\(lastHour.1)</div><div class="l">failed, last hour</div></div>
            <div class="card"><div class="n">\(lastHour.2)</div><div class="l">retried, last hour</div></div>
            <div class="card"><div class="n">\(o.workers.count)</div><div class="l">live workers</div></div>
            <div class="card"><div class="n">\(Layout.count(o.pendingChords))</div><div class="l">chords pending</div></div>
            </div>
            """
        let queueRows = o.queues.map { q -> HTML in
            let cells = Store.liveStates.map { s -> HTML in
                let n = q.counts[s] ?? 0
                return n == 0
                    ? "<td class=\"num\">0</td>"
                    : "<td class=\"num\"><a href=\"/jobs?state=\(s)&amp;queue=\(HTML.urlComponent(q.queue))\">\(Layout.count(n))</a></td>"
            }
            let purge =
                (q.counts["queued"] ?? 0) + (q.counts["scheduled"] ?? 0) > 0
                ? action("/purge", label: "Purge…", fields: [("queue", q.queue)], danger: true) : .empty
            return """
                <tr data-queue="\(q.queue)"><td><a href="/jobs?queue=\(HTML.urlComponent(q.queue))">\(q.queue)</a></td>\(cells)\
                <td class="num">\(Layout.age(q.headAge))</td><td>\(purge)</td></tr>
                """
        }
        let taskRows = o.tasks.map { t -> HTML in
            let failed: HTML =
                t.failed == 0
                ? "0" : "<a href=\"/jobs?state=failed&amp;task=\(HTML.urlComponent(t.task))\">\(t.failed)</a>"
            return """
                <tr data-task="\(t.task)"><td><a href="/jobs?task=\(HTML.urlComponent(t.task))">\(t.task)</a></td>\
                <td class="num">\(t.succeeded)</td><td class="num">\(failed)</td><td class="num">\(t.retried)</td></tr>
                """
        }
        // No ages that tick by themselves here: the live update is sent only when this changes.
        let workers = o.workers.map { w -> HTML in
            let status = w.heartbeatAge > 3 * w.heartbeatInterval ? "late" : "alive"
            return """
                <tr><td>\(w.hostname)</td><td class="num">\(w.pid)</td><td class="num">\(w.running)/\(w.concurrency)</td>\
                <td>\(w.queues.joined(separator: ", "))</td><td>\(status)</td></tr>
                """
        }
        let failures = o.failures.map { f -> HTML in
            """
            <tr class="failure"><td>\(Layout.jobLink(f.id))</td><td>\(f.task)</td><td>\(f.queue)</td>\
            <td class="error">\(f.error)</td><td>\(Layout.time(f.finishedAt))</td></tr>
            """
        }
        return """
            \(cards)
            <h2>Succeeded and failed per minute, last hour</h2>
            \(chart(o.minutes))
            <h2>Queues</h2>
            <table id="queues"><tr><th>queue</th><th class="num">scheduled</th><th class="num">queued</th>\
            <th class="num">running</th><th class="num">head waiting</th><th></th></tr>\(queueRows)</table>
            \(o.queues.isEmpty ? "<p>No job is waiting or running.</p>" : HTML.empty)
            <h2>Tasks, last hour</h2>
            <table id="tasks"><tr><th>task</th><th class="num">succeeded</th><th class="num">failed</th>\
            <th class="num">retried</th></tr>\(taskRows)</table>
            <h2>Live workers</h2>
            <table id="workers"><tr><th>host</th><th class="num">pid</th><th class="num">running</th><th>queues</th>\
            <th>heartbeat</th></tr>\(workers)</table>
            <h2>Latest failures</h2>
            <table id="failures"><tr><th>job</th><th>task</th><th>queue</th><th>error</th><th>finished</th></tr>\(failures)</table>
            """
    }

    /// Bars per minute: succeeded up from the middle line, failed down from it.
    func chart(_ minutes: [Overview.Minute]) -> HTML {
        let width = 900.0, half = 70.0, barWidth = width / Double(max(1, minutes.count))
        let top = max(1, minutes.map { max($0.succeeded, $0.failed) }.max() ?? 1)
        var bars: [HTML] = []
        for (i, m) in minutes.enumerated() where m.succeeded + m.failed > 0 {
            let x = Double(i) * barWidth + 1
            let ok = half * Double(m.succeeded) / Double(top)
            let fail = half * Double(m.failed) / Double(top)
            let label = Layout.time(Date(timeIntervalSince1970: Double(m.start)))
            bars.append(
                """
                <g><title>\(label): \(m.succeeded) succeeded, \(m.failed) failed</title>\
                <rect class="ok" x="\(Int(x))" y="\(Int(half - ok))" width="\(Int(max(1, barWidth - 2)))" height="\(Int(ok.rounded(.up)))"/>\
                <rect class="fail" x="\(Int(x))" y="\(Int(half))" width="\(Int(max(1, barWidth - 2)))" height="\(Int(fail.rounded(.up)))"/></g>
                """)
        }
        return """
            <svg class="chart" width="\(Int(width))" height="\(Int(2 * half + 16))" viewBox="0 0 \(Int(width)) \(Int(2 * half + 16))">
            <line x1="0" y1="\(Int(half))" x2="\(Int(width))" y2="\(Int(half))" stroke="#cbd2d9"/>\(bars)
            <text x="0" y="\(Int(2 * half + 12))">60 min ago</text><text x="\(Int(width - 30))" y="\(Int(2 * half + 12))">now</text>
            <text x="4" y="10">\(top)/min</text></svg>
            <div class="legend"><span>▮ succeeded (up)</span><span>▮ failed (down)</span></div>
            """
    }

    func workersFragment(_ workers: [Overview.WorkerRow], now: Date) -> HTML {
        let rows = workers.map { w -> HTML in
            let late = w.heartbeatAge > 3 * w.heartbeatInterval
            return """
                <tr><td class="num">\(w.id)</td><td>\(w.hostname)</td><td class="num">\(w.pid)</td><td class="num">\(w.concurrency)</td>\
                <td class="num"><a href="/jobs?state=running">\(w.running)</a></td>\
                <td class="num\(raw: late ? " error" : "")">\(Layout.age(w.heartbeatAge))</td><td>\(Layout.time(w.startedAt))</td>\
                <td>\(w.queues.joined(separator: ", "))</td></tr>
                """
        }
        return """
            <table id="workers"><tr><th class="num">id</th><th>host</th><th class="num">pid</th><th class="num">concurrency</th>\
            <th class="num">running jobs</th><th class="num">heartbeat age</th><th>started</th><th>queues</th></tr>\(rows)</table>
            <p class="meta">\(workers.count) live worker(s) as of \(Layout.time(now))</p>
            """
    }

    func jobsPage(_ page: JobPage, filter: JobFilter, searchID: String?) -> HTML {
        let stateOptions = ([""] + Store.allStates).map { s -> HTML in
            "<option value=\"\(s)\"\(raw: filter.state == s || (s.isEmpty && filter.state == nil) ? " selected" : "")>\(s.isEmpty ? "any" : s)</option>"
        }
        let rows = page.rows.map { j -> HTML in
            """
            <tr data-job-id="\(j.id)" data-state="\(j.state)"><td>\(Layout.jobLink(j.id))</td><td>\(j.task)</td><td>\(j.queue)</td>\
            <td>\(Layout.badge(j.state))</td><td class="num">\(j.attempt)/\(j.maxAttempts)</td><td>\(Layout.time(j.createdAt))</td>\
            <td>\(Layout.time(j.finishedAt))</td><td class="error">\(j.error ?? "")</td></tr>
            """
        }
        var more: HTML = .empty
        if let next = page.nextBefore {
            var q = "before=\(next)"
            if let s = filter.state { q += "&state=\(HTML.urlComponent(s))" }
            if let s = filter.queue { q += "&queue=\(HTML.urlComponent(s))" }
            if let s = filter.task { q += "&task=\(HTML.urlComponent(s))" }
            let note: HTML = page.scannedTo.map { "Looked at ids down to \($0). " } ?? .empty
            more = "<p>\(note)<a id=\"next-page\" href=\"/jobs?\(q)\">Older jobs →</a></p>"
        }
        return """
            <form method="get" action="/jobs" class="filters">
            <label>state<select name="state">\(stateOptions)</select></label>
            <label>queue<input name="queue" value="\(filter.queue ?? "")" size="12"></label>
            <label>task<input name="task" value="\(filter.task ?? "")" size="24"></label>
            <button type="submit">Filter</button>
            <label>job or canvas id<input name="id" value="\(searchID ?? "")" size="10" inputmode="numeric"></label>
            <button type="submit" name="go" value="id">Go</button>
            </form>
            <table id="jobs"><tr><th>id</th><th>task</th><th>queue</th><th>state</th><th class="num">attempt</th><th>created</th>\
            <th>finished</th><th>error</th></tr>\(rows)</table>
            \(page.rows.isEmpty ? "<p>No jobs match.</p>" : HTML.empty)
            \(more)
            """
    }

    func jobFragment(_ j: JobDetail, canvasRoot: Int64?, now: Date) -> HTML {
        var actions: [HTML] = []
        if j.state == "failed" || j.state == "cancelled" {
            actions.append(action("/jobs/\(j.id)/retry", label: "Retry"))
        }
        if ["scheduled", "queued", "running"].contains(j.state) {
            actions.append(
                action("/jobs/\(j.id)/cancel", label: "Cancel", danger: true, confirm: "Cancel job #\(j.id)?"))
        }
        let runtime: String =
            if let s = j.startedAt, let f = j.finishedAt { Layout.age(f.timeIntervalSince(s)) } else { "—" }
        let children = j.children.map { c -> HTML in
            "<tr><td>\(Layout.jobLink(c.id))</td><td>\(c.task)</td><td>\(Layout.badge(c.state))</td><td class=\"error\">\(c.error ?? "")</td></tr>"
        }
        let spawned = j.spawned.map { id -> HTML in "<a href=\"/canvas/\(id)\">canvas #\(id)</a> " }
        return """
            <p>\(Layout.badge(j.state)) \(actions)</p>
            <dl class="kv" id="job-detail" data-state="\(j.state)">
            <dt>task</dt><dd class="task">\(j.task)</dd>
            <dt>queue</dt><dd>\(j.queue)</dd>
            <dt>state</dt><dd id="job-state">\(j.state)</dd>
            <dt>attempts</dt><dd>\(j.attempt) of \(j.maxAttempts)\(j.crashes > 0 ? " (\(j.crashes) crashes)" : "")</dd>
            <dt>priority</dt><dd>\(j.priority)</dd>
            <dt>time limit</dt><dd>\(j.timeLimit.map { "\($0) s" } ?? "—")</dd>
            <dt>created</dt><dd>\(Layout.time(j.createdAt))</dd>
            <dt>run at</dt><dd>\(Layout.time(j.runAt))</dd>
            <dt>started</dt><dd>\(Layout.time(j.startedAt))</dd>
            <dt>finished</dt><dd>\(Layout.time(j.finishedAt)) (ran \(runtime))</dd>
            <dt>worker</dt><dd>\(j.workerName ?? j.workerID.map { "#\($0) (gone)" } ?? "—")</dd>
            <dt>parent</dt><dd>\(j.parentID.map(Layout.jobLink) ?? "—")</dd>
            <dt>canvas</dt><dd>\(canvasRoot.map { id -> HTML in "<a id=\"canvas-link\" href=\"/canvas/\(id)\">canvas #\(id)</a>" } ?? "—")\(j.chordID.map { " · slot \(j.position ?? 0) of #\($0)" } ?? "")</dd>
            <dt>spawned</dt><dd>\(spawned.isEmpty ? "—" : HTML.empty)\(spawned)</dd>
            </dl>
            <h2>Arguments</h2><pre id="job-args">\(j.argsText)</pre>
            <h2>Result</h2><pre id="job-result">\(j.resultText ?? "—")</pre>
            <h2>Error</h2><pre id="job-error" class="error">\(j.error ?? "—")</pre>
            \(j.chainText.map { "<h2>Links still to run</h2><pre>\($0)</pre>" } ?? .empty)
            \(j.onErrorText.map { "<h2>Error callbacks</h2><pre>\($0)</pre>" } ?? .empty)
            <h2>Children (error callbacks run and jobs started by it)</h2>
            <table><tr><th>id</th><th>task</th><th>state</th><th>error</th></tr>\(children)</table>
            """
    }

    func canvasFragment(_ graph: CanvasGraph, picture: HTML?) -> HTML {
        let counts = Dictionary(grouping: graph.jobs, by: \.state).mapValues(\.count)
        let summary = counts.keys.sorted().map { s -> HTML in "\(Layout.badge(s)) \(counts[s]!) " }
        let cancel: HTML =
            graph.chords.first(where: { $0.id == graph.rootID })?.state == "pending"
            ? action(
                "/jobs/\(graph.rootID)/cancel", label: "Cancel canvas", danger: true,
                confirm: "Cancel canvas #\(graph.rootID)?")
            : .empty
        return """
            <p>\(summary) \(cancel)</p>
            <div class="picture">\(picture ?? "<p>This canvas is too large to draw.</p>")</div>
            <p class="legend">\(Store.allStates.map { s -> HTML in "\(Layout.badge(s)) " }) dashed: not created yet</p>
            """
    }

    func schedulesPage(_ schedules: [ScheduleRow], now: Date) -> HTML {
        let rows = schedules.map { s -> HTML in
            var actions: [HTML] = []
            actions.append(
                action("/schedules/action", label: s.enabled ? "Pause" : "Resume", fields: [("name", s.name)]))
            actions.append(action("/schedules/action", label: "Run now", fields: [("name", s.name)]))
            return """
                <tr data-schedule="\(s.name)"><td>\(s.name)</td><td>\(s.rule)</td><td>\(s.task)</td>\
                <td>\(s.enabled ? "active" : "paused")</td><td>\(s.enabled ? Layout.time(s.nextFireAt) : "—")</td>\
                <td>\(Layout.time(s.lastFireAt))</td><td class="error">\(s.lastError ?? "")</td><td>\(actions)</td></tr>
                """
        }
        return """
            <table id="schedules"><tr><th>name</th><th>rule</th><th>canvas</th><th>state</th><th>next fire</th><th>last fire</th>\
            <th>last error</th><th></th></tr>\(rows)</table>
            \(schedules.isEmpty ? "<p>No schedules (voteradmin schedule add …).</p>" : HTML.empty)
            """
    }
}

struct ScheduleRow: Sendable {
    var name: String
    var rule: String
    var task: String
    var enabled: Bool
    var nextFireAt: Date
    var lastFireAt: Date?
    var lastError: String?
}
