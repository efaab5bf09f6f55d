#!/usr/bin/env python3
"""The soak (issue 13): mixed traffic against bench_server for a long while,
the server's RSS sampled every second; memory must be flat after warm-up, and
no flight nor lease may be left at the end.

    python3 bench/soak.py [--seconds 600] [--workers 1]

Builds and starts `examples/bench_server.rs` on core 0 (one Tokio worker by
default); the clients run on core 1. The traffic:

- wrk with `bench/soak.lua`: unique keys and a hot key on `/sf`, hits on
  `/cached/hot`, misses on `/cached/{unique}` (they fill the cache up to its
  `max_bytes`), POSTs to `/reject/{4 keys}` (409s), `/nostore/{hot, unique}`
  (unshareable answers);
- Python threads running rounds of 4 clients at once on a new
  `/stream/{key}` each: a buffered answer (shared) whose leader leaves
  before it comes while the others wait on it, and a streamed one (past the
  buffer budget) whose leader and followers leave mid-response, by RST or
  FIN; in each round, some clients read the whole answer (checked).

At the end the load stops, `/stats` is polled until no flight and no lease
is left (a few seconds at most), and everything is written to
`bench/results/soak.json` and `bench/soak.md` (the section for
BENCHMARKS.md). Not run in CI.
"""

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


# --- the server ----------------------------------------------------------


def build():
    subprocess.run(
        ["cargo", "build", "--release", "-p", "tower-singleflight", "--example", "bench_server"], cwd=ROOT, check=True
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "release" / "examples" / "bench_server"


def start_server(binary, port, workers, cores):
    env = dict(os.environ, PORT=str(port), TOKIO_WORKER_THREADS=str(workers))
    command = [str(binary)]
    if cores > 1:
        command = ["taskset", "-c", "0", *command]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if "listening" not in line:
        server.kill()
        sys.exit(f"bench_server did not start: {line!r}")
    # `taskset` execs the server: the child is the server itself.
    return server


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def stats(base):
    with urllib.request.urlopen(f"{base}/stats", timeout=5) as response:
        return json.load(response)


# --- clients that leave --------------------------------------------------

# A buffered answer (its head at 200 ms, then 5 chunks 20 ms apart: inside
# the 1 s buffer budget, so it is shared) and a streamed one (its head at
# 100 ms, then 20 chunks 100 ms apart: past the budget, it streams to the
# leader and the followers run their own). The head waits so that the
# followers have joined: a leader alone at its head streams its answer.
BUFFERED = "wait=200&chunks=5&ms=20"
STREAMED = "wait=100&chunks=20&ms=100"
CHUNK = 1024

# Rounds of clients on one new key each, all sent at once (the first a few
# ms ahead, so that it leads): the leader leaves, the others wait on it.
ROUNDS = [
    # The buffered answer: the leader leaves before it comes (its work goes
    # on for the others); two read it whole, one more leaves.
    (BUFFERED, ["before_answer", "full_buffered", "full_buffered", "before_answer"]),
    # The streamed one: at the budget it goes to the leader, the followers
    # run their own. The leader leaves mid-response by RST, one follower by
    # FIN, one by RST, one reads the whole stream.
    (STREAMED, ["mid_response", "mid_response_fin", "full_streamed", "mid_response"]),
]


class Leavers:
    """Threads that run ROUNDS on /stream in turn, each round on a key of
    its own, and count what each client saw."""

    def __init__(self, port, prefix, threads):
        self.port = port
        self.prefix = prefix
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {}
        self.rounds = {"buffered": 0, "streamed": 0}
        self.threads = [
            threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)
        ]

    def start(self):
        for thread in self.threads:
            thread.start()

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def note(self, behaviour, outcome):
        with self.lock:
            by = self.counts.setdefault(behaviour, {})
            by[outcome] = by.get(outcome, 0) + 1

    def run(self, index):
        rng = random.Random(index)
        turn = 0
        while not self.stop.is_set():
            query, behaviours = ROUNDS[turn % len(ROUNDS)]
            kind = "buffered" if query == BUFFERED else "streamed"
            path = f"/stream/{self.prefix}-{index}-{turn}?{query}"
            turn += 1
            clients = [
                threading.Thread(
                    target=self.client, args=(path, behaviour, rng.random(), i * 0.005)
                )
                for i, behaviour in enumerate(behaviours)
            ]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            with self.lock:
                self.rounds[kind] += 1

    def client(self, path, behaviour, draw, delay):
        time.sleep(delay)
        try:
            outcome = self.once(path, behaviour, draw)
        except (OSError, ValueError) as error:
            outcome = f"error: {type(error).__name__}"
        self.note(behaviour, outcome)

    def once(self, path, behaviour, draw):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
            conn.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            if behaviour == "before_answer":
                # The buffered answer comes whole at 300 ms: leave before
                # its head (200 ms) or while it is read.
                time.sleep(0.02 + 0.26 * draw)
                reset(conn)
                return "left"
            if behaviour in ("mid_response", "mid_response_fin"):
                # Part of the body: 1 to 10 chunks.
                want = (1 + int(draw * 10)) * CHUNK
                got = read_body(conn, want)
                if got is None:
                    return "bad status"
                if behaviour == "mid_response":
                    reset(conn)
                else:
                    conn.shutdown(socket.SHUT_RDWR)
                return "left" if got >= want else "short"
            chunks = 5 if behaviour == "full_buffered" else 20
            got = read_body(conn, None)
            if got is None:
                return "bad status"
            return "ok" if got == chunks * CHUNK else f"wrong length {got}"


