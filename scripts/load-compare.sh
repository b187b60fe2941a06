#!/usr/bin/env bash
# The layer's wrk ratio at an earlier commit beside the working tree's, in
# one run: `example-load-bench` of both, each serving a trivial handler
# without (/bare/hello) and behind (/api/hello) the tenant layer; runs
# alternate (before bare, before layer, after bare, after layer).
#
#   scripts/load-compare.sh REV [seconds-per-run] [rounds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:?usage: scripts/load-compare.sh REV [seconds] [rounds] [connections]}"
secs="${2:-5}"
rounds="${3:-5}"
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
(cd "$work/before" && CARGO_TARGET_DIR="$OLDPWD/target/compare-before" cargo build --release -p example-load-bench >/dev/null 2>&1) ||
  { echo "ERROR: example-load-bench does not build at $rev" >&2; exit 1; }
cp target/compare-before/release/example-load-bench "$work/before-bin"
cargo build --release -p example-load-bench >/dev/null 2>&1
cp target/release/example-load-bench "$work/after-bin"
start() { # binary log -> base url
  BIND=127.0.0.1:0 "$1" >"$2" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q "listening on" "$2" 2>/dev/null && break; sleep 0.1; done
  grep -o 'http://[0-9.:]*' "$2" | head -n1
}
before="$(start "$work/before-bin" "$work/before.out")"
after="$(start "$work/after-bin" "$work/after.out")"
run() { wrk -t2 -c"$conns" -d"${secs}s" -H "X-Tenant-Id: acme" "$1" | awk '/Non-2xx/ {exit 1} /Requests\/sec/ {print $2}'; }
for u in "$before" "$after"; do run "$u/bare/hello" >/dev/null; run "$u/api/hello" >/dev/null; done
for _ in $(seq 1 "$rounds"); do
  echo "$(run "$before/bare/hello") $(run "$before/api/hello") $(run "$after/bare/hello") $(run "$after/api/hello")"
done | awk -v rev="$rev" '{print "  " $0; b1+=$1; a1+=$2; b2+=$3; a2+=$4}
  END {printf "%s: bare %.0f, layer %.0f req/s, ratio %.3f\nworking tree: bare %.0f, layer %.0f req/s, ratio %.3f\n",
    rev, b1/NR, a1/NR, a1/b1, b2/NR, a2/NR, a2/b2}'
