#!/usr/bin/env bash
# The tenant layer's hit-path cost, two ways, beside baselines measured in
# the same run (see crates/tenancy-axum/examples/layer_profile.rs):
#  - instructions per request under callgrind (deterministic: the same
#    binary gives the same count whatever else the machine does);
#  - wall time per request, the least of 5 alternating runs.
#
#   scripts/profile-layer.sh [requests-per-timed-run]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
cargo build --release -p tenancy-axum --example layer_profile >/dev/null 2>&1
bin=target/release/examples/layer_profile
modes=(noop noop_ext layer layer_ext)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if command -v valgrind >/dev/null 2>&1; then
  echo "instructions per request (callgrind, 11000 - 1000 requests):"
  for m in "${modes[@]}"; do
    for k in 1000 11000; do
      valgrind --tool=callgrind --toggle-collect='layer_profile::run_measured' \
        --callgrind-out-file="$work/cg.$m.$k" "$bin" "$m" "$k" 2>&1 >/dev/null |
        awk '/refs/ {gsub(",", "", $4); print $4}' >"$work/$m.$k"
    done
    printf '  %-10s %6d\n' "$m" $(( ($(cat "$work/$m.11000") - $(cat "$work/$m.1000")) / 10000 ))
  done
else
  echo "(valgrind not installed: no instruction counts)"
fi
echo "ns per request (least of 5 alternating runs of $n):"
for _ in 1 2 3 4 5; do
  for m in "${modes[@]}"; do echo "$m $("$bin" "$m" "$n")"; done
done | awk '{if (!($1 in best) || $2 < best[$1]) best[$1] = $2} END {
  for (m in best) printf "  %-10s %6d\n", m, best[m]
  printf "  layer cost: %d ns (layer - noop), %d ns with extractors (layer_ext - noop_ext)\n",
    best["layer"] - best["noop"], best["layer_ext"] - best["noop_ext"]
}'
