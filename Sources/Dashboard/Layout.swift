import Foundation

/// The frame around every page: navigation, styles, the live-update script, and the helpers the
/// pages share (time formats, state badges, forms with the CSRF token).
struct Layout {
    let readOnly: Bool
    let csrfToken: String
    var extraPages: [(path: String, title: String)] = []

    func page(title: String, active: String, body: HTML, live: String? = nil) -> HTML {
        let links: [(String, String)] =
            [("/", "Overview"), ("/workers", "Workers"), ("/jobs", "Jobs"), ("/schedules", "Schedules")]
            + extraPages.map { ($0.path, $0.title) }
        let nav = links.map { (path, name) -> HTML in
            "<a href=\"\(path)\"\(raw: path == active ? " class=\"active\"" : "")>\(name)</a>"
        }
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(title) · pgcanvas</title>
            <link rel="stylesheet" href="/static/app.css">
            <script src="/static/live.js" defer></script>
            </head>
            <body\(raw: live.map { " data-live=\"\(HTML.escape($0))\"" } ?? "")>
            <header><span class="brand">pgcanvas</span><nav>\(nav)</nav>\
            <span class="live-dot" id="live-dot" title="live updates">●</span>\
            \(raw: readOnly ? "<span class=\"badge readonly\">read-only</span>" : "")</header>
            <main>
            <h1>\(title)</h1>
            \(body)
            </main>
            </body></html>
            """
    }

    /// A POST form with the CSRF token; nothing at all in read-only mode.
    func action(
        _ path: String, label: String, fields: [(String, String)] = [], danger: Bool = false, confirm: String? = nil
    )
        -> HTML
    {
        guard !readOnly else { return .empty }
        let hidden = fields.map { (name, value) -> HTML in "<input type=\"hidden\" name=\"\(name)\" value=\"\(value)\">"
        }
        return """
            <form method="post" action="\(path)" class="action"\(raw: confirm.map { " data-confirm=\"\(HTML.escape($0))\"" } ?? "")>\
            <input type="hidden" name="csrf" value="\(csrfToken)">\(hidden)\
            <button type="submit" class="\(danger ? "danger" : "")" name="do" value="\(label.lowercased())">\(label)</button></form>
            """
    }

    static func badge(_ state: String) -> HTML { "<span class=\"badge state-\(state)\">\(state)</span>" }

    static func jobLink(_ id: Int64) -> HTML { "<a href=\"/jobs/\(id)\">#\(id)</a>" }

    /// A count the overview capped: `10000+` past `Store.countCap`.
    static func count(_ n: Int) -> String { n > Store.countCap ? "\(Store.countCap)+" : String(n) }

    /// `2026-11-26 07:39:40Z`, in UTC, as the database stores it.
    static func time(_ date: Date?) -> String {
        guard let date else { return "—" }
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(
            format: "%04d-%02d-%02d %02d:%02d:%02dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
            parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    /// `4 s`, `3 min`, `2 h 5 min`, `3 d`.
    static func age(_ seconds: Double?) -> String {
        guard let seconds, seconds.isFinite else { return "—" }
        let s = max(0, seconds)
        if s < 1 { return String(format: "%.1f s", s) }
        if s < 120 { return "\(Int(s)) s" }
        if s < 7200 { return "\(Int(s / 60)) min" }
        if s < 172_800 { return "\(Int(s / 3600)) h \(Int(s.truncatingRemainder(dividingBy: 3600) / 60)) min" }
        return "\(Int(s / 86400)) d"
    }

    static func since(_ date: Date?, now: Date) -> String {
        guard let date else { return "—" }
        return age(now.timeIntervalSince(date)) + " ago"
    }
}

/// Static assets, written here so that nothing is fetched from anywhere at run time.
enum Assets {
    static let css = """
        :root { --ok:#2e9d57; --fail:#d64541; --run:#2f7fd1; --queue:#8a93a3; --sched:#c9a227; --cancel:#7d5ba6; }
        * { box-sizing: border-box; }
        body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:#1f2933; background:#f5f7fa; }
        header { display:flex; align-items:center; gap:18px; padding:10px 24px; background:#1f2933; color:#fff; }
        header .brand { font-weight:700; letter-spacing:.02em; }
        header nav a { color:#cbd2d9; text-decoration:none; margin-right:14px; }
        header nav a.active, header nav a:hover { color:#fff; border-bottom:2px solid #fff; }
        .live-dot { color:#8a93a3; font-size:12px; } .live-dot.on { color:#3ecf8e; }
        main { padding: 8px 24px 40px; }
        h1 { font-size:20px; margin:14px 0; } h2 { font-size:16px; margin:22px 0 8px; }
        table { border-collapse:collapse; background:#fff; width:100%; box-shadow:0 1px 2px rgba(0,0,0,.06); }
        th, td { text-align:left; padding:6px 10px; border-bottom:1px solid #e4e7eb; vertical-align:top; }
        th { background:#eef1f4; font-weight:600; font-size:12px; text-transform:uppercase; color:#52606d; }
        td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
        .badge { display:inline-block; padding:1px 7px; border-radius:9px; font-size:12px; color:#fff; background:#8a93a3; }
        .badge.readonly { background:#c9a227; color:#1f2933; }
        .state-succeeded { background:var(--ok); } .state-failed { background:var(--fail); } .state-running { background:var(--run); }
        .state-queued { background:var(--queue); } .state-scheduled { background:var(--sched); } .state-cancelled { background:var(--cancel); }
        .state-pending { background:#52606d; }
        pre { background:#fff; border:1px solid #e4e7eb; padding:8px; overflow:auto; max-height:320px; white-space:pre-wrap; word-break:break-all; }
        .error { color:#b42318; white-space:pre-wrap; word-break:break-word; }
        .cards { display:flex; gap:12px; flex-wrap:wrap; }
        .card { background:#fff; padding:8px 12px; min-width:120px; box-shadow:0 1px 2px rgba(0,0,0,.08); border-radius:6px; }
        .card .n { font-size:22px; font-weight:700; } .card .l { color:#52606d; font-size:12px; }
        form.action { display:inline; margin-right:6px; }
        button { cursor:pointer; border:1px solid #9aa5b1; background:#fff; border-radius:4px; padding:3px 10px; }
        button.danger { border-color:var(--fail); color:var(--fail); }
        .filters { display:flex; gap:8px; align-items:end; flex-wrap:wrap; margin-bottom:10px; }
        .filters label { display:flex; flex-direction:column; font-size:12px; color:#52606d; }
        .notice { background:#e3f8ec; border:1px solid var(--ok); padding:6px 10px; margin:8px 0; }
        .problem { background:#fde8e7; border:1px solid var(--fail); padding:6px 10px; margin:8px 0; }
        dl.kv { display:grid; grid-template-columns: 140px 1fr; gap:4px 12px; background:#fff; padding:10px; }
        dl.kv dt { color:#52606d; } dl.kv dd { margin:0; }
        .chart rect.ok { fill:var(--ok); } .chart rect.fail { fill:var(--fail); } .chart text { font-size:10px; fill:#52606d; }
        .picture { overflow:auto; background:#fff; padding:8px; border:1px solid #e4e7eb; }
        svg.canvas-picture text { font-size:12px; fill:#1f2933; } svg.canvas-picture text.meta { font-size:11px; fill:#fff; }
        svg.canvas-picture text.task { fill:#fff; font-weight:600; }
        svg.canvas-picture rect.state-succeeded { fill:var(--ok); } svg.canvas-picture rect.state-failed { fill:var(--fail); }
        svg.canvas-picture rect.state-running { fill:var(--run); } svg.canvas-picture rect.state-queued { fill:var(--queue); }
        svg.canvas-picture rect.state-scheduled { fill:var(--sched); } svg.canvas-picture rect.state-cancelled { fill:var(--cancel); }
        svg.canvas-picture rect.not-created { fill:#fff; stroke:#9aa5b1; stroke-dasharray:5 4; }
        svg.canvas-picture g.pending text, svg.canvas-picture g.more text { fill:#52606d; }
        svg.canvas-picture rect.box { fill:#f8fafc; stroke-width:2; } svg.canvas-picture rect.box-pending { stroke:#52606d; }
        svg.canvas-picture rect.box-succeeded { stroke:var(--ok); } svg.canvas-picture rect.box-failed { stroke:var(--fail); }
        svg.canvas-picture rect.box-cancelled { stroke:var(--cancel); }
        svg.canvas-picture text.chord-title { font-weight:700; }
        svg.canvas-picture rect.progress-bg { fill:#e4e7eb; } svg.canvas-picture rect.progress { fill:var(--ok); }
        svg.canvas-picture line.arrow { stroke:#6b7280; stroke-width:1.5; }
        svg.canvas-picture line.errback-line { stroke:var(--fail); stroke-dasharray:3 3; }
        svg.canvas-picture text.errback-note { fill:var(--fail); font-size:11px; }
        .legend span { margin-right:10px; }
        """

    /// Live updates: one EventSource per page. The overview's numbers arrive rendered in the
    /// event; other pages re-read their live part when told something changed.
    static let liveScript = """
        (function () {
          var live = document.body.getAttribute('data-live');
          var dot = document.getElementById('live-dot');
          document.addEventListener('submit', function (e) {
            var msg = e.target.getAttribute('data-confirm');
            if (msg && !window.confirm(msg)) { e.preventDefault(); }
          });
          if (!live || !window.EventSource) { return; }
          var source = new EventSource('/events');
          var pending = false;
          source.onopen = function () { if (dot) { dot.className = 'live-dot on'; } };
          source.onerror = function () { if (dot) { dot.className = 'live-dot'; } };
          // Replace the live part only when it differs, compared as the browser serialises
          // both, so that a button is not swapped out from under a click for nothing.
          function show(html) {
            var target = document.getElementById('live');
            if (!target || html === null) { return; }
            var parsed = document.createElement('template');
            parsed.innerHTML = html;
            if (parsed.innerHTML !== target.innerHTML) { target.innerHTML = html; }
          }
          source.addEventListener('overview', function (e) {
            if (live === 'overview') { show(e.data); }
          });
          source.addEventListener('change', function () {
            if (live === 'overview' || pending) { return; }
            pending = true;
            setTimeout(function () {
              pending = false;
              fetch(live, { credentials: 'same-origin' }).then(function (r) { return r.ok ? r.text() : null; })
                .then(show);
            }, 300);
          });
        })();
        """
}
