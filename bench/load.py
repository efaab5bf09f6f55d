#!/usr/bin/env python3
"""Load scenarios against bench_server and its peers; writes results JSON.

Driven by bench/run.sh, which builds and starts everything. Uses the Rust
burst client (examples/burst.rs: every connection is opened first, then all
requests are sent at once) for bursts and wrk for sustained load.

    python3 bench/load.py --crate URL --nginx URL --nginx-stale URL \
        --varnish URL --out bench/results/latest.json
"""

import argparse
import asyncio
import json
import platform
import re
import statistics
import subprocess
import time
import urllib.request

WORK_MS = 200


# --- requests ------------------------------------------------------------

BURST = "target/release/examples/burst"


def burst(base, path, n, method="GET"):
    """N identical requests sent at the same instant, by the Rust burst client
    (examples/burst.rs): statuses, latencies (ms, from each request's send)
    and completion times (seconds, one clock)."""
    addr = base.removeprefix("http://")
    output = subprocess.run(
        [BURST, addr, method, path, str(n)], capture_output=True, text=True, check=True
    ).stdout
    answers = json.loads(output)
    return answers["statuses"], answers["latency_ms"], answers["done_s"]


def stats(crate):
    with urllib.request.urlopen(f"{crate}/stats") as response:
        return json.load(response)


