# Helpers shared by the benchmark scripts; source it after `cd` to the repository root.

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The median of the arguments.
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# $1 / $2 with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# CPU seconds process $1 has used so far (user + system).
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
# Starts a throwaway redis-server on port $1 (no persistence) and waits until it answers.
start_redis() {
  redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
  for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis-server did not start on port $1" >&2; return 1
}
# The admin token the benchmarks use, and a keel config at $1 that accepts it.
BENCH_TOKEN=bench-token-0123456789abcdef
write_bench_config() {
  printf '[[auth.tokens]]\nname = "bench"\ntoken = "%s"\nrole = "admin"\n' "$BENCH_TOKEN" > "$1"
}
# Starts the release keel ($KEEL) for the queue comparisons in the background, with
# $WORK/keel.toml, a fresh data directory and one request-serving thread (Redis serves on one);
# sets KEEL_PID and exports KEEL_URL once it is ready.
start_keel() {
  rm -rf "$WORK/data"
  KEEL_PORT=$(free_port)
  KEEL_SERVER_WORKER_THREADS=1 "$KEEL" serve --config "$WORK/keel.toml" --listen "127.0.0.1:$KEEL_PORT" --data-dir "$WORK/data" >/dev/null 2>&1 &
  KEEL_PID=$!
  export KEEL_URL="http://127.0.0.1:$KEEL_PORT"
  for _ in $(seq 100); do curl -fs "$KEEL_URL/ready" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "keel did not start"; exit 1
}
# What the BullMQ comparisons need: redis-server (from Debian if missing), the pinned bullmq
# (npm), and the release keel.
prepare_bullmq_comparison() {
  command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
  (cd bench/queue && npm install --no-audit --no-fund --silent)
  cargo build --release -q -p keel-server
}
# What the nginx comparisons need: nginx and wrk (from Debian if missing) and the release keel;
# sets KEEL, and WORK (a temporary directory removed, with every background job, on exit).
prepare_nginx_comparison() {
  command -v nginx >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq nginx-light wrk >/dev/null; }
  cargo build --release -q -p keel-server
  KEEL=$PWD/target/release/keel
  WORK=$(mktemp -d)
  trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
}
# Starts an nginx with one worker in the foreground of a background job, from directory $1, with
# the body of its `http` block on stdin (access log off and unlimited keep-alive come with it).
start_nginx() {
  local dir=$1
  mkdir -p "$dir"
  { printf 'worker_processes 1;\ndaemon off;\npid %s/nginx.pid;\nerror_log stderr warn;\nuser root;\n' "$dir"
    printf 'events { worker_connections 4096; }\nhttp {\n  access_log off;\n  keepalive_requests 1000000;\n'
    cat
    printf '}\n'; } > "$dir/nginx.conf"
  nginx -c "$dir/nginx.conf" -p "$dir" &
}
