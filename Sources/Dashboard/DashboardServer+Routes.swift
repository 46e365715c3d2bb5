import Foundation
import Hummingbird
import Migrations
import PGCanvas
import Postgres

extension DashboardServer {
    func addRoutes(to router: Router<BasicRequestContext>) {
        let layout = self.layout
        router.get("/static/app.css") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/css; charset=utf-8", .cacheControl: "max-age=300"],
                body: .init(byteBuffer: ByteBuffer(string: Assets.css)))
        }
        router.get("/static/live.js") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/javascript; charset=utf-8", .cacheControl: "max-age=300"],
                body: .init(byteBuffer: ByteBuffer(string: Assets.liveScript)))
        }

        router.get("/") { _, _ in
            await page(title: "Overview", active: "/", live: "overview") { c in
                layout.overviewFragment(try Store.overview(on: c))
            }
        }
        router.get("/workers") { _, _ in
            await page(title: "Workers", active: "/workers", live: "/fragments/workers") { c in
                layout.workersFragment(try Store.workers(on: c), now: Date())
            }
        }
        router.get("/fragments/workers") { _, _ in
            await fragment { c in layout.workersFragment(try Store.workers(on: c), now: Date()) }
        }
        router.get("/jobs") { request, _ in
            let q = request.uri.queryParameters
            let searched = q["id"].map(String.init)?.trimmingCharacters(in: .whitespaces)
            if let searched, !searched.isEmpty {
                if let id = Int64(searched.hasPrefix("#") ? String(searched.dropFirst()) : searched) {
                    let isJob =
                        (try? await pool.withConnection { c in
                            try c.query("SELECT EXISTS (SELECT 1 FROM canvas.jobs WHERE id = \(id))")[0].decode(
                                Bool.self, 0)
                        }) ?? true
                    return redirect(isJob ? "/jobs/\(id)" : "/canvas/\(id)")
                }
                return html(
                    layout.page(
                        title: "Jobs", active: "/jobs", body: "<p class=\"problem\">Not a job id: \(searched)</p>"),
                    status: .badRequest)
            }
            let filter = JobFilter(
                state: q["state"].map(String.init), queue: q["queue"].map(String.init),
                task: q["task"].map(String.init),
                before: q["before"].flatMap { Int64(String($0)) })
            return await page(title: "Jobs", active: "/jobs") { c in
                layout.jobsPage(try Store.jobs(filter, on: c), filter: filter, searchID: nil)
            }
        }
        router.get("/jobs/:id") { request, context in
            guard let id = context.parameters.get("id", as: Int64.self) else { throw HTTPError(.notFound) }
            let notice = Self.notices[request.uri.queryParameters["done"].map(String.init) ?? ""]
            return await page(title: "Job #\(id)", active: "/jobs", live: "/fragments/jobs/\(id)") { c in
                guard let job = try Store.job(id, on: c) else { return nil }
                let body = layout.jobFragment(job, canvasRoot: try Store.canvasRoot(of: id, on: c), now: Date())
                return notice.map { "<p class=\"notice\" id=\"notice\">\($0)</p>" + body } ?? body
            }
        }
        router.get("/fragments/jobs/:id") { _, context in
            guard let id = context.parameters.get("id", as: Int64.self) else { throw HTTPError(.notFound) }
            return await fragment { c in
                guard let job = try Store.job(id, on: c) else { return nil }
                return layout.jobFragment(job, canvasRoot: try Store.canvasRoot(of: id, on: c), now: Date())
            }
        }
        router.get("/canvas/:id") { _, context in
            guard let id = context.parameters.get("id", as: Int64.self) else { throw HTTPError(.notFound) }
            let root = try? await pool.withConnection { c in try Store.canvasRoot(of: id, on: c) }
            if let root = root ?? nil, root != id { return redirect("/canvas/\(root)") }
            return await page(title: "Canvas #\(id)", active: "/jobs", live: "/fragments/canvas/\(id)") { c in
                try Self.canvasBody(id, layout: layout, on: c)
            }
        }
        router.get("/fragments/canvas/:id") { _, context in
            guard let id = context.parameters.get("id", as: Int64.self) else { throw HTTPError(.notFound) }
            return await fragment { c in try Self.canvasBody(id, layout: layout, on: c) }
        }
        router.get("/schedules") { request, _ in
            let notice = Self.notices[request.uri.queryParameters["done"].map(String.init) ?? ""]
            return await page(title: "Schedules", active: "/schedules") { c in
                let body = layout.schedulesPage(try Self.schedules(on: c), now: Date())
                return notice.map { "<p class=\"notice\" id=\"notice\">\($0)</p>" + body } ?? body
            }
        }
        for extra in configuration.extraPages {
            router.get(RouterPath(extra.path)) { request, _ in
                var parameters: [String: String] = [:]
                for (k, v) in request.uri.queryParameters { parameters[String(k)] = String(v) }
                let query = parameters
                return await page(title: extra.title, active: extra.path) { c in try extra.render(c, query) }
            }
            if let file = extra.file {
                router.get(RouterPath(extra.path + "/files/:name")) { _, context in
                    guard let name = context.parameters.get("name"), let url = file(name),
                        let data = FileManager.default.contents(atPath: url.path)
                    else { throw HTTPError(.notFound) }
                    let type = url.pathExtension == "pdf" ? "application/pdf" : "application/octet-stream"
                    return Response(
                        status: .ok, headers: [.contentType: type], body: .init(byteBuffer: ByteBuffer(bytes: data)))
                }
            }
        }

        addActions(to: router)

        router.get("/events") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "text/event-stream", .cacheControl: "no-store", .connection: "keep-alive"],
                body: .init(asyncSequence: hub.subscribe()))
        }
        router.get("/metrics") { _, _ in
            do {
                let bytes = try await pool.withConnection { c in try metrics.scrape(on: c) }
                return Response(
                    status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                    body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
            } catch {
                return text("cannot read the database: \(error)\n", status: .serviceUnavailable)
            }
        }
        router.get("/healthz") { _, _ in text("ok\n") }
        router.get("/readyz") { _, _ in
            do {
                let problem: String? = try await pool.withConnection { c in
                    try SchemaCheck.requireCanvasSchema(on: c)
                    let status = try Migrator.bundled().status(c)
                    if !status.pending.isEmpty || !status.pendingFunctionFiles.isEmpty {
                        return
                            "migrations pending: \(status.pending.map { String($0.version) }.joined(separator: ", "))\(status.pendingFunctionFiles.isEmpty ? "" : " (functions)"); run 'voteradmin migrate'"
                    }
                    return nil
                }
                if let problem { return text("not ready: \(problem)\n", status: .serviceUnavailable) }
                return text("ready\n")
            } catch {
                return text("not ready: \(error)\n", status: .serviceUnavailable)
            }
        }
    }

    static let notices = [
        "retried": "Requeued: the job will run again.",
        "cancelled": "Cancelled.",
        "paused": "Schedule paused.",
        "resumed": "Schedule resumed.",
        "ran": "Enqueued the schedule's canvas now.",
    ]

    static func canvasBody(_ id: Int64, layout: Layout, on c: Connection) throws -> HTML? {
        if let graph = try Store.canvas(root: id, on: c) {
            return layout.canvasFragment(graph, picture: CanvasPicture(graph: graph).svg())
        }
        // A job in no canvas: its own picture is the job alone.
        guard let job = try Store.job(id, on: c) else { return nil }
        let graph = CanvasGraph(
            rootID: id,
            chords: [.init(id: id, kind: "root", state: job.state, size: 1, remaining: job.finishedAt == nil ? 1 : 0)],
            jobs: [
                .init(
                    id: id, task: job.task, state: job.state, chordID: id, position: 0, chainText: job.chainText,
                    onErrorText: job.onErrorText, error: job.error)
            ],
            omitted: [:], errbacks: [], errbackParents: [:])
        return layout.canvasFragment(graph, picture: CanvasPicture(graph: graph).svg())
    }

    static func schedules(on c: Connection) throws -> [ScheduleRow] {
        try ScheduleStore.list(on: c).map { s in
            ScheduleRow(
                name: s.name, rule: "\(s.rule)", task: CanvasPicture.label(s.canvas), enabled: s.enabled,
                nextFireAt: s.nextFireAt, lastFireAt: s.lastFireAt, lastError: s.lastError)
        }
    }
}
