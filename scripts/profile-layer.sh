#!/usr/bin/env bash
# The tenant layer's hit-path cost, two ways, beside baselines measured in
# the same run (see crates/tenancy-axum/examples/layer_profile.rs):
#  - instructions per request under callgrind (deterministic: the same
#    binary gives the same count whatever else the machine does);
#  - wall time: the median difference over interleaved batches (base,
#    with, base, with, ...), in three runs of the harness.
#
# Baselines: `noop` is the same route under a layer that does nothing
# (what axum's `Router::layer` costs by itself); `bare` is the route with
# no layer at all, against `wrapped`, the tenant layer around the whole
# router. `_ext` modes add an extractor (`Method` for the baselines,
# `Tenant` with the layer). `plain` -> `plain_layer` leaves axum out: a
# tower service that extracts `Method` against the tenant layer around
# one that extracts `Tenant`, called in place (the layer's own cost, with
# none of the router's work to overlap with).
#
#   scripts/profile-layer.sh [--one-header]
#
# `--one-header` sends only the tenant header (as the criterion bench
# does) instead of a realistic set of seven.
set -euo pipefail
cd "$(dirname "$0")/.."
headers=()
[[ "${1:-}" == "--one-header" ]] && headers=(--one-header)
cargo build --release -p tenancy-axum --example layer_profile >/dev/null 2>&1
bin=target/release/examples/layer_profile
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
count() { # mode -> instructions per request (11000 - 1000 requests)
  local m="$1" k
  for k in 1000 11000; do
    valgrind --tool=callgrind --toggle-collect='layer_profile::run_measured' \
      --callgrind-out-file="$work/cg.$m.$k" "$bin" "$m" "$k" "${headers[@]}" 2>&1 >/dev/null |
      awk '/refs/ {gsub(",", "", $4); print $4}' >"$work/$m.$k"
  done
  echo $(( ($(cat "$work/$m.11000") - $(cat "$work/$m.1000")) / 10000 ))
}
if command -v valgrind >/dev/null 2>&1; then
  echo "instructions per request (callgrind):"
  for pair in "noop layer" "noop_ext layer_ext" "bare wrapped" "plain plain_layer"; do
    set -- $pair
    base=$(count "$1"); with=$(count "$2")
    printf '  %-12s %6d   %-12s %6d   layer cost %+d\n' "$1" "$base" "$2" "$with" $((with - base))
  done
else
  echo "(valgrind not installed: no instruction counts)"
fi
echo "wall time, interleaved batches (3 runs each, pinned to one CPU when taskset exists):"
pin=()
command -v taskset >/dev/null 2>&1 && pin=(taskset -c "$(( $(nproc) - 1 ))")
for pair in "noop layer" "noop_ext layer_ext" "bare wrapped" "plain plain_layer"; do
  set -- $pair
  for _ in 1 2 3; do
    printf '  %-10s -> %-12s ' "$1" "$2"
    "${pin[@]}" "$bin" ab "$1" "$2" 200 "${headers[@]}"
  done
done
