#!/usr/bin/env python3
"""The crates users would pick instead of tower-singleflight (issue 13), in
the same harness and the same run: writes bench/results/peers.json and
renders bench/peers.md.

Every variant of the `tower-singleflight-peers` package (peers/src/lib.rs)
serves `GET /item/{key}` with the same handler; this script measures each:

1. instructions per request (callgrind, through gungraun: peers/benches/
   instructions.rs) for unique keys, one hot key, and unique keys with a
   browser's ten headers, as ratios to the bare route;
2. requests/s under wrk (64 connections, 2 s runs, ABBA rounds alternating
   the bare route and the variant, each on its own server), unique keys and
   one hot key, as the median of the rounds' ratios to the bare route;
3. handler runs in a cold stampede of 1,000 identical requests, in process
   (`peers_server stampede`).

    python3 bench/peers.py              # everything (about 15 minutes)
    python3 bench/peers.py --quick      # one round of 1 s runs, to check it
    python3 bench/peers.py --cores 4    # server on cores 0-1 with 2 workers,
                                        # wrk with 2 threads on cores 2-3
    python3 bench/peers.py --reuse-instructions   # read the last summaries
    python3 bench/peers.py --render     # bench/peers.md again from the JSON

Needs valgrind, gungraun-runner 0.20.0 and wrk (installed with apt-get when
missing). Respects CARGO_TARGET_DIR.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
RESULTS = ROOT / "bench" / "results" / "peers.json"
MARKDOWN = ROOT / "bench" / "peers.md"
UNIQUE = ROOT / "bench" / "peers.lua"
SAME = ROOT / "bench" / "same.lua"
SERVER = TARGET / "release" / "peers_server"
PACKAGE = "tower-singleflight-peers"
FIRST_PORT = 3200
CONNECTIONS = 64
STAMPEDE = 1000

# Variant, its row in the table; the bare route is the baseline, not a row.
LABELS = {
    "bare": "bare route (no layer)",
    "identity_layer": "identity layer",
    "share": "share mode",
    "share_across_callers": "share mode across callers (`share_across_identities`)",
    "share_cache": "share mode + cache",
    "async_singleflight": "async_singleflight in the handler",
    "tower_resilience_coalesce": "tower-resilience-coalesce (router wrapped, body buffered)",
    "moka_get_with": "moka get_with in the handler",
    "axum_response_cache": "axum-response-cache (no coalescing)",
    "hitbox": "hitbox-tower + hitbox-moka",
}
VARIANTS = list(LABELS)
KINDS = ["unique", "hot", "browser"]


def run(command, **kwargs):
    print("+", " ".join(str(part) for part in command), file=sys.stderr, flush=True)
    return subprocess.run(command, check=True, cwd=ROOT, **kwargs)


# --- 1. instructions -----------------------------------------------------


def instructions(reuse):
    if not reuse:
        run(["cargo", "bench", "-j1", "-p", PACKAGE, "--bench", "instructions", "--",
             "--save-summary=json"])
    home = TARGET / "gungraun" / PACKAGE / "instructions"
    counts = {kind: {} for kind in KINDS}
    requests = None
    for path in sorted(home.glob("*/*/summary.json")):
        summary = json.loads(path.read_text())
        kind = summary["id"].rsplit("_", 1)[0]
        # The description is the setup's call: `(unique("bare"))`.
        variant = re.search(r'"(\w+)"', summary["description"]).group(1)
        metrics = summary["profiles"][0]["data"]["total"]["metrics"]
        counts[kind][variant] = int(metrics["Ir"]["values"]["new"])
    if any(set(counts[kind]) != set(VARIANTS) for kind in KINDS):
        sys.exit(f"missing gungraun summaries under {home}: {counts}")
    source = (ROOT / "peers" / "benches" / "instructions.rs").read_text()
    requests = int(re.search(r"const REQUESTS: u32 = ([\d_]+);", source).group(1).replace("_", ""))
    return {
        "requests_per_benchmark": requests,
        "instructions": counts,
        "per_request": {
            kind: {v: round(n / requests) for v, n in counts[kind].items()} for kind in KINDS
        },
        "ratios": {
            kind: {v: round(n / counts[kind]["bare"], 3) for v, n in counts[kind].items()}
            for kind in KINDS
        },
    }


# --- 2. throughput -------------------------------------------------------


def wrk(port, path, seconds, threads, cores, script):
    command = ["taskset", "-c", cores, "wrk", f"-t{threads}", f"-c{CONNECTIONS}",
               f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}{path}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else None,
    }


def start_servers(server_cores, workers):
    servers = {}
    for index, variant in enumerate(VARIANTS):
        port = FIRST_PORT + index
        env = dict(os.environ, TOKIO_WORKER_THREADS=str(workers))
        process = subprocess.Popen(
            ["taskset", "-c", server_cores, str(SERVER), "serve", variant, str(port)],
            stdout=subprocess.PIPE, text=True, env=env)
        line = process.stdout.readline()
        if "listening" not in line:
            sys.exit(f"{variant} did not start: {line!r}")
        servers[variant] = (process, port)
    return servers


def throughput(rounds, seconds, server_cores, client_cores, workers, threads):
    servers = start_servers(server_cores, workers)
    try:
        for variant, (_, port) in servers.items():
            # Warm up: the first requests' allocations are not measured.
            wrk(port, "/item/warm", 1, threads, client_cores, SAME)
        results = {}
        bare_port = servers["bare"][1]
        run_number = 0
        for variant in VARIANTS[1:]:
            port = servers[variant][1]
            results[variant] = {}
            for kind in ["unique", "hot"]:
                ratios, sides = [], []
                for round_ in range(rounds):
                    measured = {"bare": [], variant: []}
                    for which in ["bare", variant, variant, "bare"]:
                        run_number += 1
                        if kind == "unique":
                            # Keys no earlier run used, on any server.
                            path, script = f"/item/r{run_number}t", UNIQUE
                        else:
                            path, script = "/item/hot", SAME
                        on = bare_port if which == "bare" else port
                        measured[which].append(wrk(on, path, seconds, threads, client_cores, script))
                    bare = sum(m["requests_per_s"] for m in measured["bare"])
                    mine = sum(m["requests_per_s"] for m in measured[variant])
                    ratios.append(mine / bare)
                    sides.append(measured)
                    print(f"{variant} {kind} round {round_ + 1}: {mine / bare:.3f}",
                          file=sys.stderr, flush=True)
                results[variant][kind] = {
                    "ratio_median": round(statistics.median(ratios), 3),
                    "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
                    "rounds": sides,
                }
        return results
    finally:
        for process, _ in servers.values():
            process.terminate()
        for process, _ in servers.values():
            process.wait()


# --- 3. cold stampede ----------------------------------------------------


def stampede():
    output = run([str(SERVER), "stampede", str(STAMPEDE)], capture_output=True, text=True).stdout
    return json.loads(output)


# --- report --------------------------------------------------------------


def machine(cores):
    model = ""
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores_used": cores,
        "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip(),
    }


WIRING = """\
- *identity layer*: `tower::layer::layer_fn(|service| service)` through
  `Router::layer`: what any layer costs there (a boxed service, future and
  body per request), for scale.
