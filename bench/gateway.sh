#!/usr/bin/env bash
# The gateway side by side with nginx (Debian's package, one worker, sendfile, upstream
# keepalive) in front of the same upstream (a second nginx serving a 14 KB JSON file), keel with
# one worker thread, wrk on loopback, alternating rounds:
#   cached     keel route cache vs nginx proxy_cache              → rps ratio, p99, CPU µs/request
#   pass       keel without cache vs nginx proxy_pass             → rps ratio, p99, CPU µs/request
#   ratelimit  keel cache hits with a rate limit never reached vs without → rps ratio
#   gzip       keel cache hits compressed (gzip) vs identity hits         → rps ratio
#              (nginx proxy_cache + gzip level 1, compressing every hit, alongside for reference)
#   instructions  user-space instructions per request (cache hit, pass-through) of each proxy, and
#              of keel's cache hits under a rate limit never reached, run under callgrind (when
#              valgrind is installed): a figure machine noise does not move, where the CPU per
#              request above moves 10–20 % between runs
#
# Usage: bench/gateway.sh [rounds]     (default 5; DURATION=10s CONNECTIONS=50;
#        SCENARIOS="cached pass ratelimit gzip instructions" to run some of them; KEEL_MALLOC_CONF="…" to
#        start keel with that jemalloc configuration, e.g. "tcache_max:131072")
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-5}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
SCENARIOS=${SCENARIOS:-cached pass ratelimit gzip instructions}
wanted() { [[ " $SCENARIOS " == *" $1 "* ]]; }

prepare_nginx_comparison

# The upstream: 14 KB of JSON under /cached/ and /pass/.
UP_PORT=$(free_port)
mkdir -p "$WORK/www/cached" "$WORK/www/pass" "$WORK/www/limited" "$WORK/www/gz" "$WORK/ngcache"
python3 - "$WORK/www/cached/data.json" <<'PY'
import json, sys
items = [{"id": i, "name": f"habit number {i}", "done": i % 3 == 0, "streak": i * 7 % 31,
          "tags": ["health", "daily"]} for i in range(150)]
text = json.dumps({"habits": items})
while len(text) < 14 * 1024:
    items.append(dict(items[-1], id=len(items)))
    text = json.dumps({"habits": items})
open(sys.argv[1], "w").write(text)
PY
for d in pass limited gz; do cp "$WORK/www/cached/data.json" "$WORK/www/$d/data.json"; done
BYTES=$(stat -c %s "$WORK/www/cached/data.json")
start_nginx "$WORK/up" <<CONF
  default_type application/json;
  server { listen 127.0.0.1:$UP_PORT; root $WORK/www; }
CONF