def reset(conn):
    """Closes with a RST, as a client that vanishes."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def read_body(conn, want):
    """Reads a 200's headers, then its (chunked) body until `want` bytes of
    the body's encoding came (or all of it, with None). The body's length
    without the chunk framing, or None for another status."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    while want is None or len(body) < want:
        more = conn.recv(65536)
        if not more:
            break
        body += more
    if want is not None:
        return len(body)
    return len(dechunk(body)) if b"chunked" in head.lower() else len(body)


def dechunk(body):
    out = b""
    while body:
        size_line, rest = body.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


# --- sampling ------------------------------------------------------------


class Sampler:
    """The server's RSS every second, and a few gauges from /stats."""

    def __init__(self, pid, base):
        self.pid = pid
        self.base = base
        self.samples = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self, t0):
        self.t0 = t0
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join()

    def run(self):
        tick = 0
        while not self.stop.is_set():
            sample = {"t": tick, "rss_kib": rss_kib(self.pid)}
            try:
                now = stats(self.base)
                sample.update(
                    in_flight=now["in_flight"],
                    leases_held=now["leases_held"],
                    cache_bytes=now["cache"]["weighted_size"],
                    cache_entries=now["cache"]["entry_count"],
                )
            except OSError:
                pass
            self.samples.append(sample)
            tick += 1
            self.stop.wait(max(0.0, self.t0 + tick - time.monotonic()))


def settle(base, timeout):
    """Polls /stats until no flight and no lease is left, or `timeout`."""
    start = time.monotonic()
    while True:
        now = stats(base)
        waited = time.monotonic() - start
        if (now["in_flight"] == 0 and now["leases_held"] == 0) or waited >= timeout:
            return now, round(waited, 2)
        time.sleep(0.1)


# --- figures -------------------------------------------------------------


def mib(kib):
    return round(kib / 1024, 1)


def at(samples, t):
    """The RSS (KiB) of the sample at `t` seconds, or the last before it."""
    before = [s for s in samples if s["t"] <= t]
    return before[-1]["rss_kib"] if before else None


