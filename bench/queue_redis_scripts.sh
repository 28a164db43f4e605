#!/usr/bin/env bash
# Redis's time per job in each Lua script of the Redis job store (lease, complete, prune), by
# SLOWLOG, driving the scripts straight from bench/queue/scripts.mjs as keel's HTTP pull path
# uses them. The figures behind the script-level steps in docs/benchmarks.md.
#
# Usage: bench/queue_redis_scripts.sh [rounds] [jobs]     (defaults 3, 50000)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-3}
JOBS=${2:-50000}
command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
(cd bench/queue && npm install --no-audit --no-fund --silent)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
REDIS_PORT=$(free_port)
start_redis "$REDIS_PORT"
export REDIS_PORT
for _ in $(seq "$ROUNDS"); do node bench/queue/scripts.mjs "$JOBS"; done