# nginx as the proxy: one worker, upstream keepalive, proxy_cache on /cached/. The part of its
# http block listening on $1 with its cache under $2 (the callgrind run below reuses it).
proxy_conf() {
  cat <<CONF
  sendfile on;
  tcp_nopush on;
  proxy_cache_path $2 levels=1:2 keys_zone=bench:10m max_size=100m inactive=60m use_temp_path=off;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$1;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location /cached/ { proxy_pass http://app; proxy_cache bench; proxy_cache_valid 200 1h; }
    location /pass/ { proxy_pass http://app; }
    location /gz/ {
      proxy_pass http://app; proxy_cache bench; proxy_cache_valid 200 1h;
      gzip on; gzip_types application/json; gzip_comp_level 1;
    }
  }
CONF
}
NG_PORT=$(free_port)
start_nginx "$WORK/ng" < <(proxy_conf "$NG_PORT" "$WORK/ngcache")

# keel as the proxy: one worker thread, the same two routes.
KEEL_PORT=$(free_port); API_PORT=$(free_port)
write_bench_config "$WORK/keel.toml"
cat >> "$WORK/keel.toml" <<CONF

[gateway]
upstream = "http://127.0.0.1:$UP_PORT"

[[gateway.routes]]
prefix = "/cached/"
cache = { ttl = "1h" }

[[gateway.routes]]
prefix = "/pass/"
cache = { enabled = false }

[[gateway.routes]]
prefix = "/limited/"
cache = { ttl = "1h" }
rate_limit = { rate = 1000000000, per = "1s", key = "ip" }
CONF
_RJEM_MALLOC_CONF=${KEEL_MALLOC_CONF:-} KEEL_SERVER_WORKER_THREADS=1 "$KEEL" serve --config "$WORK/keel.toml" --listen "127.0.0.1:$API_PORT" \
  --gateway-listen "127.0.0.1:$KEEL_PORT" --data-dir "$WORK/keel" >/dev/null 2>&1 &
KEEL_PID=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$KEEL_PORT/cached/data.json" >/dev/null 2>&1 \
    && curl -fs "http://127.0.0.1:$NG_PORT/cached/data.json" >/dev/null 2>&1 && break
  sleep 0.1
done
# nginx's master, worker and cache manager (not the cache loader, which leaves after a minute).
NG_PIDS="$(cat "$WORK/ng/nginx.pid") $(pgrep -P "$(cat "$WORK/ng/nginx.pid")" -f 'worker process|cache manager' | tr '\n' ' ')"
curl -fsI "http://127.0.0.1:$KEEL_PORT/cached/data.json" | grep -qi '^x-cache: HIT' \
  || { echo "keel is not answering /cached/ from its cache" >&2; exit 1; }

# CPU time (user + system) of processes, in clock ticks.
ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s}'; }
HZ=$(getconf CLK_TCK)
# One wrk run against $1 for the processes $2…: prints "rps p99_ms cpu_us_per_request".
# ACCEPT, when set, is sent as Accept-Encoding.
measure() {
  local url=$1; shift
  local before after out
  local header=()
  [ -n "${ACCEPT:-}" ] && header=(-H "Accept-Encoding: $ACCEPT")
  before=$(ticks "$@")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${header[@]}" "$url")
  after=$(ticks "$@")
  echo "$out" | awk -v b="$before" -v a="$after" -v hz="$HZ" '
    /Requests\/sec/ {rps = $2}
    / 99%/ {v = $2; if (v ~ /us$/) {sub(/us/, "", v); v /= 1000} else if (v ~ /ms$/) {sub(/ms/, "", v)} else if (v ~ /s$/) {sub(/s/, "", v); v *= 1000}; p99 = v}
    /requests in/ {n = $1}
    END {printf "%s %.3f %.1f\n", rps, p99, (a - b) * 1e6 / hz / n}'
}

echo "== $BYTES-byte JSON, wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS alternating rounds"
for scenario in cached pass; do
  wanted "$scenario" || continue
  k_rps=(); n_rps=(); k_p99=(); n_p99=(); k_cpu=(); n_cpu=()
  for i in $(seq "$ROUNDS"); do
    read -r r p c <<<"$(measure "http://127.0.0.1:$NG_PORT/$scenario/data.json" $NG_PIDS)"
    n_rps+=("$r"); n_p99+=("$p"); n_cpu+=("$c")
    read -r r p c <<<"$(measure "http://127.0.0.1:$KEEL_PORT/$scenario/data.json" "$KEEL_PID")"
    k_rps+=("$r"); k_p99+=("$p"); k_cpu+=("$c")
    printf '%s round %d: nginx %s rps p99 %s ms %s µs/req | keel %s rps p99 %s ms %s µs/req\n' \
      "$scenario" "$i" "${n_rps[-1]}" "${n_p99[-1]}" "${n_cpu[-1]}" "${k_rps[-1]}" "${k_p99[-1]}" "${k_cpu[-1]}"
  done
  nr=$(median "${n_rps[@]}"); kr=$(median "${k_rps[@]}")
  printf '%s median: nginx %s rps, p99 %s ms, %s µs CPU/req | keel %s rps, p99 %s ms, %s µs CPU/req | keel/nginx rps %s\n' \
    "$scenario" "$nr" "$(median "${n_p99[@]}")" "$(median "${n_cpu[@]}")" \
    "$kr" "$(median "${k_p99[@]}")" "$(median "${k_cpu[@]}")" "$(ratio "$kr" "$nr")"
done

