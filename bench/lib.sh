# Helpers shared by the benchmark scripts; source it after `cd` to the repository root.

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The median of the arguments.
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# $1 / $2 with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
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
# What the BullMQ comparisons need: redis-server (from Debian if missing), the pinned bullmq
# (npm), and the release keel.
prepare_bullmq_comparison() {
  command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
  (cd bench/queue && npm install --no-audit --no-fund --silent)
  cargo build --release -q -p keel-server
}
