#!/usr/bin/env bash
# What Redis costs keel, against a Redis this script starts on a free port (see
# crates/keel-redis/benches/redis_tier.rs for each mode), in alternating rounds:
#   memory-hit vs l1-hit    cache reads held in memory, without and with the Redis tier → ratio
#   raw-get vs l2-hit       one read at a time from Redis: a plain GET vs the tier's read → p50/p99 ratio
#   limit-decisions         shared rate limit decisions per second (64 in flight)
#   limit-flood             one key far over its limit: checks per second, share answered locally
#   HTTP                    GET /api/v1/cache/keys/{key} held in memory, wrk -c50 against keel
#                           memory-only and keel with Redis (one worker thread each) → rps ratio
#
# Usage: bench/redis.sh [rounds]     (default 5; OPS=1000000 for the in-memory modes)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-5}
OPS=${OPS:-1000000}
command -v redis-server >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -qq redis-server wrk >/dev/null; }
cargo build --release -q -p keel-server
KEEL=$PWD/target/release/keel
WORK=$(mktemp -d)
cargo bench -q -p keel-redis --bench redis_tier --no-run 2>/dev/null
BIN=$(ls -t target/release/deps/redis_tier-* | grep -v '\.d$' | head -n 1)
PORT=$(free_port)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
start_redis "$PORT"
URL="redis://127.0.0.1:$PORT/0"
field() { awk -v f="$1" '{for (i = 1; i <= NF; i++) if ($i == f) print $(i + 1)}'; }

mem=(); l1=(); raw50=(); raw99=(); l250=(); l299=(); dec=(); flood=(); share=()
for i in $(seq "$ROUNDS"); do
  redis-cli -p "$PORT" flushall >/dev/null
  if [ $((i % 2)) -eq 1 ]; then
    mem+=("$("$BIN" memory-hit "$URL" "$OPS" | awk '{print $2}')"); l1+=("$("$BIN" l1-hit "$URL" "$OPS" | awk '{print $2}')")
    out=$("$BIN" raw-get "$URL"); raw50+=("$(echo "$out" | field p50)"); raw99+=("$(echo "$out" | field p99)")
    out=$("$BIN" l2-hit "$URL"); l250+=("$(echo "$out" | field p50)"); l299+=("$(echo "$out" | field p99)")
  else
    l1+=("$("$BIN" l1-hit "$URL" "$OPS" | awk '{print $2}')"); mem+=("$("$BIN" memory-hit "$URL" "$OPS" | awk '{print $2}')")
    out=$("$BIN" l2-hit "$URL"); l250+=("$(echo "$out" | field p50)"); l299+=("$(echo "$out" | field p99)")
    out=$("$BIN" raw-get "$URL"); raw50+=("$(echo "$out" | field p50)"); raw99+=("$(echo "$out" | field p99)")
  fi
  dec+=("$("$BIN" limit-decisions "$URL" 200000 | awk '{print $4}')")
  out=$("$BIN" limit-flood "$URL" 1000000); flood+=("$(echo "$out" | awk '{print $2}')"); share+=("$(echo "$out" | field share)")
  echo "round $i: memory ${mem[-1]} ns, l1 ${l1[-1]} ns | GET p50 ${raw50[-1]} µs, tier p50 ${l250[-1]} µs | decisions ${dec[-1]}/s | flood ${flood[-1]}/s (local ${share[-1]})"
done
m=$(median "${mem[@]}"); l=$(median "${l1[@]}")
r=$(median "${raw50[@]}"); t=$(median "${l250[@]}"); r9=$(median "${raw99[@]}"); t9=$(median "${l299[@]}")
echo "== medians of $ROUNDS rounds"
echo "cache read held in memory: memory-only $m ns/op, with the Redis tier $l ns/op, ratio $(ratio "$l" "$m")"
echo "read from Redis: plain GET p50 $r µs p99 $r9 µs, the tier's read p50 $t µs p99 $t9 µs, p50 ratio $(ratio "$t" "$r"), p99 ratio $(ratio "$t9" "$r9")"
echo "shared rate limit decisions: $(median "${dec[@]}")/s"
echo "flood on one key: $(median "${flood[@]}") checks/s, answered locally: $(median "${share[@]}")"

# Over HTTP: the same cached key read through keel without and with Redis.
write_bench_config "$WORK/memory.toml"
write_bench_config "$WORK/tiered.toml"
printf '[redis]\nurl = "%s"\n' "$URL" >> "$WORK/tiered.toml"
MEM_PORT=$(free_port); TIER_PORT=$(free_port)
KEEL_SERVER_WORKER_THREADS=1 "$KEEL" serve --config "$WORK/memory.toml" --listen "127.0.0.1:$MEM_PORT" --data-dir "$WORK/m" >/dev/null 2>&1 &
KEEL_SERVER_WORKER_THREADS=1 "$KEEL" serve --config "$WORK/tiered.toml" --listen "127.0.0.1:$TIER_PORT" --data-dir "$WORK/t" >/dev/null 2>&1 &
for port in $MEM_PORT $TIER_PORT; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs -X PUT -H "Authorization: Bearer $BENCH_TOKEN" --data-binary "$(head -c 100 /dev/zero | tr '\0' x)" \
    "http://127.0.0.1:$port/api/v1/cache/keys/bench?ttl=0" >/dev/null
done
sleep 1   # the tiered instance subscribes to invalidations
wrk_rps() { wrk -t1 -c50 -d"${DURATION:-10s}" -H "Authorization: Bearer $BENCH_TOKEN" "$1" | awk '/Requests\/sec/ {print $2}'; }
hm=(); ht=()
for i in $(seq "$ROUNDS"); do
  if [ $((i % 2)) -eq 1 ]; then
    hm+=("$(wrk_rps "http://127.0.0.1:$MEM_PORT/api/v1/cache/keys/bench")"); ht+=("$(wrk_rps "http://127.0.0.1:$TIER_PORT/api/v1/cache/keys/bench")")
  else
    ht+=("$(wrk_rps "http://127.0.0.1:$TIER_PORT/api/v1/cache/keys/bench")"); hm+=("$(wrk_rps "http://127.0.0.1:$MEM_PORT/api/v1/cache/keys/bench")")
  fi
  echo "HTTP round $i: memory-only ${hm[-1]} rps, with Redis ${ht[-1]} rps"
done
a=$(median "${hm[@]}"); b=$(median "${ht[@]}")
echo "HTTP cache hits held in memory: memory-only $a rps, with Redis $b rps, ratio $(ratio "$b" "$a")"