def slope_mib_per_min(samples):
    """Least squares slope of RSS over time, MiB per minute."""
    if len(samples) < 2:
        return None
    xs = [s["t"] / 60 for s in samples]
    ys = [s["rss_kib"] / 1024 for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    return round(sxy / sxx, 3) if sxx else None


FLAT_FRACTION = 0.05
FLAT_MIB = 4


def figures(samples, warmup, seconds):
    after = [s for s in samples if s["t"] >= warmup]
    warm = at(samples, warmup)
    end = samples[-1]["rss_kib"]
    allowed = max(FLAT_FRACTION * warm, FLAT_MIB * 1024)
    full = [s["t"] for s in samples if s.get("cache_bytes", 0) >= 0.95 * CACHE_BOUND[0]]
    return {
        "warmup_s": warmup,
        "rss_warmup_mib": mib(warm),
        "rss_5min_mib": mib(at(samples, 300)) if seconds >= 300 else None,
        "rss_end_mib": mib(end),
        "rss_max_mib": mib(max(s["rss_kib"] for s in samples)),
        "rss_max_after_warmup_mib": mib(max(s["rss_kib"] for s in after)),
        "slope_after_warmup_mib_per_min": slope_mib_per_min(after),
        "end_minus_warmup_mib": round((end - warm) / 1024, 1),
        "flat_allowed_mib": round(allowed / 1024, 1),
        "flat": abs(end - warm) <= allowed,
        "cache_full_at_s": full[0] if full else None,
    }


# The cache's bound, as /stats reports it (set once the server answers).
CACHE_BOUND = [0]


def report_md(result):
    f = result["figures"]
    load = result["wrk"]
    sent = load["sent"]
    dur = load["duration_us"] / 1e6
    final = result["final_stats"]
    runs = final["runs"]
    cache = final["cache"]
    leavers = result["leavers"]
    statuses = load["statuses"]
    rate = load["requests"] / dur

    def count(kind):
        return f"{sent.get(kind, 0):,}"

    def leaver(behaviour):
        return ", ".join(f"{n:,} {what}" for what, n in sorted(leavers.get(behaviour, {}).items()))

    flat = "**yes**" if f["flat"] else "**NO**"
    rounds = result["leaver_rounds"]
    expected_runs = rounds["buffered"] + len(ROUNDS[1][1]) * rounds["streamed"]
    left = final["in_flight"], final["leases_held"]
    lines = [
        "## 9. Soak",
        "",
        f"Measured by `bench/soak.py` on {result['date']}: {result['machine']['nproc']} cores, "
        f"{result['machine']['kernel']}. The server (`examples/bench_server.rs`, "
        f"{result['workers']} Tokio worker{'s' if result['workers'] != 1 else ''}) runs on core 0, "
        f"the clients on core 1, for {result['seconds']} s of mixed traffic: wrk "
        f"(`bench/soak.lua`, {result['connections']} connections, one thread) cycling through "
        "unique and hot keys on `/sf`, hits on `/cached/hot`, misses on `/cached/{unique}`, "
        "POSTs to 4 keys of `/reject` (20 ms each: the rest get `409`), and `/nostore` "
        f"(2 ms, `no-store`: unshareable) on a hot key and on unique ones, at {rate:,.0f} "
        "requests/s on average (the counts below are the requests wrk sent, by kind); and "
        f"{result['leaver_threads']} threads running rounds of 4 "
        "clients sent at once to a new `/stream/{key}` each "
        f"({sum(rounds.values()):,} rounds in all). In a buffered round (a 300 ms answer, "
        "its head at 200 ms, shared) the leader leaves before the answer, two read it whole "
        "and one more leaves; in "
        "a streamed round (2.1 s, past the 1 s buffer budget: it streams to the leader and the "
        "followers run their own) the leader and a follower leave mid-response by RST, one by "
        "FIN, and one reads it whole. The server's RSS (`VmRSS`) is sampled every second. "
        f"`/cached` has a TTL of 60 s and `max_bytes` of {cache['max_bytes'] // MIB} MiB: the "
        "misses fill it, and it should stay at that bound. *Flat* means the RSS at the end is "
        f"within {FLAT_FRACTION:.0%} or {FLAT_MIB} MiB (the larger) of the RSS at warm-up "
        f"({f['warmup_s']} s). At the end the load stops and `/stats` is polled (up to "
        f"{result['settle_timeout_s']} s) until no flight and no lease is left; the counts are "
        "read then. Raw samples: `bench/results/soak.json`.",
        "",
        "| | measured |",
        "|---|---|",
        f"| RSS at warm-up ({f['warmup_s']} s) | {f['rss_warmup_mib']} MiB |",
    ]
    if f["rss_5min_mib"] is not None:
        lines.append(f"| RSS at 5 min | {f['rss_5min_mib']} MiB |")
    lines += [
        f"| RSS at the end ({result['seconds']} s) | {f['rss_end_mib']} MiB |",
        f"| RSS max: in all, after warm-up | {f['rss_max_mib']} MiB, "
        f"{f['rss_max_after_warmup_mib']} MiB |",
        f"| RSS once the load stopped and the flights ended | {result['rss_settled_mib']} MiB |",
        "| RSS slope after warm-up (least squares) | "
        f"{f['slope_after_warmup_mib_per_min']} MiB/min |",
        f"| Memory flat (end within {f['flat_allowed_mib']} MiB of warm-up) | {flat}: "
        f"{f['end_minus_warmup_mib']:+} MiB |",
        f"| Cache at the end | {cache['weighted_size'] / MIB:.1f} MiB weighed, "
        f"{cache['entry_count']:,} entries (bound {cache['max_bytes'] // MIB} MiB"
        + (f", first reached 95% at {f['cache_full_at_s']} s" if f["cache_full_at_s"] else "")
        + ") |",
        f"| Flights in flight, leases held at the end | **{left[0]}**, **{left[1]}** "
        f"(after {result['settle_s']} s) |",
        f"| `/sf` unique keys, hot key | {count('sf_unique')}, {count('sf_hot')} "
        f"({runs['sf']:,} handler runs in all) |",
        f"| `/cached` hits, misses | {count('cached_hit')}, {count('cached_miss')} "
        f"(cache: {cache['stats']['hits']:,} hits, {cache['stats']['misses']:,} misses) |",
        f"| `/reject` POSTs | {count('reject')}: {final['reject']['leaders']:,} ran, "
        f"{final['reject']['rejected']:,} got `409` |",
        f"| `/nostore` hot key, unique keys | {count('nostore_hot')}, {count('nostore_uniq')} "
        f"({runs['nostore']:,} handler runs) |",
        f"| wrk: statuses, errors | "
        + ", ".join(f"{n:,} `{s}`" for s, n in sorted(statuses.items()))
        + f"; {sum(load['errors'].values()) - load['errors']['status']} socket errors, "
        f"{load['errors']['timeout']} timeouts |",
        f"| `/stream`: left mid-response (RST) | {leaver('mid_response')} |",
        f"| `/stream`: left mid-response (FIN) | {leaver('mid_response_fin')} |",
        f"| `/stream`: left before the answer | {leaver('before_answer')} |",
        f"| `/stream`: read whole (buffered, streamed) | {leaver('full_buffered')}; "
        f"{leaver('full_streamed')} |",
        f"| `/stream` handler runs (1 a buffered round, 4 a streamed one) | {runs['stream']:,} "
        f"(expected {expected_runs:,}: {rounds['buffered']:,} buffered and "
        f"{rounds['streamed']:,} streamed rounds) |",
        f"| Share layer of `/sf`, `/nostore`, `/stream`: followers, fell back, timed out, "
        f"panicked | {final['share']['followers']:,}, {final['share']['fell_back']:,}, "
        f"{final['share']['timed_out']:,}, {final['share']['panicked']:,} |",
        "",
    ]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--port", type=int, default=3101)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--leavers", type=int, default=2, help="/stream rounds run at once")
    parser.add_argument(
        "--warmup", type=int, help="seconds of warm-up (default: 60, or a quarter of a shorter run)"
    )
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds to wait for flights to end"
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak.json"))
    parser.add_argument("--md", default=str(ROOT / "bench" / "soak.md"))
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else min(60, args.seconds // 4)

    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    binary = build()
    cores = os.cpu_count() or 1
    server = start_server(binary, args.port, args.workers, cores)
    if cores > 1:
        os.sched_setaffinity(0, {1})
    base = f"http://127.0.0.1:{args.port}"
    prefix = f"soak{int(time.time())}"
    try:
        CACHE_BOUND[0] = stats(base)["cache"]["max_bytes"]
        sampler = Sampler(server.pid, base)
        leavers = Leavers(args.port, prefix, args.leavers)
        t0 = time.monotonic()
        sampler.start(t0)
        leavers.start()
        wrk = [
            "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--timeout", "5s",
            "-s", str(ROOT / "bench" / "soak.lua"), base, "--", prefix,
        ]  # fmt: skip
        if cores > 1:
            wrk = ["taskset", "-c", "1", *wrk]
        output = subprocess.run(wrk, capture_output=True, text=True, check=True).stdout
        leavers.finish()
        sampler.finish()
        load = json.loads(next(l for l in output.splitlines() if l.startswith("SOAK "))[5:])
        final, waited = settle(base, args.settle)
        rss_settled = rss_kib(server.pid)
    finally:
        server.terminate()
        server.wait()

    samples = sampler.samples
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"nproc": cores, "kernel": f"Linux {platform.release()}"},
        "seconds": args.seconds,
        "workers": args.workers,
        "connections": args.connections,
        "leaver_threads": args.leavers,
        "leaver_rounds": leavers.rounds,
        "settle_timeout_s": args.settle,
        "wrk": load,
        "leavers": leavers.counts,
        "settle_s": waited,
        "rss_settled_mib": mib(rss_settled),
        "final_stats": final,
        "figures": figures(samples, warmup, args.seconds),
        "samples": samples,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    Path(args.md).write_text(report_md(result))
    f = result["figures"]
    print(
        f"RSS warm-up {f['rss_warmup_mib']} MiB, end {f['rss_end_mib']} MiB, max "
        f"{f['rss_max_mib']} MiB, slope {f['slope_after_warmup_mib_per_min']} MiB/min, "
        f"flat: {f['flat']}; left: {final['in_flight']} flights, {final['leases_held']} leases"
    )
    print(f"{args.out} and {args.md} written")
    if not f["flat"] or final["in_flight"] or final["leases_held"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
