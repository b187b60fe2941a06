#!/usr/bin/env bash
# `tenancy serve` at an earlier commit beside the working tree's, in one
# run: both release builds on SQLite, one tenant, runs alternating (before,
# after) on `GET /resolve`, `GET /api/notes?limit=10` and `GET /health`.
# Prints requests per second of each and the after/before ratio.
#
#   scripts/load-serve-compare.sh REV [seconds-per-run] [rounds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:?usage: scripts/load-serve-compare.sh REV [seconds] [rounds] [connections]}"
secs="${2:-5}"
rounds="${3:-3}"
conns="${4:-32}"
command -v wrk >/dev/null 2>&1 || { echo "ERROR: wrk is required: apt-get install wrk" >&2; exit 1; }
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  git worktree remove --force "$work/before" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
git worktree add --detach "$work/before" "$rev" >/dev/null 2>&1
# A target directory of its own: cargo names a workspace's crates by their
# path inside the workspace, so two checkouts sharing one directory would
# take each other's builds for fresh. Kept between runs.
(cd "$work/before" && CARGO_TARGET_DIR="$OLDPWD/target/compare-before" cargo build --release -p tenancy-cli >/dev/null 2>&1) ||
  { echo "ERROR: tenancy-cli does not build at $rev" >&2; exit 1; }
cp target/compare-before/release/tenancy "$work/before-bin"
cargo build --release -p tenancy-cli >/dev/null 2>&1
cp target/release/tenancy "$work/after-bin"
token=load-compare-admin-token-0123456789
start() { # binary dir -> base url
  mkdir -p "$2"
  (cd "$2" && {
    TENANCY__RATE_LIMIT__DEFAULT_RPS=10000000 "$1" serve --bind 127.0.0.1:0 --admin-token "$token" >out.log 2>err.log &
    echo $! >pid
  })
  pids+=("$(cat "$2/pid")")
  for _ in $(seq 1 100); do grep -q "listening on" "$2/out.log" 2>/dev/null && break; sleep 0.1; done
  local base; base="$(grep -o 'http://[0-9.:]*' "$2/out.log" | head -n1)"
  curl -s -o /dev/null -XPOST "$base/admin/tenants" -H "Authorization: Bearer $token" \
    -H 'content-type: application/json' -d '{"slug":"acme","name":"Acme"}'
  curl -s -o /dev/null -XPOST "$base/api/notes" -H 'X-Tenant-Id: acme' \
    -H 'content-type: application/json' -d '{"title":"hello","body":"world"}'
  echo "$base"
}
before="$(start "$work/before-bin" "$work/b")"
after="$(start "$work/after-bin" "$work/a")"
run() { wrk -t2 -c"$conns" -d"${secs}s" -H "X-Tenant-Id: acme" "$1" | awk '/Non-2xx/ {exit 1} /Requests\/sec/ {print $2}'; }
for route in "/resolve" "/api/notes?limit=10" "/health"; do
  run "$before$route" >/dev/null; run "$after$route" >/dev/null
  b=(); a=()
  for _ in $(seq 1 "$rounds"); do
    b+=("$(run "$before$route")"); a+=("$(run "$after$route")")
  done
  python3 - "$route" "${b[*]}" "${a[*]}" <<'EOF'
import statistics, sys
route, b, a = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
mb, ma = statistics.median(b), statistics.median(a)
print(f"{route:24} before {mb:10.0f} req/s  after {ma:10.0f} req/s  after/before {ma / mb:.3f}  (runs: {b} / {a})")
EOF
done
