#!/usr/bin/env python3
"""Cost per request and memory as the cache grows: runs `examples/growth.rs`
for the crate's response cache and for moka `get_with` in a handler (each
in its own process, pinned to one core), and writes bench/results/growth.json
and bench/growth.md (appended to BENCHMARKS.md by bench/report.py).
"""

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(binary, variant, entries):
    output = subprocess.run(["taskset", "-c", "0", binary, variant, str(entries)],
                            capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def median_of(runs):
    """Each step's figures, the median over the runs (a run moves by about a
    tenth from the next on a shared machine)."""
    steps = []
    for at_step in zip(*runs):
        step = dict(at_step[0])
        for key in ("miss_ns", "hit_ns", "bare_ns", "bytes_per_entry"):
            if key in step:
                step[key] = statistics.median(each[key] for each in at_step)
        steps.append(step)
    return steps


def markdown(results):
    crate = {step["entries"]: step for step in results["crate"]}
    moka = {step["entries"]: step for step in results["moka"]}
    rows = []
    for entries in sorted(crate):
        c, m = crate[entries], moka.get(entries, {})
        rows.append(
            f"| {entries:,} | {c['miss_ns'] / 1000:.1f} | {c['hit_ns'] / 1000:.1f} | {c['bare_ns'] / 1000:.1f} "
            f"| {int(c['bytes_per_entry']):,} | {m.get('miss_ns', 0) / 1000:.1f} | {m.get('hit_ns', 0) / 1000:.1f} "
            f"| {int(m.get('bytes_per_entry', 0)):,} |")
    first, last = min(crate), max(crate)
    flat = lambda key: crate[last][key] / crate[first][key]
    return "\n".join([
        "## 10. As the cache grows",
        "",
        f"Measured by `bench/growth.py` on {results['date']} ({results['cpus']} cores): "
        "`examples/growth.rs` fills a cached `GET /item/{id}` with unique keys, in process, "
        "one Tokio worker pinned to one core, and at each tenfold step times 20,000 misses "
        "(new keys) and 20,000 hits spread over everything stored, then reads the process's "
        "RSS. `max_bytes` is 4 GiB so that nothing is evicted: what is measured is the size "
        "alone. The same for moka `get_with` inside the handler (a `String` per key), in its "
        "own process. Microseconds per request, the median of "
        f"{results.get('rounds', 1)} runs of each; RSS per entry is the growth since start over "
        "the entries stored.",
        "",
        "| entries | crate miss, us | crate hit, us | bare, us | crate RSS per entry, B | moka miss, us | moka hit, us | moka RSS per entry, B |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"From {first:,} to {last:,} entries the crate's miss costs {flat('miss_ns'):.2f}x and its hit "
        f"{flat('hit_ns'):.2f}x what they cost at first.",
        "",
    ])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the median of each figure is kept")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "tower-singleflight", "--example", "growth"], cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = str(target / "release" / "examples" / "growth")
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "crate": median_of([run(binary, "crate", args.entries) for _ in range(args.rounds)]),
        "moka": median_of([run(binary, "moka", args.entries) for _ in range(args.rounds)]),
    }
    (ROOT / "bench" / "results" / "growth.json").write_text(json.dumps(results, indent=2) + "\n")
    (ROOT / "bench" / "growth.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
