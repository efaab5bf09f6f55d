#!/usr/bin/env bash
# The load benchmark: the crate and its peers (nginx with proxy_cache_lock,
# with and without use_stale updating; Varnish with its default VCL) in one
# run, on this machine. Writes bench/results/latest.json, renders
# bench/results/latest.svg and BENCHMARKS.md.
#
# Installs what it needs (wrk, nginx, varnish from Debian). The server runs on
# core 0 with one Tokio worker, the clients on core 1.
#
# `bench/run.sh --cores N` (N even, at most the machine's cores) is the layout
# for a machine with more cores: the server, nginx and Varnish on cores 0 to
# N/2-1 with N/2 Tokio workers (and N/2 nginx workers, Varnish threads), wrk
# with N/2 threads and 32 connections per thread (at least 64) on the other
# half. The results go to bench/results/cores-N.json and BENCHMARKS.md's
# multi-core table instead of the 2-core run's files.
#
# Then bench/peers.py measures the Rust crates users would pick instead in
# the same layout (about 20 minutes more the first time, most of it building
# them); SKIP_PEERS=1 leaves them out.
set -euo pipefail
cd "$(dirname "$0")/.."

CORES=2
while [ $# -gt 0 ]; do
    case "$1" in
        --cores) CORES="$2"; shift 2 ;;
        *) echo "usage: bench/run.sh [--cores N]" >&2; exit 2 ;;
    esac
done
if [ $((CORES % 2)) -ne 0 ] || [ "$CORES" -lt 2 ] || [ "$CORES" -gt "$(nproc)" ]; then
    echo "--cores must be even, at least 2 and at most $(nproc)" >&2
    exit 2
fi
HALF=$((CORES / 2))
SERVER_CORES="0-$((HALF - 1))"
CLIENT_CORES="$HALF-$((CORES - 1))"
CONNECTIONS=$((HALF * 32 > 64 ? HALF * 32 : 64))
if [ "$CORES" -eq 2 ]; then OUT=bench/results/latest.json; else OUT="bench/results/cores-$CORES.json"; fi

PORT=3100
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; nginx -c "$WORK/nginx.conf" -s stop 2>/dev/null || true; pkill -f "varnishd.*$WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || ! command -v varnishd >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq wrk nginx-light varnish >/dev/null
fi

# The crate alone: the observability member would turn the metrics feature on.
cargo build --release -p tower-singleflight --example bench_server --example burst
TARGET="${CARGO_TARGET_DIR:-target}"
TOKIO_WORKER_THREADS=$HALF PORT=$PORT taskset -c "$SERVER_CORES" "$TARGET/release/examples/bench_server" > "$WORK/server.log" &
for _ in $(seq 50); do grep -q listening "$WORK/server.log" && break; sleep 0.1; done

# nginx: a cache with proxy_cache_lock, twice: plain, and serving stale
# while updating. Both in front of the uncoalesced /origin routes.
cat > "$WORK/nginx.conf" <<NGINX
user root;
worker_processes $HALF;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    proxy_cache_path $WORK/cache-lock keys_zone=lock:10m;
    proxy_cache_path $WORK/cache-stale keys_zone=stale:10m;
    upstream origin { server 127.0.0.1:$PORT; keepalive 64; }
    server {
        listen 127.0.0.1:8081;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache lock;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
        }
    }
    server {
        listen 127.0.0.1:8082;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache stale;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
            proxy_cache_use_stale updating;
            proxy_cache_background_update on;
        }
    }
}
NGINX
taskset -c "$SERVER_CORES" nginx -c "$WORK/nginx.conf"

# Varnish, default VCL.
taskset -c "$SERVER_CORES" varnishd -a 127.0.0.1:8083 -b 127.0.0.1:$PORT -n "$WORK/varnish" -s malloc,64m -p thread_pools=$HALF >/dev/null
sleep 1

ulimit -n 20000
taskset -c "$CLIENT_CORES" python3 bench/load.py \
    --crate "http://127.0.0.1:$PORT" \
    --nginx "http://127.0.0.1:8081" \
    --nginx-stale "http://127.0.0.1:8082" \
    --varnish "http://127.0.0.1:8083" \
    --threads "$HALF" --connections "$CONNECTIONS" --workers "$HALF" \
    --out "$OUT" > /dev/null
# The Rust crates users would pick instead, on the same layout (their own
# servers and instruction counts; bench/peers.md). SKIP_PEERS=1 skips them.
if [ -z "${SKIP_PEERS:-}" ]; then
    kill $(jobs -p) 2>/dev/null || true
    python3 bench/peers.py --cores "$CORES"
fi
python3 bench/report.py bench/results/latest.json
echo "$OUT and BENCHMARKS.md written"
