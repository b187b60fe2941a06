#!/usr/bin/env bash
# Load test of `tenancy serve` (SPEC: speed is measured, not asserted).
#
# Measures GET /api/notes for one tenant through the full tenancy layer
# (resolve + validate + scope) against the same list handler in the same
# binary without the layer (/_baseline/api/notes, enabled only by the hidden
# --load-test-baseline flag), alternating runs, and prints the ratio.
#
#   scripts/load-test.sh [seconds-per-run] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
conns="${2:-32}"
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing wrk (Debian package)"
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
  else
    echo "ERROR: wrk is required: apt-get install wrk" >&2
    exit 1
  fi
fi
cargo build --release -p tenancy-cli >/dev/null
bin="$PWD/target/release/tenancy"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
token="load-test-admin-token-$$"
# The rate limiter stays in the path, with a limit the load cannot reach.
(cd "$work" && TENANCY_LOG=error TENANCY__RATE_LIMIT__DEFAULT_RPS=1000000000 "$bin" serve --bind 127.0.0.1:0 --admin-token "$token" --load-test-baseline >"$work/out" 2>&1) &
pid=$!
for _ in $(seq 1 50); do grep -q "listening on" "$work/out" 2>/dev/null && break; sleep 0.1; done
base="$(grep -o 'http://[0-9.:]*' "$work/out" | head -n1)"
[ -n "$base" ] || { cat "$work/out"; exit 1; }
id="$(curl -sf -XPOST "$base/admin/tenants" -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"slug":"acme","name":"Acme"}' | sed -E 's/.*"id":"([^"]+)".*/\1/')"
for i in $(seq 1 20); do
  curl -sf -XPOST "$base/api/notes" -H 'X-Tenant-Id: acme' -H 'content-type: application/json' \
    -d "{\"title\":\"note $i\",\"body\":\"body $i\"}" >/dev/null
done
run() { # url header -> "rps p99_ms"
  wrk -t2 -c"$conns" -d"${secs}s" --latency -H "$2" "$1" | awk '
    /Non-2xx/ {print "ERROR: " $0 > "/dev/stderr"; bad=1}
    /Requests\/sec/ {rps=$2}
    /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p99=v}
    END {if (bad) exit 1; printf "%s %s\n", rps, p99}'
}
echo "==> warm-up"
run "$base/api/notes?limit=10" "X-Tenant-Id: acme" >/dev/null
declare -a with without
for round in 1 2; do
  without+=("$(run "$base/_baseline/api/notes?limit=10" "X-Tenant-Id: $id")")
  with+=("$(run "$base/api/notes?limit=10" "X-Tenant-Id: acme")")
done
avg() { printf '%s\n' "$@" | awk -v c="$1" '{r+=$1; p+=$2; n++} END {printf "%.0f %.2f", r/n, p/n}'; }
read -r wr wp <<<"$(avg "${with[@]}")"
read -r br bp <<<"$(avg "${without[@]}")"
echo "GET /api/notes?limit=10, ${conns} connections, 2 x ${secs}s each, alternating:"
printf '  without layer: %8s req/s  p99 %6s ms\n' "$br" "$bp"
printf '  with layer:    %8s req/s  p99 %6s ms\n' "$wr" "$wp"
awk -v w="$wr" -v b="$br" 'BEGIN {printf "  throughput ratio with/without: %.3f (layer costs %.1f%%)\n", w/b, (1-w/b)*100}'