echo "== keel against itself: what a rate limit (never reached) and gzip cost on cache hits"
for scenario in ratelimit gzip; do
  wanted "$scenario" || continue
  base=(); with=(); base_cpu=(); with_cpu=(); ng=()
  for i in $(seq "$ROUNDS"); do
    plain() {
      read -r r _ c <<<"$(measure "http://127.0.0.1:$KEEL_PORT/cached/data.json" "$KEEL_PID")"
      base+=("$r"); base_cpu+=("$c")
    }
    # Which goes first alternates between rounds, so drift in the machine favours neither.
    [ $((i % 2)) -eq 1 ] && plain
    if [ "$scenario" = ratelimit ]; then
      read -r r _ c <<<"$(measure "http://127.0.0.1:$KEEL_PORT/limited/data.json" "$KEEL_PID")"
    else
      read -r r _ c <<<"$(ACCEPT=gzip measure "http://127.0.0.1:$KEEL_PORT/cached/data.json" "$KEEL_PID")"
      read -r n _ _ <<<"$(ACCEPT=gzip measure "http://127.0.0.1:$NG_PORT/gz/data.json" $NG_PIDS)"
      ng+=("$n")
    fi
    with+=("$r"); with_cpu+=("$c")
    [ $((i % 2)) -eq 0 ] && plain
    printf '%s round %d: keel plain hits %s rps %s µs/req, with %s %s rps %s µs/req%s\n' "$scenario" "$i" \
      "${base[-1]}" "${base_cpu[-1]}" "$scenario" "${with[-1]}" "${with_cpu[-1]}" \
      "$([ "$scenario" = gzip ] && printf ' (nginx gzip hits %s rps)' "${ng[-1]}")"
  done
  b=$(median "${base[@]}"); w=$(median "${with[@]}")
  printf '%s median: keel plain hits %s rps %s µs/req, with %s %s rps %s µs/req, rps ratio %s%s\n' "$scenario" \
    "$b" "$(median "${base_cpu[@]}")" "$scenario" "$w" "$(median "${with_cpu[@]}")" "$(ratio "$w" "$b")" \
    "$([ "$scenario" = gzip ] && printf ' (nginx gzip hits %s rps)' "$(median "${ng[@]}")")"
done

if wanted instructions && command -v valgrind >/dev/null 2>&1; then
  echo "== user-space instructions per request (callgrind; ${CALLGRIND_DURATION:=5s} of wrk -t1 -c$CONNECTIONS after a warm-up)"
  # Runs "$@" under callgrind as $1, loads it at URL $URL, and prints instructions per request
  # of the measured stretch (the counters are zeroed after the warm-up).
  instructions() {
    local name=$1; shift
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.cg" "$@" >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 300); do curl -fs "$URL" >/dev/null 2>&1 && break; sleep 0.2; done
    wrk -t1 -c"$CONNECTIONS" -d2s "$URL" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    local n
    n=$(wrk -t1 -c"$CONNECTIONS" -d"$CALLGRIND_DURATION" "$URL" | awk '/requests in/ {print $1}')
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    awk -v n="$n" -v name="$name" '/^(summary|totals):/ {printf "%s: %.0f instructions per request (%d requests)\n", name, $2 / n, n; exit}' "$WORK/$name.cg.1"
    rm -f "$WORK/$name.cg"*
  }
  PORT=$(free_port)
  mkdir -p "$WORK/ngcg/cache"
  # The same proxy in one process (callgrind follows one), without its own master.
  { printf 'master_process off; daemon off; worker_processes 1; pid %s/ngcg/nginx.pid;\n' "$WORK"
    printf 'error_log stderr warn; user root;\nevents { worker_connections 4096; }\n'
    printf 'http {\n  access_log off;\n  keepalive_requests 1000000;\n'
    proxy_conf "$PORT" "$WORK/ngcg/cache"
    printf '}\n'; } > "$WORK/ngcg/nginx.conf"
  KPORT=$(free_port); API=$(free_port)
  for scenario in cached pass; do
    URL="http://127.0.0.1:$PORT/$scenario/data.json" instructions "nginx $scenario" \
      nginx -c "$WORK/ngcg/nginx.conf" -p "$WORK/ngcg"
    URL="http://127.0.0.1:$KPORT/$scenario/data.json" KEEL_SERVER_WORKER_THREADS=1 instructions "keel $scenario" \
      "$KEEL" serve --config "$WORK/keel.toml" --listen "127.0.0.1:$API" \
      --gateway-listen "127.0.0.1:$KPORT" --data-dir "$WORK/keel-callgrind"
  done
  # keel's cache hits under a rate limit never reached: the limiter's own cost per request.
  URL="http://127.0.0.1:$KPORT/limited/data.json" KEEL_SERVER_WORKER_THREADS=1 instructions "keel limited" \
    "$KEEL" serve --config "$WORK/keel.toml" --listen "127.0.0.1:$API" \
    --gateway-listen "127.0.0.1:$KPORT" --data-dir "$WORK/keel-callgrind"
fi
