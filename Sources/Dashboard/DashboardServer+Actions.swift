import Foundation
import Hummingbird
import PGCanvas
import Postgres

/// Retry, cancel, purge and the schedules' buttons. Every one is a POST that must carry the CSRF
/// token, and none exists in read-only mode.
extension DashboardServer {
    func addActions(to router: Router<BasicRequestContext>) {
        router.post("/jobs/:id/retry") { request, context in
            try await act(request, context) { id, _, c in
                let outcome = try c.query("SELECT canvas.retry(\(id))")[0].decodeIfPresent(String.self, 0)
                // "requeued", or "requeued; its chord N stays failed: why" (the job runs on its own).
                guard let outcome, outcome.hasPrefix("requeued") else {
                    return .problem("Job #\(id): \(outcome ?? "no such job")")
                }
                try notifyDashboard(c)
                return .redirect("/jobs/\(id)?done=retried")
            }
        }
        router.post("/jobs/:id/cancel") { request, context in
            try await act(request, context) { id, _, c in
                let outcome = try c.query("SELECT canvas.cancel(\(id))")[0].decodeIfPresent(String.self, 0)
                guard outcome == "cancelled" else { return .problem("#\(id): \(outcome ?? "no such job or canvas")") }
                try notifyDashboard(c)
                let isJob: Bool = try c.query("SELECT EXISTS (SELECT 1 FROM canvas.jobs WHERE id = \(id))")[0].decode(
                    Bool.self, 0)
                return .redirect(isJob ? "/jobs/\(id)?done=cancelled" : "/canvas/\(id)")
            }
        }
        router.post("/purge") { request, context in
            try await act(request, context) { _, form, c in
                let queue = form["queue"] ?? ""
                guard !queue.isEmpty else { return .problem("Purge needs a queue.") }
                guard form["confirm"] == "yes" else {
                    let n: Int = try c.query(
                        "SELECT count(*) FROM canvas.jobs WHERE state IN ('scheduled', 'queued') AND queue = \(queue)")[
                            0
                        ]
                        .decode(Int.self, 0)
                    return .page(
                        "Purge queue \(queue)",
                        """
                        <p>This removes <strong id="purge-count">\(n)</strong> scheduled and queued job(s) of queue \
                        <strong>\(queue)</strong>. A removed member of a canvas fails it, with its error callbacks.</p>
                        \(layout.action("/purge", label: "Purge", fields: [("queue", queue), ("confirm", "yes")], danger: true))
                        <a href="/">Keep them</a>
                        """)
                }
                let n: Int = try c.query("SELECT canvas.purge(\(queue))")[0].decode(Int.self, 0)
                try notifyDashboard(c)
                return .page(
                    "Purged",
                    "<p class=\"notice\" id=\"notice\">Removed \(n) job(s) from queue \(queue).</p><a href=\"/\">Overview</a>"
                )
            }
        }
        router.post("/schedules/action") { request, context in
            try await act(request, context) { _, form, c in
                guard let name = form["name"],
                    let schedule = try ScheduleStore.list(on: c).first(where: { $0.name == name })
                else { return .problem("No such schedule.") }
                switch form["do"] {
                case "pause":
                    try ScheduleStore.setEnabled(name: name, false, on: c)
                    return .redirect("/schedules?done=paused")
                case "resume":
                    try ScheduleStore.setEnabled(name: name, true, on: c)
                    return .redirect("/schedules?done=resumed")
                case "run now":
                    let handle = try Canvas.enqueue(json: schedule.canvas, on: c)
                    return .redirect("/canvas/\(handle.id)")
                default:
                    return .problem("Unknown action.")
                }
            }
        }
    }

    enum ActionResult: Sendable {
        case redirect(String)
        case problem(String)
        case page(String, HTML)
    }

    /// Checks read-only mode and the CSRF token, then runs `body` on a pool connection.
    func act(
        _ request: Request, _ context: BasicRequestContext,
        _ body: @escaping @Sendable (Int64, [String: String], Connection) throws -> ActionResult
    ) async throws -> Response {
        guard !configuration.readOnly else {
            return text("read-only: actions are disabled\n", status: .forbidden)
        }
        var request = request
        let buffer = try await request.collectBody(upTo: 64 * 1024)
        let form = Self.parseForm(String(buffer: buffer))
        guard let token = form["csrf"], constantTimeEqual(Array(token.utf8), Array(csrfToken.utf8)) else {
            return text("refused: missing or wrong CSRF token\n", status: .forbidden)
        }
        let id = context.parameters.get("id", as: Int64.self) ?? 0
        do {
            switch try await pool.withConnection({ c in try body(id, form, c) }) {
            case .redirect(let location): return redirect(location)
            case .problem(let message):
                return html(
                    layout.page(
                        title: "Not done", active: "", body: "<p class=\"problem\" id=\"problem\">\(message)</p>"),
                    status: .conflict)
            case .page(let title, let body): return html(layout.page(title: title, active: "", body: body))
            }
        } catch {
            return html(
                layout.page(title: "Failed", active: "", body: "<p class=\"problem\">\(String(describing: error))</p>"),
                status: .internalServerError)
        }
    }

    /// `application/x-www-form-urlencoded`, the only body the dashboard's forms send.
    static func parseForm(_ body: String) -> [String: String] {
        var form: [String: String] = [:]
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String {
                String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? ""
            }
            form[decode(parts[0])] = parts.count > 1 ? decode(parts[1]) : ""
        }
        return form
    }
}

/// Tells the live-update hub that something changed, in the action's own transaction.
func notifyDashboard(_ c: Connection) throws {
    try c.execute("SELECT pg_notify('canvas_dashboard', 'action')")
}
