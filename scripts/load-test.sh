#!/usr/bin/env bash
# Load test of the tenant layer (SPEC: speed is measured, not asserted).
#
# 1. The layer's cost under wrk: `example-load-bench` serves one trivial
#    handler twice in one process, /bare/hello without the layer and
#    /api/hello behind it (stacked as `tenancy serve` stacks it: header
#    resolver, validator cache, rate limits, metrics, Tenant extractor).
#    Runs alternate, and the ratio of the means is printed.
# 2. `tenancy serve` itself (embedded SQLite): GET /api/notes and the
#    gateway's GET /resolve, for absolute figures.
#
#   scripts/load-test.sh [seconds-per-run] [connections] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
conns="${2:-32}"
rounds="${3:-3}"
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing wrk (Debian package)"
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
  else
    echo "ERROR: wrk is required: apt-get install wrk" >&2
    exit 1
  fi
fi
cargo build --release -p tenancy-cli -p example-load-bench >/dev/null
bin="$PWD/target/release"
work="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
wait_for() { # file -> base url
  for _ in $(seq 1 100); do grep -q "listening on" "$1" 2>/dev/null && break; sleep 0.1; done
  grep -o 'http://[0-9.:]*' "$1" | head -n1
}
run() { # url header -> "rps p99_ms"
  wrk -t2 -c"$conns" -d"${secs}s" --latency -H "$2" "$1" | awk '
    /Non-2xx/ {print "ERROR: " $0 > "/dev/stderr"; bad=1}
    /Requests\/sec/ {rps=$2}
    /^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p99=v}
    END {if (bad) exit 1; printf "%s %s\n", rps, p99}'
}
avg() { printf '%s\n' "$@" | awk '{r+=$1; p+=$2; n++} END {printf "%.0f %.2f", r/n, p/n}'; }

BIND=127.0.0.1:0 "$bin/example-load-bench" >"$work/bench.out" 2>&1 &
pids+=($!)
base="$(wait_for "$work/bench.out")"
[ -n "$base" ] || { cat "$work/bench.out"; exit 1; }
echo "==> warm-up"
run "$base/api/hello" "X-Tenant-Id: acme" >/dev/null
run "$base/bare/hello" "X-Tenant-Id: acme" >/dev/null
declare -a with without
for _ in $(seq 1 "$rounds"); do
  without+=("$(run "$base/bare/hello" "X-Tenant-Id: acme")")
  with+=("$(run "$base/api/hello" "X-Tenant-Id: acme")")
done
read -r wr wp <<<"$(avg "${with[@]}")"
read -r br bp <<<"$(avg "${without[@]}")"
echo "trivial handler, ${conns} connections, ${rounds} x ${secs}s each, alternating:"
printf '  without layer (/bare/hello): %8s req/s  p99 %6s ms\n' "$br" "$bp"
printf '  with layer    (/api/hello):  %8s req/s  p99 %6s ms\n' "$wr" "$wp"
awk -v w="$wr" -v b="$br" 'BEGIN {printf "  throughput ratio with/without: %.3f (layer costs %.1f%%)\n", w/b, (1-w/b)*100}'

token="load-test-admin-token-$$"
(cd "$work" && exec env TENANCY_LOG=error TENANCY__RATE_LIMIT__DEFAULT_RPS=1000000000 "$bin/tenancy" serve --bind 127.0.0.1:0 --admin-token "$token" >"$work/serve.out" 2>&1) &
pids+=($!)
base="$(wait_for "$work/serve.out")"
[ -n "$base" ] || { cat "$work/serve.out"; exit 1; }
curl -sf -XPOST "$base/admin/tenants" -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"slug":"acme","name":"Acme"}' >/dev/null
for i in $(seq 1 20); do
  curl -sf -XPOST "$base/api/notes" -H 'X-Tenant-Id: acme' -H 'content-type: application/json' \
    -d "{\"title\":\"note $i\",\"body\":\"body $i\"}" >/dev/null
done
run "$base/api/notes?limit=10" "X-Tenant-Id: acme" >/dev/null
read -r nr np <<<"$(run "$base/api/notes?limit=10" "X-Tenant-Id: acme")"
read -r rr rp <<<"$(run "$base/resolve" "X-Tenant-Id: acme")"
echo "tenancy serve (embedded SQLite), ${conns} connections, ${secs}s each:"
printf '  GET /api/notes?limit=10:     %8s req/s  p99 %6s ms\n' "$nr" "$np"
printf '  GET /resolve (gateway):      %8s req/s  p99 %6s ms\n' "$rr" "$rp"
