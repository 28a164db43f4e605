#!/usr/bin/env bash
# Foundation benchmarks: idle RSS, start-to-ready time, and GET /alive throughput side by side
# with nginx serving a static 1-byte file (one worker each, wrk -t1 -c50 -d10s, same run).
#
# Usage: bench/foundation.sh [rounds]     (default 5 rounds; prints medians and the ratio)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-5}
DURATION=${DURATION:-10s}

prepare_nginx_comparison


echo "== idle RSS and start-to-ready ($ROUNDS runs)"
python3 bench/startup_rss.py "$KEEL" "$WORK" "$ROUNDS"

echo "== GET /alive throughput vs nginx static 1-byte file (wrk -t1 -c50 -d$DURATION, $ROUNDS rounds)"
NGINX_PORT=$(free_port)
mkdir -p "$WORK/www"
printf 'x' > "$WORK/www/one"
start_nginx "$WORK/nginx" <<CONF
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/www;
  }
CONF
KEEL_PORT=$(free_port)
KEEL_SERVER_WORKER_THREADS=1 "$KEEL" serve --listen "127.0.0.1:$KEEL_PORT" --data-dir "$WORK/keel" >/dev/null 2>&1 &
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$KEEL_PORT/ready" >/dev/null 2>&1 && curl -fs "http://127.0.0.1:$NGINX_PORT/one" >/dev/null 2>&1 && break
  sleep 0.1
done

rps() { wrk -t1 -c50 -d"$DURATION" --latency "$1" | awk '/Requests\/sec/ {print $2}'; }
keel_runs=(); nginx_runs=()
for i in $(seq "$ROUNDS"); do
  n=$(rps "http://127.0.0.1:$NGINX_PORT/one"); k=$(rps "http://127.0.0.1:$KEEL_PORT/alive")
  nginx_runs+=("$n"); keel_runs+=("$k")
  printf 'round %d: nginx %s rps, keel %s rps, ratio %s\n' "$i" "$n" "$k" "$(ratio "$k" "$n")"
done
mk=$(median "${keel_runs[@]}"); mn=$(median "${nginx_runs[@]}")
printf 'median: nginx %.0f rps, keel %.0f rps, keel/nginx = %s (target >= 0.80)\n' "$mn" "$mk" "$(ratio "$mk" "$mn")"
