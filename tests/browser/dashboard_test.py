"""The dashboard end to end, in headless Chromium, against real pgworker and dashboard processes.

Run by scripts/browser-test.sh (from `make test`) with DATABASE_URL naming a fresh, migrated
database, BIN the folder of the built binaries and SCREENSHOTS where pictures go. Each check
raises with what it saw; the script exits non-zero on the first failure, after stopping every
process it started.
"""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

DB = os.environ["DATABASE_URL"]
BIN = os.environ.get("BIN", ".build/debug")
SHOTS = os.environ.get("SCREENSHOTS", ".build/browser-screenshots")
MARKUP = "<img src=x onerror=alert(1)>"
MISSING_CENTRE = 99999

started = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, env=None, log=None):
    out = open(log, "w") if log else subprocess.DEVNULL
    p = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    started.append(p)
    return p


def stop_all():
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in started:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def sql(statement):
    return subprocess.run(
        ["psql", DB, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", statement], check=True, capture_output=True, text=True
    ).stdout.strip()


def voteradmin(*args, stdin=None):
    r = subprocess.run([f"{BIN}/voteradmin", *args], input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"voteradmin {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def enqueue_canvas(canvas):
    return int(voteradmin("enqueue", "--canvas", "-", stdin=json.dumps(canvas)))


def wait_for(what, predicate, timeout=30.0, interval=0.25):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # the page may be between two renderings
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def http(url, data=None, headers=None):
    """(status, body) without raising for 4xx/5xx and without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def metrics(url):
    status, text = http(url)
    assert status == 200, f"{url}: {status}"
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample(samples, metric, **labels):
    return samples.get((metric, tuple(sorted(labels.items()))))


def job_state(job_id):
    return sql(f"SELECT state FROM canvas.jobs WHERE id = {int(job_id)}")


def steady(action, attempts=20):
    """Runs `action` again when a live update replaced the element it was using."""
    for i in range(attempts):
        try:
            return action()
        except StaleElementReferenceException:
            time.sleep(0.1)
    return action()


def shot(driver, name):
    os.makedirs(SHOTS, exist_ok=True)
    driver.save_screenshot(os.path.join(SHOTS, name))


def check(condition, message):
    if not condition:
        raise AssertionError(message)
    print(f"ok: {message}")


def main():
    os.makedirs(SHOTS, exist_ok=True)
    output_dir = tempfile.mkdtemp(prefix="pgcanvas-browser-")
    dash_port, worker_port, ro_port = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{dash_port}"

    # Work that fails, in a canvas and alone, before any worker runs.
    centre_job = int(
        voteradmin("enqueue", "generate_lists_for_one_center", "--args", f"[{MISSING_CENTRE}]", "--max-retries", "0")
    )
    markup_job = int(voteradmin("enqueue", "canvas.fail", "--args", json.dumps([MARKUP]), "--max-retries", "0"))
    good_chord = enqueue_canvas(
        {
            "chord": [
                {"task": "canvas.add", "args": [1, 2]},
                {"chain": [{"task": "canvas.add", "args": [3, 4]}, {"task": "canvas.add", "args": [5]}]},
                {"group": [{"task": "canvas.add", "args": [1, 1]}, {"task": "canvas.add", "args": [2, 2]}]},
            ],
            "body": {"task": "canvas.noop"},
        }
    )
    bad_chord = enqueue_canvas(
        {
            "chord": [
                {"task": "canvas.add", "args": [1, 2]},
                {"task": "canvas.fail", "args": ["member failed"], "options": {"max_retries": 0}},
                {"task": "canvas.add", "args": [3, 4]},
            ],
            "body": {"task": "canvas.sum"},
            "on_error": {"task": "canvas.noop"},
        }
    )
    for i in range(3):
        voteradmin("enqueue", "canvas.noop", "--queue", "parked")  # no worker takes this queue

    worker = start(
        [f"{BIN}/pgworker", "--concurrency", "2", "--loglevel", "warning", "--heartbeat-interval", "1",
         "--rescue-after", "10", "--output-dir", output_dir, "--metrics-port", str(worker_port)],
        log=os.path.join(SHOTS, "pgworker.log"),
    )
    dashboard = start(
        [f"{BIN}/voteradmin", "dashboard", "--bind", f"127.0.0.1:{dash_port}", "--output-dir", output_dir],
        log=os.path.join(SHOTS, "dashboard.log"),
    )
    wait_for("the dashboard", lambda: http(f"{base}/healthz")[0] == 200)
    wait_for("the worker's probes", lambda: http(f"http://127.0.0.1:{worker_port}/readyz")[0] == 200)
    wait_for("the failed jobs", lambda: job_state(centre_job) == "failed" and job_state(markup_job) == "failed")
    wait_for("both chords", lambda: sql(
        f"SELECT count(*) FROM canvas.chords WHERE id IN ({good_chord}, {bad_chord}) AND state <> 'pending'") == "2")

    worker_metrics_before = metrics(f"http://127.0.0.1:{worker_port}/metrics")

    options = Options()
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
        options.add_argument(a)
    driver = webdriver.Chrome(options=options, service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")))
    driver.implicitly_wait(2)
    try:
        # Overview: queues, failures, live workers; the markup in an error is text.
        driver.get(base + "/")
        wait_for("a live worker on the overview", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#workers tr")) >= 2)
        check(steady(lambda: MARKUP in driver.find_element(By.ID, "failures").text),
              "the error holding markup is shown as text in the latest failures")
        check(not driver.find_elements(By.CSS_SELECTOR, "#live img"), "no <img> element was made from the error")
        check(driver.find_elements(By.CSS_SELECTOR, 'tr[data-queue="parked"]'), "the overview lists queue 'parked'")
        try:
            driver.switch_to.alert
            raise AssertionError("a script from the database ran (an alert is open)")
        except NoAlertPresentException:
            print("ok: no alert: nothing from the database ran")
        # Throughput comes from the workers' heartbeats: the task table fills without a reload.
        wait_for("the last hour by task", lambda: steady(lambda: driver.find_element(
            By.CSS_SELECTOR, '#tasks tr[data-task="canvas.fail"] td:nth-child(3)').text) == "2", timeout=15)
        check(int(steady(lambda: driver.find_element(By.ID, "failed-hour").text)) == 3, "3 failed in the last hour")
        # 9 in the two chords and the error callback (whose heartbeat may still be on its way).
        wait_for("the successes to be counted",
                 lambda: int(steady(lambda: driver.find_element(By.ID, "succeeded-hour").text)) >= 9, timeout=10)
        wait_for("the live-update dot", lambda: "on" in driver.find_element(By.ID, "live-dot").get_attribute("class"))
        shot(driver, "overview.png")

        # The markup job's own page: error and arguments as text.
        driver.get(f"{base}/jobs/{markup_job}")
        check(driver.find_element(By.ID, "job-error").text == MARKUP, "the job page shows the error as text")
        check(not driver.find_elements(By.CSS_SELECTOR, "#job-error img, #job-args img"), "no element made from args")

        # Follow the failed job from the overview, press Retry once the centre exists, see it succeed.
        driver.get(base + "/")
        steady(lambda: driver.find_element(By.CSS_SELECTOR, f'#failures a[href="/jobs/{centre_job}"]').click())
        check(driver.find_element(By.ID, "job-state").text == "failed", "the followed job is failed")
        check(f"no polling centre {MISSING_CENTRE}" in driver.find_element(By.ID, "job-error").text, "its error shows")
        shot(driver, "job-failed.png")
        sql(f"INSERT INTO polling_center VALUES ({MISSING_CENTRE}, '<b>Centre</b> & co')")
        sql(
            "INSERT INTO voter SELECT 90000000 + g, 'Voter ' || g FROM generate_series(1, 45) g;"
            f"INSERT INTO voter_registration SELECT 90000000 + g, {MISSING_CENTRE} FROM generate_series(1, 45) g"
        )
        steady(lambda: driver.find_element(By.CSS_SELECTOR, 'form[action$="/retry"] button').click())
        check(driver.find_element(By.ID, "notice").text.startswith("Requeued"), "retry says the job was requeued")
        # No reload: the page follows the job through server-sent events.
        wait_for("the retried job to succeed on the page",
                 lambda: steady(lambda: driver.find_element(By.ID, "job-state").text) == "succeeded", timeout=30)
        check(job_state(centre_job) == "succeeded", "the retried job succeeded in the database")
        check(not driver.find_elements(By.CSS_SELECTOR, 'form[action$="/retry"]'), "no retry button once it succeeded")
        shot(driver, "job-retried.png")

        # The chords' pictures: each member's state.
        driver.get(f"{base}/jobs/{sql(f'SELECT min(id) FROM canvas.jobs WHERE task = $$canvas.fail$$ AND args->>0 = $$member failed$$')}")
        driver.find_element(By.ID, "canvas-link").click()
        check(driver.current_url.endswith(f"/canvas/{bad_chord}"), "the job's canvas link opens its root")
        members = steady(lambda: {m.get_attribute("data-job-id"): (m.get_attribute("data-task"), m.get_attribute("data-state"))
                                  for m in driver.find_elements(By.CSS_SELECTOR, "svg a.member")})
        expected = {str(r.split("|")[0]): (r.split("|")[1], r.split("|")[2]) for r in sql(
            f"SELECT id, task, state FROM canvas.jobs WHERE chord_id IN (SELECT unnest(canvas.chords_within({bad_chord})))"
        ).splitlines()}
        check(members == expected, f"the failed chord's picture shows each member's state: {sorted(members.values())}")
        check(sorted(s for _, s in members.values()) == ["failed", "succeeded", "succeeded"], "two succeeded, one failed")
        chord = driver.find_element(By.CSS_SELECTOR, 'svg g.chord[data-kind="chord"]')
        check(chord.get_attribute("data-state") == "failed", "the chord is drawn failed")
        check((chord.get_attribute("data-done"), chord.get_attribute("data-size")) == ("2", "3"), "progress 2 of 3")
        body = driver.find_element(By.CSS_SELECTOR, 'svg g.pending[data-role="body"]')
        check("canvas.sum" in body.get_attribute("textContent") and "won't run" in body.get_attribute("textContent"),
              "the body that will never run is drawn as such")
        check("canvas.noop" in driver.find_element(By.CSS_SELECTOR, "svg text.errback-note").text,
              "the chord's error callback is shown")
        shot(driver, "canvas-failed-chord.png")

        driver.get(f"{base}/canvas/{good_chord}")
        wait_for("the good canvas to end", lambda: sql(f"SELECT state FROM canvas.chords WHERE id = {good_chord}") == "succeeded")
        driver.refresh()
        members = steady(lambda: [(m.get_attribute("data-task"), m.get_attribute("data-state"))
                                  for m in driver.find_elements(By.CSS_SELECTOR, "svg a.member")])
        check(len(members) == 7 and {s for _, s in members} == {"succeeded"},
              f"every member of the good canvas succeeded, body included: {members}")
        check(steady(lambda: len(driver.find_elements(By.CSS_SELECTOR, "svg line.arrow"))) >= 2,
              "chain links are joined by arrows")
        check(driver.find_elements(By.CSS_SELECTOR, 'svg g.chord[data-kind="chord"][data-done="3"][data-size="3"]'),
              "the chord is drawn complete, 3 of 3")
        check(driver.find_elements(By.CSS_SELECTOR, 'svg g.chord[data-kind="root"][data-state="succeeded"]'),
              "the canvas is drawn succeeded")
        check(any("group" in t.text for t in driver.find_elements(By.CSS_SELECTOR, "svg text.chord-title")),
              "the group inside the chord is drawn as a group")
        shot(driver, "canvas-chord.png")

        # The jobs list: filters and keyset pages.
        driver.get(f"{base}/jobs?state=failed")
        rows = driver.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job-id]")
        check(rows and all(r.get_attribute("data-state") == "failed" for r in rows), "the failed filter shows failures")
        driver.get(f"{base}/jobs?task=canvas.add")
        ids = [int(r.get_attribute("data-job-id")) for r in driver.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job-id]")]
        check(ids == sorted(ids, reverse=True) and len(ids) >= 5, "jobs by task, newest first")

        # Voter rolls: the retried job's lists, linked to their PDFs.
        driver.get(f"{base}/rolls")
        links = driver.find_elements(By.CSS_SELECTOR, f'tr[data-center="{MISSING_CENTRE}"] a.pdf')
        check(links, "the centre's station lists are linked")
        status, pdf = http(links[0].get_attribute("href"))
        check(status == 200 and pdf.startswith("%PDF"), "a linked list is a PDF")
        check("<b>Centre</b> & co" in driver.find_element(By.ID, "stations").text, "the centre's name is text")
        check(http(f"{base}/rolls/files/..%2F..%2Fetc%2Fpasswd")[0] == 404, "no file outside the lists is served")
        shot(driver, "rolls.png")

        # Purge with confirmation.
        driver.get(base + "/")
        steady(lambda: driver.find_element(By.CSS_SELECTOR, 'tr[data-queue="parked"] form button').click())
        check(driver.find_element(By.ID, "purge-count").text == "3", "the purge asks first, naming 3 jobs")
        check(sql("SELECT count(*) FROM canvas.jobs WHERE queue = 'parked'") == "3", "nothing purged before confirming")
        driver.find_element(By.CSS_SELECTOR, "form.action button").click()
        check("Removed 3" in driver.find_element(By.ID, "notice").text, "confirmed, it purged 3")
        check(sql("SELECT count(*) FROM canvas.jobs WHERE queue = 'parked'") == "0", "the queue is empty")

        # Cancel a running job, through the confirmation the page asks for.
        sleeper = int(voteradmin("enqueue", "canvas.sleep", "--args", "[60]"))
        wait_for("the sleeper to run", lambda: job_state(sleeper) == "running")
        driver.get(f"{base}/jobs/{sleeper}")
        steady(lambda: driver.find_element(By.CSS_SELECTOR, 'form[action$="/cancel"] button').click())
        driver.switch_to.alert.accept()
        check(steady(lambda: driver.find_element(By.ID, "notice").text) == "Cancelled.", "cancel says so")
        check(job_state(sleeper) == "cancelled", "the running job is cancelled")
        wait_for("its pool process to be stopped", lambda: sql(
            "SELECT count(*) FROM canvas.jobs WHERE state = 'running'") == "0")

        # Schedules: pause, resume, run now.
        voteradmin("schedule", "add", "tick", "--task", "canvas.noop", "--every", "1h")
        driver.get(f"{base}/schedules")
        # A click only sends the form: each answer is waited for before the next click (CI once
        # read the job count before the "run now" POST had been served).
        def enabled():
            return sql("SELECT enabled FROM canvas.schedules WHERE name = 'tick'")
        driver.find_element(By.CSS_SELECTOR, 'tr[data-schedule="tick"] button[value="pause"]').click()
        check(wait_for("the pause", lambda: enabled() == "f", timeout=10), "pause pauses")
        steady(lambda: driver.find_element(By.CSS_SELECTOR, 'tr[data-schedule="tick"] button[value="resume"]').click())
        check(wait_for("the resume", lambda: enabled() == "t", timeout=10), "resume resumes")

        def noops():
            return int(sql("SELECT count(*) FROM canvas.jobs WHERE task = 'canvas.noop'"))
        before = noops()
        steady(lambda: driver.find_element(By.CSS_SELECTOR, 'tr[data-schedule="tick"] button[value="run now"]').click())
        check(wait_for("the firing", lambda: noops() > before, timeout=10), "run now enqueues")
        time.sleep(0.5)
        check(noops() == before + 1, "run now enqueues exactly one job")

        # CSRF: a POST without the token, or with a wrong one, is refused and changes nothing.
        failed_member = sql(f"SELECT id FROM canvas.jobs WHERE state = 'failed' AND task = 'canvas.fail' ORDER BY id LIMIT 1")
        status, text = http(f"{base}/jobs/{failed_member}/retry", data={})
        check(status == 403 and "CSRF" in text, f"POST without a CSRF token refused ({status})")
        status, _ = http(f"{base}/jobs/{failed_member}/retry", data={"csrf": "0" * 64})
        check(status == 403, "POST with a wrong CSRF token refused")
        check(job_state(failed_member) == "failed", "the refused retry changed nothing")

        # Read-only: no action shown, none accepted.
        start([f"{BIN}/voteradmin", "dashboard", "--bind", f"127.0.0.1:{ro_port}", "--read-only"])
        ro = f"http://127.0.0.1:{ro_port}"
        wait_for("the read-only dashboard", lambda: http(f"{ro}/healthz")[0] == 200)
        for path in ["/", f"/jobs/{failed_member}", f"/canvas/{bad_chord}", "/schedules"]:
            driver.get(ro + path)
            check(not driver.find_elements(By.CSS_SELECTOR, "form[method=post], button"), f"read-only {path}: no actions")
        shot(driver, "readonly-job.png")
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', http(f"{base}/jobs/{failed_member}")[1]).group(1)
        for path, data in [(f"/jobs/{failed_member}/retry", {}), (f"/jobs/{failed_member}/cancel", {}),
                           ("/purge", {"queue": "default", "confirm": "yes"}),
                           ("/schedules/action", {"name": "tick", "do": "pause"})]:
            status, _ = http(ro + path, data={**data, "csrf": token})
            check(status == 403, f"read-only refuses POST {path}")
        check(job_state(failed_member) == "failed", "read-only changed nothing")
    finally:
        driver.quit()

    # Metrics: the dashboard's gauges and the worker's counters, through a real Prometheus parser.
    enqueue_more = 5
    for i in range(enqueue_more):
        voteradmin("enqueue", "canvas.add", "--args", f"[{i}, 1]")
    voteradmin("enqueue", "canvas.fail", "--args", '["again"]', "--max-retries", "1", "--retry-backoff", "0.1")
    wait_for("the new jobs", lambda: sql(
        "SELECT count(*) FROM canvas.jobs WHERE state IN ('queued', 'scheduled', 'running')") == "0")
    after = wait_for("the worker's counters", lambda: (
        lambda m: m if sample(m, "celery_task_succeeded_total", name="canvas.add") is not None
        and sample(m, "celery_task_succeeded_total", name="canvas.add")
        >= (sample(worker_metrics_before, "celery_task_succeeded_total", name="canvas.add") or 0) + enqueue_more
        else None)(metrics(f"http://127.0.0.1:{worker_port}/metrics")))
    b = lambda metric, **l: sample(worker_metrics_before, metric, **l) or 0
    check(sample(after, "celery_task_succeeded_total", name="canvas.add") == b("celery_task_succeeded_total", name="canvas.add") + enqueue_more,
          f"celery_task_succeeded_total{{name=canvas.add}} moved by {enqueue_more}")
    check(sample(after, "celery_task_retried_total", name="canvas.fail") == b("celery_task_retried_total", name="canvas.fail") + 1,
          "celery_task_retried_total{name=canvas.fail} moved by 1")
    check(sample(after, "celery_task_failed_total", name="canvas.fail") == b("celery_task_failed_total", name="canvas.fail") + 1,
          "celery_task_failed_total{name=canvas.fail} moved by 1")
    check(sample(after, "celery_task_runtime_count", name="canvas.add") >= b("celery_task_runtime_count", name="canvas.add") + enqueue_more,
          "celery_task_runtime histogram counts the runs")
    check(sample(after, "celery_task_runtime_bucket", name="canvas.add", le="+Inf") is not None, "with buckets")
    check(sample(after, "celery_task_queue_wait_count", name="canvas.add") >= b("celery_task_queue_wait_count", name="canvas.add") + enqueue_more,
          "celery_task_queue_wait histogram counts the claims")
    check(sample(after, "celery_task_queue_wait_bucket", name="canvas.add", le="+Inf") is not None, "with buckets")
    check([v for k, v in after.items() if k[0] == "celery_worker_up"] == [1], "celery_worker_up is 1")
    check(not any("job" in label for key in after for label, _ in key[1]), "no job id as a label")

    voteradmin("enqueue", "canvas.noop", "--queue", "idle-queue")
    dash = metrics(f"{base}/metrics")
    check(sample(dash, "celery_queue_length", queue_name="idle-queue") == 1, "celery_queue_length{queue_name}")
    check(sample(dash, "pgcanvas_queue_jobs", queue_name="idle-queue", state="queued") == 1, "pgcanvas_queue_jobs")
    check(sample(dash, "celery_queue_oldest_age_seconds", queue_name="idle-queue") >= 0, "oldest queued age")
    check(sample(dash, "celery_workers") == 1, "celery_workers counts the live worker")
    check(sample(dash, "celery_chords_pending", kind="chord") is None, "no chord pending yet")
    waiting = enqueue_canvas({"chord": [{"task": "canvas.noop", "options": {"queue": "idle-queue"}}],
                              "body": {"task": "canvas.noop"}})
    dash = metrics(f"{base}/metrics")
    check(sample(dash, "celery_chords_pending", kind="chord") == 1, "celery_chords_pending{kind=chord} counts it")
    voteradmin("cancel", str(waiting))
    sql("DELETE FROM canvas.jobs WHERE queue = 'idle-queue'")
    dash = metrics(f"{base}/metrics")
    check(sample(dash, "celery_queue_length", queue_name="idle-queue") == 0, "an emptied queue reads 0, not its last value")

    # Probes.
    check(http(f"{base}/healthz")[0] == 200 and http(f"{base}/readyz")[0] == 200, "dashboard /healthz and /readyz")
    check(http(f"http://127.0.0.1:{worker_port}/healthz")[0] == 200, "worker /healthz")
    check(http(f"http://127.0.0.1:{worker_port}/readyz")[0] == 200, "worker /readyz")
    latest = sql("SELECT version || '|' || name || '|' || checksum FROM public.pgcanvas_migrations ORDER BY version DESC LIMIT 1")
    version, name, checksum = latest.split("|")
    sql(f"DELETE FROM public.pgcanvas_migrations WHERE version = {int(version)}")
    status, text = http(f"{base}/readyz")
    check(status == 503 and "pending" in text, f"dashboard /readyz is 503 with a migration pending ({text.strip()})")
    sql(f"INSERT INTO public.pgcanvas_migrations (version, name, checksum) VALUES ({int(version)}, '{name}', '{checksum}')")
    check(http(f"{base}/readyz")[0] == 200, "ready again once migrated")

    # A metrics port in use: one line, exit 1, before the worker registers.
    workers_before = sql("SELECT count(*) FROM canvas.workers")
    r = subprocess.run([f"{BIN}/pgworker", "-c", "1", "--metrics-port", str(worker_port)],
                       capture_output=True, text=True, timeout=20)
    check(r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "in use" in r.stderr,
          f"a metrics port in use is refused: {r.stderr.strip()}")
    check(sql("SELECT count(*) FROM canvas.workers") == workers_before, "and nothing was registered")

    # Off loopback: refused without credentials; with them, basic auth.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGCANVAS_DASHBOARD_")}
    r = subprocess.run([f"{BIN}/voteradmin", "dashboard", "--bind", f"0.0.0.0:{free_port()}"], env=env,
                       capture_output=True, text=True, timeout=20)
    lines = r.stderr.strip().splitlines()
    check(r.returncode == 64 and len(lines) == 1 and "PGCANVAS_DASHBOARD_USER" in lines[0],
          f"non-loopback bind without credentials refused: exit {r.returncode}: {r.stderr.strip()}")
    open_port = free_port()
    start([f"{BIN}/voteradmin", "dashboard", "--bind", f"0.0.0.0:{open_port}"],
          env={"PGCANVAS_DASHBOARD_USER": "ops", "PGCANVAS_DASHBOARD_PASSWORD": "s3cret"})
    wait_for("the authenticated dashboard", lambda: http(f"http://127.0.0.1:{open_port}/healthz")[0] == 200)
    check(http(f"http://127.0.0.1:{open_port}/")[0] == 401, "without credentials: 401")
    wrong = base64.b64encode(b"ops:wrong").decode()
    check(http(f"http://127.0.0.1:{open_port}/", headers={"Authorization": f"Basic {wrong}"})[0] == 401, "wrong: 401")
    good = base64.b64encode(b"ops:s3cret").decode()
    check(http(f"http://127.0.0.1:{open_port}/", headers={"Authorization": f"Basic {good}"})[0] == 200, "right: 200")
    check(http(f"http://127.0.0.1:{open_port}/metrics")[0] == 401, "/metrics needs credentials too")

    check(dashboard.poll() is None and worker.poll() is None, "the dashboard and the worker are still running")

    # A browser still listening does not hold up a shutdown: the event streams end first.
    listener = socket.create_connection(("127.0.0.1", dash_port))
    listener.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    check(b"text/event-stream" in listener.recv(4096), "an event stream is open")
    dashboard.send_signal(signal.SIGTERM)
    try:
        dashboard.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError("the dashboard did not stop within 10 s of SIGTERM with a stream open")
    check(dashboard.returncode == 0, "SIGTERM with a stream open: the dashboard stopped, exit 0")
    listener.close()
    print(f"browser test passed; screenshots in {SHOTS}")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        stop_all()
