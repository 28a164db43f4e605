#!/usr/bin/env bash
# Cache over HTTP vs Redis: GET hit throughput and p99 of keel's
# `GET /api/v1/cache/keys/{key}` (wrk -c50) against `redis-benchmark -c 50 -t get` (no
# pipelining), same value size (100 B and 4 KiB), same run, same machine. The script starts its
# own redis-server on a free port. Redis serves commands on one thread; keel gets one worker
# thread too (KEEL_SERVER_WORKER_THREADS=1).
#
# Usage: bench/cache_http.sh [rounds]     (default 3 rounds per size; prints medians and ratios)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-3}
DURATION=${DURATION:-10s}
REQUESTS=${REQUESTS:-1000000}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need redis-server || ! need redis-benchmark; then
  apt-get update -qq && apt-get install -y -qq wrk redis-server redis-tools >/dev/null
fi
cargo build --release -q -p keel-server
KEEL=$PWD/target/release/keel
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

REDIS_PORT=$(free_port)
start_redis "$REDIS_PORT"
KEEL_PORT=$(free_port)
TOKEN=$BENCH_TOKEN
write_bench_config "$WORK/keel.toml"
KEEL_SERVER_WORKER_THREADS=1 "$KEEL" serve --config "$WORK/keel.toml" --listen "127.0.0.1:$KEEL_PORT" --data-dir "$WORK/keel" >/dev/null 2>&1 &
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$KEEL_PORT/ready" >/dev/null 2>&1 && redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done

# wrk's p99 in ms (it prints e.g. "99%  1.23ms" or "99%  850.00us")
wrk_run() {
  wrk -t1 -c50 -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" "$1" > "$WORK/wrk.txt"
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' "$WORK/wrk.txt")
  echo "$rps $p99"
}
redis_run() {
  redis-benchmark -p "$REDIS_PORT" -c 50 -n "$REQUESTS" -t get -d "$1" --csv 2>/dev/null |
    awk -F, 'NR==2 {gsub(/"/,""); print $2, $7}'
}

for size in 100 4096; do
  head -c "$size" /dev/zero | tr '\0' 'x' > "$WORK/value"
  redis-cli -p "$REDIS_PORT" -x set key:__rand_int__ < "$WORK/value" >/dev/null
  curl -fs -X PUT -H "Authorization: Bearer $TOKEN" --data-binary @"$WORK/value" \
    "http://127.0.0.1:$KEEL_PORT/api/v1/cache/keys/bench:$size?ttl=0" >/dev/null || true
  url="http://127.0.0.1:$KEEL_PORT/api/v1/cache/keys/bench:$size"
  curl -fs -H "Authorization: Bearer $TOKEN" "$url" | cmp -s - "$WORK/value" || { echo "keel did not return the value"; exit 1; }
  krps=(); kp99=(); rrps=(); rp99=()
  for i in $(seq "$ROUNDS"); do
    read -r rr rp <<<"$(redis_run "$size")"
    read -r kr kp <<<"$(wrk_run "$url")"
    rrps+=("$rr"); rp99+=("$rp"); krps+=("$kr"); kp99+=("$kp")
    printf '%5s B round %d: redis %s rps p99 %s ms | keel %s rps p99 %s ms | ratio %s\n' "$size" "$i" "$rr" "$rp" "$kr" "$kp" "$(ratio "$kr" "$rr")"
  done
  mr=$(median "${rrps[@]}"); mk=$(median "${krps[@]}")
  printf '%5s B median: redis %.0f rps (p99 %s ms), keel %.0f rps (p99 %s ms), keel/redis = %s (target >= 1.0)\n' \
    "$size" "$mr" "$(median "${rp99[@]}")" "$mk" "$(median "${kp99[@]}")" "$(ratio "$mk" "$mr")"
done