def runs(crate, route):
    return stats(crate)["runs"][route]


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def summary(latencies):
    return {
        "p50_ms": round(pct(latencies, 50), 2),
        "p99_ms": round(pct(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
    }


# --- scenarios -----------------------------------------------------------

def cold_stampede(crate, base, prefix, route, label):
    """1. N identical requests to a cold 200 ms handler."""
    out = {}
    for n in (10, 100, 1000):
        before = runs(crate, route)
        statuses, latencies, done = burst(base, f"{prefix}/cold-{label}-{n}?ms={WORK_MS}", n)
        # How long after the first answer (the leader's) each one came.
        extra = [(at - min(done)) * 1000 for at in done]
        out[str(n)] = {
            "handler_runs": runs(crate, route) - before,
            "ok": statuses.count(200),
            **summary(latencies),
            "extra_wait_p99_ms": round(pct(extra, 99), 2),
        }
    return out


def bare_burst(crate, n=1000):
    """The floor of the extra wait: N requests at once to /bare, which answers
    at once. How long after the first answer the others come is what one
    server core takes to answer N connections, with nothing coalesced."""
    _, _, done = burst(crate, "/bare", n)
    extra = [(at - min(done)) * 1000 for at in done]
    return {"n": n, "extra_wait_p99_ms": round(pct(extra, 99), 2)}


def reject(crate):
    """2. N concurrent triggers: one runs, the rest get 409 at once."""
    statuses, latencies, _ = burst(crate, "/reject/job?ms=1000", 200, "POST")
    conflicts = [latency for status, latency in zip(statuses, latencies) if status == 409]
    return {
        "requests": len(statuses),
        "ok": statuses.count(200),
        "conflict": statuses.count(409),
        "conflict_p99_ms": round(pct(conflicts, 99), 2) if conflicts else None,
    }


def unshareable(crate, base, prefix, route, label):
    """3. A burst of 100 to a no-store route, then another right after."""
    out = {}
    for attempt in ("first", "second"):
        before = runs(crate, route)
        statuses, latencies, _ = burst(base, f"{prefix}/burst-{label}?ms={WORK_MS}", 100)
        median = statistics.median(latencies)
        out[attempt] = {
            "handler_runs": runs(crate, route) - before,
            "ok": statuses.count(200),
            "median_ms": round(median, 1),
            "median_x_handler": round(median / WORK_MS, 2),
        }
    return out


POST = str(__import__("pathlib").Path(__file__).with_name("post.lua"))


def reject_under_load(crate, seconds=3, connections=64):
    """2b. 409s under sustained load: while one run holds the key, wrk sends
    duplicates on 64 connections; /bare under the same load, right after,
    for comparison."""
    import threading
    holder = threading.Thread(target=lambda: urllib.request.urlopen(
        urllib.request.Request(f"{crate}/reject/held?ms={(seconds + 2) * 1000}", method="POST")).read())
    holder.start()
    time.sleep(0.2)
    conflicts = wrk(f"{crate}/reject/held", seconds, connections, script=POST)
    holder.join()
    bare = wrk(f"{crate}/bare", seconds, connections)
    # The key is held throughout: every answer must be a 409.
    if conflicts["non_2xx"] != conflicts["requests"]:
        raise SystemExit(f"{conflicts['requests'] - conflicts['non_2xx']} duplicates ran instead of a 409")
    return {
        "connections": connections,
        "conflicts": conflicts["non_2xx"],
        "conflict_requests_per_s": conflicts["requests_per_s"],
        "conflict_p99_ms": conflicts["p99_ms"],
        "bare_requests_per_s": bare["requests_per_s"],
        "bare_p99_ms": bare["p99_ms"],
    }


UNIQUE = str(__import__("pathlib").Path(__file__).with_name("unique.lua"))


def wrk(url, seconds, connections=64, script=None):
    """wrk's requests/s and latency distribution (in ms)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        command[1:1] = ["-s", script]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    def ms(value):
        found = re.match(r"([\d.]+)(us|ms|s)$", value)
        if not found:
            raise SystemExit(f"unreadable wrk latency {value!r} for {url}:\n{output}")
        number, unit = found.groups()
        return round(float(number) * {"us": 0.001, "ms": 1, "s": 1000}[unit], 3)
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", output)
    p99 = re.search(r"\s99%\s+(\S+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p99_ms": ms(p99.group(1)),
        "max_ms": ms(latency.group(3)),
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def overhead(crate, rounds=6, seconds=2):
    """4. Requests/s and p99 against /bare, alternating ABBA."""
    # `/sf/` with bench/unique.lua: every request its own key.
    cases = {"share_unique_keys": ("/sf/", UNIQUE), "cache_hit": ("/cached/hot", None)}
    out = {}
    for name, (path, script) in cases.items():
        ratios, p99s = [], []
        for round_ in range(rounds):
            order = ["bare", name] if round_ % 2 == 0 else [name, "bare"]
            measured = {}
            for which in order:
                if which == "bare":
                    measured[which] = wrk(f"{crate}/bare", seconds)
                else:
                    measured[which] = wrk(f"{crate}{path}", seconds, script=script)
            ratios.append(measured[name]["requests_per_s"] / measured["bare"]["requests_per_s"])
            p99s.append((measured[name]["p99_ms"], measured["bare"]["p99_ms"]))
        out[name] = {
            "throughput_ratio_median": round(statistics.median(ratios), 3),
            "throughput_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "p99_ms_vs_bare": p99s,
        }
    return out


def ttl_expiry(crate, base, path, route):
    """5. 64 connections for 6 s on one key with a 1 s TTL."""
    # Fill it, let it go stale, then load: the first second, then the rest.
    urllib.request.urlopen(f"{base}{path}").read()
    time.sleep(1.2)
    before = runs(crate, route)
    first = wrk(f"{base}{path}", 1)
    rest = wrk(f"{base}{path}", 5)
    return {
        "handler_runs": runs(crate, route) - before,
        "slowest_after_first_second_ms": rest["max_ms"],
        "p99_after_first_second_ms": rest["p99_ms"],
        "slowest_in_first_second_ms": first["max_ms"],
    }


def many_keys(crate, keys=10000, concurrency=64):
    """6. 10,000 distinct keys: one run each, nothing left afterwards."""
    before = runs(crate, "sf")

    async def worker(queue, host, port):
        reader, writer = await asyncio.open_connection(host, port)
        while not queue.empty():
            n = queue.get_nowait()
            writer.write(f"GET /sf/many-{n} HTTP/1.1\r\nhost: {host}:{port}\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
            await reader.readexactly(length)
        writer.close()

    async def run():
        host, port = crate.removeprefix("http://").split(":")
        queue = asyncio.Queue()
        for n in range(keys):
            queue.put_nowait(n)
        await asyncio.gather(*(worker(queue, host, int(port)) for _ in range(concurrency)))

    asyncio.run(run())
    after = stats(crate)
    return {
        "keys": keys,
        "handler_runs": after["runs"]["sf"] - before,
        "flights_left": after["share"]["in_flight"],
        "leases_left": after["leases_held"],
    }


def main():
    parser = argparse.ArgumentParser()
    for name in ("crate", "nginx", "nginx-stale", "varnish", "out"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    crate = args.crate
    peers = {"nginx_lock": args.nginx, "nginx_lock_stale": args.nginx_stale, "varnish": args.varnish}

    results = {
        "machine": {
            "cpus": subprocess.run(["nproc", "--all"], capture_output=True, text=True).stdout.strip(),
            "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
        "handler_ms": WORK_MS,
        "cold_stampede": {"crate": cold_stampede(crate, crate, "/slow", "slow", "crate")},
        "bare_burst": bare_burst(crate),
        "reject": reject(crate),
        "reject_under_load": reject_under_load(crate),
        "unshareable": {"crate": unshareable(crate, crate, "/nostore", "nostore", "crate")},
        "overhead": overhead(crate),
        "ttl_expiry": {"crate": ttl_expiry(crate, crate, "/ttl/hot?ms=200", "ttl")},
        "many_keys": many_keys(crate),
    }
    for name, base in peers.items():
        results["cold_stampede"][name] = cold_stampede(crate, base, "/origin/slow", "origin", name)
        results["unshareable"][name] = unshareable(crate, base, "/origin/nostore", "origin", name)
        results["ttl_expiry"][name] = ttl_expiry(crate, base, f"/origin/slow/{name}-ttl?ms=200", "origin")
    with open(args.out, "w") as out:
        json.dump(results, out, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