- *share mode*: `SingleFlightLayer::share()`; *+ cache*:
  `.cache(CacheConfig::new().ttl(60 s))` (bounded by its default 64 MiB).
  Its defaults do more with a request than the peers do: its key reads the
  host and the caller's identity headers besides the method and URI, and its
  cache follows RFC 9111 (CACHING.md); the peers key on method and URI (or
  the path's key) alone. *Across callers*: `.share_across_identities()`,
  which keys as the peers do (one answer for every caller: no credential
  header or cookie is read), for what the caller's identity costs.
- *async_singleflight* 0.6: a `UnaryGroup<String, String>` in the router's
  state; the handler runs its body through `group.work(&key, ..)`. It shares a
  run and keeps nothing.
- *tower-resilience-coalesce* 0.14: `CoalesceLayer` keyed by method and URI.
  It needs a `Clone` response and error, and its service is not `Sync` for
  axum's `Request` (whose body is not), so it cannot go through
  `Router::layer`: it wraps the router (boxed as a `BoxCloneService`), with
  the body buffered into `Bytes` below it and its error (the leader
  cancelled) answered `500` above it.
- *moka* 0.12 `future::Cache` (100,000 entries, TTL 60 s) in the router's
  state; the handler runs its body through `cache.get_with(key, ..)`, which
  also coalesces the callers of a missing key.
- *axum-response-cache* 0.5 (axum 0.8): `CacheLayer::with(LruTtlCache::
  with_size_and_ttl(100_000, 60 s))` through `Router::layer`, keyed by method
  and URI. It stores only `2xx`, and does not coalesce: every request of a
  herd on a missing key runs the handler.
- *hitbox-tower* 0.2 + *hitbox-moka* 0.2: `Cache::builder()` with a
  `MokaBackend` (100,000 entries, bincode values, the format its docs
  recommend over the default JSON), keyed by `Method::new().path("/item/{key}")`,
  `GET`s and `200`s only, TTL 60 s, and its dogpile prevention on
  (`BroadcastConcurrencyManager`, concurrency 1), through `Router::layer`.
"""


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def span(first, last):
    return f"core {first}" if first == last else f"cores {first}-{last}"


COLUMNS = {
    "unique": "instructions with unique keys",
    "hot": "instructions with a hot key",
    "browser": "instructions with a browser's headers",
    "rps_unique": "requests/s with unique keys",
    "rps_hot": "requests/s with a hot key",
}
# Each peer against the crate's row that does what it does.
RIVALS = {
    "async_singleflight": "share",
    "tower_resilience_coalesce": "share",
    "moka_get_with": "share_cache",
    "axum_response_cache": "share_cache",
    "hitbox": "share_cache",
}


def wins(results):
    """Where each peer beats the crate's matching row, as measured (on the
    rounded figures of the table; requests/s only past the range of its
    rounds)."""
    ins = results["instructions"]["ratios"]
    tp = results["throughput"]
    lines = ["Where a peer does better than the crate's row that does the same job "
             "(share mode for the coalescers, share mode + cache for the caches):", ""]
    for peer, rival in RIVALS.items():
        better = []
        for kind in KINDS:
            if round(ins[kind][peer], 2) < round(ins[kind][rival], 2):
                better.append(f"{COLUMNS[kind]} ({ins[kind][peer]:.2f} against "
                              f"{ins[kind][rival]:.2f})")
        for kind in ["unique", "hot"]:
            mine, theirs = tp[peer][kind], tp[rival][kind]
            if mine["ratio_range"][0] > theirs["ratio_range"][1]:
                better.append(f"{COLUMNS['rps_' + kind]} ({mine['ratio_median']:.2f} "
                              f"against {theirs['ratio_median']:.2f})")
        if results["stampede"][peer]["runs"] > results["stampede"][rival]["runs"]:
            worse = f"; but it runs the handler {results['stampede'][peer]['runs']:,} times " \
                    "in the stampede"
        else:
            worse = ""
        found = "; ".join(better) if better else "nowhere in these columns"
        lines.append(f"- {LABELS[peer]} against {LABELS[rival]}: {found}{worse}.")
    return lines


def render(results):
    m = results["machine"]
    ins = results["instructions"]
    tp = results["throughput"]
    st = results["stampede"]
    cores = m["cores_used"]
    half = cores // 2
    rounds = results["throughput_rounds"]
    seconds = results["throughput_seconds"]
    all_ok = all(s["ok"] == s["requests"] for s in st.values())
    bare_rps = {
        kind: statistics.median(
            side["requests_per_s"]
            for variant in VARIANTS[1:]
            for measured in tp[variant][kind]["rounds"]
            for side in measured["bare"])
        for kind in ["unique", "hot"]
    }
    lines = [
        "## 8. The crates users would pick instead",
        "",
        f"Measured by `bench/peers.py` on {m['date']}: {m['cpus']} cores ({m['cpu']}), "
        f"Linux {m['kernel']}, {m['rustc']}. Every variant (`peers/src/lib.rs`) serves "
        "`GET /item/{key}` with the same handler (it counts its run and answers `hello {key}` "
        "with `Cache-Control: max-age=60`); every cache keeps answers 60 s and has room for "
        "about 100,000 of them. Each figure is a ratio to the bare route (no layer) measured "
        "in the same run: above 1 costs more instructions, below 1 serves fewer requests/s.",
        "",
        f"- *instr.*: instructions per request, counted by callgrind (gungraun 0.20, "
        f"`peers/benches/instructions.rs`), {ins['requests_per_benchmark']:,} requests one "
        "after the other through a warm application in process, on a current-thread runtime. "
        "*unique*: every request a key never seen (a miss for the caches); *hot*: every request "
        "the same key (a hit for the caches, stored by the warm-up; a lone run for the "
        "coalescers that keep nothing); *browser headers*: unique keys with the ten headers "
        "a browser sends. The bare route costs "
        + ", ".join(f"{ins['per_request'][k]['bare']:,} ({k})" for k in KINDS)
        + " instructions per request.",
        f"- *req/s*: wrk with {CONNECTIONS} connections and {plural(half, 'thread')} on "
        f"{span(half, cores - 1)}, against one server per variant pinned to {span(0, half - 1)} "
        f"with {plural(half, 'Tokio worker')} (`peers_server serve`); {seconds} s runs in ABBA rounds "
        f"(bare, variant, variant, bare), the median of {rounds} rounds' ratios. *unique*: a "
        "wrk script gives every request a key no request had before (bench/peers.lua); *hot*: "
        "one key. The bare route served "
        + ", ".join(f"{bare_rps[k]:,.0f} requests/s ({k})" for k in ["unique", "hot"])
        + " (medians of its runs); the machine's 1-minute load average was "
        + f"{results['load_average'][0]:.2f} just before these runs (this script's own "
        + "build and instruction counts included; the runs then keep both sides busy "
        + "themselves).",
        f"- *runs in a cold stampede of {STAMPEDE:,}*: {STAMPEDE:,} identical requests to a "
        "new key sent at once in process (`peers_server stampede`, one thread); the handler "
        "waits at a gate opened 50 ms later, once every request is parked; how many times "
        "the handler's body ran (counted with an atomic; every answer was checked to be "
        + ("`200 hello stampede`)." if all_ok else
           "`200 hello stampede`; see below for those that were not)."),
        "",
        "How each is wired:",
        "",
        WIRING.rstrip(),
        "",
        "| variant | instr. unique | instr. hot | instr. browser headers | req/s unique | "
        f"req/s hot | runs in a cold stampede of {STAMPEDE:,} |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS[1:]:
        cells = [LABELS[variant]]
        cells += [f"{ins['ratios'][kind][variant]:.2f}" for kind in KINDS]
        cells += [f"{tp[variant][kind]['ratio_median']:.2f}" for kind in ["unique", "hot"]]
        cells.append(str(st[variant]["runs"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *wins(results), ""]
    lines += [
        f"The bare route ran its handler {st['bare']['runs']:,} times in the stampede. "
        "Raw counts, every round's requests/s and the ranges of the ratios are in "
        "`bench/results/peers.json`.",
        "",
    ]
    for variant, s in st.items():
        if s["ok"] != s["requests"]:
            lines[-1:-1] = [f"In the stampede, {LABELS[variant]} answered {s['ok']:,} of "
                            f"{s['requests']:,} requests `200 hello stampede`.", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 1 s runs")
    parser.add_argument("--cores", type=int, default=2,
                        help="cores to use: the server on the first half, wrk on the other")
    parser.add_argument("--reuse-instructions", action="store_true",
                        help="read the last gungraun summaries instead of running them")
    parser.add_argument("--render", action="store_true",
                        help="only render bench/peers.md again from bench/results/peers.json")
    args = parser.parse_args()
    if args.render:
        MARKDOWN.write_text(render(json.loads(RESULTS.read_text())))
        print(MARKDOWN.read_text())
        return
    if args.cores < 2 or args.cores % 2:
        sys.exit("--cores takes an even number, at least 2")
    if not shutil.which("wrk"):
        run(["apt-get", "install", "-y", "-qq", "wrk"])
    half = args.cores // 2
    server_cores = f"0-{half - 1}"
    client_cores = f"{half}-{args.cores - 1}"
    rounds, seconds = (1, 1) if args.quick else (3, 2)

    results = {"machine": machine(args.cores)}
    results["instructions"] = instructions(args.reuse_instructions)
    run(["cargo", "build", "-j1", "--release", "-p", PACKAGE, "--bin", "peers_server"])
    results["stampede"] = stampede()
    results["throughput_rounds"] = rounds
    results["throughput_seconds"] = seconds
    load_before = os.getloadavg()[0]
    results["throughput"] = throughput(rounds, seconds, server_cores, client_cores, half, half)
    # Others' work on the machine moves requests/s (ABBA rounds share it out
    # between both sides, not away): the 1-minute load before the runs, and
    # after them (their own load included).
    results["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    MARKDOWN.write_text(render(results))
    print(MARKDOWN.read_text())


if __name__ == "__main__":
    main()
