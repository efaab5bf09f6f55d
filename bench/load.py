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
import os
import platform
import re
import statistics
import subprocess
import time
import urllib.request

WORK_MS = 200


# --- requests ------------------------------------------------------------

BURST = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "examples", "burst")


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

ROUNDS = 9


def median_round(rounds, by):
    """The median of several rounds (by `by`), with the range of `by` across
    them: tail latencies on a shared machine move from one round to the next."""
    ordered = sorted(rounds, key=lambda r: r[by])
    middle = dict(ordered[len(ordered) // 2])
    middle[f"{by}_range"] = [ordered[0][by], ordered[-1][by]]
    middle["rounds"] = len(rounds)
    return middle


def cold_stampede(crate, base, prefix, route, label, floor=None):
    """1. N identical requests to a cold 200 ms handler, a few rounds of each
    (a new key every round): the median round, and every round's runs. With
    `floor`, each round of 1,000 is followed by a round of the fan-out floor,
    appended to it, so that both see the machine in the same state."""
    out = {}
    for n in (10, 100, 1000):
        rounds = []
        for round_ in range(ROUNDS):
            before = runs(crate, route)
            path = f"{prefix}/cold-{label}-{n}-{round_}"
            statuses, latencies, done = burst(base, f"{path}?ms={WORK_MS}", n)
            # How long after the first answer (the leader's) each one came.
            extra = [(at - min(done)) * 1000 for at in done]
            result = {
                "handler_runs": runs(crate, route) - before,
                "ok": statuses.count(200),
                **summary(latencies),
                "extra_wait_p99_ms": round(pct(extra, 99), 2),
            }
            if base == crate:
                # The same fan-out as the server saw it: first to last answer
                # leaving the layer, before the sockets and the client.
                result["server_spread_ms"] = server_spread(crate, path)
            rounds.append(result)
            if floor is not None and n == 1000:
                floor.append(fan_out_floor_round(crate, n, round_))
        out[str(n)] = median_round(rounds, "extra_wait_p99_ms")
        # Every round counts: one extra run in any of them is a miss.
        out[str(n)]["handler_runs"] = max(r["handler_runs"] for r in rounds)
        out[str(n)]["ok"] = min(r["ok"] for r in rounds)
    return out


def server_spread(crate, path):
    with urllib.request.urlopen(f"{crate}/answered?path={path}") as response:
        return round(json.load(response)["spread_ms"], 2)


def fan_out_floor_round(crate, n, round_):
    """A round of the floor of the extra wait: N requests to /gate, which has
    no layer: each waits until 200 ms after the first came, then its own
    handler answers. N answers ready at the same instant, none shared: how
    long after the first the others come is what one server core takes to
    answer N connections at once, coalescing or not."""
    path = f"/gate/floor-{round_}"
    _, _, done = burst(crate, f"{path}?ms={WORK_MS}", n)
    extra = [(at - min(done)) * 1000 for at in done]
    return {
        "n": n,
        "extra_wait_p99_ms": round(pct(extra, 99), 2),
        "server_spread_ms": server_spread(crate, path),
    }


def reject(crate, n=200):
    """2. N concurrent triggers: one runs, the rest get 409 at once; and N
    requests at once to /bare, the floor of the 409s' p99, in alternate
    rounds. Each its own median."""
    rounds = []
    for round_ in range(ROUNDS):
        statuses, latencies, _ = burst(crate, f"/reject/job-{round_}?ms=1000", n, "POST")
        conflicts = [latency for status, latency in zip(statuses, latencies) if status == 409]
        _, bare, _ = burst(crate, "/bare", n)
        rounds.append({
            "requests": len(statuses),
            "ok": statuses.count(200),
            "conflict": statuses.count(409),
            "conflict_p99_ms": round(pct(conflicts, 99), 2) if conflicts else None,
            "bare_p99_ms": round(pct(bare, 99), 2),
        })
    out = median_round(rounds, "conflict_p99_ms")
    bare = median_round(rounds, "bare_p99_ms")
    out["bare_p99_ms"], out["bare_p99_ms_range"] = bare["bare_p99_ms"], bare["bare_p99_ms_range"]
    return out


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


def reject_under_load(crate, rounds=4, seconds=2, connections=64):
    """2b. 409s under sustained load: while one run holds the key, wrk sends
    duplicates on 64 connections, alternating (ABBA) with /bare under the
    same load; the medians."""
    import threading
    held_ms = (rounds * 2 * seconds + 2) * 1000
    holder = threading.Thread(target=lambda: urllib.request.urlopen(
        urllib.request.Request(f"{crate}/reject/held?ms={held_ms}", method="POST")).read())
    holder.start()
    time.sleep(0.2)
    conflicts, bare = [], []
    for round_ in range(rounds):
        for which in (("conflict", "bare") if round_ % 2 == 0 else ("bare", "conflict")):
            if which == "bare":
                bare.append(wrk(f"{crate}/bare", seconds, connections))
            else:
                conflicts.append(wrk(f"{crate}/reject/held", seconds, connections, script=POST))
    holder.join()
    # The key is held throughout: every answer must be a 409.
    ran = sum(c["requests"] - c["non_2xx"] for c in conflicts)
    if ran:
        raise SystemExit(f"{ran} duplicates ran instead of a 409")
    median = lambda runs, key: round(statistics.median(r[key] for r in runs), 3)
    return {
        "connections": connections,
        "rounds": rounds,
        "conflicts": sum(c["non_2xx"] for c in conflicts),
        "conflict_requests_per_s": median(conflicts, "requests_per_s"),
        "conflict_p99_ms": median(conflicts, "p99_ms"),
        "conflict_p99_ms_range": [min(c["p99_ms"] for c in conflicts), max(c["p99_ms"] for c in conflicts)],
        "bare_requests_per_s": median(bare, "requests_per_s"),
        "bare_p99_ms": median(bare, "p99_ms"),
        "bare_p99_ms_range": [min(b["p99_ms"] for b in bare), max(b["p99_ms"] for b in bare)],
    }


UNIQUE = str(__import__("pathlib").Path(__file__).with_name("unique.lua"))
SAME = str(__import__("pathlib").Path(__file__).with_name("same.lua"))


# wrk's threads and connections for sustained load: one thread and 64
# connections on the 2-core layout; `--cores N` gives N/2 threads.
THREADS = 1
CONNECTIONS = 64


def wrk(url, seconds, connections=None, script=None, method="GET"):
    """wrk's requests/s and latency distribution (in ms)."""
    connections = connections or CONNECTIONS
    command = ["wrk", f"-t{THREADS}", f"-c{max(connections, THREADS)}", f"-d{seconds}s", "--latency", url]
    if script:
        command[1:1] = ["-s", script]
    env = dict(os.environ, WRK_METHOD=method)
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
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
    # `/sf/` with bench/unique.lua: every request its own key. Every side,
    # `/bare` included, builds its requests in a wrk script (bench/same.lua
    # for a fixed path), so that the client's cost is the same on both.
    # `/param/` is the same route shape with no layer at all: how much of
    # the gap to `/bare` is a routed path parameter, not the layer.
    # `/sf/hot`: one key, a fast handler (followers join while it runs);
    # `POST /reject/`: reject mode, every request its own key (each runs).
    cases = {
        "share_unique_keys": ("/sf/", UNIQUE, "GET"),
        "share_hot_key": ("/sf/hot", SAME, "GET"),
        "cache_hit": ("/cached/hot", SAME, "GET"),
        "reject_unique_keys": ("/reject/", UNIQUE, "POST"),
        "param_no_layer": ("/param/", UNIQUE, "GET"),
    }
    out = {}
    for name, (path, script, method) in cases.items():
        ratios, p99s = [], []
        for round_ in range(rounds):
            order = ["bare", name] if round_ % 2 == 0 else [name, "bare"]
            measured = {}
            for which in order:
                if which == "bare":
                    measured[which] = wrk(f"{crate}/bare", seconds, script=SAME)
                else:
                    measured[which] = wrk(f"{crate}{path}", seconds, script=script, method=method)
            ratios.append(measured[name]["requests_per_s"] / measured["bare"]["requests_per_s"])
            p99s.append((measured[name]["p99_ms"], measured["bare"]["p99_ms"]))
        out[name] = {
            "throughput_ratio_median": round(statistics.median(ratios), 3),
            "throughput_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "p99_ms_vs_bare": p99s,
        }
    # The targets compare the layered routes with `/param/`, the same route
    # shape without the layer: the ratio of the two medians.
    param = out["param_no_layer"]["throughput_ratio_median"]
    for name, case in out.items():
        case["vs_param"] = round(case["throughput_ratio_median"] / param, 3)
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
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="the server's Tokio workers (recorded)")
    args = parser.parse_args()
    global THREADS, CONNECTIONS
    THREADS, CONNECTIONS = args.threads, args.connections
    crate = args.crate
    peers = {"nginx_lock": args.nginx, "nginx_lock_stale": args.nginx_stale, "varnish": args.varnish}

    # Rounds of the fan-out floor, taken between the crate's rounds of 1,000
    # (the dict below is built in order: the stampede fills it first).
    floor = []
    results = {
        "machine": {
            "cpus": subprocess.run(["nproc", "--all"], capture_output=True, text=True).stdout.strip(),
            "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "server_workers": args.workers,
            "wrk_threads": args.threads,
            "wrk_connections": args.connections,
        },
        "handler_ms": WORK_MS,
        "cold_stampede": {"crate": cold_stampede(crate, crate, "/slow", "slow", "crate", floor)},
        "fan_out_floor": median_round(floor, "extra_wait_p99_ms"),
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
