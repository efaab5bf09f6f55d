#!/usr/bin/env python3
"""The multi-core cost on a 2-core machine: `cargo bench -p tower-singleflight-benches --bench wallclock --
contention` drives the layered routes and the bare route in process with 1
and with 2 threads (divan), and this script turns divan's medians into
scaling figures. Writes bench/results/contention.json.

A route's scaling is its throughput with 2 threads over its throughput with
1 (2 x median time per request at 1 thread / median at 2 threads); the
figure the target is about is that scaling over the bare route's in the same
run (1.0: the layer adds no contention). Unique-key routes are compared with
`bare_unique_keys`, one-key routes with `bare_hot_key`.

Run on a quiet machine: both cores are in use while it measures.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNITS = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}


def run_bench(samples, group="contention"):
    output = subprocess.run(
        ["cargo", "bench", "-p", "tower-singleflight-benches", "--bench", "wallclock", "--", group,
         "--sample-count", str(samples), "--sample-size", "20"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    medians, route = {}, None
    for line in output.splitlines():
        named = re.search(r"[├╰]─ (\w+)\s+│", line)
        if named and "t=" not in line:
            route = named.group(1)
            continue
        timed = re.search(r"t=(\d)\s+\S+ \S+\s+│\s+\S+ \S+\s+│\s+([\d.]+) (\S+)", line)
        if timed and route:
            threads, value, unit = timed.groups()
            medians.setdefault(route, {})[threads] = float(value) * UNITS[unit]
    if not medians:
        raise SystemExit(f"no contention figures in the bench's output:\n{output}")
    return medians


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="bench runs; the median of each figure is kept")
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    runs = [run_bench(args.samples) for _ in range(args.rounds)]
    routes = {}
    for route in runs[0]:
        one = statistics.median(run[route]["1"] for run in runs)
        two = statistics.median(run[route]["2"] for run in runs)
        scalings = [2 * run[route]["1"] / run[route]["2"] for run in runs]
        routes[route] = {"t1_us": round(one, 3), "t2_us": round(two, 3), "scalings": scalings}
    for route, figures in routes.items():
        bare = "bare_hot_key" if "hot" in route else "bare_unique_keys"
        relative = [mine / base for mine, base in zip(figures["scalings"], routes[bare]["scalings"])]
        figures["scaling"] = round(statistics.median(figures["scalings"]), 3)
        figures["vs_bare"] = round(statistics.median(relative), 3)
        figures["vs_bare_range"] = [round(min(relative), 3), round(max(relative), 3)]
        figures["baseline"] = bare
    for figures in routes.values():
        del figures["scalings"]
    # moka alone, for scale: what the cache's front keeps hot hits away from.
    moka = [run_bench(args.samples, "moka_alone") for _ in range(args.rounds)]
    alone = {
        name: {
            "t1_ns": round(1000 * statistics.median(run[name]["1"] for run in moka), 1),
            "t2_ns": round(1000 * statistics.median(run[name]["2"] for run in moka), 1),
            "scaling": round(statistics.median(2 * run[name]["1"] / run[name]["2"] for run in moka), 3),
        }
        for name in moka[0]
    }
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "samples": args.samples,
        "routes": routes,
        "moka_alone": alone,
    }
    out = ROOT / "bench" / "results" / "contention.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
