#!/usr/bin/env bash
# The cache engine's overhead over raw moka (same capacity, byte weigher, per-entry expiry) for
# get and set, on 1 and 2 threads: wall-clock medians of runs in which both engines take turns
# in one process (so machine drift hits both alike), plus instructions per operation from
# callgrind and data misses past a simulated L2 from cachegrind, which machine noise does not
# move. Each on the system allocator (an application using the engine as a library) and on
# jemalloc (keel's binary).
#
# Usage: bench/cache_engine.sh [rounds]     (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${1:-5}
OPS=${OPS:-2000000}
cargo bench -q -p keel-cache --bench overhead --bench overhead_jemalloc --no-run 2>/dev/null
newest() { ls -t target/release/deps/"$1"-* | grep -v '\.d$' | head -n 1; }
declare -A BINS=([system]=$(newest overhead) [jemalloc]=$(newest overhead_jemalloc))

for allocator in system jemalloc; do
  BIN=${BINS[$allocator]}
  echo "== $allocator allocator: wall clock, ns/op, median of $ROUNDS runs of $OPS ops each, both engines in one process taking turns"
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
done

BIN=${BINS[system]}
echo "== what moka's eviction listener alone costs a read (raw moka with a no-op listener)"
l=(); m=()
for _ in $(seq "$ROUNDS"); do
  m+=("$("$BIN" moka get "$OPS" 1 | awk '{print $(NF-1)}')")
  l+=("$("$BIN" moka-listener get "$OPS" 1 | awk '{print $(NF-1)}')")
done
ml=$(median "${l[@]}"); mm=$(median "${m[@]}")
printf 'get 1t: moka %s ns/op, moka with listener %s ns/op, ratio %s\n' "$mm" "$ml" "$(ratio "$ml" "$mm")"

if command -v valgrind >/dev/null 2>&1; then
  # Instructions (callgrind), and data misses past a simulated 1 MiB, 16-way L2 (cachegrind's
  # last level set to this machine kind's L2): what a write adds in memory traffic, which the
  # wall-clock ratio weighs by how slow memory is at the time. 1 thread, N ops minus setup.
  N=400000
  ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 | awk '/Collected/ {print $4}'; }
  misses() { valgrind --tool=cachegrind --cache-sim=yes --LL=1048576,16,64 --cachegrind-out-file=/dev/null "$@" 2>&1 | awk '/LLd misses/ {gsub(",", "", $4); print $4}'; }
  per_op() { awk -v a="$1" -v b="$2" -v n="$N" 'BEGIN {printf "%.1f", (a - b) / n}'; }
  for allocator in system jemalloc; do
    BIN=${BINS[$allocator]}
    echo "== $allocator allocator: instructions and simulated-L2 data misses per op (1 thread, $N ops minus setup)"
    for op in get set; do
      im=$(per_op "$(ir "$BIN" moka "$op" "$N")" "$(ir "$BIN" moka "$op" 0)")
      ik=$(per_op "$(ir "$BIN" keel "$op" "$N")" "$(ir "$BIN" keel "$op" 0)")
      mm=$(per_op "$(misses "$BIN" moka "$op" "$N")" "$(misses "$BIN" moka "$op" 0)")
      mk=$(per_op "$(misses "$BIN" keel "$op" "$N")" "$(misses "$BIN" keel "$op" 0)")
      printf '%s: instructions moka %s, keel %s (%s); misses moka %s, keel %s (%s)\n' "$op" \
        "$im" "$ik" "$(ratio "$ik" "$im")" "$mm" "$mk" "$(ratio "$mk" "$mm")"
    done
  done
fi
