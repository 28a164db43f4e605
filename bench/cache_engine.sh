#!/usr/bin/env bash
# The cache engine's overhead over raw moka (same capacity, byte weigher, per-entry expiry) for
# get and set, on 1 and 2 threads: wall-clock medians of runs in which both engines take turns
# in one process (so machine drift hits both alike), plus instructions per operation from
# callgrind and data misses past a simulated L2 from cachegrind, which machine noise does not
# move.
#
# Usage: bench/cache_engine.sh [rounds]     (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-5}
OPS=${OPS:-2000000}
cargo bench -q -p keel-cache --bench overhead --no-run 2>/dev/null
BIN=$(ls -t target/release/deps/overhead-* | grep -v '\.d$' | head -n 1)

echo "== wall clock, ns/op: median of $ROUNDS runs of $OPS ops each, both engines in one process taking turns"
for op in get set; do
  for threads in 1 2; do
    k=(); m=(); r=()
    for _ in $(seq "$ROUNDS"); do
      read -r mm kk <<<"$("$BIN" pair "$op" "$OPS" "$threads" | awk '{print $5, $8}')"
      m+=("$mm"); k+=("$kk"); r+=("$(ratio "$kk" "$mm")")
    done
    printf '%s %dt: moka %s ns/op, keel %s ns/op, keel/moka = %s (runs: %s)\n' "$op" "$threads" \
      "$(median "${m[@]}")" "$(median "${k[@]}")" "$(median "${r[@]}")" "${r[*]}"
  done
done

echo "== what moka's eviction listener alone costs a read (raw moka with a no-op listener)"
l=(); m=()
for _ in $(seq "$ROUNDS"); do
  m+=("$("$BIN" moka get "$OPS" 1 | awk '{print $(NF-1)}')")
  l+=("$("$BIN" moka-listener get "$OPS" 1 | awk '{print $(NF-1)}')")
done
ml=$(median "${l[@]}"); mm=$(median "${m[@]}")
printf 'get 1t: moka %s ns/op, moka with listener %s ns/op, ratio %s\n' "$mm" "$ml" "$(ratio "$ml" "$mm")"

if command -v valgrind >/dev/null 2>&1; then
  echo "== instructions per op (callgrind, 1 thread, 200000 ops minus setup)"
  ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$@" 2>&1 | awk '/Collected/ {print $4}'; }
  for op in get set; do
    base_m=$(ir moka "$op" 0); base_k=$(ir keel "$op" 0)
    run_m=$(ir moka "$op" 200000); run_k=$(ir keel "$op" 200000)
    im=$(( (run_m - base_m) / 200000 )); ik=$(( (run_k - base_k) / 200000 ))
    printf '%s: moka %d instr/op, keel %d instr/op, keel/moka = %s\n' "$op" "$im" "$ik" "$(ratio "$ik" "$im")"
  done
  # Misses of a simulated 1 MiB L2 (cachegrind's last level set to this machine kind's L2):
  # what a write adds in memory traffic, which the wall-clock ratio weighs by how slow memory
  # is at the time.
  echo "== data misses per op past a simulated 1 MiB, 16-way L2 (cachegrind, 1 thread, 400000 ops minus setup)"
  misses() { valgrind --tool=cachegrind --cache-sim=yes --LL=1048576,16,64 --cachegrind-out-file=/dev/null "$BIN" "$@" 2>&1 | awk '/LLd misses/ {gsub(",", "", $4); print $4}'; }
  for op in get set; do
    base_m=$(misses moka "$op" 0); base_k=$(misses keel "$op" 0)
    run_m=$(misses moka "$op" 400000); run_k=$(misses keel "$op" 400000)
    mm=$(awk -v a="$run_m" -v b="$base_m" 'BEGIN {printf "%.1f", (a - b) / 400000}')
    mk=$(awk -v a="$run_k" -v b="$base_k" 'BEGIN {printf "%.1f", (a - b) / 400000}')
    printf '%s: moka %s misses/op, keel %s misses/op, keel/moka = %s\n' "$op" "$mm" "$mk" "$(ratio "$mk" "$mm")"
  done
fi
