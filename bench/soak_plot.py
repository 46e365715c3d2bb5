#!/usr/bin/env python3
"""The soak's figures and curve, from the CSV bench/soak.sh writes.

    python3 bench/soak_plot.py --summary .build/soak.csv --jobs 10000000   # figures (stdlib only)
    /work/venv-soak/bin/python bench/soak_plot.py .build/soak.csv docs/images/soak-10m.png

Drawing needs matplotlib (PyPI): `python3 -m venv /work/venv-soak &&
/work/venv-soak/bin/pip install matplotlib` (Debian: `apt-get install python3-matplotlib`).
The summary needs nothing beyond Python 3.
"""

import argparse
import csv
import sys


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        out.append({k: float(v) for k, v in r.items()})
    return out


def time_at(rows, finished):
    """When the count of finished jobs reached `finished`, interpolated between two samples."""
    prev = None
    for r in rows:
        if r["finished"] >= finished:
            if prev is None or r["finished"] == prev["finished"]:
                return r["t"]
            share = (finished - prev["finished"]) / (r["finished"] - prev["finished"])
            return prev["t"] + share * (r["t"] - prev["t"])
        prev = r
    return None


def mib(b):
    return b / 1048576


def summary(rows, jobs, first_claim, worker, step):
    done = int(rows[-1]["finished"])
    jobs = min(jobs, done)
    marks = list(range(step, jobs + 1, step))
    start = first_claim if first_claim is not None else time_at(rows, 1)
    print(f"soak: {done:,} jobs finished by {worker} in {rows[-1]['t'] - start:.0f} s")
    per_million = []
    t_prev = start
    for m in marks:
        t = time_at(rows, m)
        per_million.append(step / (t - t_prev))
        t_prev = t
    if per_million:
        print(f"jobs/s per {step:,} jobs:", " / ".join(f"{r:,.0f}" for r in per_million))
        first, last = per_million[0], per_million[-1]
        print(
            f"first {step:,} {first:,.0f} jobs/s, last {step:,} {last:,.0f} jobs/s:"
            f" last/first {last / first:.3f} ({(last / first - 1) * 100:+.1f} %)"
        )
    print(f"overall: {jobs / (time_at(rows, jobs) - start):,.0f} jobs/s")

    # Sizes once the worker runs: the producer's first chunk comes before it.
    running = [r for r in rows if r["finished"] > 0]
    half = [r for r in running if r["finished"] >= jobs / 2]
    for label, key in [
        ("table (heap)", "table_bytes"),
        ("indexes", "indexes_bytes"),
        ("  jobs_queued_idx", "queued_idx_bytes"),
        ("  jobs_claim_idx", "claim_idx_bytes"),
        ("  jobs_finished_idx", "finished_idx_bytes"),
        ("  jobs_running_idx", "running_idx_bytes"),
        ("  jobs_pkey", "pkey_bytes"),
        ("finish_counts", "finish_counts_bytes"),
    ]:
        vals = [r[key] for r in running]
        later = [r[key] for r in half] or vals
        print(
            f"{label:22} min {mib(min(vals)):8.1f} MiB  max {mib(max(vals)):8.1f} MiB"
            f"  (second half: {mib(min(later)):7.1f}..{mib(max(later)):7.1f}, at the end {mib(vals[-1]):7.1f})"
        )
    if "claim_pages" in running[0]:
        pages = sorted(r["claim_pages"] for r in running)
        firsts = sorted(r["claim_pages"] for r in running[: len(running) // 10 or 1])
        lasts = sorted(r["claim_pages"] for r in running[-(len(running) // 10 or 1) :])
        print(
            f"pages one claim's scan reads: median {pages[len(pages) // 2]:.0f}, max {pages[-1]:.0f};"
            f" median of the first tenth of the samples {firsts[len(firsts) // 2]:.0f}, of the last {lasts[len(lasts) // 2]:.0f}"
        )
    print(
        f"dead tuples max {max(r['dead_tuples'] for r in running):,.0f};"
        f" live tuples max {max(r['live_tuples'] for r in running):,.0f};"
        f" autovacuums {running[-1]['autovacuums']:.0f}, autoanalyzes {running[-1]['autoanalyzes']:.0f};"
        f" queued {min(r['queued'] for r in running):,.0f}..{max(r['queued'] for r in running):,.0f}"
    )


def plot(rows, png, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    running = [r for r in rows if r["finished"] > 0 or r["jobs_per_s"] > 0]
    t0 = running[0]["t"]
    t = [r["t"] - t0 for r in running]
    rate = [r["jobs_per_s"] for r in running]
    # A ten-second window: one sample is a second or so of a worker that finishes in batches.
    smooth = []
    for i in range(len(running)):
        j = i
        while j > 0 and t[i] - t[j - 1] <= 10:
            j -= 1
        if i > j:
            smooth.append((running[i]["finished"] - running[j]["finished"]) / (t[i] - t[j]))
        else:
            smooth.append(rate[i])

    has_claim = "claim_pages" in running[0]
    if has_claim:
        fig, (top, middle, bottom) = plt.subplots(
            3, 1, sharex=True, figsize=(10, 8.5), dpi=110, gridspec_kw={"height_ratios": [3, 1.4, 3]}
        )
        middle.plot(t, [r["claim_pages"] for r in running], color="#238b45", linewidth=0.7)
        middle.set_ylabel("pages a claim\nscan reads", fontsize=8)
        middle.set_ylim(0, None)
        middle.grid(alpha=0.3)
    else:
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5), dpi=110)
    top.plot(t, rate, color="#9ecae1", linewidth=0.6, label="jobs/s, each sample (~1 s)")
    top.plot(t, smooth, color="#08519c", linewidth=1.6, label="jobs/s, 10 s window")
    top.set_ylabel("jobs/s")
    top.set_ylim(0, max(rate) * 1.1)
    top.grid(alpha=0.3)
    top.legend(loc="lower left", fontsize=8)
    millions = top.secondary_xaxis("top")
    millions.set_xlabel("jobs finished (millions)", fontsize=8)
    ticks = []
    total = int(running[-1]["finished"])
    every = next((e for e in (100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000) if total / e <= 11), 10_000_000)
    for m in range(0, total + 1, every):
        at = time_at(running, m) if m else running[0]["t"]
        if at is not None:
            ticks.append((at - t0, m))
    millions.set_xticks([a for a, _ in ticks])
    millions.set_xticklabels([f"{m / 1e6:g}" for _, m in ticks], fontsize=7)

    bottom.plot(t, [mib(r["table_bytes"]) for r in running], color="#d94801", label="canvas.jobs heap")
    bottom.plot(t, [mib(r["indexes_bytes"]) for r in running], color="#54278f", label="its indexes, together")
    bottom.plot(t, [mib(r["queued_idx_bytes"]) for r in running], color="#807dba", linewidth=0.8,
                linestyle="--", label="jobs_queued_idx (the claim's)")
    bottom.plot(t, [mib(r["pkey_bytes"]) for r in running], color="#9e9ac8", linewidth=0.8,
                linestyle=":", label="jobs_pkey")
    bottom.set_ylabel("MiB")
    bottom.set_xlabel("seconds since the first claim")
    bottom.set_ylim(0, None)
    bottom.grid(alpha=0.3)
    dead = bottom.twinx()
    dead.plot(t, [r["dead_tuples"] / 1e6 for r in running], color="#969696", linewidth=0.7, label="dead tuples (right)")
    dead.set_ylabel("dead tuples (millions)", color="#636363")
    dead.set_ylim(0, None)
    lines = bottom.get_legend_handles_labels()
    more = dead.get_legend_handles_labels()
    bottom.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png)
    print(f"wrote {png}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv")
    p.add_argument("png", nargs="?")
    p.add_argument("--summary", action="store_true", help="print the figures (no matplotlib needed)")
    p.add_argument("--jobs", type=int, help="N of the soak (default: what finished)")
    p.add_argument("--first-claim", type=float, help="seconds from the first sample to the first claim")
    p.add_argument("--step", type=int, help="jobs per slice compared (default: a million, or a tenth of a shorter soak)")
    p.add_argument("--worker", default="pgworker")
    p.add_argument("--title", default="", help="what follows the job count in the title")
    a = p.parse_args()
    rows = load(a.csv)
    if not rows:
        sys.exit("soak_plot: no samples in " + a.csv)
    if a.summary or not a.png:
        jobs = a.jobs or int(rows[-1]["finished"])
        summary(rows, jobs, a.first_claim, a.worker, a.step or (1_000_000 if jobs >= 10_000_000 else max(1, jobs // 10)))
    if a.png:
        plot(rows, a.png, f"{int(rows[-1]['finished']):,} no-op jobs, " + (a.title or a.worker))


if __name__ == "__main__":
    main()
